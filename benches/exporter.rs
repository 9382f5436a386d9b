//! The exporter at scale: `--count C` held connections (2C sockets), `target/release/katop
//! exporter` at a 15 s interval. Prints scrape latency (p50, p99, max over sequential
//! scrapes; each is answered from the latest poll), CPU over `--seconds` (scraped every 15 s,
//! as Prometheus would) and resident memory. Then the same scrapes under abuse: `--idle N`
//! connections that never speak (3,000; reconnected as the server closes them), 64 that
//! trickle a request head a byte a second, and 64 well-behaved clients scraping over kept-alive
//! connections, each group from its own loopback address.
//!
//! cargo build --release
//! cargo bench --bench exporter -- --count 50000 --seconds 60 --idle 3000

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
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

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

/// Whether the server closed `s` (without blocking).
fn closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).ok();
    let r = s.peek(&mut b);
    s.set_nonblocking(false).ok();
    !matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The abusers, until `stop`: silent connections kept at `idle` (reconnected as the server
/// closes them), 64 slowloris, 64 kept-alive scrapers. Counts reconnects and good scrapes.
fn abuse(
    addr: SocketAddr,
    idle: usize,
    stop: &Arc<AtomicBool>,
    reconnects: &Arc<AtomicUsize>,
    kept_alive: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    let (stop1, count) = (Arc::clone(stop), Arc::clone(reconnects));
    threads.push(std::thread::spawn(move || {
        let from = Ipv4Addr::new(127, 0, 0, 2);
        let mut held: Vec<TcpStream> = (0..idle)
            .filter_map(|_| connect_from(from, addr).ok())
            .collect();
        while !stop1.load(Ordering::Relaxed) {
            for s in &mut held {
                if closed(s) {
                    if let Ok(n) = connect_from(from, addr) {
                        *s = n;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }));
    let stop2 = Arc::clone(stop);
    threads.push(std::thread::spawn(move || {
        let from = Ipv4Addr::new(127, 0, 0, 3);
        let mut slow: Vec<TcpStream> = (0..64)
            .filter_map(|_| connect_from(from, addr).ok())
            .collect();
        let head = b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
        for &b in head.iter().cycle() {
            if stop2.load(Ordering::Relaxed) {
                return;
            }
            for s in &mut slow {
                if s.write_all(&[b]).is_err() {
                    if let Ok(n) = connect_from(from, addr) {
                        *s = n;
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }));
    for _ in 0..64 {
        let (stop3, good) = (Arc::clone(stop), Arc::clone(kept_alive));
        threads.push(std::thread::spawn(move || {
            let from = Ipv4Addr::new(127, 0, 0, 4);
            let mut conn: Option<BufReader<TcpStream>> = None;
            while !stop3.load(Ordering::Relaxed) {
                let c = match conn.take() {
                    Some(c) => c,
                    None => match connect_from(from, addr) {
                        Ok(s) => BufReader::new(s),
                        Err(_) => continue,
                    },
                };
                let mut c = c;
                if keep_alive_scrape(&mut c).is_ok() {
                    good.fetch_add(1, Ordering::Relaxed);
                    conn = Some(c);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }));
    }
    threads
}

/// One request on a kept-alive connection, its whole answer read.
fn keep_alive_scrape(c: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    c.get_mut()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut len = 0;
    loop {
        let mut line = String::new();
        if c.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    c.read_exact(&mut body)
}

fn percentiles(mut lat: Vec<Duration>) -> String {
    lat.sort();
    format!(
        "p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1]
    )
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
    let idle = common::arg("--idle").unwrap_or(3000);
    // The abusers' connections are this process's fds.
    let mut l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    l.current = l.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, l);
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
    let lat: Vec<Duration> = (0..500).map(|_| scrape(addr)).collect();
    println!("scrape latency over 500 scrapes: {}", percentiles(lat));
    let stop = Arc::new(AtomicBool::new(false));
    let (reconnects, kept_alive) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let abusers = abuse(addr, idle, &stop, &reconnects, &kept_alive);
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let lat: Vec<Duration> = (0..300)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            scrape(addr)
        })
        .collect();
    let spent = t.elapsed().as_secs_f64();
    println!(
        "under abuse ({idle} silent connections from 127.0.0.2, {} reconnects/s as the server closes them; 64 slowloris; 64 kept-alive scrapers, {} scrapes/s): 300 scrapes {}",
        (reconnects.load(Ordering::Relaxed) as f64 / spent) as u64,
        (kept_alive.load(Ordering::Relaxed) as f64 / spent) as u64,
        percentiles(lat)
    );
    stop.store(true, Ordering::Relaxed);
    for a in abusers {
        let _ = a.join();
    }
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
