//! The key map, by mode, and the mouse. The help screen lists the same keys
//! (`ui::help::KEYS`); htop's and less's habits where they have one.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};

use super::dialogs::{
    ask_keepalive, ask_kill, confirm_key, keepalive_key, mark_all, may_act, toggle_mark,
};
use super::edit::{filter_key, open_filter, open_search, search_again, search_key};
use super::travel::{self, Travel};
use super::{App, Effect, GroupLine, GroupSort, Mode, View, INTERVALS_MS};
use crate::columns::Column;

pub(super) fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    // Esc then a key, typed quickly, reaches katop as Alt-<key>: where nothing binds that, it
    // is the two keys it was (help closes, and q still quits).
    if k.modifiers == KeyModifiers::ALT && !binds_alt(&app.mode, k.code) {
        let mut effects = one_key(app, KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        if !effects.contains(&Effect::Quit) {
            effects.extend(one_key(app, KeyEvent::new(k.code, KeyModifiers::NONE)));
        }
        return effects;
    }
    one_key(app, k)
}

/// Whether `mode` gives Alt-`code` a meaning of its own: the line editors' word moves and
/// deletions (Alt-b, Alt-f, Alt-d, Alt-Backspace, Alt-←/→).
fn binds_alt(mode: &Mode, code: KeyCode) -> bool {
    matches!(
        mode,
        Mode::Filter { .. } | Mode::Search { .. } | Mode::SetKeepalive { .. } | Mode::Jump { .. }
    ) && matches!(
        code,
        KeyCode::Char('b' | 'f' | 'd') | KeyCode::Backspace | KeyCode::Left | KeyCode::Right
    )
}

fn one_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        match k.code {
            KeyCode::Char('c') => return vec![Effect::Quit],
            // In raw mode Ctrl-Z is a key, not SIGTSTP: suspend as the shell would.
            KeyCode::Char('z') => return vec![Effect::Suspend],
            _ => {}
        }
    }
    if app.viewport.too_small {
        // Nothing but the size shows: nothing may be chosen or confirmed unseen.
        return match k.code {
            KeyCode::Char('q') | KeyCode::F(10) => vec![Effect::Quit],
            _ => vec![],
        };
    }
    match &app.mode {
        Mode::Filter { .. } => {
            filter_key(app, k);
            vec![]
        }
        Mode::Search { .. } => {
            search_key(app, k);
            vec![]
        }
        Mode::Jump { .. } => travel::jump_key(app, k),
        Mode::ConfirmKill { .. } => confirm_key(app, k),
        Mode::SetKeepalive { .. } => keepalive_key(app, k),
        Mode::Help { .. } => {
            help_key(app, k);
            vec![]
        }
        Mode::Detail { .. } => {
            if detail_key(app, k) {
                vec![]
            } else {
                browse_key(app, k)
            }
        }
        Mode::Browse => browse_key(app, k),
    }
}

/// Scroll keys scroll the help; any other key closes it.
fn help_key(app: &mut App, k: KeyEvent) {
    let Mode::Help { scroll } = &mut app.mode else {
        return;
    };
    let page = app.viewport.help_height.max(1);
    if !scroll_key(scroll, k.code, page) {
        app.mode = Mode::Browse;
    }
}

/// While the detail pane is open it takes the scroll keys; Enter and Esc close it. Other keys
/// (k, K, Space, …) act as in the table, on the socket shown.
fn detail_key(app: &mut App, k: KeyEvent) -> bool {
    let Mode::Detail { scroll } = &mut app.mode else {
        return false;
    };
    let page = app.viewport.detail_height.max(1);
    if scroll_key(scroll, k.code, page) {
        return true;
    }
    if matches!(k.code, KeyCode::Enter | KeyCode::Esc) {
        app.mode = Mode::Browse;
        return true;
    }
    false
}

/// The scroll keys (↑ ↓, page up and down, home, end) on a scroll position (the view clamps it to the text).
fn scroll_key(scroll: &mut u16, code: KeyCode, page: u16) -> bool {
    *scroll = match code {
        KeyCode::Down => scroll.saturating_add(1),
        KeyCode::Up => scroll.saturating_sub(1),
        KeyCode::PageDown => scroll.saturating_add(page),
        KeyCode::PageUp => scroll.saturating_sub(page),
        KeyCode::Home | KeyCode::Char('g') => 0,
        KeyCode::End | KeyCode::Char('G') => u16::MAX,
        _ => return false,
    };
    true
}

/// The table's keys (socket, group and log views).
fn browse_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let page = app.viewport.page() as isize;
    match k.code {
        KeyCode::Char('q') | KeyCode::F(10) => return vec![Effect::Quit],
        KeyCode::Esc => {
            // Esc leaves the action log as it leaves help and details.
            if app.view == View::Kills {
                app.view = View::Sockets;
            }
            app.mode = Mode::Browse;
        }
        KeyCode::Down => app.move_selection(1),
        KeyCode::Up => app.move_selection(-1),
        KeyCode::PageDown => app.move_selection(page),
        KeyCode::PageUp => app.move_selection(-page),
        KeyCode::Home | KeyCode::Char('g') => app.move_selection(-(isize::MAX / 2)),
        KeyCode::End | KeyCode::Char('G') => app.move_selection(isize::MAX / 2),
        KeyCode::Left | KeyCode::Right => sideways(app, k.code == KeyCode::Right),
        KeyCode::Char('/') | KeyCode::F(3) => open_search(app),
        KeyCode::Char('n') => search_again(app, true),
        KeyCode::Char('N') => search_again(app, false),
        KeyCode::Char('\\') | KeyCode::F(4) => open_filter(app),
        KeyCode::Delete => {
            let _ = app.set_filter("");
            app.note("filter cleared".into());
        }
        KeyCode::Char('?') | KeyCode::F(1) => app.mode = Mode::Help { scroll: 0 },
        KeyCode::Enter => {
            enter(app);
            if app.mode.is_detail() {
                return travel::ask_lifeline(app);
            }
        }
        KeyCode::Char('k') | KeyCode::F(9) if in_table(app, "k") && !in_past(app, "k") => {
            ask_kill(app);
        }
        KeyCode::Char('K') if in_table(app, "K") && !in_past(app, "K") => ask_keepalive(app),
        // Marks are for k and K: read-only and the past have no use for them.
        KeyCode::Char(' ') if in_table(app, "Space") && may_mark(app, "Space") => toggle_mark(app),
        KeyCode::Char('a') if in_table(app, "a") && may_mark(app, "a") => mark_all(app),
        KeyCode::Char('T') => return travel::travel(app, Travel::Back),
        KeyCode::Char('t') => return travel::travel(app, Travel::Forward),
        KeyCode::Char('b') => travel::open_jump(app),
        KeyCode::Char('U') => {
            app.note(format!("unmarked {} socket(s)", app.marked.len()));
            app.marked.clear();
        }
        KeyCode::Char('L') => {
            app.view = if app.view == View::Kills {
                View::Sockets
            } else {
                View::Kills
            };
            app.mode = Mode::Browse;
            app.offset = 0;
        }
        KeyCode::Tab => {
            app.view = if app.view == View::Sockets {
                View::Groups
            } else {
                View::Sockets
            };
            app.rebuild();
            app.offset = 0;
            app.mode = Mode::Browse;
        }
        KeyCode::Char('z' | 'Z') => {
            app.paused = !app.paused;
            app.note(if app.paused {
                "paused (z resumes)".into()
            } else {
                "resumed".into()
            });
            return vec![Effect::SetPaused(app.paused)];
        }
        KeyCode::Char('+' | '=') => return step_interval(app, true),
        KeyCode::Char('-' | '_') => return step_interval(app, false),
        KeyCode::Char('s') => stale_preset(app),
        KeyCode::Char(c @ '0'..='9') => preset(app, c),
        KeyCode::Char('<' | ',') => cycle_sort(app, -1),
        KeyCode::Char('>' | '.') | KeyCode::F(6) => cycle_sort(app, 1),
        KeyCode::Char('r' | 'I') => {
            if app.view == View::Groups {
                app.group_reverse = !app.group_reverse;
                app.regroup();
            } else {
                app.reverse = !app.reverse;
                app.rebuild();
            }
        }
        _ => {}
    }
    vec![]
}

fn in_past(app: &mut App, key: &str) -> bool {
    travel::in_the_past(app, key)
}

/// Whether sockets may be marked for an action: not read-only, not the past.
fn may_mark(app: &mut App, key: &str) -> bool {
    !in_past(app, key) && may_act(app, key)
}

/// `s`: the stale preset on or off.
fn stale_preset(app: &mut App) {
    let text = if app.filter.source() == "stale" {
        ""
    } else {
        "stale"
    };
    let _ = app.set_filter(text);
    app.note(if text.is_empty() {
        "filter cleared".into()
    } else {
        "stale preset: sockets with a stale reason · Del clears".into()
    });
}

/// A number key: its preset's filter, or which keys have one.
fn preset(app: &mut App, c: char) {
    if let Some(p) = app.presets.iter().find(|p| p.key == c).cloned() {
        match app.set_filter(&p.filter) {
            Ok(()) => app.note(format!("preset {c}: {}", p.name)),
            Err(e) => app.note(format!("preset {c} is not a valid filter: {e}")),
        }
    } else {
        let keys: String = app.presets.iter().map(|p| p.key).collect();
        app.note(format!(
            "no preset on {c} (presets: {keys}; [ui.presets] in the config file adds more; ? lists them)"
        ));
    }
}

/// Whether the socket table is on screen, so that `key` acts on what it shows; says why not
/// (the groups and log views show no socket to act on).
fn in_table(app: &mut App, key: &str) -> bool {
    let here = app.view == View::Sockets;
    if !here {
        let back = if app.view == View::Groups {
            "Enter shows a group's sockets, Tab the socket table"
        } else {
            "L goes back to the socket table"
        };
        app.note(format!("{key} acts on the socket table's sockets: {back}"));
    }
    here
}

/// Enter: the details of the selected socket, or a group's sockets (as a filter).
fn enter(app: &mut App) {
    match app.view {
        View::Kills => {}
        View::Sockets => app.mode = Mode::Detail { scroll: 0 },
        View::Groups => {
            let Some(&line) = app.group_lines.get(app.selected_group) else {
                return;
            };
            let (gi, pid) = match line {
                GroupLine::Group(g) => (g, None),
                GroupLine::Member(g, m) => {
                    (g, Some(app.groups[g as usize].members[m as usize].pid))
                }
            };
            let mut f = app.groups[gi as usize].filter.clone();
            if let Some(pid) = pid {
                f = format!("pid:{pid} {f}");
            }
            // The group was counted under the filter in force: its sockets are those it still
            // matches, not every socket of the process.
            let before = app.filter.source().trim().to_string();
            if before == f || before.ends_with(&format!(") {f}")) {
                // Opened before: the filter already is the group's (within the one before).
                f = before;
            } else if !before.is_empty() {
                f = format!("({before}) {f}");
            }
            if app.set_filter(&f).is_ok() {
                app.view = View::Sockets;
                app.selected = None;
                app.rebuild();
                app.note("the group's sockets · Del clears the filter".into());
            }
        }
    }
}

/// ← →: scroll the socket table's columns; in the groups view, collapse or expand a group.
fn sideways(app: &mut App, right: bool) {
    match app.view {
        View::Sockets => {
            if right && app.viewport.dropped > 0 {
                app.hscroll += 1;
            } else if !right {
                app.hscroll = app.hscroll.saturating_sub(1);
            }
        }
        View::Groups => {
            let Some(&line) = app.group_lines.get(app.selected_group) else {
                return;
            };
            let gi = match line {
                GroupLine::Group(g) | GroupLine::Member(g, _) => g as usize,
            };
            let id = app.groups[gi].id();
            if right {
                app.expanded.insert(id);
            } else {
                app.expanded.remove(&id);
                // The selection goes back to the group row.
                app.selected_group = app
                    .group_lines
                    .iter()
                    .position(|&l| l == GroupLine::Group(gi as u32))
                    .unwrap_or(0);
            }
            app.regroup();
        }
        View::Kills => {}
    }
}

/// `+` / `-`: poll more or less often, through [`INTERVALS_MS`].
fn step_interval(app: &mut App, slower: bool) -> Vec<Effect> {
    let now = app.interval.as_millis() as u64;
    let next = if slower {
        INTERVALS_MS.iter().copied().find(|&ms| ms > now)
    } else {
        INTERVALS_MS.iter().rev().copied().find(|&ms| ms < now)
    };
    let Some(ms) = next else {
        app.note(format!(
            "polling every {} already: {} is the {}",
            crate::model::duration::format_ms_short(now),
            if slower { "+" } else { "-" },
            if slower { "slowest" } else { "fastest" },
        ));
        return vec![];
    };
    app.interval = Duration::from_millis(ms);
    app.note(format!(
        "polling every {}",
        crate::model::duration::format_ms_short(ms)
    ));
    vec![Effect::SetInterval(app.interval)]
}

/// `<` / `>`: the previous or next column on screen (groups: the next order).
fn cycle_sort(app: &mut App, step: isize) {
    if app.view == View::Groups {
        let all = GroupSort::ALL;
        let i = all.iter().position(|s| *s == app.group_sort).unwrap_or(0) as isize;
        app.group_sort = all[(i + step).rem_euclid(all.len() as isize) as usize];
        app.note(format!("groups by {}", app.group_sort.name()));
        app.regroup();
        return;
    }
    let shown: Vec<Column> = app.viewport.columns.iter().map(|c| c.0).collect();
    let cols = if shown.is_empty() {
        app.columns.clone()
    } else {
        shown
    };
    if cols.is_empty() {
        return;
    }
    let next = match cols.iter().position(|c| *c == app.sort) {
        Some(i) => cols[(i as isize + step).rem_euclid(cols.len() as isize) as usize],
        // Sorted by a column no longer on screen: start from an end.
        None if step > 0 => cols[0],
        None => cols[cols.len() - 1],
    };
    sort_by(app, next);
}

fn sort_by(app: &mut App, col: Column) {
    app.sort = col;
    app.note(format!("sorted by {}", col.header().to_ascii_lowercase()));
    app.rebuild();
}

pub(super) fn mouse(app: &mut App, m: MouseEvent) {
    match m.kind {
        MouseEventKind::ScrollDown => app.move_selection(3),
        MouseEventKind::ScrollUp => app.move_selection(-3),
        MouseEventKind::Down(MouseButton::Left) => {
            let table = app.viewport.table;
            // The table's first line is its header: a click there changes the sort column.
            let row = m.row;
            if row == table.y && app.view == View::Sockets {
                // As htop: click a header to sort by it, click it again to reverse.
                let hit = app
                    .viewport
                    .columns
                    .iter()
                    .find(|&&(_, from, to)| m.column >= from && m.column <= to)
                    .map(|c| c.0);
                if let Some(col) = hit {
                    if col == app.sort {
                        app.reverse = !app.reverse;
                        app.rebuild();
                    } else {
                        sort_by(app, col);
                    }
                }
            } else if row > table.y && row < table.y + table.height {
                let target = app.offset + usize::from(row - table.y - 1);
                let cur = match app.view {
                    View::Sockets => app.selected_line().unwrap_or(0),
                    View::Groups => app.selected_group,
                    View::Kills => return,
                };
                app.move_selection(target as isize - cur as isize);
            }
        }
        _ => {}
    }
}
