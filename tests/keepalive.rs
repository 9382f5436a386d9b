//! Keepalive insight on real sockets: each socket's own options (read across processes), the
//! dead-peer countdown against the formula, a silent peer counted down to its drop, keepalive
//! turned on live, and the `at-risk` rule against a declared middlebox timeout.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use katop::model::{ConnTable, Detect, SockEntry, SockState, StaleReason};
use socket2::{SockRef, TcpKeepalive};

mod common;
use common::{find_pair, is_root, katop_as_nobody, poll, SilentPeer};

/// Sets keepalive options on a connected socket.
fn keepalive(s: &TcpStream, idle: u64, intvl: u64, cnt: u32) {
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(idle))
        .with_interval(Duration::from_secs(intvl))
        .with_retries(cnt);
    SockRef::from(s).set_tcp_keepalive(&ka).unwrap();
}

fn entry<'a>(t: &'a ConnTable, s: &TcpStream) -> SockEntry<'a> {
    find_pair(t, s.local_addr().unwrap(), Some(s.peer_addr().unwrap()))
}

fn detect_s(e: &SockEntry) -> Option<f64> {
    match e.detect(Instant::now()).map(|c| c.detect) {
        Some(Detect::InMs(ms)) => Some(ms as f64 / 1000.0),
        _ => None,
    }
}

/// Not a test on its own: the child process of `reads_each_sockets_own_options`, which runs
/// this binary again with `KATOP_TEST_CHILD` set to a port. It sets its options, connects, and
/// holds the socket until its stdin closes.
#[test]
fn child_holding_a_socket() {
    let Ok(port) = std::env::var("KATOP_TEST_CHILD") else {
        return;
    };
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(33))
        .with_interval(Duration::from_secs(11))
        .with_retries(3);
    s.set_tcp_keepalive(&ka).unwrap();
    let to: SocketAddr = (Ipv4Addr::LOCALHOST, port.parse::<u16>().unwrap()).into();
    s.connect(&to.into()).unwrap();
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

#[test]
fn reads_each_sockets_own_options() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    // This process: one socket with every option set, one with none.
    let set = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_set_server, _) = l.accept().unwrap();
    keepalive(&set, 45, 7, 4);
    SockRef::from(&set)
        .set_tcp_user_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let plain = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_plain_server, _) = l.accept().unwrap();
    let quiet_since = Instant::now();
    // Another process: the child holds a socket with its own options.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holding_a_socket", "--test-threads=1"])
        .env("KATOP_TEST_CHILD", port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Its connection arrives once it has set its options.
    let (_child_server, child_addr) = l.accept().unwrap();

    let t = poll(Duration::from_secs(300));
    let sysctl = *t.settings();
    let e = entry(&t, &set);
    let p = e.params().unwrap();
    assert_eq!(p.source, katop::model::keepalive::Source::Socket);
    assert_eq!(
        (p.enabled, p.idle_s, p.intvl_s, p.cnt, p.user_timeout_ms),
        (Some(true), 45, 7, 4, 20_000)
    );
    // Unconfigured: keepalive off, and the values the sysctls give it.
    let e = entry(&t, &plain);
    let p = e.params().unwrap();
    assert_eq!(p.source, katop::model::keepalive::Source::Socket);
    assert_eq!(p.enabled, Some(false));
    assert_eq!(Some(p.idle_s), sysctl.keepalive_time_s);
    assert_eq!(Some(p.cnt), sysctl.keepalive_probes);
    assert_eq!(
        e.detect(Instant::now()).map(|c| c.detect),
        Some(Detect::Never)
    );

    // The dead-peer time matches the formula: the first probe after 45 s of silence (the user
    // timeout of 20 s is shorter, so the first check after that probe drops it: + 7 s).
    let e = entry(&t, &set);
    let expected = 45.0 + 7.0 - quiet_since.elapsed().as_secs_f64();
    let got = detect_s(&e).unwrap();
    assert!(
        (got - expected).abs() <= 1.0,
        "detect {got} s, formula {expected} s"
    );

    // The child's socket, read across processes.
    let child_end = t
        .entries()
        .find(|e| {
            e.sock.local.to_string() == child_addr.to_string()
                && e.sock.remote.to_string() == l.local_addr().unwrap().to_string()
                && e.sock.state == SockState::Established
        })
        .expect("the child's socket is listed");
    assert_eq!(
        child_end.sock.owner.process().map(|p| p.pid),
        Some(child.id()),
        "held by the child"
    );
    let p = child_end.params().unwrap();
    if p.source == katop::model::keepalive::Source::Socket {
        assert_eq!(
            (p.enabled, p.idle_s, p.intvl_s, p.cnt),
            (Some(true), 33, 11, 3)
        );
        // (Plus the timer wheel's rounding: the 33 s idle timer alone may fire 2 s late.)
        let expected = 33.0 + 11.0 * 3.0;
        let got = detect_s(&child_end).unwrap();
        assert!(
            (got - expected).abs() <= 2.5,
            "child: detect {got} s, formula ~{expected} s"
        );
    } else {
        assert!(!is_root(), "root reads every process's sockets");
        eprintln!("child's options unreadable without ptrace rights: checked as defaults");
        assert_eq!(Some(p.idle_s), sysctl.keepalive_time_s);
    }
    drop(child.stdin.take());
    child.wait().unwrap();
}

#[test]
fn unreadable_sockets_show_the_sysctl_defaults_as_such() {
    if !is_root() {
        common::skipped("needs root to run katop as the unprivileged user nobody");
        return;
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_server, _) = l.accept().unwrap();
    keepalive(&s, 45, 7, 4);
    let filter = format!(
        "src:{} dst:{} established",
        s.local_addr().unwrap(),
        l.local_addr().unwrap()
    );
    let out = katop_as_nobody("ka-nobody", &["--json", "--filter", &filter]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &json[0];
    assert_eq!(e["keepalive_source"], "sysctl-default", "{e}");
    // Not 45: the sysctl's value, marked as a default; the armed timer still says it is on.
    assert_ne!(e["keepalive_idle_s"], 45);
    assert_eq!(e["keepalive"], "on");
}

#[test]
fn the_countdown_reaches_zero_when_the_kernel_drops_a_silent_peer() {
    if !is_root() {
        common::skipped("needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN) for a network namespace");
        return;
    }
    // Probe after 1 s of silence, every 1 s, give up after 4 unanswered probes.
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(4);
    let peer = SilentPeer::connect(&ka);
    let local = peer.client.local_addr().unwrap();
    let remote = peer.client.peer_addr().unwrap();
    peer.go_silent();
    let mut probes_seen: Vec<u8> = Vec::new();
    let mut last_detect: Option<(f64, Instant)> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let gone_at = loop {
        assert!(
            Instant::now() < deadline,
            "never dropped; probes {probes_seen:?}"
        );
        let t = poll(Duration::from_secs(300));
        let Some(e) = t.entries().find(|e| {
            e.sock.local.to_string() == local.to_string()
                && e.sock.remote.to_string() == remote.to_string()
                && e.sock.state == SockState::Established
        }) else {
            break Instant::now();
        };
        if let Some(p) = e.keepalive_probes() {
            if p > 0 && probes_seen.last() != Some(&p) {
                probes_seen.push(p);
            }
            // While probing: the next probe plus the probes left, each 1 s apart.
            let timer = e.sock.timer.unwrap();
            let formula = f64::from(timer.expires_ms) / 1000.0 + f64::from(4u8.saturating_sub(p));
            let got = detect_s(&e).unwrap();
            assert!(
                (got - formula).abs() <= 1.0,
                "{p} probes: detect {got}, formula {formula}"
            );
            last_detect = Some((got, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        probes_seen.windows(2).all(|w| w[0] < w[1]) && probes_seen.len() >= 2,
        "probe counts went {probes_seen:?}"
    );
    // The last countdown seen was close to zero, and the drop came when it said.
    let (left, at) = last_detect.expect("a countdown was shown");
    assert!(left <= 1.5, "last countdown {left} s before the drop");
    let late = gone_at.duration_since(at).as_secs_f64() - left;
    assert!(late <= 1.5, "dropped {late} s after the countdown ended");
}

#[test]
fn turning_keepalive_on_arms_the_kernels_timer_and_the_owner_carries_on() {
    if !is_root() {
        common::skipped("needs root (katop borrows this process's fd with pidfd_getfd)");
        return;
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut server, _) = l.accept().unwrap();
    let before = poll(Duration::from_secs(300));
    assert_eq!(
        entry(&before, &s).sock.timer,
        None,
        "no timer while keepalive is off"
    );
    let dir = std::env::temp_dir().join(format!("katop-ka-on-{}", std::process::id()));
    let log = dir.join("actions.jsonl");
    let filter = format!(
        "src:{} dst:{} established",
        s.local_addr().unwrap(),
        l.local_addr().unwrap()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_katop"))
        // The host namespace only: sockets of other tests' namespaces may share its ports.
        .env("KATOP_NETNS", "host")
        .args([
            "keepalive",
            "--filter",
            &filter,
            "--idle",
            "30s",
            "--intvl",
            "5s",
        ])
        .args(["--cnt", "3", "--yes", "--json", "--kill-log"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["result"], "changed", "{json}");
    assert_eq!(json[0]["before"]["keepalive"], false);
    assert_eq!(json[0]["after"]["idle_s"], 30);
    // The kernel's own view, through a fresh sock_diag dump: a keepalive timer, ~30 s out.
    let after = poll(Duration::from_secs(300));
    let timer = entry(&after, &s).sock.timer.expect("a timer armed");
    assert_eq!(timer.kind, katop::model::TimerKind::Keepalive);
    assert!(
        timer.expires_ms <= 30_000 && timer.expires_ms > 20_000,
        "{timer:?}"
    );
    // And the socket itself, as its owner sees it.
    let r = SockRef::from(&s);
    assert!(r.keepalive().unwrap());
    assert_eq!(r.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    assert_eq!(r.tcp_keepalive_retries().unwrap(), 3);
    // The owner goes on using it.
    s.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    server.read_exact(&mut buf).unwrap();
    server.write_all(b"ok").unwrap();
    s.read_exact(&mut buf[..2]).unwrap();
    assert_eq!(&buf[..2], b"ok");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("\"action\":\"keepalive\"") && logged.contains("\"result\":\"changed\""),
        "{logged}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn at_risk_flags_silence_past_a_middlebox_but_not_shorter_keepalive() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let quiet = TcpStream::connect(addr).unwrap();
    let (_qs, _) = l.accept().unwrap();
    let probed = TcpStream::connect(addr).unwrap();
    let (_ps, _) = l.accept().unwrap();
    keepalive(&probed, 1, 1, 9);
    // Silent for longer than the declared 2 s middlebox timeout.
    std::thread::sleep(Duration::from_millis(3500));
    let out = Command::new(env!("CARGO_BIN_EXE_katop"))
        // The host namespace only: sockets of other tests' namespaces may share its ports.
        .env("KATOP_NETNS", "host")
        .args(["--json", "--middlebox-timeout", "2s", "--filter"])
        .arg(format!("dport:{}", addr.port()))
        .env_remove("KATOP_FILTER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_port = |s: &TcpStream| {
        let local = s.local_addr().unwrap().to_string();
        json.as_array()
            .unwrap()
            .iter()
            .find(|e| e["local"] == local.as_str())
            .unwrap_or_else(|| panic!("{local} not in {json}"))
            .clone()
    };
    let q = by_port(&quiet);
    assert!(
        q["stale"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "at-risk"),
        "{q}"
    );
    assert!(
        q["at_risk"].as_str().unwrap().contains("keepalive is off"),
        "{q}"
    );
    let p = by_port(&probed);
    assert!(
        !p["stale"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "at-risk"),
        "keepalive every 1 s keeps it remembered: {p}"
    );
    // In-process too: the reason is a stale reason the filter language knows.
    let _ = StaleReason::from_name("at-risk").unwrap();
}

/// A socket's options, once read, stay its own when no process holds it any more (the fd
/// closed while the kernel finishes the connection): never the sysctls' guess.
#[test]
fn options_read_once_outlive_the_owners_fd() {
    use katop::collector::{Collector, Selection};
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    keepalive(&client, 7, 3, 4);
    let local = client.local_addr().unwrap().to_string();
    let remote = l.local_addr().unwrap().to_string();
    let mut c = Collector::new(Selection {
        protos: vec![katop::model::Proto::Tcp],
        ..Selection::default()
    })
    .unwrap();
    let find = |snap: &katop::model::Snapshot| {
        snap.socks
            .iter()
            .find(|s| {
                s.local.to_string() == local
                    && s.remote.to_string() == remote
                    && s.state != SockState::TimeWait
            })
            .cloned()
    };
    let first = find(&c.poll().unwrap()).expect("the client is listed");
    assert!(
        first.opts.read && first.opts.idle_s == 7,
        "{:?}",
        first.opts
    );
    // No process holds it now; the kernel still has it (FIN_WAIT: the server has not closed).
    drop(client);
    let after = find(&c.poll().unwrap()).expect("the closing client is still listed");
    assert!(after.owner.process().is_none(), "{:?}", after.owner);
    assert!(
        after.opts.read && after.opts.idle_s == 7 && after.opts.cnt == 4,
        "its options fell back to the sysctls: {:?}",
        after.opts
    );
    drop(server);
}
