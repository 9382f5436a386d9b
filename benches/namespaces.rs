//! The cost of reading every namespace: `--namespaces N` namespaces with a few connections each
//! beside `--count C` held host connections (2C sockets). Prints the warm poll of the host alone
//! and of every namespace, how long a new namespace's connections take to appear in a poll
//! loop at 1 s, and (when `target/release/katop` and tmux exist) the dashboard's CPU and RSS.
//! Root only.
//!
//! cargo build --release
//! cargo bench --bench namespaces -- --count 50000 --namespaces 50 --seconds 30

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use katop::collector::namespaces::Which;
use katop::collector::{Collector, Selection};

mod common;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with a listener and two connections held by this process.
struct Ns {
    name: String,
    _held: Vec<TcpStream>,
    _listener: TcpListener,
}

impl Ns {
    fn new(name: String) -> Ns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let path = format!("/run/netns/{name}");
        let (l, held) = std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).unwrap();
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&fd),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 5432)).unwrap();
                let mut held = Vec::new();
                for _ in 0..2 {
                    held.push(TcpStream::connect((Ipv4Addr::LOCALHOST, 5432)).unwrap());
                    held.push(l.accept().unwrap().0);
                }
                (l, held)
            })
            .join()
            .unwrap()
        });
        Ns {
            name,
            _held: held,
            _listener: l,
        }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[allow(clippy::too_many_lines)] // a script: set up, measure, report, in order
fn main() {
    if let Some(n) = common::arg("--worker") {
        return common::worker(n);
    }
    if !rustix::process::geteuid().is_root() {
        println!("skipped: the namespaces benchmark needs root");
        return;
    }
    let count = common::arg("--count").unwrap_or(50_000);
    let namespaces_wanted = common::arg("--namespaces").unwrap_or(50);
    let seconds = common::arg("--seconds").unwrap_or(30);
    let farm = common::Farm::hold(count);
    let tag = std::process::id();
    let started = Instant::now();
    let namespaces: Vec<Ns> = (0..namespaces_wanted)
        .map(|i| Ns::new(format!("kb-{tag}-{i}")))
        .collect();
    println!(
        "{namespaces_wanted} namespaces with 5 sockets each, set up in {:.1?}",
        started.elapsed()
    );

    let all = || Selection {
        netns: Which::All,
        ..Selection::default()
    };
    let mut own = Collector::new(Selection::default()).unwrap();
    let mut every = Collector::new(all()).unwrap();
    own.poll().unwrap();
    let cold = Instant::now();
    let first = every.poll().unwrap();
    println!(
        "cold poll of every namespace: {:.1?} ({} namespaces read, {} sockets)",
        cold.elapsed(),
        first.namespaces.len(),
        first.socks.len()
    );
    let (mut host_only, mut everyone) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let t = Instant::now();
        own.poll().unwrap();
        host_only.push(t.elapsed());
        let t = Instant::now();
        let s = every.poll().unwrap();
        everyone.push(t.elapsed());
        assert!(s.namespaces.len() > namespaces_wanted);
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "warm poll: host namespace only {:.1?}, every namespace {:.1?}",
        median(host_only),
        median(everyone)
    );
    drop(own);

    // A poll loop at 1 s, as the dashboard's; a new namespace's connection appears when?
    let stop = Arc::new(AtomicBool::new(false));
    let new_name = format!("kb-{tag}-new");
    let (tx, rx) = std::sync::mpsc::channel();
    let looper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut costs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let s = every.poll().unwrap();
                costs.push((t.elapsed(), every.namespaces.last));
                let _ = tx.send((
                    Instant::now(),
                    s.namespaces
                        .iter()
                        .map(|i| i.name.to_string())
                        .collect::<Vec<_>>(),
                ));
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            costs
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    while rx.try_recv().is_ok() {}
    let born = Instant::now();
    let fresh = Ns::new(new_name.clone());
    let seen = loop {
        let (at, names) = rx.recv().unwrap();
        if at > born && names.contains(&new_name) {
            break at;
        }
    };
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::Relaxed);
    let costs = looper.join().unwrap();
    let steady = &costs[costs.len().saturating_sub(10)..];
    let per_poll: Vec<Duration> = steady.iter().map(|c| c.0).collect();
    let dumped: usize = steady.iter().map(|c| c.1.dumped).sum();
    let dump_cost: Duration = steady.iter().map(|c| c.1.dump_cost).sum();
    let discover: Duration = steady.iter().map(|c| c.1.discover_cost).sum();
    println!(
        "steady state at 1 s: poll {:.1?} (median of the last {}), {:.1} namespaces dumped a poll at {:.1?} each, discovery {:.1?} a poll",
        median(per_poll),
        steady.len(),
        dumped as f64 / steady.len() as f64,
        dump_cost / dumped.max(1) as u32,
        discover / steady.len() as u32
    );
    println!(
        "a new namespace's connections appeared {:.1?} after it was made (poll loop at 1 s)",
        seen.duration_since(born)
    );
    drop(fresh);

    let bin = std::env::var("KATOP_BIN").unwrap_or_else(|_| "target/release/katop".into());
    if std::path::Path::new(&bin).exists() && Command::new("tmux").arg("-V").output().is_ok() {
        let (cpu, rss, hwm) = common::dashboard_cost(&bin, seconds);
        println!(
            "katop dashboard over {seconds} s at 1 s interval, every namespace: CPU {:.1}% of one core, RSS max sampled {:.1} MiB, VmHWM {hwm}",
            cpu * 100.0,
            rss
        );
    }
    drop(namespaces);
    drop(farm);
}
