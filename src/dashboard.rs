//! The interactive loop: a collector thread sends snapshots, crossterm sends input, signals and
//! a tick arrive; each becomes a `Msg` for `app::update`, and the screen is redrawn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::actions::{log, Action, AuditLog, Killer, Method, Outcome, Report, Target, Tuner};
use crate::app::{self, App, Effect, Msg, Travel};
use crate::cli::Args;
use crate::collector::sockopts::Reread;
use crate::collector::{Collector, Selection};
use crate::columns::Column;
use crate::model::filter::Filter;
use crate::model::{RawSock, Snapshot};
use crate::{tui, ui};

mod past;
use past::{Ask, Looking};

/// Runs the dashboard until the user quits or a signal arrives.
pub fn run(
    args: &Args,
    filter: Filter,
    selection: Selection,
    middleboxes: Vec<crate::model::Middlebox>,
) -> anyhow::Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut app = App::new(
        args.stale_after,
        args.interval,
        filter,
        args.sort.unwrap_or(Column::Stale),
        host,
        Instant::now(),
    );
    app.reverse = args.reverse;
    app.columns = args.dashboard_columns();
    app.presets = crate::app::with_presets(&args.presets);
    app.table.set_middleboxes(middleboxes);
    app.read_only = args.read_only;
    app.scope = crate::actions::Scope::current();
    app.powers = crate::actions::Powers::current();
    app.status = crate::netns_choice(args).1.map(str::to_string);
    let kill_log = match &args.kill_log {
        Some(p) => Some(LogPath {
            path: p.clone(),
            explicit: true,
        }),
        None => log::default_path().map(|path| LogPath {
            path,
            explicit: false,
        }),
    };
    app.kill_log = kill_log.as_ref().map(|l| l.path.display().to_string());
    app.color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let store = past::choose(args);
    // `--at`: the dashboard opens on that moment (live polls go on aside, for when the
    // operator comes back to the present).
    let start = match args
        .at
        .as_deref()
        .map(|at| crate::store::when::parse_time(Some(at)))
    {
        Some(Ok(Some(t))) => Some(t),
        Some(Err(e)) => anyhow::bail!(e),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sources = Sources {
        selection,
        kill_log,
        store,
        start,
    };
    let result = rt.block_on(event_loop(&mut app, args.interval, sources));
    tui::restore();
    result
}

/// What the collector thread sends: a streamed poll's pieces as they are read, then the poll
/// (or why it failed).
enum Polled {
    Piece(crate::collector::Piece),
    Done(Result<Box<Snapshot>, String>),
}

/// Sockets whose keepalive options the dashboard's collector reads per poll, at most.
const OPTS_PER_POLL: usize = 25_000;

/// Polls off the UI thread; the channel holds one snapshot, so a slow UI slows polling
/// instead of queueing stale snapshots.
/// After each send it waits for the UI's ack, so at most one snapshot exists beside the
/// table (at 100k sockets every copy is tens of MiB).
fn spawn_collector(
    selection: Selection,
    interval: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    tx: mpsc::Sender<Polled>,
    applied: std::sync::mpsc::Receiver<Vec<RawSock>>,
    (reread, focus, memory): (
        Reread,
        crate::collector::namespaces::Focus,
        Option<past::Remembered>,
    ),
) {
    std::thread::Builder::new()
        .name("katop-collector".into())
        .spawn(move || {
            // A collector that cannot start (no netlink socket, no fd left) says why in the
            // status line and tries again each interval.
            let mut collector = loop {
                match Collector::new(selection.clone()) {
                    Ok(c) => break c,
                    Err(e) => {
                        if tx.blocking_send(Polled::Done(Err(e.to_string()))).is_err() {
                            return;
                        }
                        if applied.recv().is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(interval.load(Ordering::Relaxed)));
                    }
                }
            };
            // Why connections end, from the tracepoints where katop may (else inferred, and
            // shown as such).
            let _ = collector.watch_ends();
            // A first poll of 100k sockets reads their options over a few polls, not in one.
            collector.opts.budget = Some(OPTS_PER_POLL);
            collector.opts.reread = reread;
            collector.namespaces.focus = focus;
            // The buffer the next poll fills: the UI hands back the one it no longer shows.
            let mut buf = Vec::new();
            // Debug builds only: a panic here on demand, for the test that katop then ends
            // cleanly instead of drawing on without polls.
            #[cfg(debug_assertions)]
            if std::env::var_os("KATOP_TEST_PANIC").is_some_and(|v| v == "collector") {
                let _ = collector.poll();
                panic!("injected by KATOP_TEST_PANIC");
            }
            loop {
                if paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let started = Instant::now();
                let Some(result) = poll(
                    &mut collector,
                    std::mem::take(&mut buf),
                    &tx,
                    memory.as_ref(),
                ) else {
                    return; // the UI has gone
                };
                if tx
                    .blocking_send(Polled::Done(result.map(Box::new)))
                    .is_err()
                {
                    return; // the UI has gone
                }
                match applied.recv() {
                    Ok(spare) => buf = spare,
                    Err(_) => return,
                }
                // Debug builds only: an allocation failure on demand, once the dashboard
                // shows (for the test that the terminal is restored even then).
                #[cfg(debug_assertions)]
                if std::env::var_os("KATOP_TEST_PANIC").is_some_and(|v| v == "alloc") {
                    std::alloc::handle_alloc_error(std::alloc::Layout::new::<[u8; 4096]>());
                }
                // In short naps: `+` and `-` change the interval while katop waits.
                loop {
                    let every = Duration::from_millis(interval.load(Ordering::Relaxed));
                    let left = every.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                }
            }
        })
        .expect("spawn the collector thread");
}

/// One poll of the collector thread: streamed to the UI as it is read (the table applies it in
/// place, so a poll of 1M sockets is never held whole beside the one shown), or whole while the
/// dashboard's own memory remembers polls (below its limit, it needs them whole). `None` once
/// the UI has gone.
fn poll(
    collector: &mut Collector,
    buf: Vec<RawSock>,
    tx: &mpsc::Sender<Polled>,
    memory: Option<&past::Remembered>,
) -> Option<Result<Snapshot, String>> {
    let whole = memory.is_some_and(|m| m.lock().is_ok_and(|m| m.wants_polls()));
    let is_tcp = |s: &RawSock| s.proto == crate::model::Proto::Tcp;
    if whole {
        let result = collector.poll_into(buf).map_err(|e| e.to_string());
        // Without a store, the dashboard remembers the last hour itself.
        if let (Ok(snap), Some(memory)) = (&result, memory) {
            if let Ok(mut m) = memory.lock() {
                m.record(snap);
            }
        }
        return Some(result);
    }
    let (mut tcp, mut gone) = (0, false);
    let result = collector.poll_streamed(buf, &mut |piece| {
        tcp += piece.socks.iter().filter(|s| is_tcp(s)).count();
        gone = gone || tx.blocking_send(Polled::Piece(piece)).is_err();
    });
    if gone {
        return None;
    }
    if let (Ok(snap), Some(memory)) = (&result, memory) {
        if let Ok(mut m) = memory.lock() {
            m.passed(tcp + snap.socks.iter().filter(|s| is_tcp(s)).count());
        }
    }
    Some(result.map_err(|e| e.to_string()))
}

/// Acts off the UI thread (each kill or change is a few syscalls, a marked set can be
/// thousands). The log is opened before acting: nothing is done that could not be recorded.
/// After a keepalive change the collector is told to read those sockets' options again.
fn spawn_actor(
    log_path: Option<LogPath>,
    rx: std::sync::mpsc::Receiver<(Action, Vec<Target>)>,
    tx: mpsc::UnboundedSender<Msg>,
    reread: Reread,
) {
    std::thread::Builder::new()
        .name("katop-actions".into())
        .spawn(move || {
            for (action, targets) in rx {
                let msg = match act(log_path.as_ref(), action, &targets) {
                    Ok((reports, log_error)) => Msg::Acted { reports, log_error },
                    Err(why) => {
                        let at = std::time::SystemTime::now();
                        let reports = targets
                            .iter()
                            .map(|t| Report {
                                target: t.clone(),
                                action,
                                outcome: Outcome::Refused(why.clone()),
                                at,
                            })
                            .collect();
                        Msg::Acted {
                            reports,
                            log_error: None,
                        }
                    }
                };
                if matches!(action, Action::Keepalive(_)) {
                    if let Ok(mut again) = reread.lock() {
                        again.extend(targets.iter().map(|t| crate::model::Cookie(t.cookie)));
                    }
                }
                if tx.send(msg).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the actions thread");
}

/// A worker thread ended (it only does on a panic): katop ends too, saying why, instead of
/// going on half alive (no polls, or kills that wait for ever).
fn worker_gone(name: &str) -> anyhow::Error {
    match tui::take_worker_panic() {
        Some(panic) => anyhow::anyhow!("the {name} thread failed: {panic}"),
        None => anyhow::anyhow!("the {name} thread stopped"),
    }
}

/// Where the loop hands the effects it does not carry out itself.
struct Workers {
    paused: Arc<AtomicBool>,
    every: Arc<AtomicU64>,
    actions: std::sync::mpsc::Sender<(Action, Vec<Target>)>,
    store: std::sync::mpsc::Sender<Ask>,
    /// How many of the store's answers the app has had.
    answered: std::cell::Cell<u64>,
}

impl Workers {
    fn take(&self, effect: Effect) -> anyhow::Result<()> {
        let sent = match effect {
            Effect::SetPaused(p) => {
                self.paused.store(p, Ordering::Relaxed);
                return Ok(());
            }
            Effect::SetInterval(d) => {
                self.every.store(d.as_millis() as u64, Ordering::Relaxed);
                return Ok(());
            }
            Effect::Kill(targets) => self.actions.send((Action::Kill, targets)).is_ok(),
            Effect::SetKeepalive(targets, change) => self
                .actions
                .send((Action::Keepalive(change), targets))
                .is_ok(),
            Effect::Travel { from, to } => {
                return self
                    .store
                    .send(Ask::Travel(from, to, self.answered.get()))
                    .map_err(|_| worker_gone("store"));
            }
            Effect::Lifeline { cookie, until } => {
                return self
                    .store
                    .send(Ask::Lifeline(cookie, until))
                    .map_err(|_| worker_gone("store"));
            }
            Effect::Quit | Effect::Suspend => return Ok(()),
        };
        if sent {
            Ok(())
        } else {
            Err(worker_gone("actions"))
        }
    }
}

/// What the dashboard reads from: the collector's selection, the store, where actions are
/// logged, and the moment to open on (`--at`).
struct Sources {
    selection: Selection,
    kill_log: Option<LogPath>,
    store: Looking,
    start: Option<SystemTime>,
}

/// Where actions are recorded, and whether the user named it (`--kill-log`).
struct LogPath {
    path: std::path::PathBuf,
    explicit: bool,
}

/// One confirmed action: the reports, and why the log could not be written if it could not.
fn act(
    log: Option<&LogPath>,
    action: Action,
    targets: &[Target],
) -> Result<(Vec<Report>, Option<String>), String> {
    let log =
        log.ok_or("nowhere to write the log (set HOME or XDG_STATE_HOME, or pass --kill-log)")?;
    let path = &log.path;
    let mut audit = AuditLog::open(path, log.explicit)
        .map_err(|e| format!("cannot use the log {}: {e}", path.display()))?;
    let reports = match action {
        Action::Kill => Killer::new(Method::Auto)
            .map_err(|e| e.to_string())?
            .kill_all(targets),
        Action::Keepalive(change) => Tuner::new()
            .map_err(|e| e.to_string())?
            .apply_all(targets, change),
    };
    let log_error = audit
        .append(&reports)
        .err()
        .map(|e| format!("{}: {e}", path.display()));
    Ok((reports, log_error))
}

/// The threads behind the dashboard: the collector, the actor and the store reader. Returns
/// where effects go, and the channels polls and answers arrive on.
fn start_workers(app: &mut App, interval: Duration, sources: Sources) -> (Workers, Channels) {
    let Sources {
        selection,
        kill_log,
        store,
        start,
    } = sources;
    let paused = Arc::new(AtomicBool::new(false));
    let every = Arc::new(AtomicU64::new(interval.as_millis() as u64));
    let (kill_tx, kill_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let reread = Reread::default();
    spawn_actor(kill_log, kill_rx, done_tx.clone(), reread.clone());
    let (travel_tx, travel_rx) = std::sync::mpsc::channel();
    let memory = store.memory();
    past::spawn_reader(store, selection.netns.clone(), travel_rx, done_tx);
    if let Some(t) = start {
        app.note("reading the store…".into());
        let _ = travel_tx.send(Ask::Travel(None, Travel::To(t), 0));
    }
    let (tx, polls) = mpsc::channel(1);
    let (applied, applied_rx) = std::sync::mpsc::sync_channel(1);
    spawn_collector(
        selection,
        Arc::clone(&every),
        Arc::clone(&paused),
        tx,
        applied_rx,
        (reread, Arc::clone(&app.focus), memory),
    );
    let workers = Workers {
        paused,
        every,
        actions: kill_tx,
        store: travel_tx,
        answered: std::cell::Cell::new(0),
    };
    (
        workers,
        Channels {
            polls,
            applied,
            done: done_rx,
        },
    )
}

/// Polls in, their spent buffers back out, and the actor's and store's answers in.
struct Channels {
    polls: mpsc::Receiver<Polled>,
    applied: std::sync::mpsc::SyncSender<Vec<RawSock>>,
    done: mpsc::UnboundedReceiver<Msg>,
}

async fn event_loop(app: &mut App, interval: Duration, sources: Sources) -> anyhow::Result<()> {
    let (workers, channels) = start_workers(app, interval, sources);
    let Channels {
        polls: mut rx,
        applied: applied_tx,
        done: mut done_rx,
    } = channels;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigquit = signal(SignalKind::quit())?;
    let mut sigtstp = signal(SignalKind::from_raw(rustix::process::Signal::TSTP.as_raw()))?;
    let mut sigcont = signal(SignalKind::from_raw(rustix::process::Signal::CONT.as_raw()))?;
    let mut terminal = tui::init()?;
    let mut events = EventStream::new();
    // Time-only changes (highlights expiring) need no finer clock than this.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut redraw = true;
    loop {
        let size = terminal.size()?;
        let area = ratatui::layout::Rect::new(0, 0, size.width, size.height);
        if redraw {
            // The layout this frame will have, so paging and scrolling match the screen.
            app::update(app, Msg::Layout(ui::viewport(app, area)));
            terminal.draw(|f| ui::render(app, f))?;
        }
        let msg = tokio::select! {
            poll = rx.recv() => match poll {
                Some(Polled::Piece(piece)) => Msg::Piece(piece, Instant::now()),
                Some(Polled::Done(Ok(snap))) => Msg::Poll(snap, Instant::now()),
                Some(Polled::Done(Err(e))) => {
                    let _ = applied_tx.try_send(Vec::new());
                    Msg::PollFailed(e)
                }
                None => return Err(worker_gone("collector")),
            },
            Some(event) = events.next() => match event? {
                Event::Key(k) if k.kind != KeyEventKind::Release => Msg::Key(k),
                Event::Mouse(m) => Msg::Mouse(m),
                Event::Resize(..) => Msg::Resize,
                Event::Paste(text) => Msg::Paste(text),
                _ => continue,
            },
            done = done_rx.recv() => match done {
                Some(done) => done,
                None => return Err(worker_gone("actions and store")),
            },
            _ = tick.tick() => Msg::Tick(Instant::now()),
            _ = sigterm.recv() => Msg::Signal,
            _ = sighup.recv() => Msg::Signal,
            _ = sigint.recv() => Msg::Signal,
            _ = sigquit.recv() => Msg::Signal,
            _ = sigtstp.recv() => Msg::Suspend,
            _ = sigcont.recv() => {
                // Stopped from outside (SIGSTOP) and continued: make sure of the terminal.
                tui::resume(&mut terminal)?;
                Msg::Resize
            }
        };
        // A tick only expires highlights; when polls already redraw every second it can wait.
        // A piece of a poll shows once the poll is whole.
        redraw = !matches!(msg, Msg::Piece(..))
            && (!matches!(msg, Msg::Tick(_))
                || app.paused
                || app.interval > Duration::from_secs(1)
                || !app.closed.is_empty());
        // The store's answers the app has had (so the store can tell keys pressed before its
        // last answer came).
        if matches!(msg, Msg::Arrived(_)) {
            workers.answered.set(workers.answered.get() + 1);
        }
        let effects = app::update(app, msg);
        // A poll was applied: its predecessor's buffer goes back, and the collector may go on.
        if let Some(spare) = app.spare.take() {
            let _ = applied_tx.try_send(spare);
        }
        for effect in effects {
            match effect {
                Effect::Quit => return Ok(()),
                Effect::Suspend => {
                    tui::suspend(&mut terminal)?;
                    redraw = true;
                }
                other => workers.take(other)?,
            }
        }
    }
}
