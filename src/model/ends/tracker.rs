//! Joins tracepoint events into connection ends: by 4-tuple until `tcp_destroy_sock` names the
//! cookie. What each transition means, from `net/ipv4/tcp_input.c`, `tcp_timer.c`, `tcp.c`
//! (Linux 6.18):
//! - `SYN_SENT`/`SYN_RECV` → `CLOSE`: a connect refused, timed out or rejected; no connection
//!   opened, so no connection ended (a port scan is not a surge of resets);
//! - `FIN_WAIT1`/`CLOSE_WAIT` on the way: an orderly close, unless a reset or a timeout says
//!   otherwise; `FIN_WAIT1` → `CLOSE` with neither is an orphan whose FIN was never
//!   acknowledged (`tcp_orphan_retries`): a retransmission timeout;
//! - the error the application sees comes after the move to `CLOSE` (`tcp_done_with_error`):
//!   the end is told then, before a destroy the application may delay for hours;
//! - `ESTABLISHED` starts a tuple's life afresh (a tuple reused after `TIME_WAIT`).

use std::net::Ipv6Addr;
use std::time::SystemTime;

use rustc_hash::FxHashMap;

use super::trace::{Event, Tuple};
use super::Cause;

/// A connection's end as the tracepoints told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// The socket's cookie; `None` for an end told before its socket was destroyed (a
    /// socket its application still holds), found by its tuple.
    pub cookie: Option<u64>,
    pub tuple: Tuple,
    pub cause: Cause,
    /// The errno its application sees (ETIMEDOUT 110, ECONNRESET 104, ECONNABORTED 103, …);
    /// none for a socket its application closed itself.
    pub errno: Option<i32>,
    /// The kernel's reason for a reset this side sent (`TCP_KEEPALIVE_TIMEOUT`, …).
    pub reset_reason: Option<Box<str>>,
    /// When the kernel ended it (its move to `CLOSE`), else when it was destroyed.
    pub at: SystemTime,
    /// Whether any event but the destroy was seen (lost events, or an end begun before katop
    /// watched, leave only the destroy: its cause is then not the tracepoints' to tell).
    pub evidence: bool,
}

/// What the events said so far about one connection on its way out.
#[derive(Debug, Clone, Default)]
#[allow(clippy::struct_excessive_bools)] // what was seen, one flag each
struct Pending {
    orderly: bool,
    reset_received: bool,
    reset_sent: Option<Box<str>>,
    errno: Option<i32>,
    /// The state it left for `CLOSE`.
    closed_from: Option<Box<str>>,
    /// A connect that failed: no connection to end.
    never_opened: bool,
    ended_at: Option<SystemTime>,
    first_at: Option<SystemTime>,
    cookie: Option<u64>,
    /// Told already (at the error its application sees), before the destroy.
    told: bool,
}

impl Pending {
    fn traced(&self, cookie: Option<u64>, tuple: Tuple, at: SystemTime) -> Traced {
        let cause = self.cause();
        Traced {
            cookie: cookie.or(self.cookie),
            tuple,
            cause,
            // The side that aborted closed the socket itself: its application sees nothing.
            errno: self.errno.filter(|_| cause != Cause::ResetSent),
            reset_reason: self.reset_sent.clone(),
            at: self.ended_at.unwrap_or(at),
            evidence: self.first_at.is_some(),
        }
    }

    fn cause(&self) -> Cause {
        const ECONNABORTED: i32 = 103;
        // Timeouts report ETIMEDOUT, or the ICMP soft error recorded meanwhile.
        const TIMEOUTS: [i32; 4] = [110, 113, 101, 112];
        match self.errno {
            Some(ECONNABORTED) => return Cause::Killed,
            Some(e) if TIMEOUTS.contains(&e) => {
                return if self.reset_sent.as_deref() == Some("TCP_KEEPALIVE_TIMEOUT") {
                    Cause::KeepaliveTimeout
                } else {
                    Cause::RetransmitTimeout
                };
            }
            _ => {}
        }
        if self.reset_received {
            Cause::ResetReceived
        } else if self.reset_sent.is_some() {
            Cause::ResetSent
        } else if self.closed_from.as_deref() == Some("TCP_FIN_WAIT1") {
            Cause::RetransmitTimeout
        } else if self.orderly {
            Cause::Closed
        } else {
            Cause::Unknown
        }
    }
}

/// Entries kept for connections on their way out (a bound: a held-dead socket may never be
/// destroyed while katop runs, and resets from `TIME_WAIT` have no socket to destroy).
pub const MAX_PENDING: usize = 65_536;

/// What an event does to its connection's record.
type Update = Box<dyn FnOnce(&mut Pending)>;

/// Joins events into ends, one [`Traced`] per connection.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: FxHashMap<Tuple, Pending>,
    /// (local port, remote address) → the tuple last moved to `CLOSE` with them: how an
    /// aborted socket's zeroed tuple is found (never a sibling still open).
    closed_by_ends: FxHashMap<(u16, Ipv6Addr), Tuple>,
}

impl Tracker {
    /// Takes one event seen at `at`; a connection's end comes back when it is known.
    pub fn feed(&mut self, event: Event, at: SystemTime) -> Option<Traced> {
        let is_error = matches!(event, Event::Error { .. });
        let (tuple, update): (Tuple, Update) = match event {
            Event::StateChange { tuple, old, new } => {
                if new == "TCP_ESTABLISHED" {
                    // A new life for the tuple: nothing said of an earlier one applies.
                    self.forget(&tuple);
                    return None;
                }
                let orderly = matches!(new.as_str(), "TCP_FIN_WAIT1" | "TCP_CLOSE_WAIT");
                // A listener, or an unconnected socket, closing is no connection's end.
                if !orderly && new != "TCP_CLOSE" || old == "TCP_LISTEN" || tuple.remote.1 == 0 {
                    return None;
                }
                if new == "TCP_CLOSE" {
                    self.closed_by_ends
                        .insert((tuple.local.1, tuple.remote.0), tuple);
                }
                let never_opened = matches!(old.as_str(), "TCP_SYN_SENT" | "TCP_SYN_RECV");
                (
                    tuple,
                    Box::new(move |p| {
                        p.orderly |= orderly;
                        p.never_opened |= never_opened;
                        if new == "TCP_CLOSE" {
                            p.ended_at.get_or_insert(at);
                            p.closed_from.get_or_insert(old.into_boxed_str());
                        }
                    }),
                )
            }
            // A reset for a segment no socket took ends no connection; a report of no error (an
            // ICMP error's first word, on some paths) says nothing.
            Event::ResetSent { socket: false, .. } | Event::Error { errno: 0, .. } => return None,
            Event::ResetSent { tuple, reason, .. } => (
                tuple,
                Box::new(move |p| {
                    p.reset_sent.get_or_insert(reason.into_boxed_str());
                }),
            ),
            Event::ResetReceived { tuple, cookie } => (
                tuple,
                Box::new(move |p| {
                    p.reset_received = true;
                    p.cookie = p.cookie.or(cookie);
                }),
            ),
            Event::Error { tuple, errno } => (
                tuple,
                Box::new(move |p| {
                    p.errno.get_or_insert(errno);
                }),
            ),
            Event::Destroy { tuple, cookie } => return self.destroyed(tuple, cookie, at),
        };
        if tuple.remote.1 == 0 {
            // The zeroed form of an aborted socket: attach to its full tuple if known.
            if let Some(full) = self.zeroed_match(&tuple) {
                update(self.pending.get_mut(&full)?);
            }
            return None;
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&tuple) {
            self.forget_oldest();
        }
        let p = self.pending.entry(tuple).or_default();
        p.first_at.get_or_insert(at);
        update(p);
        // Told at the error its application sees (see the module's notes), to be found by its
        // tuple (or a reset's cookie).
        if is_error && p.ended_at.is_some() && !p.told && !p.never_opened {
            p.told = true;
            return Some(p.traced(None, tuple, at));
        }
        None
    }

    fn destroyed(&mut self, tuple: Tuple, cookie: u64, at: SystemTime) -> Option<Traced> {
        let key = if tuple.remote.1 == 0 {
            self.zeroed_match(&tuple)?
        } else {
            tuple
        };
        let p = self.forget(&key).unwrap_or_default();
        if tuple.remote.1 == 0 && p.first_at.is_none() || p.told || p.never_opened {
            return None;
        }
        Some(p.traced(Some(cookie), key, at))
    }

    /// The connection last moved to `CLOSE` with this local port and remote address (the
    /// zeroed form keeps those two), while it is pending.
    fn zeroed_match(&self, zeroed: &Tuple) -> Option<Tuple> {
        if zeroed.remote.0.is_unspecified() || zeroed.local.1 == 0 {
            return None;
        }
        self.closed_by_ends
            .get(&(zeroed.local.1, zeroed.remote.0))
            .copied()
            .filter(|t| self.pending.contains_key(t))
    }

    fn forget(&mut self, tuple: &Tuple) -> Option<Pending> {
        let ends = (tuple.local.1, tuple.remote.0);
        if self.closed_by_ends.get(&ends) == Some(tuple) {
            self.closed_by_ends.remove(&ends);
        }
        self.pending.remove(tuple)
    }

    fn forget_oldest(&mut self) {
        let mut times: Vec<SystemTime> = self.pending.values().filter_map(|p| p.first_at).collect();
        times.sort_unstable();
        if let Some(&cut) = times.get(times.len() / 4) {
            self.pending
                .retain(|_, p| p.first_at.is_some_and(|t| t > cut));
            let pending = &self.pending;
            self.closed_by_ends.retain(|_, t| pending.contains_key(t));
        }
    }

    /// Connections with events pending.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
