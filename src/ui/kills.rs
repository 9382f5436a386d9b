//! The action log view (`L`): this session's kills and keepalive changes, newest first, and
//! where they are recorded.

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::theme::Theme;
use crate::actions::Outcome;
use crate::app::App;
use crate::text::printable_owned as sanitize;

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let title = match &app.kill_log {
        Some(p) => format!(
            " action log · recorded in {} · L closes ",
            sanitize(p.clone())
        ),
        None => " action log · not recorded: no HOME or XDG_STATE_HOME · L closes ".into(),
    };
    let block = Block::default().borders(Borders::TOP).title(title);
    // Each entry wraps under itself, after its time.
    let mut lines: Vec<Line> = app
        .kills
        .iter()
        .rev()
        .skip(app.kills_offset)
        .take(usize::from(area.height))
        .flat_map(|r| {
            let style = match r.outcome {
                Outcome::Killed { .. } | Outcome::Changed { .. } => theme.good(),
                Outcome::AlreadyGone => theme.dim(),
                Outcome::Refused(_) | Outcome::Failed(_) => theme.error(),
            };
            let time = crate::actions::log::rfc3339(r.at);
            super::wrap::labelled(
                time.get(11..19).unwrap_or(&time),
                8,
                &sanitize(r.line()),
                area.width,
                (theme.label(), style),
            )
        })
        .collect();
    if lines.is_empty() {
        let hint = if app.read_only {
            "nothing done: read-only (--read-only), nothing can be killed or changed from here"
        } else {
            "nothing done yet: select a socket (or mark some with Space), then k kills, K sets keepalive"
        };
        lines = super::wrap::wrap(hint, area.width, 0, theme.dim());
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
