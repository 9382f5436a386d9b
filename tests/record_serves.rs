//! `katop record --listen --textfile`: one poll feeds the store and the exporter's metrics, so
//! a host runs one katop. The same connection ends in both: counted by cause in /metrics and
//! the textfile, and told in `katop history`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Reaped, Scratch};

/// The recorder on `store`, also serving and writing `textfile`; the address it serves.
fn record_and_serve(store: &std::path::Path, textfile: &std::path::Path) -> (Reaped, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_katop"))
        .args(["record", "--interval", "200ms", "--listen", "127.0.0.1:0"])
        .arg("--store")
        .arg(store)
        .arg("--textfile")
        .arg(textfile)
        .env("KATOP_NETNS", "host")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::serving(&mut child, "katop record");
    (Reaped(child), addr)
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: katop\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn one_poll_feeds_the_store_and_the_metrics() {
    if !common::is_root() {
        common::skipped("the causes of ends come from tracepoints as root");
        return;
    }
    let scratch = Scratch::new("record-serves");
    let store = scratch.0.join("store");
    let textfile = scratch.0.join("katop.prom");
    let (rec, addr) = record_and_serve(&store, &textfile);
    let received =
        "katop_tcp_connections_closed_total{cause=\"reset-received\",cause_source=\"tracepoint\"} ";
    let text = common::wait_until("the end counters served", || {
        let t = scrape(addr);
        sample(&t, received).map(|_| t)
    });
    let before = sample(&text, received).unwrap();
    // Two connections this test made, listed under its own process and port (one below the
    // ephemeral range: a service's, as the exporter names it).
    let l = (20_000 + (std::process::id() % 5000) as u16..30_000)
        .find_map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).ok())
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let server = l.accept().unwrap().0;
    let local = client.local_addr().unwrap().to_string();
    let group = format!(r#"process="{}",service="{port}",container="""#, my_comm());
    let listed = format!("katop_connections{{{group}}} ");
    // Waited for here, not with `wait_until`: a timeout says what was served instead.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = scrape(addr);
        if sample(&metrics, &listed) == Some(2.0) {
            break;
        }
        let groups: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("katop_connections{"))
            .collect();
        assert!(
            Instant::now() < deadline,
            "both ends never served as {listed}; the groups served:\n{}",
            groups.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The client aborts (SO_LINGER 0): the server's end receives the reset.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let server_local = server.local_addr().unwrap().to_string();
    let server_remote = server.peer_addr().unwrap().to_string();
    drop(client);
    common::wait_until("the reset counted in /metrics", || {
        sample(&scrape(addr), received)
            .is_some_and(|n| n >= before + 1.0)
            .then_some(())
    });
    common::wait_until("the reset counted in the textfile", || {
        let t = std::fs::read_to_string(&textfile).ok()?;
        sample(&t, received)
            .is_some_and(|n| n >= before + 1.0)
            .then_some(())
    });
    // The same end, stored.
    let filter = format!("src:{server_local} dst:{server_remote}");
    let ended = common::wait_until("the reset in the store", || {
        let out = common::katop_checked(
            &[
                "history",
                "--json",
                "--store",
                store.to_str().unwrap(),
                "-f",
                &filter,
            ],
            &[],
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event"] == "closed" && v["remote"] == local.as_str())
    });
    assert_eq!(ended["cause"], "reset-received", "{ended}");
    assert_eq!(ended["cause_source"], "tracepoint", "{ended}");
    drop(server);
    // SIGTERM: the poll under way finishes, and katop ends with 0.
    let mut rec = rec;
    let pid = rustix::process::Pid::from_raw(rec.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(rec.0.wait().unwrap().success());
}
