//! The cookie index across a poll: one map, not an old and a new one side by side (at 1M
//! sockets each is 35 MB). Each socket of the new poll claims its cookie's entry, which then
//! holds its new place, marked [`CLAIMED`]; the place it had is kept beside it, in
//! [`Claims::was`]. The entries no socket claimed are the last poll's sockets that left.

use std::collections::hash_map::Entry;

use super::retiring::Last;
use super::ConnTable;
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
        for (j, s) in socks.iter().enumerate() {
            let here = j as u32 | CLAIMED;
            match index.entry(s.cookie.0) {
                Entry::Vacant(v) => {
                    v.insert(here);
                    was.push(NEW);
                }
                Entry::Occupied(o) if *o.get() & CLAIMED != 0 => {
                    twice.push(j);
                    was.push(NEW);
                }
                Entry::Occupied(mut o) => {
                    let i = o.insert(here);
                    if last.netns(i as usize) == s.netns {
                        was.push(i);
                    } else {
                        displaced.push((i, s.cookie.0));
                        was.push(NEW);
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
            for (j, s) in socks.iter().enumerate() {
                index.insert(s.cookie.0, j as u32 | CLAIMED);
            }
        }
        Claims { was, displaced }
    }

    /// The last poll's sockets that no socket of this one claimed: place then, and cookie, in
    /// the last poll's order.
    pub(super) fn unclaimed(&self, claims: &Claims) -> Vec<(u32, u64)> {
        let mut left: Vec<(u32, u64)> = self
            .index
            .iter()
            .filter(|&(_, &i)| i & CLAIMED == 0)
            .map(|(&cookie, &i)| (i, cookie))
            .chain(claims.displaced.iter().copied())
            .collect();
        left.sort_unstable();
        left
    }

    /// The index of this poll alone: the unclaimed entries go, the claimed hold places again.
    /// The map lives from poll to poll, so after a spike it gives its room back.
    pub(super) fn settle_index(&mut self) {
        self.index.retain(|_, i| {
            let claimed = *i & CLAIMED != 0;
            *i &= !CLAIMED;
            claimed
        });
        let len = self.index.len().max(1024);
        if self.index.capacity() > 4 * len {
            self.index.shrink_to(2 * len);
        }
    }
}
