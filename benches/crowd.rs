//! Namespaces any user can make, at scale: `--namespaces N` user + network namespaces made by
//! `nobody` (each a `busybox nc` listening), then `katop --once --json` and the exporter with
//! the file limit at the common 1,024 (soft and hard: no room to raise it). Prints how many
//! namespaces each read, the one-shot's time and peak RSS, and the exporter's first poll,
//! open descriptors and resident memory after a few polls. Root only.
//!
//! cargo build --release
//! cargo bench --bench crowd -- --namespaces 2000

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("the crowd benchmark needs root (namespaces made as nobody, a capped katop)");
        return;
    }
    let n = common::arg("--namespaces").unwrap_or(2000);
    let bin = std::env::var("KATOP_BIN").unwrap_or_else(|_| "target/release/katop".into());
    let started = Instant::now();
    let script = format!(
        "for i in $(seq {n}); do unshare -Urn busybox nc -l -p 7777 </dev/null & echo $!; done; wait"
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
    let pids: Vec<u32> = BufReader::new(shell.stdout.take().unwrap())
        .lines()
        .take(n)
        .map(|l| l.unwrap().trim().parse().unwrap())
        .collect();
    let listening = ":1E61 00000000000000000000000000000000:0000 0A";
    while !pids.iter().all(|p| {
        std::fs::read_to_string(format!("/proc/{p}/net/tcp6")).is_ok_and(|t| t.contains(listening))
    }) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{n} namespaces made by nobody in {:.1?}", started.elapsed());
    let capped = |args: &[&str]| {
        let mut c = Command::new("prlimit");
        c.args(["--nofile=1024:1024", "--"]).arg(&bin).args(args);
        c
    };
    let t = Instant::now();
    let mut once = capped(&["--json", "-t"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = once.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v
    });
    // Peak RSS, sampled every 2 ms until it exits.
    let mut peak = 0;
    while once.try_wait().unwrap().is_none() {
        peak = peak.max(status_kib(once.id(), "VmHWM:"));
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t.elapsed();
    let socks: Vec<serde_json::Value> = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    let read = socks.iter().filter(|s| s["local"] == "[::]:7777").count();
    println!(
        "katop --once --json at 1,024 files: {read} of {n} namespaces' listeners, {took:.2?}, peak RSS {:.1} MiB",
        peak as f64 / 1024.0
    );
    let mut e = capped(&["exporter", "--listen", "127.0.0.1:0", "--interval", "5s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut lines = BufReader::new(e.stderr.take().unwrap()).lines();
    let addr: SocketAddr = lines
        .by_ref()
        .find_map(|l| {
            l.ok()?
                .strip_prefix("katop exporter: serving http://")?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        })
        .expect("the exporter serves");
    std::thread::spawn(move || for _ in lines {});
    let first = t.elapsed();
    std::thread::sleep(Duration::from_secs(16));
    let text = scrape(addr);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", e.id())).map_or(0, Iterator::count);
    println!(
        "exporter at 1,024 files: first poll served after {first:.2?}; after 3 more polls: \
         {} namespaces' listeners, katop_netns_unread {}, poll {:.2} s, {fds} fds open, RSS {:.1} MiB (peak {:.1})",
        sample(&text, r#"katop_sockets{netns="other",proto="tcp",state="LISTEN"}"#),
        sample(&text, "katop_netns_unread"),
        sample(&text, "katop_poll_duration_seconds"),
        status_kib(e.id(), "VmRSS:") as f64 / 1024.0,
        status_kib(e.id(), "VmHWM:") as f64 / 1024.0,
    );
    let _ = e.kill();
    let _ = e.wait();
    let group = rustix::process::Pid::from_raw(shell.id() as i32).unwrap();
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = shell.wait();
}
