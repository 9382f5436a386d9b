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

/// Sockets grouped by (process, service or remote port).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The container the group's processes run in, when there is one.
    pub container: Option<String>,
    pub process: String,
    pub pid: Option<u32>,
    pub peer: String,
    /// A filter that selects this group's sockets.
    pub filter: String,
    pub count: usize,
    pub idle_min_ms: Option<u32>,
    pub idle_max_ms: Option<u32>,
    pub stale: usize,
    pub keepalive_off: usize,
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
    selected_idx: Option<usize>,
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
            view: View::Sockets,
            mode: Mode::Browse,
            paused: false,
            lines: Vec::new(),
            time_wait: Vec::new(),
            groups: Vec::new(),
            selected: None,
            selected_group: 0,
            selected_idx: None,
            selected_gone: false,
            offset: 0,
            page: 20,
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
            focus: crate::collector::namespaces::Focus::default(),
            kills: Vec::new(),
            kill_log: None,
            kills_offset: 0,
        }
    }

    /// Index of the selected line, if the selection is in the list.
    pub fn selected_line(&self) -> Option<usize> {
        self.selected_idx
    }

    /// Finds the selected socket's line again (after the lines or the selection changed).
    fn locate_selection(&mut self) {
        self.selected_idx = self.selected.and_then(|key| {
            self.lines
                .iter()
                .position(|&l| self.line_key(l) == Some(key))
        });
    }

    fn line_key(&self, line: Line) -> Option<SockKey> {
        match line {
            Line::Sock(i) => Some(self.table.entry(i as usize).key()),
            Line::Closed(i) => Some(self.closed[i as usize].0.key()),
            Line::TimeWait(_) => None,
        }
    }

    /// Whether `TIME_WAIT` sockets are listed one by one: only when the filter asks for them.
    fn show_time_wait(&self) -> bool {
        self.filter.asks_for_time_wait()
    }

    /// Rebuilds the lines (and the groups, when shown) from the table, filter and sort.
    pub fn rebuild(&mut self) {
        let now = self.now;
        let mut idx: Vec<usize> = if self.filter.matches_all() {
            (0..self.table.len()).collect()
        } else {
            (0..self.table.len())
                .filter(|&i| self.filter.matches(&self.table.entry(i), now))
                .collect()
        };
        // Keys computed once per socket, not once per comparison.
        let col = self.sort;
        if col.is_numeric() {
            // A plain number per socket: half the memory of the general key.
            idx.sort_by_cached_key(|&i| match col.sort_key(&self.table.entry(i), now) {
                crate::columns::SortKey::Num(n) => n,
                crate::columns::SortKey::Text(_) => u64::MAX,
            });
        } else {
            idx.sort_by_cached_key(|&i| col.sort_key(&self.table.entry(i), now));
        }
        if self.reverse {
            idx.reverse();
        }
        let show_tw = self.show_time_wait();
        let mut lines = Vec::with_capacity(idx.len());
        let mut tw: HashMap<IpAddr, usize> = HashMap::new();
        for i in idx {
            let e = self.table.entry(i);
            if !show_tw && e.sock.state == SockState::TimeWait {
                if let Some(ip) = e.sock.remote.ip() {
                    *tw.entry(ip).or_default() += 1;
                    continue;
                }
            }
            lines.push(Line::Sock(i as u32));
        }
        let mut tw: Vec<(IpAddr, usize)> = tw.into_iter().collect();
        tw.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        lines.extend((0..tw.len() as u32).map(Line::TimeWait));
        self.time_wait = tw;
        self.closed
            .retain(|(_, at)| now.saturating_duration_since(*at) < CHANGE_HIGHLIGHT);
        lines.extend((0..self.closed.len() as u32).map(Line::Closed));
        self.lines = lines;
        if self.view == View::Groups {
            self.groups = groups(&self.table, &self.filter, now);
            self.selected_group = self.selected_group.min(self.groups.len().saturating_sub(1));
        }
        self.locate_selection();
        self.set_focus();
        // Gone means closed, not filtered out: a socket the filter hides gives the selection up.
        self.selected_gone = self.selected.is_some_and(|k| self.table.get(&k).is_none());
        let hidden = self.selected.is_some_and(|k| self.table.get(&k).is_some())
            && self.selected_idx.is_none();
        if self.selected.is_none() || hidden {
            self.selected = self.lines.iter().find_map(|&l| self.line_key(l));
            self.locate_selection();
        }
    }

    /// Tells the collector which namespaces the operator looks at: the few a filter leaves,
    /// and the selected socket's.
    fn set_focus(&self) {
        const FEW: usize = 8;
        if self.table.ctx.namespaces.len() <= 1 {
            return;
        }
        let mut focus: Vec<crate::model::NetnsId> = Vec::new();
        if !self.filter.matches_all() {
            for &l in &self.lines {
                if let Line::Sock(i) = l {
                    let ns = self.table.entry(i as usize).sock.netns;
                    if !focus.contains(&ns) {
                        focus.push(ns);
                        if focus.len() > FEW {
                            focus.clear();
                            break;
                        }
                    }
                }
            }
        }
        if let Some(k) = self.selected {
            if !focus.contains(&k.netns) {
                focus.push(k.netns);
            }
        }
        if let Ok(mut f) = self.focus.lock() {
            *f = focus;
        }
    }

    /// Counts by state (in a fixed order) and by stale reason, in one pass.
    fn count(&mut self) {
        const ORDER: [&str; 13] = [
            "ESTABLISHED",
            "LISTEN",
            "TIME_WAIT",
            "CLOSE_WAIT",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "LAST_ACK",
            "CLOSING",
            "UNCONN",
            "CLOSE",
            "UNKNOWN",
        ];
        // Position in ORDER, without comparing names per socket.
        fn slot(state: SockState, proto: Proto) -> usize {
            match state {
                SockState::Established => 0,
                SockState::Listen => 1,
                SockState::TimeWait => 2,
                SockState::CloseWait => 3,
                SockState::SynSent => 4,
                SockState::SynRecv => 5,
                SockState::FinWait1 => 6,
                SockState::FinWait2 => 7,
                SockState::LastAck => 8,
                SockState::Closing => 9,
                SockState::Close if proto != Proto::Tcp => 10,
                SockState::Close => 11,
                SockState::Other(_) => 12,
            }
        }
        let mut states = [0usize; ORDER.len()];
        let mut stale = [0usize; StaleReason::ALL.len()];
        let (mut established, mut any_stale) = (0u64, 0u64);
        for e in self.table.entries() {
            states[slot(e.sock.state, e.sock.proto)] += 1;
            if e.sock.state == SockState::Established && e.sock.proto == Proto::Tcp {
                established += 1;
            }
            if !e.stale.is_empty() {
                any_stale += 1;
                for r in e.stale.iter() {
                    stale[r as usize] += 1;
                }
            }
        }
        self.state_counts = ORDER
            .iter()
            .zip(states)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| (*s, n))
            .collect();
        self.stale_counts = StaleReason::ALL
            .iter()
            .zip(stale)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
            .collect();
        self.history.push_back(Sample {
            established,
            stale: any_stale,
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    fn apply_poll(&mut self, snap: Snapshot, now: Instant) {
        self.now = now;
        let crate::model::table::Applied { mut previous, gone } = self.table.apply(snap, now);
        // What disappeared stays greyed for a moment; only rows the operator could see (under
        // the current filter) linger.
        if !gone.is_empty() {
            let mut shown = vec![false; previous.len()];
            for l in &self.lines {
                if let Line::Sock(i) = l {
                    shown[*i as usize] = true;
                }
            }
            for i in gone {
                if shown[i as usize] {
                    self.closed.push((previous[i as usize].clone(), now));
                }
            }
        }
        previous.clear();
        self.spare = Some(previous);
        if !self.marked.is_empty() {
            let table = &self.table;
            self.marked.retain(|k| table.get(k).is_some());
        }
        self.polls += 1;
        self.error = None;
        self.count();
        self.rebuild();
    }

    /// Whether a socket appeared recently (not on the first poll, where everything is new).
    pub fn is_new(&self, first_seen: Instant) -> bool {
        self.polls > 1 && self.now.saturating_duration_since(first_seen) < CHANGE_HIGHLIGHT
    }

    /// A new filter is a new list: a selection it does not show (hidden, or a socket that has
    /// closed) moves to its first row. Polls, by contrast, never move the selection.
    fn set_filter(&mut self, text: &str) -> Result<(), FilterError> {
        self.filter = Filter::parse(text)?;
        // Rows that closed under the old filter do not linger in the new list.
        self.closed.clear();
        self.rebuild();
        if self.selected_idx.is_none() {
            self.selected = self.lines.iter().find_map(|&l| self.line_key(l));
            self.locate_selection();
            self.selected_gone = false;
        }
        Ok(())
    }

    fn move_selection(&mut self, delta: isize) {
        match self.view {
            View::Kills => {
                let max = self.kills.len().saturating_sub(1);
                self.kills_offset = self.kills_offset.saturating_add_signed(delta).min(max);
            }
            View::Groups => {
                let max = self.groups.len().saturating_sub(1);
                self.selected_group = self.selected_group.saturating_add_signed(delta).min(max);
            }
            View::Sockets => {
                if self.lines.is_empty() {
                    return;
                }
                let cur = self.selected_line().unwrap_or(0);
                let next = cur.saturating_add_signed(delta).min(self.lines.len() - 1);
                // Summary rows cannot be selected; step over them in the direction of travel.
                let mut n = next;
                while n < self.lines.len() && self.line_key(self.lines[n]).is_none() {
                    if delta < 0 && n > 0 {
                        n -= 1;
                    } else {
                        n += 1;
                    }
                    if delta < 0 && n == 0 {
                        break;
                    }
                }
                if let Some(key) = self.lines.get(n).and_then(|&l| self.line_key(l)) {
                    self.selected = Some(key);
                    self.selected_idx = Some(n);
                    self.selected_gone = false;
                }
            }
        }
    }

    /// Keeps the selected row inside the visible window of `page` rows.
    pub fn scroll_into_view(&mut self, page: usize) {
        self.page = page.max(1);
        let sel = match self.view {
            View::Sockets => self.selected_line().unwrap_or(0),
            View::Groups => self.selected_group,
            // The kill log scrolls by its own offset and has no selection.
            View::Kills => return,
        };
        if sel < self.offset {
            self.offset = sel;
        } else if sel >= self.offset + self.page {
            self.offset = sel + 1 - self.page;
        }
        let len = match self.view {
            View::Sockets => self.lines.len(),
            View::Groups | View::Kills => self.groups.len(),
        };
        self.offset = self.offset.min(len.saturating_sub(self.page));
    }
}

/// Groups of the filtered sockets by (process, service or remote port), most sockets first.
pub fn groups(table: &ConnTable, filter: &Filter, now: Instant) -> Vec<Group> {
    let mut map: HashMap<(Option<String>, Option<u32>, String), Group> = HashMap::new();
    for e in table.entries().filter(|e| {
        e.sock.proto == Proto::Tcp
            && e.sock.state != SockState::Listen
            && e.sock.state != SockState::TimeWait
    }) {
        if !filter.matches(&e, now) {
            continue;
        }
        let proc = e.sock.owner.process();
        let pid = proc.map(|p| p.pid);
        // The service, else the server's port: the lower of the two (the other is ephemeral).
        let (peer, peer_filter) = match (e.service(), e.sock.local.port(), e.sock.remote.port()) {
            (Some(s), _, _) => (s.to_string(), format!("service:{s}")),
            (None, Some(l), Some(r)) if r <= l => (format!("→ :{r}"), format!("dport:{r}")),
            (None, Some(l), Some(_)) => (format!("serves :{l}"), format!("sport:{l}")),
            _ => ("?".into(), String::new()),
        };
        let container = e.container().map(str::to_string);
        let key = (container.clone(), pid, peer.clone());
        let g = map.entry(key).or_insert_with(|| Group {
            process: proc.map_or_else(|| "-".into(), |p| format!("{}[{}]", p.name, p.pid)),
            pid,
            filter: {
                let mut f = match pid {
                    Some(pid) => format!("pid:{pid} {peer_filter}"),
                    None => format!("{peer_filter} state!=listen"),
                };
                if let Some(c) = &container {
                    f = format!("container:{} {f}", glob::Pattern::escape(c));
                }
                f.trim().to_string()
            },
            container,
            peer,
            count: 0,
            idle_min_ms: None,
            idle_max_ms: None,
            stale: 0,
            keepalive_off: 0,
        });
        g.count += 1;
        if let Some(idle) = e.idle_ms() {
            g.idle_min_ms = Some(g.idle_min_ms.map_or(idle, |m| m.min(idle)));
            g.idle_max_ms = Some(g.idle_max_ms.map_or(idle, |m| m.max(idle)));
        }
        g.stale += usize::from(!e.stale.is_empty());
        g.keepalive_off += usize::from(e.keepalive == Some(crate::model::Keepalive::Off));
    }
    let mut out: Vec<Group> = map.into_values().collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.process.cmp(&b.process))
            .then_with(|| a.peer.cmp(&b.peer))
    });
    out
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

/// The sockets an action takes: the marked ones (in table order), else the selected one.
fn chosen(app: &App) -> Vec<Target> {
    if app.marked.is_empty() {
        return app
            .selected
            .and_then(|k| app.table.get(&k))
            .map(|e| vec![Target::of(&e)])
            .unwrap_or_default();
    }
    let mut shown = Vec::with_capacity(app.marked.len());
    let mut listed = FxHashSet::default();
    for &l in &app.lines {
        if let Line::Sock(i) = l {
            let e = app.table.entry(i as usize);
            if app.marked.contains(&e.key()) {
                listed.insert(e.key());
                shown.push(Target::of(&e));
            }
        }
    }
    // Marked, then hidden by a later filter: still marked, so still listed (and killed).
    let mut hidden: Vec<Target> = app
        .marked
        .iter()
        .filter(|k| !listed.contains(k))
        .filter_map(|k| app.table.get(k))
        .map(|e| Target::of(&e))
        .collect();
    hidden.sort_by_key(|t| t.cookie);
    shown.extend(hidden);
    shown
}

/// Whether acting is allowed; says why not.
fn may_act(app: &mut App, key: char) -> bool {
    if app.read_only {
        app.status = Some(format!(
            "read-only: katop was started with --read-only, so {key} changes nothing"
        ));
    }
    !app.read_only
}

/// `K`: offer to turn keepalive on (or change its timers) on the chosen sockets.
fn ask_keepalive(app: &mut App) {
    if !may_act(app, 'K') {
        return;
    }
    let targets = chosen(app);
    if targets.is_empty() {
        app.status = Some("nothing chosen: select a socket or mark some with Space".into());
        return;
    }
    // Probe well inside the tightest middlebox in front of the first socket's peer.
    let mut change = Change::default();
    let first = targets
        .first()
        .and_then(|t| t.id)
        .map(|id| Endpoint::Inet(id.remote));
    if let Some(m) = first.and_then(|r| middlebox_for(&app.table.ctx.middleboxes, &r)) {
        change.idle_s = change.idle_s.min((m.timeout_s / 2).max(1));
    }
    app.mode = Mode::SetKeepalive {
        targets,
        text: change.to_string(),
        error: None,
    };
}

/// Keys while the keepalive dialog is open: the settings are edited in place; Enter applies
/// valid ones, Esc cancels.
fn keepalive_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let Mode::SetKeepalive {
        targets,
        text,
        error,
    } = &mut app.mode
    else {
        return vec![];
    };
    match k.code {
        KeyCode::Esc => {
            app.mode = Mode::Browse;
            app.status = Some("keepalive unchanged".into());
        }
        KeyCode::Backspace => {
            text.pop();
            *error = None;
        }
        KeyCode::Char(c) => {
            text.push(c);
            *error = None;
        }
        KeyCode::Enter => match text.parse::<Change>() {
            Ok(change) => {
                let targets = std::mem::take(targets);
                app.mode = Mode::Browse;
                app.status = Some(format!(
                    "turning keepalive on ({change}) for {} socket(s)…",
                    targets.len()
                ));
                return vec![Effect::SetKeepalive(targets, change)];
            }
            Err(e) => *error = Some(e),
        },
        _ => {}
    }
    vec![]
}

/// `k` / F9: ask before killing (or say why not).
fn ask_kill(app: &mut App) {
    if !may_act(app, 'k') {
        return;
    }
    let targets = chosen(app);
    if targets.is_empty() {
        app.status = Some(if app.selected_gone {
            "the selected socket is gone: nothing to kill".into()
        } else {
            "nothing to kill: select a socket or mark some with Space".into()
        });
        return;
    }
    app.mode = Mode::ConfirmKill {
        targets,
        yes: false,
    };
}

/// Keys while the kill confirmation is open; only an explicit yes kills.
fn confirm_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let Mode::ConfirmKill { targets, yes } = &mut app.mode else {
        return vec![];
    };
    let go = match k.code {
        KeyCode::Left
        | KeyCode::Right
        | KeyCode::Tab
        | KeyCode::BackTab
        | KeyCode::Char('h' | 'l') => {
            *yes = !*yes;
            return vec![];
        }
        KeyCode::Char('y' | 'Y') => true,
        KeyCode::Enter => *yes,
        KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => false,
        _ => return vec![],
    };
    let targets = std::mem::take(targets);
    app.mode = Mode::Browse;
    if go {
        app.status = Some(format!("killing {} socket(s)…", targets.len()));
        vec![Effect::Kill(targets)]
    } else {
        app.status = Some("kill cancelled: nothing was killed".into());
        vec![]
    }
}

fn acted(app: &mut App, reports: Vec<Report>, log_error: Option<String>) {
    let action = reports.first().map_or("kill", |r| r.action.name());
    let mut status = format!("{action}: {} (L shows the log)", summary(&reports));
    if let Some(reason) = reports.iter().find_map(|r| r.outcome.reason()) {
        status = format!("{status} · {reason}");
    }
    if let Some(e) = log_error {
        status = format!("LOG NOT WRITTEN: {e} · {status}");
    }
    app.status = Some(status);
    for r in &reports {
        if r.outcome.is_success() && r.action == crate::actions::Action::Kill {
            app.marked.retain(|k| k.cookie.0 != r.target.cookie);
        }
    }
    app.kills.extend(reports);
}

/// Space: mark or unmark the selected socket, then move down (as htop tags).
fn toggle_mark(app: &mut App) {
    if app.view != View::Sockets {
        return;
    }
    if let Some(key) = app.selected.filter(|k| app.table.get(k).is_some()) {
        if !app.marked.remove(&key) {
            app.marked.insert(key);
        }
        app.move_selection(1);
    }
}

/// `a`: mark every listed socket (all the filter matches); when all are marked, unmark them.
fn mark_all(app: &mut App) {
    let keys: Vec<SockKey> = app
        .lines
        .iter()
        .filter_map(|&l| match l {
            Line::Sock(i) => Some(app.table.entry(i as usize).key()),
            _ => None,
        })
        .collect();
    if !keys.is_empty() && keys.iter().all(|k| app.marked.contains(k)) {
        for k in &keys {
            app.marked.remove(k);
        }
        app.status = Some(format!("unmarked {} socket(s)", keys.len()));
    } else {
        app.status = Some(format!(
            "marked {} socket(s) (the filter's matches)",
            keys.len()
        ));
        app.marked.extend(keys);
    }
}

fn mouse(app: &mut App, m: MouseEvent, area: ratatui::layout::Rect) {
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
fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
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
fn paste(app: &mut App, pasted: &str) {
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

fn filter_typed(app: &mut App, text: String) {
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

fn cycle_sort(app: &mut App, step: isize) {
    let i = SORTABLE.iter().position(|c| *c == app.sort).unwrap_or(0) as isize;
    let n = SORTABLE.len() as isize;
    app.sort = SORTABLE[((i + step).rem_euclid(n)) as usize];
    app.status = Some(format!(
        "sorted by {}",
        app.sort.header().to_ascii_lowercase()
    ));
    app.rebuild();
}

#[cfg(test)]
#[path = "app_tests.rs"]
pub(crate) mod tests;
