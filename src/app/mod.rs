//! The dashboard's state and its only mutator: `update(&mut App, Msg) -> Vec<Effect>`.
//!
//! Every input (a poll, a key, a mouse event, a tick, the screen's layout) becomes a [`Msg`];
//! rendering reads the [`App`] and never changes it. Rows are filtered and sorted once per
//! poll or per change of filter/sort, never per frame.
//!
//! Modules: `rows` (the table's lines, counts and the selection), `groups` (the grouped view),
//! `keys` (the key map in browse mode, mouse, paste), `edit` (the filter and search bars and
//! their history), `dialogs` (marks, and asking before acting).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crossterm::event::{KeyEvent, MouseEvent};
use ratatui::layout::Rect;
use rustc_hash::FxHashSet;

use crate::actions::{Report, Target};
use crate::columns::Column;
use crate::model::filter::{Filter, FilterError};
use crate::model::{ConnTable, RawSock, Snapshot, SockKey, StaleReason};

mod dialogs;
mod edit;
mod groups;
mod keys;
mod rows;
mod travel;

pub use dialogs::{killable, tunable};
pub use edit::Editor;
pub use groups::{groups, Group, GroupLine, GroupSort, Member, Role};
pub use travel::{Arrival, Lifeline, Past, Travel};

/// How long a new socket stays highlighted and a closed one stays greyed.
pub const CHANGE_HIGHLIGHT: Duration = Duration::from_secs(3);
/// Samples kept for the header's sparkline (one per poll).
pub const HISTORY: usize = 120;
/// Closed rows kept greyed at most: under heavy churn they would otherwise fill the view.
pub const MAX_CLOSED: usize = 16;
/// The poll intervals `+` and `-` step through.
pub const INTERVALS_MS: [u64; 10] = [
    100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000,
];

/// A socket that closed recently, greyed for a moment.
#[derive(Debug, Clone)]
pub struct Closed {
    pub sock: RawSock,
    /// When it was last seen.
    pub at: Instant,
    /// Why it ended, once known (the tracepoints' verdict may come a poll later).
    pub end: Option<(crate::model::ends::Cause, crate::model::ends::CauseSource)>,
}

/// A filter on a number key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub key: char,
    pub name: String,
    pub filter: String,
}

/// The presets katop ships on 1 to 5; the config file's `[ui.presets]` adds or replaces.
pub const PRESETS: [(char, &str, &str); 5] = [
    ('1', "all", ""),
    ('2', "idle DB connections", "established idle>=5m (service:postgres or service:pgbouncer or service:mysql or service:redis or service:mongodb or service:oracle or service:mssql or service:cassandra or service:memcached)"),
    ('3', "keepalive off", "established keepalive:off"),
    ('4', "probing", "probing"),
    ('5', "CLOSE_WAIT", "close-wait"),
];

pub fn default_presets() -> Vec<Preset> {
    with_presets(&[])
}

/// katop's presets with the config file's over them (same key: replaced; new key: added).
pub fn with_presets(configured: &[(char, String, String)]) -> Vec<Preset> {
    let mut all: Vec<Preset> = PRESETS
        .iter()
        .map(|&(key, name, filter)| Preset {
            key,
            name: name.into(),
            filter: filter.into(),
        })
        .collect();
    for (key, name, filter) in configured {
        all.retain(|p| p.key != *key);
        all.push(Preset {
            key: *key,
            name: name.clone(),
            filter: filter.clone(),
        });
    }
    all.sort_by_key(|p| p.key);
    all
}

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
    /// Editing the filter (`\`, F4): the line, the filter that was active before (Esc puts it
    /// back), and the error if the text does not parse (the table keeps the last valid filter
    /// meanwhile).
    Filter {
        input: Editor,
        before: String,
        /// The selection when the bar opened (Esc goes back there).
        from: Option<SockKey>,
        error: Option<FilterError>,
    },
    /// Typing a search (`/`, F3): the selection jumps to the first row that matches, the
    /// others stay; `from` is where it was (Esc goes back there); `missed` when no row
    /// matches the text typed.
    Search {
        input: Editor,
        from: Option<SockKey>,
        missed: bool,
    },
    /// The detail pane has the keys; `scroll` is its first line shown.
    Detail {
        scroll: u16,
    },
    /// The help screen, scrolled to `scroll`.
    Help {
        scroll: u16,
    },
    /// Typing a time to show (`b`): anything `--at` takes; `now` or nothing is live.
    Jump {
        input: Editor,
        error: Option<String>,
    },
    /// Asking before a kill: exactly these sockets; `yes` is the highlighted answer (the
    /// default is No); the last `hidden` were marked and are hidden by the filter now.
    ConfirmKill {
        targets: Vec<Target>,
        yes: bool,
        hidden: usize,
    },
    /// Asking before turning keepalive on: these sockets, the settings being typed
    /// (`idle=60s intvl=10s cnt=5`) and what is wrong with them.
    SetKeepalive {
        targets: Vec<Target>,
        input: Editor,
        error: Option<String>,
        hidden: usize,
    },
}

impl Mode {
    pub fn is_detail(&self) -> bool {
        matches!(self, Mode::Detail { .. })
    }

    /// A dialog holds the keys and the mouse until it is answered.
    pub fn is_dialog(&self) -> bool {
        matches!(self, Mode::ConfirmKill { .. } | Mode::SetKeepalive { .. })
    }
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

/// Where things are on screen, as the view last laid them out: what paging, scrolling, mouse
/// clicks and column-wise sorting need to know. Computed by `ui::viewport` before each frame
/// and handed in as [`Msg::Layout`], so the app never reaches into the view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Viewport {
    /// The table's region, its header line included.
    pub table: Rect,
    /// The socket table's columns on screen, left to right, with their first and last x.
    pub columns: Vec<(Column, u16, u16)>,
    /// Socket table columns that did not fit on the right, and that ← scrolled off the left.
    pub dropped: usize,
    pub skipped: usize,
    /// Lines of the detail pane's text (as wrapped) and how many show at once.
    pub detail_lines: u16,
    pub detail_height: u16,
    /// The same for the help screen.
    pub help_lines: u16,
    pub help_height: u16,
    /// Below the minimum size the screen shows only that: no dialog can be read, so none opens.
    pub too_small: bool,
}

impl Viewport {
    /// Rows of the table that fit (one line is its header).
    pub fn page(&self) -> usize {
        usize::from(self.table.height.saturating_sub(1)).max(1)
    }
}

#[derive(Debug, Clone)]
pub enum Msg {
    /// Sockets of a poll under way, as they are read (the poll ends with [`Msg::Poll`]).
    Piece(crate::collector::Piece, Instant),
    Poll(Box<Snapshot>, Instant),
    PollFailed(String),
    Key(KeyEvent),
    Mouse(MouseEvent),
    /// The screen is about to be drawn with this layout.
    Layout(Viewport),
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
    /// The store answered a [`Effect::Travel`].
    Arrived(Arrival),
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
    /// Poll at this interval from now on.
    SetInterval(Duration),
    /// Kill exactly these sockets (the operator confirmed them).
    Kill(Vec<Target>),
    /// Turn keepalive on with these settings on exactly these sockets (confirmed).
    SetKeepalive(Vec<Target>, crate::actions::Change),
    /// Read a moment from the store (`from`: the moment shown, none when live). Live polls go
    /// on meanwhile, into the live view set aside.
    Travel {
        from: Option<std::time::SystemTime>,
        to: Travel,
    },
    /// Read a connection's recorded events up to a moment (the past's details).
    Lifeline {
        cookie: u64,
        until: std::time::SystemTime,
    },
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
    /// When the status note was last set (it expires after [`STATUS_FOR`]).
    pub status_since: Instant,
    /// The groups view's own reversal (its orders are its own too).
    pub group_reverse: bool,
    pub view: View,
    pub mode: Mode,
    pub paused: bool,
    pub lines: Vec<Line>,
    /// `TIME_WAIT` summaries: remote address and count, most first.
    pub time_wait: Vec<(IpAddr, usize)>,
    pub groups: Vec<Group>,
    /// The groups view's rows: groups, and the processes of the expanded ones.
    pub group_lines: Vec<GroupLine>,
    pub group_sort: GroupSort,
    /// Expanded groups, by [`Group::id`].
    pub expanded: FxHashSet<String>,
    /// Selected row's socket (followed across polls by cookie), or group line index.
    pub selected: Option<SockKey>,
    pub selected_group: usize,
    /// The selected socket's index in `lines`, kept in step with `selected`.
    pub(super) selected_idx: Option<usize>,
    /// First row shown (kept so the selection stays visible).
    pub offset: usize,
    /// Socket table columns scrolled off to the left (← →).
    pub hscroll: usize,
    /// The layout the screen was last drawn with.
    pub viewport: Viewport,
    pub history: VecDeque<Sample>,
    /// Sockets that closed recently.
    pub closed: Vec<Closed>,
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
    /// Started with `--read-only`: `k` and `K` are not offered.
    pub read_only: bool,
    /// The namespaces the operator is looking at (those the filter leaves, when a few, and the
    /// selected socket's): the collector refreshes them every poll. Shared with it.
    pub focus: crate::collector::namespaces::Focus,
    /// Whose sockets actions may touch (only the user's own when katop holds privileges the
    /// user lacks); the dialogs say so.
    pub scope: crate::actions::Scope,
    /// What this process may do (a kill without `CAP_NET_ADMIN` is foreseen, not attempted).
    pub powers: crate::actions::Powers,
    /// This session's kill attempts, oldest first.
    pub kills: Vec<Report>,
    /// Where kill attempts are recorded, for the kill log view.
    pub kill_log: Option<String>,
    /// First kill log entry shown (newest first).
    pub kills_offset: usize,
    /// The last search kept with Enter, for `n` and `N`.
    pub search: Option<String>,
    /// Filters and searches entered this session, oldest first (↑ ↓ in the bars).
    pub filter_history: Vec<String>,
    pub search_history: Vec<String>,
    pub presets: Vec<Preset>,
    /// The socket table's columns, in order (a narrow terminal shows what fits).
    pub columns: Vec<Column>,
    /// A moment from the store on screen instead of the present.
    pub past: Option<Past>,
}

impl App {
    pub fn new(
        stale_after: Duration,
        interval: Duration,
        filter: Filter,
        sort: Column,
        host: String,
        now: Instant,
    ) -> App {
        App {
            table: ConnTable::new(stale_after),
            now,
            interval,
            host,
            filter,
            sort,
            reverse: false,
            status_since: now,
            group_reverse: false,
            view: View::Sockets,
            mode: Mode::Browse,
            paused: false,
            lines: Vec::new(),
            time_wait: Vec::new(),
            groups: Vec::new(),
            group_lines: Vec::new(),
            group_sort: GroupSort::Count,
            expanded: FxHashSet::default(),
            selected: None,
            selected_group: 0,
            selected_idx: None,
            offset: 0,
            hscroll: 0,
            viewport: Viewport {
                table: Rect::new(0, 0, 80, 21),
                ..Viewport::default()
            },
            history: VecDeque::new(),
            closed: Vec::new(),
            status: None,
            error: None,
            polls: 0,
            color: true,
            state_counts: Vec::new(),
            spare: None,
            stale_counts: Vec::new(),
            marked: FxHashSet::default(),
            read_only: false,
            scope: crate::actions::Scope::Everything,
            powers: crate::actions::Powers::all(),
            focus: crate::collector::namespaces::Focus::default(),
            kills: Vec::new(),
            kill_log: None,
            kills_offset: 0,
            search: None,
            filter_history: Vec::new(),
            search_history: Vec::new(),
            presets: default_presets(),
            columns: Column::DASHBOARD.to_vec(),
            past: None,
        }
    }
}

/// How long a note stays on the status line (the action log keeps results for good).
const STATUS_FOR: Duration = Duration::from_secs(10);

/// The one place state changes.
pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    let effects = handle(app, msg);
    // A note goes after a while; a failure to write the audit log stays until the next note.
    let lasting = app
        .status
        .as_deref()
        .is_some_and(|s| s.starts_with("LOG NOT WRITTEN"));
    if !lasting && app.now.saturating_duration_since(app.status_since) > STATUS_FOR {
        app.status = None;
    }
    effects
}

impl App {
    /// Says `text` on the status line, for [`STATUS_FOR`].
    pub fn note(&mut self, text: String) {
        self.status = Some(text);
        self.status_since = self.now;
    }
}

fn handle(app: &mut App, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Poll(snap, now) => {
            if app.past.is_some() {
                travel::poll_aside(app, *snap, now);
            } else {
                app.apply_poll(*snap, now);
            }
            vec![]
        }
        Msg::Piece(piece, now) => {
            let live = travel::live_table(app);
            if let Some(b) = piece.begins {
                live.begin(now, b.wall, &b.traced);
            }
            live.absorb(piece.socks);
            vec![]
        }
        Msg::PollFailed(e) => {
            travel::live_table(app).give_up();
            app.error = Some(e);
            vec![]
        }
        // The past's clocks stand still: its idle times are those of its moment.
        Msg::Tick(_) if app.past.is_some() => vec![],
        Msg::Tick(now) => {
            let had_closed = !app.closed.is_empty();
            app.now = now;
            if had_closed {
                app.rebuild();
            }
            vec![]
        }
        Msg::Layout(viewport) => {
            app.set_viewport(viewport);
            vec![]
        }
        Msg::Resize => vec![],
        Msg::Signal => vec![Effect::Quit],
        Msg::Suspend => vec![Effect::Suspend],
        Msg::Paste(text) => {
            edit::paste(app, &text);
            vec![]
        }
        Msg::Mouse(m) => {
            // Behind a dialog nothing moves.
            if !app.mode.is_dialog() {
                keys::mouse(app, m);
            }
            vec![]
        }
        Msg::Key(k) => keys::key(app, k),
        Msg::Arrived(arrival) => travel::arrived(app, arrival),
        Msg::Acted { reports, log_error } => {
            dialogs::acted(app, reports, log_error);
            vec![]
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
