//! The dashboard's own recent memory, to look back without a store (no `katop record`
//! running): the same keyframes and deltas the recorder writes, one compressed frame per
//! remembered poll (one each [`EVERY`]),
//! kept in memory for the last [`KEEP`] and at most [`MAX_BYTES`] (the oldest go first, a
//! keyframe and its deltas together, so what is kept always begins with a keyframe). No
//! events: the connections' lifelines need the store. Above [`MOST_SOCKETS`] it keeps nothing:
//! its bookkeeping alone would outweigh what it keeps.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::changes::Changes;
use super::snapshot::{self, Sample};
use crate::model::Snapshot;

/// How far back the dashboard remembers.
pub const KEEP: Duration = Duration::from_secs(3600);
/// The most its memory holds, compressed.
pub const MAX_BYTES: usize = 32 << 20;
/// One poll remembered per this long, whatever the dashboard's interval: at a 1 s interval
/// and 100k sockets, each remembered poll costs the collector thread a pass over them all.
pub const EVERY: Duration = Duration::from_secs(10);
/// The most TCP sockets remembered. Each costs 40 bytes of bookkeeping between polls (what was
/// last written of it: 86 MB at 1M) and ~23 bytes of every keyframe, so past this the memory
/// would spend more than its [`MAX_BYTES`] on bookkeeping and hold one keyframe at most: it
/// forgets everything instead, and says so. It remembers again at 7/8 of this (a host
/// hovering at the limit does not start afresh every poll).
pub const MOST_SOCKETS: usize = 400_000;

struct Frame {
    time: SystemTime,
    keyframe: bool,
    /// The poll's lines, zstd-compressed; shared with a reader, who decodes them once the
    /// memory's lock is let go.
    data: std::sync::Arc<[u8]>,
}

/// The last hour of polls, compressed.
pub struct Memory {
    frames: VecDeque<Frame>,
    changes: Changes,
    bytes: usize,
    /// [`MOST_SOCKETS`], smaller in tests.
    most: usize,
    /// The TCP sockets of the poll that turned the memory off, while it is off.
    off: Option<usize>,
}

impl Default for Memory {
    fn default() -> Self {
        Memory::at_most(MOST_SOCKETS)
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Memory({} polls, {} bytes)",
            self.frames.len(),
            self.bytes
        )
    }
}

impl Memory {
    /// A memory that keeps nothing of polls over `most` TCP sockets.
    pub fn at_most(most: usize) -> Memory {
        Memory {
            frames: VecDeque::new(),
            changes: Changes::default(),
            bytes: 0,
            most,
            off: None,
        }
    }

    /// Remembers a poll (a snapshot before the model takes it).
    pub fn record(&mut self, snap: &Snapshot) {
        if !self.takes(snap) {
            return;
        }
        let recent = self
            .frames
            .back()
            .is_some_and(|f| snap.wall.duration_since(f.time).unwrap_or_default() < EVERY);
        if recent {
            return;
        }
        let keyframe = self.changes.keyframe_due(self.frames.is_empty());
        let delta = self
            .changes
            .delta(snap.socks.iter(), (snap.wall, snap.cost.dump), keyframe);
        let sample = Sample {
            time: crate::actions::log::rfc3339(snap.wall),
            sample: delta.tcp,
        };
        let namespaces = self
            .changes
            .to_name(snapshot::stored_namespaces(&snap.namespaces), keyframe);
        let encoded = super::frame::compress_with(|w| {
            snapshot::write_poll(w, &sample, (&snap.settings, &namespaces), keyframe, delta)
                .map(|_| ())
        });
        let Ok((data, raw)) = encoded else {
            // Not remembered: the next poll starts afresh.
            self.forget();
            return;
        };
        self.changes.wrote(raw, keyframe);
        self.bytes += data.len();
        self.frames.push_back(Frame {
            time: snap.wall,
            keyframe,
            data: data.into(),
        });
        self.trim(snap.wall);
    }

    fn forget(&mut self) {
        self.frames.clear();
        self.changes.forget();
        self.bytes = 0;
    }

    /// Whether a poll of this size is remembered; over the limit, everything is forgotten and
    /// its memory given back (the bookkeeping's map too, not only emptied).
    fn takes(&mut self, snap: &Snapshot) -> bool {
        // Counted only when it could matter (this runs every poll, under the memory's lock).
        let tcp = if snap.socks.len() <= self.limit() {
            0
        } else {
            snap.socks
                .iter()
                .filter(|s| s.proto == crate::model::Proto::Tcp)
                .count()
        };
        self.admits(tcp)
    }

    /// The most TCP sockets a poll it remembers may have now.
    fn limit(&self) -> usize {
        match self.off {
            Some(_) => self.again(),
            None => self.most,
        }
    }

    /// Whether it remembers polls now: the collector then reads them whole, not streamed.
    pub fn wants_polls(&self) -> bool {
        self.off.is_none()
    }

    /// A poll it did not see whole (streamed while it was off) had `tcp` TCP sockets: under
    /// its limit again, it remembers from the next poll on.
    pub fn passed(&mut self, tcp: usize) {
        self.admits(tcp);
    }

    /// Whether a poll of `tcp` TCP sockets is remembered; over the limit, it turns off.
    fn admits(&mut self, tcp: usize) -> bool {
        if tcp <= self.limit() {
            self.off = None;
            return true;
        }
        if self.off.is_none() {
            self.frames = VecDeque::new();
            self.changes = Changes::default();
            self.bytes = 0;
        }
        self.off = Some(tcp);
        false
    }

    /// The count a memory that is off remembers again at.
    fn again(&self) -> usize {
        self.most - self.most / 8
    }

    /// Why nothing is remembered, while the memory is off.
    fn why_off(&self) -> Result<(), String> {
        match self.off {
            Some(tcp) => Err(format!(
                "katop keeps no memory above {} TCP sockets (the last poll had {tcp}; it \
                 remembers again at {} or fewer): katop record keeps history at any size",
                self.most,
                self.again()
            )),
            None => Ok(()),
        }
    }

    /// Drops the oldest keyframe with its deltas while over the limits (never the newest).
    fn trim(&mut self, now: SystemTime) {
        let over = |m: &Memory| {
            m.bytes > MAX_BYTES
                || m.frames
                    .front()
                    .is_some_and(|f| now.duration_since(f.time).unwrap_or_default() > KEEP)
        };
        while over(self) {
            let next = self.frames.iter().skip(1).position(|f| f.keyframe);
            let Some(next) = next else { return };
            for f in self.frames.drain(..=next) {
                self.bytes -= f.data.len();
            }
        }
    }

    /// The poll remembered nearest `from` on one side: the last before it (`back`), or the
    /// first after it; why none can be, back, while the memory is off.
    pub fn sample_beside(
        &self,
        from: SystemTime,
        back: bool,
    ) -> Result<Option<SystemTime>, String> {
        if back {
            // Forward is always somewhere: the present.
            self.why_off()?;
        }
        let times = self.frames.iter().map(|f| f.time);
        Ok(if back {
            times.filter(|t| *t < from).max()
        } else {
            times.filter(|t| *t > from).min()
        })
    }

    /// The sockets at `at`, as remembered; why not when it is before the memory begins.
    pub fn snapshot_at(&self, at: SystemTime) -> Result<Snapshot, String> {
        self.recall(at)?.snapshot()
    }

    /// The remembered polls that tell `at` (its last keyframe on), still compressed: cheap to
    /// take under the lock the collector thread records through.
    pub fn recall(&self, at: SystemTime) -> Result<Recalled, String> {
        self.why_off()?;
        let upto = self.frames.iter().take_while(|f| f.time <= at).count();
        let Some(first) = self.frames.iter().take(upto).rposition(|f| f.keyframe) else {
            return Err(match self.frames.front() {
                Some(f) => format!(
                    "katop remembers from {} on (no store: run katop record to keep more)",
                    crate::actions::log::rfc3339(f.time)
                ),
                None => "katop remembers nothing yet (no store: katop record keeps one)".into(),
            });
        };
        Ok(Recalled {
            frames: self
                .frames
                .range(first..upto)
                .map(|f| std::sync::Arc::clone(&f.data))
                .collect(),
            at,
        })
    }
}

/// Remembered polls taken out of the memory, to decode.
pub struct Recalled {
    frames: Vec<std::sync::Arc<[u8]>>,
    at: SystemTime,
}

impl Recalled {
    /// The sockets at the moment recalled.
    pub fn snapshot(self) -> Result<Snapshot, String> {
        let unreadable = || "katop's memory of then is unreadable".to_string();
        let mut lines = Vec::new();
        for data in &self.frames {
            let text = super::frame::decompress(data).ok_or_else(unreadable)?;
            lines.extend(String::from_utf8_lossy(&text).lines().map(String::from));
        }
        snapshot::at(&lines, self.at).ok_or_else(unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::table::tests::snapshot;
    use crate::model::RawSock;
    use crate::store::test_conn as conn;

    fn poll(wall: SystemTime, socks: Vec<RawSock>) -> Snapshot {
        let mut s = snapshot(socks);
        s.wall = wall;
        s
    }

    #[test]
    fn remembers_polls_steps_between_them_and_forgets_past_the_hour() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = Duration::from_secs;
        let mut m = Memory::default();
        m.record(&poll(t0, vec![conn(1, 1_000), conn(2, 1_000)]));
        m.record(&poll(t0 + s(10), vec![conn(1, 11_000)]));
        assert_eq!(m.sample_beside(t0 + s(30), true), Ok(Some(t0 + s(10))));
        assert_eq!(m.sample_beside(t0 + s(10), true), Ok(Some(t0)));
        assert_eq!(m.sample_beside(t0 + s(10), false), Ok(None));
        let then = m.snapshot_at(t0 + s(5)).unwrap();
        assert_eq!(then.socks.len(), 2);
        let later = m.snapshot_at(t0 + s(12)).unwrap();
        assert_eq!(later.socks.len(), 1);
        assert_eq!(later.socks[0].tcp_info.unwrap().idle_ms(), Some(13_000));
        assert!(m
            .snapshot_at(t0 - s(1))
            .unwrap_err()
            .contains("remembers from"));
        // Two hours on, polls every 10 minutes: what is older than the hour goes, keyframe
        // first (what is kept still reads).
        for i in 1..=12 {
            m.record(&poll(t0 + s(600 * i), vec![conn(1, 600_000 * i as u32)]));
        }
        let oldest = m.frames.front().unwrap();
        assert!(oldest.keyframe);
        assert!(
            t0 + s(7200) - KEEP <= oldest.time + s(600),
            "{:?}",
            oldest.time
        );
        assert!(m.snapshot_at(t0 + s(7200)).is_ok());
        assert!(m.snapshot_at(t0 + s(5)).is_err());
    }

    #[test]
    fn keeps_nothing_of_a_poll_over_its_limit_and_says_why() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = Duration::from_secs;
        let conns = |n: u64| (1..=n).map(|c| conn(c, 1_000)).collect::<Vec<_>>();
        let mut m = Memory::at_most(16);
        m.record(&poll(t0, conns(16)));
        assert_eq!(m.sample_beside(t0 + s(1), true), Ok(Some(t0)));
        // Over the limit: what it held goes, and both ways of asking say why.
        m.record(&poll(t0 + s(10), conns(17)));
        assert!(m.frames.is_empty() && m.bytes == 0);
        let why = m.sample_beside(t0 + s(11), true).unwrap_err();
        assert!(
            why.contains("above 16 TCP sockets") && why.contains("had 17"),
            "{why}"
        );
        assert!(why.contains("again at 14 or fewer"), "{why}");
        // Forward still leads somewhere: back to the present.
        assert_eq!(m.sample_beside(t0 + s(5), false), Ok(None));
        assert!(m
            .snapshot_at(t0 + s(5))
            .unwrap_err()
            .contains("katop record"));
        // Back under it, but not by an eighth: still off (no fresh start every poll).
        m.record(&poll(t0 + s(20), conns(15)));
        assert!(m.frames.is_empty());
        assert!(m.sample_beside(t0 + s(21), true).is_err());
        // Well under it: remembered again, from a keyframe.
        m.record(&poll(t0 + s(30), conns(14)));
        assert!(m.frames.front().is_some_and(|f| f.keyframe));
        assert_eq!(m.snapshot_at(t0 + s(31)).unwrap().socks.len(), 14);
        assert_eq!(m.sample_beside(t0 + s(31), true), Ok(Some(t0 + s(30))));
    }
}
