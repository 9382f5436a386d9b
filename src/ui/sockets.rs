//! The socket table: only the visible rows are built, each frame.

use crate::text::printable_owned;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

use super::theme::Theme;
use crate::app::{App, Line};
use crate::columns::{self, Column};
use crate::model::SockEntry;

/// The dashboard's columns: [`Column::DASHBOARD`].
const COLUMNS: [Column; Column::DASHBOARD.len()] = Column::DASHBOARD;

/// Widest a column may get, so one long value does not push the others off screen.
fn cap(c: Column) -> usize {
    match c {
        Column::Local | Column::Remote => 47,
        Column::Stale => 32,
        _ => 20,
    }
}

enum Kind {
    Live {
        stale: bool,
        new: bool,
        marked: bool,
    },
    Summary,
    Gone,
}

/// The visible rows' texts, each column's width, and which columns fit: shared by rendering
/// and by mouse clicks on the header.
struct Visible {
    rows: Vec<(Vec<String>, Kind, bool)>,
    widths: Vec<usize>,
    keep: Vec<usize>,
}

fn visible(app: &App, area: Rect) -> Visible {
    let page = usize::from(area.height.saturating_sub(1));
    let end = (app.offset + page).min(app.lines.len());
    let selected = app.selected_line();
    let mut rows: Vec<(Vec<String>, Kind, bool)> =
        Vec::with_capacity(end.saturating_sub(app.offset));
    for (n, line) in app.lines[app.offset.min(end)..end].iter().enumerate() {
        let is_sel = selected == Some(app.offset + n);
        match line {
            Line::Sock(i) => {
                let e = app.table.entry(*i as usize);
                let marked = app.marked.contains(&e.key());
                let kind = Kind::Live {
                    stale: !e.stale.is_empty(),
                    new: app.is_new(e.first_seen()),
                    marked,
                };
                rows.push((cells(&e, app), kind, is_sel));
            }
            Line::Closed(i) => {
                let e = SockEntry::bare(&app.closed[*i as usize].0, app.now, &app.table.ctx);
                rows.push((cells(&e, app), Kind::Gone, is_sel));
            }
            Line::TimeWait(t) => {
                let (remote, count) = app.time_wait[*t as usize];
                let texts = COLUMNS
                    .iter()
                    .map(|c| match c {
                        Column::Proto => "tcp".to_string(),
                        Column::State => "TIME_WAIT".to_string(),
                        Column::Remote => format!("{remote} ×{count}"),
                        _ => String::new(),
                    })
                    .collect();
                rows.push((texts, Kind::Summary, false));
            }
        }
    }
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r.0[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.header().len() + 1)
                .min(cap(*c))
        })
        .collect();
    let mut widths = widths;
    // One namespace read: its name would be the same on every row.
    let candidates: Vec<usize> = (0..COLUMNS.len())
        .filter(|&i| COLUMNS[i] != Column::Netns || app.table.ctx.namespaces.len() > 1)
        .collect();
    let cols: Vec<Column> = candidates.iter().map(|&i| COLUMNS[i]).collect();
    let ws: Vec<usize> = candidates.iter().map(|&i| widths[i]).collect();
    let keep: Vec<usize> = columns::fit(&cols, &ws, usize::from(area.width))
        .into_iter()
        .map(|k| candidates[k])
        .collect();
    // A mark shows as a `*` before the first shown column too, so it survives NO_COLOR.
    if let Some(&first) = keep.first() {
        let mut any = false;
        for (texts, kind, _) in &mut rows {
            if matches!(kind, Kind::Live { marked: true, .. }) {
                texts[first].insert(0, '*');
                any = true;
            }
        }
        if any {
            let longest = rows.iter().map(|r| r.0[first].chars().count()).max();
            widths[first] = widths[first]
                .max(longest.unwrap_or(0))
                .min(cap(COLUMNS[first]) + 1);
        }
    }
    Visible { rows, widths, keep }
}

/// The column whose header is at screen column `x` of the table `area`.
pub fn column_at(app: &App, area: Rect, x: u16) -> Option<Column> {
    let v = visible(app, area);
    let mut start = area.x;
    for &i in &v.keep {
        let end = start + v.widths[i] as u16;
        if x >= start && x < end + 2 {
            return Some(COLUMNS[i]);
        }
        start = end + 2;
    }
    None
}

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let Visible { rows, widths, keep } = visible(app, area);
    let header = Row::new(keep.iter().map(|&i| {
        let c = COLUMNS[i];
        let mark = if c == app.sort {
            if app.reverse {
                "▲"
            } else {
                "▼"
            }
        } else {
            ""
        };
        Cell::from(format!("{}{mark}", c.header()))
    }))
    .style(theme.header());
    let body = rows.into_iter().map(|(texts, kind, sel)| {
        let base = match kind {
            Kind::Live { marked: true, .. } => theme.marked(),
            Kind::Live { new: true, .. } => theme.new_row(),
            Kind::Live { .. } => Style::new(),
            Kind::Summary => theme.dim(),
            Kind::Gone => theme.gone(),
        };
        let stale_row = matches!(kind, Kind::Live { stale: true, .. });
        let cells = keep.iter().map(|&i| {
            let c = COLUMNS[i];
            let text = texts[i].clone();
            let text = if c.right_aligned() {
                format!("{text:>w$}", w = widths[i])
            } else {
                text
            };
            let probing = c == Column::Keepalive && texts[i].starts_with("probe");
            if (c == Column::Stale && stale_row) || probing {
                Cell::from(Span::styled(text, theme.stale()))
            } else if c == Column::Keepalive && texts[i] == "off" {
                Cell::from(Span::styled(text, theme.warn()))
            } else {
                Cell::from(text)
            }
        });
        let row = Row::new(cells).style(base);
        if sel {
            row.style(base.patch(theme.selected()))
        } else {
            row
        }
    });
    let constraints: Vec<Constraint> = keep
        .iter()
        .map(|&i| Constraint::Length(widths[i] as u16))
        .collect();
    let table = Table::new(body, constraints)
        .header(header)
        .column_spacing(2);
    frame.render_widget(table, area);
    if app.lines.is_empty() {
        let msg = if app.polls == 0 {
            "waiting for the first poll…"
        } else {
            "no socket matches the filter"
        };
        let y = area.y + 1;
        if y < area.y + area.height {
            frame.render_widget(
                ratatui::widgets::Paragraph::new(Span::styled(msg, theme.dim())),
                Rect::new(area.x, y, area.width, 1),
            );
        }
    }
}

fn cells(e: &SockEntry, app: &App) -> Vec<String> {
    COLUMNS
        .iter()
        .map(|c| printable_owned(c.cell(e, app.now)))
        .collect()
}
