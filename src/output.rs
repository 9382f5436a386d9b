//! Terminal-free output of one poll: an aligned table, a JSON array, or JSON lines.
//!
//! The JSON object is a contract (README, "JSON output"): names and meanings stay stable;
//! new fields may be added.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Instant;

use serde::Serialize;
use unicode_width::UnicodeWidthStr;

mod chunks;

use crate::columns::{self, Column};
use crate::model::duration::format_secs;
use crate::model::{
    ConnTable, Detect, Endpoint, Keepalive, KernelSettings, Owner, SockEntry, StaleSet,
};

/// The armed timer in JSON: `{"kind": "keepalive", "expires_ms": N}`.
#[derive(Serialize)]
struct JsonTimer {
    kind: &'static str,
    expires_ms: u32,
}

/// One process fd holding a socket, in JSON.
#[derive(Serialize)]
struct JsonHolder<'a> {
    pid: u32,
    process: &'a str,
    fd: u32,
}

/// Where and when a poll was taken, on every JSON object (for log shippers that mix hosts
/// and polls).
#[derive(Debug, Clone)]
pub struct Stamp {
    pub host: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
}

impl Stamp {
    /// This host's name and the table's poll time.
    pub fn of(table: &ConnTable) -> Stamp {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let time = table
            .ctx
            .polled_wall
            .map(crate::actions::log::rfc3339)
            .unwrap_or_default();
        Stamp { host, time }
    }
}

/// One socket in JSON. Absent values are `null`, never guessed.
#[derive(Serialize)]
pub struct JsonSock<'a> {
    /// The host's name and when the poll was taken (RFC 3339, UTC).
    host: &'a str,
    time: &'a str,
    proto: &'static str,
    family: &'static str,
    state: &'static str,
    local: Option<String>,
    remote: Option<String>,
    netns: u64,
    /// The namespace's human name (`host`, a container, an `ip netns` name, `netns:<inode>`)
    /// when katop read several; null when it read only its own.
    netns_name: Option<&'a str>,
    /// The container the socket belongs to (its owner's, else its namespace's), or null.
    container: Option<&'a str>,
    inode: u32,
    cookie: u64,
    uid: Option<u32>,
    pid: Option<u32>,
    process: Option<&'a str>,
    cmdline: Option<&'a str>,
    /// `process`, `none` (no process holds it) or `unknown` (not visible without root).
    owner: &'static str,
    fd: Option<u32>,
    /// Every process fd that holds it, the first being `pid`/`fd`; empty when none is known.
    owners: Vec<JsonHolder<'a>>,
    interface: Option<&'a str>,
    recv_q: u32,
    send_q: u32,
    timer: Option<JsonTimer>,
    keepalive: Option<Keepalive>,
    keepalive_probes: Option<u8>,
    retrans: Option<u8>,
    total_retrans: Option<u32>,
    backoff: Option<u8>,
    idle_ms: Option<u32>,
    last_send_ms: Option<u32>,
    last_recv_ms: Option<u32>,
    last_ack_ms: Option<u32>,
    rtt_us: Option<u32>,
    rttvar_us: Option<u32>,
    bytes_acked: Option<u64>,
    bytes_received: Option<u64>,
    bytes_sent: Option<u64>,
    service: Option<&'static str>,
    stale: StaleSet,
    /// Unix sockets: the peer's inode.
    peer_inode: Option<u32>,
    /// When the other end is on this host too (a local client and its server's socket, a
    /// Unix pair): the process holding it, and its cookie; null otherwise or when unseen.
    peer_pid: Option<u32>,
    peer_process: Option<String>,
    peer_cookie: Option<u64>,
    /// TCP: the keepalive settings that govern it, and where they come from.
    keepalive_idle_s: Option<u32>,
    keepalive_intvl_s: Option<u32>,
    keepalive_cnt: Option<u32>,
    user_timeout_ms: Option<u32>,
    keepalive_source: Option<&'static str>,
    /// ESTABLISHED: seconds until the kernel would notice a peer that went silent at the poll;
    /// null when never (keepalive off), a zero window held open, or not applicable.
    dead_peer_detect_s: Option<f64>,
    /// The earliest and latest the countdown can end, `[min, max]` seconds, where the kernel's
    /// timer wheel leaves a range (keepalive countdowns); null otherwise.
    dead_peer_detect_range_s: Option<[f64; 2]>,
    /// `countdown`, `never` (keepalive off, nothing in flight) or `zero-window` (held open
    /// while the peer answers window probes); null where not applicable.
    dead_peer_detect: Option<&'static str>,
    /// What the countdown rests on: `socket`, `sysctl-default` (the socket's settings were
    /// not readable) or `estimate` (the retransmission clock was estimated).
    dead_peer_detect_source: Option<&'static str>,
    /// Why a middlebox has likely forgotten it (the `at-risk` reason), in one sentence.
    at_risk: Option<String>,
    /// A dead connection (stale reason `dead`: ended by the kernel, still held by its
    /// application): why it ended, where that was learned (`tracepoint`, `inferred`), and when
    /// (RFC 3339); null otherwise, or until known.
    ended_cause: Option<&'static str>,
    ended_cause_source: Option<&'static str>,
    ended_at: Option<String>,
}

impl<'a> JsonSock<'a> {
    #[allow(clippy::too_many_lines)] // one field per line: the contract, in order
    pub fn new(e: &SockEntry<'a>, table: &'a ConnTable, stamp: &'a Stamp) -> Self {
        let s = &e.sock;
        let info = s.tcp_info.as_ref();
        let endpoint = |ep: &Endpoint| match ep {
            Endpoint::Inet(a) if a.port() == 0 && a.ip().is_unspecified() => None,
            Endpoint::Inet(_) | Endpoint::Unix(Some(_)) => Some(ep.to_string()),
            _ => None,
        };
        let params = e.params();
        let peer = e.peer();
        // Counted from the poll, as every other time in the object.
        let detect = e.ctx.polled_at.and_then(|at| e.detect(at));
        let owners = match (&s.owner, e.holders()) {
            (_, Some(all)) => all
                .iter()
                .map(|h| JsonHolder {
                    pid: h.process.pid,
                    process: &h.process.name,
                    fd: h.fd,
                })
                .collect(),
            (Owner::Process { process, fd }, None) => vec![JsonHolder {
                pid: process.pid,
                process: &process.name,
                fd: *fd,
            }],
            _ => Vec::new(),
        };
        let (pid, process, cmdline, fd) = match &s.owner {
            Owner::Process { process, fd } => (
                Some(process.pid),
                Some(&*process.name),
                Some(&*process.cmdline),
                Some(*fd),
            ),
            _ => (None, None, None, None),
        };
        JsonSock {
            host: &stamp.host,
            time: &stamp.time,
            proto: s.proto.name(),
            family: s.family.name(),
            state: s.state.name(s.proto),
            local: endpoint(&s.local),
            remote: endpoint(&s.remote),
            netns: s.netns.ino(),
            netns_name: e.netns_name(),
            container: e.container(),
            inode: s.inode.0,
            cookie: s.cookie.0,
            uid: s.uid.map(crate::model::Uid::get),
            pid,
            process,
            cmdline,
            owner: match s.owner {
                Owner::Process { .. } => "process",
                Owner::None => "none",
                Owner::Unknown => "unknown",
            },
            fd,
            owners,
            interface: (s.interface != 0)
                .then(|| table.interfaces.get(&s.interface).map(|n| &**n))
                .flatten(),
            recv_q: s.recv_q,
            send_q: s.send_q,
            timer: s.timer.map(|t| JsonTimer {
                kind: t.kind.name(),
                expires_ms: t.expires_ms,
            }),
            keepalive: e.keepalive,
            keepalive_probes: e.keepalive_probes(),
            retrans: info.and_then(super::model::tcp_info::TcpInfo::retransmits),
            total_retrans: info.and_then(super::model::tcp_info::TcpInfo::total_retrans),
            backoff: info.and_then(super::model::tcp_info::TcpInfo::backoff),
            idle_ms: e.idle_ms(),
            last_send_ms: info.and_then(super::model::tcp_info::TcpInfo::last_data_sent),
            last_recv_ms: info.and_then(super::model::tcp_info::TcpInfo::last_data_recv),
            last_ack_ms: info.and_then(super::model::tcp_info::TcpInfo::last_ack_recv),
            rtt_us: info.and_then(super::model::tcp_info::TcpInfo::rtt),
            rttvar_us: info.and_then(super::model::tcp_info::TcpInfo::rttvar),
            bytes_acked: info.and_then(super::model::tcp_info::TcpInfo::bytes_acked),
            bytes_received: info.and_then(super::model::tcp_info::TcpInfo::bytes_received),
            bytes_sent: info.and_then(super::model::tcp_info::TcpInfo::bytes_sent),
            service: e.service(),
            stale: e.stale,
            peer_inode: match s.remote {
                Endpoint::UnixPeer(Some(i)) => Some(i.0),
                _ => None,
            },
            peer_pid: peer
                .as_ref()
                .and_then(|p| p.process.as_ref())
                .map(|p| p.pid),
            peer_process: peer
                .as_ref()
                .and_then(|p| p.process.as_ref())
                .map(|p| p.name.to_string()),
            peer_cookie: peer.as_ref().map(|p| p.cookie),
            keepalive_idle_s: params.map(|p| p.idle_s),
            keepalive_intvl_s: params.map(|p| p.intvl_s),
            keepalive_cnt: params.map(|p| p.cnt),
            user_timeout_ms: params.map(|p| p.user_timeout_ms),
            keepalive_source: params.map(|p| p.source.name()),
            dead_peer_detect_s: match detect.map(|c| c.detect) {
                Some(Detect::InMs(ms)) => Some(ms as f64 / 1000.0),
                _ => None,
            },
            dead_peer_detect_range_s: detect
                .and_then(|c| c.spread)
                .map(|(lo, hi)| [lo as f64 / 1000.0, hi as f64 / 1000.0]),
            dead_peer_detect: detect.map(|c| match c.detect {
                Detect::InMs(_) => "countdown",
                Detect::Never => "never",
                Detect::ZeroWindow => "zero-window",
            }),
            dead_peer_detect_source: detect.map(|c| c.basis.name()),
            at_risk: e.at_risk().map(|r| r.to_string()),
            ended_cause: e.held_end().map(|h| h.cause.name()),
            ended_cause_source: e.held_end().map(|h| h.source.name()),
            ended_at: e.held_end().map(|h| crate::actions::log::rfc3339(h.at)),
        }
    }
}

/// `--json`: one array.
pub fn write_json(
    out: &mut impl Write,
    rows: &[SockEntry],
    table: &ConnTable,
    stamp: &Stamp,
) -> io::Result<()> {
    out.write_all(b"[")?;
    chunks::write_formatted(out, rows, |i, e, buf| {
        buf.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        Ok(crate::text::to_writer(
            &mut *buf,
            &JsonSock::new(e, table, stamp),
        )?)
    })?;
    out.write_all(b"\n]\n")
}

/// `--jsonl`: one object per line.
pub fn write_jsonl(
    out: &mut impl Write,
    rows: &[SockEntry],
    table: &ConnTable,
    stamp: &Stamp,
) -> io::Result<()> {
    chunks::write_formatted(out, rows, |_, e, buf| {
        crate::text::to_writer(&mut *buf, &JsonSock::new(e, table, stamp))?;
        buf.push(b'\n');
        Ok(())
    })
}

/// The aligned table. On a terminal narrower than the table, cells go compact and the least
/// useful columns are dropped (as in the dashboard), and a last line says which.
pub fn write_table(
    out: &mut impl Write,
    rows: &[SockEntry],
    columns: &[Column],
    width: Option<usize>,
    now: Instant,
) -> io::Result<()> {
    let texts = |compact: bool| -> Vec<Vec<String>> {
        rows.iter()
            .map(|e| {
                columns
                    .iter()
                    .map(|c| {
                        let text = if compact {
                            c.compact_cell(e, now)
                        } else {
                            c.cell(e, now)
                        };
                        crate::text::printable_owned(text)
                    })
                    .collect()
            })
            .collect()
    };
    let widths_of = |cells: &[Vec<String>]| -> Vec<usize> {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r[i].width())
                    .max()
                    .unwrap_or(0)
                    .max(c.header().len())
            })
            .collect()
    };
    let mut cells = texts(false);
    let mut widths = widths_of(&cells);
    let fitted = width.map(|w| {
        // Compact cells are only worked out when the full ones do not fit.
        let quick = columns::fit(columns, &widths, &widths, w, 0);
        if quick.compact.contains(&true) {
            let short = texts(true);
            let short_widths = widths_of(&short);
            let f = columns::fit(columns, &widths, &short_widths, w, 0);
            for (i, &c) in f.compact.iter().enumerate() {
                if c {
                    widths[i] = short_widths[i];
                    for (row, s) in cells.iter_mut().zip(&short) {
                        row[i].clone_from(&s[i]);
                    }
                }
            }
            f
        } else {
            quick
        }
    });
    if let Some(f) = &fitted {
        // Narrowed where even compact the essential columns did not fit.
        widths.clone_from(&f.widths);
    }
    let (keep, gap) = match &fitted {
        Some(f) => (f.keep.clone(), f.gap),
        None => ((0..columns.len()).collect(), 2),
    };
    let mut line = String::new();
    let mut emit = |out: &mut dyn Write, texts: &mut dyn Iterator<Item = (usize, &str)>| {
        aligned(&mut line, columns, &widths, gap, texts);
        let shown = match width {
            Some(w) => columns::elide(line.trim_end(), w),
            None => line.trim_end().into(),
        };
        writeln!(out, "{shown}")
    };
    emit(out, &mut keep.iter().map(|&i| (i, columns[i].header())))?;
    for row in &cells {
        emit(out, &mut keep.iter().map(|&i| (i, row[i].as_str())))?;
    }
    if let Some(f) = fitted.filter(|f| f.dropped > 0) {
        let hidden: Vec<&str> = (0..columns.len())
            .filter(|i| !f.keep.contains(i))
            .map(|i| columns[i].header())
            .collect();
        let note = format!(
            "({} not shown: the terminal is too narrow; -o picks columns, a pipe shows all)",
            hidden.join(" ")
        );
        writeln!(out, "{}", fill(&note, width))?;
    }
    Ok(())
}

/// A note under the table, wrapped to the terminal's width (piped: one line).
pub fn fill(text: &str, width: Option<usize>) -> std::borrow::Cow<'_, str> {
    match width {
        // Column names are not broken inside; the rest wraps at the width.
        Some(w) => textwrap::fill(text, textwrap::Options::new(w.max(1)).break_words(false)).into(),
        None => text.into(),
    }
}

/// One line of the table into `line`: each cell elided to its column's width and padded
/// (numbers to the right), `gap` spaces apart.
fn aligned(
    line: &mut String,
    columns: &[Column],
    widths: &[usize],
    gap: usize,
    texts: &mut dyn Iterator<Item = (usize, &str)>,
) {
    line.clear();
    for (n, (i, text)) in texts.enumerate() {
        if n > 0 {
            line.extend(std::iter::repeat_n(' ', gap));
        }
        let text = columns::elide(text, widths[i]);
        let pad = widths[i].saturating_sub(text.width());
        if columns[i].right_aligned() {
            line.extend(std::iter::repeat_n(' ', pad));
            line.push_str(&text);
        } else {
            line.push_str(&text);
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
}

/// The legend for `~` under a table whose DETECT column shows an estimate.
pub fn estimate_legend(
    rows: &[SockEntry],
    columns: &[Column],
    now: Instant,
) -> Option<&'static str> {
    let shown = columns.contains(&Column::Detect)
        && rows.iter().any(|e| {
            e.detect(now)
                .is_some_and(|c| c.is_estimate() && matches!(c.detect, Detect::InMs(_)))
        });
    shown.then_some(
        "~ DETECT is an estimate: the socket's own keepalive settings were not readable (the \
         sysctls stand in), or how long data has been retransmitted was reckoned from the \
         retransmit count and RTO",
    )
}

/// One line on the system's keepalive settings, printed under the table.
pub fn settings_line(s: &KernelSettings) -> String {
    let show = |v: Option<u32>| v.map_or_else(|| "?".into(), |v| v.to_string());
    let mut line = format!(
        "keepalive: time {}s, intvl {}s, probes {}",
        show(s.keepalive_time_s),
        show(s.keepalive_intvl_s),
        show(s.keepalive_probes)
    );
    if let Some(after) = s.dead_peer_after_s() {
        let _ = write!(
            line,
            " -> the kernel gives up on a silent peer after {}",
            format_secs(after)
        );
    }
    let _ = write!(line, "; tcp_retries2 {}", show(s.retries2));
    if let Some(ct) = s.conntrack_established_s {
        let _ = write!(
            line,
            "; conntrack established timeout {}",
            format_secs(ct.into())
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::table::tests::{snapshot, sock, with_idle};
    use crate::model::{SockState, Timer, TimerKind};
    use std::time::Duration;

    fn table() -> ConnTable {
        let mut s = with_idle(sock(SockState::Established), 600_000);
        s.timer = Some(Timer {
            kind: TimerKind::Keepalive,
            expires_ms: 1234,
            retrans: 2,
        });
        let mut t = ConnTable::new(Duration::from_secs(300));
        t.apply(snapshot(vec![s]), Instant::now());
        t
    }

    #[test]
    fn json_object_keeps_the_contract_names() {
        let t = table();
        let stamp = Stamp::of(&t);
        let v =
            serde_json::to_value(JsonSock::new(&t.entries().next().unwrap(), &t, &stamp)).unwrap();
        for key in [
            "host",
            "time",
            "peer_pid",
            "peer_process",
            "proto",
            "family",
            "state",
            "local",
            "remote",
            "netns",
            "inode",
            "cookie",
            "uid",
            "pid",
            "process",
            "cmdline",
            "recv_q",
            "send_q",
            "timer",
            "keepalive",
            "keepalive_probes",
            "retrans",
            "idle_ms",
            "last_send_ms",
            "last_recv_ms",
            "last_ack_ms",
            "rtt_us",
            "bytes_acked",
            "bytes_received",
            "service",
            "stale",
            "ended_cause",
            "ended_cause_source",
            "ended_at",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["family"], "inet");
        assert_eq!(v["state"], "ESTABLISHED");
        assert_eq!(v["local"], "127.0.0.1:40000");
        assert_eq!(
            v["timer"],
            serde_json::json!({"kind": "keepalive", "expires_ms": 1234})
        );
        assert_eq!(v["keepalive"], "on");
        assert_eq!(v["keepalive_probes"], 2);
        assert_eq!(v["idle_ms"], 600_000);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["service"], "postgres");
        assert_eq!(v["stale"], serde_json::json!(["probing", "idle"]));
        assert_eq!(v["time"], "2026-11-22T00:41:12.000Z");
        assert!(v["host"].as_str().is_some_and(|h| !h.is_empty()));
    }

    #[test]
    fn table_aligns_and_fits() {
        let t = table();
        let rows: Vec<SockEntry> = t.entries().collect();
        let mut out = Vec::new();
        write_table(&mut out, &rows, &Column::DEFAULT, None, Instant::now()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PROTO  STATE"));
        assert!(lines[1].contains("127.0.0.1:5432") && lines[1].contains("probe 2"));
        let mut narrow = Vec::new();
        write_table(
            &mut narrow,
            &rows,
            &Column::DEFAULT,
            Some(40),
            Instant::now(),
        )
        .unwrap();
        let narrow = String::from_utf8(narrow).unwrap();
        // The note, wrapped to the width like the rest.
        let (table, note) = narrow.trim_end().split_once("\n(").unwrap();
        assert!(narrow.lines().all(|l| l.chars().count() <= 40), "{narrow}");
        assert!(table.lines().count() >= 2, "{narrow}");
        assert!(
            note.contains("not shown") && note.contains("PROTO"),
            "{narrow}"
        );
        // At 80 columns: compact cells keep what identifies the connection.
        let mut eighty = Vec::new();
        write_table(
            &mut eighty,
            &rows,
            &Column::DEFAULT,
            Some(80),
            Instant::now(),
        )
        .unwrap();
        let eighty = String::from_utf8(eighty).unwrap();
        let row = eighty.lines().nth(1).unwrap();
        for cell in [":40000", "127.0.0.1:5432", "psql[42]", "10m00s", "probe 2"] {
            assert!(row.contains(cell), "{cell} missing at 80:\n{eighty}");
        }
    }
}
