//! The socket table's columns, defined once for --once and the dashboard: header, cell text,
//! sort key and how expendable each is when the terminal is narrow.
//! Doc comments on [`Column`] variants are --help text: no Markdown.
#![allow(clippy::doc_markdown)]

use std::fmt::Write as _;
use std::time::Instant;

use clap::ValueEnum;

use crate::model::duration::format_ms_short;
use crate::model::keepalive::Source;
use crate::model::{Countdown, Detect, Keepalive, Owner, SockEntry, StaleReason, TimerKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum Column {
    /// tcp, udp or unix.
    Proto,
    /// Socket state, as ss names it (ESTABLISHED, CLOSE_WAIT, UNCONN, …).
    State,
    /// The network namespace's name (host, a container, an ip netns name); shown when more
    /// than one namespace is read.
    Netns,
    /// Local address:port or Unix path.
    Local,
    /// Remote address:port, or the Unix peer's inode.
    Remote,
    /// Service of the well-known port at either end.
    Service,
    /// Owning process as name[pid], +N when N more processes hold it; - when none holds it,
    /// ? when katop cannot see.
    Process,
    /// Time since data moved either way (TCP).
    Idle,
    /// off, on 1h59m (until the next probe), probe 3/9 while probing (of the socket's
    /// TCP_KEEPCNT), ? when hidden.
    Keepalive,
    /// If the peer went silent now: when the kernel would notice and drop the connection
    /// (counting down; ~ marks an estimate), never with keepalive off, persist while a
    /// zero-window peer answers window probes (ESTABLISHED TCP).
    Detect,
    /// Bytes in the receive queue (listeners: pending connections).
    RecvQ,
    /// Bytes in the send queue (listeners: backlog).
    SendQ,
    /// Smoothed round-trip time.
    Rtt,
    /// Bytes received from the peer.
    BytesIn,
    /// Bytes sent and acknowledged by the peer.
    BytesOut,
    /// Bytes/s received and sent since the previous poll (dashboard; empty on one poll).
    Rate,
    /// The armed timer and when it fires: keepalive 1h59m, retransmit 200ms (2).
    Timer,
    /// Stale reasons, comma-separated.
    Stale,
    Uid,
    Inode,
    Cookie,
    /// How long katop has seen the socket.
    Age,
    /// The owning process's command line.
    Cmdline,
}

impl Column {
    /// Shown when -o is not given.
    pub const DEFAULT: [Column; 14] = [
        Column::Proto,
        Column::State,
        Column::Netns,
        Column::Local,
        Column::Remote,
        Column::Service,
        Column::Process,
        Column::Idle,
        Column::Keepalive,
        Column::Detect,
        Column::RecvQ,
        Column::SendQ,
        Column::Rtt,
        Column::Stale,
    ];

    /// The dashboard's columns, in order; a narrow terminal drops the least useful first.
    /// [`Column::DEFAULT`] is this list less the byte counters and the rate, which need two polls.
    pub const DASHBOARD: [Column; 17] = [
        Column::Proto,
        Column::State,
        Column::Netns,
        Column::Local,
        Column::Remote,
        Column::Service,
        Column::Process,
        Column::Idle,
        Column::Keepalive,
        Column::Detect,
        Column::RecvQ,
        Column::SendQ,
        Column::Rtt,
        Column::BytesIn,
        Column::BytesOut,
        Column::Rate,
        Column::Stale,
    ];

    pub fn header(self) -> &'static str {
        match self {
            Column::Proto => "PROTO",
            Column::State => "STATE",
            Column::Netns => "NETNS",
            Column::Local => "LOCAL",
            Column::Remote => "REMOTE",
            Column::Service => "SERVICE",
            Column::Process => "PROCESS",
            Column::Idle => "IDLE",
            Column::Keepalive => "KEEPALIVE",
            Column::Detect => "DETECT",
            Column::RecvQ => "RECV-Q",
            Column::SendQ => "SEND-Q",
            Column::Rtt => "RTT",
            Column::BytesIn => "BYTES-IN",
            Column::BytesOut => "BYTES-OUT",
            Column::Rate => "RATE IN/OUT",
            Column::Timer => "TIMER",
            Column::Stale => "STALE",
            Column::Uid => "UID",
            Column::Inode => "INODE",
            Column::Cookie => "COOKIE",
            Column::Age => "AGE",
            Column::Cmdline => "CMDLINE",
        }
    }

    /// Lower is kept longer when the width does not fit every column.
    pub fn priority(self) -> u8 {
        // What a stale-connection hunt needs most stays longest.
        match self {
            Column::State | Column::Remote => 0,
            Column::Process | Column::Stale => 1,
            Column::Keepalive | Column::Idle => 2,
            Column::Local | Column::Detect | Column::Netns => 3,
            Column::Service => 4,
            Column::Proto => 5,
            Column::RecvQ | Column::SendQ => 6,
            Column::Rtt | Column::Timer | Column::Rate => 7,
            _ => 8,
        }
    }

    pub fn right_aligned(self) -> bool {
        matches!(
            self,
            Column::Idle
                | Column::Detect
                | Column::RecvQ
                | Column::SendQ
                | Column::Rtt
                | Column::BytesIn
                | Column::BytesOut
                | Column::Uid
                | Column::Inode
                | Column::Cookie
                | Column::Age
        )
    }

    pub fn cell(self, e: &SockEntry, now: Instant) -> String {
        let s = &e.sock;
        let info = s.tcp_info.as_ref();
        let opt = |v: Option<String>| v.unwrap_or_default();
        match self {
            Column::Proto => s.proto.name().into(),
            Column::State => s.state.name(s.proto).into(),
            Column::Netns => e
                .netns_name()
                .map_or_else(|| s.netns.0.to_string(), str::to_string),
            Column::Local => s.local.to_string(),
            Column::Remote => s.remote.to_string(),
            Column::Service => e.service().unwrap_or_default().into(),
            Column::Process => match &s.owner {
                Owner::Process { process, .. } => match e.other_processes() {
                    0 => format!("{}[{}]", process.name, process.pid),
                    n => format!("{}[{}]+{n}", process.name, process.pid),
                },
                Owner::None => "-".into(),
                Owner::Unknown => "?".into(),
            },
            Column::Idle => opt(e.idle_ms().map(|ms| format_ms_short(ms.into()))),
            Column::Keepalive => keepalive_cell(e),
            Column::Detect => e.detect(now).as_ref().map_or_else(String::new, detect_cell),
            Column::RecvQ => s.recv_q.to_string(),
            Column::SendQ => s.send_q.to_string(),
            Column::Rtt => opt(info
                .and_then(super::model::tcp_info::TcpInfo::rtt)
                .map(format_rtt)),
            Column::BytesIn => opt(info
                .and_then(super::model::tcp_info::TcpInfo::bytes_received)
                .map(|b| b.to_string())),
            Column::BytesOut => opt(info
                .and_then(super::model::tcp_info::TcpInfo::bytes_acked)
                .map(|b| b.to_string())),
            Column::Rate => match (e.rate_in(), e.rate_out()) {
                (Some(i), Some(o)) => format!("{}/{}", format_rate(i), format_rate(o)),
                _ => String::new(),
            },
            Column::Timer => opt(s.timer.map(|t| {
                let mut out = format!("{} {}", t.kind.name(), format_ms_short(t.expires_ms.into()));
                if t.retrans > 0 {
                    let _ = write!(out, " ({})", t.retrans);
                }
                out
            })),
            Column::Stale => e
                .stale
                .iter()
                .map(StaleReason::name)
                .collect::<Vec<_>>()
                .join(","),
            Column::Uid => opt(s.uid.map(|u| u.to_string())),
            Column::Inode => s.inode.0.to_string(),
            Column::Cookie => s.cookie.0.to_string(),
            Column::Age => format_ms_short(e.age(now).as_millis() as u64),
            Column::Cmdline => s
                .owner
                .process()
                .map(|p| p.cmdline.to_string())
                .unwrap_or_default(),
        }
    }

    /// A key that orders like [`Column::compare`], computed once per socket for sorting many.
    pub fn sort_key(self, e: &SockEntry, now: Instant) -> SortKey {
        if self.is_numeric() {
            // Largest first, absent last.
            SortKey::Num(
                self.number(e, now)
                    .map_or(u64::MAX, |n| u64::MAX - 1 - n.min(u64::MAX - 1)),
            )
        } else {
            SortKey::Text(self.cell(e, now))
        }
    }

    pub fn is_numeric(self) -> bool {
        self.right_aligned() || matches!(self, Column::Keepalive | Column::Rate)
    }

    fn number(self, e: &SockEntry, now: Instant) -> Option<u64> {
        let s = &e.sock;
        let info = s.tcp_info.as_ref();
        match self {
            Column::Idle => e.idle_ms().map(u64::from),
            Column::RecvQ => Some(s.recv_q.into()),
            Column::SendQ => Some(s.send_q.into()),
            Column::Rtt => info
                .and_then(super::model::tcp_info::TcpInfo::rtt)
                .map(u64::from),
            Column::BytesIn => info.and_then(super::model::tcp_info::TcpInfo::bytes_received),
            Column::BytesOut => info.and_then(super::model::tcp_info::TcpInfo::bytes_acked),
            Column::Uid => s.uid.map(u64::from),
            Column::Inode => Some(s.inode.0.into()),
            Column::Cookie => Some(s.cookie.0),
            Column::Age => Some(e.age(now).as_millis() as u64),
            Column::Rate => e.rate_in().zip(e.rate_out()).map(|(i, o)| (i + o) as u64),
            Column::Keepalive => e.keepalive_probes().map(u64::from),
            // Never (and a zero window's persistence) sorts as the longest wait.
            Column::Detect => e.detect(now).map(|c| match c.detect {
                Detect::Never | Detect::ZeroWindow => u64::MAX / 2,
                Detect::InMs(ms) => ms,
            }),
            _ => None,
        }
    }
}

/// See [`Column::sort_key`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey {
    Num(u64),
    Text(String),
}

/// `4m04s`, `~11m17s` (an estimate: see [`Countdown::is_estimate`]), `never`, `persist`.
pub fn detect_cell(c: &Countdown) -> String {
    match c.detect {
        Detect::Never => "never".into(),
        Detect::ZeroWindow => "persist".into(),
        Detect::InMs(ms) if c.is_estimate() => format!("~{}", format_ms_short(ms)),
        Detect::InMs(ms) => format_ms_short(ms),
    }
}

fn keepalive_cell(e: &SockEntry) -> String {
    match (e.keepalive, e.sock.timer) {
        (Some(Keepalive::On), Some(t)) if t.kind == TimerKind::Keepalive && t.retrans > 0 => {
            match e.params() {
                // The limit is the sysctl's when the socket's own could not be read.
                Some(p) if p.source == Source::SysctlDefault => {
                    format!("probe {}/~{}", t.retrans, p.cnt)
                }
                Some(p) => format!("probe {}/{}", t.retrans, p.cnt),
                None => format!("probe {}", t.retrans),
            }
        }
        (Some(Keepalive::On), Some(t)) if t.kind == TimerKind::Keepalive => {
            format!("on {}", format_ms_short(t.expires_ms.into()))
        }
        (Some(Keepalive::On), _) => "on".into(),
        (Some(Keepalive::Off), _) => "off".into(),
        (Some(Keepalive::Unknown), _) => "?".into(),
        _ => String::new(),
    }
}

/// Bytes per second, short: `0`, `850`, `12k`, `3.4M`.
fn format_rate(bps: f32) -> String {
    match bps {
        b if b < 1000.0 => format!("{b:.0}"),
        b if b < 1e6 => format!("{:.0}k", b / 1e3),
        b => format!("{:.1}M", b / 1e6),
    }
}

fn format_rtt(us: u32) -> String {
    if us < 1000 {
        format!("{us}us")
    } else {
        format!("{:.1}ms", f64::from(us) / 1000.0)
    }
}

/// `columns` less NETNS when only one namespace was read (it would say the same on every row).
pub fn for_table(columns: &[Column], namespaces: usize) -> Vec<Column> {
    columns
        .iter()
        .copied()
        .filter(|&c| c != Column::Netns || namespaces > 1)
        .collect()
}

/// Keeps the columns that fit in width (cells separated by two spaces), dropping the most
/// expendable first; the order of the survivors is kept.
pub fn fit(columns: &[Column], widths: &[usize], width: usize) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..columns.len()).collect();
    let total = |keep: &[usize]| -> usize {
        keep.iter().map(|&i| widths[i]).sum::<usize>() + 2 * keep.len().saturating_sub(1)
    };
    while keep.len() > 1 && total(&keep) > width {
        let drop = keep
            .iter()
            .enumerate()
            .max_by_key(|(pos, &i)| (columns[i].priority(), *pos))
            .map(|(pos, _)| pos)
            .expect("non-empty");
        keep.remove(drop);
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::table::tests::{snapshot, sock, with_idle};
    use crate::model::{ConnTable, SockState, Timer, TimerKind};
    use std::time::Duration;

    fn cell(col: Column, s: crate::model::RawSock) -> String {
        let mut t = ConnTable::new(Duration::from_secs(300));
        t.apply(snapshot(vec![s]), Instant::now());
        let text = col.cell(&t.entries().next().unwrap(), Instant::now());
        text
    }

    #[test]
    fn keepalive_cell_reads_like_the_issue() {
        let mut s = with_idle(sock(SockState::Established), 1000);
        assert_eq!(cell(Column::Keepalive, s.clone()), "off");
        s.timer = Some(Timer {
            kind: TimerKind::Keepalive,
            expires_ms: 7_140_000,
            retrans: 0,
        });
        assert_eq!(cell(Column::Keepalive, s.clone()), "on 1h59m");
        s.timer = Some(Timer {
            kind: TimerKind::Keepalive,
            expires_ms: 75_000,
            retrans: 3,
        });
        assert_eq!(cell(Column::Keepalive, s.clone()), "probe 3/~9");
        let mut read = s.clone();
        read.opts = crate::model::SockOpts {
            keepalive: true,
            idle_s: 60,
            intvl_s: 10,
            cnt: 5,
            user_timeout_ms: 0,
            read: true,
        };
        assert_eq!(cell(Column::Keepalive, read), "probe 3/5");
        assert_eq!(cell(Column::Timer, s.clone()), "keepalive 1m15s (3)");
        assert_eq!(cell(Column::Process, s), "psql[42]");
    }

    #[test]
    fn narrow_widths_drop_the_least_useful_first() {
        let cols = Column::DEFAULT;
        let widths = [5, 11, 8, 21, 21, 8, 15, 6, 9, 7, 6, 6, 6, 20];
        assert_eq!(fit(&cols, &widths, 1000).len(), cols.len());
        let kept: Vec<Column> = fit(&cols, &widths, 80)
            .into_iter()
            .map(|i| cols[i])
            .collect();
        assert!(kept.contains(&Column::State) && kept.contains(&Column::Remote));
        assert!(!kept.contains(&Column::Rtt));
        assert_eq!(fit(&cols, &widths, 1).len(), 1);
    }
}
