//! The dashboard at scale, on held loopback connections:
//! - frame render time (only visible rows are built) and the per-poll model work (apply + rows),
//!   measured in-process on a real poll;
//! - the real binary's CPU use and resident memory over a run in tmux at its 1 s interval.
//!
//! `cargo bench --bench dashboard -- --count 50000 --seconds 30` (100 000 sockets).

use std::process::Command;
use std::time::{Duration, Instant};

use katop::app::{update, App, Msg};
use katop::collector::{Collector, Selection};
use katop::columns::Column;
use katop::model::filter::Filter;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;

mod common;

#[allow(clippy::too_many_lines)] // a script: set up, measure, report, in order
fn main() {
    let value = common::arg;
    if let Some(n) = value("--worker") {
        return common::worker(n);
    }
    let count = value("--count").unwrap_or(10_000);
    let seconds = value("--seconds").unwrap_or(20);
    let farm = common::Farm::hold(count);

    // In-process: model work per poll and render time per frame.
    let mut collector = Collector::new(Selection::default()).unwrap();
    let mut app = App::new(
        Duration::from_secs(300),
        Duration::from_secs(1),
        Filter::parse("").unwrap(),
        Column::Idle,
        "bench".into(),
        Instant::now(),
    );
    let mut per_poll = Vec::new();
    for _ in 0..5 {
        let snap = collector.poll().unwrap();
        let t = Instant::now();
        update(&mut app, Msg::Poll(Box::new(snap), Instant::now()));
        per_poll.push(t.elapsed());
    }
    let (w, h) = (200, 50);
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    let area = Rect::new(0, 0, w, h);
    let mut frames = Vec::new();
    for i in 0..200 {
        // Scroll around so frames are not all the same rows.
        app.offset = (i * 997) % app.lines.len().max(1);
        let t = Instant::now();
        app.scroll_into_view(katop::ui::page_rows(area, &app));
        term.draw(|f| katop::ui::render(&app, f)).unwrap();
        frames.push(t.elapsed());
    }
    per_poll.sort();
    frames.sort();
    println!("sockets in the model: {}", app.table.len());
    println!(
        "model work per poll (apply + filter + sort + groups): median {:.1?}",
        per_poll[per_poll.len() / 2]
    );
    println!(
        "frame render {w}x{h}: median {:.2?}, p99 {:.2?}, max {:.2?}",
        frames[frames.len() / 2],
        frames[frames.len() * 99 / 100],
        frames[frames.len() - 1]
    );
    drop(app);
    drop(collector);

    // The real binary in tmux at its default 1 s interval.
    let bin = std::env::var("KATOP_BIN").unwrap_or_else(|_| "target/release/katop".into());
    let sock = format!("katop-bench-{}", std::process::id());
    let tmux = |a: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&sock)
            .args(a)
            .output()
            .unwrap()
    };
    tmux(&["new-session", "-d", "-x", "200", "-y", "50", &bin]);
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
    let hz = 100.0; // USER_HZ
    let (t0, c0) = (Instant::now(), ticks());
    let mut rss_max = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds as u64) {
        std::thread::sleep(Duration::from_millis(500));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        rss_max = rss_max.max(kb("VmRSS:"));
    }
    let cpu = (ticks() - c0) as f64 / hz / t0.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .to_string();
    tmux(&["kill-server"]);
    println!("katop dashboard over {seconds} s at 1 s interval: CPU {:.1}% of one core, RSS max sampled {:.1} MiB, {}", cpu * 100.0, rss_max as f64 / 1024.0, hwm.split_whitespace().collect::<Vec<_>>().join(" "));
    drop(farm);
}
