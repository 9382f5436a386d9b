//! The action log view (`L`): this session's kills and keepalive changes, newest first, and
//! where they are recorded.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
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
    let mut lines: Vec<Line> = app
        .kills
        .iter()
        .rev()
        .skip(app.kills_offset)
        .take(usize::from(area.height))
        .map(|r| {
            let style = match r.outcome {
                Outcome::Killed { .. } | Outcome::Changed { .. } => theme.good(),
                Outcome::AlreadyGone => theme.dim(),
                Outcome::Refused(_) | Outcome::Failed(_) => theme.error(),
            };
            let time = crate::actions::log::rfc3339(r.at);
            Line::from(vec![
                Span::styled(format!("{}  ", &time[11..19]), theme.label()),
                Span::styled(sanitize(r.line()), style),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::from(Span::styled(
            "nothing done yet: select a socket (or mark some with Space), then k kills, K sets keepalive",
            theme.dim(),
        )));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
