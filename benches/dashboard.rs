//! The dashboard at scale, on held loopback connections:
//! - frame render time (only visible rows are built) and the per-poll model work (apply + rows),
//!   measured in-process on a real poll;
//! - the real binary's CPU use and resident memory over a run in tmux at its 1 s interval.
//!
//! `cargo bench --bench dashboard -- --count 50000 --seconds 30` (100 000 sockets).

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
        let v = katop::ui::viewport(&app, area);
        update(&mut app, Msg::Layout(v));
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
    let (cpu, rss, hwm) = common::dashboard_cost(&bin, seconds);
    println!(
        "katop dashboard over {seconds} s at 1 s interval: CPU {:.1}% of one core, RSS max sampled {rss:.1} MiB, VmHWM {hwm}",
        cpu * 100.0
    );
    drop(farm);
}
