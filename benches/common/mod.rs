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
    /// Dropped after the workers have ended.
    _conntrack: Conntrack,
}

impl Farm {
    pub fn hold(count: usize) -> Farm {
        Farm::hold_changing(count, 0, 0)
    }

    /// `count` connections, of which `per_mille` ‰ exchange a byte each way every
    /// `every_s` seconds (a different share each time): the change a recorder stores.
    pub fn hold_changing(count: usize, per_mille: usize, every_s: usize) -> Farm {
        let conntrack = Conntrack::room_for(count);
        let started = Instant::now();
        let mut workers = Vec::new();
        let mut left = count;
        while left > 0 {
            let n = left.min(PER_WORKER);
            workers.push(spawn_worker(n, per_mille, every_s));
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
        Farm {
            workers,
            _conntrack: conntrack,
        }
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

/// Where netfilter's connection tracking is loaded (Podman loads it), loopback connections are
/// tracked too, and a full table drops new connections' packets: room for the farm while it
/// is held, the old limit put back after.
pub struct Conntrack(Option<String>);

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl Conntrack {
    pub fn room_for(connections: usize) -> Conntrack {
        let Ok(old) = std::fs::read_to_string(CONNTRACK_MAX) else {
            return Conntrack(None);
        };
        let want = connections + connections / 4 + 65_536;
        if old.trim().parse::<usize>().is_ok_and(|n| n >= want) {
            return Conntrack(None);
        }
        match std::fs::write(CONNTRACK_MAX, want.to_string()) {
            Ok(()) => {
                println!(
                    "nf_conntrack_max raised from {} to {want} while the farm is held",
                    old.trim()
                );
                Conntrack(Some(old))
            }
            Err(e) => panic!(
                "nf_conntrack_max is {} and could not be raised to {want} ({e}): run as root",
                old.trim()
            ),
        }
    }
}

const CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

impl Drop for Conntrack {
    /// Puts the old limit back once the farm's closed connections have left the table (their
    /// entries outlive the sockets, up to 2 minutes in `TIME_WAIT`): a limit below the count
    /// would drop every new connection's packets meanwhile, the host's and the next bench's.
    fn drop(&mut self) {
        let Some(old) = self.0.take() else { return };
        let Ok(limit) = old.trim().parse::<usize>() else {
            return;
        };
        let count = || {
            std::fs::read_to_string(CONNTRACK_COUNT)
                .ok()
                .and_then(|c| c.trim().parse::<usize>().ok())
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(300);
        let mut said = false;
        while count().is_some_and(|n| n + 4096 > limit) {
            if Instant::now() > deadline {
                println!(
                    "nf_conntrack_max left raised: the table still holds more than its old \
                     limit of {limit} (put it back with: echo {limit} > {CONNTRACK_MAX})"
                );
                return;
            }
            if !said {
                println!("waiting for the farm's connections to leave the conntrack table");
                said = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let _ = std::fs::write(CONNTRACK_MAX, old.trim());
    }
}

fn spawn_worker(n: usize, per_mille: usize, every_s: usize) -> (Child, ChildStdin) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--worker", &n.to_string()])
        .args(["--per-mille", &per_mille.to_string()])
        .args(["--every-s", &every_s.to_string()])
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
    // Until stdin closes; meanwhile a share of the pairs talk, a different share each time.
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 1];
        let _ = std::io::stdin().read(&mut sink);
        let _ = done_tx.send(());
    });
    let per_mille = arg("--per-mille").unwrap_or(0);
    let every = std::time::Duration::from_secs(arg("--every-s").unwrap_or(0).max(1) as u64);
    let share = n * per_mille / 1000;
    let mut next = 0;
    while done.recv_timeout(every).is_err() {
        for _ in 0..share {
            let (c, s) = (&held[2 * next], &held[2 * next + 1]);
            let mut byte = [0u8; 1];
            let _ = (&*c).write_all(b"x");
            let _ = (&*s).read_exact(&mut byte);
            let _ = (&*s).write_all(b"y");
            let _ = (&*c).read_exact(&mut byte);
            next = (next + 1) % n;
        }
    }
}

/// Runs `bin` (the dashboard) in a private tmux at its 1 s interval for `seconds` after 3 s of
/// warm-up, and returns its CPU use (fraction of one core), the largest resident size sampled
/// (MiB) and its `VmHWM`.
#[allow(dead_code)] // not every bench runs the dashboard
pub fn dashboard_cost(bin: &str, seconds: usize) -> (f64, f64, String) {
    use std::time::Duration;
    let tmux = Tmux::start("katop-bench", &[bin]);
    std::thread::sleep(Duration::from_secs(3)); // first polls: the cold /proc scan is not steady state
    let pid = tmux.pane_pid();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let mut rss_max = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds as u64) {
        std::thread::sleep(Duration::from_millis(500));
        rss_max = rss_max.max(status_kb(pid, "VmRSS:"));
    }
    let cpu = (cpu_ticks(pid) - c0) as f64 / USER_HZ / t0.elapsed().as_secs_f64();
    let hwm = format!("{} kB", status_kb(pid, "VmHWM:"));
    (cpu, rss_max as f64 / 1024.0, hwm)
}

/// The dashboard's polls over a run in tmux at `--interval interval_s`.
#[allow(dead_code)] // not every bench runs the dashboard
pub struct DashboardPolls {
    /// The poll time its header shows (median of the readings), as shown.
    pub poll: String,
    pub poll_s: f64,
    pub cpu_per_poll_s: f64,
    pub hwm_mib: f64,
}

/// Runs the dashboard in tmux for `seconds` after its first poll that shows `at_least`
/// sockets, reading its header's poll time every second; CPU per poll counts from then (the
/// cold first poll left out).
#[allow(dead_code)] // not every bench runs the dashboard
pub fn dashboard_polls(
    bin: &str,
    seconds: usize,
    interval_s: u64,
    at_least: usize,
) -> DashboardPolls {
    use std::time::Duration;
    let interval = format!("{interval_s}s");
    let tmux = Tmux::start("katop-million", &[bin, "--interval", &interval]);
    let pid = tmux.pane_pid();
    let header = || {
        let screen =
            String::from_utf8(tmux.run(&["capture-pane", "-p"]).stdout).unwrap_or_default();
        let line = screen.lines().next().unwrap_or_default().to_string();
        let parts: Vec<&str> = line.split(" · ").collect();
        let poll = parts.iter().find_map(|p| p.strip_prefix("poll "))?;
        // "50017 sockets", then the right-hand side of the header.
        let socks: usize = parts.iter().find_map(|p| {
            let mut words = p.split_whitespace();
            let n = words.next()?.parse().ok()?;
            (words.next()? == "sockets").then_some(n)
        })?;
        (socks >= at_least).then(|| poll.trim().to_string())
    };
    let started = Instant::now();
    while header().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the dashboard showed no poll in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let mut shown = Vec::new();
    while t0.elapsed() < Duration::from_secs(seconds as u64) {
        std::thread::sleep(Duration::from_secs(1));
        shown.extend(header());
    }
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / USER_HZ;
    let polls = (t0.elapsed().as_secs_f64() / interval_s as f64).max(1.0);
    let hwm_kb = status_kb(pid, "VmHWM:") as f64;
    let secs = |s: &str| -> f64 {
        if let Some(ms) = s.strip_suffix("ms") {
            ms.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
        } else if let Some(s) = s.strip_suffix('s') {
            s.parse().unwrap_or(f64::NAN)
        } else {
            f64::NAN
        }
    };
    shown.sort_by(|a, b| secs(a).total_cmp(&secs(b)));
    let poll = shown
        .get(shown.len() / 2)
        .cloned()
        .unwrap_or_else(|| "?".into());
    DashboardPolls {
        poll_s: secs(&poll),
        poll,
        cpu_per_poll_s: cpu_s / polls,
        hwm_mib: hwm_kb / 1024.0,
    }
}

/// `/proc/PID/stat`'s clock ticks per second.
const USER_HZ: f64 = 100.0;

/// A tmux server of its own (`-L`), running one command in a 200x50 pane; killed, and its
/// socket file removed, when dropped.
#[allow(dead_code)] // not every bench runs the dashboard
struct Tmux {
    sock: String,
}

#[allow(dead_code)] // not every bench runs the dashboard
impl Tmux {
    fn start(name: &str, cmd: &[&str]) -> Tmux {
        let tmux = Tmux {
            sock: format!("{name}-{}", std::process::id()),
        };
        let mut args = vec!["new-session", "-d", "-x", "200", "-y", "50"];
        args.extend_from_slice(cmd);
        tmux.run(&args);
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap()
    }

    /// The pid of the command in its pane.
    fn pane_pid(&self) -> u32 {
        String::from_utf8(self.run(&["display-message", "-p", "#{pane_pid}"]).stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
        // `kill-server` leaves its socket file behind.
        let dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let uid = rustix::process::getuid().as_raw();
        let _ = std::fs::remove_file(format!("{dir}/tmux-{uid}/{}", self.sock));
    }
}

/// A process's user and system time so far, in clock ticks (`/proc/PID/stat`).
#[allow(dead_code)] // not every bench runs the dashboard
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap() // utime + stime
}

/// A `/proc/PID/status` value in kB (`VmRSS:`, `VmHWM:`); 0 when absent.
#[allow(dead_code)] // not every bench runs the dashboard
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A run right after another finds the last one's connections in `TIME_WAIT` for a minute, in
/// every dump: what this run costs would count them too.
pub fn wait_for_time_wait_to_drain() {
    let time_wait = || -> u64 {
        std::fs::read_to_string("/proc/net/sockstat")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("TCP:"))
            .and_then(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "tw")?;
                words.next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    if time_wait() > 1000 {
        println!("waiting for {} TIME_WAIT sockets to go", time_wait());
    }
    while time_wait() > 1000 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
