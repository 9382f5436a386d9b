//! Helpers shared by the integration tests: one poll, finding a socket by its ends, connecting.
#![allow(dead_code)] // each test crate uses its own subset

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use katop::collector::{Collector, Selection};
use katop::model::{ConnTable, Proto, SockEntry, SockState};
use socket2::{Domain, Socket, TcpKeepalive, Type};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One poll of every TCP socket, in a table with `stale_after`.
pub fn poll(stale_after: Duration) -> ConnTable {
    let mut c = Collector::new(Selection {
        protos: vec![Proto::Tcp],
        ipv4: true,
        ipv6: true,
    })
    .expect("open sock_diag");
    let snap = c.poll().expect("poll");
    let mut t = ConnTable::new(stale_after);
    t.apply(snap, Instant::now());
    t
}

/// The one socket at `local` (a client's unique port, or a listener: `peer` `None`), or at
/// `local` talking to `peer` (a server end, which shares the listener's address).
pub fn find_pair(t: &ConnTable, local: SocketAddr, peer: Option<SocketAddr>) -> SockEntry<'_> {
    let peer = peer.map_or_else(|| "*".to_string(), |p| p.to_string());
    let found: Vec<SockEntry> = t
        .entries()
        .filter(|e| e.sock.local.to_string() == local.to_string())
        // Without a peer: the live socket at a client's port (old TIME_WAITs may reuse it).
        .filter(|e| {
            e.sock.remote.to_string() == peer
                || (peer == "*" && !matches!(e.sock.state, SockState::Listen | SockState::TimeWait))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one socket at {local} -> {peer}, found {}",
        found.len()
    );
    found[0]
}

/// A client connected to `listener`, with keepalive idle `keepidle` if given, and the accepted
/// server end.
pub fn connect(listener: &TcpListener, keepidle: Option<Duration>) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    if let Some(idle) = keepidle {
        s.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))
            .unwrap();
    }
    s.connect(&addr.into()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (s.into(), server)
}
