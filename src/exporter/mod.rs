//! `katop exporter`: the same collector and model as the dashboard, aggregated into
//! Prometheus metrics for a fleet. A background thread polls every `--interval` and renders;
//! scrapes (hyper, on the main thread's runtime) are answered from the latest render, so none
//! waits for `/proc`; `--textfile` gets the same text, written atomically, for
//! `node_exporter`'s textfile collector. Read-only by construction: nothing here kills or
//! changes a socket.

pub mod metrics;
pub mod serve;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Bytes;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{Args, ExporterArgs};
use crate::collector::Collector;
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
        eprintln!(
            "katop exporter: --listen none needs --textfile: there would be nowhere to export to"
        );
        return ExitCode::from(USAGE);
    }
    if let Some(dir) = e.textfile.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            eprintln!(
                "katop exporter: --textfile: {} is not a directory",
                dir.display()
            );
            return ExitCode::from(USAGE);
        }
    }
    // Bind first: a bad address or a port in use is a usage error, before any polling.
    let listener = match e.listen.0.map(bind).transpose() {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("katop exporter: {msg}");
            return ExitCode::from(USAGE);
        }
    };
    if let Some(note) = crate::netns_choice(args).1 {
        eprintln!("katop exporter: {note}");
    }
    let mut poller = match Poller::new(args, e, middleboxes) {
        Ok(p) => p,
        Err(err) => {
            eprintln!("katop exporter: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    // One poll before serving: no scrape ever finds nothing.
    poller.once();
    let latest = Arc::clone(&poller.latest);
    let interval = e.interval;
    std::thread::Builder::new()
        .name("katop-exporter-poll".into())
        .spawn(move || loop {
            std::thread::sleep(interval.saturating_sub(poller.last_cost));
            poller.once();
        })
        .expect("spawn the poller");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("katop exporter: {err}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let stop = stopped();
        match listener {
            Some(l) => match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    if let Ok(at) = l.local_addr() {
                        eprintln!("katop exporter: serving http://{at}/metrics");
                    }
                    serve::serve(l, latest, stop).await;
                }
                Err(err) => eprintln!("katop exporter: {err}"),
            },
            None => stop.await,
        }
    });
    ExitCode::SUCCESS
}

/// SIGTERM, SIGINT or SIGHUP: stop serving, exit 0.
async fn stopped() {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
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
    l.set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(l)
}

/// The collector, the model, and where each render goes.
struct Poller {
    collector: Collector,
    table: ConnTable,
    max_groups: usize,
    textfile: Option<PathBuf>,
    status: PollStatus,
    /// The latest successful poll's metrics (without the exporter's own).
    data: String,
    latest: Latest,
    last_cost: Duration,
}

impl Poller {
    fn new(args: &Args, e: &ExporterArgs, middleboxes: Vec<Middlebox>) -> anyhow::Result<Self> {
        let mut table = ConnTable::new(args.stale_after);
        // No metric is about a connection's other end.
        table.set_peers(false);
        table.set_middleboxes(middleboxes);
        Ok(Poller {
            collector: Collector::new(crate::selection(args))?,
            table,
            max_groups: e.max_groups,
            textfile: e.textfile.clone(),
            status: PollStatus::default(),
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
                drop(self.table.apply(snap, now));
                self.status.duration = started.elapsed();
                self.status.at = Some(SystemTime::now());
                self.data = metrics::render(&self.table, Instant::now(), self.max_groups);
            }
            Err(err) => {
                self.status.errors_total += 1;
                eprintln!("katop exporter: poll failed: {err}");
            }
        }
        // After a failed poll the last good data stays, and the self-metrics say it is old.
        let openmetrics = metrics::finish(&self.data, self.status);
        let prometheus = metrics::to_prometheus_text(&openmetrics);
        if let Some(path) = &self.textfile {
            if let Err(err) = write_atomically(path, prometheus.as_bytes()) {
                eprintln!("katop exporter: cannot write {}: {err}", path.display());
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

/// Writes `path` whole or not at all: a temporary file beside it, then a rename, so a reader
/// (`node_exporter`) never sees it half-written.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "metrics".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.katop-{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
