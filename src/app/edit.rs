//! The filter and search bars: line editing (tui-input: ← → Home End, Ctrl-A/E/U/W/K/Y),
//! history on ↑ ↓, and what Enter and Esc mean in each.

use crossterm::event::{Event, KeyCode, KeyEvent};
use tui_input::backend::crossterm::to_input_request;
use tui_input::{Input, InputRequest};

use super::{App, Line, Mode};
use crate::model::filter::Filter;
use crate::model::SockEntry;

/// Entries kept in each history.
const HISTORY_MAX: usize = 100;

/// A line being edited, with where ↑ ↓ stand in its history.
#[derive(Debug, Clone, Default)]
pub struct Editor {
    input: Input,
    /// The history entry shown (counted from the newest), and the line as typed before ↑.
    recall: Option<(usize, String)>,
}

impl PartialEq for Editor {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value() && self.cursor() == other.cursor()
    }
}

impl Eq for Editor {}

/// What a key did to the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edited {
    /// The text changed.
    Text,
    /// Only the cursor moved.
    Cursor,
    /// Not an editing key: for the bar to interpret (Enter, Esc, Tab…).
    No,
}

impl Editor {
    /// A line holding `text`, the cursor at its end.
    pub fn new(text: &str) -> Editor {
        Editor {
            input: Input::new(text.to_string()),
            recall: None,
        }
    }

    pub fn value(&self) -> &str {
        self.input.value()
    }

    /// The cursor, in characters from the start.
    pub fn cursor(&self) -> usize {
        self.input.cursor()
    }

    /// Applies an editing key.
    pub fn key(&mut self, k: KeyEvent) -> Edited {
        let Some(req) = to_input_request(&Event::Key(k)) else {
            return Edited::No;
        };
        match self.input.handle(req) {
            Some(changed) if changed.value => {
                self.recall = None;
                Edited::Text
            }
            _ if matches!(req, InputRequest::InsertChar(_)) => Edited::Text,
            _ => Edited::Cursor,
        }
    }

    /// Inserts text at the cursor (a paste), control characters as spaces.
    pub fn insert(&mut self, text: &str) {
        for c in text.chars() {
            let c = if c.is_control() { ' ' } else { c };
            self.input.handle(InputRequest::InsertChar(c));
        }
        self.recall = None;
    }

    /// ↑ (`older`) or ↓ through `history` (oldest first); ↓ past the newest gives back what
    /// was typed. Returns whether the line changed.
    pub fn recall(&mut self, history: &[String], older: bool) -> bool {
        let (pos, typed) = match self.recall.take() {
            Some((pos, typed)) => (Some(pos), typed),
            None => (None, self.value().to_string()),
        };
        let next = match (pos, older) {
            (None, true) => (!history.is_empty()).then_some(0),
            (Some(p), true) => Some((p + 1).min(history.len() - 1)),
            (Some(p), false) => p.checked_sub(1),
            (None, false) => None,
        };
        let text = next.map_or(typed.as_str(), |p| &history[history.len() - 1 - p]);
        let changed = text != self.value();
        self.input = Input::new(text.to_string());
        if let Some(p) = next {
            self.recall = Some((p, typed));
        }
        changed
    }
}

/// Adds an entry to a history: once (an older copy moves to the end), and not blank.
pub fn remember(history: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    history.retain(|h| h != text);
    history.push(text.to_string());
    if history.len() > HISTORY_MAX {
        history.remove(0);
    }
}

/// `\` / F4: edit the filter, starting from the active one.
pub fn open_filter(app: &mut App) {
    let before = app.filter.source().to_string();
    app.mode = Mode::Filter {
        input: Editor::new(&before),
        before,
        from: app.selected,
        error: None,
    };
}

/// Keys while the filter bar is open. Valid text applies as it is typed; Enter keeps it, Esc
/// puts back the filter that was active when the bar opened.
pub fn filter_key(app: &mut App, k: KeyEvent) {
    let Mode::Filter {
        input,
        before,
        from,
        ..
    } = &mut app.mode
    else {
        return;
    };
    match k.code {
        KeyCode::Esc => {
            let (before, from) = (std::mem::take(before), *from);
            let _ = app.set_filter(&before);
            app.mode = Mode::Browse;
            // Back where the bar opened, as search's Esc.
            if let Some(key) = from {
                app.select_key(key);
            }
            app.note(if before.is_empty() {
                "filter unchanged (none)".into()
            } else {
                format!("filter unchanged: {before}")
            });
        }
        KeyCode::Enter => {
            let text = input.value().to_string();
            match app.set_filter(&text) {
                Ok(()) => {
                    remember(&mut app.filter_history, &text);
                    app.mode = Mode::Browse;
                    app.note(if text.trim().is_empty() {
                        "filter cleared".into()
                    } else {
                        // The filter itself shows next to this, in brackets.
                        "filter applied · Del clears it".into()
                    });
                }
                Err(e) => {
                    if let Mode::Filter { error, .. } = &mut app.mode {
                        *error = Some(e);
                    }
                }
            }
        }
        KeyCode::Up | KeyCode::Down => {
            if input.recall(&app.filter_history, k.code == KeyCode::Up) {
                filter_typed(app);
            }
        }
        _ => {
            if input.key(k) == Edited::Text {
                filter_typed(app);
            }
        }
    }
}

/// Validates the bar's text as it is typed; the table only changes on a valid filter.
fn filter_typed(app: &mut App) {
    let Mode::Filter { input, .. } = &app.mode else {
        return;
    };
    let text = input.value().to_string();
    let result = match Filter::parse(&text) {
        Ok(_) => app.set_filter(&text).err(),
        Err(e) => Some(e),
    };
    if let Mode::Filter { error, .. } = &mut app.mode {
        *error = result;
    }
}

/// `/` / F3: search. The selection jumps as the text is typed.
pub fn open_search(app: &mut App) {
    app.mode = Mode::Search {
        input: Editor::default(),
        from: app.selected,
        missed: false,
    };
}

/// Keys while the search bar is open: Enter keeps the search for `n`/`N`, Esc goes back to
/// the row selected before.
pub fn search_key(app: &mut App, k: KeyEvent) {
    let Mode::Search { input, from, .. } = &mut app.mode else {
        return;
    };
    match k.code {
        KeyCode::Esc => {
            let from = *from;
            app.mode = Mode::Browse;
            if let Some(key) = from {
                app.select_key(key);
            }
            app.note("search cancelled".into());
        }
        KeyCode::Enter => {
            let text = input.value().trim().to_string();
            app.mode = Mode::Browse;
            if text.is_empty() {
                return;
            }
            remember(&mut app.search_history, &text);
            app.note(format!("search: {text} · n next · N previous"));
            app.search = Some(text);
        }
        KeyCode::Up | KeyCode::Down => {
            if input.recall(&app.search_history, k.code == KeyCode::Up) {
                search_typed(app);
            }
        }
        KeyCode::F(3) => {
            // F3 again, as in htop: the next match.
            let text = input.value().to_string();
            find(app, &text, true, true);
        }
        _ => {
            if input.key(k) == Edited::Text {
                search_typed(app);
            }
        }
    }
}

/// Jumps to the first match at or after where the search started.
fn search_typed(app: &mut App) {
    let Mode::Search { input, from, .. } = &app.mode else {
        return;
    };
    let text = input.value().to_string();
    if let Some(key) = *from {
        app.select_key(key);
    }
    let found = find(app, &text, true, false) || text.trim().is_empty();
    if let Mode::Search { missed, .. } = &mut app.mode {
        *missed = !found;
    }
}

/// `n` / `N`: the next or previous row the kept search matches.
pub fn search_again(app: &mut App, forward: bool) {
    match app.search.clone() {
        Some(text) => {
            find(app, &text, forward, true);
        }
        None => app.note("no search yet: / searches".into()),
    }
}

/// Selects the next row (after the selection, or from it when `skip_current` is false) whose
/// text contains `needle`, wrapping around; says so when none does. Rows stay as they are.
fn find(app: &mut App, needle: &str, forward: bool, skip_current: bool) -> bool {
    let needle = needle.trim().to_lowercase();
    if needle.is_empty() {
        return false;
    }
    let n = app.lines.len();
    let start = app.selected_line().unwrap_or(0);
    let order = (0..n).map(|i| {
        let step = if skip_current { i + 1 } else { i };
        if forward {
            (start + step) % n
        } else {
            (start + n - step % n) % n
        }
    });
    for i in order {
        if let Line::Sock(s) = app.lines[i] {
            let e = app.table.entry(s as usize);
            if row_matches(&e, &needle) {
                app.select_line(i);
                return true;
            }
        }
    }
    app.note(format!("search: nothing matches {needle:?}"));
    false
}

/// Whether a row's identifying text contains `needle` (lower case): addresses, state,
/// service, process name and pid, command line, namespace, container.
fn row_matches(e: &SockEntry, needle: &str) -> bool {
    let s = e.sock;
    let hit = |text: &str| text.to_lowercase().contains(needle);
    hit(&s.local.to_string())
        || hit(&s.remote.to_string())
        || hit(s.state.name(s.proto))
        || e.service().is_some_and(hit)
        || s.owner
            .process()
            .is_some_and(|p| hit(&p.name) || hit(&p.cmdline) || p.pid.to_string() == needle)
        || e.netns_name().is_some_and(hit)
        || e.container().is_some_and(hit)
}

/// Pasted text lands whole where typing would (newlines as spaces); elsewhere it is ignored,
/// never taken as keys.
pub fn paste(app: &mut App, pasted: &str) {
    match &mut app.mode {
        Mode::Filter { input, .. } => {
            input.insert(pasted);
            filter_typed(app);
        }
        Mode::Search { input, .. } => {
            input.insert(pasted);
            search_typed(app);
        }
        Mode::SetKeepalive { input, error, .. } => {
            input.insert(pasted);
            *error = None;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    fn press(e: &mut Editor, code: KeyCode, mods: KeyModifiers) -> Edited {
        e.key(KeyEvent::new(code, mods))
    }

    #[test]
    fn edits_like_a_shell_line() {
        let ctrl = KeyModifiers::CONTROL;
        let none = KeyModifiers::NONE;
        let mut e = Editor::new("state:established idle>10m");
        // Ctrl-W deletes back to the previous word boundary (`>` is one).
        assert_eq!(press(&mut e, KeyCode::Char('w'), ctrl), Edited::Text);
        assert_eq!(e.value(), "state:established idle>");
        assert_eq!(press(&mut e, KeyCode::Home, none), Edited::Cursor);
        press(&mut e, KeyCode::Char('!'), none);
        assert_eq!(e.value(), "!state:established idle>");
        press(&mut e, KeyCode::Char('e'), ctrl);
        press(&mut e, KeyCode::Left, none);
        press(&mut e, KeyCode::Char('x'), none);
        assert_eq!(e.value(), "!state:established idlex>");
        press(&mut e, KeyCode::Char('a'), ctrl);
        press(&mut e, KeyCode::Char('k'), ctrl);
        assert_eq!(e.value(), "");
        e.insert("a\nb");
        assert_eq!(e.value(), "a b");
        assert_eq!(press(&mut e, KeyCode::Enter, none), Edited::No);
    }

    #[test]
    fn history_goes_back_and_returns_to_what_was_typed() {
        let history = vec!["first".to_string(), "second".to_string()];
        let mut e = Editor::new("draft");
        assert!(e.recall(&history, true));
        assert_eq!(e.value(), "second");
        e.recall(&history, true);
        assert_eq!(e.value(), "first");
        // The oldest stays.
        assert!(!e.recall(&history, true));
        e.recall(&history, false);
        assert_eq!(e.value(), "second");
        e.recall(&history, false);
        assert_eq!(e.value(), "draft");
        let mut h = history.clone();
        remember(&mut h, "first");
        remember(&mut h, "  ");
        assert_eq!(h, ["second", "first"]);
    }
}
