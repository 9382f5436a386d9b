//! What makes katop safe to trust with a kill: healthy connections waiting to be accepted are
//! never orphans and never killed, an unreadable `/proc` is never taken for "no owner", a
//! capability on the binary does not let a user kill other users' connections, and every
//! process holding a socket is named.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

mod common;
use common::{is_root, katop_as_nobody, nobody_dir, run_as_nobody};

fn katop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_katop"))
        // The host namespace only: sockets of other tests' namespaces may share its ports.
        .env("KATOP_NETNS", "host")
        .args(args)
        .env_remove("KATOP_FILTER")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .as_array()
        .unwrap()
        .clone()
}

fn skip(what: &str) -> bool {
    if !is_root() {
        common::skipped(&format!(
            "{what}: needs root (SOCK_DESTROY needs CAP_NET_ADMIN)"
        ));
    }
    !is_root()
}

/// Neither reset nor closed: a read finds nothing yet, and a write goes through.
fn alive(s: &TcpStream) -> Result<(), String> {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 8];
    let r = (&*s).read(&mut buf);
    s.set_nonblocking(false).unwrap();
    match r {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(0) => return Err("closed".into()),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    (&*s).write_all(b"!").map_err(|e| e.to_string())
}

/// The tests here run one at a time: each runs katop, and a katop reading socket options
/// borrows each socket's fd for a moment (`pidfd_getfd`), so for that moment another katop
/// scanning /proc sees it holding the test's sockets (the ramp's kills would then take a katop
/// for their owner, were it not ranked last).
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A loopback listener whose accept queue holds the whole ramp.
fn deep_listener() -> TcpListener {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    s.listen(4096).unwrap();
    s.into()
}

/// A kill refused because its application had not accepted the connection yet.
fn refused_as_unaccepted(r: &Value) -> bool {
    r["result"] == "refused"
        && r["reason"]
            .as_str()
            .is_some_and(|w| w.contains("not yet accepted"))
}

/// The accept ramp: this many clients, each connecting this many times.
const CLIENTS: usize = 4;
const EACH: usize = 500;

#[test]
fn an_accept_ramp_loses_no_connection_to_kills() {
    let _alone = alone();
    if skip("the accept ramp") {
        return;
    }
    common::raise_fd_limit();
    let listener = deep_listener();
    let port = listener.local_addr().unwrap().port();
    // Removed however the test ends.
    let scratch = common::Scratch::new("ramp");
    let dir = scratch.0.clone();
    let log = dir.join("kills.jsonl");
    let ramping = AtomicBool::new(true);
    // Set once a kill found a connection still in the accept queue (and refused it).
    let met_the_queue = AtomicBool::new(false);
    // The application accepts in bursts every 50 ms, so connections wait in its queue; it
    // starts only once a kill has met the queue (or after 30 s), however slowly the kills run
    // on a loaded machine.
    let (accepted, clients, results) = std::thread::scope(|scope| {
        let acceptor = scope.spawn(|| {
            listener.set_nonblocking(true).unwrap();
            let waits_until = Instant::now() + Duration::from_secs(30);
            while !met_the_queue.load(Ordering::Relaxed) && Instant::now() < waits_until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while held.len() < CLIENTS * EACH && Instant::now() < deadline {
                while let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            held
        });
        let ramp: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    (0..EACH)
                        .map(|_| {
                            std::thread::sleep(Duration::from_millis(4));
                            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // The operator kills by `orphan`, and by a filter that names exactly the
        // connections nobody has accepted yet, over and over while the ramp goes on.
        let operator = scope.spawn(|| {
            let me = std::process::id();
            let filters = [
                format!("tcp orphan src:127.0.0.1:{port}"),
                format!("tcp src:127.0.0.1:{port} state:established !pid:{me}"),
            ];
            let mut results = Vec::new();
            while ramping.load(Ordering::Relaxed) {
                for f in &filters {
                    let out = Command::new(env!("CARGO_BIN_EXE_katop"))
                        // The host namespace only: sockets of other tests' namespaces may share its ports.
                        .env("KATOP_NETNS", "host")
                        .args([
                            "kill",
                            "--filter",
                            f,
                            "--stale-after",
                            "2s",
                            "--yes",
                            "--json",
                        ])
                        .arg("--kill-log")
                        .arg(&log)
                        .output()
                        .unwrap();
                    let got = json(&out);
                    if got.iter().any(refused_as_unaccepted) {
                        met_the_queue.store(true, Ordering::Relaxed);
                    }
                    results.extend(got);
                }
            }
            results
        });
        let clients: Vec<TcpStream> = ramp.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let accepted = acceptor.join().unwrap();
        ramping.store(false, Ordering::Relaxed);
        (accepted, clients, operator.join().unwrap())
    });
    let killed = results.iter().filter(|r| r["result"] == "killed").count();
    let guarded = results.iter().filter(|r| refused_as_unaccepted(r)).count();
    eprintln!(
        "accept ramp: {} kill attempts, {killed} killed, {guarded} refused as not yet accepted",
        results.len()
    );
    assert_eq!(killed, 0, "healthy connections were killed: {results:?}");
    assert!(
        guarded > 0,
        "no kill ever reached a connection in the accept queue"
    );
    assert_eq!(accepted.len(), CLIENTS * EACH);
    for s in clients.iter().chain(&accepted) {
        if let Err(e) = alive(s) {
            panic!("{:?} was hurt: {e}", s.local_addr());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_listener_that_stops_accepting_leaves_unaccepted_connections_that_can_be_killed() {
    let _alone = alone();
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap())
        .collect();
    let filter = format!("tcp src:{} state:established", l.local_addr().unwrap());
    let look = || {
        json(&katop(&[
            "--json",
            "--stale-after",
            "1s",
            "--filter",
            &filter,
        ]))
    };
    let young = look();
    assert_eq!(young.len(), 3, "{young:?}");
    for e in &young {
        assert_eq!(e["owner"], "none");
        assert_eq!(
            e["inode"], 0,
            "no file refers to a connection nobody accepted"
        );
        assert_eq!(
            e["stale"],
            serde_json::json!([]),
            "young: neither orphan nor stale: {e}"
        );
    }
    let dir = std::env::temp_dir().join(format!("katop-unaccepted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("kills.jsonl");
    let kill = |f: &str| {
        Command::new(env!("CARGO_BIN_EXE_katop"))
            // The host namespace only: sockets of other tests' namespaces may share its ports.
            .env("KATOP_NETNS", "host")
            .args([
                "kill",
                "--filter",
                f,
                "--stale-after",
                "1s",
                "--yes",
                "--json",
            ])
            .arg("--kill-log")
            .arg(&log)
            .output()
            .unwrap()
    };
    if is_root() {
        // Whatever the filter says, a connection younger than --stale-after is not killed.
        let out = kill(&filter);
        let reports = json(&out);
        assert_eq!(reports.len(), 3);
        for r in &reports {
            assert_eq!(r["result"], "refused", "{r}");
            assert!(
                r["reason"].as_str().unwrap().contains("not yet accepted"),
                "{r}"
            );
        }
        assert_eq!(out.status.code(), Some(1));
        for c in &clients {
            alive(c).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    for e in look() {
        let stale = e["stale"].as_array().unwrap();
        assert!(stale.iter().any(|r| r == "unaccepted"), "{e}");
        assert!(!stale.iter().any(|r| r == "orphan"), "{e}");
    }
    if skip("killing unaccepted connections") {
        return;
    }
    let reports = json(&kill(&format!(
        "unaccepted tcp src:{}",
        l.local_addr().unwrap()
    )));
    assert_eq!(reports.len(), 3);
    assert!(
        reports.iter().all(|r| r["result"] == "killed"),
        "{reports:?}"
    );
    for mut c in clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let err = c.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_proc_makes_owners_unknown_never_none() {
    let _alone = alone();
    let common::Established {
        listener: _l,
        client: _c,
        server: _s,
        filter,
    } = common::established();
    let bin = env!("CARGO_BIN_EXE_katop");
    let limited = |n: u32, args: &str| {
        Command::new("sh")
            .env("KATOP_NETNS", "host")
            .arg("-c")
            .arg(format!("ulimit -n {n} && exec \"$0\" {args}"))
            .arg(bin)
            .env_remove("KATOP_FILTER")
            .output()
            .unwrap()
    };
    // With --stale-after 0s an ownerless connection would be an orphan at once.
    let mut unknown = 0;
    for n in 4..=12 {
        let out = limited(n, &format!("--json --stale-after 0s --filter '{filter}'"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            assert!(!stderr.is_empty(), "ulimit {n}: failed without a word");
            continue;
        }
        let e = &json(&out)[0];
        assert_ne!(e["owner"], "none", "ulimit {n}: {e}\n{stderr}");
        assert!(
            !e["stale"].as_array().unwrap().iter().any(|r| r == "orphan"),
            "{e}"
        );
        if e["owner"] == "unknown" {
            unknown += 1;
            assert!(
                stderr.contains("show their owner as ?"),
                "ulimit {n}: {stderr}"
            );
        }
        let dry = limited(
            n,
            &format!("kill --dry-run --stale-after 0s --filter 'orphan {filter}'"),
        );
        assert!(
            !String::from_utf8_lossy(&dry.stdout).contains("would kill"),
            "ulimit {n}: {}",
            String::from_utf8_lossy(&dry.stdout)
        );
    }
    assert!(
        unknown > 0,
        "no file limit made /proc unreadable: the test tested nothing"
    );
}

/// Not a test on its own: the child of `a_capability_on_the_binary…`, run as `nobody`. It
/// connects to the port in `KATOP_TEST_CONNECT` and holds the connection until stdin closes.
#[test]
fn child_holding_a_connection() {
    let Ok(port) = std::env::var("KATOP_TEST_CONNECT") else {
        return;
    };
    let _c = TcpStream::connect((Ipv4Addr::LOCALHOST, port.parse::<u16>().unwrap())).unwrap();
    println!("connected");
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

#[test]
fn a_capability_on_the_binary_is_not_every_users_kill_switch() {
    let _alone = alone();
    if skip("the capability test") {
        return;
    }
    if Command::new("setcap").arg("-v").output().is_err() {
        common::skipped("setcap is missing (Debian: libcap2-bin; .ci/run installs it)");
        return;
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    // Root's connection, and one a process of nobody's holds.
    let mut mine = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut mine_server, _) = l.accept().unwrap();
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_holding_a_connection",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("KATOP_TEST_CONNECT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap()
    };
    let (mut theirs_server, _) = l.accept().unwrap();
    let (dir, bin) = nobody_dir("setcap");
    common::setcap("cap_net_admin+ep", &bin);
    let log = dir.join("kills.jsonl");
    let out = run_as_nobody(
        &bin,
        &dir,
        &[
            "kill",
            "--filter",
            &format!("tcp dst:127.0.0.1:{port} established"),
            "--yes",
            "--json",
            "--kill-log",
            log.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("acting only on uid 65534's sockets"),
        "{stderr}"
    );
    let reports = json(&out);
    assert_eq!(reports.len(), 2, "{reports:?}");
    let by_local = |s: &TcpStream| {
        let local = s.local_addr().unwrap().to_string();
        reports
            .iter()
            .find(|r| r["local"] == local.as_str())
            .cloned()
    };
    let root_report = by_local(&mine).expect("root's connection was chosen");
    assert_eq!(root_report["result"], "refused", "{root_report}");
    assert!(
        root_report["reason"]
            .as_str()
            .unwrap()
            .contains("your own (uid 65534)"),
        "{root_report}"
    );
    let theirs = reports.iter().find(|r| r["result"] == "killed");
    assert!(
        theirs.is_some(),
        "nobody's own connection was not killed: {reports:?}"
    );
    // Root's connection carries on; nobody's was reset.
    mine.write_all(b"still").unwrap();
    let mut buf = [0u8; 5];
    mine_server.read_exact(&mut buf).unwrap();
    theirs_server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let err = theirs_server.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_process_holding_a_socket_is_named() {
    let _alone = alone();
    let common::Established {
        listener: _l,
        client: c,
        server: _s,
        filter,
    } = common::established();
    // A second holder: a child inherits a duplicate (dup leaves close-on-exec off).
    let dup = rustix::io::dup(&c).unwrap();
    let dup_fd = std::os::fd::AsRawFd::as_raw_fd(&dup);
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    drop(dup);
    let e = &json(&katop(&["--json", "--filter", &filter]))[0];
    let owners = e["owners"].as_array().unwrap();
    let me = u64::from(std::process::id());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&c);
    let has = |pid: u64, fd: i32| owners.iter().any(|o| o["pid"] == pid && o["fd"] == fd);
    assert!(has(me, fd), "{e}");
    assert!(has(u64::from(child.id()), dup_fd), "{e}");
    assert_eq!(e["pid"], owners[0]["pid"], "pid is the first holder: {e}");
    let table = katop(&["--once", "-o", "process", "--filter", &filter]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().nth(1).is_some_and(|l| l.contains("]+")),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_owner_katop_cannot_see_is_unknown_in_every_output() {
    let _alone = alone();
    if !is_root() {
        common::skipped("needs root to run katop as nobody");
        return;
    }
    let common::Established {
        listener: _l,
        client: _c,
        server: _s,
        filter,
    } = common::established();
    let out = katop_as_nobody("unknown-owner", &["kill", "--dry-run", "--filter", &filter]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  ?  idle"), "{text}");
    assert!(!text.contains("  -  idle"), "{text}");
    let once = katop_as_nobody(
        "unknown-owner-once",
        &["--once", "-o", "process", "--filter", &filter],
    );
    assert_eq!(
        String::from_utf8_lossy(&once.stdout)
            .lines()
            .nth(1)
            .map(str::trim),
        Some("?")
    );
}

/// Another katop holding a socket (as one does for a moment while it reads the socket's
/// options through a borrowed fd) is never taken for its owner when another process holds it:
/// a kill filtering on the owner must not see a katop there.
#[test]
fn another_katop_is_never_the_owner_of_a_socket_another_process_holds() {
    let _alone = alone();
    let common::Established {
        listener: _l,
        client: c,
        server: _s,
        filter,
    } = common::established();
    // A katop holds it first (the lower pid), then `sleep`; this process lets go of it.
    let dup = rustix::io::dup(&c).unwrap();
    let mut other = Command::new(env!("CARGO_BIN_EXE_katop"))
        .args([
            "history",
            "--follow",
            "--interval",
            "1h",
            "--filter",
            "dport:1",
        ])
        .env("KATOP_NETNS", "host")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    drop(dup);
    drop(c);
    let e = &json(&katop(&["--json", "--filter", &filter]))[0];
    let owners = e["owners"].as_array().unwrap();
    let held_by = |pid: u32| owners.iter().any(|o| o["pid"] == u64::from(pid));
    assert!(held_by(other.id()) && held_by(sleeper.id()), "{e}");
    assert_eq!(e["pid"], u64::from(sleeper.id()), "{e}");
    assert_eq!(e["process"], "sleep", "{e}");
    for child in [&mut other, &mut sleeper] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
