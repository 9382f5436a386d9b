//! The help screen (`?` / F1): every key, the presets, the stale reasons and the colours,
//! wrapped to the width it has and scrolled with the usual keys.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::theme::Theme;
use super::wrap::{labelled, wrap};
use crate::app::{App, Mode};
use crate::model::StaleReason;

/// Keys and what they do, in groups; `read_only` rows are left out with `--read-only`.
struct Key {
    keys: &'static str,
    what: &'static str,
    acts: bool,
}

const fn key(keys: &'static str, what: &'static str) -> Key {
    Key {
        keys,
        what,
        acts: false,
    }
}

const fn act(keys: &'static str, what: &'static str) -> Key {
    Key {
        keys,
        what,
        acts: true,
    }
}

/// The key map, as `app::keys` implements it.
const KEYS: [(&str, &[Key]); 6] = [
    (
        "Moving",
        &[
            key(
                "↑ ↓ PgUp PgDn Home End g G",
                "move; the selection follows its socket across polls, and moves to the next row when its socket closes",
            ),
            key(
                "← →",
                "sockets: page through the columns (the footer says how many are hidden); groups: collapse, expand",
            ),
            key("Enter", "details of the socket (the pane takes ↑ ↓ PgUp PgDn Home End; Enter or Esc closes) · a group's sockets"),
            key("Tab", "sockets ↔ groups (process name → port, with its processes)"),
            key("L", "action log: this session's kills and keepalive changes, and where they are recorded"),
            key("mouse", "wheel scrolls, click selects, click a header sorts (again: reverses)"),
        ],
    ),
    (
        "Finding",
        &[
            key("/  F3", "search: jump to rows whose addresses, state, service, process, command line, namespace or container contain the text; the others stay"),
            key("n  N", "next, previous match of the last search"),
            key("\\  F4", "filter: keep only what matches (the --filter language); applies as typed, Enter keeps it, Esc puts back the previous"),
            key("Del", "clear the filter"),
            key("s", "stale preset on / off"),
            key("0-9", "presets (below)"),
            key("in the bars", "← → Home End Ctrl-A Ctrl-E move · Ctrl-W Ctrl-U Ctrl-K delete · Ctrl-Y yank · ↑ ↓ history"),
        ],
    ),
    (
        "Ordering and polling",
        &[
            key("< >  F6", "sort by the previous / next column on screen (groups: by connections, stale, longest idle, keepalive off, process)"),
            key("r  I", "reverse the order"),
            key("+ -", "poll less / more often (100ms to 1m)"),
            key("z", "pause / resume polling"),
        ],
    ),
    (
        "The past (what katop record stored)",
        &[
            key("T  t", "the recorded poll before / after the moment shown (T from live: the newest; t past the newest: live)"),
            key("b", "go to a time: 03:00, 03:00:10, 10m ago, 2026-12-06T03:00:00Z; now (or nothing): live"),
        ],
    ),
    (
        "Acting",
        &[
            act("Space", "mark / unmark the socket (for k or K), move down"),
            act("a  U", "mark every socket the filter shows (again: unmark) · unmark all"),
            act("k  F9", "kill the marked sockets, else the selected one (TCP and UDP; asks first, No is the default)"),
            act("K", "turn keepalive on, or change its timers, on ESTABLISHED TCP connections (asks first)"),
        ],
    ),
    (
        "",
        &[
            key("? F1", "this help (↑ ↓ PgUp PgDn Home End scroll; Esc, Enter or any other key closes)"),
            key("q F10 Ctrl-C", "quit · Ctrl-Z suspends"),
        ],
    ),
];

/// Every key, by group: (group, keys, what they do), for the man page.
pub fn key_table() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    KEYS.iter()
        .flat_map(|(group, keys)| keys.iter().map(move |k| (*group, k.keys, k.what)))
}

/// The help's text area inside its border.
pub fn inner(area: Rect) -> Rect {
    Block::default().borders(Borders::ALL).inner(area)
}

/// The help's lines, wrapped to `width`.
pub fn content(app: &App, theme: Theme, width: u16) -> Vec<Line<'static>> {
    // The key column: wide where there is room, narrow (values wrap under) where not.
    let label = if width >= 90 { 28 } else { 14 };
    let pair =
        |k: &str, what: &str, style: Style| labelled(k, label, what, width, (style, Style::new()));
    let mut out = Vec::new();
    if app.read_only {
        out.extend(wrap(
            "read-only (--read-only): nothing can be killed or changed from here",
            width,
            0,
            theme.warn(),
        ));
        out.push(Line::from(""));
    }
    for (title, keys) in KEYS {
        let shown: Vec<_> = keys.iter().filter(|k| !(k.acts && app.read_only)).collect();
        if shown.is_empty() {
            continue;
        }
        if !title.is_empty() {
            out.push(Line::styled(title, theme.header()));
        }
        for k in shown {
            out.extend(pair(k.keys, k.what, theme.title()));
        }
        out.push(Line::from(""));
    }
    out.push(Line::styled("Presets", theme.header()));
    for p in &app.presets {
        let what = if p.filter.is_empty() {
            format!("{} (no filter)", p.name)
        } else if p.name == p.filter {
            // A preset named by its filter.
            p.filter.clone()
        } else {
            format!("{}: {}", p.name, p.filter)
        };
        out.extend(pair(&p.key.to_string(), &what, theme.title()));
    }
    out.push(Line::from(""));
    out.push(Line::styled("Stale reasons", theme.header()));
    for r in StaleReason::ALL {
        out.extend(pair(r.name(), r.explain(), theme.stale()));
    }
    out.push(Line::from(""));
    out.push(Line::styled("Reading the table", theme.header()));
    for (k, what) in [
        ("colours", "red: stale · green: new · grey: closed · * and reverse: marked · NO_COLOR=1 turns colour off"),
        ("~ in DETECT", "an estimate: the socket's settings were unreadable (the sysctls stand in), or the retransmit clock was reckoned"),
        ("? in a cell", "katop could not read it (another user's process, without root)"),
        ("-  in PROCESS", "no process holds the socket"),
    ] {
        out.extend(pair(k, what, theme.title()));
    }
    out
}

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let inner = inner(area);
    let lines = content(app, theme, inner.width);
    let max = lines.len().saturating_sub(usize::from(inner.height));
    let scroll = match app.mode {
        Mode::Help { scroll } => usize::from(scroll).min(max),
        _ => 0,
    };
    let more = if scroll < max {
        format!(" ↓ {} more · PgDn ", max - scroll)
    } else {
        " any key closes ".into()
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" katop help ")
        .title_bottom(Line::styled(more, theme.dim()).right_aligned());
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines.into_iter().skip(scroll).collect::<Vec<_>>()).block(block),
        area,
    );
}
