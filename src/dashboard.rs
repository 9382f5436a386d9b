//! The interactive loop: a collector thread sends snapshots, crossterm sends input, signals and
//! a tick arrive; each becomes a `Msg` for `app::update`, and the screen is redrawn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::actions::{log, AuditLog, Killer, Method, Outcome, Report, Target};
use crate::app::{self, App, Effect, Msg};
use crate::cli::Args;
use crate::collector::{Collector, Selection};
use crate::columns::Column;
use crate::model::filter::Filter;
use crate::model::{RawSock, Snapshot};
use crate::{tui, ui};

/// Runs the dashboard until the user quits or a signal arrives.
pub fn run(args: &Args, filter: Filter, selection: Selection) -> anyhow::Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut app = App::new(
        args.stale_after,
        args.interval,
        filter,
        args.sort.unwrap_or(Column::Idle),
        host,
        Instant::now(),
    );
    app.reverse = args.reverse;
    app.read_only = args.read_only;
    let kill_log = args.kill_log.clone().or_else(log::default_path);
    app.kill_log = kill_log.as_ref().map(|p| p.display().to_string());
    app.color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(event_loop(&mut app, args.interval, selection, kill_log));
    tui::restore();
    result
}

type PollResult = Result<Snapshot, String>;

/// Polls off the UI thread; the channel holds one snapshot, so a slow UI slows polling
/// instead of queueing stale snapshots.
/// After each send it waits for the UI's ack, so at most one snapshot exists beside the
/// table (at 100k sockets every copy is tens of MiB).
fn spawn_collector(
    selection: Selection,
    interval: Duration,
    paused: Arc<AtomicBool>,
    tx: mpsc::Sender<PollResult>,
    applied: std::sync::mpsc::Receiver<Vec<RawSock>>,
) {
    std::thread::Builder::new()
        .name("katop-collector".into())
        .spawn(move || {
            let mut collector = match Collector::new(selection) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.to_string()));
                    return;
                }
            };
            // The buffer the next poll fills: the UI hands back the one it no longer shows.
            let mut buf = Vec::new();
            loop {
                if paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let started = Instant::now();
                let result = collector
                    .poll_into(std::mem::take(&mut buf))
                    .map_err(|e| e.to_string());
                if tx.blocking_send(result).is_err() {
                    return; // the UI has gone
                }
                match applied.recv() {
                    Ok(spare) => buf = spare,
                    Err(_) => return,
                }
                std::thread::sleep(interval.saturating_sub(started.elapsed()));
            }
        })
        .expect("spawn the collector thread");
}

/// Kills off the UI thread (each kill is a few syscalls, a marked set can be thousands): the
/// log and the `sock_diag` socket are opened on first use. A log that cannot be opened stops
/// the kill: nothing is killed that could not be recorded.
fn spawn_killer(
    log_path: Option<std::path::PathBuf>,
    rx: std::sync::mpsc::Receiver<Vec<Target>>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    std::thread::Builder::new()
        .name("katop-actions".into())
        .spawn(move || {
            let mut audit: Option<AuditLog> = None;
            let mut killer: Option<Killer> = None;
            for targets in rx {
                let refuse_all = |why: String| {
                    let at = std::time::SystemTime::now();
                    targets
                        .iter()
                        .map(|t| Report {
                            target: t.clone(),
                            outcome: Outcome::Refused(why.clone()),
                            at,
                        })
                        .collect::<Vec<_>>()
                };
                if audit.is_none() {
                    let opened = match &log_path {
                        None => Err("nowhere to write the kill log (set HOME or \
                                     XDG_STATE_HOME, or pass --kill-log)"
                            .to_string()),
                        Some(p) => AuditLog::open(p)
                            .map_err(|e| format!("cannot open the kill log {}: {e}", p.display())),
                    };
                    match opened {
                        Ok(a) => audit = Some(a),
                        Err(why) => {
                            let reports = refuse_all(why);
                            let _ = tx.send(Msg::Killed {
                                reports,
                                log_error: None,
                            });
                            continue;
                        }
                    }
                }
                if killer.is_none() {
                    match Killer::new(Method::Auto) {
                        Ok(k) => killer = Some(k),
                        Err(e) => {
                            let reports = refuse_all(e.to_string());
                            let _ = tx.send(Msg::Killed {
                                reports,
                                log_error: None,
                            });
                            continue;
                        }
                    }
                }
                let (Some(a), Some(k)) = (audit.as_mut(), killer.as_mut()) else {
                    continue;
                };
                let reports = k.kill_all(&targets);
                let log_error = a
                    .append(&reports)
                    .err()
                    .map(|e| format!("{}: {e}", a.path().display()));
                if tx.send(Msg::Killed { reports, log_error }).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the actions thread");
}

async fn event_loop(
    app: &mut App,
    interval: Duration,
    selection: Selection,
    kill_log: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let paused = Arc::new(AtomicBool::new(false));
    let (kill_tx, kill_rx) = std::sync::mpsc::channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    spawn_killer(kill_log, kill_rx, done_tx);
    let (tx, mut rx) = mpsc::channel(1);
    let (applied_tx, applied_rx) = std::sync::mpsc::sync_channel(1);
    spawn_collector(selection, interval, Arc::clone(&paused), tx, applied_rx);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut terminal = tui::init()?;
    let mut events = EventStream::new();
    // Time-only changes (highlights expiring) need no finer clock than this.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut redraw = true;
    loop {
        let size = terminal.size()?;
        let area = ratatui::layout::Rect::new(0, 0, size.width, size.height);
        if redraw {
            app.scroll_into_view(ui::page_rows(area, app));
            terminal.draw(|f| ui::render(app, f))?;
        }
        let msg = tokio::select! {
            Some(poll) = rx.recv() => match poll {
                Ok(snap) => Msg::Poll(Box::new(snap), Instant::now()),
                Err(e) => {
                    let _ = applied_tx.try_send(Vec::new());
                    Msg::PollFailed(e)
                }
            },
            Some(event) = events.next() => match event? {
                Event::Key(k) if k.kind != KeyEventKind::Release => Msg::Key(k),
                Event::Mouse(m) => Msg::Mouse(m, area),
                Event::Resize(..) => Msg::Resize,
                _ => continue,
            },
            Some(done) = done_rx.recv() => done,
            _ = tick.tick() => Msg::Tick(Instant::now()),
            _ = sigterm.recv() => Msg::Signal,
            _ = sighup.recv() => Msg::Signal,
            _ = sigint.recv() => Msg::Signal,
        };
        // A tick only expires highlights; when polls already redraw every second it can wait.
        redraw = !matches!(msg, Msg::Tick(_))
            || app.paused
            || app.interval > Duration::from_secs(1)
            || !app.closed.is_empty();
        let effects = app::update(app, msg);
        // A poll was applied: its predecessor's buffer goes back, and the collector may go on.
        if let Some(spare) = app.spare.take() {
            let _ = applied_tx.try_send(spare);
        }
        for effect in effects {
            match effect {
                Effect::Quit => return Ok(()),
                Effect::SetPaused(p) => paused.store(p, Ordering::Relaxed),
                Effect::Kill(targets) => {
                    let _ = kill_tx.send(targets);
                }
            }
        }
    }
}
