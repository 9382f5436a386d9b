//! Rendering: a pure function of [`App`] into a ratatui frame.
//!
//! ```text
//! ┌ header: host, poll cost, counts by state and stale reason, keepalive settings, sparklines ┐
//! │ socket table (or groups)                    │ detail pane (Enter; below when narrow)    │
//! │ warning line, while the last poll's results are partial                                  │
//! └ status line: filter being typed, last message, or key hints                             ┘
//! ```

mod confirm;
mod detail;
mod groups;
mod header;
mod help;
mod kills;
mod sockets;
pub use sockets::column_at;
pub mod theme;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::{App, Mode, View};
use theme::Theme;

/// Below this the dashboard shows a message instead of a broken layout.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;
const HEADER_HEIGHT: u16 = 4;

/// Where each region goes for a terminal of `area`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regions {
    pub header: Rect,
    pub table: Rect,
    pub detail: Option<Rect>,
    /// The collector's warnings, while there are any.
    pub warning: Option<Rect>,
    pub status: Rect,
}

/// The layout, shared by rendering and mouse handling.
pub fn layout(area: Rect, app: &App) -> Regions {
    let warned = u16::from(!app.table.warnings.is_empty());
    let [header, body, warning, status] = Layout::vertical([
        Constraint::Length(HEADER_HEIGHT),
        Constraint::Min(3),
        Constraint::Length(warned),
        Constraint::Length(1),
    ])
    .areas(area);
    let (table, detail) = if app.mode == Mode::Detail && app.view == View::Sockets {
        if body.width >= 140 {
            let [t, d] =
                Layout::horizontal([Constraint::Min(80), Constraint::Length(58)]).areas(body);
            (t, Some(d))
        } else {
            let [t, d] = Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)])
                .areas(body);
            (t, Some(d))
        }
    } else {
        (body, None)
    };
    Regions {
        header,
        table,
        detail,
        warning: (warned > 0).then_some(warning),
        status,
    }
}

/// Rows of the table that fit in its region (one line is its header).
pub fn page_rows(area: Rect, app: &App) -> usize {
    usize::from(layout(area, app).table.height.saturating_sub(1))
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let theme = Theme::new(app.color);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small: {}x{}, katop needs at least {MIN_WIDTH}x{MIN_HEIGHT}",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let r = layout(area, app);
    header::render(app, theme, frame, r.header);
    match app.view {
        View::Sockets => sockets::render(app, theme, frame, r.table),
        View::Groups => groups::render(app, theme, frame, r.table),
        View::Kills => kills::render(app, theme, frame, r.table),
    }
    if let Some(d) = r.detail {
        detail::render(app, theme, frame, d);
    }
    if let Some(w) = r.warning {
        // Partial results (e.g. unreadable processes) are said for as long as they last.
        let text = app.table.warnings.join(" · ");
        frame.render_widget(
            Paragraph::new(Line::styled(
                crate::text::printable_owned(text),
                theme.warn(),
            )),
            w,
        );
    }
    frame.render_widget(Paragraph::new(status_line(app, theme)), r.status);
    if app.mode == Mode::Help {
        let w = area.width.min(76);
        let h = area.height.min(help::HEIGHT);
        let popup = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        frame.render_widget(Clear, popup);
        help::render(theme, frame, popup);
    }
    match &app.mode {
        Mode::ConfirmKill { targets, yes } => {
            confirm::render(targets, *yes, &app.scope, theme, frame, area);
        }
        Mode::SetKeepalive {
            targets,
            text,
            error,
        } => confirm::render_keepalive(
            targets,
            (text, error.as_deref()),
            &app.scope,
            theme,
            frame,
            area,
        ),
        _ => {}
    }
}

fn status_line(app: &App, theme: Theme) -> Line<'static> {
    use ratatui::text::Span;
    if let Mode::Filter { text, error } = &app.mode {
        let mut spans = vec![
            Span::styled("filter: ", theme.title()),
            Span::raw(text.clone()),
            Span::raw("█"),
        ];
        match error {
            Some(e) => spans.push(Span::styled(format!("   {e}"), theme.error())),
            None => spans.push(Span::styled("   Enter keep · Esc back", theme.dim())),
        }
        return Line::from(spans);
    }
    if let Some(e) = &app.error {
        return Line::from(Span::styled(format!("poll failed: {e}"), theme.error()));
    }
    let mut spans = Vec::new();
    if app.selected_gone {
        spans.push(Span::styled("selected socket is gone · ", theme.warn()));
    }
    if let Some(s) = &app.status {
        spans.push(Span::styled(format!("{s} · "), theme.good()));
    }
    if !app.filter.matches_all() {
        spans.push(Span::styled(
            format!("[{}] ", app.filter.source()),
            theme.warn(),
        ));
    }
    if !app.marked.is_empty() {
        spans.push(Span::styled(
            format!("{} marked ", app.marked.len()),
            theme.warn(),
        ));
    }
    if app.paused {
        spans.push(Span::styled("PAUSED ", theme.warn()));
    }
    spans.push(Span::styled(
        "q quit  / filter  s stale  1-5 presets  Enter details  Space mark  k kill  K keepalive  Tab groups  </> sort  z pause  ? help",
        theme.dim(),
    ));
    Line::from(spans)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
