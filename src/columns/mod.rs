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
    /// The container the socket belongs to: its process's (host networking too), else its
    /// namespace's (podman:web-1, docker:3f2a91c0d4e1, k8s:payments/api-7d9f); shown when
    /// any socket has one.
    Container,
    /// Local address:port or Unix path.
    Local,
    /// Remote address:port, or the Unix peer's inode.
    Remote,
    /// Service of the well-known port at either end.
    Service,
    /// Owning process as name[pid], +N when N more processes hold it; - when none holds it,
    /// ? when katop cannot see.
    Process,
    /// The process at the other end, when that end is on this host too (a local client and
    /// its server's socket, a Unix socket pair).
    Peer,
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
    pub const DEFAULT: [Column; 15] = [
        Column::Proto,
        Column::State,
        Column::Netns,
        Column::Container,
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
    /// [`Column::DEFAULT`] is this list less the peer, the byte counters and the rate (which
    /// needs two polls).
    pub const DASHBOARD: [Column; 19] = [
        Column::Proto,
        Column::State,
        Column::Netns,
        Column::Container,
        Column::Local,
        Column::Remote,
        Column::Service,
        Column::Process,
        Column::Peer,
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
            Column::Container => "CONTAINER",
            Column::Local => "LOCAL",
            Column::Remote => "REMOTE",
            Column::Service => "SERVICE",
            Column::Process => "PROCESS",
            Column::Peer => "PEER",
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

    /// Lower is kept longer when the width does not fit every column. What identifies a
    /// connection and what katop is for (LOCAL, REMOTE, PROCESS, IDLE, KEEPALIVE, DETECT,
    /// STALE) are [essential](Column::is_essential): shortened before they are dropped.
    pub fn priority(self) -> u8 {
        match self {
            Column::Remote | Column::Process => 0,
            Column::Stale | Column::Idle | Column::Keepalive => 1,
            Column::Detect | Column::Local => 2,
            Column::State | Column::Netns | Column::Container => 3,
            Column::Service => 4,
            Column::Proto => 5,
            Column::RecvQ | Column::SendQ | Column::Peer => 6,
            Column::Rtt | Column::Timer | Column::Rate => 7,
            _ => 8,
        }
    }

    pub fn is_essential(self) -> bool {
        self.priority() <= 2
    }

    /// The widest a cell may be before it is elided (`…`), so one long value does not push
    /// the others off screen.
    pub fn cap(self) -> usize {
        match self {
            Column::Local | Column::Remote => 47,
            Column::Stale | Column::Cmdline => 32,
            Column::Process | Column::Container => 24,
            _ => 20,
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
            Column::Container => e.container().unwrap_or_default().into(),
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
            Column::Peer => e
                .peer()
                .and_then(|p| p.process)
                .map(|p| format!("{}[{}]", p.name, p.pid))
                .unwrap_or_default(),
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
                .map(format_bytes)),
            Column::BytesOut => opt(info
                .and_then(super::model::tcp_info::TcpInfo::bytes_acked)
                .map(format_bytes)),
            Column::Rate => match (e.rate_in(), e.rate_out()) {
                (Some(i), Some(o)) => format!("{} / {}", format_rate(i), format_rate(o)),
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
            Column::Uid => opt(s.uid.map(|u| u.get().to_string())),
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

    /// The cell shortened, for a narrow terminal: the local port alone, `ss`'s short state
    /// names, a process name cut to ten characters (pid kept), the first stale reason and a
    /// count of the others. Columns without a shorter form give [`Column::cell`].
    pub fn compact_cell(self, e: &SockEntry, now: Instant) -> String {
        let s = &e.sock;
        match self {
            Column::Local => match &s.local {
                crate::model::Endpoint::Inet(a) => format!(":{}", a.port()),
                crate::model::Endpoint::Unix(Some(path)) => {
                    let name = path.rsplit('/').next().unwrap_or(path);
                    name.to_string()
                }
                other => other.to_string(),
            },
            // Most IPv4 addresses and ports fit; IPv6 is elided in the middle.
            Column::Remote => elide(&s.remote.to_string(), 20).into_owned(),
            Column::State => short_state(s.state, s.proto).into(),
            Column::Process => match &s.owner {
                Owner::Process { process, .. } => {
                    let name = elide(&process.name, 10);
                    match e.other_processes() {
                        0 => format!("{name}[{}]", process.pid),
                        n => format!("{name}[{}]+{n}", process.pid),
                    }
                }
                _ => self.cell(e, now),
            },
            Column::Stale => {
                let mut reasons = e.stale.iter();
                match (reasons.next(), reasons.count()) {
                    (None, _) => String::new(),
                    (Some(r), 0) => r.name().into(),
                    (Some(r), more) => format!("{}+{more}", r.name()),
                }
            }
            Column::Netns | Column::Service | Column::Peer => {
                elide(&self.cell(e, now), 12).into_owned()
            }
            _ => self.cell(e, now),
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
        self.right_aligned() || matches!(self, Column::Keepalive | Column::Rate | Column::Stale)
    }

    fn number(self, e: &SockEntry, now: Instant) -> Option<u64> {
        let s = &e.sock;
        let info = s.tcp_info.as_ref();
        match self {
            Column::Idle => e.idle_ms().map(u64::from),
            // The worst reason first, then the longest idle: a busy host's worst connections
            // on the first screen.
            Column::Stale => Some(
                u64::from(e.stale.severity()) << 40
                    | e.idle_ms().map_or(0, |ms| u64::from(ms).min((1 << 40) - 1)),
            ),
            Column::RecvQ => Some(s.recv_q.into()),
            Column::SendQ => Some(s.send_q.into()),
            Column::Rtt => info
                .and_then(super::model::tcp_info::TcpInfo::rtt)
                .map(u64::from),
            Column::BytesIn => info.and_then(super::model::tcp_info::TcpInfo::bytes_received),
            Column::BytesOut => info.and_then(super::model::tcp_info::TcpInfo::bytes_acked),
            Column::Uid => s.uid.map(|u| u64::from(u.get())),
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

mod fit;
mod format;
pub use fit::{fit, for_table, Fit};
pub use format::{elide, format_bytes, format_rate, format_rtt, short_state};
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
    fn narrow_widths_go_compact_then_drop_the_least_useful() {
        let cols = Column::DEFAULT;
        // PROTO STATE NETNS CONTAINER LOCAL REMOTE SERVICE PROCESS IDLE KEEPALIVE DETECT RECV-Q
        // SEND-Q RTT STALE
        let full = [5, 11, 8, 12, 21, 21, 8, 15, 6, 9, 7, 6, 6, 6, 20];
        let short = [5, 5, 8, 12, 6, 21, 8, 14, 6, 9, 7, 6, 6, 6, 10];
        let f = fit(&cols, &full, &short, 1000, 0);
        assert_eq!((f.keep.len(), f.dropped), (cols.len(), 0));
        assert!(!f.compact.contains(&true));
        // What identifies a connection and what katop is for, in screen order.
        let essential = [
            Column::Local,
            Column::Remote,
            Column::Process,
            Column::Idle,
            Column::Keepalive,
            Column::Detect,
            Column::Stale,
        ];
        // 80 columns: every essential column stays, compact; the rest go first.
        let f = fit(&cols, &full, &short, 80, 0);
        let kept: Vec<Column> = f.keep.iter().map(|&i| cols[i]).collect();
        for c in essential {
            assert!(kept.contains(&c), "{c:?} dropped at 80: {kept:?}");
        }
        assert!(f.gap == 1 && f.dropped > 0, "{f:?}");
        assert!(f.compact.iter().filter(|c| **c).count() >= 4, "{f:?}");
        // A little wider: only the local address has to go short.
        let f = fit(&cols, &full, &short, 100, 0);
        let compact: Vec<Column> = (0..cols.len())
            .filter(|&i| f.compact[i])
            .map(|i| cols[i])
            .collect();
        assert_eq!((compact, f.gap), (vec![Column::Local], 2), "{f:?}");
        assert!(!kept.contains(&Column::Rtt));
        let f = fit(&cols, &full, &short, 80, 0);
        let used: usize = f
            .keep
            .iter()
            .map(|&i| if f.compact[i] { short[i] } else { full[i] })
            .sum::<usize>()
            + f.keep.len()
            - 1;
        assert!(used <= 80, "{used}");
        // Scrolled right, the columns from there on, left to right, as many as fit.
        // (The first page starts at the first column.)
        assert_eq!(fit(&cols, &full, &short, 80, 1).keep[0], 0);
        let scrolled = fit(&cols, &full, &short, 80, 8);
        assert_eq!(scrolled.skipped, 7);
        let kept: Vec<Column> = scrolled.keep.iter().map(|&i| cols[i]).collect();
        assert_eq!(
            kept,
            [
                Column::Process,
                Column::Idle,
                Column::Keepalive,
                Column::Detect,
                Column::RecvQ,
                Column::SendQ,
                Column::Rtt
            ]
        );
        assert_eq!(scrolled.dropped, 1);
        let last = fit(&cols, &full, &short, 80, 99);
        assert_eq!(last.widths, full);
        assert_eq!(
            (last.skipped, last.keep.as_slice(), last.dropped),
            (14, &[14][..], 0)
        );
        assert_eq!(fit(&cols, &full, &short, 1, 0).keep.len(), 1);
        // 60 columns: too narrow for the essential columns even compact; the widest are
        // narrowed (cells elided), none dropped.
        let f = fit(&cols, &full, &short, 60, 0);
        let kept: Vec<Column> = f.keep.iter().map(|&i| cols[i]).collect();
        assert_eq!(kept, essential);
        let used: usize = f.keep.iter().map(|&i| f.widths[i]).sum::<usize>() + f.keep.len() - 1;
        // Squeezed no narrower than the floor (8), or than the column's compact cells.
        assert!(
            used <= 60 && f.keep.iter().all(|&i| f.widths[i] >= short[i].min(8)),
            "{f:?}"
        );
    }

    #[test]
    fn long_cells_are_elided_not_cut() {
        assert_eq!(elide("postgres", 20), "postgres");
        assert_eq!(
            elide("[2001:db8:ffff:ffff:ffff:ffff:ffff:1]:443", 20),
            "[2001:d…:ffff:1]:443"
        );
        assert_eq!(elide("idle,no-keepalive,at-risk", 10), "idle,no-k…");
        assert_eq!(format_bytes(5), "5 B");
        assert_eq!(format_bytes(1_258_291), "1.2 MiB");
        assert_eq!(format_rate(5.0), "5 B/s");
        assert_eq!(format_rtt(10), "10µs");
        assert_eq!(format_rtt(1500), "1.5ms");
        // Wide characters count as two columns.
        assert_eq!(elide("数据库连接池", 7), "数据库…");
        // A process keeps its pid (two workers of one name stay apart), and an elided cell
        // elided again has one `…`.
        assert_eq!(elide("longprocessnam1[27416]", 14), "longpr…[27416]");
        assert_eq!(elide("longprocessnam2[27418]+2", 14), "long…[27418]+2");
        assert_eq!(elide("longproce…[27416]", 12), "long…[27416]");
        assert_eq!(elide("ab…cdef", 4), "ab…");
        // Too narrow for the pid: the start, as any text.
        assert_eq!(elide("postgres[4121]", 7), "postgr…");
    }
}
