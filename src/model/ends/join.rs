//! Each connection that left the table gets its end: the tracepoints' verdict when one came
//! (joined by cookie, or by the connection's 4-tuple for an end told before its socket was
//! destroyed), else the last poll's inference; ends traced for connections no poll saw (born
//! and dead between two polls) are kept too.
//!
//! The collector drains the tracepoints before it dumps the sockets, so a verdict for a
//! socket katop saw meets that socket's leaving in the same poll, or finds it still listed
//! (its `TIME_WAIT` after-life, or a namespace read less often).

use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxHashMap;

use super::trace::{Traced, Tuple};
use super::{infer, Cause, CauseSource, LastSeen};
use crate::model::{Endpoint, Proto, RawSock, SockState, TimerKind};

/// How long a gone socket waits for a verdict (the trace reader runs beside the poll, and
/// lags it by up to a fraction of a second), at least one poll more.
pub const GRACE: Duration = Duration::from_secs(1);

/// How long a cookie told while still listed is remembered, so its leaving later is silent.
const KEEP_TOLD: Duration = Duration::from_secs(300);

/// A connection that ended, with why.
#[derive(Debug, Clone)]
pub struct Ended {
    pub cookie: Option<u64>,
    /// The last poll's view of it (without its timer, queues, options and `tcp_info` when the
    /// table was retired with [`crate::model::Keep::Ends`]); `None` for a connection no poll
    /// saw, or one a poll saw only as the exporter's few bytes.
    pub sock: Option<RawSock>,
    /// Its ends as the tracepoints gave them, for one without `sock`.
    pub tuple: Option<Tuple>,
    pub cause: Cause,
    pub source: CauseSource,
    /// The errno its application saw, where traced.
    pub errno: Option<i32>,
    /// The kernel's reason for a reset this side sent, where traced.
    pub reset_reason: Option<Box<str>>,
    /// When it ended (traced), or when katop noticed it gone.
    pub at: SystemTime,
    /// When katop first saw it, for its lifetime (at least this long).
    pub first_seen: Option<SystemTime>,
    /// Its byte counters as the last poll saw them.
    pub bytes: Bytes,
}

/// A connection's byte counters (`tcpi_bytes_acked`, `tcpi_bytes_received`), 16 bytes where
/// two `Option<u64>` take 32: every socket carries them from one poll to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes {
    sent: u64,
    received: u64,
}

impl Bytes {
    const UNKNOWN: u64 = u64::MAX;

    pub const NONE: Bytes = Bytes {
        sent: Self::UNKNOWN,
        received: Self::UNKNOWN,
    };

    /// What the kernel reported of a socket (nothing without `tcp_info`, or a short one).
    pub fn of(sock: &RawSock) -> Bytes {
        let info = sock.tcp_info.as_ref();
        let known = |v: Option<u64>| v.unwrap_or(Self::UNKNOWN);
        Bytes {
            sent: known(info.and_then(crate::model::tcp_info::TcpInfo::bytes_acked)),
            received: known(info.and_then(crate::model::tcp_info::TcpInfo::bytes_received)),
        }
    }

    /// Bytes sent and acknowledged by the peer.
    pub fn sent(self) -> Option<u64> {
        Some(self.sent).filter(|&v| v != Self::UNKNOWN)
    }

    pub fn received(self) -> Option<u64> {
        Some(self.received).filter(|&v| v != Self::UNKNOWN)
    }
}

/// A socket the table let go this poll.
#[derive(Debug, Clone)]
pub struct Gone {
    pub cookie: u64,
    /// [`Tuple::hash32`] of its ends, to meet an end told by tuple.
    pub tuple_hash: u32,
    pub sock: Option<RawSock>,
    pub last: LastSeen,
    pub bytes: Bytes,
    pub first_seen: Option<SystemTime>,
    /// Whether katop saw it change state (alive before its last state), not only as it left.
    pub seen_alive: bool,
}

/// Whether a socket's leaving is a connection's end (not a listener, a request socket, UDP…).
pub fn is_connection(sock: &RawSock) -> bool {
    sock.proto == Proto::Tcp
        && !matches!(
            sock.state,
            SockState::Listen | SockState::SynRecv | SockState::Close
        )
        && sock.remote.port().unwrap_or(0) != 0
}

/// The 4-tuple of an inet socket, as the tracepoints give it.
pub fn tuple_of(sock: &RawSock) -> Option<Tuple> {
    match (&sock.local, &sock.remote) {
        (Endpoint::Inet(l), Endpoint::Inet(r)) => Some(Tuple::of(*l, *r)),
        _ => None,
    }
}

/// What the last poll saw that hints at a cause.
pub fn last_seen(sock: &RawSock) -> LastSeen {
    let info = sock.tcp_info.as_ref();
    let probing = sock.timer.is_some_and(|t| t.kind == TimerKind::Keepalive);
    LastSeen {
        state: sock.state,
        probes: info
            .and_then(crate::model::tcp_info::TcpInfo::probes)
            .filter(|_| probing)
            .unwrap_or(0),
        retransmits: info
            .and_then(crate::model::tcp_info::TcpInfo::retransmits)
            .unwrap_or(0),
    }
}

impl Gone {
    /// A connection socket the table let go, or `None` for a socket whose leaving ends none.
    pub fn of(sock: &RawSock, first_seen: SystemTime, seen_alive: bool) -> Option<Gone> {
        is_connection(sock).then(|| Gone {
            cookie: sock.cookie.0,
            tuple_hash: tuple_of(sock).map_or(0, |t| t.hash32()),
            sock: Some(sock.clone()),
            last: last_seen(sock),
            bytes: Bytes::of(sock),
            first_seen: Some(first_seen),
            seen_alive,
        })
    }
}

/// Gone sockets waiting for a verdict, verdicts waiting for their socket: indexed by cookie and
/// by tuple digest, so a burst of thousands of ends joins in linear time.
#[derive(Debug, Default, Clone)]
pub struct Departures {
    /// Gone sockets by cookie, with when they left and whether a poll has passed since.
    waiting: FxHashMap<u64, (Gone, Instant, bool)>,
    /// Tuple digest → cookie of a waiting socket.
    waiting_by_tuple: FxHashMap<u32, u64>,
    /// Ends told by tuple alone, by tuple digest, waiting to meet their socket.
    by_tuple: FxHashMap<u32, (Traced, Instant, bool)>,
    /// Cookies told while still listed: their leaving is not told again.
    told: FxHashMap<u64, Instant>,
}

impl Departures {
    /// One poll's departures. `gone` left the table; `traced` are the tracepoints' new verdicts,
    /// `None` when no tracepoints are read (every cause is then inferred at once); `listed`
    /// gives a listed cookie's connection as the poll before its end saw it; `now` and `wall`
    /// are the poll's time by both clocks.
    pub fn step(
        &mut self,
        gone: Vec<Gone>,
        traced: Option<Vec<Traced>>,
        listed: impl Fn(u64) -> Option<Gone>,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Ended> {
        let mut out = Vec::new();
        let tracing = traced.is_some();
        for (_, _, polled) in self.waiting.values_mut() {
            *polled = true;
        }
        for (_, _, polled) in self.by_tuple.values_mut() {
            *polled = true;
        }
        for g in gone {
            if self.told.remove(&g.cookie).is_some() {
                continue;
            }
            // Traced, a connection's end comes when it enters TIME_WAIT (told, so skipped
            // above): a TIME_WAIT's leaving ends nothing, unless katop saw the connection alive
            // and no end was told (events lost).
            if tracing && g.last.state == SockState::TimeWait && !g.seen_alive {
                continue;
            }
            let told = (g.tuple_hash != 0)
                .then(|| self.by_tuple.remove(&g.tuple_hash))
                .flatten();
            if let Some((t, _, _)) = told {
                out.push(traced_end(t, g));
            } else {
                if g.tuple_hash != 0 {
                    self.waiting_by_tuple.insert(g.tuple_hash, g.cookie);
                }
                self.waiting.insert(g.cookie, (g, now, false));
            }
        }
        for t in traced.unwrap_or_default() {
            let cookie = t
                .cookie
                .or_else(|| self.waiting_by_tuple.get(&t.tuple.hash32()).copied());
            if let Some((g, _, _)) = cookie.and_then(|c| self.waiting.remove(&c)) {
                self.waiting_by_tuple.remove(&g.tuple_hash);
                out.push(traced_end(t, g));
            } else if let Some(g) = t.cookie.and_then(&listed) {
                self.told.insert(g.cookie, now);
                out.push(traced_end(t, g));
            } else if t.cookie.is_some() {
                out.push(unseen_end(t));
            } else {
                self.by_tuple.insert(t.tuple.hash32(), (t, now, false));
            }
        }
        let due =
            |since: Instant, polled: bool| polled && now.saturating_duration_since(since) >= GRACE;
        let mut inferred: Vec<Ended> = Vec::new();
        let by_tuple = &mut self.waiting_by_tuple;
        self.waiting.retain(|_, (g, since, polled)| {
            if tracing && !due(*since, *polled) {
                return true;
            }
            by_tuple.remove(&g.tuple_hash);
            inferred.push(Ended {
                cookie: Some(g.cookie),
                sock: g.sock.take(),
                tuple: None,
                cause: infer(g.last),
                source: CauseSource::Inferred,
                errno: None,
                reset_reason: None,
                at: wall,
                first_seen: g.first_seen,
                bytes: g.bytes,
            });
            false
        });
        let mut unmet: Vec<Ended> = Vec::new();
        self.by_tuple.retain(|_, (t, since, polled)| {
            if !due(*since, *polled) {
                return true;
            }
            unmet.push(unseen_end(t.clone()));
            false
        });
        // In a stable order (the maps have none).
        inferred.sort_by_key(|e| e.cookie);
        unmet.sort_by_key(|e| e.at);
        out.append(&mut inferred);
        out.append(&mut unmet);
        self.told
            .retain(|_, at| now.saturating_duration_since(*at) < KEEP_TOLD);
        out
    }
}

/// The end the tracepoints told. When they saw only the destroy (events lost, or an end begun
/// before katop watched), the cause is the last poll's inference, or unknown: never passed off
/// as the tracepoints' word.
fn traced_end(t: Traced, g: Gone) -> Ended {
    let (cause, source) = if t.evidence {
        (t.cause, CauseSource::Tracepoint)
    } else {
        (infer(g.last), CauseSource::Inferred)
    };
    Ended {
        cookie: t.cookie.or(Some(g.cookie)),
        tuple: g.sock.is_none().then_some(t.tuple),
        sock: g.sock,
        cause,
        source,
        errno: t.errno,
        reset_reason: t.reset_reason,
        at: t.at,
        first_seen: g.first_seen,
        bytes: g.bytes,
    }
}

/// The end the tracepoints told of a connection no poll saw.
fn unseen_end(t: Traced) -> Ended {
    let (cause, source) = if t.evidence {
        (t.cause, CauseSource::Tracepoint)
    } else {
        (Cause::Unknown, CauseSource::Inferred)
    };
    Ended {
        cookie: t.cookie,
        tuple: Some(t.tuple),
        sock: None,
        cause,
        source,
        errno: t.errno,
        reset_reason: t.reset_reason,
        at: t.at,
        first_seen: None,
        bytes: Bytes::NONE,
    }
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
