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

// ---- root only: a peer in its own network namespace that can go silent --------------------

pub fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to ours by a veth pair; removed on drop.
pub struct PeerNs {
    name: String,
    host_if: String,
    peer_if: String,
}

impl PeerNs {
    pub fn new(host_ip: &str, peer_ip: &str) -> PeerNs {
        let id = std::process::id();
        let ns = PeerNs {
            name: format!("katop-test-{id}"),
            host_if: format!("kt{id}a"),
            peer_if: format!("kt{id}b"),
        };
        sh(&["ip", "netns", "add", &ns.name]);
        sh(&[
            "ip",
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.peer_if,
        ]);
        sh(&["ip", "link", "set", &ns.peer_if, "netns", &ns.name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &ns.host_if,
        ]);
        sh(&["ip", "link", "set", &ns.host_if, "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "ip",
            "addr",
            "add",
            &format!("{peer_ip}/30"),
            "dev",
            &ns.peer_if,
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "ip",
            "link",
            "set",
            &ns.peer_if,
            "up",
        ]);
        ns
    }

    /// Cuts the peer off without a FIN or RST: its packets just stop.
    pub fn go_silent(&self) {
        let peer_if = self.host_if.replace('a', "b");
        sh(&[
            "ip", "netns", "exec", &self.name, "ip", "link", "set", &peer_if, "down",
        ]);
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A TCP connection from here to a listener in a fresh network namespace, which can then go
/// silent (its link down: no FIN, no RST). Needs root.
pub struct SilentPeer {
    pub client: TcpStream,
    /// The accepted end and its listener, held inside the namespace.
    _server: (TcpListener, TcpStream),
    ns: PeerNs,
}

impl SilentPeer {
    /// Connects with keepalive `ka` and sends a greeting; each test process gets its own /30.
    pub fn connect(ka: &TcpKeepalive) -> SilentPeer {
        assert!(
            std::process::Command::new("ip").arg("-V").output().is_ok(),
            "iproute2's `ip` is missing: .ci/run installs it"
        );
        let net = 16 + (std::process::id() % 200) as u8;
        let (host_ip, peer_ip) = (format!("10.213.{net}.1"), format!("10.213.{net}.2"));
        let ns = PeerNs::new(&host_ip, &peer_ip);
        // A listener inside the namespace, from a thread that joins it (setns is per thread).
        let ns_path = format!("/run/netns/{}", ns.name);
        let peer: SocketAddr = format!("{peer_ip}:5432").parse().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            let fd = std::fs::File::open(&ns_path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let l = TcpListener::bind(peer).unwrap();
            tx.send(()).unwrap();
            let (conn, _) = l.accept().unwrap();
            (l, conn)
        });
        rx.recv().unwrap();
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_tcp_keepalive(ka).unwrap();
        s.connect(&peer.into()).unwrap();
        let mut client: TcpStream = s.into();
        std::io::Write::write_all(&mut client, b"hello").unwrap();
        SilentPeer {
            client,
            _server: server.join().unwrap(),
            ns,
        }
    }

    pub fn go_silent(&self) {
        self.ns.go_silent();
    }
}

/// Runs the katop binary as the unprivileged user `nobody` (root only), from a private
/// world-writable directory (returned, for files nobody must write) holding a copy of it, with
/// `HOME` there too (root's config is not nobody's to read).
pub fn katop_as_nobody(name: &str, args: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("katop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = dir.join("katop");
    std::fs::copy(env!("CARGO_BIN_EXE_katop"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .env("HOME", &dir)
        .env_remove("KATOP_FILTER")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    (out, dir)
}
