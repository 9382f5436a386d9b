//! The recorder's cost: `katop record` over `--count N` held loopback connections (2N sockets)
//! for `--seconds S` at `--interval-s I`, then what its store holds and how long `katop --at`
//! takes to open a moment of it. Prints CPU (share of one core), peak RSS, the store's bytes
//! per connection per sample, and the `--at` time. Release build.
//!
//! `--change-per-mille M` (default 20: 2%): that share of the connections exchange a byte each
//! way every interval, a different share each time (what the recorder must store).
//!
//! cargo build --release
//! cargo bench --bench recorder -- --count 50000 --seconds 60 --interval-s 10

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

mod common;

fn ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15, 12 and 13 after the name.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// The kernel's share of a poll, for scale: the CPU of `ss -tin` dumping the same sockets
/// with `tcp_info` (a netlink dump walks every socket; what no reader of them avoids).
fn say_bare_dump(interval: u64) {
    let children = || {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let rest = stat.rsplit(')').next().unwrap_or("").to_string();
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // cutime and cstime: fields 16 and 17, 14 and 15 after the name.
        (
            f.get(14).copied().unwrap_or(0),
            f.get(13).copied().unwrap_or(0),
        )
    };
    let before = children();
    let ran = Command::new("ss")
        .arg("-tin")
        .stdout(Stdio::null())
        .status();
    if !ran.as_ref().is_ok_and(std::process::ExitStatus::success) {
        println!("for scale: `ss -tin` did not run ({ran:?})");
        return;
    }
    let after = children();
    let (sys, user) = (
        (after.0 - before.0) as f64 / 100.0,
        (after.1 - before.1) as f64 / 100.0,
    );
    println!(
        "for scale: `ss -tin` over the same sockets: {sys:.2} s of system time (the kernel's \
         dump), {user:.2} s of its own; at {interval} s a poll's dump alone is {:.1}% of a core",
        100.0 * sys / interval as f64
    );
}

fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if let Some(n) = common::arg("--worker") {
        common::worker(n);
        return;
    }
    let count = common::arg("--count").unwrap_or(20_000);
    let seconds = common::arg("--seconds").unwrap_or(60) as u64;
    let interval = common::arg("--interval-s").unwrap_or(10) as u64;
    let bin = std::env::var("KATOP_BIN").unwrap_or_else(|_| "target/release/katop".into());
    let per_mille = common::arg("--change-per-mille").unwrap_or(20);
    common::wait_for_time_wait_to_drain();
    let _farm = common::Farm::hold_changing(count, per_mille, interval as usize);
    say_bare_dump(interval);
    let store = std::env::temp_dir().join(format!("katop-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let mut rec = Command::new(&bin)
        .args(["record", "--interval", &format!("{interval}s"), "--store"])
        .arg(&store)
        .env("KATOP_NETNS", "host")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = rec.id();
    // The first poll reads every socket's options and every process's fds (cold); what
    // recording costs is the polls after it.
    let cold = Instant::now();
    let stored = || -> u64 {
        std::fs::read_dir(&store).map_or(0, |d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
    };
    while stored() <= 8 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = (cold.elapsed(), ticks(pid));
    let started = Instant::now();
    let t0 = first.1;
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu_ticks = ticks(pid) - t0;
    let wall = started.elapsed().as_secs_f64();
    let hwm = hwm_kib(pid);
    let mid = SystemTime::now() - Duration::from_secs(seconds / 2);
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = rec.wait();
    let bytes: u64 = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let samples = (seconds / interval).max(1);
    let hz = 100.0; // USER_HZ
    println!(
        "record: {count} connections, first poll {:.2?} ({:.2} s of CPU), then {samples} samples at {interval} s: CPU {:.2}% of a core, peak RSS {:.1} MiB",
        first.0,
        first.1 as f64 / hz,
        100.0 * cpu_ticks as f64 / hz / wall,
        hwm as f64 / 1024.0
    );
    println!(
        "store: {bytes} bytes = {:.2} bytes per connection ({:.2} per socket) per sample",
        bytes as f64 / count as f64 / samples as f64,
        bytes as f64 / (2 * count) as f64 / samples as f64
    );
    time_at(&bin, &store, mid);
    if std::env::var_os("KATOP_BENCH_KEEP").is_some() {
        println!("store kept: {}", store.display());
    } else {
        let _ = std::fs::remove_dir_all(&store);
    }
}

/// How long `katop --at` takes to open the moment `mid` of `store`.
fn time_at(bin: &str, store: &std::path::Path, mid: SystemTime) {
    let at = humantime::format_rfc3339_millis(mid).to_string();
    // The moment read and modelled, one socket printed (what opening it costs), then printed
    // whole (every socket as JSON: what the output costs on top).
    let started = Instant::now();
    let one = Command::new(bin)
        .args([
            "--json",
            "--at",
            &at,
            "--filter",
            "sport:1 or dport:1",
            "--store",
        ])
        .arg(store)
        .output()
        .unwrap();
    println!(
        "katop --json --at (mid-run) --filter 'sport:1 or dport:1': {:.2?} (exit {})",
        started.elapsed(),
        one.status
    );
    // Into a file: the time is katop's, not this bench's reading of ~1 KB a socket.
    let printed = store.with_extension("json");
    let started = Instant::now();
    Command::new(bin)
        .args(["--json", "--at", &at, "--store"])
        .arg(store)
        .stdout(std::fs::File::create(&printed).unwrap())
        .status()
        .unwrap();
    let took = started.elapsed();
    let listed = std::fs::read(&printed)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<serde_json::Value>>(&b).ok())
        .map_or(0, |v| v.len());
    let _ = std::fs::remove_file(&printed);
    println!("katop --json --at (mid-run): {took:.2?}, {listed} sockets");
}
