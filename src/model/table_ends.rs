//! The table's side of connection ends: which connections left (or died while held), the
//! dead ones it keeps, and handing them to [`Departures`] for their causes.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::{Carry, ConnTable};
use crate::model::ends::join::{self, Ended, Gone};
use crate::model::entry::Derived;
use crate::model::stale;
use crate::model::{RawSock, SockState};

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
                .get(c)
                .is_some_and(|&i| stale::is_dead(&socks[i as usize]))
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
        unlisted
            .into_iter()
            .filter_map(|mut s| {
                if let Some(&i) = self.index.get(&s.cookie.0) {
                    let old = &self.socks[i as usize];
                    if !(join::is_connection(old) || stale::is_dead(old)) {
                        return None;
                    }
                    // Its peer is forgotten in CLOSE; an aborted socket's local address too.
                    s.remote = old.remote.clone();
                    if s.local.ip().is_none_or(|ip| ip.is_unspecified()) {
                        s.local = old.local.clone();
                    }
                    s.netns = old.netns;
                    return Some(s);
                }
                if let Some(c) = self.retired.as_ref().and_then(|r| r.get(&s.cookie.0)) {
                    return (c.last.is_some() || c.state == SockState::Close).then(|| {
                        s.netns = c.netns;
                        s
                    });
                }
                // Born and ended between two polls (its peer unknown).
                told(s.cookie.0).then_some(s)
            })
            .collect()
    }

    /// A connection the last poll listed alive that is dead now: it leaves for its end, though
    /// it stays listed.
    pub(super) fn turned_dead(
        &self,
        sock: &RawSock,
        prev: Option<Carry>,
        clock: WallClock,
    ) -> Option<Gone> {
        if !stale::is_dead(sock) {
            return None;
        }
        let c = prev?;
        Some(Gone {
            cookie: sock.cookie.0,
            tuple_hash: c.tuple_hash,
            sock: self
                .index
                .get(&sock.cookie.0)
                .map(|&i| self.socks[i as usize].clone()),
            last: c.last?,
            first_seen: Some(clock.at(c.first_seen_ms)),
            seen_alive: true,
        })
    }

    /// The connections that left since the last poll: from the retired history (a few bytes a
    /// socket) or the last poll's sockets.
    pub(super) fn gone_connections(
        &self,
        retired: Option<FxHashMap<u64, Carry>>,
        carried: &[bool],
        clock: WallClock,
    ) -> Vec<Gone> {
        match retired {
            Some(left) => left
                .into_iter()
                .filter_map(|(cookie, c)| {
                    Some(Gone {
                        cookie,
                        tuple_hash: c.tuple_hash,
                        sock: None,
                        last: c.last?,
                        first_seen: Some(clock.at(c.first_seen_ms)),
                        seen_alive: c.state_since_ms > c.first_seen_ms,
                    })
                })
                .collect(),
            None => (0..carried.len())
                .filter(|&i| !carried[i])
                .filter_map(|i| {
                    let d = &self.derived[i];
                    let alive = d.state_since_ms > d.first_seen_ms;
                    Gone::of(&self.socks[i], clock.at(d.first_seen_ms), alive)
                })
                .collect(),
        }
    }

    /// Why `gone` (and connections no poll saw) ended, from the tracepoints' `traced` ends or
    /// inferred. `before` is the last poll's sockets, derived values and index.
    pub(super) fn ends(
        &mut self,
        gone: Vec<Gone>,
        traced: Option<Vec<crate::model::ends::trace::Traced>>,
        (previous, old_derived, old_index): (&[RawSock], &[Derived], &FxHashMap<u64, u32>),
        clock: WallClock,
    ) -> Vec<Ended> {
        let (socks, derived, index) = (&self.socks, &self.derived, &self.index);
        // A connection told ended while still listed (its TIME_WAIT) is told as the last poll
        // saw it before (its owner, its bytes), when that poll did.
        let listed = |c: u64| {
            let &now_at = index.get(&c)?;
            Some(match old_index.get(&c) {
                Some(&i) => (
                    previous[i as usize].clone(),
                    clock.at(old_derived[i as usize].first_seen_ms),
                ),
                None => (
                    socks[now_at as usize].clone(),
                    clock.at(derived[now_at as usize].first_seen_ms),
                ),
            })
        };
        self.departures
            .step(gone, traced, listed, clock.now, clock.wall)
    }
}
