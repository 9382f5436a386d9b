//! Rows: the table filtered, sorted and counted once per poll or change, and the selection
//! kept on its socket (or, when that socket closes, moved to its neighbour).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::{groups, App, Line, Mode, Sample, View, Viewport, CHANGE_HIGHLIGHT, HISTORY};
use super::{GroupLine, MAX_CLOSED};
use crate::model::filter::{Filter, FilterError};
use crate::model::{Proto, Snapshot, SockKey, SockState, StaleReason};

impl App {
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

    /// The socket a line can select: live sockets only (closed rows and summaries are shown,
    /// not chosen).
    pub(super) fn line_key(&self, line: Line) -> Option<SockKey> {
        match line {
            Line::Sock(i) => Some(self.table.entry(i as usize).key()),
            Line::Closed(_) | Line::TimeWait(_) => None,
        }
    }

    /// Selects the line at `idx` (a live socket's).
    pub(super) fn select_line(&mut self, idx: usize) {
        if let Some(key) = self.lines.get(idx).and_then(|&l| self.line_key(l)) {
            self.selected = Some(key);
            self.selected_idx = Some(idx);
        }
    }

    /// Selects a socket again, when it is still listed (else the selection stays: a socket
    /// not on screen is never the one `k` would act on).
    pub(super) fn select_key(&mut self, key: SockKey) {
        if let Some(i) = self
            .lines
            .iter()
            .position(|&l| self.line_key(l) == Some(key))
        {
            self.select_line(i);
        }
    }

    /// The first selectable line at `idx` or after, else before (a neighbour of a row that went).
    fn neighbour(&self, idx: usize) -> Option<usize> {
        let after = (idx..self.lines.len()).find(|&i| self.line_key(self.lines[i]).is_some());
        after.or_else(|| {
            (0..idx.min(self.lines.len()))
                .rev()
                .find(|&i| self.line_key(self.lines[i]).is_some())
        })
    }

    /// Whether `TIME_WAIT` sockets are listed one by one: only when the filter asks for them.
    fn show_time_wait(&self) -> bool {
        self.filter.asks_for_time_wait()
    }

    /// Rebuilds the lines (and the groups, when shown) from the table, filter and sort. A
    /// selected socket that closed gives the selection to its neighbour, said in the status.
    pub fn rebuild(&mut self) {
        let now = self.now;
        let before = self.selected_idx;
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
            .retain(|c| now.saturating_duration_since(c.at) < CHANGE_HIGHLIGHT);
        lines.extend((0..self.closed.len() as u32).map(Line::Closed));
        self.lines = lines;
        if self.view == View::Groups {
            self.regroup();
        }
        self.locate_selection();
        self.set_focus();
        let gone = self.selected.filter(|k| self.table.get(k).is_none());
        let closed = gone.is_some();
        // One the operator killed needs no note: the kill's result says more.
        let killed = gone.is_some_and(|k| {
            self.kills
                .iter()
                .any(|r| r.target.cookie == k.cookie.0 && r.outcome.is_success())
        });
        if self.selected_idx.is_none() {
            // Closed: its neighbour, where it was. Hidden by the filter, or none yet: the top.
            let at = if closed { before.unwrap_or(0) } else { 0 };
            let had = self.selected.take();
            if let Some(i) = self.neighbour(at) {
                self.select_line(i);
            }
            // The pane showed that socket: it closes rather than show (and offer to act on)
            // another one, whether the socket closed or the filter hides it now.
            if had.is_some() && matches!(self.mode, Mode::Detail { .. }) {
                self.mode = Mode::Browse;
                if !closed {
                    self.status =
                        Some("the socket shown is hidden by the filter now: details closed".into());
                }
            }
            if closed && !killed {
                self.note(if self.selected.is_some() {
                    "the selected socket closed: the selection moved to its neighbour".into()
                } else {
                    "the selected socket closed".into()
                });
            }
        }
    }

    /// The groups and their lines again, after the table, the filter or the sort changed.
    pub(super) fn regroup(&mut self) {
        self.groups = groups(&self.table, &self.filter, self.now, self.group_sort);
        if self.group_reverse {
            self.groups.reverse();
        }
        self.group_lines.clear();
        for (gi, g) in self.groups.iter().enumerate() {
            self.group_lines.push(GroupLine::Group(gi as u32));
            if self.expanded.contains(&g.id()) {
                self.group_lines
                    .extend((0..g.members.len() as u32).map(|m| GroupLine::Member(gi as u32, m)));
            }
        }
        self.selected_group = self
            .selected_group
            .min(self.group_lines.len().saturating_sub(1));
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

    /// Counts by state (in a fixed order) and by stale reason, in one pass; a sparkline sample.
    pub(super) fn count(&mut self) {
        let sample = self.count_only();
        self.history.push_back(sample);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// The counts of [`Self::count`], without a sparkline sample (the view changed, not time).
    pub(super) fn count_only(&mut self) -> Sample {
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
        Sample {
            established,
            stale: any_stale,
        }
    }

    pub(super) fn apply_poll(&mut self, snap: Snapshot, now: Instant) {
        self.now = now;
        let crate::model::table::Applied {
            mut spare,
            departed,
            gone,
            ended,
            released,
        } = self.table.apply(snap, now);
        // What disappeared stays greyed for a moment: only rows the operator could see (under
        // the current filter), not in a hunt for stale sockets, and not too many.
        if !gone.is_empty() && !self.filter.mentions_stale() {
            let shown: rustc_hash::FxHashSet<u32> = self
                .lines
                .iter()
                .filter_map(|l| match l {
                    Line::Sock(i) => Some(*i),
                    _ => None,
                })
                .collect();
            for (i, sock) in gone.into_iter().zip(departed) {
                if shown.contains(&i) {
                    // A dead connection's end was told when the kernel ended it: its row,
                    // greyed once its process lets go, says that end.
                    let end = released
                        .iter()
                        .find(|(c, _)| *c == sock.cookie.0)
                        .map(|(_, h)| (h.cause, h.source));
                    self.closed.push(super::Closed { sock, at: now, end });
                }
            }
            let excess = self.closed.len().saturating_sub(MAX_CLOSED);
            self.closed.drain(..excess);
        }
        for e in &ended {
            let Some(cookie) = e.cookie else { continue };
            if let Some(c) = self.closed.iter_mut().find(|c| c.sock.cookie.0 == cookie) {
                c.end = Some((e.cause, e.source));
            }
        }
        spare.clear();
        self.spare = Some(spare);
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

    /// A new filter is a new list: a selection it does not show moves to its first row.
    pub(super) fn set_filter(&mut self, text: &str) -> Result<(), FilterError> {
        self.filter = Filter::parse(text)?;
        // Rows that closed under the old filter do not linger in the new list.
        self.closed.clear();
        self.offset = 0;
        self.rebuild();
        Ok(())
    }

    pub(super) fn move_selection(&mut self, delta: isize) {
        match self.view {
            View::Kills => {
                let max = self.kills.len().saturating_sub(1);
                self.kills_offset = self.kills_offset.saturating_add_signed(delta).min(max);
            }
            View::Groups => {
                let max = self.group_lines.len().saturating_sub(1);
                self.selected_group = self.selected_group.saturating_add_signed(delta).min(max);
            }
            View::Sockets => {
                if self.lines.is_empty() {
                    return;
                }
                let cur = self.selected_line().unwrap_or(0);
                let next = cur.saturating_add_signed(delta).min(self.lines.len() - 1);
                // Summary and closed rows cannot be selected: the nearest live row in the
                // direction of travel, else the other way.
                let pick = if delta < 0 {
                    (0..=next)
                        .rev()
                        .find(|&i| self.line_key(self.lines[i]).is_some())
                        .or_else(|| self.neighbour(next))
                } else {
                    self.neighbour(next)
                };
                if let Some(i) = pick {
                    self.select_line(i);
                }
            }
        }
    }

    /// Takes the screen's layout: keeps the selection and the panes' scroll inside it.
    pub(super) fn set_viewport(&mut self, viewport: Viewport) {
        self.viewport = viewport;
        // Fewer columns than when paged right (a column emptied, one namespace left): the
        // last page, not pages of nothing.
        if self.hscroll > 0 {
            self.hscroll = self.hscroll.min(self.viewport.skipped + 1);
        }
        if self.viewport.too_small
            && matches!(
                self.mode,
                Mode::ConfirmKill { .. } | Mode::SetKeepalive { .. }
            )
        {
            self.mode = Mode::Browse;
            self.note("cancelled: the terminal is too small to show the dialog".into());
        }
        let v = &self.viewport;
        match &mut self.mode {
            Mode::Detail { scroll } => {
                *scroll = (*scroll).min(v.detail_lines.saturating_sub(v.detail_height));
            }
            Mode::Help { scroll } => {
                *scroll = (*scroll).min(v.help_lines.saturating_sub(v.help_height));
            }
            _ => {}
        }
        let page = self.viewport.page();
        let (sel, len) = match self.view {
            View::Sockets => (self.selected_line().unwrap_or(0), self.lines.len()),
            View::Groups => (self.selected_group, self.group_lines.len()),
            // The kill log scrolls by its own offset and has no selection.
            View::Kills => return,
        };
        if sel < self.offset {
            self.offset = sel;
        } else if sel >= self.offset + page {
            self.offset = sel + 1 - page;
        }
        self.offset = self.offset.min(len.saturating_sub(page));
    }
}
