//! Rendering: a pure function of [`App`] into a ratatui frame.
//!
//! ```text
//! ┌ header: host, poll cost, counts by state and stale reason, keepalive settings, sparklines ┐
//! │ socket table (or groups, or the action log)  │ detail pane (Enter; below when narrow)     │
//! │ warning line, while the last poll's results are partial                                  │
//! └ footer: the filter or search being typed, the last message, the keys that apply now       ┘
//! ```
//! Help (`?`) covers the screen, as wide as it reads well. Every text that could be longer
//! than its place is wrapped or elided with `…`, never cut at the edge.

mod confirm;
mod detail;
mod footer;
mod groups;
mod header;
pub mod help;
mod kills;
mod sockets;
pub mod theme;
mod wrap;

pub use footer::hints;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use crate::app::{App, Mode, View, Viewport};
use theme::Theme;

/// Below this the dashboard shows a message instead of a broken layout.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;
const HEADER_HEIGHT: u16 = 4;
/// The detail pane goes beside the table from this width, else below it.
const SIDE_PANE_FROM: u16 = 160;

/// Where each region goes for a terminal of `area`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regions {
    pub header: Rect,
    pub table: Rect,
    pub detail: Option<Rect>,
    /// The collector's warnings, while there are any.
    pub warning: Option<Rect>,
    pub footer: Rect,
    /// The help screen, when open.
    pub help: Option<Rect>,
}

/// The layout of a terminal of `area` in the app's current state.
pub fn layout(area: Rect, app: &App) -> Regions {
    let warned = u16::from(!app.table.warnings.is_empty());
    let [header, body, warning, footer] = Layout::vertical([
        Constraint::Length(HEADER_HEIGHT),
        Constraint::Min(3),
        Constraint::Length(warned),
        Constraint::Length(1),
    ])
    .areas(area);
    let (table, detail) = if app.mode.is_detail() && app.view == View::Sockets {
        if body.width >= SIDE_PANE_FROM {
            let [t, d] =
                Layout::horizontal([Constraint::Min(90), Constraint::Length(72)]).areas(body);
            (t, Some(d))
        } else {
            // The pane has the keys: it gets the larger part.
            let [t, d] = Layout::vertical([Constraint::Percentage(35), Constraint::Percentage(65)])
                .areas(body);
            (t, Some(d))
        }
    } else {
        (body, None)
    };
    let help = matches!(app.mode, Mode::Help { .. }).then(|| {
        // Full screen when small; at most 100 columns wide, where lines read well.
        let w = area.width.min(100);
        Rect::new(area.x + (area.width - w) / 2, area.y, w, area.height)
    });
    Regions {
        header,
        table,
        detail,
        warning: (warned > 0).then_some(warning),
        footer,
        help,
    }
}

/// What the app needs to know of the screen before it is drawn: see [`Viewport`].
pub fn viewport(app: &App, area: Rect) -> Viewport {
    let r = layout(area, app);
    let theme = Theme::new(app.color);
    let mut v = Viewport {
        table: r.table,
        too_small: area.width < MIN_WIDTH || area.height < MIN_HEIGHT,
        ..Viewport::default()
    };
    if app.view == View::Sockets {
        let (columns, fit) = sockets::columns_on_screen(app, r.table);
        v.columns = columns;
        (v.dropped, v.skipped) = (fit.dropped, fit.skipped);
    }
    if let Some(d) = r.detail {
        let inner = detail::inner(d);
        v.detail_lines = len16(detail::content(app, theme, inner.width).len());
        v.detail_height = inner.height;
    }
    if let Some(h) = r.help {
        let inner = help::inner(h);
        v.help_lines = len16(help::content(app, theme, inner.width).len());
        v.help_height = inner.height;
    }
    v
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
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
        let text = crate::text::printable_owned(app.table.warnings.join(" · "));
        let room = w.width.saturating_sub(wrap::MARGIN);
        let text = crate::columns::elide(&text, usize::from(room)).into_owned();
        frame.render_widget(Paragraph::new(Line::styled(text, theme.warn())), w);
    }
    footer::render(app, theme, frame, r.footer);
    if let Some(h) = r.help {
        help::render(app, theme, frame, h);
    }
    match &app.mode {
        Mode::ConfirmKill {
            targets,
            yes,
            hidden,
        } => {
            let refused = app.refused(crate::actions::Action::Kill, targets);
            confirm::render(
                (targets, *hidden),
                *yes,
                (&app.scope, &refused),
                theme,
                frame,
                area,
            );
        }
        Mode::SetKeepalive {
            targets,
            input,
            error,
            hidden,
        } => confirm::render_keepalive(
            (targets, *hidden),
            (input, error.as_deref()),
            (
                &app.scope,
                &app.refused(
                    crate::actions::Action::Keepalive(crate::actions::Change::default()),
                    targets,
                ),
            ),
            theme,
            frame,
            area,
        ),
        _ => {}
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
#[cfg(test)]
#[path = "tests_sizes.rs"]
mod tests_sizes;
