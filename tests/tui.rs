//! The real binary in a real terminal: tmux runs katop, `send-keys` types, `capture-pane` reads.
//! Waits are bounded polls for text to appear, never fixed sleeps asserted on.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

mod common;
use common::tmux::Tmux;

#[test]
fn filter_select_details_stale_preset_and_quit() {
    let Some(t) = Tmux::start("keys", 160, 40) else {
        return;
    };
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_server, _) = l.accept().unwrap();
    let port = client.local_addr().unwrap().port();

    t.start_katop("--interval 300ms");
    t.wait_for("keepalive");
    let (only_it, _) = t.show_only(&client);
    t.wait_for(&format!("[{only_it}]"));
    // The first poll may land after the keys: wait for the test's connection to be listed.
    let server = l.local_addr().unwrap().to_string();
    t.wait("the filter to leave only the test's client", |s| {
        let rows: Vec<&str> = s.lines().filter(|l| l.starts_with("tcp ")).collect();
        rows.len() == 1
            && rows[0].contains(&format!("127.0.0.1:{port}"))
            && rows[0].contains(&server)
    });

    // Details of the selected socket: the test's own process, its cookie, its keepalive.
    t.keys(&["Enter"]);
    // (All of it at once: a capture can catch a frame half drawn.)
    let me = format!("[{}]", std::process::id());
    let local = format!("127.0.0.1:{port}");
    t.wait(
        "the detail pane with the socket, its owner and its keepalive",
        |s| {
            s.contains("details · ")
                && s.contains(&local)
                && s.contains(&me)
                && s.contains("keepalive is off")
        },
    );
    t.keys(&["Enter"]);
    t.wait("details closed", |s| !s.contains("details · "));

    // A bad filter shows its error in place and keeps the table.
    t.keys(&["F4"]);
    // (" rtt" alone is already invalid, so every keystroke here keeps the last valid filter.)
    t.type_text(" rtt>");
    // (Wait for the whole message: a capture can catch a frame half drawn.)
    t.wait_for("expected a duration like 10m after 'rtt>'");
    let s = t.wait_for(&format!("127.0.0.1:{port}"));
    assert!(
        s.contains(&format!("127.0.0.1:{port}")),
        "an invalid filter cleared the table:\n{s}"
    );
    t.keys(&["Escape"]);
    // (A key sent right after Escape would read as Alt+key: wait for the bar to close.)
    t.wait("the filter bar to close", |s| !s.contains("filter: "));

    // The stale preset replaces the filter.
    t.keys(&["s"]);
    t.wait_for("[stale]");

    t.keys(&["q"]);
    let s = t.wait_for("AFTER-KATOP-0");
    assert!(
        !s.contains("ESTAB"),
        "the dashboard is still on screen after quit:\n{s}"
    );
    t.assert_cooked();
}

#[test]
fn sigterm_restores_the_terminal() {
    let Some(t) = Tmux::start("sigterm", 100, 30) else {
        return;
    };
    t.start_katop("");
    t.wait_for("keepalive");
    let shell = t.cmd(&["display-message", "-p", "-t", "0", "#{pane_pid}"]);
    let out = Command::new("pkill")
        .args(["-TERM", "-P", shell.trim(), "katop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "no katop child of the pane's shell");
    let s = t.wait("katop's exit status", |s| {
        s.lines().any(|l| l.starts_with("AFTER-KATOP-"))
    });
    assert!(s.contains("AFTER-KATOP-0"), "{s}");
    t.assert_cooked();
}

#[test]
fn a_tiny_terminal_gets_a_message() {
    let Some(t) = Tmux::start("tiny", 40, 8) else {
        return;
    };
    t.launch("");
    t.wait_for("terminal too small");
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}

#[test]
fn kills_a_connection_through_the_confirmation_dialog() {
    if !rustix::process::geteuid().is_root() {
        common::skipped("killing with SOCK_DESTROY needs root (CAP_NET_ADMIN)");
        return;
    }
    let Some(t) = Tmux::start("kill", 160, 40) else {
        return;
    };
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_server, _) = l.accept().unwrap();
    let (mut keep, _) = (
        TcpStream::connect(l.local_addr().unwrap()).unwrap(),
        l.accept().unwrap(),
    );
    let log = t.start_logging_katop("kill");
    let (only_it, local) = t.show_only(&client);
    t.wait("the test's client as the only row", |s| {
        s.contains(&format!("[{only_it}]"))
            && s.lines().filter(|l| l.starts_with("tcp ")).count() == 1
            && s.contains(&local)
    });
    // k asks, Enter on the default No cancels: the connection lives.
    t.keys(&["k"]);
    t.wait("the confirmation", |s| {
        s.contains("Kill this socket?") && s.contains(&local) && s.contains("[ No ]")
    });
    t.keys(&["Enter"]);
    t.wait_for("kill cancelled");
    // k, y: killed, and the row goes.
    t.keys(&["k"]);
    t.wait_for("Kill this socket?");
    t.keys(&["y"]);
    t.wait("the kill's result", |s| {
        s.contains("kill: killed 1, already gone 0, refused 0, failed 0")
    });
    t.wait("the killed row to go", |s| {
        s.lines().filter(|l| l.starts_with("tcp ")).count() == 0
    });
    // The kill log view lists it.
    t.keys(&["L"]);
    t.wait("the kill log", |s| {
        s.contains("killed (sock-destroy, now gone)") && s.contains(&local)
    });
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
    t.assert_cooked();

    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let err = client.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    keep.write_all(b"still alive").unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(
        logged.contains(&format!("\"local\":\"{local}\"")),
        "{logged}"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn turns_keepalive_on_from_the_dashboard() {
    if !rustix::process::geteuid().is_root() {
        common::skipped("borrowing this process's fd (pidfd_getfd) from katop needs root");
        return;
    }
    let Some(t) = Tmux::start("keepalive", 160, 40) else {
        return;
    };
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut server, _) = l.accept().unwrap();
    let log = t.start_logging_katop("ka");
    let (_, local) = t.show_only(&client);
    t.wait("the test's client, keepalive off", |s| {
        s.lines().filter(|l| l.starts_with("tcp ")).count() == 1
            && s.lines().any(|l| l.contains(&local) && l.contains(" off "))
    });
    t.keys(&["K"]);
    t.wait("the keepalive dialog", |s| {
        s.contains("Turn keepalive on (or set its timers) for this socket?")
            && s.contains("settings: idle=60s intvl=10s cnt=5")
    });
    // Edit the count: cnt=5 -> cnt=3.
    t.keys(&["BSpace"]);
    t.type_text("3");
    t.wait_for("noticed within 1m30s");
    t.keys(&["Enter"]);
    t.wait("the change's result", |s| {
        s.contains("keepalive: changed 1, already gone 0, refused 0, failed 0")
    });
    // katop reads the socket again: keepalive on, 3 probes to go.
    t.wait("the row to show keepalive on", |s| {
        s.lines().any(|l| l.contains(&local) && l.contains(" on "))
    });
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
    let r = socket2::SockRef::from(&client);
    assert!(r.keepalive().unwrap());
    assert_eq!(r.tcp_keepalive_retries().unwrap(), 3);
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"action\":\"keepalive\""), "{logged}");
    let _ = std::fs::remove_file(&log);
}

/// The first screen shows the worst first: a `CLOSE_WAIT` leak above a connection idle longer.
#[test]
fn the_worst_connections_come_first() {
    let Some(t) = Tmux::start("worst-first", 160, 30) else {
        return;
    };
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    // Idle the longest, keepalive off: stale for that, but healthy.
    let quiet = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_quiet_server, _) = l.accept().unwrap();
    t.start_katop(&format!(
        "--interval 200ms --stale-after 1s --filter 'netns:host dst:127.0.0.1:{port}'"
    ));
    let quiet_port = quiet.local_addr().unwrap().port();
    t.wait("the quiet connection idle over a second", |s| {
        s.lines()
            .any(|l| l.contains(&format!(":{quiet_port} ")) && l.contains("no-keepalive"))
    });
    // A leak: the peer closed, this end never will.
    let leak = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (leak_server, _) = l.accept().unwrap();
    drop(leak_server);
    let leak_port = leak.local_addr().unwrap().port();
    let s = t.wait("the leak stale", |s| {
        s.lines()
            .any(|l| l.contains(&format!(":{leak_port} ")) && l.contains("close-wait"))
    });
    let rows: Vec<&str> = s
        .lines()
        .filter(|l| l.contains("127.0.0.1:") || l.contains(&format!(":{port} ")))
        .collect();
    let first = s
        .lines()
        .skip_while(|l| !l.contains("STALE"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        first.contains(&format!(":{leak_port} ")),
        "the leak is not first:\n{s}\n{rows:?}"
    );
    assert!(s.contains("STALE▼"), "{s}");
    t.keys(&["q"]);
}
