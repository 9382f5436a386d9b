//! The bottom line: the filter or search bar while one is open (with its cursor), else the
//! last message, what is active (filter, marks, pause) and the keys that apply right now.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::theme::Theme;
use super::wrap::fit_spans;
use crate::app::{App, Editor, Mode, View};

pub fn render(app: &App, theme: Theme, frame: &mut Frame, area: Rect) {
    let line = match &app.mode {
        Mode::Filter { input, error, .. } => {
            let hint = match error {
                Some(e) => Span::styled(format!("  {e}"), theme.error()),
                None => Span::styled(
                    "  Enter keeps · Esc puts back the previous · ↑↓ history",
                    theme.dim(),
                ),
            };
            bar("filter: ", input, hint, theme, area.width)
        }
        Mode::Search { input, missed, .. } => bar(
            "search: ",
            input,
            if *missed {
                Span::styled("  no row matches · Esc goes back", theme.warn())
            } else {
                Span::styled(
                    "  jumps to a matching row · Enter keeps (n N) · Esc goes back",
                    theme.dim(),
                )
            },
            theme,
            area.width,
        ),
        Mode::Jump { input, error } => {
            let hint = match error {
                Some(e) => Span::styled(format!("  {}", crate::text::printable(e)), theme.error()),
                None => Span::styled(
                    "  03:00 · 03:00:10 · 10m ago · 2026-12-06T03:00:00Z · now (live) · Esc",
                    theme.dim(),
                ),
            };
            bar("go to: ", input, hint, theme, area.width)
        }
        _ => fit_spans(status(app, theme), area.width),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// `label`, the text with a block cursor (scrolled to keep it in view), then `hint` as room
/// allows.
fn bar(
    label: &'static str,
    input: &Editor,
    hint: Span<'static>,
    theme: Theme,
    width: u16,
) -> Line<'static> {
    use unicode_width::UnicodeWidthChar;
    // The cells left beside the label, less the margin and a closing `…` (the hint, or the
    // text past the window, may need one): the cursor never sits under it.
    let room = usize::from(width)
        .saturating_sub(label.len() + usize::from(super::wrap::MARGIN) + 1)
        .max(1);
    // One character for one (printable keeps the count), measured in terminal cells.
    let chars: Vec<char> = crate::text::printable(input.value()).chars().collect();
    let cursor = input.cursor().min(chars.len());
    let cells = |c: &char| c.width().unwrap_or(0);
    // Scrolled so that the text up to the cursor, and the cursor's cell, fit.
    let mut start = 0;
    let mut used: usize = chars[..cursor].iter().map(cells).sum::<usize>()
        + chars.get(cursor).map_or(1, |c| cells(c).max(1));
    while used > room && start < cursor {
        used -= cells(&chars[start]);
        start += 1;
    }
    let before: String = chars[start..cursor].iter().collect();
    let under: String = chars.get(cursor).map_or(" ".into(), char::to_string);
    let mut left = room.saturating_sub(used);
    let after: String = chars
        .iter()
        .skip(cursor + 1)
        .take_while(|c| {
            let w = cells(c);
            let fits = w <= left;
            left = left.saturating_sub(w);
            fits
        })
        .collect();
    fit_spans(
        vec![
            Span::styled(label, theme.title()),
            Span::raw(before),
            Span::styled(under, theme.selected()),
            Span::raw(after),
            hint,
        ],
        width,
    )
}

fn status(app: &App, theme: Theme) -> Vec<Span<'static>> {
    // What is so now (errors, the last note, the filter, marks, pause, hidden columns), one
    // `·` apart, then the keys.
    let mut state = Vec::new();
    if let Some(e) = &app.error {
        state.push(Span::styled(format!("poll failed: {e}"), theme.error()));
    }
    if let Some(s) = &app.status {
        state.push(Span::styled(s.clone(), theme.good()));
    }
    if !app.filter.matches_all() {
        state.push(Span::styled(
            format!("[{}]", crate::text::printable(app.filter.source())),
            theme.warn(),
        ));
    }
    if !app.marked.is_empty() {
        state.push(Span::styled(
            format!("{} marked", app.marked.len()),
            theme.warn(),
        ));
    }
    if app.paused {
        state.push(Span::styled("PAUSED", theme.warn()));
    }
    let hidden = app.viewport.dropped + app.viewport.skipped;
    if app.view == View::Sockets && hidden > 0 {
        state.push(Span::styled(
            format!("{hidden} columns hidden: ←→"),
            theme.warn(),
        ));
    }
    let mut spans = Vec::new();
    let any = !state.is_empty();
    for (i, item) in state.into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", theme.dim()));
        }
        spans.push(item);
    }
    if any {
        spans.push(Span::raw("  "));
    }
    for (key, what) in hints(app) {
        spans.push(Span::styled(format!("{key} "), theme.title()));
        spans.push(Span::styled(format!("{what}  "), theme.dim()));
    }
    spans
}

/// The keys that apply now, most useful first (the line keeps as many as fit).
pub fn hints(app: &App) -> Vec<(&'static str, &'static str)> {
    let selected = app.selected.and_then(|k| app.table.get(&k));
    // Nothing in the past can be changed.
    let may_change = !app.read_only && app.past.is_none();
    let may_kill = may_change
        && (!app.marked.is_empty() || selected.as_ref().is_some_and(crate::app::killable));
    let may_tune = may_change
        && (!app.marked.is_empty() || selected.as_ref().is_some_and(crate::app::tunable));
    let filtered = !app.filter.matches_all();
    let mut h: Vec<(&str, &str)> = Vec::new();
    match (app.view, &app.mode) {
        (View::Sockets, Mode::Detail { .. }) => {
            h.push(("↑↓ PgUp PgDn", "scroll"));
            h.push(("Enter Esc", "close"));
            if may_kill {
                h.push(("k", "kill"));
            }
            if may_tune {
                h.push(("K", "keepalive"));
            }
        }
        (View::Sockets, _) => {
            h.push(("q", "quit"));
            if app.past.is_some() {
                h.push(("T t", "earlier/later"));
                h.push(("b", "go to (now: live)"));
            }
            if filtered {
                h.push(("Del", "clears filter"));
            }
            h.push(("/", "search"));
            h.push(("\\", "filter"));
            h.push(("s", "stale"));
            h.push(("Enter", "details"));
            if may_kill {
                h.push(("k", "kill"));
            }
            if may_tune {
                h.push(("K", "keepalive"));
            }
            if may_change {
                h.push(("Space", "mark"));
            }
            h.push(("Tab", "groups"));
            h.push(("<>", "sort"));
            h.push(("+-", "interval"));
            let digits = if app.presets.iter().all(|p| ('1'..='5').contains(&p.key)) {
                "1-5"
            } else {
                "0-9"
            };
            h.push((digits, "presets"));
            h.push(("z", "pause"));
            if app.past.is_none() {
                h.push(("T b", "the past"));
            }
            h.push(("?", "help"));
        }
        (View::Groups, _) => {
            h.push(("q", "quit"));
            h.push(("Enter", "its sockets"));
            h.push(("→←", "expand/collapse"));
            h.push(("<>", "order"));
            if filtered {
                h.push(("Del", "clears filter"));
            }
            h.push(("Tab", "sockets"));
            h.push(("?", "help"));
        }
        (View::Kills, _) => {
            h.push(("q", "quit"));
            h.push(("↑↓", "scroll"));
            h.push(("L", "back"));
        }
    }
    h
}
