//! Killing sockets: real loopback connections, killed by cookie, checked from both ends.
//! `SOCK_DESTROY` needs `CAP_NET_ADMIN`: those tests skip (and say so) when not root. The
//! `shutdown` fallback acts on this process's own fds and runs as any user.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use katop::actions::{Killer, Mechanism, Method, Outcome, Target};
use katop::collector::{Collector, Selection};
use katop::model::{ConnTable, Proto, SockState};
use socket2::{Domain, Socket, Type};

mod common;
use common::{connect, find_pair, is_root, poll};

fn skip_unless_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    common::skipped(&format!(
        "{what} needs root (SOCK_DESTROY needs CAP_NET_ADMIN)"
    ));
    true
}

fn listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
}

/// The target for the client end `client` as katop lists it.
fn target_of(client: &TcpStream) -> Target {
    let t = poll(Duration::from_secs(300));
    let e = find_pair(
        &t,
        client.local_addr().unwrap(),
        Some(client.peer_addr().unwrap()),
    );
    Target::of(&e)
}

/// Data goes both ways on a connection (each end writes, the other reads it).
fn carries_data(client: &mut TcpStream, server: &mut TcpStream) {
    fn one_way(from: &mut TcpStream, to: &mut TcpStream) {
        from.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        to.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        to.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    one_way(client, server);
    one_way(server, client);
}

/// What a read on a killed end returns: the error kind, or `None` for EOF.
fn read_after_kill(s: &mut TcpStream) -> Option<ErrorKind> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => panic!("read {n} bytes from a killed connection"),
        Err(e) => {
            assert_ne!(e.kind(), ErrorKind::WouldBlock, "the kill did not reach it");
            Some(e.kind())
        }
    }
}

#[test]
fn sock_destroy_kills_exactly_the_middle_connection() {
    if skip_unless_root("killing with SOCK_DESTROY") {
        return;
    }
    let l = listener();
    let mut conns: Vec<(TcpStream, TcpStream)> = (0..3).map(|_| connect(&l, None)).collect();
    let target = target_of(&conns[1].0);
    let reports = Killer::new(Method::SockDestroy)
        .unwrap()
        .kill_all(&[target]);
    assert_eq!(
        reports[0].outcome,
        Outcome::Killed {
            mechanism: Mechanism::SockDestroy,
            after: None
        }
    );
    // The owner reads ECONNABORTED; the peer was sent an RST.
    let (client, server) = &mut conns[1];
    assert_eq!(read_after_kill(client), Some(ErrorKind::ConnectionAborted));
    assert_eq!(read_after_kill(server), Some(ErrorKind::ConnectionReset));
    for i in [0, 2] {
        let (c, s) = &mut conns[i];
        carries_data(c, s);
    }
}

/// A client socket bound to `port` on loopback with `SO_REUSEADDR`, so a new one can take the
/// same port (and the same 4-tuple) right after the old one closed.
fn client_on_port(port: u16, server: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    s.connect(&server.into())?;
    Ok(s.into())
}

/// [`client_on_port`] on a free port, taken afresh while another socket holds the one tried
/// (a port free a moment ago may be taken by another test's client meanwhile).
fn client_on_a_free_port(server: SocketAddr) -> TcpStream {
    common::wait_until("a client on a free port", || {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .ok()?
            .local_addr()
            .ok()?
            .port();
        client_on_port(port, server).ok()
    })
}

#[test]
fn a_closed_socket_is_already_gone_and_its_successor_is_untouched() {
    let root = is_root();
    if !root {
        common::skipped(
            "SOCK_DESTROY half skipped: needs root (CAP_NET_ADMIN); shutdown half runs",
        );
    }
    let l = listener();
    let server_addr = l.local_addr().unwrap();
    let old = client_on_a_free_port(server_addr);
    let port = old.local_addr().unwrap().port();
    let (old_server, _) = l.accept().unwrap();
    let target = target_of(&old);
    let tuple = (old.local_addr().unwrap(), old.peer_addr().unwrap());
    // Closed with an RST (linger 0): no TIME_WAIT keeps the port, on either end.
    socket2::SockRef::from(&old)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(old);
    drop(old_server);
    // The kernel may take a moment to let the old tuple go.
    let mut new = common::wait_until("the same ports again", || {
        client_on_port(port, server_addr).ok()
    });
    let (mut new_server, _) = l.accept().unwrap();
    // The successor has the very same ports: only the cookie tells them apart.
    assert_eq!((new.local_addr().unwrap(), new.peer_addr().unwrap()), tuple);
    assert_ne!(target_of(&new).cookie, target.cookie);
    let mut methods = vec![Method::Shutdown];
    if root {
        methods.push(Method::SockDestroy);
    }
    for method in methods {
        let reports = Killer::new(method)
            .unwrap()
            .kill_all(std::slice::from_ref(&target));
        assert_eq!(reports[0].outcome, Outcome::AlreadyGone, "{method:?}");
        carries_data(&mut new, &mut new_server);
    }
}

#[test]
fn the_shutdown_fallback_closes_only_the_chosen_socket() {
    let l = listener();
    let (mut keep_c, mut keep_s) = connect(&l, None);
    let (mut victim_c, mut victim_s) = connect(&l, None);
    let target = target_of(&victim_c);
    assert_eq!(
        target.owner.as_ref().map(|o| o.pid),
        Some(std::process::id())
    );
    let reports = Killer::new(Method::Shutdown).unwrap().kill_all(&[target]);
    match &reports[0].outcome {
        Outcome::Killed {
            mechanism: Mechanism::Shutdown,
            after,
        } => assert!(
            matches!(
                after,
                Some(SockState::FinWait1 | SockState::FinWait2) | None
            ),
            "{after:?}"
        ),
        other => panic!("{other:?}"),
    }
    // shutdown sends a FIN: the peer reads EOF, the owner's own reads end too.
    assert_eq!(read_after_kill(&mut victim_s), None);
    assert_eq!(read_after_kill(&mut victim_c), None);
    carries_data(&mut keep_c, &mut keep_s);
}

// ---- the `katop kill` command --------------------------------------------------------------

fn katop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_katop"))
        // The host namespace only: sockets of other tests' namespaces may share its ports.
        .env("KATOP_NETNS", "host")
        .args(args)
        .stdin(Stdio::null())
        .env_remove("KATOP_FILTER")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A private directory for one test's files (world-writable where a test runs as nobody).
/// A directory of the test's own, removed however the test ends.
fn scratch(name: &str) -> common::Scratch {
    common::Scratch::new(name)
}

#[test]
fn kill_command_refuses_without_consent_and_dry_run_kills_nothing() {
    let l = listener();
    let (mut c, mut s) = connect(&l, None);
    let port = c.local_addr().unwrap().port();
    let scratch_dir = scratch("consent");
    let dir = scratch_dir.0.clone();
    let log = dir.join("kills.jsonl");
    let log_arg = log.to_str().unwrap();
    let filter = format!(
        "src:{} dst:{} established",
        c.local_addr().unwrap(),
        l.local_addr().unwrap()
    );

    let dry = katop(&[
        "kill",
        "--filter",
        &filter,
        "--dry-run",
        "--kill-log",
        log_arg,
    ]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains(&format!("127.0.0.1:{port}")),
        "{}",
        text(&dry.stdout)
    );
    carries_data(&mut c, &mut s);

    let no_tty = katop(&["kill", "--filter", &filter, "--kill-log", log_arg]);
    assert_eq!(no_tty.status.code(), Some(2));
    assert!(
        text(&no_tty.stderr).contains("stdin is not a terminal"),
        "{}",
        text(&no_tty.stderr)
    );
    carries_data(&mut c, &mut s);

    let empty = katop(&["kill", "--filter", " ", "--yes", "--kill-log", log_arg]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(text(&empty.stderr).contains("empty --filter"));

    let listen = katop(&[
        "kill",
        "--filter",
        &format!("src:{} listen", l.local_addr().unwrap()),
        "--yes",
        "--kill-log",
        log_arg,
    ]);
    assert_eq!(listen.status.code(), Some(2));
    assert!(
        text(&listen.stderr).contains("--include-listen"),
        "{}",
        text(&listen.stderr)
    );
    carries_data(&mut c, &mut s);
    assert!(!log.exists(), "nothing was attempted, so nothing is logged");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_command_kills_and_logs() {
    if skip_unless_root("katop kill") {
        return;
    }
    let l = listener();
    let (mut keep_c, mut keep_s) = connect(&l, None);
    let (mut c, mut s) = connect(&l, None);
    let port = c.local_addr().unwrap().port();
    let scratch_dir = scratch("log");
    let dir = scratch_dir.0.clone();
    let log = dir.join("state/katop/kills.jsonl");
    let out = katop(&[
        "kill",
        "--filter",
        &format!(
            "src:{} dst:{} established",
            c.local_addr().unwrap(),
            c.peer_addr().unwrap()
        ),
        "--yes",
        "--json",
        "--kill-log",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["result"], "killed");
    assert_eq!(read_after_kill(&mut c), Some(ErrorKind::ConnectionAborted));
    assert_eq!(read_after_kill(&mut s), Some(ErrorKind::ConnectionReset));
    carries_data(&mut keep_c, &mut keep_s);

    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{logged}");
    let e = &lines[0];
    assert_eq!(e["action"], "kill");
    assert_eq!(e["result"], "killed");
    assert_eq!(e["mechanism"], "sock-destroy");
    assert_eq!(e["state_after"], "gone");
    assert_eq!(e["state"], "ESTABLISHED");
    assert_eq!(e["proto"], "tcp");
    assert_eq!(e["local"], format!("127.0.0.1:{port}"));
    assert_eq!(e["remote"], l.local_addr().unwrap().to_string());
    assert_eq!(e["pid"], std::process::id());
    assert_eq!(e["uid"], 0);
    assert!(e["cookie"].as_u64().unwrap() > 0);
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn an_unprivileged_kill_says_what_is_missing_and_kills_nothing() {
    if !is_root() {
        common::skipped("needs root to start katop as the unprivileged user nobody");
        return;
    }
    let l = listener();
    let (mut c, mut s) = connect(&l, None);
    // The log goes where nobody may write it: nobody's own directory.
    let (dir, bin) = common::nobody_dir("kill-nobody");
    let log = dir.join("kills.jsonl");
    let filter = format!(
        "src:{} dst:{} established",
        c.local_addr().unwrap(),
        l.local_addr().unwrap()
    );
    // The dry run already says it would be refused, and why.
    let dry = common::run_as_nobody(&bin, &dir, &["kill", "--dry-run", "--filter", &filter]);
    let listed = text(&dry.stdout);
    assert!(
        listed.contains("would kill 0 socket(s) (1 more would be refused)"),
        "{listed}"
    );
    assert!(listed.contains("CAP_NET_ADMIN"), "{listed}");
    let log_arg = log.to_str().unwrap();
    let out = common::run_as_nobody(
        &bin,
        &dir,
        &["kill", "--filter", &filter, "--yes", "--kill-log", log_arg],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("refused"), "{stdout}");
    assert!(stdout.contains("CAP_NET_ADMIN"), "{stdout}");
    assert!(stdout.contains("setcap cap_net_admin+ep"), "{stdout}");
    carries_data(&mut c, &mut s);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"result\":\"refused\""), "{logged}");
}

#[test]
fn sock_destroy_kills_ipv6_tcp_and_udp() {
    if skip_unless_root("killing with SOCK_DESTROY") {
        return;
    }
    // IPv6 TCP.
    let l6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let (mut c6, mut s6) = connect(&l6, None);
    let (mut keep_c, mut keep_s) = connect(&l6, None);
    let target = target_of(&c6);
    let out = Killer::new(Method::SockDestroy).unwrap().kill(&target);
    assert!(matches!(out, Outcome::Killed { .. }), "{out:?}");
    assert_eq!(read_after_kill(&mut c6), Some(ErrorKind::ConnectionAborted));
    assert_eq!(read_after_kill(&mut s6), Some(ErrorKind::ConnectionReset));
    carries_data(&mut keep_c, &mut keep_s);

    // A connected UDP socket: its owner's next receive reports the abort.
    let victim = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    victim.connect(peer.local_addr().unwrap()).unwrap();
    peer.connect(victim.local_addr().unwrap()).unwrap();
    let mut collector = Collector::new(Selection {
        protos: vec![Proto::Udp],
        ipv4: true,
        ipv6: false,
        ..Selection::default()
    })
    .unwrap();
    let mut t = ConnTable::new(Duration::from_secs(300));
    t.apply(collector.poll().unwrap(), std::time::Instant::now());
    let e = t
        .entries()
        .find(|e| e.sock.local.to_string() == victim.local_addr().unwrap().to_string())
        .expect("the UDP socket is listed");
    let out = Killer::new(Method::SockDestroy)
        .unwrap()
        .kill(&Target::of(&e));
    assert!(matches!(out, Outcome::Killed { .. }), "{out:?}");
    victim
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let err = victim.recv(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    // Its peer is another socket, untouched.
    peer.send(b"x").unwrap();
}

#[test]
fn a_socket_whose_namespace_is_gone_is_already_gone_not_refused() {
    if skip_unless_root("making and deleting a network namespace") {
        return;
    }
    let ns = common::PeerNs::new();
    let (client, server, listener) = ns.within(|| {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s, l)
    });
    let mut c = Collector::new(Selection {
        protos: vec![Proto::Tcp],
        netns: katop::collector::namespaces::Which::Some(vec![ns.name.clone()]),
        ..Selection::default()
    })
    .unwrap();
    let mut t = ConnTable::new(Duration::from_secs(300));
    t.apply(c.poll().unwrap(), std::time::Instant::now());
    let local = client.local_addr().unwrap().to_string();
    let e = t
        .entries()
        .find(|e| e.sock.local.to_string() == local)
        .expect("the connection inside the namespace is listed");
    let target = Target::of(&e);
    // The namespace goes, and its sockets with it.
    drop((client, server, listener));
    drop(c);
    drop(ns);
    let outcome = Killer::new(Method::Auto).unwrap().kill(&target);
    assert_eq!(outcome, Outcome::AlreadyGone);
}
