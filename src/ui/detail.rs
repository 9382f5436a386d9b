//! The detail pane: every field katop knows about the selected socket, the stale reasons in
//! words, and its keepalive timeline.

use std::time::Instant;

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::theme::Theme;
use super::wrap::{labelled, wrap};
use crate::app::{App, Mode};
use crate::columns::{format_bytes, format_rtt};
use crate::model::duration::{format_ms_short, format_s_short};
use crate::model::keepalive::{middlebox_for, Source};
use crate::model::retransmit::{give_up_ms, RTO_MAX_MS};
use crate::model::{Basis, Detect, Keepalive, KernelSettings, Owner, Params, SockEntry, TimerKind};

/// The pane's text area inside its border.
pub fn inner(area: Rect) -> Rect {
    Block::default().borders(Borders::ALL).inner(area)
}

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let inner = inner(area);
    let lines = content(app, theme, inner.width);
    let max = lines.len().saturating_sub(usize::from(inner.height));
    let scroll = match app.mode {
        Mode::Detail { scroll } => usize::from(scroll).min(max),
        _ => 0,
    };
    let more = if scroll < max {
        format!(" ↓ {} more ", max - scroll)
    } else {
        String::new()
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" details · ↑↓ PgUp PgDn scroll · Enter closes ")
        .title_bottom(Line::styled(more, theme.dim()).right_aligned());
    let shown: Vec<Line> = lines.into_iter().skip(scroll).collect();
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

/// The pane's lines, wrapped to `width`.
pub fn content(app: &App, theme: Theme, width: u16) -> Vec<Line<'static>> {
    match app.selected.and_then(|k| app.table.get(&k)) {
        Some(e) => lines(&e, app, theme, width),
        None => wrap(
            "no socket selected: the filter shows none",
            width,
            0,
            theme.warn(),
        ),
    }
}

const LABEL: usize = 13;

fn clean(s: &str) -> String {
    crate::text::printable(s).into_owned()
}

#[allow(clippy::too_many_lines)] // the pane top to bottom, in reading order
fn lines(e: &SockEntry, app: &App, theme: Theme, width: u16) -> Vec<Line<'static>> {
    let s = e.sock;
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut kv = |k: &str, v: &str| {
        out.extend(labelled(
            k,
            LABEL,
            &clean(v),
            width,
            (theme.label(), Style::new()),
        ));
    };
    kv(
        "socket",
        &format!(
            "{} {} {}",
            s.proto.name(),
            s.family.name(),
            s.state.name(s.proto)
        ),
    );
    kv("local", &s.local.to_string());
    kv(
        "remote",
        &format!(
            "{}{}",
            s.remote,
            e.service().map(|x| format!("  ({x})")).unwrap_or_default()
        ),
    );
    match &s.owner {
        Owner::Process { process, fd } => {
            kv(
                "process",
                &format!("{}[{}] fd {fd}", process.name, process.pid),
            );
            kv("cmdline", &process.cmdline);
            if let Some(all) = e.holders() {
                let list: Vec<String> = all
                    .iter()
                    .map(|h| format!("{}[{}] fd {}", h.process.name, h.process.pid, h.fd))
                    .collect();
                kv(
                    "held by",
                    &format!("{} fds: {}", list.len(), list.join(", ")),
                );
            }
        }
        Owner::None if s.inode.0 == 0 => kv(
            "process",
            "none yet: no application has accepted it from its listener",
        ),
        Owner::None => kv("process", "none holds it"),
        Owner::Unknown => kv("process", "not visible (another user's; run as root)"),
    }
    if let Some(peer) = e.peer() {
        kv("other end", &peer_text(&peer));
    }
    if let Some(ns) = e.netns_name() {
        kv("namespace", &format!("{ns} (netns {})", s.netns.0));
    }
    if let Some(c) = e.container() {
        kv("container", c);
    }
    let uid = s.uid.map_or_else(|| "?".into(), |u| u.get().to_string());
    kv(
        "ids",
        &format!(
            "uid {uid} · inode {} · cookie {} · netns {}",
            s.inode.0, s.cookie.0, s.netns.0
        ),
    );
    if s.interface != 0 {
        let name = app
            .table
            .interfaces
            .get(&s.interface)
            .map_or_else(|| s.interface.to_string(), ToString::to_string);
        kv("interface", &name);
    }
    kv(
        "queues",
        &format!(
            "recv {} · send {}",
            format_bytes(s.recv_q.into()),
            format_bytes(s.send_q.into())
        ),
    );
    // The past is read as one moment: how long before it katop had seen the socket is in its
    // recorded life (below), not in the table.
    let seen = if app.past.is_some() {
        "at this moment (its recorded life, below, says since when)".to_string()
    } else {
        format!(
            "{} ago · in this state {}",
            format_ms_short(e.age(app.now).as_millis() as u64),
            format_ms_short(
                app.now
                    .saturating_duration_since(e.state_since())
                    .as_millis() as u64
            )
        )
    };
    kv("seen", &seen);
    if let Some(t) = s.timer {
        kv(
            "timer",
            &format!(
                "{} fires in {} · count {}",
                t.kind.name(),
                format_ms_short(t.expires_ms.into()),
                t.retrans
            ),
        );
    }
    if let Some(why) = e.protected() {
        kv("kill", &format!("refused: {why}"));
    }
    out.push(Line::from(""));
    if e.stale.is_empty() {
        out.push(Line::styled("not stale", theme.good()));
    } else {
        out.push(Line::styled("stale because", theme.stale()));
        for r in e.stale.iter() {
            out.extend(wrap(
                &format!("  {}: {}", r.name(), r.explain()),
                width,
                4,
                theme.stale(),
            ));
        }
        if let Some(end) = e.held_end() {
            let ago = std::time::SystemTime::now()
                .duration_since(end.at)
                .map_or_else(
                    |_| "just now".into(),
                    |d| format!("{} ago", format_ms_short(d.as_millis() as u64)),
                );
            let how = crate::model::ends::label(end.cause, end.source);
            out.extend(wrap(
                &format!("  the kernel ended it {ago}: {how}"),
                width,
                4,
                theme.stale(),
            ));
        }
    }
    if let Some(past) = &app.past {
        out.push(Line::from(""));
        out.push(Line::styled(
            "its recorded life, up to this moment",
            theme.title(),
        ));
        let lifeline = past.lifeline.as_ref().filter(|l| l.cookie == s.cookie.0);
        let lines = match lifeline.and_then(|l| l.lines.as_ref()) {
            None => vec!["reading the store…".to_string()],
            Some(Err(e)) => vec![format!("the store could not be read: {e}")],
            Some(Ok(l)) if l.is_empty() => {
                vec!["no event recorded (it was open when recording began)".to_string()]
            }
            Some(Ok(l)) => l.clone(),
        };
        for l in lines {
            // Lines from the store: made printable where they were made, and again here.
            let l = crate::text::printable(&l);
            out.extend(wrap(&format!("  {l}"), width, 4, Style::new()));
        }
    }
    out.push(Line::from(""));
    out.push(Line::styled("keepalive", theme.title()));
    for l in timeline(e, app.now) {
        out.extend(wrap(&format!("  {l}"), width, 4, Style::new()));
    }
    if let Some(info) = &s.tcp_info {
        out.push(Line::from(""));
        out.push(Line::styled("tcp_info", theme.title()));
        let fields: Vec<String> = info
            .fields()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {}", with_unit(k, v))))
            .collect();
        out.extend(wrap(
            &format!("  {}", fields.join(" · ")),
            width,
            2,
            Style::new(),
        ));
    }
    out
}

/// A `tcp_info` value with its unit: times as durations (µs or ms in the kernel), bytes in
/// IEC units, counts as they are.
fn with_unit(field: &str, v: u64) -> String {
    match field {
        "rto" | "rtt" | "rttvar" => format_rtt(u32::try_from(v).unwrap_or(u32::MAX)),
        "last_data_sent" | "last_data_recv" | "last_ack_recv" => {
            format!("{} ago", format_ms_short(v))
        }
        "total_rto_time" => format_ms_short(v),
        "bytes_acked" | "bytes_received" | "bytes_sent" => format_bytes(v),
        _ => v.to_string(),
    }
}

/// The process at the other end of a connection within this host.
fn peer_text(p: &crate::model::Peer) -> String {
    match &p.process {
        Some(proc) => format!("{}[{}] (on this host)", proc.name, proc.pid),
        None => "a socket on this host no process katop sees holds".into(),
    }
}

/// The keepalive story of one socket, in sentences: its settings (read from the socket, or
/// the sysctl defaults, said which), where it stands, when a silent peer would be noticed, and
/// what a declared middlebox makes of it.
pub fn timeline(e: &SockEntry, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(idle) = e.idle_ms() {
        out.push(format!("idle for {}", format_ms_short(idle.into())));
    }
    let Some(p) = e.params() else {
        out.push("keepalive does not apply to this socket".into());
        return out;
    };
    out.push(settings_line(&p, &e.ctx.settings));
    out.extend(state_lines(e, &p));
    if let Some(c) = e.detect(now) {
        let why = match c.basis {
            Basis::Socket => "",
            Basis::SysctlDefault => {
                " (an estimate: the socket's own settings are not readable, the sysctls stand in)"
            }
            Basis::Estimate => {
                " (an estimate: how long the data has been retransmitted is reckoned from the \
                 retransmit count and RTO)"
            }
        };
        match c.detect {
            Detect::InMs(ms) => {
                out.push(format!(
                    "if the peer went silent now, the kernel would drop it in {}{}{why}",
                    if c.is_estimate() { "~" } else { "" },
                    format_ms_short(ms.div_ceil(1000) * 1000)
                ));
                // The timer wheel's rounding, where it leaves a range.
                if let Some((lo, hi)) = c.spread.filter(|(lo, hi)| hi - lo >= 1000) {
                    out.push(format!(
                        "between {} and {} (the kernel's timer wheel rounds each timer up)",
                        format_ms_short(lo / 1000 * 1000),
                        format_ms_short(hi.div_ceil(1000) * 1000)
                    ));
                }
            }
            Detect::ZeroWindow => out.push(format!(
                "the peer advertises a zero window: while it answers the window probes the \
                 kernel keeps the connection open indefinitely (no TCP_USER_TIMEOUT){why}"
            )),
            Detect::Never => {}
        }
    }
    if let Some(r) = e.at_risk() {
        out.push(format!("at risk: {r}"));
    } else if let Some(m) = middlebox_for(&e.ctx.middleboxes, &e.sock.remote) {
        let verdict = match p.enabled {
            Some(true) if p.idle_s < m.timeout_s => {
                format!(
                    "keepalive probes after {}, so it stays remembered",
                    format_s_short(p.idle_s.into())
                )
            }
            Some(true) => format!(
                "keepalive waits {}: a silence that long gets it forgotten",
                format_s_short(p.idle_s.into())
            ),
            _ => "keepalive is off: a silence that long gets it forgotten".into(),
        };
        out.push(format!("{m}: {verdict}"));
    }
    out
}

/// `SO_KEEPALIVE on · idle 60s · intvl 10s · cnt 5 (read from the socket)`.
fn settings_line(p: &Params, k: &KernelSettings) -> String {
    let default = |v: u32, sysctl: Option<u32>| {
        if p.source == Source::Socket && sysctl == Some(v) {
            " (= sysctl)"
        } else {
            ""
        }
    };
    let enabled = match p.enabled {
        Some(true) => "on",
        Some(false) => "off",
        None => "?",
    };
    let ut = if p.user_timeout_ms > 0 {
        format!(
            " · user timeout {}",
            format_ms_short(p.user_timeout_ms.into())
        )
    } else {
        String::new()
    };
    let source = match p.source {
        Source::Socket => "read from the socket",
        Source::SysctlDefault => "sysctl defaults: not readable",
    };
    format!(
        "SO_KEEPALIVE {enabled} · idle {}{} · intvl {}{} · cnt {}{}{ut} ({source})",
        format_s_short(p.idle_s.into()),
        default(p.idle_s, k.keepalive_time_s),
        format_s_short(p.intvl_s.into()),
        default(p.intvl_s, k.keepalive_intvl_s),
        p.cnt,
        default(p.cnt, k.keepalive_probes),
    )
}

/// Where keepalive stands: off (and what happens then), hidden, the next check, the probes.
fn state_lines(e: &SockEntry, p: &Params) -> Vec<String> {
    match e.keepalive {
        None => vec![],
        Some(Keepalive::Off) => {
            let retries2 = e.ctx.settings.retries2.unwrap_or(15);
            let rto_max = e.ctx.settings.rto_max_ms.map_or(RTO_MAX_MS, u64::from);
            let give_up = if p.user_timeout_ms > 0 {
                format!(
                    "TCP_USER_TIMEOUT {} from the first retransmission",
                    format_ms_short(p.user_timeout_ms.into())
                )
            } else {
                format!(
                    "~{} of retransmissions, tcp_retries2 {retries2}",
                    format_ms_short(give_up_ms(retries2, rto_max))
                )
            };
            vec![
                "keepalive is off: if the peer dies silently, this side never notices".into(),
                format!("until the application writes (then after {give_up})"),
            ]
        }
        Some(Keepalive::Unknown) => {
            vec!["another timer hides the keepalive timer (data in flight)".into()]
        }
        Some(Keepalive::On) => {
            let t = e.sock.timer.filter(|t| t.kind == TimerKind::Keepalive);
            let probes = t.map_or(0, |t| t.retrans);
            let next = format_ms_short(t.map_or(0, |t| t.expires_ms).into());
            if probes == 0 {
                return vec![format!("next keepalive check in {next}")];
            }
            let whose = if p.source == Source::Socket {
                ""
            } else {
                ", sysctl default"
            };
            vec![
                format!(
                    "{probes} probes sent, none answered (limit {}{whose})",
                    p.cnt
                ),
                format!("next probe in {next}"),
            ]
        }
    }
}
