//! The detail pane: every field katop knows about the selected socket, the stale reasons in
//! words, and its keepalive timeline.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::theme::Theme;
use crate::app::App;
use crate::model::duration::{format_ms_short, format_secs};
use crate::model::{Keepalive, KernelSettings, Owner, SockEntry, TimerKind};

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
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
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
                e.service.map(|x| format!("  ({x})")).unwrap_or_default()
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
        }
        Owner::None => out.push(kv(theme, "process", "none holds it")),
        Owner::Unknown => out.push(kv(
            theme,
            "process",
            "not visible (another user's; run as root)",
        )),
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
        timeline(e, app.table.settings())
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

/// The keepalive story of one socket, in sentences, with the system's settings where the
/// socket's own are not known (per-socket values are read in a later version).
pub fn timeline(e: &SockEntry, k: &KernelSettings) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(idle) = e.idle_ms() {
        out.push(format!("idle for {}", format_ms_short(idle.into())));
    }
    let (intvl, cnt) = (k.keepalive_intvl_s, k.keepalive_probes);
    match e.keepalive {
        None => out.push("keepalive does not apply to this socket".into()),
        Some(Keepalive::Off) => {
            out.push("keepalive is off: if the peer dies silently, this side never notices".into());
            out.push(
                "until the application writes (then after tcp_retries2 retransmissions)".into(),
            );
        }
        Some(Keepalive::Unknown) => {
            out.push("another timer hides the keepalive timer (data in flight)".into());
        }
        Some(Keepalive::On) => {
            let t = e.sock.timer.filter(|t| t.kind == TimerKind::Keepalive);
            let probes = t.map_or(0, |t| t.retrans);
            let next = t.map_or(0, |t| t.expires_ms);
            if probes == 0 {
                out.push(format!(
                    "next keepalive check in {}",
                    format_ms_short(next.into())
                ));
            } else {
                let limit = cnt.map_or_else(|| "?".into(), |c| c.to_string());
                out.push(format!(
                    "{probes} probes sent, none answered (limit {limit} by sysctl default)"
                ));
                out.push(format!("next probe in {}", format_ms_short(next.into())));
            }
            if let (Some(i), Some(c)) = (intvl, cnt) {
                let left = u64::from(c.saturating_sub(u32::from(probes)));
                let dead_ms = u64::from(next) + left * u64::from(i) * 1000;
                out.push(format!(
                    "if the peer stays silent, the kernel drops it in ~{} ({}s × {c} probes, system defaults)",
                    format_secs(dead_ms / 1000),
                    i
                ));
            }
        }
    }
    out
}
