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
use crate::model::{ConnTable, Middlebox};
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
    // The textfile's directory is opened once (as the user who named it) and checked, and
    // so is what is at its name now: a FIFO, a device or a link there is never replaced.
    let textfile = match e.textfile.as_deref().map(Textfile::open).transpose() {
        Ok(t) => t,
        Err(err) => {
            crate::say!("katop exporter: --textfile: {err}");
            return ExitCode::from(USAGE);
        }
    };
    // Bind first: a bad address or a port in use is a usage error, before any polling.
    let listener = match e.listen.0.map(bind).transpose() {
        Ok(l) => l,
        Err(msg) => {
            crate::say!("katop exporter: {msg}");
            return ExitCode::from(USAGE);
        }
    };
    if let Some(note) = crate::netns_choice(args).1 {
        crate::say!("katop exporter: {note}");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            crate::say!("katop exporter: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The signal handlers before anything slow: SIGTERM during the first poll (thousands of
    // namespaces take a while) ends katop with 0, not by the signal.
    let stop = match rt.block_on(async { Stop::install() }) {
        Ok(s) => s,
        Err(err) => {
            crate::say!("katop exporter: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut poller = match Poller::new(args, e, middleboxes, textfile) {
        Ok(p) => p,
        Err(err) => {
            crate::say!("katop exporter: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let latest = Arc::clone(&poller.latest);
    let interval = e.interval;
    let (first_done, first_poll) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("katop-exporter-poll".into())
        .spawn(move || {
            // One poll before serving: no scrape ever finds nothing.
            poller.once();
            let _ = first_done.send(());
            loop {
                std::thread::sleep(interval.saturating_sub(poller.last_cost));
                poller.once();
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
                        crate::say!("katop exporter: serving http://{at}/metrics");
                    }
                    serve::serve(l, latest, connections, stop).await;
                }
                Err(err) => crate::say!("katop exporter: {err}"),
            },
            None => stop.await,
        }
    });
    ExitCode::SUCCESS
}

/// SIGTERM, SIGINT or SIGHUP, caught from the moment [`Stop::install`] returns.
struct Stop {
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

/// The collector, the model, and where each render goes.
struct Poller {
    collector: Collector,
    table: ConnTable,
    max_groups: usize,
    textfile: Option<Textfile>,
    status: PollStatus,
    /// What the metrics showed so far (labels stay stable while their series last).
    metrics: metrics::Metrics,
    /// The latest successful poll's metrics (without the exporter's own).
    data: String,
    latest: Latest,
    last_cost: Duration,
}

impl Poller {
    fn new(
        args: &Args,
        e: &ExporterArgs,
        middleboxes: Vec<Middlebox>,
        textfile: Option<Textfile>,
    ) -> anyhow::Result<Self> {
        let mut table = ConnTable::new(args.stale_after);
        // No metric is about a connection's other end.
        table.set_peers(false);
        table.set_middleboxes(middleboxes);
        let mut collector = Collector::new(crate::selection(args))?;
        let mut metrics = metrics::Metrics::default();
        metrics.ends.source = Some(match collector.watch_ends() {
            Ok(()) => crate::model::ends::CauseSource::Tracepoint,
            Err(why) => {
                crate::say!("katop exporter: causes of connection ends are inferred: {why}");
                crate::model::ends::CauseSource::Inferred
            }
        });
        Ok(Poller {
            collector,
            table,
            max_groups: e.max_groups,
            textfile,
            status: PollStatus::default(),
            metrics,
            data: String::new(),
            latest: Latest::default(),
            last_cost: Duration::ZERO,
        })
    }

    /// One poll, rendered and published (and written to the textfile). A failed poll is
    /// counted; the previous data stays served, and `katop_last_poll_timestamp_seconds` ages.
    fn once(&mut self) {
        let started = Instant::now();
        // Nothing is read from the table between polls: it keeps only each socket's history,
        // so the new poll's sockets never sit beside the old ones (the dashboard must keep
        // them, to draw).
        self.table.retire();
        match self.collector.poll() {
            Ok(snap) => {
                let now = Instant::now();
                let applied = self.table.apply(snap, now);
                self.metrics.ends.add(&applied.ended);
                drop(applied);
                self.status.duration = started.elapsed();
                self.status.at = Some(SystemTime::now());
                let now = Instant::now();
                self.data = self.metrics.render(&self.table, now, self.max_groups);
            }
            Err(err) => {
                self.status.errors_total += 1;
                crate::say!("katop exporter: poll failed: {err}");
            }
        }
        // After a failed poll the last good data stays, and the self-metrics say it is old.
        let openmetrics = metrics::finish(&self.data, self.status);
        let prometheus = metrics::to_prometheus_text(&openmetrics);
        if let Some(t) = &mut self.textfile {
            if let Err(err) = t.write(prometheus.as_bytes()) {
                crate::say!("katop exporter: cannot write {}: {err}", t.shown());
            }
        }
        let rendered = Arc::new(Rendered {
            openmetrics: Bytes::from(openmetrics),
            prometheus: Bytes::from(prometheus),
        });
        if let Ok(mut l) = self.latest.write() {
            *l = rendered;
        }
        self.last_cost = started.elapsed();
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
