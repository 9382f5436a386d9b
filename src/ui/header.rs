//! The header: what is being watched, what it costs, counts, and the system's keepalive promise.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

use super::theme::Theme;
use super::wrap::fit_spans;
use crate::app::App;
use crate::model::duration::{format_ms_short, format_s_short};

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let t = &app.table;
    let mut first = title(app, theme);
    if app.paused {
        first.push(Span::styled("  PAUSED", theme.warn()));
    }
    let mut states = vec![];
    for &(name, n) in &app.state_counts {
        states.push(Span::styled(format!("{name} "), theme.label()));
        states.push(Span::raw(format!("{n}  ")));
    }
    let mut stale = vec![Span::styled("stale: ", theme.label())];
    let counts = &app.stale_counts;
    if counts.is_empty() {
        stale.push(Span::styled("none", theme.good()));
    }
    for &(r, n) in counts {
        stale.push(Span::styled(format!("{} {n}  ", r.name()), theme.stale()));
    }
    let ka = keepalive_line(t, theme);
    // The sparklines only where they leave the counts their room.
    let spark_width = if area.width >= 100 {
        (area.width / 6).min(26)
    } else {
        0
    };
    let [text, spark] =
        Layout::horizontal([Constraint::Min(40), Constraint::Length(spark_width)]).areas(area);
    let lines: Vec<Line> = [first, states, stale, ka]
        .into_iter()
        .map(|spans| fit_spans(spans, text.width))
        .collect();
    frame.render_widget(Paragraph::new(lines), text);
    if spark_width == 0 {
        return;
    }

    // Two small sparklines: ESTABLISHED TCP connections and stale counts over the last polls.
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .split(spark);
    let width = usize::from(spark.width);
    let tail = |f: fn(&crate::app::Sample) -> u64| -> Vec<u64> {
        let skip = app.history.len().saturating_sub(width);
        app.history.iter().skip(skip).map(f).collect()
    };
    let est = tail(|s| s.established);
    let st = tail(|s| s.stale);
    let label = |text: String| {
        Paragraph::new(fit_spans(
            vec![Span::styled(text, theme.label())],
            spark.width,
        ))
    };
    frame.render_widget(
        label(format!("tcp estab {}", est.last().copied().unwrap_or(0))),
        rows[0],
    );
    frame.render_widget(
        Sparkline::default()
            .data(&est)
            .style(theme.spark_established()),
        rows[1],
    );
    frame.render_widget(
        label(format!("stale {}", st.last().copied().unwrap_or(0))),
        rows[2],
    );
    frame.render_widget(
        Sparkline::default().data(&st).style(theme.spark_stale()),
        rows[3],
    );
}

/// How many namespaces are read, how many are containers', and how fresh the oldest data is
/// when namespaces are refreshed at different rates.
fn namespaces(t: &crate::model::ConnTable, theme: Theme) -> Vec<Span<'static>> {
    let ns = &t.ctx.namespaces;
    if ns.len() <= 1 {
        return Vec::new();
    }
    let containers = ns.iter().filter(|n| n.container.is_some()).count();
    let mut out = vec![Span::raw(format!(
        " · {} namespaces ({containers} containers)",
        ns.len()
    ))];
    let oldest = ns.iter().map(|n| n.age).max().unwrap_or_default();
    if oldest >= std::time::Duration::from_secs(2) {
        out.push(Span::styled(
            format!(
                " · oldest data {}",
                format_ms_short(oldest.as_millis() as u64)
            ),
            theme.label(),
        ));
    }
    out
}

/// The system keepalive settings, when a silent peer is dropped, conntrack's timeout and the
/// declared middleboxes.
fn keepalive_line(t: &crate::model::ConnTable, theme: Theme) -> Vec<Span<'static>> {
    let s = t.settings();
    let show = |v: Option<u32>| v.map_or_else(|| "?".into(), |v| v.to_string());
    let time = |v: Option<u32>| v.map_or_else(|| "?".into(), |v| format_s_short(v.into()));
    let mut ka = vec![
        Span::styled("keepalive ", theme.label()),
        Span::raw(format!(
            "{} + {} × {} ",
            time(s.keepalive_time_s),
            time(s.keepalive_intvl_s),
            show(s.keepalive_probes)
        )),
    ];
    if let Some(after) = s.dead_peer_after_s() {
        ka.push(Span::raw("→ a silent peer is dropped after "));
        ka.push(Span::styled(format_s_short(after), theme.title()));
    }
    if let Some(ct) = s.conntrack_established_s {
        ka.push(Span::styled(
            format!("  conntrack {}", format_s_short(ct.into())),
            theme.label(),
        ));
    }
    // These are the host's; namespaces with their own say so, and those whose katop does not
    // know (unread, or the past: the store keeps the host's only) are not said to differ.
    let unknown = crate::model::KernelSettings::default();
    let (differ, not_known) =
        t.ctx
            .namespaces
            .iter()
            .filter(|n| n.settings != *s)
            .fold((0, 0), |(d, u), n| {
                if n.settings == unknown {
                    (d, u + 1)
                } else {
                    (d + 1, u)
                }
            });
    if let Some(note) = namespaces_note(differ, not_known) {
        ka.push(Span::styled(note, theme.warn()));
    }
    // Declared middleboxes, tightest first: what `at-risk` is measured against.
    let mut declared: Vec<&crate::model::Middlebox> = t.ctx.declared.iter().collect();
    declared.sort_by_key(|m| m.timeout_s);
    for m in declared.iter().take(3) {
        ka.push(Span::styled(
            format!("  {} {}", m.name, format_s_short(m.timeout_s.into())),
            theme.warn(),
        ));
    }
    if declared.len() > 3 {
        ka.push(Span::styled(
            format!("  +{} middleboxes", declared.len() - 3),
            theme.warn(),
        ));
    }
    ka
}

/// How many namespaces have keepalive settings of their own, and how many katop does not
/// know the settings of; `None` when neither.
fn namespaces_note(differ: usize, not_known: usize) -> Option<String> {
    let namespaces = |n: usize| if n == 1 { "namespace" } else { "namespaces" };
    match (differ, not_known) {
        (0, 0) => None,
        (d, 0) => Some(format!("  (differ in {d} {})", namespaces(d))),
        (0, u) => Some(format!("  (not known in {u} {})", namespaces(u))),
        (d, u) => Some(format!(
            "  (differ in {d} {}, not known in {u})",
            namespaces(d)
        )),
    }
}

/// The first line: the host, the poll and its cost, the namespaces; or which past moment is
/// shown, first and loudly, so the past is never read as the present.
fn title(app: &App, theme: Theme) -> Vec<Span<'static>> {
    let t = &app.table;
    let mut first = match &app.past {
        // The past must never pass for the present: said first, and loudly.
        Some(past) => vec![
            Span::styled(
                format!(
                    " THE PAST: {} ({} ago) ",
                    crate::actions::log::rfc3339(past.at),
                    format_ms_short(
                        std::time::SystemTime::now()
                            .duration_since(past.at)
                            .unwrap_or_default()
                            .as_millis() as u64
                    )
                ),
                theme.past(),
            ),
            Span::raw(format!(
                " {} · from {} · {} sockets · t T b move, b now: live",
                crate::text::printable(&app.host),
                past.from,
                t.len()
            )),
        ],
        None => vec![
            Span::styled("katop ", theme.title()),
            Span::raw(format!(
                "{} · every {} · poll {} · {} sockets",
                crate::text::printable(&app.host),
                format_ms_short(app.interval.as_millis() as u64),
                crate::model::duration::format_ms_tenths(t.cost.total.as_millis() as u64),
                t.len()
            )),
        ],
    };
    if app.past.is_none() {
        first.extend(namespaces(t, theme));
    }
    first
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespaces_say_whether_their_settings_differ_or_are_unknown() {
        let note = super::namespaces_note;
        assert_eq!(note(0, 0), None);
        assert_eq!(note(1, 0).unwrap(), "  (differ in 1 namespace)");
        assert_eq!(note(3, 0).unwrap(), "  (differ in 3 namespaces)");
        assert_eq!(note(0, 1).unwrap(), "  (not known in 1 namespace)");
        assert_eq!(
            note(2, 4).unwrap(),
            "  (differ in 2 namespaces, not known in 4)"
        );
    }
}
