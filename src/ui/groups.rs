//! The grouped view: connections by (process, remote service), with idle spread and stale counts.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

use super::theme::Theme;
use crate::app::App;
use crate::model::duration::format_ms_short;

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let page = usize::from(area.height.saturating_sub(1));
    let end = (app.offset + page).min(app.groups.len());
    let idle = |v: Option<u32>| v.map(|ms| format_ms_short(ms.into())).unwrap_or_default();
    let rows = app.groups[app.offset.min(end)..end]
        .iter()
        .enumerate()
        .map(|(n, g)| {
            let stale = if g.stale > 0 {
                Span::styled(g.stale.to_string(), theme.stale())
            } else {
                Span::raw("0")
            };
            let off = if g.keepalive_off > 0 {
                Span::styled(g.keepalive_off.to_string(), theme.warn())
            } else {
                Span::raw("0")
            };
            let who = match &g.container {
                Some(c) => format!("{c} {}", g.process),
                None => g.process.clone(),
            };
            let row = Row::new(vec![
                Cell::from(crate::text::printable_owned(who)),
                Cell::from(g.peer.clone()),
                Cell::from(format!("{:>5}", g.count)),
                Cell::from(format!("{:>8}", idle(g.idle_min_ms))),
                Cell::from(format!("{:>8}", idle(g.idle_max_ms))),
                Cell::from(stale),
                Cell::from(off),
            ]);
            if app.offset + n == app.selected_group {
                row.style(theme.selected())
            } else {
                row
            }
        });
    let header = Row::new([
        "[CONTAINER] PROCESS",
        "PEER",
        "CONNS",
        "IDLE MIN",
        "IDLE MAX",
        "STALE",
        "KA OFF",
    ])
    .style(theme.header());
    let widths = [
        Constraint::Min(16),
        Constraint::Min(14),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(2),
        area,
    );
    if app.groups.is_empty() {
        let y = area.y + 1;
        if y < area.y + area.height {
            frame.render_widget(
                Span::styled("no TCP connection matches the filter", theme.dim()),
                Rect::new(area.x, y, area.width, 1),
            );
        }
    }
}
