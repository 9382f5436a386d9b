//! `katop exporter`: the same collector and model as the dashboard, aggregated into
//! Prometheus metrics for a fleet. A background thread polls every `--interval` and renders;
//! scrapes (hyper, on the main thread's runtime) are answered from the latest render, so none
//! waits for `/proc`; `--textfile` gets the same text, written atomically, for
//! `node_exporter`'s textfile collector. Read-only by construction: nothing here kills or
//! changes a socket.

pub mod metrics;
pub mod serve;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Bytes;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{Args, ExporterArgs};
use crate::collector::Collector;
use crate::files::{Dir, FileError};
use crate::model::{ConnTable, Keep, Middlebox};
use metrics::PollStatus;
use serve::{Latest, Rendered};

const USAGE: u8 = 2;

/// The default port: `--listen :9899`.
pub const DEFAULT_PORT: u16 = 9899;

/// Where to serve: an address, or nowhere (`none`: the textfile only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

/// `[ADDR]:PORT` (`:9899` is every address), or `none` to serve nothing.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    if text == "none" {
        return Ok(Listen(None));
    }
    let bad = || format!("'{text}' is not [ADDR]:PORT (like :9899 or 127.0.0.1:9899) or none");
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(Listen(Some(SocketAddr::from(([0u16; 8], port)))));
    }
    text.parse::<SocketAddr>()
        .map(|a| Listen(Some(a)))
        .map_err(|_| bad())
}

pub fn run(args: &Args, e: &ExporterArgs, middleboxes: Vec<Middlebox>) -> ExitCode {
    if e.listen.0.is_none() && e.textfile.is_none() {
        crate::say!(
            "katop exporter: --listen none needs --textfile: there would be nowhere to export to"
        );
        return ExitCode::from(USAGE);
    }
    let serving = match Serving::prepare("katop exporter", e.listen, e.textfile.as_deref()) {
        Ok(s) => s,
        Err((msg, code)) => {
            crate::say!("{msg}");
            return code;
        }
    };
    if let Some(note) = crate::netns_choice(args).1 {
        crate::say!("katop exporter: {note}");
    }
    let Serving {
        textfile,
        listener,
        runtime,
    } = serving;
    let publisher = Publisher::new(e.max_groups, textfile, "katop exporter");
    let mut poller = match Poller::new(args, middleboxes, publisher) {
        Ok(p) => p,
        Err(err) => {
            crate::say!("katop exporter: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let latest = Arc::clone(&poller.publisher.latest);
    run_polling(
        "katop exporter",
        listener,
        latest,
        e.interval,
        runtime,
        move || poller.once(),
    )
}

/// Runs `poll_once` at once and then every `interval` (less what it took) on a thread of its own,
/// serving the latest metrics on `listener` meanwhile (from the first step on: no scrape finds
/// nothing), until SIGTERM, SIGINT or SIGHUP. The poll under way then finishes: a record is
/// never cut. `poll_once` returns how long it took.
pub fn run_polling(
    who: &'static str,
    listener: Option<std::net::TcpListener>,
    latest: Latest,
    interval: Duration,
    (rt, stop): (tokio::runtime::Runtime, Stop),
    mut poll_once: impl FnMut() -> Duration + Send + 'static,
) -> ExitCode {
    let (first_done, first_poll) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let poller = std::thread::Builder::new()
        .name("katop-poll".into())
        .spawn(move || {
            let mut cost = poll_once();
            let _ = first_done.send(());
            loop {
                match stop_rx.recv_timeout(interval.saturating_sub(cost)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => cost = poll_once(),
                    _ => return,
                }
            }
        })
        .expect("spawn the poller");
    let connections = crate::collector::fds::Shares::now().connections;
    rt.block_on(async move {
        let stop = stop.stopped();
        tokio::pin!(stop);
        tokio::select! {
            _ = first_poll => {}
            () = &mut stop => return,
        }
        match listener {
            Some(l) => match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    if let Ok(at) = l.local_addr() {
                        crate::say!("{who}: serving http://{at}/metrics");
                    }
                    serve::serve(l, latest, connections, stop).await;
                }
                Err(err) => crate::say!("{who}: {err}"),
            },
            None => stop.await,
        }
    });
    drop(stop_tx);
    // A signal during the first step: the step ends the way it would (its store written whole).
    let _ = poller.join();
    ExitCode::SUCCESS
}

/// What `katop exporter` and `katop record` share before polling: the textfile (its directory
/// opened once, as the user who named it, and checked: a FIFO, a device or a link at its name
/// is never replaced), the bound listener (a bad address or a port in use is a usage error,
/// before any polling), a runtime, and the signal handlers (SIGTERM during a first poll of
/// thousands of namespaces ends katop with 0, not by the signal).
pub struct Serving {
    pub textfile: Option<Textfile>,
    pub listener: Option<std::net::TcpListener>,
    pub runtime: (tokio::runtime::Runtime, Stop),
}

impl Serving {
    /// `Err` carries the message and the exit code.
    pub fn prepare(
        who: &str,
        listen: Listen,
        textfile: Option<&Path>,
    ) -> Result<Serving, (String, ExitCode)> {
        let usage = |m: String| (format!("{who}: {m}"), ExitCode::from(USAGE));
        let textfile = textfile
            .map(Textfile::open)
            .transpose()
            .map_err(|err| usage(format!("--textfile: {err}")))?;
        let listener = listen.0.map(bind).transpose().map_err(usage)?;
        let failed = |err: std::io::Error| (format!("{who}: {err}"), ExitCode::FAILURE);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let stop = rt.block_on(async { Stop::install() }).map_err(failed)?;
        Ok(Serving {
            textfile,
            listener,
            runtime: (rt, stop),
        })
    }
}

/// SIGTERM, SIGINT or SIGHUP, caught from the moment [`Stop::install`] returns.
pub struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Stop {
    fn install() -> std::io::Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Completes at the first of them (one that arrived before this was awaited counts).
    async fn stopped(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr)
        .or_else(|e| {
            // `:PORT` on a host without IPv6: every IPv4 address instead.
            if addr.ip().is_unspecified() && addr.is_ipv6() {
                std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
            } else {
                Err(e)
            }
        })
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // A deep accept queue: a burst of connections (a flood, or a thousand clients at once)
    // must not drop a scraper's SYN while the server makes room.
    rustix::net::listen(&l, 4096).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(l)
}

/// The exporter's own collector and model, and where each poll goes.
struct Poller {
    collector: Collector,
    table: ConnTable,
    publisher: Publisher,
}

impl Poller {
    fn new(
        args: &Args,
        middleboxes: Vec<Middlebox>,
        mut publisher: Publisher,
    ) -> anyhow::Result<Self> {
        let mut table = ConnTable::new(args.stale_after);
        // No metric is about a connection's other end.
        table.set_peers(false);
        table.set_middleboxes(middleboxes);
        let mut collector = Collector::new(crate::selection(args))?;
        publisher.ends_from(collector.watch_ends());
        Ok(Poller {
            collector,
            table,
            publisher,
        })
    }

    /// One poll, published; how long it took.
    fn once(&mut self) -> Duration {
        let started = Instant::now();
        // Nothing is read from the table between polls: it keeps only each socket's history,
        // so the new poll's sockets never sit beside the old ones (the dashboard must keep
        // them, to draw).
        let spare = self.table.retire(Keep::History);
        let polled = self.collector.poll_into(spare).map(|snap| {
            let applied = self.table.apply(snap, Instant::now());
            applied.ended
        });
        match polled {
            Ok(ended) => self.publisher.publish(Ok((&self.table, &ended)), started),
            Err(err) => self.publisher.publish(Err(err.into()), started),
        }
        started.elapsed()
    }
}

/// Metrics from each poll's table: rendered, published for scrapes, written to the textfile.
/// The exporter's own poller feeds it, or `katop record` (one poll for both).
pub struct Publisher {
    max_groups: usize,
    textfile: Option<Textfile>,
    status: PollStatus,
    /// What the metrics showed so far (labels stay stable while their series last).
    metrics: metrics::Metrics,
    /// The latest successful poll's metrics (without the exporter's own).
    data: String,
    pub latest: Latest,
    who: &'static str,
}

impl Publisher {
    pub fn new(max_groups: usize, textfile: Option<Textfile>, who: &'static str) -> Publisher {
        Publisher {
            max_groups,
            textfile,
            status: PollStatus::default(),
            metrics: metrics::Metrics::default(),
            data: String::new(),
            latest: Latest::default(),
            who,
        }
    }

    /// Where the causes of ends come from: the tracepoints, or inferred (and why).
    pub fn ends_from(&mut self, watching: Result<(), String>) {
        self.metrics.ends.source = Some(match watching {
            Ok(()) => crate::model::ends::CauseSource::Tracepoint,
            Err(why) => {
                crate::say!(
                    "{}: causes of connection ends are inferred: {why}",
                    self.who
                );
                crate::model::ends::CauseSource::Inferred
            }
        });
    }

    /// One poll's table and the ends it saw (or why it failed), begun at `started`. A failed
    /// poll is counted; the previous data stays served, and
    /// `katop_last_poll_timestamp_seconds` ages.
    pub fn publish(
        &mut self,
        polled: anyhow::Result<(&ConnTable, &[crate::model::ends::join::Ended])>,
        started: Instant,
    ) {
        match polled {
            Ok((table, ended)) => {
                self.metrics.ends.add(ended);
                self.status.duration = started.elapsed();
                self.status.at = Some(SystemTime::now());
                self.data = self.metrics.render(table, Instant::now(), self.max_groups);
            }
            Err(err) => {
                self.status.errors_total += 1;
                crate::say!("{}: poll failed: {err}", self.who);
            }
        }
        // After a failed poll the last good data stays, and the self-metrics say it is old.
        let openmetrics = metrics::finish(&self.data, self.status);
        let prometheus = metrics::to_prometheus_text(&openmetrics);
        if let Some(t) = &mut self.textfile {
            if let Err(err) = t.write(prometheus.as_bytes()) {
                crate::say!("{}: cannot write {}: {err}", self.who, t.shown());
            }
        }
        let rendered = Arc::new(Rendered {
            openmetrics: Bytes::from(openmetrics),
            prometheus: Bytes::from(prometheus),
        });
        if let Ok(mut l) = self.latest.write() {
            *l = rendered;
        }
    }
}

/// `--textfile`: its directory, held open, and its name there.
pub struct Textfile {
    dir: Dir,
    name: OsString,
}

impl Textfile {
    pub fn open(path: &Path) -> Result<Textfile, FileError> {
        let (dir, name) = crate::files::split(path)?;
        let dir = Dir::existing(dir)?;
        dir.check_replaceable(name)?;
        Ok(Textfile {
            dir,
            name: name.to_os_string(),
        })
    }

    /// Replaces the file whole (`node_exporter` never sees it half-written), readable by all
    /// (`0644`: `node_exporter` runs as its own user).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        match self.dir.replace(&self.name, bytes, 0o644) {
            // The directory was removed (and maybe made again, by a package upgrade): opened
            // afresh, with the same checks.
            Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.dir = Dir::existing(self.dir.path())?;
                self.dir.replace(&self.name, bytes, 0o644)
            }
            r => r,
        }
    }

    fn shown(&self) -> String {
        let path = self.dir.path().join(&self.name);
        crate::text::printable(&path.to_string_lossy()).into_owned()
    }
}
