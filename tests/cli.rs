//! The `katop` binary as scripts use it: exit codes, error messages, JSON and table output.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

fn katop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_katop"))
        // The host namespace only: sockets of other tests' namespaces may share its ports.
        .env("KATOP_NETNS", "host")
        .args(args)
        .env_remove("KATOP_FILTER")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn bad_filter_says_where_and_exits_2() {
    let o = katop(&["--once", "--filter", "state:established idle>"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("error at 24: expected a duration like 10m after 'idle>'"),
        "{err}"
    );
    // Two spaces of indent, then the caret under column 24.
    assert!(
        err.contains(&format!("\n{}^", " ".repeat(2 + 23))),
        "no caret under the error:\n{err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_arguments_exit_2() {
    let o = katop(&["--once", "--stale-after", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("'soon' is not a duration"),
        "{}",
        stderr(&o)
    );
    let o = katop(&["--once", "--sort", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_dashboard_refuses_a_pipe_and_points_to_once() {
    let o = katop(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("needs a terminal") && stderr(&o).contains("--once"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn help_teaches_the_filter_language() {
    let o = katop(&["--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for needle in [
        "--filter",
        "state:established idle>10m service:postgres",
        "no-keepalive",
        "--stale-after",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn json_reports_this_processs_connection() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    SockRef::from(&client)
        .set_tcp_keepalive(&TcpKeepalive::new().with_time(Duration::from_secs(600)))
        .unwrap();
    let (_server, _) = l.accept().unwrap();
    let port = client.local_addr().unwrap().port();
    // Both addresses and the state name the connection: old TIME_WAIT sockets may share the
    // local port, and sockets on other loopback addresses the port numbers.
    let only_it = format!(
        "src:{} dst:{} established",
        client.local_addr().unwrap(),
        l.local_addr().unwrap()
    );

    let o = katop(&["--json", "-t", "--filter", &only_it]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let r = &rows[0];
    assert_eq!(r["proto"], "tcp");
    assert_eq!(r["family"], "inet");
    assert_eq!(r["state"], "ESTABLISHED");
    assert_eq!(r["local"], format!("127.0.0.1:{port}"));
    assert_eq!(r["remote"], l.local_addr().unwrap().to_string());
    assert_eq!(r["pid"], std::process::id());
    assert_eq!(r["keepalive"], "on");
    assert_eq!(r["timer"]["kind"], "keepalive");
    assert!(r["timer"]["expires_ms"].as_u64().unwrap() <= 600_000);
    assert_eq!(r["keepalive_probes"], 0);
    assert_eq!(r["stale"], serde_json::json!([]));
    assert!(r["cookie"].as_u64().is_some() && r["inode"].as_u64().unwrap() > 0);
    assert!(r["netns"].as_u64().unwrap() > 0);

    // The same socket as JSON lines, and in the table.
    let o = katop(&["--jsonl", "-t", "--filter", &only_it]);
    let lines: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1);
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["cookie"], r["cookie"]);

    let o = katop(&[
        "--once",
        "-t",
        "-o",
        "state,local,keepalive",
        "--filter",
        &only_it,
    ]);
    let table = stdout(&o);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["STATE", "LOCAL", "KEEPALIVE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["ESTABLISHED", &format!("127.0.0.1:{port}")]);
    assert_eq!(row[2], "on");
    assert!(table.contains("gives up on a silent peer after"), "{table}");
}

#[test]
fn family_and_protocol_flags_select_dumps() {
    let o = katop(&["--jsonl", "-x"]);
    assert!(o.status.success());
    assert!(stdout(&o).lines().all(|l| l.contains(r#""proto":"unix""#)));
    let o = katop(&["--jsonl", "-6", "-t"]);
    assert!(stdout(&o)
        .lines()
        .all(|l| l.contains(r#""family":"inet6""#)));
}

#[test]
fn kill_needs_its_own_filter_and_teaches_how() {
    // KATOP_FILTER set for the dashboard must never choose what `katop kill` kills.
    let o = Command::new(env!("CARGO_BIN_EXE_katop"))
        // The host namespace only: sockets of other tests' namespaces may share its ports.
        .env("KATOP_NETNS", "host")
        .args(["kill", "--yes"])
        .env("KATOP_FILTER", "stale")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--filter <EXPR>"), "{}", stderr(&o));
    let help = katop(&["kill", "--help"]);
    let text = stdout(&help);
    for needle in [
        "--dry-run",
        "--include-listen",
        "--mechanism",
        "SOCK_DESTROY",
        "Exit status",
    ] {
        assert!(text.contains(needle), "kill --help lacks {needle}:\n{text}");
    }
    let bad = katop(&["kill", "--filter", "idle>"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("bad --filter"), "{}", stderr(&bad));
}
