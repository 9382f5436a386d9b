//! Tracepoint lines (tracefs's text format) into connection ends.
//!
//! The events carry no namespace, and only some carry the cookie: a connection's events are
//! joined by its 4-tuple until `tcp_destroy_sock` names the cookie. A socket aborted by its own
//! side may be destroyed with its remote port (and local address) zeroed: it is then found by
//! local port and remote address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::SystemTime;

use rustc_hash::FxHashMap;

use super::Cause;

/// The tracepoints read, as `system/event` under tracefs `events/`.
pub const EVENTS: [&str; 5] = [
    "tcp/tcp_receive_reset",
    "tcp/tcp_send_reset",
    "sock/inet_sk_error_report",
    "sock/inet_sock_set_state",
    "tcp/tcp_destroy_sock",
];

/// A connection's two ends, IPv4 as IPv4-mapped IPv6 (the events' `saddrv6` form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub local: (Ipv6Addr, u16),
    pub remote: (Ipv6Addr, u16),
}

/// One event line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StateChange {
        tuple: Tuple,
        old: String,
        new: String,
    },
    ResetSent {
        tuple: Tuple,
        reason: String,
    },
    ResetReceived {
        tuple: Tuple,
        cookie: Option<u64>,
    },
    Error {
        tuple: Tuple,
        errno: i32,
    },
    Destroy {
        tuple: Tuple,
        cookie: u64,
    },
}

/// A connection's end as the tracepoints told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// The socket's cookie; `None` for an end told before its socket was destroyed (a
    /// socket its application still holds), found by its tuple.
    pub cookie: Option<u64>,
    pub tuple: Tuple,
    pub cause: Cause,
    /// The errno its application saw (ETIMEDOUT 110, ECONNRESET 104, ECONNABORTED 103, …).
    pub errno: Option<i32>,
    /// The kernel's reason for a reset this side sent (`TCP_KEEPALIVE_TIMEOUT`, …).
    pub reset_reason: Option<Box<str>>,
    /// When the kernel ended it (its move to `CLOSE`), else when it was destroyed.
    pub at: SystemTime,
}

impl Tuple {
    /// The tuple of a socket's two inet ends.
    pub fn of(local: crate::model::InetAddr, remote: crate::model::InetAddr) -> Tuple {
        Tuple {
            local: (mapped(local.ip()), local.port()),
            remote: (mapped(remote.ip()), remote.port()),
        }
    }

    /// A 4-byte digest, what a retired socket keeps to be met by its end (never 0).
    pub fn hash32(&self) -> u32 {
        use std::hash::BuildHasher;
        let d = rustc_hash::FxBuildHasher.hash_one(self);
        ((d >> 32) as u32 ^ d as u32).max(1)
    }
}

fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// `key=value` fields after the event name; values hold no spaces in these formats.
fn fields(rest: &str) -> impl Iterator<Item = (&str, &str)> {
    rest.split_ascii_whitespace()
        .filter_map(|f| f.split_once('='))
}

fn tuple_of(rest: &str) -> Option<Tuple> {
    let (mut sport, mut dport, mut saddr, mut daddr) = (None, None, None, None);
    for (k, v) in fields(rest) {
        match k {
            "sport" => sport = v.parse::<u16>().ok(),
            "dport" => dport = v.parse::<u16>().ok(),
            "saddrv6" => saddr = v.parse::<Ipv6Addr>().ok(),
            "daddrv6" => daddr = v.parse::<Ipv6Addr>().ok(),
            // `src=1.2.3.4:80`, `dest=[::1]:80` (tcp_send_reset).
            "src" => {
                let a = v.parse::<SocketAddr>().ok()?;
                (saddr, sport) = (Some(mapped(a.ip())), Some(a.port()));
            }
            "dest" => {
                let a = v.parse::<SocketAddr>().ok()?;
                (daddr, dport) = (Some(mapped(a.ip())), Some(a.port()));
            }
            _ => {}
        }
    }
    Some(Tuple {
        local: (saddr?, sport?),
        remote: (daddr?, dport?),
    })
}

fn field<'a>(rest: &'a str, key: &str) -> Option<&'a str> {
    fields(rest).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Parses one line of `trace_pipe`; `None` for other events, comments and garbled lines.
pub fn parse(line: &str) -> Option<Event> {
    // `  task-pid  [cpu] flags  timestamp: event: fields`
    let (_, after) = line.split_once(']')?;
    let (event, rest) = [
        "inet_sock_set_state",
        "tcp_send_reset",
        "tcp_receive_reset",
        "inet_sk_error_report",
        "tcp_destroy_sock",
    ]
    .into_iter()
    .find_map(|name| {
        let (_, rest) = after.split_once(&format!(" {name}: "))?;
        Some((name, rest))
    })?;
    if event == "inet_sock_set_state" || event == "inet_sk_error_report" {
        // TCP only (the events also fire for SCTP and MPTCP).
        if field(rest, "protocol")? != "IPPROTO_TCP" {
            return None;
        }
    }
    let tuple = tuple_of(rest)?;
    Some(match event {
        "inet_sock_set_state" => Event::StateChange {
            tuple,
            old: field(rest, "oldstate")?.to_string(),
            new: field(rest, "newstate")?.to_string(),
        },
        "tcp_send_reset" => Event::ResetSent {
            tuple,
            reason: field(rest, "reason").unwrap_or("?").to_string(),
        },
        "tcp_receive_reset" => Event::ResetReceived {
            tuple,
            cookie: field(rest, "sock_cookie").and_then(|c| u64::from_str_radix(c, 16).ok()),
        },
        "inet_sk_error_report" => Event::Error {
            tuple,
            errno: field(rest, "error")?.parse().ok()?,
        },
        _ => Event::Destroy {
            tuple,
            cookie: u64::from_str_radix(field(rest, "sock_cookie")?, 16).ok()?,
        },
    })
}

/// What the events said so far about one connection on its way out.
#[derive(Debug, Clone, Default)]
struct Pending {
    orderly: bool,
    reset_received: bool,
    reset_sent: Option<Box<str>>,
    errno: Option<i32>,
    ended_at: Option<SystemTime>,
    first_at: Option<SystemTime>,
    cookie: Option<u64>,
    /// Told already (at the error its application sees), before the destroy.
    told: bool,
}

impl Pending {
    fn traced(&self, cookie: Option<u64>, tuple: Tuple, at: SystemTime) -> Traced {
        Traced {
            cookie: cookie.or(self.cookie),
            tuple,
            cause: self.cause(),
            errno: self.errno,
            reset_reason: self.reset_sent.clone(),
            at: self.ended_at.unwrap_or(at),
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
        } else if self.orderly {
            Cause::Closed
        } else {
            Cause::Unknown
        }
    }
}

/// Entries kept for connections on their way out (a bound: a held-dead socket may never be
/// destroyed while katop runs, and resets from `TIME_WAIT` have no socket to destroy).
const MAX_PENDING: usize = 65_536;

/// What an event does to its connection's record.
type Update = Box<dyn FnOnce(&mut Pending)>;

/// Joins events into ends, one [`Traced`] per destroyed connection.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: FxHashMap<Tuple, Pending>,
    /// (local port, remote address) → a pending tuple with them: how a zeroed tuple is found
    /// without a scan of every pending one.
    by_ends: FxHashMap<(u16, Ipv6Addr), Tuple>,
}

impl Tracker {
    /// Takes one event seen at `at`; a destroyed connection's end comes back.
    pub fn feed(&mut self, event: Event, at: SystemTime) -> Option<Traced> {
        let is_error = matches!(event, Event::Error { .. });
        let (tuple, update): (Tuple, Update) = match event {
            Event::StateChange { tuple, old, new } => {
                let orderly = matches!(new.as_str(), "TCP_FIN_WAIT1" | "TCP_CLOSE_WAIT");
                if !orderly && new != "TCP_CLOSE" {
                    return None;
                }
                // A listener or an unconnected socket closing is no connection's end.
                if old == "TCP_LISTEN" || old == "TCP_SYN_SENT" && tuple.remote.1 == 0 {
                    return None;
                }
                (
                    tuple,
                    Box::new(move |p| {
                        p.orderly |= orderly;
                        if new == "TCP_CLOSE" {
                            p.ended_at.get_or_insert(at);
                        }
                    }),
                )
            }
            Event::ResetSent { tuple, reason } => (
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
        let p = self.pending.entry(tuple).or_insert_with(|| {
            self.by_ends.insert((tuple.local.1, tuple.remote.0), tuple);
            Pending::default()
        });
        p.first_at.get_or_insert(at);
        update(p);
        // The error the application sees comes after the move to CLOSE: the kernel has ended
        // the connection, though the application may hold the socket (and so its destroy)
        // for hours. Told now, to be found by its tuple (or a reset's cookie).
        if is_error && p.ended_at.is_some() && !p.told {
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
        if tuple.remote.1 == 0 && p.first_at.is_none() || p.told {
            return None;
        }
        Some(p.traced(Some(cookie), key, at))
    }

    /// A pending connection with this local port and remote address (the zeroed form keeps
    /// those two).
    fn zeroed_match(&self, zeroed: &Tuple) -> Option<Tuple> {
        if zeroed.remote.0.is_unspecified() || zeroed.local.1 == 0 {
            return None;
        }
        self.by_ends
            .get(&(zeroed.local.1, zeroed.remote.0))
            .copied()
    }

    fn forget(&mut self, tuple: &Tuple) -> Option<Pending> {
        let ends = (tuple.local.1, tuple.remote.0);
        if self.by_ends.get(&ends) == Some(tuple) {
            self.by_ends.remove(&ends);
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
            self.by_ends.retain(|_, t| pending.contains_key(t));
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
#[path = "trace_tests.rs"]
mod tests;
