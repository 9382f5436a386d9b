//! The socket table: only the visible rows are built, each frame. Columns that do not fit go
//! compact, then the least useful are dropped; the footer says how many are hidden and that
//! ← → bring them.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::theme::Theme;
use crate::app::{App, Line};
use crate::columns::{self, elide, Column};
use crate::model::SockEntry;
use crate::text::printable_owned;

enum Kind {
    Live {
        stale: bool,
        new: bool,
        marked: bool,
    },
    Summary,
    Gone,
}

/// One visible row: each column's full text (and compact text, when the width asks for it),
/// what kind of row, and whether it is selected.
struct Shown {
    line: Line,
    full: Vec<String>,
    short: Vec<String>,
    kind: Kind,
    selected: bool,
}

/// The visible rows and how the columns fit: shared by rendering and the viewport.
struct Visible {
    columns: Vec<Column>,
    rows: Vec<Shown>,
    /// Each column's width in the chosen form.
    widths: Vec<usize>,
    fit: columns::Fit,
}

/// The dashboard's columns, less NETNS with one namespace (an empty CONTAINER column gives
/// its room away as every empty optional column does).
fn dashboard_columns(app: &App) -> Vec<Column> {
    columns::for_table(&app.columns, app.table.ctx.namespaces.len(), true)
}

fn texts(e: &SockEntry, cols: &[Column], app: &App) -> Vec<String> {
    cols.iter()
        .map(|c| printable_owned(c.cell(e, app.now)))
        .collect()
}

/// A closed row's STALE cell says why it ended (`~` when inferred), once known.
fn with_end(mut texts: Vec<String>, cols: &[Column], closed: &crate::app::Closed) -> Vec<String> {
    if let (Some((cause, source)), Some(k)) =
        (closed.end, cols.iter().position(|c| *c == Column::Stale))
    {
        texts[k] = crate::model::ends::label(cause, source);
    }
    texts
}

/// The compact texts of the rows, worked out only when the full ones do not fit.
fn compact_texts(app: &App, cols: &[Column], rows: &mut [Shown]) {
    for r in rows.iter_mut() {
        let entry = match r.line {
            Line::Sock(i) => Some(app.table.entry(i as usize)),
            Line::Closed(i) => Some(SockEntry::bare(
                &app.closed[i as usize].sock,
                app.now,
                &app.table.ctx,
            )),
            Line::TimeWait(_) => None,
        };
        r.short = match entry {
            Some(e) => {
                let short = cols
                    .iter()
                    .map(|c| printable_owned(c.compact_cell(&e, app.now)))
                    .collect();
                match r.line {
                    Line::Closed(i) => with_end(short, cols, &app.closed[i as usize]),
                    _ => short,
                }
            }
            None => cols
                .iter()
                .zip(&r.full)
                .map(|(c, t)| {
                    if *c == Column::State {
                        "TIME-WAIT".into()
                    } else {
                        t.clone()
                    }
                })
                .collect(),
        };
    }
}

/// The rows on screen, with every column's texts.
fn shown_rows(app: &App, cols: &[Column], area: Rect) -> Vec<Shown> {
    let page = usize::from(area.height.saturating_sub(1));
    let end = (app.offset + page).min(app.lines.len());
    let selected = app.selected_line();
    let mut rows = Vec::with_capacity(end.saturating_sub(app.offset));
    for (n, line) in app.lines[app.offset.min(end)..end].iter().enumerate() {
        let is_sel = selected == Some(app.offset + n);
        match line {
            Line::Sock(i) => {
                let e = app.table.entry(*i as usize);
                let kind = Kind::Live {
                    stale: !e.stale.is_empty(),
                    new: app.is_new(e.first_seen()),
                    marked: app.marked.contains(&e.key()),
                };
                rows.push(Shown {
                    line: *line,
                    full: texts(&e, cols, app),
                    short: Vec::new(),
                    kind,
                    selected: is_sel,
                });
            }
            Line::Closed(i) => {
                let closed = &app.closed[*i as usize];
                let e = SockEntry::bare(&closed.sock, app.now, &app.table.ctx);
                rows.push(Shown {
                    line: *line,
                    full: with_end(texts(&e, cols, app), cols, closed),
                    short: Vec::new(),
                    kind: Kind::Gone,
                    selected: false,
                });
            }
            Line::TimeWait(t) => {
                let (remote, count) = app.time_wait[*t as usize];
                let full: Vec<String> = cols
                    .iter()
                    .map(|c| match c {
                        Column::Proto => "tcp".to_string(),
                        Column::State => "TIME_WAIT".to_string(),
                        Column::Remote => format!("{remote} ×{count}"),
                        _ => String::new(),
                    })
                    .collect();
                rows.push(Shown {
                    line: *line,
                    full,
                    short: Vec::new(),
                    kind: Kind::Summary,
                    selected: false,
                });
            }
        }
    }
    rows
}

/// Leaves out the optional columns with nothing to show in these rows (the peer, where no
/// connection stays on this host; the rate before a second poll): they give their room to
/// the others.
fn drop_empty(app: &App, cols: &mut Vec<Column>, rows: &mut [Shown]) {
    let present: Vec<bool> = (0..cols.len())
        .map(|i| {
            cols[i].is_essential()
                || cols[i] == app.sort
                || rows.iter().any(|r| !r.full[i].is_empty())
        })
        .collect();
    if !present.contains(&false) {
        return;
    }
    let keep = |v: &mut Vec<String>| {
        let mut i = 0;
        v.retain(|_| {
            i += 1;
            present[i - 1]
        });
    };
    for r in rows.iter_mut() {
        keep(&mut r.full);
    }
    let mut i = 0;
    cols.retain(|_| {
        i += 1;
        present[i - 1]
    });
}

fn visible(app: &App, area: Rect) -> Visible {
    let mut cols = dashboard_columns(app);
    let mut rows = shown_rows(app, &cols, area);
    drop_empty(app, &mut cols, &mut rows);
    // A mark shows as a `*` before the row, so it survives NO_COLOR: a column of its own.
    let marks = if rows
        .iter()
        .any(|r| matches!(r.kind, Kind::Live { marked: true, .. }))
    {
        3
    } else {
        0
    };
    let width_of = |rows: &[Shown], short: bool| -> Vec<usize> {
        cols.iter()
            .enumerate()
            .map(|(i, c)| {
                rows.iter()
                    .map(|r| if short { &r.short[i] } else { &r.full[i] }.width())
                    .max()
                    .unwrap_or(0)
                    // The sorted column's header carries an arrow.
                    .max(c.header().len() + usize::from(*c == app.sort))
                    .min(c.cap())
            })
            .collect()
    };
    let room = usize::from(area.width.saturating_sub(super::wrap::MARGIN)).saturating_sub(marks);
    let full = width_of(&rows, false);
    let mut fit = columns::fit(&cols, &full, &full, room, app.hscroll);
    if fit.compact.contains(&true) {
        compact_texts(app, &cols, &mut rows);
        let short = width_of(&rows, true);
        fit = columns::fit(&cols, &full, &short, room, app.hscroll);
    }
    let widths = fit.widths.clone();
    Visible {
        columns: cols,
        rows,
        widths,
        fit,
    }
}

/// The columns on screen with their x span, and how many did not fit (dropped on the right,
/// scrolled off on the left): for the viewport and the footer's note.
pub fn columns_on_screen(app: &App, area: Rect) -> (Vec<(Column, u16, u16)>, columns::Fit) {
    let v = visible(app, area);
    let mut x = area.x;
    if marked_any(&v) {
        x += 1 + v.fit.gap as u16;
    }
    let mut out = Vec::with_capacity(v.fit.keep.len());
    for &i in &v.fit.keep {
        let w = v.widths[i] as u16;
        out.push((v.columns[i], x, x + w + v.fit.gap as u16 - 1));
        x += w + v.fit.gap as u16;
    }
    (out, v.fit)
}

fn marked_any(v: &Visible) -> bool {
    v.rows
        .iter()
        .any(|r| matches!(r.kind, Kind::Live { marked: true, .. }))
}

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let v = visible(app, area);
    let marks = marked_any(&v);
    let keep = &v.fit.keep;
    let header = Row::new(
        std::iter::once(Cell::from(""))
            .take(usize::from(marks))
            .chain(keep.iter().map(|&i| {
                let c = v.columns[i];
                let arrow = match (c == app.sort, app.reverse) {
                    (false, _) => "",
                    (true, false) => "▼",
                    (true, true) => "▲",
                };
                Cell::from(format!("{}{arrow}", c.header()))
            })),
    )
    .style(theme.header());
    let body = v.rows.iter().map(|r| {
        let base = match r.kind {
            Kind::Live { marked: true, .. } => theme.marked(),
            Kind::Live { new: true, .. } => theme.new_row(),
            Kind::Live { .. } => Style::new(),
            Kind::Summary => theme.dim(),
            Kind::Gone => theme.gone(),
        };
        let stale_row = matches!(r.kind, Kind::Live { stale: true, .. });
        let texts: Vec<&String> = (0..v.columns.len())
            .map(|i| {
                if v.fit.compact[i] {
                    &r.short[i]
                } else {
                    &r.full[i]
                }
            })
            .collect();
        let mark = matches!(r.kind, Kind::Live { marked: true, .. });
        let cells = std::iter::once(Cell::from(if mark { "*" } else { "" }))
            .take(usize::from(marks))
            .chain(keep.iter().map(|&i| {
                let c = v.columns[i];
                let w = v.widths[i];
                let text = elide(texts[i], w);
                let text = if c.right_aligned() {
                    format!("{text:>w$}")
                } else {
                    text.into_owned()
                };
                let probing = c == Column::Keepalive && texts[i].starts_with("probe");
                if (c == Column::Stale && stale_row) || probing {
                    Cell::from(Span::styled(text, theme.stale()))
                } else if c == Column::Keepalive && texts[i] == "off" {
                    Cell::from(Span::styled(text, theme.warn()))
                } else {
                    Cell::from(text)
                }
            }));
        let row = Row::new(cells).style(base);
        if r.selected {
            row.style(base.patch(theme.selected()))
        } else {
            row
        }
    });
    let constraints: Vec<Constraint> = std::iter::once(Constraint::Length(1))
        .take(usize::from(marks))
        .chain(keep.iter().map(|&i| Constraint::Length(v.widths[i] as u16)))
        .collect();
    let table = Table::new(body, constraints)
        .header(header)
        .column_spacing(v.fit.gap as u16)
        .flex(ratatui::layout::Flex::Start);
    frame.render_widget(table, area);
    if app.lines.is_empty() {
        let msg = if app.polls == 0 {
            "waiting for the first poll…"
        } else {
            "no socket matches the filter (Del clears it)"
        };
        let y = area.y + 1;
        if y < area.y + area.height {
            frame.render_widget(
                Paragraph::new(Span::styled(msg, theme.dim())),
                Rect::new(area.x, y, area.width, 1),
            );
        }
    }
}
