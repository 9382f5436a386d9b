//! Each socket's real keepalive settings and what follows from them: when the kernel would
//! notice a dead peer, and whether a middlebox (load balancer, NAT, firewall) between here and
//! the peer forgets an idle connection before keepalive sends anything.
//!
//! Pure: the options are read by `collector::sockopts`; times are relative to the poll.

use std::fmt;

use serde::Serialize;

use crate::model::addr::{parse as parse_addr, AddrPat};
use crate::model::duration::{format_secs, parse_ms};
use crate::model::retransmit::{self, InFlight};
use crate::model::wheel::{Late, Wheel};
use crate::model::{
    Endpoint, Keepalive, KernelSettings, Proto, RawSock, SockState, Timer, TimerKind,
};

/// Linux's defaults (`include/net/tcp.h`), for when a sysctl cannot be read.
const DEFAULT_TIME_S: u32 = 7200;
const DEFAULT_INTVL_S: u32 = 75;
const DEFAULT_PROBES: u32 = 9;
const DEFAULT_RETRIES2: u32 = 15;

/// A socket's options as read from it (`getsockopt` on a duplicate of its owner's fd), 12 bytes
/// in every socket. `read: false` means nothing was read (no owner visible, not permitted, or
/// not yet): the namespace's sysctls then stand in, marked as defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SockOpts {
    /// `TCP_USER_TIMEOUT`, ms; 0 is unset.
    pub user_timeout_ms: u32,
    /// `TCP_KEEPIDLE`, s (the kernel caps it at 32767).
    pub idle_s: u16,
    /// `TCP_KEEPINTVL`, s (capped at 32767).
    pub intvl_s: u16,
    /// `TCP_KEEPCNT` (capped at 127).
    pub cnt: u8,
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    pub read: bool,
}

/// Where a socket's keepalive values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Read from the socket itself.
    Socket,
    /// Not readable: the namespace's sysctls, which apply unless the application set its own.
    SysctlDefault,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Socket => "socket",
            Source::SysctlDefault => "sysctl-default",
        }
    }
}

/// The keepalive settings that govern one TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `SO_KEEPALIVE`; from the armed timer when not read, `None` when that does not tell.
    pub enabled: Option<bool>,
    pub idle_s: u32,
    pub intvl_s: u32,
    pub cnt: u32,
    /// 0: unset.
    pub user_timeout_ms: u32,
    pub source: Source,
}

impl Params {
    /// `None` where keepalive does not apply: not TCP, `TIME_WAIT`, a request socket.
    pub fn of(sock: &RawSock, settings: &KernelSettings) -> Option<Params> {
        if sock.proto != Proto::Tcp
            || matches!(sock.state, SockState::TimeWait | SockState::SynRecv)
        {
            return None;
        }
        let o = sock.opts;
        if o.read {
            return Some(Params {
                enabled: Some(o.keepalive),
                idle_s: o.idle_s.into(),
                intvl_s: o.intvl_s.into(),
                cnt: o.cnt.into(),
                user_timeout_ms: o.user_timeout_ms,
                source: Source::Socket,
            });
        }
        Some(Params {
            enabled: match Keepalive::of(sock) {
                Some(Keepalive::On) => Some(true),
                Some(Keepalive::Off) => Some(false),
                _ => None,
            },
            idle_s: settings.keepalive_time_s.unwrap_or(DEFAULT_TIME_S),
            intvl_s: settings.keepalive_intvl_s.unwrap_or(DEFAULT_INTVL_S),
            cnt: settings.keepalive_probes.unwrap_or(DEFAULT_PROBES),
            user_timeout_ms: 0,
            source: Source::SysctlDefault,
        })
    }
}

/// When the kernel would notice a peer that went silent at the poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// Keepalive is off and nothing is in flight: not until the application writes (then
    /// retransmissions time out).
    Never,
    /// The peer advertises a zero window: while it answers the window probes the kernel keeps
    /// the connection open indefinitely (`tcp_probe_timer`; no `TCP_USER_TIMEOUT` to end it).
    ZeroWindow,
    InMs(u64),
}

/// What a countdown rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// The socket's own settings and the kernel's timers and clocks.
    Socket,
    /// The socket's settings could not be read: the namespace's sysctls stand in, which are
    /// right only if the application set none of its own.
    SysctlDefault,
    /// How long unacknowledged data has been retransmitted (or the window closed) is
    /// estimated from the retransmit count and the RTO.
    Estimate,
}

impl Basis {
    pub fn name(self) -> &'static str {
        match self {
            Basis::Socket => "socket",
            Basis::SysctlDefault => "sysctl-default",
            Basis::Estimate => "estimate",
        }
    }
}

/// A dead-peer countdown and what it rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Countdown {
    /// The expected moment (for a keepalive countdown, the timer wheel's expected lateness
    /// included).
    pub detect: Detect,
    pub basis: Basis,
    /// When it counts: the earliest and latest the kernel's timer wheel allows, in ms from
    /// the poll; `None` where no timer's rounding is modelled.
    pub spread: Option<(u64, u64)>,
}

impl Countdown {
    /// Shown as an estimate (`~`): not everything it rests on was read.
    pub fn is_estimate(&self) -> bool {
        self.basis != Basis::Socket
    }

    /// A countdown without a modelled spread.
    pub fn new(detect: Detect, basis: Basis) -> Countdown {
        Countdown {
            detect,
            basis,
            spread: None,
        }
    }

    /// The same countdown `ms` later.
    #[must_use]
    pub fn after(self, ms: u64) -> Countdown {
        Countdown {
            detect: match self.detect {
                Detect::InMs(left) => Detect::InMs(left.saturating_sub(ms)),
                other => other,
            },
            spread: self
                .spread
                .map(|(lo, hi)| (lo.saturating_sub(ms), hi.saturating_sub(ms))),
            ..self
        }
    }
}

/// If the peer of an `ESTABLISHED` connection went silent at the poll, when the kernel would
/// drop it, as `net/ipv4/tcp_timer.c` does it (README, "Keepalive insight"). `None` where
/// unknown or not applicable.
///
/// - Data in flight: retransmissions time out ([`retransmit`]), counted from the first
///   retransmission, not from the peer's last packet.
/// - A zero window: the peer keeps it open by answering window probes, unless a user timeout
///   ends it.
/// - Keepalive: the timer re-arms lazily (`tcp_keepalive_timer`): a firing before the peer has
///   been silent for `TCP_KEEPIDLE` only waits out the rest, so the first probe goes at the
///   later of the armed expiry and the peer's last segment + idle. Then a probe every
///   interval, and the check after the `TCP_KEEPCNT`th drops it; with `TCP_USER_TIMEOUT`
///   the count is ignored and the first check after a probe at which the silence has lasted
///   the user timeout drops it. Silence is the time since the last segment from the peer,
///   data or ACK (`keepalive_time_elapsed`).
pub fn dead_peer_detect(
    sock: &RawSock,
    p: &Params,
    settings: &KernelSettings,
) -> Option<Countdown> {
    if sock.state != SockState::Established {
        return None;
    }
    let info = sock.tcp_info.as_ref()?;
    let read = match p.source {
        Source::Socket => Basis::Socket,
        Source::SysctlDefault => Basis::SysctlDefault,
    };
    let user_timeout = u64::from(p.user_timeout_ms);
    let in_flight = |timer: Timer, retransmits: u32, rto_us: u64| {
        let f = InFlight {
            expires_ms: timer.expires_ms.into(),
            retransmits,
            rto_us,
            since_first_ms: None,
            rtt_us: info.rtt().unwrap_or(0).into(),
            rttvar_us: info.rttvar().unwrap_or(0).into(),
        };
        (f, settings.retries2.unwrap_or(DEFAULT_RETRIES2))
    };
    let rto_max = settings
        .rto_max_ms
        .map_or(retransmit::RTO_MAX_MS, u64::from);
    let estimated = |e: bool| match read {
        Basis::Socket if e => Basis::Estimate,
        b => b,
    };
    match sock.timer {
        Some(t) if t.kind == TimerKind::Retransmit => {
            let (mut f, retries2) = in_flight(t, t.retrans.into(), info.rto()?.into());
            f.since_first_ms = info.rto_recovery_ms().map(u64::from);
            let a = f.abort(user_timeout, retries2, rto_max);
            return Some(Countdown::new(
                Detect::InMs(a.in_ms),
                estimated(a.estimated),
            ));
        }
        Some(t) if t.kind == TimerKind::Probe0 => {
            if user_timeout == 0 {
                return Some(Countdown::new(Detect::ZeroWindow, read));
            }
            // The user timeout counts from the first window probe; each probe backs the
            // interval off from the RTO, so the backoff counts the probes sent.
            let backoff = info.backoff().unwrap_or(0);
            let base = u64::from(info.rto()?).max(retransmit::RTO_MIN_MS * 1000);
            let wait = base
                .checked_shl(backoff.into())
                .unwrap_or(u64::MAX)
                .min(rto_max * 1000);
            let (f, retries2) = in_flight(t, backoff.into(), wait);
            let a = f.abort(user_timeout, retries2, rto_max);
            return Some(Countdown::new(
                Detect::InMs(a.in_ms),
                estimated(a.estimated),
            ));
        }
        _ => {}
    }
    match p.enabled {
        Some(false) => return Some(Countdown::new(Detect::Never, read)),
        None => return None,
        Some(true) => {}
    }
    keepalive_countdown(sock, p, settings, read)
}

/// The keepalive part of [`dead_peer_detect`]: keepalive on, nothing in flight.
fn keepalive_countdown(
    sock: &RawSock,
    p: &Params,
    settings: &KernelSettings,
    read: Basis,
) -> Option<Countdown> {
    let info = sock.tcp_info.as_ref()?;
    let user_timeout = u64::from(p.user_timeout_ms);
    let silent = u64::from(info.silent_ms()?);
    let idle = u64::from(p.idle_s) * 1000;
    let intvl = (u64::from(p.intvl_s) * 1000).max(1);
    let ka = sock.timer.filter(|t| t.kind == TimerKind::Keepalive);
    let probes = u64::from(ka.map_or(0, |t| t.retrans));
    let armed = ka.map_or(0, |t| u64::from(t.expires_ms));
    let ms = if probes == 0 {
        let first = idle.saturating_sub(silent).max(armed);
        if user_timeout == 0 {
            first.saturating_add(u64::from(p.cnt).saturating_mul(intvl))
        } else {
            let short = user_timeout.saturating_sub(silent + first);
            first.saturating_add(short.div_ceil(intvl).max(1).saturating_mul(intvl))
        }
    } else if user_timeout == 0 {
        armed.saturating_add(
            u64::from(p.cnt)
                .saturating_sub(probes)
                .saturating_mul(intvl),
        )
    } else {
        let short = user_timeout.saturating_sub(silent + armed);
        armed.saturating_add(short.div_ceil(intvl).saturating_mul(intvl))
    };
    if user_timeout > 0 {
        // (The user timeout ends it at a check: the wheel's rounding moves which one; not
        // modelled.)
        return Some(Countdown::new(Detect::InMs(ms), read));
    }
    let wheel = Wheel {
        // (Kernels tick 100 to 1000 times a second; anything else read is not believed.)
        hz: settings
            .hz
            .filter(|hz| (24..=10_000).contains(hz))
            .unwrap_or(DEFAULT_HZ),
    };
    let late = keepalive_lateness(
        wheel,
        (idle, intvl, u64::from(p.cnt)),
        (silent, armed, probes),
    );
    let at = |extra: f64| ms.saturating_add(extra.round() as u64);
    Some(Countdown {
        detect: Detect::InMs(at(late.mean_ms)),
        basis: read,
        spread: Some((at(late.min_ms), at(late.max_ms))),
    })
}

/// The kernel's tick where `/proc/config.gz` does not say: Debian's and most distributions'.
pub const DEFAULT_HZ: u32 = 250;

/// How late the timer wheel makes the keepalive timers still to fire before the drop
/// ([`Wheel`]): the armed one (its arming moment unknown, unless a probe timer re-armed it
/// from its callback), a lazy re-arm when the armed one fires before the peer has been silent
/// `TCP_KEEPIDLE`, and one per probe interval (each re-armed from the last one's callback).
fn keepalive_lateness(
    wheel: Wheel,
    (idle, intvl, cnt): (u64, u64, u64),
    (silent, armed, probes): (u64, u64, u64),
) -> Late {
    // A timer already past its expiry but not yet fired (its bucket not reached) is reported
    // as expiring now: of its lateness, anything from none to all is still to come.
    let pending = |l: Late| {
        if armed == 0 {
            Late {
                min_ms: 0.0,
                max_ms: l.max_ms,
                mean_ms: l.max_ms / 2.0,
            }
        } else {
            l
        }
    };
    if probes > 0 {
        // The armed timer is a probe interval, re-armed from a callback: the first one after
        // the idle timer, or one after another probe interval.
        let aligned = probes >= 2 || wheel.aligned_after(idle, intvl);
        let rest = cnt.saturating_sub(probes);
        let first = pending(wheel.late(intvl, aligned));
        return first + wheel.late(intvl, true) * rest;
    }
    // The idle timer, armed at the handshake or by setsockopt: anywhere.
    let mut late = pending(wheel.late(idle, false));
    let mut last = idle;
    let wait = idle.saturating_sub(silent);
    if wait > armed {
        // It fires early and re-arms for the rest of the idle time.
        let rest = wait - armed;
        late = late + wheel.late(rest, false);
        last = rest;
    }
    let first = wheel.aligned_after(last, intvl);
    if cnt == 0 {
        return late;
    }
    late + wheel.late(intvl, first) + wheel.late(intvl, true) * (cnt - 1)
}

/// Something between this host and its peers that forgets idle connections: a load balancer,
/// a NAT gateway, a firewall, the local conntrack table.
#[derive(Debug, Clone, PartialEq)]
pub struct Middlebox {
    pub name: String,
    /// Which peers it sits in front of; `None`: all.
    pub dest: Option<AddrPat>,
    pub timeout_s: u32,
    /// The declaration as given, for messages.
    pub spec: String,
}

/// Well-known idle timeouts, usable by name (`--middlebox-timeout aws-nlb`).
pub const KNOWN_MIDDLEBOXES: [(&str, u32); 5] = [
    ("aws-nlb", 350),
    ("aws-nat-gateway", 350),
    ("azure-lb", 240),
    ("gcp-cloud-nat", 1200),
    ("gcp-lb", 600),
];

impl Middlebox {
    /// `[DEST=]TIMEOUT` where DEST is an address, CIDR, `:port` or `[v6]:port` and TIMEOUT a
    /// duration or a known name (`aws-nlb`); `name` labels it in messages.
    pub fn parse(name: Option<&str>, spec: &str) -> Result<Middlebox, String> {
        let (dest, timeout) = match spec.rsplit_once('=') {
            Some((d, t)) => (Some(d.trim()), t.trim()),
            None => (None, spec.trim()),
        };
        let dest = dest
            .map(|d| {
                parse_addr(d).ok_or_else(|| {
                    format!(
                        "'{d}' is not a destination (an address, CIDR like 10.0.0.0/8, or :port)"
                    )
                })
            })
            .transpose()?;
        let known = KNOWN_MIDDLEBOXES.iter().find(|(n, _)| *n == timeout);
        let timeout_s = if let Some((_, s)) = known {
            *s
        } else {
            let ms = parse_ms(timeout).map_err(|_| {
                let names: Vec<&str> = KNOWN_MIDDLEBOXES.iter().map(|(n, _)| *n).collect();
                format!(
                    "'{timeout}' is neither a duration like 350s nor a known middlebox ({})",
                    names.join(", ")
                )
            })?;
            if ms < 1000 {
                return Err(format!("'{timeout}': a middlebox timeout is at least 1s"));
            }
            u32::try_from(ms / 1000).unwrap_or(u32::MAX)
        };
        Ok(Middlebox {
            name: name
                .or(known.map(|(n, _)| *n))
                .map_or_else(|| "the middlebox".to_string(), str::to_string),
            dest,
            timeout_s,
            spec: spec.to_string(),
        })
    }

    pub fn applies_to(&self, remote: &Endpoint) -> bool {
        self.dest.as_ref().is_none_or(|d| d.matches(remote))
    }
}

impl fmt::Display for Middlebox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}'s {} idle timeout",
            self.name,
            format_secs(self.timeout_s.into())
        )
    }
}

/// The tightest middlebox in front of `remote`, if any.
pub fn middlebox_for<'a>(mbs: &'a [Middlebox], remote: &Endpoint) -> Option<&'a Middlebox> {
    mbs.iter()
        .filter(|m| m.applies_to(remote))
        .min_by_key(|m| m.timeout_s)
}

/// Why an idle connection is at risk of being forgotten by a middlebox.
#[derive(Debug, Clone, PartialEq)]
pub struct AtRisk<'a> {
    pub middlebox: &'a Middlebox,
    /// ms since any segment moved either way.
    pub silent_ms: u64,
    /// `None`: keepalive off; else its idle time, which is not shorter than the timeout.
    pub keepalive_idle_s: Option<u32>,
}

impl fmt::Display for AtRisk<'_> {
    /// One sentence with the numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.keepalive_idle_s {
            None => "keepalive is off".to_string(),
            Some(s) => format!(
                "keepalive waits {} before its first probe",
                format_secs(s.into())
            ),
        };
        write!(
            f,
            "silent for {}, longer than {}, and {why}: the middlebox has likely forgotten this \
             connection, so its next packet may be dropped or answered with a reset",
            format_secs(self.silent_ms / 1000),
            self.middlebox
        )
    }
}

/// Whether an `ESTABLISHED` connection has been silent longer than the tightest middlebox in
/// front of its peer remembers, with nothing (keepalive shorter than that timeout) to keep it
/// alive.
pub fn at_risk<'a>(
    sock: &RawSock,
    settings: &KernelSettings,
    middleboxes: &'a [Middlebox],
) -> Option<AtRisk<'a>> {
    if sock.proto != Proto::Tcp || sock.state != SockState::Established {
        return None;
    }
    let shortest = middleboxes.iter().map(|m| m.timeout_s).min()?;
    let info = sock.tcp_info.as_ref()?;
    // A middlebox sees packets, not data: keepalive probes and their answers count.
    let silent_ms = u64::from(
        info.last_data_sent()?
            .min(info.last_data_recv()?)
            .min(info.last_ack_recv()?),
    );
    // Most connections are not silent that long: no middlebox lookup for them.
    if silent_ms <= u64::from(shortest) * 1000 {
        return None;
    }
    let middlebox = middlebox_for(middleboxes, &sock.remote)?;
    let timeout_ms = u64::from(middlebox.timeout_s) * 1000;
    let params = Params::of(sock, settings);
    let keepalive_idle_s = match params.and_then(|p| p.enabled.map(|on| (on, p.idle_s))) {
        Some((true, idle)) if idle < middlebox.timeout_s => return None,
        Some((true, idle)) => Some(idle),
        _ => None,
    };
    (silent_ms > timeout_ms).then_some(AtRisk {
        middlebox,
        silent_ms,
        keepalive_idle_s,
    })
}

#[cfg(test)]
#[path = "keepalive_tests.rs"]
mod tests;
