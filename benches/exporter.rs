//! The exporter at scale: `--count C` held connections (2C sockets), `target/release/katop
//! exporter` at a 15 s interval. Prints scrape latency (p50, p99, max over sequential
//! scrapes; each is answered from the latest poll), CPU over `--seconds` (scraped every 15 s,
//! as Prometheus would) and resident memory.
//!
//! cargo build --release
//! cargo bench --bench exporter -- --count 50000 --seconds 60

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn scrape(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"));
    t.elapsed()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if let Some(n) = common::arg("--worker") {
        return common::worker(n);
    }
    let count = common::arg("--count").unwrap_or(50_000);
    let seconds = common::arg("--seconds").unwrap_or(60);
    let farm = common::Farm::hold(count);
    let bin = std::env::var("KATOP_BIN").unwrap_or_else(|_| "target/release/katop".into());
    let mut child = Command::new(&bin)
        .args(["exporter", "--listen", "127.0.0.1:0", "--interval", "15s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
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
    println!("first poll served after {:.1?}", started.elapsed());
    let mut lat: Vec<Duration> = (0..500).map(|_| scrape(addr)).collect();
    lat.sort();
    println!(
        "scrape latency over {} scrapes: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        lat.len(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1]
    );
    let pid = child.id();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let mut rss_max = 0;
    while t0.elapsed() < Duration::from_secs(seconds as u64) {
        scrape(addr);
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(500));
            rss_max = rss_max.max(status_kib(pid, "VmRSS:"));
        }
    }
    let cpu = (cpu_ticks(pid) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    println!(
        "exporter over {seconds} s at a 15 s interval, scraped every 15 s: CPU {:.2}% of one core, RSS max sampled {:.1} MiB, VmHWM {} kB",
        cpu * 100.0,
        rss_max as f64 / 1024.0,
        status_kib(pid, "VmHWM:")
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(farm);
}
