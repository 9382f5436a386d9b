//! The dashboard's keys in a real terminal (tmux): editing the filter, searching, the poll
//! interval, the selection when its socket closes, and the groups view over a real `PostgreSQL`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};

mod common;
use common::postgres::Postgres;
use common::tmux::Tmux;

/// Rows of the socket table (lines that start with the protocol).
fn rows(s: &str) -> Vec<&str> {
    s.lines().filter(|l| l.starts_with("tcp ")).collect()
}

/// Three connections to one listener: (listener, [(client, server)]).
fn three() -> (TcpListener, Vec<(TcpStream, TcpStream)>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let pairs = (0..3)
        .map(|_| {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            (c, s)
        })
        .collect();
    (l, pairs)
}

fn port(s: &TcpStream) -> u16 {
    s.local_addr().unwrap().port()
}

/// The filter that shows exactly the three clients: by address, not port alone (another test's
/// `TIME_WAIT` towards 127.0.1.9 on the same port number matched `dport:` once), and in the host's
/// namespace only (as root the dashboard reads every namespace, where another test's or a
/// container's loopback may have a `127.0.0.1` on the same port).
fn base_filter(server: u16) -> String {
    format!("netns:host dst:127.0.0.1:{server} established")
}

/// Starts katop polling every 300 ms, filtered to the clients of port `server`, and waits for
/// the three of them.
fn katop_on_three(t: &Tmux, server: u16) {
    t.start_katop("--interval 300ms");
    let base = base_filter(server);
    t.keys(&["F4"]);
    t.type_text(&base);
    t.keys(&["Enter"]);
    t.wait("the three clients", |s| {
        rows(s).len() == 3 && s.contains(&format!("[{base}]"))
    });
}

/// Searches for `text` (`/`, the text, `Enter`).
fn search(t: &Tmux, text: &str) {
    t.keys(&["/"]);
    t.type_text(text);
    t.keys(&["Enter"]);
    // Kept: the selection is on the match.
    t.wait_for(&format!("search: {text} · n next"));
}

#[test]
fn the_filter_bar_edits_in_place_and_esc_puts_back_the_previous_filter() {
    let Some(t) = Tmux::start("edit", 160, 40) else {
        return;
    };
    let (l, pairs) = three();
    let server = l.local_addr().unwrap().port();
    let clients: Vec<u16> = pairs.iter().map(|p| port(&p.0)).collect();
    katop_on_three(&t, server);
    let base = base_filter(server);
    // Narrow to one client as typed; Ctrl-W takes its port back off (the text is invalid
    // meanwhile, and the table keeps the last valid filter); another port is typed in.
    t.keys(&["F4"]);
    t.type_text(&format!(" sport:{}", clients[0]));
    t.wait("one client", |s| rows(s).len() == 1);
    t.keys(&["C-w"]);
    t.wait_for(&format!("filter: {base} sport:"));
    assert_eq!(rows(&t.screen()).len(), 1);
    t.type_text(&clients[1].to_string());
    t.wait("the other client", |s| {
        rows(s).len() == 1 && rows(s)[0].contains(&format!(":{}", clients[1]))
    });
    // ← into the line: a `!` before `sport` negates it.
    for _ in 0..format!("sport:{}", clients[1]).len() {
        t.keys(&["Left"]);
    }
    t.type_text("!");
    t.wait("all but that client", |s| {
        rows(s).len() == 2 && s.contains(&format!("filter: {base} !sport:{}", clients[1]))
    });
    // Esc: the filter from before the bar opened.
    t.keys(&["Escape"]);
    t.wait("the previous filter back", |s| {
        rows(s).len() == 3 && s.contains(&format!("[{base}]")) && !s.contains("filter: ")
    });
    // Del clears it, as the footer says.
    assert!(t.screen().contains("Del clears filter"));
    t.keys(&["DC"]);
    t.wait("no filter", |s| {
        !s.contains(&format!("[{base}]")) && rows(s).len() > 3
    });
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
    drop(pairs);
}

#[test]
fn search_jumps_to_a_row_without_hiding_the_others() {
    let Some(t) = Tmux::start("search", 160, 40) else {
        return;
    };
    let (l, pairs) = three();
    let server = l.local_addr().unwrap().port();
    let target = port(&pairs[2].0);
    katop_on_three(&t, server);
    search(&t, &target.to_string());
    // Still three rows; the details are the searched one's.
    t.keys(&["Enter"]);
    let s = t.wait("details of the match", |s| {
        s.contains("details · ") && s.contains(&format!("local 127.0.0.1:{target}"))
    });
    // Beside the pane the table may be compact (a local port without its address): a row is
    // a line whose part left of the pane names the server as its remote end (the footer
    // quotes the filter, which names it too).
    let base = base_filter(server);
    let listed = s
        .lines()
        .filter(|l| !l.contains(&base))
        .map(|l| l.split('│').next().unwrap_or(l))
        .filter(|l| l.contains(&format!("127.0.0.1:{server}")))
        .count();
    assert_eq!(listed, 3, "a search hid rows:\n{s}");
    t.keys(&["Escape"]);
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}

#[test]
fn plus_and_minus_change_the_interval_in_the_header() {
    let Some(t) = Tmux::start("interval", 120, 30) else {
        return;
    };
    t.start_katop("");
    t.wait_for("every 1s ·");
    t.keys(&["+"]);
    t.wait_for("every 2s ·");
    t.keys(&["-", "-"]);
    t.wait_for("every 500ms ·");
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}

#[test]
fn the_selection_moves_to_its_neighbour_when_its_socket_closes() {
    let Some(t) = Tmux::start("neighbour", 160, 40) else {
        return;
    };
    let (l, mut pairs) = three();
    let server = l.local_addr().unwrap().port();
    let gone = port(&pairs[1].0);
    katop_on_three(&t, server);
    search(&t, &gone.to_string());
    // The selected connection closes (both ends: no TIME_WAIT on the client's side to wait for).
    let (c, s) = pairs.remove(1);
    socket2::SockRef::from(&c)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(c);
    drop(s);
    t.wait_for("the selected socket closed: the selection moved to its neighbour");
    t.keys(&["Enter"]);
    let others: Vec<String> = pairs
        .iter()
        .map(|p| format!("local 127.0.0.1:{}", port(&p.0)))
        .collect();
    t.wait("details of a neighbour", |s| {
        s.contains("details · ") && others.iter().any(|o| s.contains(o.as_str()))
    });
    // And k offers to kill it: with a row highlighted there is always a socket to act on.
    t.keys(&["Escape"]);
    t.keys(&["k"]);
    t.wait_for("Kill this socket?");
    t.keys(&["Escape"]);
    t.wait_for("kill cancelled");
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}

#[test]
fn postgres_backends_are_one_group() {
    let Some(mut pg) = Postgres::start("groups") else {
        return;
    };
    for _ in 0..3 {
        pg.connect_psql();
    }
    let Some(t) = Tmux::start("groups", 160, 40) else {
        return;
    };
    let port = pg.port;
    t.start_katop("--interval 300ms");
    t.keys(&["F4"]);
    t.type_text(&format!(
        "netns:host (src:127.0.0.1:{port} or dst:127.0.0.1:{port})"
    ));
    t.keys(&["Enter"]);
    t.keys(&["Tab"]);
    // One row for the three backends (one process each), one for the three psql clients.
    let serves = format!("serves :{port}");
    let s = t.wait("one postgres group of three backends", |s| {
        s.lines()
            .any(|l| l.contains(" postgres ") && l.contains(&serves) && l.contains("3 pids"))
    });
    let groups: Vec<&str> = s.lines().filter(|l| l.contains(&serves)).collect();
    assert_eq!(groups.len(), 1, "{s}");
    assert!(
        s.lines()
            .any(|l| l.contains(" psql ") && l.contains(&format!("→ :{port}"))),
        "{s}"
    );
    // → lists the backends under it (groups of equal size keep their order: by name).
    let postgres_row = s.lines().position(|l| l.contains(&serves)).unwrap();
    let first_row = s
        .lines()
        .position(|l| l.starts_with('▸') || l.starts_with('▾'))
        .unwrap();
    for _ in first_row..postgres_row {
        t.keys(&["Down"]);
    }
    t.keys(&["Right"]);
    t.wait("three backends listed", |s| {
        s.lines().filter(|l| l.contains("└ postgres ")).count() == 3
    });
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
    // The JSON pairs each psql client with its backend.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_katop"))
        .env("KATOP_NETNS", "host")
        .args(["--jsonl", "-f", &format!("dport:{port} comm:psql")])
        .output()
        .unwrap();
    let clients: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(clients.len(), 3, "{clients:?}");
    for c in &clients {
        assert_eq!(c["peer_process"], "postgres", "{c}");
        assert!(c["peer_pid"].as_u64().is_some(), "{c}");
    }
}

#[test]
fn katop_read_only_from_the_environment_hides_the_acting_keys() {
    let Some(t) = Tmux::start("readonly", 160, 40) else {
        return;
    };
    // `1`, as environment switches are usually written.
    t.launch_with_env("KATOP_READ_ONLY=1", "--interval 300ms");
    let s = t.wait("the dashboard's first poll", |s| {
        s.contains("q quit") && s.contains(" sockets") && !s.contains("waiting for the first")
    });
    assert!(!s.contains("k kill") && !s.contains("Space mark"), "{s}");
    t.keys(&["k"]);
    t.wait_for("started with --read-only, so k changes nothing");
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}
