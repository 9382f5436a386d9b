//! What the recorder writes after a poll between keyframes: the sockets whose record changed
//! since it was last written (whole when more than their moving part changed, else that part
//! alone: [`Moving`]), and the cookies gone. The kernel's "ms ago" clocks and
//! the timer's "ms to go" are compared as absolute times, so a socket that changes nothing (an
//! idle connection, whose clocks only advance) costs nothing; a clock that moved by less than
//! [`CLOCK_SLACK_S`], plus the time the poll's dump took, is the same clock read at a slightly
//! different moment, not a change (a dump of 1M sockets reads them over a second or more, and
//! a loaded host's take longer or shorter from one poll to the next).
//!
//! Memory: 32 bytes of state per TCP socket (two fingerprints, four clocks), 40 with its key.

use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime};

use rustc_hash::{FxHashMap, FxHasher};

use super::snapshot::StoredNs;
use crate::model::RawSock;

/// Clocks read this close are one clock (a poll's dumps and its wall time differ by its
/// /proc scan, and jiffies round).
pub const CLOCK_SLACK_S: u32 = 2;

#[derive(Debug, Clone, Copy)]
struct Written {
    /// The fixed part, hashed.
    fixed: u64,
    /// The moving part without its clocks, hashed, in the upper 63 bits; in the lowest, the
    /// parity of the last poll that listed it (one a poll does not list is gone: 8 bytes a
    /// socket less than a poll stamp, 16 MB at 1M sockets).
    fp_seen: u64,
    /// `last_data_sent`, `last_data_recv`, `last_ack_recv` and the timer's expiry, as unix
    /// seconds (0: none).
    clocks: [u32; 4],
}

/// What was last written of each TCP socket.
#[derive(Debug, Default)]
pub struct Changes {
    written: FxHashMap<u64, Written>,
    polls: u32,
    /// The namespaces named since the last keyframe: inode → its names, hashed (an inode
    /// can come back as another namespace, or its container be found later).
    named: FxHashMap<u32, u64>,
    /// The last keyframe's bytes, and the deltas' since (before compression).
    keyframe_bytes: u64,
    since_keyframe: u64,
    /// The last poll's dump, in whole seconds rounded up.
    last_span_s: u32,
}

/// A poll's delta: the sockets to write whole, those to write only the moving part of, and
/// the cookies gone. The sockets are the poll's own, borrowed: each record is built as it is
/// written (a keyframe of 200k sockets held as records beside the poll was 80 MB).
#[derive(Debug, Default)]
pub struct Delta<'a> {
    pub socks: Vec<&'a RawSock>,
    pub moved: Vec<&'a RawSock>,
    pub gone: Vec<u64>,
    /// The poll's TCP sockets (its mark's `sample`).
    pub tcp: usize,
}

impl Changes {
    /// This poll's `socks` (wall-clock `wall`, the end of a dump that took `span`) against what
    /// was last written; what it returns counts as written. `all`: every socket is written (a
    /// keyframe), gone ones forgotten.
    pub fn delta<'a>(
        &mut self,
        socks: impl Iterator<Item = &'a RawSock>,
        (wall, span): (SystemTime, Duration),
        all: bool,
    ) -> Delta<'a> {
        self.polls = self.polls.wrapping_add(1);
        // A socket is read somewhere within its dump: from one poll to the next its clocks
        // shift by up to the longer of the two dumps.
        let span_s =
            u32::try_from(span.as_secs() + u64::from(span.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        let slack = CLOCK_SLACK_S.saturating_add(span_s.max(self.last_span_s));
        self.last_span_s = span_s;
        let seen = u64::from(self.polls & 1);
        let now_ms = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut out = Delta::default();
        for raw in socks {
            let Some((fixed, fp, clocks)) = fingerprints(raw, now_ms) else {
                continue;
            };
            let fp = fp & !1;
            out.tcp += 1;
            let entry = self.written.entry(raw.cookie.0);
            // (whole, its moving part)
            let changed = match &entry {
                std::collections::hash_map::Entry::Occupied(o) => {
                    let w = o.get();
                    (
                        w.fixed != fixed,
                        w.fp_seen & !1 != fp || moved(&w.clocks, &clocks, slack),
                    )
                }
                std::collections::hash_map::Entry::Vacant(_) => (true, true),
            };
            let w = entry.or_insert(Written {
                fixed,
                fp_seen: fp | seen,
                clocks,
            });
            w.fp_seen = w.fp_seen & !1 | seen;
            if !(all || changed.0 || changed.1) {
                continue;
            }
            (w.fixed, w.fp_seen, w.clocks) = (fixed, fp | seen, clocks);
            if all || changed.0 {
                out.socks.push(raw);
            } else {
                out.moved.push(raw);
            }
        }
        self.written.retain(|cookie, w| {
            let here = w.fp_seen & 1 == seen;
            if !here && !all {
                out.gone.push(*cookie);
            }
            here
        });
        if crate::collector::sparse(self.written.capacity(), self.written.len()) {
            self.written.shrink_to(2 * self.written.len());
        }
        out
    }

    /// Forgets everything written (a write failed: the next poll is a keyframe that writes
    /// all again).
    pub fn forget(&mut self) {
        self.written.clear();
        self.named.clear();
        (self.keyframe_bytes, self.since_keyframe) = (0, 0);
    }

    /// Whether the next poll is a keyframe: one begins each segment (`starts`: it reads
    /// alone, whatever retention dropped before it) and comes again once the deltas since the
    /// last one outweigh it (so reading a moment costs at most about twice a keyframe).
    pub fn keyframe_due(&self, starts: bool) -> bool {
        starts || self.since_keyframe >= self.keyframe_bytes
    }

    /// A poll's lines were written: `bytes` of them (before compression).
    pub fn wrote(&mut self, bytes: u64, keyframe: bool) {
        if keyframe {
            (self.keyframe_bytes, self.since_keyframe) = (bytes, 0);
        } else {
            self.since_keyframe = self.since_keyframe.saturating_add(bytes);
        }
    }

    /// The namespaces a poll's line names: all of them in a keyframe, else those no line since
    /// the last keyframe named as they are named now (one that appears or is renamed between
    /// keyframes is named in the past too).
    pub fn to_name(&mut self, all: Vec<StoredNs>, keyframe: bool) -> Vec<StoredNs> {
        let names = |n: &StoredNs| {
            let mut h = FxHasher::default();
            (&n.1, &n.2, n.3).hash(&mut h);
            h.finish()
        };
        if keyframe {
            self.named = all.iter().map(|n| (n.0, names(n))).collect();
            return all;
        }
        all.into_iter()
            .filter(|n| self.named.insert(n.0, names(n)) != Some(names(n)))
            .collect()
    }
}

fn moved(a: &[u32; 4], b: &[u32; 4], slack: u32) -> bool {
    a.iter().zip(b).any(|(x, y)| x.abs_diff(*y) >= slack)
}

/// A TCP inet socket's fingerprints, fixed part and moving part (clocks left out), and its
/// clocks as unix seconds; `None` for what the store does not keep (what
/// [`super::snapshot::StoredSock::of`] refuses). The moving part is
/// [`super::snapshot::StoredSock::moving`]'s fields, the fixed part the rest; both are read from the socket
/// itself (a poll of 100k sockets builds no record for the ones that did not change).
fn fingerprints(s: &RawSock, now_ms: u128) -> Option<(u64, u64, [u32; 4])> {
    use crate::model::{Endpoint, Owner};
    let (Endpoint::Inet(l), Endpoint::Inet(r)) = (&s.local, &s.remote) else {
        return None;
    };
    if !super::snapshot::StoredSock::keeps(s) {
        return None;
    }
    let secs = |ms: u128| u32::try_from(ms / 1000).unwrap_or(u32::MAX);
    let mut fixed = FxHasher::default();
    (l, r, s.family, s.netns, s.inode, s.uid).hash(&mut fixed);
    match &s.owner {
        Owner::Process { process, fd } => {
            (1u8, process.pid, &process.name, fd, &process.container).hash(&mut fixed);
        }
        Owner::None => 2u8.hash(&mut fixed),
        Owner::Unknown => 3u8.hash(&mut fixed),
    }
    s.opts.read.then_some(s.opts).hash(&mut fixed);
    let mut moving = FxHasher::default();
    (s.state, s.recv_q, s.send_q).hash(&mut moving);
    s.timer.map(|t| (t.kind, t.retrans)).hash(&mut moving);
    s.tcp_info
        .map(crate::model::tcp_info::TcpInfo::without_clocks)
        .hash(&mut moving);
    let mut clocks = [0u32; 4];
    if let Some(info) = &s.tcp_info {
        for (slot, ago) in info.clocks().into_iter().enumerate() {
            clocks[slot] = secs(now_ms.saturating_sub(u128::from(ago)));
        }
    }
    if let Some(t) = s.timer {
        clocks[3] = secs(now_ms + u128::from(t.expires_ms));
    }
    Some((fixed.finish(), moving.finish(), clocks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_conn as conn;
    use std::time::Duration;

    /// The cookies written, whole or their moving part.
    fn cookies(d: &Delta) -> Vec<u64> {
        let mut all: Vec<u64> = d.socks.iter().map(|s| s.cookie.0).collect();
        all.extend(d.moved.iter().map(|m| m.cookie.0));
        all
    }

    #[test]
    fn namespaces_are_named_again_after_a_failed_write() {
        let ns = |inode: u32| (inode, format!("ns{inode}"), None, false);
        let mut c = Changes::default();
        assert_eq!(c.to_name(vec![ns(1)], true).len(), 1);
        assert!(c.to_name(vec![ns(1)], false).is_empty());
        assert_eq!(c.to_name(vec![ns(1), ns(2)], false), [ns(2)]);
        // What was not written is forgotten: every namespace is named again.
        c.forget();
        assert_eq!(c.to_name(vec![ns(1), ns(2)], false).len(), 2);
    }

    #[test]
    fn an_idle_connection_costs_nothing_and_a_busy_or_gone_one_is_written() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut c = Changes::default();
        let polled = [conn(1, 5_000), conn(2, 5_000)];
        let first = c.delta(polled.iter(), (t0, Duration::ZERO), true);
        assert_eq!(cookies(&first), [1, 2]);
        // Ten seconds on: both clocks advanced by ten seconds (idle: nothing to write); the
        // second one talked (its idle clock restarted).
        let later = t0 + Duration::from_secs(10);
        let polled = [conn(1, 15_000), conn(2, 10)];
        let d = c.delta(polled.iter(), (later, Duration::ZERO), false);
        assert_eq!(cookies(&d), [2]);
        assert!(d.socks.is_empty(), "only its moving part");
        assert!(d.gone.is_empty());
        // Read a second late (a slow poll): still nothing.
        let polled = [conn(1, 16_000), conn(2, 1_010)];
        let d = c.delta(
            polled.iter(),
            (later + Duration::from_secs(1), Duration::ZERO),
            false,
        );
        assert!(cookies(&d).is_empty(), "{:?}", cookies(&d));
        // Its queue grew; the other one went.
        let mut busy = conn(1, 17_000);
        busy.send_q = 10;
        let polled = [busy];
        let d = c.delta(
            polled.iter(),
            (later + Duration::from_secs(2), Duration::ZERO),
            false,
        );
        assert_eq!(cookies(&d), [1]);
        assert_eq!(d.gone, [2]);
        // A new owner: written whole.
        let mut moved_fd = conn(1, 18_000);
        moved_fd.send_q = 10;
        moved_fd.owner = crate::model::Owner::None;
        let polled = [moved_fd];
        let d = c.delta(
            polled.iter(),
            (later + Duration::from_secs(3), Duration::ZERO),
            false,
        );
        assert_eq!(d.socks.len(), 1);
        assert!(d.moved.is_empty());
    }

    #[test]
    fn a_long_dump_moves_no_idle_clock() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let later = t0 + Duration::from_secs(10);
        // Read 3 s nearer its dump's start than the first poll read it: its idle clock says
        // 7 s passed where the wall clocks say 10.
        let shifted = [conn(1, 12_000)];
        for (span, moved) in [
            (Duration::ZERO, true),
            (Duration::from_millis(1_500), false),
        ] {
            let mut c = Changes::default();
            c.delta([conn(1, 5_000)].iter(), (t0, span), true);
            let d = c.delta(shifted.iter(), (later, span), false);
            assert_eq!(!cookies(&d).is_empty(), moved, "a {span:?} dump");
        }
    }

    #[test]
    fn what_is_written_of_a_socket_stays_32_bytes() {
        // One per TCP socket, kept between polls: 1M sockets hold 2M of these buckets.
        assert_eq!(std::mem::size_of::<super::Written>(), 32);
    }
}
