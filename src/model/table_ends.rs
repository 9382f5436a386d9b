//! The table's side of connection ends: which connections left (or died while held), the
//! dead ones it keeps, and handing them to [`Departures`] for their causes.

use std::time::{Duration, Instant};

use super::{Carry, ConnTable};
use crate::model::ends::join::{self, Ended, Gone};
use crate::model::stale;
use crate::model::RawSock;

/// A poll's moment by both clocks, and the table's epoch: turns the table's ms stamps into
/// wall-clock times.
#[derive(Debug, Clone, Copy)]
pub(super) struct WallClock {
    pub(super) now: Instant,
    pub(super) epoch: Instant,
    pub(super) wall: std::time::SystemTime,
}

impl WallClock {
    pub(super) fn at(self, ms: u32) -> std::time::SystemTime {
        let since = self
            .now
            .saturating_duration_since(self.epoch + Duration::from_millis(ms.into()));
        self.wall.checked_sub(since).unwrap_or(self.wall)
    }
}

impl ConnTable {
    /// Remembers how each dead connection ended while it stays listed.
    pub(super) fn keep_held_ends(
        &mut self,
        ended: &[Ended],
    ) -> Vec<(u64, crate::model::entry::HeldEnd)> {
        let (socks, index) = (&self.socks, &self.index);
        let dead = |c: &u64| {
            index
                .get(*c, |p| socks.get(p as usize).map(|s| s.cookie.0))
                .is_some_and(|i| stale::is_dead(&socks[i as usize]))
        };
        let held = &mut self.ctx.held_ends;
        let mut released = Vec::new();
        held.retain(|c, end| {
            let keep = dead(c);
            if !keep {
                released.push((*c, *end));
            }
            keep
        });
        for e in ended {
            if let Some(c) = e.cookie.filter(dead) {
                held.insert(
                    c,
                    crate::model::entry::HeldEnd {
                        cause: e.cause,
                        source: e.source,
                        at: e.at,
                    },
                );
            }
        }
        released
    }

    /// The held, unlisted sockets this table knew as connections (or as dead already), or the
    /// tracepoints just told ended: dead connections, with the ends the last poll saw. A
    /// socket never known as a connection (never connected) is left out.
    pub(super) fn known_dead(
        &self,
        unlisted: Vec<RawSock>,
        traced: Option<&[crate::model::ends::trace::Traced]>,
    ) -> Vec<RawSock> {
        let told = |c: u64| traced.is_some_and(|t| t.iter().any(|t| t.cookie == Some(c)));
        let last = self.last();
        unlisted
            .into_iter()
            .filter_map(|mut s| {
                let Some(i) = self.last_place(s.cookie.0) else {
                    // Born and ended between two polls (its peer unknown).
                    return told(s.cookie.0).then_some(s);
                };
                if !last.was_connection(i) {
                    return None;
                }
                s.netns = last.carry(i).netns;
                // Its peer is forgotten in CLOSE; an aborted socket's local address too.
                if let Some(old) = last.sock(i, s.cookie.0) {
                    s.remote = old.remote;
                    if s.local.ip().is_none_or(|ip| ip.is_unspecified()) {
                        s.local = old.local;
                    }
                }
                Some(s)
            })
            .collect()
    }

    /// A connection the last poll listed alive that is dead now: it leaves for its end, though
    /// it stays listed.
    pub(super) fn turned_dead(
        &self,
        sock: &RawSock,
        prev: Option<(usize, Carry)>,
        clock: WallClock,
    ) -> Option<Gone> {
        if !stale::is_dead(sock) {
            return None;
        }
        let (i, c) = prev?;
        let cookie = sock.cookie.0;
        Some(Gone {
            cookie,
            tuple_hash: c.tuple_hash,
            sock: self.last().sock(i, cookie),
            last: c.last?,
            bytes: c.bytes,
            first_seen: Some(clock.at(c.first_seen_ms)),
            seen_alive: true,
        })
    }

    /// Why `gone` (and connections no poll saw) ended, from the tracepoints' `traced` ends or
    /// inferred. `before`: the last poll's copy of the traced sockets listed again.
    pub(super) fn ends(
        &mut self,
        gone: Vec<Gone>,
        traced: Option<Vec<crate::model::ends::trace::Traced>>,
        before: &rustc_hash::FxHashMap<u64, (RawSock, Carry)>,
        clock: WallClock,
    ) -> Vec<Ended> {
        let (socks, derived, index) = (&self.socks, &self.derived, &self.index);
        // A connection told ended while still listed (its TIME_WAIT) is told as the last poll
        // saw it before (its owner, its bytes), when that poll did.
        let listed = |cookie: u64| {
            let i = index.get(cookie, |p| socks.get(p as usize).map(|s| s.cookie.0))? as usize;
            let (sock, c) = before
                .get(&cookie)
                .cloned()
                .unwrap_or_else(|| (socks[i].clone(), Carry::of(&socks[i], &derived[i])));
            Some(Gone {
                cookie,
                tuple_hash: c.tuple_hash,
                last: c.last.unwrap_or_else(|| join::last_seen(&sock)),
                bytes: c.bytes,
                first_seen: Some(clock.at(c.first_seen_ms)),
                seen_alive: true,
                sock: Some(sock),
            })
        };
        self.departures
            .step(gone, traced, listed, clock.now, clock.wall)
    }
}
