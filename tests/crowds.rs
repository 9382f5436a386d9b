//! Crowds any local user can make: hundreds of network namespaces (user + network namespaces
//! need no privilege) must not starve katop of file descriptors, at the common soft limit of
//! 1,024 and with no room to raise it: every namespace is read, `/proc` is still read, and
//! the exporter keeps serving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::is_root;

/// Namespaces made by `nobody`, each held by a `busybox nc` listening on [`PORT`].
struct Crowd {
    shell: Child,
    pids: Vec<u32>,
}

const PORT: u16 = 7777;

impl Crowd {
    fn new(n: usize) -> Option<Crowd> {
        if !is_root() {
            common::skipped("needs root (to make namespaces as nobody and cap katop's fds)");
            return None;
        }
        let tools = ["setpriv", "unshare", "prlimit", "busybox"];
        if let Some(t) = tools.iter().find(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map_or(true, |o| !o.status.success())
        }) {
            common::skipped(&format!(
                "{t} is missing (.ci/run installs util-linux and busybox-static)"
            ));
            return None;
        }
        let script = format!(
            "for i in $(seq {n}); do unshare -Urn busybox nc -l -p {PORT} </dev/null & echo $!; \
             done; wait"
        );
        let mut shell = {
            use std::os::unix::process::CommandExt;
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .args(["sh", "-c", &script])
                .stdout(Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let out = BufReader::new(shell.stdout.take().unwrap());
        let pids: Vec<u32> = out
            .lines()
            .take(n)
            .map(|l| l.unwrap().trim().parse().unwrap())
            .collect();
        let crowd = Crowd { shell, pids };
        // Each listening in its own namespace (busybox listens on [::]).
        let listening = format!(":{PORT:04X} 00000000000000000000000000000000:0000 0A");
        wait_for("every namespace's listener", || {
            crowd.pids.iter().all(|p| {
                std::fs::read_to_string(format!("/proc/{p}/net/tcp6"))
                    .is_ok_and(|t| t.contains(&listening))
            })
        });
        Some(crowd)
    }

    /// The namespaces' inodes.
    fn inodes(&self) -> Vec<u64> {
        self.pids
            .iter()
            .map(|p| {
                rustix::fs::stat(format!("/proc/{p}/ns/net"))
                    .unwrap()
                    .st_ino
            })
            .collect()
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_raw(self.shell.id() as i32).unwrap();
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.shell.wait();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// katop at the common soft and hard limit of 1,024 open files (no room to raise it).
fn capped_katop() -> Command {
    let mut c = Command::new("prlimit");
    c.args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_katop"))
        .env_remove("KATOP_FILTER")
        .env_remove("KATOP_NETNS");
    c
}

#[test]
fn three_hundred_namespaces_of_nobodys_are_all_read_at_1024_files() {
    let Some(crowd) = Crowd::new(300) else {
        return;
    };
    // A connection of this test's own, on the host: its owner must still be known (the
    // /proc scan had descriptors left).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_s, _) = l.accept().unwrap();
    let out = common::output_within(
        capped_katop().args(["--json", "-t"]),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("not read"), "{stderr}");
    let socks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let listening: Vec<u64> = socks
        .iter()
        .filter(|s| s["state"] == "LISTEN" && s["local"] == format!("[::]:{PORT}").as_str())
        .filter_map(|s| s["netns"].as_u64())
        .collect();
    let missing: Vec<u64> = crowd
        .inodes()
        .into_iter()
        .filter(|i| !listening.contains(i))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of 300 namespaces not read: {stderr}",
        missing.len()
    );
    let local = c.local_addr().unwrap().to_string();
    let remote = l.local_addr().unwrap().to_string();
    let mine = socks
        .iter()
        .find(|s| {
            s["local"] == local.as_str()
                && s["remote"] == remote.as_str()
                && s["netns_name"] == "host"
        })
        .expect("this test's connection is listed");
    assert_eq!(mine["pid"], std::process::id(), "{mine}");
}

#[test]
fn the_exporter_starts_and_serves_beside_three_hundred_namespaces_at_1024_files() {
    let Some(crowd) = Crowd::new(300) else {
        return;
    };
    let mut e = common::Reaped(
        capped_katop()
            .args(["exporter", "--listen", "127.0.0.1:0", "--interval", "1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(e.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "the exporter ended");
        if let Some(at) = line.trim().strip_prefix("katop exporter: serving http://") {
            break at.trim_end_matches("/metrics").parse().unwrap();
        }
    };
    let scrape = || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let sample = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let first = scrape();
    assert_eq!(sample(&first, "katop_netns_unread"), Some(0.0), "{first}");
    // The namespaces are nobody's and anonymous: counted under netns="other".
    let other = r#"katop_sockets{netns="other",proto="tcp",state="LISTEN"}"#;
    assert!(sample(&first, other).unwrap_or(0.0) >= 300.0, "{first}");
    // It polls on, within its descriptors.
    let stamp = |t: &str| sample(t, "katop_last_poll_timestamp_seconds").unwrap();
    let polled = stamp(&first);
    wait_for("another poll", || stamp(&scrape()) > polled);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", e.id()))
        .unwrap()
        .count();
    assert!(fds < 1024, "{fds} descriptors open");
    drop(e);
    drop(crowd);
}

#[test]
fn sigterm_during_the_first_poll_is_a_clean_exit() {
    let Some(crowd) = Crowd::new(300) else {
        return;
    };
    let mut e = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_katop"))
            .args(["exporter", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The first poll is under way once it holds sockets in other namespaces: then SIGTERM.
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    wait_for("the first poll to enter namespaces", || fds(e.id()) >= 30);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(e.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = e.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop the exporter"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    drop(crowd);
}
