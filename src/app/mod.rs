//! The dashboard's state and its only mutator: `update(&mut App, Msg) -> Vec<Effect>`.
//!
//! Every input (a poll, a key, a mouse event, a tick) becomes a [`Msg`]; rendering reads the
//! [`App`] and never changes it. Rows are filtered and sorted once per poll or per change of
//! filter/sort, never per frame.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use rustc_hash::FxHashSet;

use crate::actions::target::summary;
use crate::actions::{Change, Report, Target};
use crate::columns::Column;
use crate::model::filter::{Filter, FilterError};
use crate::model::keepalive::middlebox_for;
use crate::model::{
    ConnTable, Endpoint, Proto, RawSock, Snapshot, SockKey, SockState, StaleReason,
};

/// How long a new socket stays highlighted and a closed one stays greyed.
pub const CHANGE_HIGHLIGHT: Duration = Duration::from_secs(3);
/// Samples kept for the header's sparkline (one per poll).
pub const HISTORY: usize = 120;

/// Presets on number keys: (key, name, filter).
pub const PRESETS: [(char, &str, &str); 5] = [
    ('1', "all", ""),
    ('2', "idle DB connections", "state:established idle>=5m (service:postgres or service:mysql or service:redis or service:mongodb or service:oracle or service:mssql or service:cassandra or service:memcached)"),
    ('3', "keepalive off", "state:established keepalive:off"),
    ('4', "probing", "probing"),
    ('5', "CLOSE_WAIT", "state:close-wait"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Sockets,
    Groups,
    /// This session's kill attempts, newest first.
    Kills,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Browse,
    /// Typing a filter: the text, and the error if it does not parse (the table keeps the last
    /// valid filter meanwhile).
    Filter {
        text: String,
        error: Option<FilterError>,
    },
    Detail,
    Help,
    /// Asking before a kill: exactly these sockets; `yes` is the highlighted answer (the
    /// default is No).
    ConfirmKill {
        targets: Vec<Target>,
        yes: bool,
    },
    /// Asking before turning keepalive on: these sockets, the settings being typed
    /// (`idle=60s intvl=10s cnt=5`) and what is wrong with them.
    SetKeepalive {
        targets: Vec<Target>,
        text: String,
        error: Option<String>,
    },
}

/// One line of the socket table, 8 bytes (there is one per socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Index into the table's entries.
    Sock(u32),
    /// `TIME_WAIT` sockets towards one remote address, summarised (index into `time_wait`).
    TimeWait(u32),
    /// A socket that closed since an earlier poll, kept greyed for a moment (index into `closed`).
    Closed(u32),
}

/// Sample for the sparkline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub established: u64,
    pub stale: u64,
}

#[derive(Debug, Clone)]
pub enum Msg {
    Poll(Box<Snapshot>, Instant),
    PollFailed(String),
    Key(KeyEvent),
    /// A mouse event and the terminal's size, to map rows to the layout.
    Mouse(MouseEvent, ratatui::layout::Rect),
    /// Time passes (for highlight expiry).
    Tick(Instant),
    /// The terminal was resized (redraw only).
    Resize,
    /// SIGTERM, SIGHUP, SIGINT or SIGQUIT.
    Signal,
    /// SIGTSTP: stop as Ctrl-Z does.
    Suspend,
    /// Text pasted into the terminal (bracketed paste), whole.
    Paste(String),
    /// Kills or keepalive changes finished; `log_error` when they could not be recorded.
    Acted {
        reports: Vec<Report>,
        log_error: Option<String>,
    },
}

/// What `update` asks the loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    /// Restore the terminal and stop (Ctrl-Z), coming back on `fg`.
    Suspend,
    /// Pause or resume polling.
    SetPaused(bool),
    /// Kill exactly these sockets (the operator confirmed them).
    Kill(Vec<Target>),
    /// Turn keepalive on with these settings on exactly these sockets (confirmed).
    SetKeepalive(Vec<Target>, Change),
}

#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // independent toggles
pub struct App {
    pub table: ConnTable,
    pub now: Instant,
    pub interval: Duration,
    pub host: String,
    pub filter: Filter,
    pub sort: Column,
    pub reverse: bool,
    pub view: View,
    pub mode: Mode,
    pub paused: bool,
    pub lines: Vec<Line>,
    /// `TIME_WAIT` summaries: remote address and count, most first.
    pub time_wait: Vec<(IpAddr, usize)>,
    pub groups: Vec<Group>,
    /// Selected row's socket (followed across polls by cookie), or group index.
    pub selected: Option<SockKey>,
    pub selected_group: usize,
    /// The selected socket's index in `lines`, kept in step with `selected`.
    pub(super) selected_idx: Option<usize>,
    /// The selected socket is not in the latest poll.
    pub selected_gone: bool,
    /// First row shown (kept so the selection stays visible).
    pub offset: usize,
    /// Table rows that fit on screen, as last drawn (for PgUp/PgDn and mouse).
    pub page: usize,
    pub history: VecDeque<Sample>,
    /// Sockets that closed recently, with when they were last seen.
    pub closed: Vec<(RawSock, Instant)>,
    pub status: Option<String>,
    pub error: Option<String>,
    pub polls: u64,
    pub color: bool,
    /// Counted once per poll, not per frame.
    pub state_counts: Vec<(&'static str, usize)>,
    /// The previous poll's emptied socket vector, for the loop to hand back to the collector.
    pub spare: Option<Vec<RawSock>>,
    pub stale_counts: Vec<(StaleReason, usize)>,
    /// Sockets marked with Space (or `a`) for a kill.
    pub marked: FxHashSet<SockKey>,
    /// Started with `--read-only`: `k` explains instead of killing.
    pub read_only: bool,
    /// The namespaces the operator is looking at (those the filter leaves, when a few, and the
    /// selected socket's): the collector refreshes them every poll. Shared with it.
    pub focus: crate::collector::namespaces::Focus,
    /// Whose sockets actions may touch (only the user's own when katop holds privileges the
    /// user lacks); the dialogs say so.
    pub scope: crate::actions::Scope,
    /// This session's kill attempts, oldest first.
    pub kills: Vec<Report>,
    /// Where kill attempts are recorded, for the kill log view.
    pub kill_log: Option<String>,
    /// First kill log entry shown (newest first).
    pub kills_offset: usize,
}

/// The one place state changes.
pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Poll(snap, now) => {
            app.apply_poll(*snap, now);
            vec![]
        }
        Msg::PollFailed(e) => {
            app.error = Some(e);
            vec![]
        }
        Msg::Tick(now) => {
            let had_closed = !app.closed.is_empty();
            app.now = now;
            if had_closed {
                app.rebuild();
            }
            vec![]
        }
        Msg::Resize => vec![],
        Msg::Signal => vec![Effect::Quit],
        Msg::Suspend => vec![Effect::Suspend],
        Msg::Paste(text) => {
            paste(app, &text);
            vec![]
        }
        Msg::Mouse(m, area) => {
            // Behind a dialog nothing moves.
            if !matches!(
                app.mode,
                Mode::ConfirmKill { .. } | Mode::SetKeepalive { .. }
            ) {
                mouse(app, m, area);
            }
            vec![]
        }
        Msg::Key(k) => key(app, k),
        Msg::Acted { reports, log_error } => {
            acted(app, reports, log_error);
            vec![]
        }
    }
}

mod dialogs;
use dialogs::{acted, ask_keepalive, ask_kill, confirm_key, keepalive_key, mark_all, toggle_mark};
mod groups;
mod keys;
use keys::{key, mouse, paste};
mod rows;
pub use groups::{groups, Group};
pub use keys::SORTABLE;

#[cfg(test)]
pub(crate) mod tests;
