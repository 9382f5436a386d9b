//! Tracepoint lines (tracefs's text format) into connection ends.
//!
//! The events carry no namespace, and only some carry the cookie: a connection's events are
//! joined by its 4-tuple until `tcp_destroy_sock` names the cookie. A socket aborted by its own
//! side may be destroyed with its remote port (and local address) zeroed: it is then found by
//! local port and remote address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub use super::tracker::{Traced, Tracker};

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
        /// Sent by a socket (not for a segment no socket took: `NO_SOCKET`).
        socket: bool,
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

impl Tuple {
    /// Its local end as a socket address (IPv4 unmapped).
    pub fn local_addr(&self) -> SocketAddr {
        unmapped(self.local)
    }

    /// Its remote end as a socket address (IPv4 unmapped).
    pub fn remote_addr(&self) -> SocketAddr {
        unmapped(self.remote)
    }

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

fn unmapped((ip, port): (Ipv6Addr, u16)) -> SocketAddr {
    SocketAddr::new(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4), port)
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
    // `  task-pid  [cpu] flags  timestamp: event: fields`: the event is the word before the
    // second ": " after the CPU (the task's name, before it, may hold anything).
    let (_, after) = line.split_once("] ")?;
    let (_, rest) = after.split_once(": ")?;
    let (event, rest) = rest.split_once(": ")?;
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
        "tcp_send_reset" => {
            let reason = field(rest, "reason").unwrap_or("?");
            let no_socket = field(rest, "skaddr").is_some_and(|a| a.bytes().all(|b| b == b'0'));
            Event::ResetSent {
                tuple,
                reason: reason.to_string(),
                socket: !no_socket && reason != "NO_SOCKET",
            }
        }
        "tcp_receive_reset" => Event::ResetReceived {
            tuple,
            cookie: field(rest, "sock_cookie").and_then(|c| u64::from_str_radix(c, 16).ok()),
        },
        "inet_sk_error_report" => Event::Error {
            tuple,
            errno: field(rest, "error")?.parse().ok()?,
        },
        "tcp_destroy_sock" => Event::Destroy {
            tuple,
            cookie: u64::from_str_radix(field(rest, "sock_cookie")?, 16).ok()?,
        },
        _ => return None,
    })
}

#[cfg(test)]
#[path = "trace_tests.rs"]
mod tests;
