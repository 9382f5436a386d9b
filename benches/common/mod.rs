//! Held loopback connections for benchmarks, spread over worker processes (one process may hold
//! only so many fds). Each bench binary re-executes itself with `--worker N` to be a worker.
#![allow(dead_code)] // each bench uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

/// Connections per worker: two fds each, under a 20 000-file hard limit.
const PER_WORKER: usize = 9_000;

/// The number after `flag` on the command line.
pub fn arg(flag: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// `count` connections (2 × count sockets), held until dropped.
pub struct Farm {
    workers: Vec<(Child, ChildStdin)>,
}

impl Farm {
    pub fn hold(count: usize) -> Farm {
        let started = Instant::now();
        let mut workers = Vec::new();
        let mut left = count;
        while left > 0 {
            let n = left.min(PER_WORKER);
            workers.push(spawn_worker(n));
            left -= n;
        }
        for (child, _) in &mut workers {
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(
                line.trim(),
                "ready",
                "worker failed to open its connections"
            );
        }
        println!(
            "holding {count} loopback connections ({} sockets) in {} workers, set up in {:.1?}",
            2 * count,
            workers.len(),
            started.elapsed()
        );
        Farm { workers }
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        for (mut child, stdin) in self.workers.drain(..) {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn spawn_worker(n: usize) -> (Child, ChildStdin) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--worker", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Holds `n` connected pairs until stdin closes.
pub fn worker(n: usize) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = listener.accept().unwrap();
        held.push(c);
        held.push(s);
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut sink = [0u8; 1];
    let _ = std::io::stdin().read(&mut sink);
}

/// Runs `bin` (the dashboard) in a private tmux at its 1 s interval for `seconds` after 3 s of
/// warm-up, and returns its CPU use (fraction of one core), the largest resident size sampled
/// (MiB) and its `VmHWM`.
pub fn dashboard_cost(bin: &str, seconds: usize) -> (f64, f64, String) {
    use std::time::Duration;
    let sock = format!("katop-bench-{}", std::process::id());
    let tmux = |a: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&sock)
            .args(a)
            .output()
            .unwrap()
    };
    tmux(&["new-session", "-d", "-x", "200", "-y", "50", bin]);
    std::thread::sleep(Duration::from_secs(3)); // first polls: the cold /proc scan is not steady state
    let pid = String::from_utf8(tmux(&["display-message", "-p", "#{pane_pid}"]).stdout)
        .unwrap()
        .trim()
        .parse::<u32>()
        .unwrap();
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap() // utime + stime
    };
    let kb = |key: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let hz = 100.0; // USER_HZ
    let (t0, c0) = (Instant::now(), ticks());
    let mut rss_max = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds as u64) {
        std::thread::sleep(Duration::from_millis(500));
        rss_max = rss_max.max(kb("VmRSS:"));
    }
    let cpu = (ticks() - c0) as f64 / hz / t0.elapsed().as_secs_f64();
    let hwm = format!("{} kB", kb("VmHWM:"));
    tmux(&["kill-server"]);
    (cpu, rss_max as f64 / 1024.0, hwm)
}
