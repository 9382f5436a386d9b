//! Poll cost at scale: the bare netlink dump, a cold poll (dump + full /proc scan + model) and a
//! warm poll (process map cached), on the same held loopback connections, in one run.
//!
//! `cargo bench --bench poll -- --count 50000` holds 50 000 connections (100 000 sockets),
//! spread over worker processes (one process may hold only so many fds), and prints medians.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use katop::collector::{Collector, Selection};
use katop::model::{ConnTable, Proto};

mod common;

#[allow(clippy::too_many_lines)] // a script: set up, measure, report, in order
fn main() {
    let value = common::arg;
    if let Some(n) = value("--worker") {
        return common::worker(n);
    }
    let count = value("--count").unwrap_or(10_000);
    let rounds = value("--rounds").unwrap_or(7);
    let farm = common::Farm::hold(count);

    let tcp = Selection {
        protos: vec![Proto::Tcp],
        ipv4: true,
        ipv6: true,
        ..Selection::default()
    };
    let all = Selection::default();
    let mut warm = Collector::new(all.clone()).unwrap();
    let seen = warm.poll().unwrap().socks.len();
    assert!(
        seen >= 2 * count,
        "the collector saw {seen} sockets, fewer than the {} held",
        2 * count
    );
    let first_opts = warm.opts.last;
    let cached_opts = warm.opts.len();
    let mut bare = Collector::new(tcp).unwrap();

    let (mut t_bare, mut t_cold, mut t_warm, mut t_once) = (vec![], vec![], vec![], vec![]);
    let mut phases = Vec::new();
    // The dashboard keeps one table across polls: history lookups are part of a warm poll.
    let mut table = ConnTable::new(Duration::from_secs(300));
    let once = std::env::var("KATOP_BIN").ok();
    for _ in 0..rounds {
        t_bare.push(time(|| {
            bare.bare_dump().unwrap();
        }));
        t_cold.push(time(|| {
            let mut c = Collector::new(all.clone()).unwrap();
            let _ =
                ConnTable::new(Duration::from_secs(300)).apply(c.poll().unwrap(), Instant::now());
        }));
        t_warm.push(time(|| {
            let snap = warm.poll().unwrap();
            let (dump, total) = (snap.cost.dump, snap.cost.total);
            let apply = time(|| {
                let _ = table.apply(snap, Instant::now());
            });
            phases.push((dump, total.checked_sub(dump).unwrap(), apply));
        }));
        if let Some(bin) = &once {
            t_once.push(time(|| {
                let out = Command::new(bin)
                    .args(["--once", "--json"])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(out.success());
            }));
        }
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let bare_ms = med(&mut t_bare);
    let warm_ms = med(&mut t_warm);
    println!("sockets seen per poll: {seen} (all protocols)");
    println!("bare TCP dump (netlink only)   median {bare_ms:8.1?}");
    println!(
        "cold poll (dump+procs+opts+model) median {:8.1?}",
        med(&mut t_cold)
    );
    println!("warm poll (process map cached) median {warm_ms:8.1?}");
    if !t_once.is_empty() {
        println!(
            "katop --once --json (process)  median {:8.1?}",
            med(&mut t_once)
        );
    }
    phases.sort();
    let (d, p, a) = phases[phases.len() / 2];
    println!(
        "  warm poll phases: dump+parse {d:.1?}, process join + options {p:.1?}, model {a:.1?}"
    );
    println!(
        "keepalive options: first poll read {} sockets ({} denied), {cached_opts} cached; \
         last warm poll read {}",
        first_opts.read, first_opts.denied, warm.opts.last.read
    );
    println!(
        "warm / bare: {:.2}",
        warm_ms.as_secs_f64() / bare_ms.as_secs_f64()
    );

    drop(farm);
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}
