//! Real sockets on loopback, set up with known options, checked against what katop's collector
//! reports. No root needed, except for the dead-peer test at the end, which skips without it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use katop::collector::{Collector, Selection};
use katop::model::{ConnTable, Keepalive, Owner, SockEntry, SockState, StaleReason, TimerKind};
use socket2::TcpKeepalive;

mod common;
use common::{connect, find_pair, is_root, poll, SilentPeer};

/// The live socket at `s`'s end, by both its addresses: `connect()` may reuse a local port
/// number towards another destination.
fn find<'a>(t: &'a ConnTable, s: &TcpStream) -> SockEntry<'a> {
    find_pair(t, s.local_addr().unwrap(), Some(s.peer_addr().unwrap()))
}

fn find_listener(t: &ConnTable, local: SocketAddr) -> SockEntry<'_> {
    let e = t.entries().find(|e| {
        e.sock.local.to_string() == local.to_string() && e.sock.state == SockState::Listen
    });
    e.expect("listener reported")
}

fn pid_of(e: &SockEntry) -> Option<u32> {
    e.sock.owner.process().map(|p| p.pid)
}

#[test]
fn reports_loopback_connections_as_set_up() {
    const SENT: usize = 12_345;
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (ka_client, _ka_server) = connect(&v4, Some(Duration::from_secs(600)));
    let (plain_client, _plain_server) = connect(&v4, None);
    let (mut bulk_client, mut bulk_server) = connect(&v4, None);
    let (cw_client, cw_server) = connect(&v4, None);
    let (tw_client, mut tw_server) = connect(&v4, None);
    bulk_client.write_all(&vec![7u8; SENT]).unwrap();
    let mut got = vec![0u8; SENT];
    bulk_server.read_exact(&mut got).unwrap();
    // The server closes, the client never does: the client end sits in CLOSE_WAIT.
    drop(cw_server);
    // The client closes first and the server follows: the client end goes to TIME_WAIT.
    let tw_local = tw_client.local_addr().unwrap();
    drop(tw_client);
    let mut eof = [0u8; 1];
    assert_eq!(tw_server.read(&mut eof).unwrap(), 0);
    drop(tw_server);

    let listener6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0));
    let v6 = listener6
        .as_ref()
        .ok()
        .map(|l| connect(l, Some(Duration::from_secs(300))));

    // Wait (bounded) for the kernel to deliver the FINs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let t = poll(Duration::from_secs(300));
        let cw = find(&t, &cw_client).sock.state;
        let tw = t.entries().any(|e| {
            e.sock.local.to_string() == tw_local.to_string() && e.sock.state == SockState::TimeWait
        });
        if (cw == SockState::CloseWait && tw) || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let me = std::process::id();

    let l = find_listener(&table, v4.local_addr().unwrap());
    assert_eq!(l.sock.state, SockState::Listen);
    assert_eq!(pid_of(&l), Some(me));

    let ka = find(&table, &ka_client);
    assert_eq!(ka.sock.state, SockState::Established);
    assert_eq!(
        ka.sock.remote.to_string(),
        v4.local_addr().unwrap().to_string()
    );
    assert_eq!(pid_of(&ka), Some(me));
    let timer = ka.sock.timer.expect("keepalive timer armed");
    assert_eq!(timer.kind, TimerKind::Keepalive);
    assert!(
        timer.expires_ms <= 600_000 && timer.expires_ms > 500_000,
        "expires in {} ms",
        timer.expires_ms
    );
    assert_eq!(ka.keepalive, Some(Keepalive::On));
    assert_eq!(ka.keepalive_probes(), Some(0));

    let plain = find(&table, &plain_client);
    assert_eq!(plain.sock.timer, None);
    assert_eq!(plain.keepalive, Some(Keepalive::Off));

    let bulk_out = find(&table, &bulk_client).sock.tcp_info.unwrap();
    // bytes_acked counts the SYN's sequence number too, as the kernel does.
    assert_eq!(bulk_out.bytes_acked(), Some(SENT as u64 + 1));
    assert_eq!(bulk_out.bytes_sent(), Some(SENT as u64));
    let bulk_in = find_pair(
        &table,
        bulk_server.local_addr().unwrap(),
        Some(bulk_client.local_addr().unwrap()),
    )
    .sock
    .tcp_info
    .unwrap();
    assert_eq!(bulk_in.bytes_received(), Some(SENT as u64));

    let cw = find(&table, &cw_client);
    assert_eq!(cw.sock.state, SockState::CloseWait);
    assert_eq!(pid_of(&cw), Some(me));
    // A CLOSE_WAIT seconds old is not stale with --stale-after 5m, and is with 0s.
    assert!(!cw.stale.contains(StaleReason::CloseWait));
    let strict = poll(Duration::ZERO);
    assert!(find(&strict, &cw_client)
        .stale
        .contains(StaleReason::CloseWait));

    let tw = table
        .entries()
        .find(|e| {
            e.sock.local.to_string() == tw_local.to_string() && e.sock.state == SockState::TimeWait
        })
        .expect("TIME_WAIT end reported");
    assert_eq!(
        tw.sock.owner,
        Owner::None,
        "TIME_WAIT sockets belong to no process"
    );
    assert_eq!(tw.sock.timer.map(|t| t.kind), Some(TimerKind::Timewait));

    if let Some((client6, _server6)) = &v6 {
        let e = find(&table, client6);
        assert!(e.sock.local.to_string().starts_with("[::1]:"));
        assert_eq!(e.keepalive, Some(Keepalive::On));
        assert_eq!(pid_of(&e), Some(me));
    } else {
        common::skipped("no IPv6 loopback here: the IPv6 part was skipped");
    }
}

#[test]
fn idle_time_grows_while_nothing_is_sent() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (client, _server) = connect(&l, None);
    let first = find(&poll(Duration::from_secs(300)), &client)
        .idle_ms()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let later = find(&poll(Duration::from_secs(300)), &client)
        .idle_ms()
        .unwrap();
    assert!(
        later >= first + 1000,
        "idle went from {first} ms to {later} ms"
    );
    // With a short enough threshold the quiet connection is stale: idle, and no keepalive.
    let t = poll(Duration::from_secs(1));
    let e = find(&t, &client);
    assert!(e.stale.contains(StaleReason::Idle) && e.stale.contains(StaleReason::NoKeepalive));
}

// ---- root only: a peer that goes silent ------------------------------------------------------

#[test]
fn keepalive_probes_count_up_when_the_peer_goes_silent() {
    if !is_root() {
        common::skipped("needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN) to create a network namespace");
        return;
    }
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(30);
    let peer = SilentPeer::connect(&ka);
    peer.go_silent();

    // Watch (bounded) until katop has reported the probe count climbing to 3.
    let mut seen: Vec<u8> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.last().copied().unwrap_or(0) < 3 && Instant::now() < deadline {
        let t = poll(Duration::from_secs(300));
        let e = find(&t, &peer.client);
        if let Some(p) = e.keepalive_probes() {
            if seen.last() != Some(&p) {
                seen.push(p);
            }
            if p > 0 {
                assert!(
                    e.stale.contains(StaleReason::Probing),
                    "probing not flagged at {p} probes"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "probe counts went {seen:?}"
    );
    assert!(
        seen.last().copied().unwrap_or(0) >= 3,
        "probe counts seen: {seen:?}"
    );
}

#[test]
fn a_poll_reuses_the_buffer_it_is_given() {
    let mut c = Collector::new(Selection::default()).unwrap();
    let first = c.poll().unwrap().socks;
    let mut t = ConnTable::new(Duration::from_secs(300));
    let _ = t.apply(c.poll().unwrap(), Instant::now());
    // Hand the previous poll's vector back, as the dashboard does: no new allocation.
    let room = 2 * first.len() + 4096; // more than the next poll asks for
    let mut spare = first;
    spare.clear();
    spare.reserve(room);
    let ptr = spare.as_ptr();
    let again = c.poll_into(spare).unwrap();
    assert_eq!(again.socks.as_ptr(), ptr, "the poll allocated a new vector");
    assert!(!again.socks.is_empty());
}

#[test]
fn a_process_that_execs_is_shown_by_its_new_name() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        common::skipped("python3 is missing");
        return;
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    // A shell holds a connection (fd 3), then exec()s python3, which inherits it: same pid,
    // same start time, another program.
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port}; read go; exec python3 -c 'import time; time.sleep(60)'"
    );
    let mut child = common::Reaped(
        std::process::Command::new("bash")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (server, _) = l.accept().unwrap();
    let client = server.peer_addr().unwrap();
    let mut c = Collector::new(Selection {
        protos: vec![katop::model::Proto::Tcp],
        ..Selection::default()
    })
    .unwrap();
    let name_of_holder = |c: &mut Collector| {
        let mut t = ConnTable::new(Duration::from_secs(300));
        t.apply(c.poll().unwrap(), Instant::now());
        let e = find_pair(&t, client, Some(l.local_addr().unwrap()));
        e.sock.owner.process().map(|p| p.name.to_string())
    };
    assert_eq!(name_of_holder(&mut c).as_deref(), Some("bash"));
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let pid = child.0.id();
    common::wait_for("the exec", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|n| n.trim() == "python3")
    });
    // A new socket makes the collector look at /proc again (one more each try: a loaded
    // machine may be slow to show the new program everywhere).
    let mut more = Vec::new();
    common::wait_until("the holder named python3", || {
        more.push(connect(&l, None));
        (name_of_holder(&mut c).as_deref() == Some("python3")).then_some(())
    });
}

/// A poll streamed as it is read (as the dashboard takes it) and applied in place: after the
/// first poll, which scans `/proc` and so hands nothing on before its end, the sockets go on in
/// pieces with their owners and options, and the table then holds every connection this test
/// made, once each, with its history carried and its options read; a listener closed between
/// the polls has left.
#[test]
fn a_streamed_poll_applied_in_place_holds_every_socket_once() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let pairs: Vec<(TcpStream, TcpStream)> = (0..40)
        .map(|i| connect(&l, (i % 2 == 0).then_some(Duration::from_secs(600))))
        .collect();
    let closing = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let closing_addr = closing.local_addr().unwrap();
    let mut c = Collector::new(Selection::default()).unwrap();
    let mut t = ConnTable::new(Duration::from_secs(300));
    let mut pieces = Vec::new();
    let first = c
        .poll_streamed(Vec::new(), &mut |p| pieces.push(p))
        .unwrap();
    assert!(
        pieces.is_empty(),
        "a first poll hands nothing on before its scan"
    );
    let t0 = Instant::now();
    t.apply(first, t0);
    let closing_cookie = find_listener(&t, closing_addr).sock.cookie;
    drop(closing);
    let rest = c
        .poll_streamed(Vec::new(), &mut |p| pieces.push(p))
        .unwrap();
    assert!(!pieces.is_empty(), "nothing was handed on");
    assert!(
        pieces[0].begins.is_some(),
        "the first piece begins the poll"
    );
    assert!(pieces[1..].iter().all(|p| p.begins.is_none()));
    let t1 = t0 + Duration::from_secs(1);
    let handed: usize = pieces.iter().map(|p| p.socks.len()).sum();
    for p in pieces {
        if let Some(b) = p.begins {
            t.begin(t1, b.wall, &b.traced);
        }
        t.absorb(p.socks);
    }
    let kept_back = rest.socks.len();
    let applied = t.apply(rest, t1);
    assert!(
        handed > kept_back,
        "{handed} sockets handed on, {kept_back} kept back"
    );
    assert!(applied.departed.iter().any(|s| s.cookie == closing_cookie));
    assert!(
        t.by_cookie(closing_cookie).is_none(),
        "the closed listener left"
    );
    let mut cookies: Vec<u64> = t.entries().map(|e| e.sock.cookie.0).collect();
    let listed = cookies.len();
    cookies.sort_unstable();
    cookies.dedup();
    assert_eq!(cookies.len(), listed, "a socket listed twice");
    let me = std::process::id();
    for (i, (client, server)) in pairs.iter().enumerate() {
        for (s, keepalive) in [(client, i % 2 == 0), (server, false)] {
            let e = find(&t, s);
            assert_eq!(pid_of(&e), Some(me), "{:?}", s.local_addr());
            assert_eq!(e.first_seen(), t0, "history carried: {:?}", s.local_addr());
            assert!(e.sock.opts.read, "options read: {:?}", s.local_addr());
            assert_eq!(e.sock.opts.keepalive, keepalive, "{:?}", s.local_addr());
            if keepalive {
                assert_eq!(e.sock.opts.idle_s, 600);
            }
        }
    }
}
