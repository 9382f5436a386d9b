//! The dashboard's past: a moment the store (`katop record`) holds, shown by the same table,
//! filters, sort, groups, search and details as the present. `T` steps back a recorded poll,
//! `t` forward (past the newest: live again), `b` jumps to a time (`b` then `now`: live). The
//! live view waits aside meanwhile, each poll still applied to it (so its ends and causes
//! stay exact and nothing of the present is lost); nothing in the past can be changed.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use crossterm::event::{KeyCode, KeyEvent};

use super::edit::Edited;
use super::{App, Closed, Editor, Effect, Mode, Sample};
use crate::model::{ConnTable, Snapshot};

/// Where to go in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Travel {
    /// The recorded poll before the moment shown (before now, when live).
    Back,
    /// The recorded poll after it; past the newest, live.
    Forward,
    /// This moment.
    To(SystemTime),
}

/// What the store answered.
#[derive(Debug, Clone)]
pub enum Arrival {
    /// The sockets at this moment, and where they were read (`the store`, `katop's memory`).
    At(SystemTime, Box<Snapshot>, &'static str),
    /// Nothing recorded after the moment shown: the present is next.
    Live,
    /// A connection's recorded events up to the moment shown, as lines for people (or why
    /// they could not be read).
    Lifeline(u64, Result<Vec<String>, String>),
    /// Why the store could not answer (none kept, nothing then, unreadable).
    Failed(String),
}

/// A past moment on screen.
#[derive(Debug)]
pub struct Past {
    pub at: SystemTime,
    /// Where it was read (`the store`, `katop's memory`).
    pub from: &'static str,
    /// The live view, set aside until the operator comes back.
    live: Box<Live>,
    /// The selected connection's recorded events (the details show them).
    pub lifeline: Option<Lifeline>,
}

/// A connection's events in the store up to the moment shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifeline {
    pub cookie: u64,
    /// `None` while the store is read.
    pub lines: Option<Result<Vec<String>, String>>,
}

#[derive(Debug)]
struct Live {
    table: ConnTable,
    closed: Vec<Closed>,
    history: VecDeque<Sample>,
    polls: u64,
}

/// A request to the store: from the moment shown (none: now) to where.
pub(super) fn travel(app: &mut App, to: Travel) -> Vec<Effect> {
    if to == Travel::Forward && app.past.is_none() {
        app.note("live already: T steps back through what katop record stored".into());
        return vec![];
    }
    app.note("reading the store…".into());
    vec![Effect::Travel {
        from: app.past.as_ref().map(|p| p.at),
        to,
    }]
}

/// Back to the present: the live view as it was left, with the polls since applied.
pub(super) fn go_live(app: &mut App) {
    if let Some(past) = app.past.take() {
        let Live {
            table,
            closed,
            history,
            polls,
        } = *past.live;
        app.table = table;
        app.closed = closed;
        app.history = history;
        app.polls = polls;
        app.now = Instant::now();
        let _ = app.count_only();
        app.rebuild();
    }
    app.note("live".into());
}

/// The store's answer.
pub(super) fn arrived(app: &mut App, arrival: Arrival) -> Vec<Effect> {
    match arrival {
        Arrival::At(at, snap, from) => {
            show(app, at, *snap, from);
            // Details open on another moment: that moment's lifeline.
            if app.mode.is_detail() {
                return ask_lifeline(app);
            }
            vec![]
        }
        Arrival::Lifeline(cookie, lines) => {
            if let Some(l) = app
                .past
                .as_mut()
                .and_then(|p| p.lifeline.as_mut())
                .filter(|l| l.cookie == cookie)
            {
                l.lines = Some(lines);
            }
            vec![]
        }
        Arrival::Live => {
            go_live(app);
            app.note("nothing recorded after that: live".into());
            vec![]
        }
        Arrival::Failed(why) => {
            app.note(crate::text::printable(&why).into_owned());
            vec![]
        }
    }
}

/// The sockets at `at`, in a table of their own (no closed rows, nothing "new").
fn show(app: &mut App, at: SystemTime, snap: Snapshot, from: &'static str) {
    let mut table = app.table.empty_like();
    let taken = snap.taken_at;
    let _ = table.apply(snap, taken);
    let previous = std::mem::replace(&mut app.table, table);
    if app.past.is_none() {
        app.past = Some(Past {
            at,
            from,
            lifeline: None,
            live: Box::new(Live {
                table: previous,
                closed: std::mem::take(&mut app.closed),
                history: std::mem::take(&mut app.history),
                polls: app.polls,
            }),
        });
    }
    if let Some(p) = app.past.as_mut() {
        (p.at, p.from) = (at, from);
        p.lifeline = None;
    }
    app.closed.clear();
    app.history.clear();
    app.marked.clear();
    app.polls = 1;
    app.now = taken;
    app.error = None;
    app.count();
    app.rebuild();
    app.note(format!(
        "the past: {} · t T step · b jumps · b now: live",
        crate::actions::log::rfc3339(at)
    ));
}

/// The selected connection's events up to the moment shown, asked of the store (once per
/// connection and moment).
pub(super) fn ask_lifeline(app: &mut App) -> Vec<Effect> {
    let Some(cookie) = app.selected.map(|k| k.cookie.0) else {
        return vec![];
    };
    let Some(past) = app.past.as_mut() else {
        return vec![];
    };
    if past.lifeline.as_ref().is_some_and(|l| l.cookie == cookie) {
        return vec![];
    }
    past.lifeline = Some(Lifeline {
        cookie,
        lines: None,
    });
    vec![Effect::Lifeline {
        cookie,
        until: past.at,
    }]
}

/// The live table, shown or set aside while the past is.
pub(super) fn live_table(app: &mut App) -> &mut crate::model::ConnTable {
    match app.past.as_mut() {
        Some(past) => &mut past.live.table,
        None => &mut app.table,
    }
}

/// A live poll that arrived while the past is shown: it goes to the live view set aside.
pub(super) fn poll_aside(app: &mut App, snap: Snapshot, now: Instant) {
    if let Some(past) = app.past.as_mut() {
        let mut applied = past.live.table.apply(snap, now);
        applied.spare.clear();
        app.spare = Some(applied.spare);
    }
}

/// `b`: the bar for a time.
pub(super) fn open_jump(app: &mut App) {
    app.mode = Mode::Jump {
        input: Editor::default(),
        error: None,
    };
}

/// Keys while the time bar is open: Enter goes there (`now`, `live` or nothing: the present).
pub(super) fn jump_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let Mode::Jump { input, error } = &mut app.mode else {
        return vec![];
    };
    match k.code {
        KeyCode::Esc => {
            app.mode = Mode::Browse;
            vec![]
        }
        KeyCode::Enter => {
            let text = input.value().trim().to_string();
            if text.is_empty() || ["live", "now"].iter().any(|w| text.eq_ignore_ascii_case(w)) {
                app.mode = Mode::Browse;
                go_live(app);
                return vec![];
            }
            match crate::store::when::parse_at(&text, &jiff::ZonedDateTime::now()) {
                Ok(t) if t >= SystemTime::now() => {
                    app.mode = Mode::Browse;
                    go_live(app);
                    vec![]
                }
                Ok(t) => {
                    app.mode = Mode::Browse;
                    travel(app, Travel::To(t))
                }
                Err(e) => {
                    *error = Some(e);
                    vec![]
                }
            }
        }
        _ => {
            if input.key(k) == Edited::Text {
                *error = None;
            }
            vec![]
        }
    }
}

/// Whether the past is shown; says why `key` does nothing there.
pub(super) fn in_the_past(app: &mut App, key: &str) -> bool {
    let Some(at) = app.past.as_ref().map(|p| p.at) else {
        return false;
    };
    app.note(format!(
        "{key}: this is the past ({}): nothing in it can be changed · b now: live",
        crate::actions::log::rfc3339(at)
    ));
    true
}
