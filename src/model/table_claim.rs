//! The cookie index across a poll: one index, not an old and a new one side by side (at 1M
//! sockets each is 10 MB, its slots holding places only). Each socket of the new poll claims its cookie's entry, which then
//! holds its new place, marked [`CLAIMED`]; the place it had is kept beside it, in
//! [`Claims::was`]. The entries no socket claimed are the last poll's sockets that left.

use super::retiring::Last;
use super::ConnTable;
use crate::model::place_index::Slot;
use crate::model::RawSock;

/// Marks an entry claimed in this poll (its value is a new place); a table holds fewer than
/// 2^31 sockets.
const CLAIMED: u32 = 1 << 31;
/// No place: a socket the last poll did not list.
const NEW: u32 = u32::MAX;

/// What claiming the index left beside it.
pub(super) struct Claims {
    /// Each socket's place in the last poll, by its place in this one ([`NEW`]: not listed
    /// then).
    was: Vec<u32>,
    /// The last poll's places whose cookie a socket of another namespace has now: they left,
    /// and an end traced for that cookie is told of the socket listed now.
    displaced: Vec<(u32, u64)>,
}

impl Claims {
    /// The last poll's place of the socket now at `now_at`.
    pub(super) fn was(&self, now_at: usize) -> Option<usize> {
        self.was
            .get(now_at)
            .filter(|&&i| i != NEW)
            .map(|&i| i as usize)
    }
}

impl ConnTable {
    /// Claims each socket's entry in the index. A socket listed twice (a dump can list one
    /// again when it moves between hash buckets mid-dump) keeps its first listing.
    pub(super) fn claim(&mut self, socks: &mut Vec<RawSock>) -> Claims {
        let last = Last::of(self.retired.as_ref(), &self.socks, &self.derived);
        let index = &mut self.index;
        let mut was = Vec::with_capacity(socks.len());
        let mut displaced = Vec::new();
        let mut twice = Vec::new();
        {
            // A claimed place is one of this poll's sockets, any other the last poll's.
            let new: &[RawSock] = socks;
            let cookie_at = |p: u32| {
                if p & CLAIMED == 0 {
                    last.cookie(p as usize)
                } else {
                    new.get((p & !CLAIMED) as usize).map(|s| s.cookie.0)
                }
            };
            // Room for a poll that grew at once (a first poll of 1M sockets, most of all).
            let more = new.len().saturating_sub(index.len());
            index.reserve(more, cookie_at);
            for (j, s) in new.iter().enumerate() {
                let here = j as u32 | CLAIMED;
                match index.entry(s.cookie.0, here, cookie_at) {
                    Slot::Made => was.push(NEW),
                    Slot::Found(p) if *p & CLAIMED != 0 => {
                        twice.push(j);
                        was.push(NEW);
                    }
                    Slot::Found(p) => {
                        let i = std::mem::replace(p, here);
                        if last.netns(i as usize) == s.netns {
                            was.push(i);
                        } else {
                            displaced.push((i, s.cookie.0));
                            was.push(NEW);
                        }
                    }
                }
            }
        }
        if !twice.is_empty() {
            let keep = |n: &mut usize| {
                *n += 1;
                twice.binary_search(&(*n - 1)).is_err()
            };
            let mut n = 0;
            socks.retain(|_| keep(&mut n));
            let mut n = 0;
            was.retain(|_| keep(&mut n));
            // Each claimed place moves up by the repeats dropped before it (no repeat has one).
            index.repoint(|p| {
                if p & CLAIMED == 0 {
                    return p;
                }
                let j = (p & !CLAIMED) as usize;
                (j - twice.partition_point(|&t| t < j)) as u32 | CLAIMED
            });
        }
        Claims { was, displaced }
    }

    /// The last poll's sockets that no socket of this one claimed: place then, and cookie, in
    /// the last poll's order.
    pub(super) fn unclaimed(&self, claims: &Claims) -> Vec<(u32, u64)> {
        let last = self.last();
        let mut left: Vec<(u32, u64)> = self
            .index
            .places()
            .filter(|&i| i & CLAIMED == 0)
            .filter_map(|i| Some((i, last.cookie(i as usize)?)))
            .chain(claims.displaced.iter().copied())
            .collect();
        left.sort_unstable();
        left
    }

    /// The index of this poll alone (`socks`): the unclaimed entries go, the claimed hold
    /// places again. The index lives from poll to poll, so after a spike it gives its room
    /// back.
    pub(super) fn settle_index(&mut self, socks: &[RawSock]) {
        self.index.retain(|i| {
            let claimed = *i & CLAIMED != 0;
            *i &= !CLAIMED;
            claimed
        });
        self.index
            .shrink(|p| socks.get(p as usize).map(|s| s.cookie.0));
    }

    /// The place of the socket with this cookie in the table, once a poll is applied.
    pub(super) fn place(&self, cookie: u64) -> Option<usize> {
        let socks = &self.socks;
        self.index
            .get(cookie, |p| socks.get(p as usize).map(|s| s.cookie.0))
            .map(|p| p as usize)
    }

    /// The place of the socket with this cookie in the last poll, before a poll is claimed
    /// (the table's sockets, or what a retired table kept of them).
    pub(super) fn last_place(&self, cookie: u64) -> Option<usize> {
        let last = self.last();
        self.index
            .get(cookie, |p| last.cookie(p as usize))
            .map(|p| p as usize)
    }
}
