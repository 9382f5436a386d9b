//! Where the dashboard looks back: the store `katop record` keeps (the one named with
//! `--store`, or the default one when it holds anything), else the dashboard's own memory of
//! the last hour ([`crate::store::memory`]). Trips into the past are answered off the UI thread
//! (reading a moment of a large store takes a while).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::app::{Arrival, Msg, Travel};
use crate::cli::Args;
use crate::store::memory::Memory;

/// The dashboard's memory, shared by the collector (which records each poll) and the reader.
pub type Remembered = Arc<Mutex<Memory>>;

/// What the dashboard asks of the past.
pub enum Ask {
    /// From the moment shown (none: now) to where, and how many answers the app had then.
    Travel(Option<SystemTime>, Travel, u64),
    /// A connection's events up to a moment.
    Lifeline(u64, SystemTime),
}

/// Where the past comes from.
pub enum Looking {
    Store(PathBuf),
    Memory(Remembered),
    /// No store and no memory (`--store` could not be resolved): why.
    Nowhere(String),
}

impl Looking {
    /// The memory the collector must keep, when it is where the past comes from.
    pub fn memory(&self) -> Option<Remembered> {
        match self {
            Looking::Memory(m) => Some(Arc::clone(m)),
            _ => None,
        }
    }
}

/// The store when one is named (`--store`, `KATOP_STORE`, or `--at`, which asks for it), or
/// when the default one holds anything; else the dashboard's own memory.
pub fn choose(args: &Args) -> Looking {
    let dir = match crate::store::dir_or_default(args.store.as_deref()) {
        Ok(d) => d,
        Err(e) if args.store.is_some() || args.at.is_some() => {
            return Looking::Nowhere(e.to_string())
        }
        Err(_) => return Looking::Memory(Remembered::default()),
    };
    let named = args.store.is_some() || args.at.is_some();
    let holds_any = crate::files::Dir::existing(&dir)
        .ok()
        .and_then(|d| crate::store::segments(&d).ok())
        .is_some_and(|s| !s.is_empty());
    if named || holds_any {
        Looking::Store(dir)
    } else {
        Looking::Memory(Remembered::default())
    }
}

/// Answers the dashboard's asks, in order, on a thread of its own.
pub fn spawn_reader(
    looking: Looking,
    which: crate::collector::namespaces::Which,
    rx: std::sync::mpsc::Receiver<Ask>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    std::thread::Builder::new()
        .name("katop-store".into())
        .spawn(move || {
            // Keys pressed faster than the answers come: a step asked before the app had every
            // answer goes on from where the last trip went, not from the moment on screen.
            let mut went: Option<SystemTime> = None;
            // `answers`: how many this thread has sent so far.
            for (answers, mut ask) in (0_u64..).zip(rx) {
                if let Ask::Travel(_, to @ (Travel::Back | Travel::Forward), had) = ask {
                    if let Some(went) = went.filter(|_| had < answers) {
                        ask = Ask::Travel(Some(went), to, had);
                    }
                }
                let travel = matches!(ask, Ask::Travel(..));
                let mut arrival = match (&looking, ask) {
                    (Looking::Store(dir), Ask::Travel(from, to, _)) => arrive(dir, from, to),
                    (Looking::Store(dir), Ask::Lifeline(cookie, until)) => Arrival::Lifeline(
                        cookie,
                        crate::store::read::lifeline(dir, cookie, until)
                            .map_err(|e| format!("{e:#}")),
                    ),
                    (Looking::Memory(m), Ask::Travel(from, to, _)) => recall(m, from, to),
                    (Looking::Memory(_), Ask::Lifeline(cookie, _)) => Arrival::Lifeline(
                        cookie,
                        Err("katop's own memory keeps no events: katop record keeps them".into()),
                    ),
                    (Looking::Nowhere(e), _) => {
                        Arrival::Failed(format!("no store to look back in: {e}"))
                    }
                };
                // `--netns` narrows the past as it narrows the present.
                if let Arrival::At(_, snap, _) = &mut arrival {
                    crate::store::snapshot::narrow(snap, &which);
                }
                if travel {
                    went = match &arrival {
                        Arrival::At(at, ..) => Some(*at),
                        _ => None,
                    };
                }
                if tx.send(Msg::Arrived(arrival)).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the store thread");
}

/// Where `to` leads from `from` (none: now), by `beside` (the recorded poll before or after),
/// and the sockets there, by `at`.
fn travel(
    from: Option<SystemTime>,
    to: Travel,
    beside: impl Fn(SystemTime, bool) -> Result<Option<SystemTime>, String>,
    at: impl Fn(SystemTime) -> Result<crate::model::Snapshot, String>,
    nothing_before: impl Fn(&str) -> String,
    source: &'static str,
) -> Arrival {
    let here = from.unwrap_or_else(SystemTime::now);
    let target = match to {
        Travel::To(t) => Ok(Some(t)),
        Travel::Back => beside(here, true),
        Travel::Forward => beside(here, false),
    };
    let target = match (target, to) {
        (Ok(Some(t)), _) => t,
        (Ok(None), Travel::Forward) => return Arrival::Live,
        (Ok(None), _) => {
            return Arrival::Failed(nothing_before(&crate::actions::log::rfc3339(here)))
        }
        (Err(e), _) => return Arrival::Failed(e),
    };
    match at(target) {
        Ok(snap) => Arrival::At(target, Box::new(snap), source),
        Err(e) => Arrival::Failed(e),
    }
}

fn arrive(dir: &Path, from: Option<SystemTime>, to: Travel) -> Arrival {
    travel(
        from,
        to,
        |t, back| crate::store::read::sample_beside(dir, t, back).map_err(|e| format!("{e:#}")),
        |t| crate::store::read::snapshot_at(dir, t).map_err(|e| format!("{e:#}")),
        |here| {
            format!(
                "the store {} holds nothing before {here}: katop record keeps one",
                crate::text::printable(&dir.to_string_lossy())
            )
        },
        "the store",
    )
}

fn recall(memory: &Remembered, from: Option<SystemTime>, to: Travel) -> Arrival {
    // Held only to look and take: the collector thread records into it each poll, so the
    // decoding happens after.
    let lock = || {
        memory
            .lock()
            .map_err(|_| "katop's memory is unreadable".to_string())
    };
    travel(
        from,
        to,
        |t, back| lock()?.sample_beside(t, back),
        |t| {
            let recalled = lock()?.recall(t)?;
            recalled.snapshot()
        },
        |here| format!("katop remembers nothing before {here} (no store: katop record keeps one)"),
        "katop's memory",
    )
}
