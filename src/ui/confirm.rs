//! The dialogs that come before an action: exactly which sockets, with the count. A kill
//! defaults to No; keepalive settings are edited in place and applied with Enter.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::theme::Theme;
use super::wrap::wrap;
use crate::actions::{Scope, Target};
use crate::commands::is_listening_state;
use crate::text::printable_owned as sanitize;

/// The dialog's width in `area`: wide enough for a socket line.
fn width_in(area: Rect) -> u16 {
    area.width.saturating_sub(2).min(120)
}

/// The width of the dialog's text (inside its border).
fn inner_width(area: Rect) -> u16 {
    width_in(area).saturating_sub(2)
}

/// Every line fitted to the dialog's text width (elided with `…`, never cut at the border).
fn fitted(lines: Vec<Line<'static>>, width: u16) -> Vec<Line<'static>> {
    lines
        .into_iter()
        .map(|l| super::wrap::fit_spans(l.spans, width))
        .collect()
}

/// The dialog's rectangle in `area`, high enough for `lines`.
fn area_for(area: Rect, lines: usize) -> Rect {
    let w = width_in(area);
    let h = (lines as u16)
        .saturating_add(2)
        .min(area.height.saturating_sub(2));
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

pub fn render(
    (targets, hidden): (&[Target], usize),
    yes: bool,
    (scope, refused): (&Scope, &[String]),
    theme: Theme,
    frame: &mut Frame,
    area: Rect,
) {
    let listening = targets
        .iter()
        .filter(|t| is_listening_state(t.proto, t.state))
        .count();
    let mut lines = vec![Line::from(Span::styled(
        format!("Kill {}?", crate::text::these_sockets(targets.len())),
        theme.title(),
    ))];
    if listening > 0 {
        lines.push(Line::from(Span::styled(
            format!("{listening} of them listening: killing a listener stops a service"),
            theme.error(),
        )));
    }
    lines.extend(hidden_note(hidden, theme, inner_width(area)));
    let width = inner_width(area);
    lines.extend(refusals(refused, scope, theme, width));
    // The list, the blank line and the buttons under the title lines.
    let listed = target_lines(targets, usize::from(area.height), width, theme).len();
    let popup = area_for(area, lines.len() + listed + 2);
    fit_head(&mut lines, popup, 2, theme);
    let room = usize::from(popup.height.saturating_sub(2)).saturating_sub(lines.len() + 2);
    lines.extend(target_lines(targets, room, width, theme));
    lines.push(Line::from(""));
    let button = |label: &'static str, on: bool| {
        if on {
            Span::styled(label, theme.selected())
        } else {
            Span::raw(label)
        }
    };
    lines.push(Line::from(vec![
        Span::raw("  "),
        button("[ No ]", !yes),
        Span::raw("   "),
        button("[ Yes, kill ]", yes),
        Span::styled(
            "    y kill · n/Esc cancel · ←→ choose, Enter answers",
            theme.dim(),
        ),
    ]));
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" kill (SOCK_DESTROY) ")
        .border_style(theme.error());
    frame.render_widget(Clear, popup);
    let lines = fitted(lines, inner_width(area));
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

/// The keepalive dialog: the sockets, the settings being typed, and what they would mean.
pub fn render_keepalive(
    (targets, hidden): (&[Target], usize),
    (input, error): (&crate::app::Editor, Option<&str>),
    (scope, refused): (&Scope, &[String]),
    theme: Theme,
    frame: &mut Frame,
    area: Rect,
) {
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "Turn keepalive on (or set its timers) for {}?",
            crate::text::these_sockets(targets.len())
        ),
        theme.title(),
    ))];
    let width = inner_width(area);
    lines.extend(hidden_note(hidden, theme, width));
    lines.extend(refusals(refused, scope, theme, width));
    // Title lines, list, blank, settings, verdict, keys.
    let listed = target_lines(targets, usize::from(area.height), width, theme).len();
    let popup = area_for(area, listed + lines.len() + 4);
    fit_head(&mut lines, popup, 4, theme);
    let head = lines.len();
    let room = usize::from(popup.height.saturating_sub(2)).saturating_sub(head + 4);
    lines.extend(target_lines(targets, room, width, theme));
    lines.push(Line::from(""));
    let text = input.value();
    let at = input.cursor();
    let before: String = text.chars().take(at).collect();
    let under: String = text.chars().nth(at).map_or(" ".into(), String::from);
    let after: String = text.chars().skip(at + 1).collect();
    lines.push(Line::from(vec![
        Span::styled("  settings: ", theme.label()),
        Span::raw(sanitize(before)),
        Span::styled(sanitize(under), theme.selected()),
        Span::raw(sanitize(after)),
    ]));
    let parsed = text.parse::<crate::actions::Change>();
    let problem = error.map(str::to_string).or_else(|| parsed.clone().err());
    lines.push(match (problem, parsed) {
        (Some(e), _) => Line::from(Span::styled(format!("  {}", sanitize(e)), theme.error())),
        (None, Ok(c)) => Line::from(Span::styled(
            format!(
                "  a silent peer is then noticed within {}",
                crate::model::duration::format_s_short(c.detect_s().into())
            ),
            theme.good(),
        )),
        (None, Err(_)) => Line::from(""),
    });
    lines.push(Line::from(Span::styled(
        "  Enter applies (setsockopt on the owner's fd) · Esc cancels · ← → Ctrl-W edit",
        theme.dim(),
    )));
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" keepalive ")
        .border_style(theme.warn());
    frame.render_widget(Clear, popup);
    let lines = fitted(lines, inner_width(area));
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

/// How many of the targets katop will refuse (`refused`: each one's reason), and why (the
/// first reason), before anyone confirms; and whose sockets it acts on when limited.
fn refusals(refused: &[String], scope: &Scope, theme: Theme, width: u16) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if *scope != Scope::Everything {
        lines.extend(wrap(&scope.to_string(), width, 2, theme.warn()));
    }
    if let Some(first) = refused.first() {
        let text = sanitize(format!(
            "{} of them will be refused: {first}",
            refused.len()
        ));
        lines.extend(wrap(&text, width, 2, theme.error()));
    }
    lines
}

/// One line per target, as many as `room` allows, the rest counted.
/// Shortens the title and notes above the list so that at least one line of the list and the
/// `tail` lines under it (the answer, the settings) fit in `popup`: on a small terminal what
/// will be acted on, and how to answer, always show.
fn fit_head(lines: &mut Vec<Line<'static>>, popup: Rect, tail: usize, theme: Theme) {
    let inner = usize::from(popup.height.saturating_sub(2));
    let most = inner.saturating_sub(tail + 1).max(1);
    if lines.len() > most {
        lines.truncate(most.saturating_sub(1).max(1));
        if most > 1 {
            lines.push(Line::from(Span::styled(
                "  … (a taller terminal shows every note)",
                theme.dim(),
            )));
        }
    }
}

/// Marked sockets the filter now hides are acted on too: said, not left to surprise.
fn hidden_note(hidden: usize, theme: Theme, width: u16) -> Vec<Line<'static>> {
    if hidden == 0 {
        return Vec::new();
    }
    let text = format!(
        "{hidden} of them marked earlier and hidden by the filter now (listed last; Esc, then U unmarks all)"
    );
    wrap(&text, width, 2, theme.warn())
}

fn target_lines(targets: &[Target], room: usize, width: u16, theme: Theme) -> Vec<Line<'static>> {
    // Every part of what will die stays readable: a line too long wraps under itself.
    let mut lines = Vec::new();
    for (n, t) in targets.iter().enumerate() {
        let text = format!("  {}", sanitize(t.describe()));
        let wrapped = wrap(&text, width, 6, ratatui::style::Style::new());
        let after = targets.len() - n - 1;
        if lines.len() + wrapped.len() + usize::from(after > 0) > room {
            if lines.len() < room {
                lines.push(Line::from(Span::styled(
                    format!("  … and {} more", targets.len() - n),
                    theme.dim(),
                )));
            }
            break;
        }
        lines.extend(wrapped);
    }
    lines
}
