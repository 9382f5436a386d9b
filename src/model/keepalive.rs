//! Each socket's real keepalive settings and what follows from them: when the kernel would
//! notice a dead peer, and whether a middlebox (load balancer, NAT, firewall) between here and
//! the peer forgets an idle connection before keepalive sends anything.
//!
//! Pure: the options are read by `collector::sockopts`; times are relative to the poll.

use std::fmt;

use serde::Serialize;

use crate::model::duration::{format_secs, parse_ms};
use crate::model::filter::{parse_addr, AddrPat};
use crate::model::{Endpoint, Keepalive, KernelSettings, Proto, RawSock, SockState, TimerKind};

/// Linux's defaults (`include/net/tcp.h`), for when a sysctl cannot be read.
const DEFAULT_TIME_S: u32 = 7200;
const DEFAULT_INTVL_S: u32 = 75;
const DEFAULT_PROBES: u32 = 9;
const DEFAULT_RETRIES2: u32 = 15;
/// `TCP_RTO_MIN` and `TCP_RTO_MAX`, ms.
const RTO_MIN_MS: u64 = 200;
const RTO_MAX_MS: u64 = 120_000;

/// A socket's options as read from it (`getsockopt` on a duplicate of its owner's fd), 12 bytes
/// in every socket. `read: false` means nothing was read (no owner visible, not permitted, or
/// not yet): the namespace's sysctls then stand in, marked as defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// When the kernel would notice that the peer went silent, counted from the poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// Keepalive is off: not until the application writes (then retransmissions time out).
    Never,
    InMs(u64),
}

/// How long retransmissions go on before the kernel gives up (`tcp_retries2`, modelled as the
/// kernel does in `tcp_model_timeout`: exponential backoff from `TCP_RTO_MIN` up to
/// `TCP_RTO_MAX`, then linear): 924.6 s for the default 15.
pub fn retransmit_give_up_ms(retries2: u32) -> u64 {
    let thresh = (RTO_MAX_MS / RTO_MIN_MS).ilog2();
    if retries2 <= thresh {
        ((2u64 << retries2) - 1) * RTO_MIN_MS
    } else {
        ((2u64 << thresh) - 1) * RTO_MIN_MS + u64::from(retries2 - thresh) * RTO_MAX_MS
    }
}

/// If the peer went silent at the poll, when the kernel would drop an `ESTABLISHED` connection:
/// keepalive off: never; keepalive on: the time to the next probe plus the probes left ×
/// interval, or with `TCP_USER_TIMEOUT` the first check past it. `None` where unknown.
pub fn dead_peer_detect(sock: &RawSock, p: &Params, settings: &KernelSettings) -> Option<Detect> {
    if sock.state != SockState::Established {
        return None;
    }
    let info = sock.tcp_info.as_ref()?;
    // ms since the last segment from the peer: what the keepalive timer measures idleness by.
    let silent = u64::from(info.last_ack_recv()?);
    let timer = sock.timer;
    if let Some(t) = timer.filter(|t| matches!(t.kind, TimerKind::Retransmit | TimerKind::Probe0)) {
        // Data is outstanding: retransmissions decide, capped by TCP_USER_TIMEOUT when set.
        let _ = t;
        let total = if p.user_timeout_ms > 0 {
            u64::from(p.user_timeout_ms)
        } else {
            retransmit_give_up_ms(settings.retries2.unwrap_or(DEFAULT_RETRIES2))
        };
        return Some(Detect::InMs(total.saturating_sub(silent)));
    }
    match p.enabled {
        Some(false) => return Some(Detect::Never),
        None => return None,
        Some(true) => {}
    }
    let intvl = u64::from(p.intvl_s) * 1000;
    let ka = timer.filter(|t| t.kind == TimerKind::Keepalive);
    let probes = u64::from(ka.map_or(0, |t| t.retrans));
    // The next time the keepalive timer looks at the connection.
    let next = match ka {
        Some(t) => u64::from(t.expires_ms),
        None => (u64::from(p.idle_s) * 1000).saturating_sub(silent),
    };
    if p.user_timeout_ms == 0 {
        // Each check sends a probe until `cnt` are out; the check after the last one drops it.
        return Some(Detect::InMs(
            next + u64::from(p.cnt).saturating_sub(probes) * intvl,
        ));
    }
    // With TCP_USER_TIMEOUT the count is ignored: the first check after a probe went out at
    // which the silence has lasted the user timeout drops it.
    let first = if probes == 0 { next + intvl } else { next };
    let short = u64::from(p.user_timeout_ms).saturating_sub(silent + first);
    let checks = if intvl == 0 { 0 } else { short.div_ceil(intvl) };
    Some(Detect::InMs(first + checks * intvl))
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
