//! Rows: the table filtered, sorted and counted once per poll or change, and the selection kept on its socket.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    pub(super) fn locate_selection(&mut self) {
        self.selected_idx = self.selected.and_then(|key| {
            self.lines
                .iter()
                .position(|&l| self.line_key(l) == Some(key))
        });
    }

    pub(super) fn line_key(&self, line: Line) -> Option<SockKey> {
        match line {
            Line::Sock(i) => Some(self.table.entry(i as usize).key()),
            Line::Closed(i) => Some(self.closed[i as usize].0.key()),
            Line::TimeWait(_) => None,
        }
    }

    /// Whether `TIME_WAIT` sockets are listed one by one: only when the filter asks for them.
    pub(super) fn show_time_wait(&self) -> bool {
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
    pub(super) fn set_focus(&self) {
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
    pub(super) fn count(&mut self) {
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

    pub(super) fn apply_poll(&mut self, snap: Snapshot, now: Instant) {
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
    pub(super) fn set_filter(&mut self, text: &str) -> Result<(), FilterError> {
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

    pub(super) fn move_selection(&mut self, delta: isize) {
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
