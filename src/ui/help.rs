//! The key-binding overlay (`?` / F1).

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::theme::Theme;
use crate::app::PRESETS;
use crate::model::StaleReason;

pub const HEIGHT: u16 = 40;

const KEYS: [(&str, &str); 21] = [
    (
        "↑ ↓, PgUp PgDn, Home End",
        "move; the selection follows its socket across polls",
    ),
    ("Enter", "details of the socket / open a group"),
    ("Tab", "sockets ↔ groups (process → service)"),
    ("/  F3", "filter (same language as --filter); Esc leaves it"),
    ("s", "stale preset on/off"),
    ("1-5", "presets (below)"),
    ("< >  F6", "sort column"),
    ("r", "reverse the sort"),
    ("z", "pause / resume polling"),
    ("Space", "mark / unmark the socket (for k or K), move down"),
    (
        "a  U",
        "mark every socket the filter shows (again: unmark) · unmark all",
    ),
    (
        "k  F9",
        "kill the marked sockets, else the selected one (asks first)",
    ),
    (
        "K",
        "turn keepalive on (or change its timers) on the marked / selected sockets",
    ),
    (
        "L",
        "action log: this session's kills and keepalive changes, and where recorded",
    ),
    ("", ""),
    (
        "mouse",
        "wheel scrolls, click selects, click a header sorts",
    ),
    ("? F1", "this help (any key closes)"),
    ("q F10 Ctrl-C", "quit"),
    ("", ""),
    (
        "colours",
        "red: stale · green: new · grey: closed · NO_COLOR=1 turns colour off",
    ),
    (
        "~ in DETECT",
        "an estimate: settings unreadable (sysctls stand in) or retransmit clock reckoned",
    ),
];

pub fn render(theme: Theme, frame: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>28}  "), theme.title()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    for (k, name, _) in PRESETS {
        lines.push(Line::from(vec![
            Span::styled(format!("{k:>28}  "), theme.title()),
            Span::raw(name),
        ]));
    }
    lines.push(Line::from(""));
    for r in StaleReason::ALL {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>14}  ", r.name()), theme.stale()),
            Span::raw(r.explain()),
        ]));
    }
    let block = Block::default().borders(Borders::ALL).title(" katop help ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
