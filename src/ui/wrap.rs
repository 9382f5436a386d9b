//! Text that fits its place: wrapped (textwrap) with hanging indentation, or a line of spans
//! shortened with `…`. Nothing is left for the terminal to cut at the edge.
//!
//! Each keeps the last column of its place free ([`MARGIN`]): a line that reaches the edge
//! is then always one that was cut, which the rendering tests check for.

/// Columns kept free at the right of every text.
pub const MARGIN: u16 = 1;

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthStr;

/// `text` wrapped to `width` columns, every line after the first indented by `indent`.
pub fn wrap(text: &str, width: u16, indent: usize, style: Style) -> Vec<Line<'static>> {
    let width = usize::from(width.saturating_sub(MARGIN)).max(indent + 8);
    let pad = " ".repeat(indent);
    let options = textwrap::Options::new(width)
        .subsequent_indent(&pad)
        .break_words(true);
    textwrap::wrap(text, options)
        .into_iter()
        .map(|l| Line::styled(l.into_owned(), style))
        .collect()
}

/// A label (right-aligned in `label_width`) and its value, the value wrapped under itself:
///
/// ```text
///        cmdline postgres: app db 10.0.0.5(41000)
///                idle in transaction
/// ```
pub fn labelled(
    label: &str,
    label_width: usize,
    value: &str,
    width: u16,
    (label_style, value_style): (Style, Style),
) -> Vec<Line<'static>> {
    let indent = label_width + 1;
    let room = usize::from(width.saturating_sub(MARGIN))
        .saturating_sub(indent)
        .max(8);
    let options = textwrap::Options::new(room).break_words(true);
    let mut out = Vec::new();
    // A label longer than its column gets a line of its own.
    let own_line = label.width() > label_width;
    if own_line {
        out.push(Line::from(Span::styled(label.to_string(), label_style)));
    }
    for (i, part) in textwrap::wrap(value, options).into_iter().enumerate() {
        let head = if i == 0 && !own_line {
            Span::styled(format!("{label:>label_width$} "), label_style)
        } else {
            Span::raw(" ".repeat(indent))
        };
        out.push(Line::from(vec![
            head,
            Span::styled(part.into_owned(), value_style),
        ]));
    }
    if out.is_empty() {
        out.push(Line::from(Span::styled(
            format!("{label:>label_width$} "),
            label_style,
        )));
    }
    out
}

/// The spans, when they fit in `width`; else as much as fits before a closing `…`.
pub fn fit_spans(spans: Vec<Span<'static>>, width: u16) -> Line<'static> {
    let width = usize::from(width.saturating_sub(MARGIN));
    let total: usize = spans.iter().map(|s| s.content.width()).sum();
    if total <= width {
        return Line::from(spans);
    }
    let mut room = width.saturating_sub(1);
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let w = span.content.width();
        if w <= room {
            room -= w;
            out.push(span);
            continue;
        }
        let mut cut = String::new();
        for c in span.content.chars() {
            let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if cw > room {
                break;
            }
            room -= cw;
            cut.push(c);
        }
        out.push(Span::styled(cut, span.style));
        break;
    }
    if width > 0 {
        out.push(Span::raw("…"));
    }
    Line::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(l: &Line) -> String {
        l.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn wraps_under_the_value_and_shortens_with_an_ellipsis() {
        let lines = labelled(
            "cmdline",
            9,
            "postgres: app db 10.0.0.5(41000) idle in transaction",
            41,
            (Style::new(), Style::new()),
        );
        let got: Vec<String> = lines.iter().map(text).collect();
        assert_eq!(got[0], "  cmdline postgres: app db");
        assert!(got[1].starts_with("          10.0.0.5(41000)"), "{got:?}");
        assert!(got.iter().all(|l| l.chars().count() <= 40), "{got:?}");
        let l = fit_spans(vec![Span::raw("abc "), Span::raw("defghij")], 9);
        assert_eq!(text(&l), "abc def…");
        let l = fit_spans(vec![Span::raw("abc")], 4);
        assert_eq!(text(&l), "abc");
    }
}
