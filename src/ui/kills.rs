//! The action log view (`L`): this session's kills and keepalive changes, newest first, and
//! where they are recorded.

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::theme::Theme;
use crate::actions::Outcome;
use crate::app::App;
use crate::text::printable_owned as sanitize;

/// `text` in at most `width` cells, its start given up for a `…` when it does not fit: a
/// path keeps its file name.
fn elide_front(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_string();
    }
    let mut tail: Vec<char> = Vec::new();
    let mut used = 1;
    for c in text.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            break;
        }
        used += w;
        tail.push(c);
    }
    std::iter::once('…').chain(tail.into_iter().rev()).collect()
}

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let room = usize::from(area.width.saturating_sub(super::wrap::MARGIN));
    let title = match &app.kill_log {
        Some(p) => {
            let (head, tail) = (" action log · recorded in ", " · L Esc close ");
            let path = sanitize(p.clone());
            let left = room.saturating_sub(head.width() + tail.width());
            format!("{head}{}{tail}", elide_front(&path, left))
        }
        None => " action log · not recorded: no HOME or XDG_STATE_HOME · L Esc close ".into(),
    };
    // Never cut at the edge: what does not fit ends in `…`.
    let title = crate::columns::elide(&title, room).into_owned();
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
