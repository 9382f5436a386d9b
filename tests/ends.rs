//! Why connections end, made to happen for real and read back from `katop history --follow`,
//! the exporter's end counters and the dashboard's closed rows: an orderly close, a reset each
//! way (`SO_LINGER` 0), `katop kill`, a dead peer behind a cut link (keepalive timeout), and an
//! unanswered write (retransmission timeout). Root only: the causes come from the kernel's
//! tracepoints.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use socket2::{SockRef, TcpKeepalive};

mod common;
use common::ends::{cause, ends, listener, pair, Counted, Follow};
use common::tmux::Tmux;
use common::{is_root, Reaped, SilentPeer};

fn skip(what: &str) -> bool {
    if !is_root() {
        common::skipped(&format!("{what}: the tracepoints need root"));
        return true;
    }
    assert!(
        std::path::Path::new("/sys/kernel/tracing/instances").is_dir(),
        "tracefs is not mounted at /sys/kernel/tracing (.ci/run mounts it)"
    );
    false
}

#[test]
fn orderly_closes_and_resets_each_way_are_told_as_the_kernel_saw_them() {
    if skip("closes and resets") {
        return;
    }
    let (l, filter) = listener();
    let mut h = Follow::start(&filter);
    let first = h.watching(&l);
    let (c1, s1) = (ends(&first.0), ends(&first.1));
    // An orderly close: the client first, the server after reading its FIN.
    let (client, mut server) = first;
    drop(client);
    assert_eq!(server.read(&mut [0; 8]).unwrap(), 0);
    drop(server);
    let client_end = h.closed(c1);
    assert_eq!(cause(&client_end), ("closed", "tracepoint"), "{client_end}");
    assert_eq!(client_end["remote"], l.local_addr().unwrap().to_string());
    assert_eq!(
        client_end["pid"],
        std::process::id(),
        "told as the poll before its end saw it"
    );
    assert!(client_end["lifetime_s"].as_f64().is_some(), "{client_end}");
    assert_eq!(cause(&h.closed(s1)), ("closed", "tracepoint"));
    // SO_LINGER 0: the client aborts (reset-sent), the server gets the RST (reset-received),
    // told while the server still holds its socket.
    let (client, mut server) = pair(&l);
    let (c2, s2) = (ends(&client), ends(&server));
    std::thread::sleep(Duration::from_millis(500));
    SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let aborted = h.closed(c2);
    assert_eq!(cause(&aborted), ("reset-sent", "tracepoint"), "{aborted}");
    let reset = h.closed(s2);
    assert_eq!(cause(&reset), ("reset-received", "tracepoint"), "{reset}");
    assert_eq!(
        reset["errno"], 104,
        "ECONNRESET, as the application sees it"
    );
    let err = server.read(&mut [0; 8]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    // The first client's socket lingered after its end was told (TIME_WAIT, seen by the polls
    // since): no state is told after `closed`.
    let local = c1.0.to_string();
    let of_it =
        |v: &Value| v["local"] == local.as_str() && v["remote"] == c1.1.to_string().as_str();
    let end = h
        .seen
        .iter()
        .position(|v| of_it(v) && v["event"] == "closed")
        .unwrap();
    let after: Vec<_> = h.seen[end..]
        .iter()
        .filter(|v| of_it(v) && v["event"] == "state")
        .collect();
    assert!(after.is_empty(), "{after:#?}");
}

#[test]
fn orderly_closes_are_counted_as_closed_by_the_exporter() {
    if skip("the closed counter") {
        return;
    }
    // Servers in a namespace of their own, which the exporter alone reads: its counter holds
    // their ends only, whatever else ends on the host meanwhile.
    let ns = common::PeerNs::new();
    let counted = Counted::start_in("closed", &ns.name);
    let l = ns.within(|| TcpListener::bind(format!("{}:0", ns.peer_ip)).unwrap());
    let pairs: Vec<_> = (0..3).map(|_| pair(&l)).collect();
    common::wait_until("the exporter's poll saw the three", || {
        let page = counted.scrape()?;
        let established = page
            .lines()
            .find(|l| l.starts_with("katop_sockets{") && l.contains("state=\"ESTABLISHED\""))?;
        (established.rsplit(' ').next()? == "3").then_some(())
    });
    // Each client closes, then its server once it read the FIN: orderly ends, the servers'
    // in the namespace.
    for (client, mut server) in pairs {
        drop(client);
        assert_eq!(server.read(&mut [0; 8]).unwrap(), 0);
    }
    common::wait_until("three orderly ends counted", || {
        (counted.now() >= 3.0).then_some(())
    });
}

#[test]
fn a_katop_kill_is_killed_and_its_peer_reset() {
    if skip("kill") {
        return;
    }
    let counted = Counted::start("killed");
    let before = counted.now();
    let (l, filter) = listener();
    let mut h = Follow::start(&filter);
    let first = h.watching(&l);
    let (c, s) = (ends(&first.0), ends(&first.1));
    let out = common::katop_checked(
        &[
            "kill",
            "--yes",
            "--filter",
            &format!("src:{} dst:{} established", c.0, c.1),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let killed = h.closed(c);
    assert_eq!(cause(&killed), ("killed", "tracepoint"), "{killed}");
    assert_eq!(killed["errno"], 103, "ECONNABORTED");
    // The kill itself is an event, told before the end it caused; the peer's end is no kill.
    let (local, remote) = (c.0.to_string(), c.1.to_string());
    let position = |seen: &[Value], kind: &str, local: &str| {
        seen.iter()
            .position(|v| v["event"] == kind && v["local"] == local)
    };
    let kill = position(&h.seen, "killed", &local).expect("a killed event");
    assert!(kill < position(&h.seen, "closed", &local).unwrap());
    assert_eq!(h.seen[kill]["remote"], remote.as_str());
    assert_eq!(cause(&h.closed(s)), ("reset-received", "tracepoint"));
    assert!(position(&h.seen, "killed", &s.0.to_string()).is_none());
    counted.grew_from(before);
}

#[test]
fn keepalive_turned_on_and_off_by_the_application_is_an_event() {
    if skip("keepalive options") {
        return;
    }
    let (l, filter) = listener();
    let mut h = Follow::start(&filter);
    // Seen opening with its owner known (so its options were read then, as they were: off),
    // then changed by its process.
    let (client, _server) = loop {
        let pair = h.watching(&l);
        let local = pair.0.local_addr().unwrap().to_string();
        let owned = h.seen.iter().any(|v| {
            v["event"] == "opened" && v["local"] == local.as_str() && v["pid"].is_number()
        });
        if owned {
            break pair;
        }
    };
    let (local, remote) = ends(&client);
    let ours = |v: &Value| v["local"] == local.to_string().as_str() && v["event"] == "keepalive";
    let sock = socket2::SockRef::from(&client);
    sock.set_tcp_keepalive(&keepalive(77, 11, 4)).unwrap();
    sock.set_keepalive(true).unwrap();
    let on = h.wait("keepalive on", |v| ours(v) && v["keepalive"]["on"] == true);
    assert_eq!(on["remote"], remote.to_string().as_str());
    assert_eq!(on["keepalive"]["idle_s"], 77, "{on}");
    assert_eq!(on["keepalive"]["intvl_s"], 11, "{on}");
    assert_eq!(on["keepalive"]["cnt"], 4, "{on}");
    assert_eq!(on["state"], "ESTABLISHED");
    sock.set_keepalive(false).unwrap();
    let off = h.wait_new("keepalive off", |v| {
        ours(v) && v["keepalive"]["on"] == false
    });
    assert_eq!(off["keepalive"]["idle_s"], 77, "{off}");
}

fn keepalive(idle: u64, intvl: u64, cnt: u32) -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(idle))
        .with_interval(Duration::from_secs(intvl))
        .with_retries(cnt)
}

/// A peer to go silent, connected with `TCP_USER_TIMEOUT` 2 s: unacknowledged data then ends
/// the connection after 2 s.
fn unanswered_writes_time_out() -> SilentPeer {
    SilentPeer::connect_with(|s| {
        s.set_tcp_user_timeout(Some(Duration::from_secs(2)))
            .unwrap();
    })
}

#[test]
fn a_dead_peer_behind_a_cut_link_is_a_keepalive_timeout() {
    if skip("keepalive timeout") {
        return;
    }
    let counted = Counted::start("keepalive-timeout");
    let before = counted.now();
    let peer = SilentPeer::connect(&keepalive(2, 1, 2));
    let remote = peer.client.peer_addr().unwrap();
    let mut h = Follow::watching_also(&format!("dst:{remote}"));
    peer.go_silent();
    let end = h.closed(ends(&peer.client));
    assert_eq!(cause(&end), ("keepalive-timeout", "tracepoint"), "{end}");
    assert_eq!(end["reset_reason"], "TCP_KEEPALIVE_TIMEOUT");
    assert_eq!(end["errno"], 110, "ETIMEDOUT");
    counted.grew_from(before);
}

#[test]
fn an_unanswered_write_is_a_retransmit_timeout() {
    if skip("retransmit timeout") {
        return;
    }
    let counted = Counted::start("retransmit-timeout");
    let before = counted.now();
    let peer = unanswered_writes_time_out();
    let remote = peer.client.peer_addr().unwrap();
    let mut h = Follow::watching_also(&format!("dst:{remote}"));
    peer.go_silent();
    let mut client = peer.client.try_clone().unwrap();
    client.write_all(b"are you there?").unwrap();
    let end = h.closed(ends(&peer.client));
    assert_eq!(cause(&end), ("retransmit-timeout", "tracepoint"), "{end}");
    assert!(
        end["reset_reason"].is_null(),
        "no reset on a retransmission timeout: {end}"
    );
    counted.grew_from(before);
}

#[test]
fn history_of_a_store_that_is_not_there_says_so() {
    let out = common::katop_checked(&["history", "--store", "/nonexistent/katop-store"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(
        err.contains("/nonexistent/katop-store") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn the_dashboards_closed_rows_say_why_they_ended() {
    if skip("closed rows") {
        return;
    }
    let Some(t) = Tmux::start("ends", 160, 30) else {
        return;
    };
    let (l, filter) = listener();
    t.start_katop(&format!(
        "--interval 300ms --filter 'netns:host ({filter})'"
    ));
    let (client, server) = pair(&l);
    let shown = client.local_addr().unwrap().to_string();
    t.wait("the connection listed", |s| s.contains(&shown));
    SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    // The aborting side's row greyed for 3 s with its cause in the STALE column; the reset
    // side, which the test still holds, listed as dead.
    let dead_row = |l: &str| l.contains(" CLOSE ") && l.trim_end().ends_with("dead");
    t.wait("the abort's cause and the held end dead", |s| {
        s.contains("ended: reset-sent") && s.lines().any(dead_row)
    });
    drop(server);
    // Released by its process: no longer dead, its greyed row saying the end the kernel told.
    t.wait("the dead end closed, with its cause", |s| {
        !s.lines().any(dead_row)
            && s.lines()
                .any(|l| l.contains(&shown) && l.contains("ended: reset-received"))
    });
    // Each row greyed with its own cause: an orderly close, then a kill.
    let row_says = |s: &str, local: &str, cause: &str| {
        s.lines()
            .any(|l| l.contains(local) && l.contains(&format!("ended: {cause}")))
    };
    let (client, mut server) = pair(&l);
    let local = client.local_addr().unwrap().to_string();
    t.wait("the second connection listed", |s| s.contains(&local));
    drop(client);
    assert_eq!(server.read(&mut [0; 8]).unwrap(), 0);
    drop(server);
    t.wait("an orderly close", |s| row_says(s, &local, "closed"));
    let (client, server) = pair(&l);
    let local = client.local_addr().unwrap().to_string();
    t.wait("the third connection listed", |s| s.contains(&local));
    let out = common::katop_checked(
        &[
            "kill",
            "--yes",
            "--filter",
            &format!("src:{local} dst:{} established", l.local_addr().unwrap()),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    // Killed while its process holds it: dead, its details saying why, until the process
    // lets go of it.
    t.wait("the killed end dead", |s| {
        s.lines().any(|l| l.contains(&local) && dead_row(l))
    });
    t.keys(&["F4"]);
    t.type_text(&format!("netns:host src:{local}"));
    t.keys(&["Enter", "Enter"]);
    t.wait("the kill in its details", |s| {
        s.contains("the kernel ended it") && s.contains("ended: killed")
    });
    t.keys(&["Escape"]);
    drop((client, server));
    t.wait("the dead end gone", |s| {
        s.contains("no socket matches the filter")
    });
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}

#[test]
fn the_dashboard_tells_a_dead_peers_timeouts() {
    if skip("timeouts in the dashboard") {
        return;
    }
    let Some(t) = Tmux::start("timeouts", 160, 30) else {
        return;
    };
    // Two peers go silent: one idle with short keepalive settings, one sent data it never
    // acknowledges (TCP_USER_TIMEOUT 2 s). This test holds both clients, so the kernel's ends
    // leave them dead, each with the cause it told.
    let idle = SilentPeer::connect(&keepalive(2, 1, 2));
    let writing = unanswered_writes_time_out();
    let local = |p: &SilentPeer| p.client.local_addr().unwrap().to_string();
    let (a, b) = (local(&idle), local(&writing));
    t.start_katop(&format!(
        "--interval 300ms --filter 'netns:host (src:{a} or src:{b})'"
    ));
    t.wait("both listed", |s| s.contains(&a) && s.contains(&b));
    idle.go_silent();
    writing.go_silent();
    writing
        .client
        .try_clone()
        .unwrap()
        .write_all(b"are you there?")
        .unwrap();
    let dead = |s: &str, local: &str| {
        s.lines()
            .any(|l| l.contains(local) && l.contains(" CLOSE ") && l.trim_end().ends_with("dead"))
    };
    t.wait("both dead", |s| dead(s, &a) && dead(s, &b));
    for (local, cause) in [(&a, "keepalive-timeout"), (&b, "retransmit-timeout")] {
        // One key at a time, each seen done: an Escape followed at once by another key reads
        // as Alt and that key.
        t.keys(&["Delete"]);
        t.wait("the filter cleared", |s| s.contains("filter cleared"));
        t.keys(&["F4"]);
        t.type_text(&format!("netns:host src:{local}"));
        t.keys(&["Enter", "Enter"]);
        t.wait(&format!("{cause} in the details of {local}"), |s| {
            s.contains(local.as_str())
                && s.contains("the kernel ended it")
                && s.contains(&format!("ended: {cause}"))
        });
        t.keys(&["Escape"]);
        t.wait("the details closed", |s| !s.contains("the kernel ended it"));
    }
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}

#[test]
fn a_connection_the_kernel_ended_while_held_is_dead_until_closed() {
    if skip("dead while held") {
        return;
    }
    let (l, _) = listener();
    let (client, server) = pair(&l);
    let (s_local, s_remote) = ends(&server);
    // The stream lists the server's end (and its listener) every 200 ms.
    // The filter language's `dead` takes it once the kernel has ended it.
    let filter = format!("src:{s_local} (listen or established or dead)");
    let mut stream = Follow::spawn(&["--jsonl", "--interval", "200ms", "--filter", &filter]);
    let remote = s_remote.to_string();
    stream.wait("the connection listed", |v| {
        v["state"] == "ESTABLISHED" && v["remote"] == remote.as_str()
    });
    // The peer resets it; the test holds its end without reading: dead, still held.
    SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let cookie = stream
        .wait("the held end listed dead", |v| {
            v["state"] == "CLOSE"
                && v["stale"]
                    .as_array()
                    .is_some_and(|r| r.contains(&"dead".into()))
        })
        .get("cookie")
        .cloned()
        .unwrap();
    let dead = stream.wait("why it ended", |v| {
        v["cookie"] == cookie && v["ended_cause"].is_string()
    });
    assert_eq!(dead["ended_cause"], "reset-received", "{dead}");
    assert_eq!(dead["ended_cause_source"], "tracepoint");
    assert_eq!(dead["pid"], std::process::id(), "held by this process");
    // Closed by its application: gone. A whole poll without it: two listener lines with no
    // line of it between (lines from polls before the close may still be queued).
    drop(server);
    let listener_lines_since = std::cell::Cell::new(0);
    stream.wait_new("the dead socket gone", |v| {
        if v["cookie"] == cookie {
            listener_lines_since.set(0);
        } else if v["state"] == "LISTEN" {
            listener_lines_since.set(listener_lines_since.get() + 1);
        }
        listener_lines_since.get() >= 2
    });
}

#[test]
fn a_refused_connect_ends_nothing_and_a_connection_no_poll_saw_passes_the_filter() {
    if skip("refused and short") {
        return;
    }
    let (l, filter) = listener();
    let refused = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    // Polls 2 s apart: a connection opened and closed at once lives between two of them.
    // Every namespace read: only then is an end no poll saw known to be one katop reads.
    let mut h = Follow::spawn_in(
        "all",
        &[
            "history",
            "--follow",
            "--json",
            "--interval",
            "2s",
            "--filter",
            &format!("({filter}) or dst:{refused}"),
        ],
    );
    drop(h.watching(&l));
    assert!(
        TcpStream::connect(refused).is_err(),
        "nothing listens there"
    );
    let (c, s) = pair(&l);
    let short = ends(&c);
    drop(c);
    drop(s);
    let end = h.closed(short);
    assert_eq!(cause(&end), ("closed", "tracepoint"), "{end}");
    let refused = refused.to_string();
    assert!(
        h.seen.iter().all(|v| v["remote"] != refused.as_str()),
        "a connect that never opened was told as an end: {:#?}",
        h.seen
    );
}

#[test]
fn katop_removes_its_tracefs_instance_when_it_exits() {
    if skip("instance removal") {
        return;
    }
    let instances = || -> Vec<String> {
        std::fs::read_dir("/sys/kernel/tracing/instances")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_katop"))
        .args(["exporter", "--listen", "127.0.0.1:0", "--interval", "200ms"])
        .env("KATOP_NETNS", "host")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let ours = format!("katop-{}-", child.0.id());
    common::wait_for("its instance", || {
        instances().iter().any(|n| n.starts_with(&ours))
    });
    let pid = rustix::process::Pid::from_raw(child.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.0.wait().unwrap().success());
    let left: Vec<String> = instances()
        .into_iter()
        .filter(|n| n.starts_with(&ours))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_stale_reason_gained_and_lost_is_an_event() {
    let (l, filter) = listener();
    let mut h = Follow::spawn(&[
        "history",
        "--follow",
        "--json",
        "--interval",
        "200ms",
        "--stale-after",
        "1s",
        "--filter",
        &filter,
    ]);
    let (mut client, mut server) = h.watching(&l);
    let s_ends = ends(&server);
    let (local, remote) = (s_ends.0.to_string(), s_ends.1.to_string());
    let ours = |v: &Value| v["local"] == local.as_str() && v["remote"] == remote.as_str();
    let has = |list: &Value, r: &str| list.as_array().is_some_and(|l| l.contains(&r.into()));
    // Silent past --stale-after: idle gained; a word each way: idle lost.
    let gained = h.wait("idle gained", |v| {
        ours(v) && v["event"] == "stale" && has(&v["gained"], "idle")
    });
    assert!(has(&gained["stale"], "idle"), "{gained}");
    client.write_all(b"hi").unwrap();
    server.read_exact(&mut [0; 2]).unwrap();
    server.write_all(b"yo").unwrap();
    client.read_exact(&mut [0; 2]).unwrap();
    let lost = h.wait("idle lost", |v| {
        ours(v) && v["event"] == "stale" && has(&v["lost"], "idle")
    });
    assert!(!has(&lost["stale"], "idle"), "{lost}");
    // The client closes; the server's end sits in CLOSE_WAIT: stale after a second.
    drop(client);
    let gained = h.wait("close-wait gained", |v| {
        ours(v) && v["event"] == "stale" && has(&v["gained"], "close-wait")
    });
    assert_eq!(gained["state"], "CLOSE_WAIT");
    // Closed at last: the reason goes with it (the end is told as closed).
    drop(server);
    let end = h.closed(s_ends);
    assert_eq!(end["cause"], "closed", "{end}");
}
