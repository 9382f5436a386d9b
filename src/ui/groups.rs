//! The grouped view: connections by process name and port, their idle spread, stale and
//! keepalive-off counts; an expanded group lists its processes under it.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::theme::Theme;
use crate::app::{App, Group, GroupLine, GroupSort};
use crate::columns::elide;
use crate::model::duration::format_ms_short;

/// Widths of the PORT and IDLE columns (`serves :5432 postgres`, `59m59s–59m59s`), and of the
/// counts (`CONNS▼`, `KA OFF▼`: room for the sort arrow).
const PORT: u16 = 21;
const IDLE: u16 = 13;
const COUNT: u16 = 6;
const KA_OFF: u16 = 7;

fn idle_range(min: Option<u32>, max: Option<u32>) -> String {
    match (min, max) {
        (Some(a), Some(b)) if format_ms_short(a.into()) == format_ms_short(b.into()) => {
            format_ms_short(a.into())
        }
        (Some(a), Some(b)) => format!(
            "{}–{}",
            format_ms_short(a.into()),
            format_ms_short(b.into())
        ),
        _ => String::new(),
    }
}

fn count(n: usize, w: u16, style: ratatui::style::Style) -> Cell<'static> {
    let w = usize::from(w);
    if n > 0 {
        Cell::from(Span::styled(format!("{n:>w$}"), style))
    } else {
        Cell::from(format!("{n:>w$}"))
    }
}

/// Right-aligned in the IDLE column.
fn idle_cell(text: &str) -> Cell<'static> {
    let w = usize::from(IDLE);
    Cell::from(format!("{:>w$}", elide(text, w)))
}

fn who(g: &Group) -> String {
    let name = crate::text::printable_owned(g.process.clone());
    match &g.container {
        Some(c) => format!("{} {name}", crate::text::printable(c)),
        None => name,
    }
}

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let page = usize::from(area.height.saturating_sub(1));
    let end = (app.offset + page).min(app.group_lines.len());
    // The name column takes what the numbers leave; PIDS goes first when there is no room.
    let gap: u16 = if area.width >= 100 { 2 } else { 1 };
    let with_pids = area.width >= 80;
    let port_w = if area.width >= 80 { PORT } else { 14 };
    let fixed = usize::from(
        1 + port_w + COUNT + IDLE + COUNT + KA_OFF + if with_pids { 7 + gap } else { 0 } + 6 * gap,
    );
    let room = usize::from(area.width.saturating_sub(super::wrap::MARGIN));
    let name_w = room.saturating_sub(fixed).clamp(8, 40);
    let rows = app.group_lines[app.offset.min(end)..end]
        .iter()
        .enumerate()
        .map(|(n, line)| {
            let row = row(app, *line, (name_w, usize::from(port_w), with_pids), theme);
            if app.offset + n == app.selected_group {
                row.style(theme.selected())
            } else {
                row
            }
        });
    let arrow = |s: GroupSort, title: &'static str| -> String {
        if app.group_sort == s {
            format!("{title}{}", if app.group_reverse { "▲" } else { "▼" })
        } else {
            title.to_string()
        }
    };
    let header = Row::new(vec![
        String::new(),
        arrow(
            GroupSort::Process,
            if name_w >= 20 {
                "[CONTAINER] PROCESS"
            } else {
                "PROCESS"
            },
        ),
        "PORT".into(),
        arrow(GroupSort::Count, "CONNS"),
        arrow(GroupSort::IdleMax, "IDLE"),
        arrow(GroupSort::Stale, "STALE"),
        arrow(GroupSort::KeepaliveOff, "KA OFF"),
        "PIDS".into(),
    ])
    .style(theme.header());
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(name_w as u16),
        Constraint::Length(port_w),
        Constraint::Length(COUNT),
        Constraint::Length(IDLE),
        Constraint::Length(COUNT),
        Constraint::Length(KA_OFF),
    ];
    if with_pids {
        widths.push(Constraint::Length(7));
    }
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .column_spacing(gap)
            .flex(ratatui::layout::Flex::Start),
        area,
    );
    if app.groups.is_empty() {
        let y = area.y + 1;
        if y < area.y + area.height {
            frame.render_widget(
                Paragraph::new(Span::styled(
                    if app.filter.matches_all() {
                        "no TCP connection"
                    } else {
                        "no TCP connection matches the filter (Del clears it)"
                    },
                    theme.dim(),
                )),
                Rect::new(area.x, y, area.width, 1),
            );
        }
    }
}

/// A group's row, or one of its processes' under it.
fn row(
    app: &App,
    line: GroupLine,
    (name_w, port_w, with_pids): (usize, usize, bool),
    theme: Theme,
) -> Row<'static> {
    match line {
        GroupLine::Group(gi) => {
            let g = &app.groups[gi as usize];
            let open = if app.expanded.contains(&g.id()) {
                "▾"
            } else {
                "▸"
            };
            let pids = match g.members.len() {
                0 => String::new(),
                1 => format!("{:>7}", g.members[0].pid),
                m => format!("{m:>2} pids"),
            };
            Row::new(vec![
                Cell::from(open),
                Cell::from(elide(&who(g), name_w).into_owned()),
                Cell::from(elide(&g.role.to_string(), port_w).into_owned()),
                count(g.count, COUNT, ratatui::style::Style::new()),
                idle_cell(&idle_range(g.idle_min_ms, g.idle_max_ms)),
                count(g.stale, COUNT, theme.stale()),
                count(g.keepalive_off, KA_OFF, theme.warn()),
                Cell::from(pids),
            ])
        }
        GroupLine::Member(gi, mi) => {
            let g = &app.groups[gi as usize];
            let m = &g.members[mi as usize];
            // The PIDS column names the process when it is shown.
            let name = if with_pids {
                format!("  └ {}", crate::text::printable(&g.process))
            } else {
                format!("  └ {}[{}]", crate::text::printable(&g.process), m.pid)
            };
            Row::new(vec![
                Cell::from(""),
                Cell::from(elide(&name, name_w).into_owned()),
                Cell::from(""),
                count(m.count, COUNT, ratatui::style::Style::new()),
                idle_cell(
                    &m.idle_max_ms
                        .map(|ms| format_ms_short(ms.into()))
                        .unwrap_or_default(),
                ),
                count(m.stale, COUNT, theme.stale()),
                count(m.keepalive_off, KA_OFF, theme.warn()),
                Cell::from(format!("{:>7}", m.pid)),
            ])
            .style(theme.dim())
        }
    }
}
