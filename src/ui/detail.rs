//! The detail pane: every field katop knows about the selected socket, the stale reasons in
//! words, and its keepalive timeline.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::theme::Theme;
use crate::app::App;
use std::time::Instant;

use crate::model::duration::{format_ms_short, format_secs};
use crate::model::keepalive::{middlebox_for, Source};
use crate::model::retransmit::{give_up_ms, RTO_MAX_MS};
use crate::model::{Basis, Detect, Keepalive, KernelSettings, Owner, Params, SockEntry, TimerKind};

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" details (Enter closes) ");
    let entry = app.selected.and_then(|k| app.table.get(&k));
    let lines = match entry {
        Some(e) => lines(&e, app, theme),
        None => vec![Line::styled(
            "the selected socket is gone: it closed since it was selected",
            theme.warn(),
        )],
    };
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn kv(theme: Theme, k: &str, v: &str) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{k:>13} "), theme.label()),
        Span::raw(clean(v)),
    ])
}

fn clean(s: &str) -> String {
    crate::text::printable(s).into_owned()
}

#[allow(clippy::too_many_lines)] // the pane top to bottom, in reading order
fn lines(e: &SockEntry, app: &App, theme: Theme) -> Vec<Line<'static>> {
    let s = e.sock;
    let mut out = vec![
        kv(
            theme,
            "socket",
            &format!(
                "{} {} {}",
                s.proto.name(),
                s.family.name(),
                s.state.name(s.proto)
            ),
        ),
        kv(theme, "local", &s.local.to_string()),
        kv(
            theme,
            "remote",
            &format!(
                "{}{}",
                s.remote,
                e.service().map(|x| format!("  ({x})")).unwrap_or_default()
            ),
        ),
    ];
    match &s.owner {
        Owner::Process { process, fd } => {
            out.push(kv(
                theme,
                "process",
                &format!("{}[{}] fd {fd}", process.name, process.pid),
            ));
            out.push(kv(theme, "cmdline", &process.cmdline));
            if let Some(all) = e.holders() {
                let list: Vec<String> = all
                    .iter()
                    .map(|h| format!("{}[{}] fd {}", h.process.name, h.process.pid, h.fd))
                    .collect();
                out.push(kv(
                    theme,
                    "held by",
                    &format!("{} fds: {}", list.len(), list.join(", ")),
                ));
            }
        }
        Owner::None if s.inode.0 == 0 => out.push(kv(
            theme,
            "process",
            "none yet: no application has accepted it from its listener",
        )),
        Owner::None => out.push(kv(theme, "process", "none holds it")),
        Owner::Unknown => out.push(kv(
            theme,
            "process",
            "not visible (another user's; run as root)",
        )),
    }
    if let Some(ns) = e.netns_name() {
        out.push(kv(
            theme,
            "namespace",
            &format!("{ns} (netns {})", s.netns.0),
        ));
    }
    if let Some(c) = e.container() {
        out.push(kv(theme, "container", c));
    }
    let uid = s.uid.map_or_else(|| "?".into(), |u| u.to_string());
    out.push(kv(
        theme,
        "ids",
        &format!(
            "uid {uid} · inode {} · cookie {} · netns {}",
            s.inode.0, s.cookie.0, s.netns.0
        ),
    ));
    if s.interface != 0 {
        let name = app
            .table
            .interfaces
            .get(&s.interface)
            .map_or_else(|| s.interface.to_string(), ToString::to_string);
        out.push(kv(theme, "interface", &name));
    }
    out.push(kv(
        theme,
        "queues",
        &format!("recv {} · send {}", s.recv_q, s.send_q),
    ));
    out.push(kv(
        theme,
        "seen",
        &format!(
            "{} ago · in this state {}",
            format_ms_short(e.age(app.now).as_millis() as u64),
            format_ms_short(
                app.now
                    .saturating_duration_since(e.state_since())
                    .as_millis() as u64
            )
        ),
    ));
    if let Some(t) = s.timer {
        out.push(kv(
            theme,
            "timer",
            &format!(
                "{} fires in {} · count {}",
                t.kind.name(),
                format_ms_short(t.expires_ms.into()),
                t.retrans
            ),
        ));
    }
    if let Some(why) = e.protected() {
        out.push(kv(theme, "kill", &format!("refused: {why}")));
    }
    out.push(Line::from(""));
    if e.stale.is_empty() {
        out.push(Line::styled("not stale", theme.good()));
    } else {
        out.push(Line::styled("stale because", theme.stale()));
        for r in e.stale.iter() {
            out.push(Line::from(vec![
                Span::styled(format!("  {}: ", r.name()), theme.stale()),
                Span::raw(r.explain()),
            ]));
        }
    }
    out.push(Line::from(""));
    out.push(Line::styled("keepalive", theme.title()));
    out.extend(
        timeline(e, app.now)
            .into_iter()
            .map(|l| Line::raw(format!("  {l}"))),
    );
    if let Some(info) = &s.tcp_info {
        out.push(Line::from(""));
        out.push(Line::styled("tcp_info", theme.title()));
        let fields: Vec<String> = info
            .fields()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
            .collect();
        for chunk in fields.chunks(3) {
            out.push(Line::raw(format!("  {}", chunk.join(" · "))));
        }
    }
    out
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
            Detect::InMs(ms) => out.push(format!(
                "if the peer went silent now, the kernel would drop it in {}{}{why}",
                if c.is_estimate() { "~" } else { "" },
                format_secs(ms.div_ceil(1000))
            )),
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
                    "keepalive probes after {}s, so it stays remembered",
                    p.idle_s
                )
            }
            Some(true) => format!(
                "keepalive waits {}s: a silence that long gets it forgotten",
                p.idle_s
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
        "SO_KEEPALIVE {enabled} · idle {}s{} · intvl {}s{} · cnt {}{}{ut} ({source})",
        p.idle_s,
        default(p.idle_s, k.keepalive_time_s),
        p.intvl_s,
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
                    format_secs(give_up_ms(retries2, rto_max) / 1000)
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
