//! A poll's `stale` events, stored by cookie. Under churn at 1M sockets they are most of what
//! the recorder writes (40k a poll when 2% of the connections talk): each one spelled its
//! connection's ends, namespace and owner, which the poll's socket lines hold already. So a run
//! of them is stored as one line where the events were,
//! `{"time": …, "host": …, "stale_events": [[cookie, [stale], [gained], [lost]], …]}`, and
//! the reader fills each in from the socket lines of its poll (they follow it in the same
//! frame), into the object `katop history --follow` prints for it.

use std::io::{self, Write};
use std::time::{Instant, SystemTime};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::snapshot::{Moving, StoredNs, StoredSock};
use crate::history::event::{Event, Kind};

const KEY: &str = "\"stale_events\":";

/// Whether a stored line is a run of stale events by cookie.
pub fn is_run(line: &str) -> bool {
    line.contains(KEY)
}

/// What a run holds for the connection `cookie` (`[cookie,`): one connection's runs are found
/// without reading the others.
pub fn run_needle(cookie: u64) -> String {
    format!("[{cookie},")
}

/// Whether a stored line holds sockets: a keyframe or a delta. (A key in quotes never appears
/// inside a JSON string, whose quotes are escaped.)
pub fn is_socket_line(line: &str) -> bool {
    line.contains("\"keyframe\":") || line.contains("\"gone\":")
}

/// The recorder's side: stale events of stored sockets go into one line, written as they come
/// (a burst of 260k is never held); any other event closes the run and is written whole.
#[derive(Debug, Default)]
pub struct Run {
    /// The open line's time and host; `None` when no line is open.
    open: Option<(String, String)>,
}

impl Run {
    /// Writes `ev`, by cookie when it is a stale event of a socket the poll's socket lines
    /// hold (`stored`), else whole.
    pub fn write(
        &mut self,
        w: &mut dyn Write,
        ev: &Event,
        stored: impl Fn(u64) -> bool,
    ) -> io::Result<()> {
        let cookie = ev
            .cookie
            .filter(|&c| ev.event == Kind::Stale && stored(c) && ev.proto == "tcp");
        let Some(cookie) = cookie else {
            self.close(w)?;
            serde_json::to_writer(&mut *w, ev)?;
            return w.write_all(b"\n");
        };
        let joins = self
            .open
            .as_ref()
            .is_some_and(|(time, host)| *time == ev.time && *host == ev.host);
        if joins {
            w.write_all(b",")?;
        } else {
            self.close(w)?;
            w.write_all(b"{\"time\":")?;
            serde_json::to_writer(&mut *w, &ev.time)?;
            w.write_all(b",\"host\":")?;
            serde_json::to_writer(&mut *w, &ev.host)?;
            w.write_all(b",")?;
            w.write_all(KEY.as_bytes())?;
            w.write_all(b"[")?;
            self.open = Some((ev.time.clone(), ev.host.clone()));
        }
        let list = |l: &Option<Vec<String>>| l.as_deref().unwrap_or_default().to_vec();
        serde_json::to_writer(
            &mut *w,
            &(cookie, list(&ev.stale), list(&ev.gained), list(&ev.lost)),
        )
        .map_err(io::Error::from)
    }

    /// Ends the open line, if any.
    pub fn close(&mut self, w: &mut dyn Write) -> io::Result<()> {
        if self.open.take().is_some() {
            w.write_all(b"]}\n")?;
        }
        Ok(())
    }
}

/// One event of a run: cookie, its stale reasons, those gained, those lost.
type ByCookie = (u64, Vec<String>, Vec<String>, Vec<String>);

/// One stored run, as read.
#[derive(Deserialize)]
struct StoredRun {
    time: String,
    host: String,
    stale_events: Vec<ByCookie>,
}

/// A socket line, its sockets left unparsed until one is wanted.
#[derive(Deserialize)]
struct SocketLine<'a> {
    #[serde(default)]
    namespaces: Vec<StoredNs>,
    #[serde(borrow, default)]
    keyframe: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    socks: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    moved: Vec<&'a RawValue>,
    #[serde(default)]
    gone: Vec<u64>,
}

/// A stored socket's cookie, read from the front of its record (`[cookie, …`).
fn cookie_of(record: &RawValue) -> Option<u64> {
    let s = record.get().strip_prefix('[')?;
    let end = s.find(|c: char| !c.is_ascii_digit())?;
    s[..end].parse().ok()
}

/// The reader's side, for one segment: the sockets that its runs name, as its socket lines
/// leave them, and the namespaces' names.
#[derive(Default)]
pub struct Filler {
    wanted: FxHashSet<u64>,
    socks: FxHashMap<u64, StoredSock>,
    /// Each namespace by inode, as named last.
    names: FxHashMap<u32, crate::model::NsInfo>,
    ctx: crate::model::entry::Ctx,
}

impl Filler {
    /// For the runs among `lines` (those to be told): the sockets they name (only `only`,
    /// when given). None named, no socket line is read.
    pub fn wanting<'a>(lines: impl Iterator<Item = &'a str>, only: Option<u64>) -> Filler {
        let named = only.map(run_needle);
        let wanted = lines
            .filter(|l| is_run(l))
            .filter(|l| named.as_deref().is_none_or(|n| l.contains(n)))
            .filter_map(|l| serde_json::from_str::<StoredRun>(l).ok())
            .flat_map(|r| r.stale_events.into_iter().map(|e| e.0))
            .filter(|c| only.is_none_or(|o| *c == o))
            .collect();
        Filler {
            wanted,
            ..Filler::default()
        }
    }

    /// Applies a socket line (a keyframe, or a delta) to the wanted sockets; a damaged one is
    /// skipped, as `--at` skips it.
    pub fn apply(&mut self, line: &str) {
        if self.wanted.is_empty() {
            return;
        }
        let Ok(l) = serde_json::from_str::<SocketLine>(line) else {
            return;
        };
        let settings = crate::model::KernelSettings::default();
        let renamed = l.keyframe.is_some() || !l.namespaces.is_empty();
        // A keyframe lists every socket and names every namespace; a delta, the new ones.
        let records = if let Some(all) = l.keyframe {
            self.socks.clear();
            self.names.clear();
            all
        } else {
            for cookie in l.gone {
                self.socks.remove(&cookie);
            }
            l.socks
        };
        for n in l.namespaces {
            self.names
                .insert(n.0, super::snapshot::ns_info(n, settings));
        }
        if renamed {
            self.ctx
                .set_namespaces(self.names.values().cloned().collect());
        }
        let wanted = |r: &&RawValue| cookie_of(r).is_some_and(|c| self.wanted.contains(&c));
        let whole: Vec<StoredSock> = records
            .into_iter()
            .filter(wanted)
            .filter_map(|r| serde_json::from_str(r.get()).ok())
            .collect();
        let moved: Vec<Moving> = l
            .moved
            .into_iter()
            .filter(wanted)
            .filter_map(|r| serde_json::from_str(r.get()).ok())
            .collect();
        for s in whole {
            self.socks.insert(s.cookie, s);
        }
        for m in moved {
            if let Some(s) = self.socks.get_mut(&m.0) {
                s.set_moving(m);
            }
        }
    }

    /// A run's events, filled in (those of `only`, when given), each to `each` as it is made
    /// (a burst of 200k is never held as events); a socket the lines before did not hold (a
    /// damaged store) is told with its cookie alone, its other fields unknown. A damaged run
    /// tells nothing.
    pub fn fill<E>(
        &self,
        line: &str,
        only: Option<u64>,
        mut each: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        let Ok(run) = serde_json::from_str::<StoredRun>(line) else {
            return Ok(());
        };
        let now = Instant::now();
        let events = run.stale_events.into_iter();
        for (cookie, stale, gained, lost) in events.filter(|e| only.is_none_or(|c| c == e.0)) {
            let mut ev = self.socks.get(&cookie).map_or_else(
                || {
                    let mut ev = Event::bare(Kind::Stale, SystemTime::UNIX_EPOCH, &run.host, "tcp");
                    ev.cookie = Some(cookie);
                    ev
                },
                |s| {
                    let sock = s.to_raw(0);
                    let e = crate::model::SockEntry::bare(&sock, now, &self.ctx);
                    Event::of(Kind::Stale, &e, SystemTime::UNIX_EPOCH, &run.host)
                },
            );
            ev.time.clone_from(&run.time);
            (ev.stale, ev.gained, ev.lost) = (Some(stale), Some(gained), Some(lost));
            each(&ev)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
