//! katop against `ss -tanoi` at a million sockets, side by side in one run, on held loopback
//! connections: the one-shot (`katop --once --json`, with and without the BPF fd reader) and `ss -tanoi`, interleaved, each to
//! /dev/null, with wall time and peak RSS; then the dashboard in tmux at `--interval 5s`: the
//! poll time its header shows, its CPU per poll and its peak RSS.
//!
//! `cargo bench --bench million` holds 500 000 connections (1 000 000 sockets: about 4 GiB of
//! kernel memory, and a file limit the workers raise to their hard limit); `--count N` holds
//! fewer (`--count 50000`: the 100k row).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// A run of one command: wall time, peak RSS (MiB), and whether it succeeded. The command
/// runs under this bench re-invoked as `--measure`, whose only child it is: its peak RSS is
/// then that process's `RUSAGE_CHILDREN` maximum.
fn run(cmd: &[&str]) -> (Duration, f64, bool) {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--measure")
        .args(cmd)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    let kib: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    (elapsed, kib / 1024.0, out.status.success())
}

/// `--measure CMD...`: runs CMD with its output thrown away, prints its peak RSS in KiB, and
/// exits as it did.
fn measure(cmd: &[String]) -> ! {
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    println!("{}", usage.map_or(-1, |u| u.max_rss()));
    std::process::exit(status.code().unwrap_or(1));
}

fn median<T: PartialOrd + Copy>(v: &mut [T]) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[allow(clippy::too_many_lines)] // a script: set up, measure, report, in order
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--measure") {
        measure(&args[2..]);
    }
    let value = common::arg;
    if let Some(n) = value("--worker") {
        return common::worker(n);
    }
    let count = value("--count").unwrap_or(500_000);
    let rounds = value("--rounds").unwrap_or(3);
    let seconds = value("--seconds").unwrap_or(60);
    let bin = std::env::var("KATOP_BIN").unwrap_or_else(|_| "target/release/katop".into());
    common::wait_for_time_wait_to_drain();
    let farm = common::Farm::hold(count);

    // The one-shot with the BPF fd reader (the default, where it loads) and without it.
    let commands: [(&str, Vec<&str>); 3] = [
        ("ss -tanoi", vec!["ss", "-tanoi"]),
        ("katop --once --json", vec![&bin, "--once", "--json"]),
        ("  ... --no-bpf", vec![&bin, "--once", "--json", "--no-bpf"]),
    ];
    let mut times = vec![Vec::new(); commands.len()];
    let mut rss = vec![Vec::new(); commands.len()];
    for _ in 0..rounds {
        for (i, (name, cmd)) in commands.iter().enumerate() {
            let (t, m, ok) = run(cmd);
            assert!(ok, "{name} failed");
            times[i].push(t);
            rss[i].push(m);
        }
    }
    println!("{} sockets held, {rounds} rounds, interleaved:", 2 * count);
    let ss_time = median(&mut times[0]);
    for (i, (name, _)) in commands.iter().enumerate() {
        let t = median(&mut times[i]);
        print!(
            "  {name:<20} median {t:>9.2?}  peak RSS {:>6.1} MiB",
            median(&mut rss[i])
        );
        if i > 0 {
            print!("   katop/ss {:.2}", t.as_secs_f64() / ss_time.as_secs_f64());
        }
        println!();
    }

    let dash = common::dashboard_polls(&bin, seconds, 5, 2 * count);
    println!(
        "  dashboard at --interval 5s over {seconds} s: poll (header) median {}, {:.2}x ss; \
         CPU {:.2} s a poll; peak RSS (VmHWM) {:.1} MiB",
        dash.poll,
        dash.poll_s / ss_time.as_secs_f64(),
        dash.cpu_per_poll_s,
        dash.hwm_mib
    );
    drop(farm);
}
