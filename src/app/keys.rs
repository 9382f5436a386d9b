//! Keys, mouse and paste, by mode.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn mouse(app: &mut App, m: MouseEvent, area: ratatui::layout::Rect) {
    match m.kind {
        MouseEventKind::ScrollDown => app.move_selection(3),
        MouseEventKind::ScrollUp => app.move_selection(-3),
        MouseEventKind::Down(MouseButton::Left) => {
            let table = crate::ui::layout(area, app).table;
            // The table's first line is its header: a click there changes the sort column.
            let row = m.row;
            if row == table.y && app.view == View::Sockets {
                // As htop: click a header to sort by it, click it again to reverse.
                if let Some(col) = crate::ui::column_at(app, table, m.column) {
                    if col == app.sort {
                        app.reverse = !app.reverse;
                    } else {
                        app.sort = col;
                    }
                    app.status = Some(format!(
                        "sorted by {}",
                        app.sort.header().to_ascii_lowercase()
                    ));
                    app.rebuild();
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

#[allow(clippy::too_many_lines)] // the key map in one place, as help lists it
pub(super) fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        match k.code {
            KeyCode::Char('c') => return vec![Effect::Quit],
            // In raw mode Ctrl-Z is a key, not SIGTSTP: suspend as the shell would.
            KeyCode::Char('z') => return vec![Effect::Suspend],
            _ => {}
        }
    }
    if let Mode::Filter { text, .. } = &app.mode {
        let mut text = text.clone();
        match k.code {
            KeyCode::Esc => app.mode = Mode::Browse,
            KeyCode::Enter => {
                if let Err(e) = app.set_filter(&text) {
                    app.mode = Mode::Filter {
                        text,
                        error: Some(e),
                    };
                } else {
                    app.mode = Mode::Browse;
                }
            }
            KeyCode::Backspace => {
                text.pop();
                filter_typed(app, text);
            }
            KeyCode::Char(c) => {
                text.push(c);
                filter_typed(app, text);
            }
            _ => {}
        }
        return vec![];
    }
    if matches!(app.mode, Mode::Help) {
        app.mode = Mode::Browse;
        return vec![];
    }
    if matches!(app.mode, Mode::ConfirmKill { .. }) {
        return confirm_key(app, k);
    }
    if matches!(app.mode, Mode::SetKeepalive { .. }) {
        return keepalive_key(app, k);
    }
    let page = app.page.max(1) as isize;
    match k.code {
        KeyCode::Char('q') | KeyCode::F(10) => return vec![Effect::Quit],
        KeyCode::Esc => {
            app.mode = Mode::Browse;
        }
        KeyCode::Down => app.move_selection(1),
        KeyCode::Up => app.move_selection(-1),
        KeyCode::PageDown => app.move_selection(page),
        KeyCode::PageUp => app.move_selection(-page),
        KeyCode::Home | KeyCode::Char('g') => app.move_selection(-(isize::MAX / 2)),
        KeyCode::End | KeyCode::Char('G') => app.move_selection(isize::MAX / 2),
        KeyCode::Char('/') | KeyCode::F(3 | 4) => {
            app.mode = Mode::Filter {
                text: app.filter.source().to_string(),
                error: None,
            };
        }
        KeyCode::Char('?') | KeyCode::F(1) => app.mode = Mode::Help,
        KeyCode::Enter => match app.view {
            View::Kills => {}
            View::Sockets => {
                app.mode = if app.mode == Mode::Detail {
                    Mode::Browse
                } else {
                    Mode::Detail
                };
            }
            View::Groups => {
                if let Some(g) = app.groups.get(app.selected_group) {
                    let f = g.filter.clone();
                    if app.set_filter(&f).is_ok() {
                        app.view = View::Sockets;
                        app.selected = None;
                        app.rebuild();
                        app.status = Some(format!("filter: {f}"));
                    }
                }
            }
        },
        KeyCode::Char('k') | KeyCode::F(9) => ask_kill(app),
        KeyCode::Char('K') => ask_keepalive(app),
        KeyCode::Char(' ') => toggle_mark(app),
        KeyCode::Char('a') => mark_all(app),
        KeyCode::Char('U') => {
            app.status = Some(format!("unmarked {} socket(s)", app.marked.len()));
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
            if app.mode == Mode::Detail {
                app.mode = Mode::Browse;
            }
        }
        KeyCode::Char('z' | 'Z') => {
            app.paused = !app.paused;
            app.status = Some(if app.paused {
                "paused (z resumes)".into()
            } else {
                "resumed".into()
            });
            return vec![Effect::SetPaused(app.paused)];
        }
        KeyCode::Char('s') => {
            let text = if app.filter.source() == "stale" {
                ""
            } else {
                "stale"
            };
            let _ = app.set_filter(text);
            app.status = Some(if text.is_empty() {
                "filter cleared".into()
            } else {
                "stale preset: sockets with a stale reason".into()
            });
        }
        KeyCode::Char(c @ '1'..='9') => {
            if let Some((_, name, f)) = PRESETS.iter().find(|(k, _, _)| *k == c) {
                let _ = app.set_filter(f);
                app.status = Some(format!("preset {c}: {name}"));
            }
        }
        KeyCode::Char('<' | ',') => cycle_sort(app, -1),
        KeyCode::Char('>' | '.') | KeyCode::F(6) => cycle_sort(app, 1),
        KeyCode::Char('r' | 'I') => {
            app.reverse = !app.reverse;
            app.rebuild();
        }
        _ => {}
    }
    vec![]
}

/// Validates as the user types; the table only changes on a valid filter.
/// Pasted text lands whole where typing would (newlines as spaces); elsewhere it is ignored,
/// never taken as keys.
pub(super) fn paste(app: &mut App, pasted: &str) {
    let clean: String = pasted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match &mut app.mode {
        Mode::Filter { text, .. } => {
            let text = format!("{text}{clean}");
            filter_typed(app, text);
        }
        Mode::SetKeepalive { text, error, .. } => {
            text.push_str(&clean);
            *error = None;
        }
        _ => {}
    }
}

pub(super) fn filter_typed(app: &mut App, text: String) {
    match Filter::parse(&text) {
        Ok(_) => {
            let _ = app.set_filter(&text);
            app.mode = Mode::Filter { text, error: None };
        }
        Err(e) => {
            app.mode = Mode::Filter {
                text,
                error: Some(e),
            }
        }
    }
}

/// The columns `<`/`>` step through.
pub const SORTABLE: [Column; 12] = [
    Column::Idle,
    Column::State,
    Column::Proto,
    Column::Local,
    Column::Remote,
    Column::Process,
    Column::Keepalive,
    Column::RecvQ,
    Column::SendQ,
    Column::Rtt,
    Column::BytesIn,
    Column::BytesOut,
];

pub(super) fn cycle_sort(app: &mut App, step: isize) {
    let i = SORTABLE.iter().position(|c| *c == app.sort).unwrap_or(0) as isize;
    let n = SORTABLE.len() as isize;
    app.sort = SORTABLE[((i + step).rem_euclid(n)) as usize];
    app.status = Some(format!(
        "sorted by {}",
        app.sort.header().to_ascii_lowercase()
    ));
    app.rebuild();
}
