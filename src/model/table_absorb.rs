//! A poll applied in place, as its sockets come: each socket listed again overwrites its last
//! poll's copy at the same place, a new one is appended, and the last poll's sockets no socket
//! claimed leave when the poll is finished. The table never holds two polls' sockets: a poll
//! streamed to it in pieces costs one piece beside the table, not a second table.
//!
//! One cookie index serves both polls: an entry a socket of this poll claimed holds its place
//! now, marked [`CLAIMED`]; any other still holds the last poll's place. A table that was
//! retired ([`super::Keep`]) has no sockets to overwrite: its sockets are all appended, and
//! each one's place in the last poll is kept beside it.

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use super::departed::WallClock;
use super::retiring::{Last, Retired};
use super::{Carry, ConnTable};
use crate::model::ends::join::{Bytes, Gone};
use crate::model::entry::Derived;
use crate::model::place_index::Slot;
use crate::model::RawSock;

/// Marks an entry claimed in this poll (its value is a place now); a table holds fewer than
/// 2^31 sockets.
const CLAIMED: u32 = 1 << 31;
/// No place: a socket the last poll did not list.
const NEW: u32 = u32::MAX;

/// A poll under way: what absorbing its sockets leaves for finishing it.
#[derive(Debug, Clone)]
pub(super) struct Absorbing {
    pub(super) clock: WallClock,
    pub(super) now_ms: u32,
    /// Seconds since the last poll (none at the first).
    dt: Option<f64>,
    /// How many places the last poll had (the table's sockets below it are the last poll's
    /// until claimed; a retired table's are in [`Retired`]).
    pub(super) old_len: usize,
    /// Whether sockets listed again overwrite their last copy (a retired table appends all).
    pub(super) in_place: bool,
    /// Whether a socket of this poll claimed each of the last poll's places.
    pub(super) claimed: Vec<bool>,
    /// A retired table's: each socket's place in the last poll, by its place now ([`NEW`]:
    /// not listed then). Empty otherwise: a socket listed again keeps its place.
    was: Vec<u32>,
    /// The last poll's places whose cookie came in another namespace (they left): never a
    /// guess's.
    displaced: Vec<usize>,
    /// Connections the last poll listed alive that are dead now (they stay listed).
    pub(super) turned_dead: Vec<Gone>,
    /// Sockets absorbed so far (repeats too).
    absorbed: usize,
    /// The last poll's place after the one the last socket listed again had: a dump lists
    /// sockets in the same order poll after poll, so the next one is most likely there, and
    /// found without the index.
    guess: usize,
    /// Cookies the tracepoints told ended since the last poll.
    traced: FxHashSet<u64>,
    /// Those listed again: the last poll's socket and carry, kept before this poll overwrote
    /// them (an end told of a socket still listed is told as the last poll saw it).
    pub(super) before: FxHashMap<u64, (RawSock, Carry)>,
}

impl Absorbing {
    /// Whether the socket at `i` is new in this poll.
    pub(super) fn is_new(&self, i: usize) -> bool {
        if self.in_place {
            i >= self.old_len
        } else {
            self.was.get(i).is_none_or(|&w| w == NEW)
        }
    }

    /// The last poll's places no socket claimed: the sockets that left, in place order.
    pub(super) fn unclaimed(&self) -> Vec<u32> {
        (0..self.old_len as u32)
            .filter(|&i| !self.claimed[i as usize])
            .collect()
    }
}

/// What claiming a socket's index entry found.
enum Claim {
    /// Listed already in this poll: its first listing stands.
    Twice,
    /// Not listed in the last poll (or its cookie was another namespace's socket's).
    New,
    /// At this place in the last poll.
    Was(usize),
}

/// What derives from the last poll alone, worked out as a socket overwrites its last copy; the
/// rest (service, keepalive, stale reasons) waits for the whole poll ([`ConnTable::finish`]).
/// A socket overwritten in place keeps its last service and keepalive status (`old`) until then:
/// the table stays whole for a view drawn between pieces.
fn carried(
    prev: Option<Carry>,
    old: Option<&Derived>,
    sock: &RawSock,
    (now_ms, dt): (u32, Option<f64>),
) -> Derived {
    let first_seen_ms = prev.map_or(now_ms, |c| c.first_seen_ms);
    let state_since_ms = match prev {
        Some(c) if c.state == sock.state => c.state_since_ms,
        _ => now_ms,
    };
    let rate = |cur: Option<u64>, old: Option<u64>| match (cur, old, dt) {
        (Some(c), Some(o), Some(dt)) if dt > 0.0 => Some((c.saturating_sub(o) as f64 / dt) as f32),
        _ => None,
    };
    let bytes = Bytes::of(sock);
    let stale = prev.map(|c| c.stale).unwrap_or_default();
    Derived {
        first_seen_ms,
        state_since_ms,
        rate_in: rate(bytes.received(), prev.and_then(|c| c.bytes.received())).unwrap_or(f32::NAN),
        rate_out: rate(bytes.sent(), prev.and_then(|c| c.bytes.sent())).unwrap_or(f32::NAN),
        service: old.map(|d| d.service).unwrap_or_default(),
        keepalive: old.and_then(|d| d.keepalive),
        stale,
        stale_was: stale,
    }
}

/// Reads the cookie at a place of the index while a poll is absorbed: a claimed place is one
/// of this poll's sockets, any other the last poll's.
fn cookie_at<'a>(
    socks: &'a [RawSock],
    retired: Option<&'a Retired>,
) -> impl Fn(u32) -> Option<u64> + 'a {
    move |p| match retired {
        Some(r) if p & CLAIMED == 0 => Last::Retired(r).cookie(p as usize),
        _ => socks.get((p & !CLAIMED) as usize).map(|s| s.cookie.0),
    }
}

impl ConnTable {
    /// Begins a poll taken at `now` (`wall` by the wall clock), whose sockets
    /// [`Self::absorb`] then takes in pieces as they come and [`Self::apply`] completes with
    /// the rest. `traced`: the
    /// cookies of the ends the tracepoints told since the last poll, if read. A poll begun
    /// and never finished (its dump failed) is given up: what it absorbed stays, and nothing
    /// is gone on its account.
    pub fn begin(&mut self, now: Instant, wall: std::time::SystemTime, traced: &[u64]) {
        self.give_up();
        let dt = self
            .last_poll
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        let epoch = *self.epoch.get_or_insert(now);
        // 4-byte stamps last 49 days; an older socket's age saturates there.
        let now_ms =
            u32::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u32::MAX);
        let old_len = self.last().len();
        self.absorbing = Some(Absorbing {
            clock: WallClock { now, epoch, wall },
            now_ms,
            dt,
            old_len,
            in_place: self.retired.is_none(),
            claimed: vec![false; old_len],
            was: Vec::new(),
            absorbed: 0,
            guess: 0,
            displaced: Vec::new(),
            turned_dead: Vec::new(),
            traced: traced.iter().copied().collect(),
            before: FxHashMap::default(),
        });
    }

    /// Takes in sockets of the poll begun. A socket listed twice (a dump can list one again
    /// when it moves between hash buckets mid-dump) keeps its first listing.
    pub fn absorb(&mut self, socks: impl IntoIterator<Item = RawSock>) {
        let Some(mut ab) = self.absorbing.take() else {
            return;
        };
        let socks = socks.into_iter();
        // Room for a poll that grew at once (a first poll of 1M sockets, most of all), not for
        // the sockets listed again, whose entries are there.
        ab.absorbed += socks.size_hint().0;
        let more = ab.absorbed.saturating_sub(self.index.len());
        self.index
            .reserve(more, cookie_at(&self.socks, self.retired.as_ref()));
        for sock in socks {
            self.absorb_one(sock, &mut ab);
        }
        self.absorbing = Some(ab);
    }

    fn absorb_one(&mut self, sock: RawSock, ab: &mut Absorbing) {
        let here = self.socks.len() as u32;
        let was = match self.claim(sock.cookie.0, sock.netns, here, ab) {
            Claim::Twice => return,
            Claim::New => None,
            Claim::Was(i) => Some(i),
        };
        let derived = self.carry_in(&sock, was, ab);
        match was {
            Some(i) if ab.in_place => {
                self.socks[i] = sock;
                self.derived[i] = derived;
            }
            _ => {
                if !ab.in_place {
                    ab.was.push(was.map_or(NEW, |i| i as u32));
                }
                self.socks.push(sock);
                self.derived.push(derived);
            }
        }
    }

    /// Takes in a poll's sockets (the rest of them, if some came before) and hands back a
    /// vector, emptied, for the next poll. A table that holds none of its sockets (at its
    /// first poll, or retired) makes the poll's vector its own, not copied: a first poll of 1M
    /// sockets is never held twice.
    pub(super) fn absorb_vec(&mut self, mut socks: Vec<RawSock>) -> Vec<RawSock> {
        if !self.socks.is_empty() {
            self.absorb(socks.drain(..));
            return socks;
        }
        let Some(mut ab) = self.absorbing.take() else {
            return socks;
        };
        ab.absorbed += socks.len();
        let more = ab.absorbed.saturating_sub(self.index.len());
        self.index
            .reserve(more, cookie_at(&self.socks, self.retired.as_ref()));
        let spare = std::mem::replace(&mut self.socks, socks);
        self.derived.clear();
        self.derived.reserve_exact(self.socks.len());
        let mut twice = Vec::new();
        for j in 0..self.socks.len() {
            let (cookie, netns) = (self.socks[j].cookie.0, self.socks[j].netns);
            let was = match self.claim(cookie, netns, j as u32, &mut ab) {
                Claim::Twice => {
                    twice.push(j);
                    None
                }
                Claim::New => None,
                Claim::Was(i) => Some(i),
            };
            let derived = self.carry_in(&self.socks[j], was, &mut ab);
            self.derived.push(derived);
            if !ab.in_place {
                ab.was.push(was.map_or(NEW, |i| i as u32));
            }
        }
        if !twice.is_empty() {
            let keep = |n: &mut usize| {
                *n += 1;
                twice.binary_search(&(*n - 1)).is_err()
            };
            let mut n = 0;
            self.socks.retain(|_| keep(&mut n));
            let mut n = 0;
            self.derived.retain(|_| keep(&mut n));
            if !ab.in_place {
                let mut n = 0;
                ab.was.retain(|_| keep(&mut n));
            }
            // Each claimed place moves up by the repeats dropped before it (no repeat has one).
            self.index.repoint(|p| {
                if p & CLAIMED == 0 {
                    return p;
                }
                let j = (p & !CLAIMED) as usize;
                (j - twice.partition_point(|&t| t < j)) as u32 | CLAIMED
            });
        }
        self.absorbing = Some(ab);
        spare
    }

    /// Claims the index entry of a socket of this poll bound for place `here` (or, listed
    /// again in place, for its own).
    fn claim(
        &mut self,
        cookie: u64,
        netns: crate::model::NetnsId,
        here: u32,
        ab: &mut Absorbing,
    ) -> Claim {
        let g = ab.guess;
        let at_guess = ab.in_place
            && self
                .socks
                .get(g)
                .is_some_and(|s| s.cookie.0 == cookie && s.netns == netns);
        if at_guess && g < ab.old_len && !ab.claimed[g] && !ab.displaced.contains(&g) {
            // Its entry holds this place already; the claim is in `claimed`.
            ab.claimed[g] = true;
            ab.guess = g + 1;
            return Claim::Was(g);
        }
        let retired = self.retired.as_ref();
        let last = Last::of(retired, &self.socks, &self.derived);
        let slot = self
            .index
            .entry(cookie, here | CLAIMED, cookie_at(&self.socks, retired));
        match slot {
            Slot::Made => Claim::New,
            Slot::Found(p) if *p & CLAIMED != 0 => Claim::Twice,
            Slot::Found(p) if ab.in_place && ab.claimed.get(*p as usize) == Some(&true) => {
                Claim::Twice
            }
            Slot::Found(p) => {
                let i = *p as usize;
                if last.netns(i) == netns {
                    ab.claimed[i] = true;
                    ab.guess = i + 1;
                    *p = if ab.in_place { i as u32 } else { here } | CLAIMED;
                    Claim::Was(i)
                } else {
                    // Its cookie in another namespace: another socket; the last one left.
                    *p = here | CLAIMED;
                    ab.displaced.push(i);
                    Claim::New
                }
            }
        }
    }

    /// What a socket of this poll carries from its last poll's place `was` (if any): its
    /// history, and, before that place is overwritten, what its end would be told with.
    fn carry_in(&self, sock: &RawSock, was: Option<usize>, ab: &mut Absorbing) -> Derived {
        let last = self.last();
        let prev = was.map(|i| last.carry(i));
        if let Some((i, c)) = was.zip(prev) {
            let cookie = sock.cookie.0;
            if ab.traced.contains(&cookie) {
                if let Some(old) = last.sock(i, cookie) {
                    ab.before.insert(cookie, (old, c));
                }
            }
            ab.turned_dead
                .extend(self.turned_dead(sock, Some((i, c)), ab.clock));
        }
        let old = was.filter(|_| ab.in_place).map(|i| &self.derived[i]);
        carried(prev, old, sock, (ab.now_ms, ab.dt))
    }

    /// Gives up a poll begun and not finished (its dump failed): its claims are settled as
    /// they are, and no socket leaves on its account (a retired table starts afresh: what it kept is gone with it).
    pub fn give_up(&mut self) {
        let Some(mut ab) = self.absorbing.take() else {
            return;
        };
        if ab.in_place {
            self.index.retain(|p| {
                *p &= !CLAIMED;
                true
            });
            // The sockets it overwrote hold its counters, the others the last poll's: the next
            // poll's rates cannot be told (unknown, never halved or doubled). The connections
            // it found dead are told with the next poll.
            self.last_poll = None;
            self.dead_since_given_up.append(&mut ab.turned_dead);
            // What the sockets absorbed would have had from the whole poll, as far as known.
            self.derive_whole(|i| i >= ab.old_len, ab.now_ms);
        } else {
            self.index.clear();
            self.retired = None;
            self.socks.clear();
            self.derived.clear();
        }
    }

    /// After the poll's sockets are final and the ones that left are out (`gone`: their
    /// places in the last poll, in order), the index holds this poll's places only. The
    /// index lives from poll to poll, so after a spike it gives its room back.
    pub(super) fn settle_index(&mut self, ab: &Absorbing, gone: &[u32]) {
        let moved = ab.in_place;
        self.index.retain(|p| {
            // Marked, or (in place) claimed at the place it held.
            let claimed =
                *p & CLAIMED != 0 || (moved && ab.claimed.get(*p as usize) == Some(&true));
            *p &= !CLAIMED;
            claimed
        });
        if moved && !gone.is_empty() {
            // Each place moves up by the places that left before it.
            self.index
                .repoint(|p| p - gone.partition_point(|&g| g < p) as u32);
        }
        let socks = &self.socks;
        self.index
            .shrink(|p| socks.get(p as usize).map(|s| s.cookie.0));
    }

    /// The place of the socket with this cookie in the table, once a poll is applied.
    /// While a poll is absorbed, a socket claimed or new in it is at its marked place.
    pub(super) fn place(&self, cookie: u64) -> Option<usize> {
        let socks = &self.socks;
        let at = |p: u32| (p & !CLAIMED) as usize;
        self.index
            .get(cookie, |p| socks.get(at(p)).map(|s| s.cookie.0))
            .map(at)
    }

    /// The last poll's place of a socket this poll has not listed (yet), while a poll is
    /// absorbed; `None` for one it lists.
    pub(super) fn last_place(&self, cookie: u64) -> Option<usize> {
        let p = self
            .index
            .get(cookie, cookie_at(&self.socks, self.retired.as_ref()))?;
        let listed = self
            .absorbing
            .as_ref()
            .is_some_and(|ab| ab.in_place && ab.claimed.get(p as usize) == Some(&true));
        (p & CLAIMED == 0 && !listed).then_some(p as usize)
    }
}

/// Time in its state, from the stamp a socket's state carries (zero on first sight, and when
/// its state changed in this poll).
pub(super) fn in_state(d: &Derived, now_ms: u32) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(d.state_since_ms).into())
}

#[cfg(test)]
#[path = "table_absorb_tests.rs"]
mod tests;
