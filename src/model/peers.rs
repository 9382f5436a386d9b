//! Connections whose two ends are both on this host: a client of a local server and the
//! server's socket for it (pgbouncer → postgres, an app → its local redis), and Unix socket
//! pairs. Each end learns the process at the other.
//!
//! Only sockets that can have a local peer are hashed: TCP clients whose remote port is one
//! a local listener serves (in the same namespace), then the server-side sockets on those
//! ports. A busy server with no local clients pays one set lookup per connection.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Endpoint, InetAddr, NetnsId, Process, Proto, RawSock, SockState};

/// The socket at the other end of a connection on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub cookie: u64,
    /// Its process, when one holds it and katop could see it.
    pub process: Option<Arc<Process>>,
}

/// `(namespace, this end, other end)`, addresses canonical (an IPv4 client of a dual-stack
/// server shows as `::ffff:a.b.c.d` on the server's side).
type Ends = (NetnsId, InetAddr, InetAddr);

fn canonical(a: InetAddr) -> InetAddr {
    InetAddr::new(a.ip().to_canonical(), a.port())
}

fn ends(s: &RawSock) -> Option<Ends> {
    match (&s.local, &s.remote) {
        (Endpoint::Inet(l), Endpoint::Inet(r)) if r.port() != 0 => {
            Some((s.netns, canonical(*l), canonical(*r)))
        }
        _ => None,
    }
}

/// A TCP socket with both ends set: not listening, not closed, not `TIME_WAIT` (which no
/// process holds).
fn connected_tcp(s: &RawSock) -> bool {
    s.proto == Proto::Tcp
        && !matches!(
            s.state,
            SockState::Listen | SockState::Close | SockState::TimeWait
        )
}

/// Every socket's local peer, by cookie (both ends of each pair are listed).
pub fn pair(socks: &[RawSock]) -> FxHashMap<u64, Peer> {
    let mut out = FxHashMap::default();
    let mut link = |a: usize, b: usize| {
        for (x, y) in [(a, b), (b, a)] {
            out.insert(
                socks[x].cookie.0,
                Peer {
                    cookie: socks[y].cookie.0,
                    process: match &socks[y].owner {
                        crate::model::Owner::Process { process, .. } => Some(Arc::clone(process)),
                        _ => None,
                    },
                },
            );
        }
    };
    let listening: FxHashSet<(NetnsId, u16)> = socks
        .iter()
        .filter(|s| s.proto == Proto::Tcp && s.state == SockState::Listen)
        .filter_map(|s| Some((s.netns, s.local.port()?)))
        .collect();
    if !listening.is_empty() {
        // Clients of a local listener, by the ends their server-side socket has.
        let mut wanted: FxHashMap<Ends, usize> = FxHashMap::default();
        let mut ports: FxHashSet<(NetnsId, u16)> = FxHashSet::default();
        for (i, s) in socks.iter().enumerate().filter(|(_, s)| connected_tcp(s)) {
            let Some((ns, local, remote)) = ends(s) else {
                continue;
            };
            // A listener here on the port it connects to; the exact match of both ends
            // below tells a local server from a remote one on the same port.
            if listening.contains(&(ns, remote.port())) {
                wanted.insert((ns, remote, local), i);
                ports.insert((ns, remote.port()));
            }
        }
        if !wanted.is_empty() {
            for (i, s) in socks.iter().enumerate().filter(|(_, s)| connected_tcp(s)) {
                if !s
                    .local
                    .port()
                    .is_some_and(|p| ports.contains(&(s.netns, p)))
                {
                    continue;
                }
                if let Some(&c) = ends(s).and_then(|e| wanted.get(&e)) {
                    if c != i {
                        link(i, c);
                    }
                }
            }
        }
    }
    // Unix sockets name their peer's inode.
    if socks
        .iter()
        .any(|s| matches!(s.remote, Endpoint::UnixPeer(Some(_))))
    {
        let by_inode: FxHashMap<(NetnsId, u32), usize> = socks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.proto == Proto::Unix)
            .map(|(i, s)| ((s.netns, s.inode.0), i))
            .collect();
        for (i, s) in socks.iter().enumerate() {
            if let Endpoint::UnixPeer(Some(peer)) = s.remote {
                if let Some(&j) = by_inode.get(&(s.netns, peer.0)) {
                    if i < j {
                        link(i, j);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::table::tests::sock;
    use crate::model::{Cookie, Inode};

    fn tcp(cookie: u64, state: SockState, local: &str, remote: &str, pid: u32) -> RawSock {
        let mut s = sock(state);
        s.cookie = Cookie(cookie);
        s.local = Endpoint::Inet(local.parse().unwrap());
        s.remote = Endpoint::Inet(remote.parse().unwrap());
        if let crate::model::Owner::Process { process, .. } = &mut s.owner {
            let mut p = (**process).clone();
            p.pid = pid;
            *process = Arc::new(p);
        }
        s
    }

    #[test]
    fn a_local_client_and_its_server_backend_know_each_other() {
        let socks = vec![
            tcp(1, SockState::Listen, "0.0.0.0:5432", "0.0.0.0:0", 10),
            // pgbouncer → postgres over loopback, and the backend's socket for it.
            tcp(
                2,
                SockState::Established,
                "127.0.0.1:40000",
                "127.0.0.1:5432",
                20,
            ),
            tcp(
                3,
                SockState::Established,
                "127.0.0.1:5432",
                "127.0.0.1:40000",
                30,
            ),
            // A dual-stack server sees an IPv4 client as v4-mapped.
            tcp(
                4,
                SockState::Established,
                "127.0.0.1:40001",
                "127.0.0.1:5432",
                21,
            ),
            tcp(
                5,
                SockState::Established,
                "[::ffff:127.0.0.1]:5432",
                "[::ffff:127.0.0.1]:40001",
                31,
            ),
            // A remote client of the same server: no peer here.
            tcp(
                6,
                SockState::Established,
                "10.0.0.5:5432",
                "10.0.0.9:50000",
                32,
            ),
            // An outgoing connection to a remote server.
            tcp(
                7,
                SockState::Established,
                "10.0.0.5:41000",
                "10.0.0.8:443",
                22,
            ),
        ];
        let p = pair(&socks);
        let pid = |c: u64| p.get(&c).and_then(|p| p.process.as_ref()).map(|p| p.pid);
        assert_eq!(p.get(&2).map(|p| p.cookie), Some(3));
        assert_eq!(pid(2), Some(30));
        assert_eq!(pid(3), Some(20));
        assert_eq!(pid(4), Some(31));
        assert_eq!(pid(5), Some(21));
        assert!(!p.contains_key(&6) && !p.contains_key(&7) && !p.contains_key(&1));
        // Another namespace's socket with the same addresses is not the peer.
        let mut other = socks[2].clone();
        other.netns = NetnsId(99);
        let q = pair(&[socks[0].clone(), socks[1].clone(), other]);
        assert!(q.is_empty(), "{q:?}");
    }

    #[test]
    fn unix_pairs_by_inode() {
        let mut a = sock(SockState::Established);
        a.proto = Proto::Unix;
        a.cookie = Cookie(1);
        a.inode = Inode(100);
        a.remote = Endpoint::UnixPeer(Some(Inode(200)));
        let mut b = a.clone();
        b.cookie = Cookie(2);
        b.inode = Inode(200);
        b.remote = Endpoint::UnixPeer(Some(Inode(100)));
        let p = pair(&[a, b]);
        assert_eq!(p.get(&1).map(|p| p.cookie), Some(2));
        assert_eq!(p.get(&2).map(|p| p.cookie), Some(1));
    }
}
