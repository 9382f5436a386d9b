//! Polls and turns each poll into events: what `katop history --follow` prints and `katop
//! record` stores, from the one collector and model.

use std::time::{Duration, Instant};

use crate::cli::Args;
use crate::collector::Collector;
use crate::model::ends::join::{self, Ended};
use crate::model::filter::Filter;
use crate::model::{ConnTable, SockEntry, SockState};

use super::event::{Event, Kind};

/// The collector and table behind a stream of events.
pub struct EventSource {
    collector: Collector,
    table: ConnTable,
    host: String,
    first: bool,
    /// Whether the last poll's openings and state changes are told (not the first poll's).
    tells_changes: bool,
    /// When the last poll was applied: the moment its events are judged at.
    applied_at: Instant,
    warned: Vec<String>,
    /// The last poll's ends (for the exporter's counters when the recorder feeds it).
    ended: Vec<Ended>,
    /// Whether the tracepoints are read, or why not.
    watching: Result<(), String>,
    /// Connections told `closed` that the table still lists (`FIN_WAIT2`, `TIME_WAIT`, held
    /// dead): their state changes are not told after their end.
    told_closed: rustc_hash::FxHashSet<u64>,
}

impl EventSource {
    /// `who` names the command in what it says (`katop history`).
    pub fn new(args: &Args, who: &str) -> anyhow::Result<EventSource> {
        let mut collector = Collector::new(crate::selection(args))?;
        let watching = collector.watch_ends();
        if let Err(why) = &watching {
            crate::say!("{who}: causes are inferred from the last poll (marked so): {why}");
        }
        let mut table = ConnTable::new(args.stale_after);
        table.set_peers(false);
        table.set_middleboxes(crate::middleboxes(args));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(EventSource {
            collector,
            table,
            host,
            first: true,
            tells_changes: false,
            applied_at: Instant::now(),
            warned: Vec::new(),
            ended: Vec::new(),
            watching,
            told_closed: rustc_hash::FxHashSet::default(),
        })
    }

    fn polled_wall(&self) -> std::time::SystemTime {
        self.table
            .ctx
            .polled_wall
            .unwrap_or_else(std::time::SystemTime::now)
    }

    /// Every socket of the last poll, and when it was taken.
    /// The last poll's sockets, when its dump ended, and how long the dump took.
    pub fn socks(
        &self,
    ) -> (
        impl Iterator<Item = &crate::model::RawSock>,
        (std::time::SystemTime, std::time::Duration),
    ) {
        (
            self.table.entries().map(|e| e.sock),
            (self.polled_wall(), self.table.cost.dump),
        )
    }

    /// One poll, applied to the table; [`Self::each_event`] then tells its events.
    pub fn poll(&mut self) -> anyhow::Result<()> {
        // A failed poll tells nothing, not the last one's events again.
        self.ended.clear();
        self.tells_changes = false;
        // The events are told by now: the table keeps only what the next poll needs, and that
        // poll fills its buffer (one poll's sockets in memory, not two).
        let spare = self.table.retire(crate::model::Keep::Ends);
        let snap = self.collector.poll_into(spare)?;
        self.applied_at = Instant::now();
        let applied = self.table.apply(snap, self.applied_at);
        crate::say_new_warnings(&self.table.warnings, &mut self.warned);
        self.told_closed
            .extend(applied.ended.iter().filter_map(|e| e.cookie));
        let table = &self.table;
        self.told_closed
            .retain(|c| table.by_cookie(crate::model::Cookie(*c)).is_some());
        // The first poll is where katop starts watching, not where connections open.
        self.tells_changes = !self.first;
        self.first = false;
        self.ended = applied.ended;
        Ok(())
    }

    /// The last poll's events that `filter` takes, oldest first, each handed to `each` as it
    /// is made: a burst (100k idle connections turning stale together) is never held whole.
    pub fn each_event<E>(
        &self,
        filter: &Filter,
        mut each: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        let now = self.applied_at;
        let (table, host) = (&self.table, self.host.as_str());
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        };
        // Events print their time to the ms: ends in that order, the poll's own changes
        // after those before it and before those at or after it.
        let mut ends: Vec<&Ended> = self.ended.iter().collect();
        ends.sort_by_key(|e| ms(e.at));
        let polled = ms(self.polled_wall());
        let split = ends.partition_point(|e| ms(e.at) < polled);
        let tell_end = |end: &Ended, each: &mut dyn FnMut(&Event) -> Result<(), E>| {
            let Some(ev) = closed(end, table, filter, now, host) else {
                return Ok(());
            };
            // A kill is told, then the end it caused.
            if end.cause == crate::model::ends::Cause::Killed {
                let mut killed = ev.clone();
                killed.event = Kind::Killed;
                (killed.lifetime_s, killed.bytes_sent, killed.bytes_received) = (None, None, None);
                each(&killed)?;
            }
            each(&ev)
        };
        for end in &ends[..split] {
            tell_end(end, &mut each)?;
        }
        if self.tells_changes {
            let ended = &self.told_closed;
            for ev in changes(table, filter, now, host) {
                if !(ev.event == Kind::State && ev.cookie.is_some_and(|c| ended.contains(&c))) {
                    each(&ev)?;
                }
            }
        }
        for ev in keepalive_changes(table, filter, now, host) {
            each(&ev)?;
        }
        for end in &ends[split..] {
            tell_end(end, &mut each)?;
        }
        Ok(())
    }

    /// The table after the last poll, and the ends that poll saw.
    pub fn last(&self) -> (&ConnTable, &[Ended]) {
        (&self.table, &self.ended)
    }

    /// Whether causes come from the tracepoints, or why they are inferred.
    pub fn watching(&self) -> Result<(), String> {
        self.watching.clone()
    }
}

/// Connections that appeared or changed state in the last poll.
fn changes<'a>(
    table: &'a ConnTable,
    filter: &'a Filter,
    now: Instant,
    host: &'a str,
) -> impl Iterator<Item = Event> + 'a {
    let polled = table.ctx.polled_at.unwrap_or(now);
    let wall = table
        .ctx
        .polled_wall
        .unwrap_or_else(std::time::SystemTime::now);
    // Set this poll: the table keeps these times in whole ms, and polls are 100 ms apart at least.
    let this_poll =
        move |t: Instant| polled.saturating_duration_since(t) < Duration::from_millis(1);
    table.entries().flat_map(move |e| {
        let mut out = Vec::new();
        if !(join::is_connection(e.sock) || crate::model::stale::is_dead(e.sock))
            || !filter.matches(&e, now)
        {
            return out;
        }
        let new = this_poll(e.first_seen());
        if this_poll(e.state_since()) && join::is_connection(e.sock) {
            // Seen first in TIME_WAIT: it opened and ended between two polls.
            if !(new && e.sock.state == SockState::TimeWait) {
                let kind = if new { Kind::Opened } else { Kind::State };
                out.push(Event::of(kind, &e, wall, host));
            }
        }
        let (now_stale, was) = (e.stale, e.stale_was());
        if !new && now_stale != was {
            let names = |set: crate::model::StaleSet, but: crate::model::StaleSet| {
                set.iter()
                    .filter(|r| !but.contains(*r))
                    .map(|r| r.name().to_string())
                    .collect::<Vec<_>>()
            };
            let mut ev = Event::of(Kind::Stale, &e, wall, host);
            ev.stale = Some(names(now_stale, crate::model::StaleSet::default()));
            ev.gained = Some(names(now_stale, was));
            ev.lost = Some(names(was, now_stale));
            out.push(ev);
        }
        out
    })
}

/// Connections whose keepalive options the last poll found changed, with the options now.
fn keepalive_changes<'a>(
    table: &'a ConnTable,
    filter: &'a Filter,
    now: Instant,
    host: &'a str,
) -> impl Iterator<Item = Event> + 'a {
    let wall = table
        .ctx
        .polled_wall
        .unwrap_or_else(std::time::SystemTime::now);
    table.opts_changed.iter().filter_map(move |cookie| {
        let e = table.by_cookie(*cookie)?;
        if !join::is_connection(e.sock) || !filter.matches(&e, now) {
            return None;
        }
        let mut ev = Event::of(Kind::Keepalive, &e, wall, host);
        ev.keepalive = Some(super::event::Keepalive::of(&e.sock.opts));
        Some(ev)
    })
}

/// A connection's end, if the filter takes it. One no poll saw has only its two ends (and
/// its cookie): the filter takes it or not by those (a term about anything else fails).
fn closed(
    end: &Ended,
    table: &ConnTable,
    filter: &Filter,
    now: Instant,
    host: &str,
) -> Option<Event> {
    if let Some(sock) = &end.sock {
        let e = SockEntry::bare(sock, now, &table.ctx);
        return filter
            .matches(&e, now)
            .then(|| Event::closed(end, Some(&e), host));
    }
    let sock = end.tuple.map(|t| unseen(&t, end.cookie))?;
    filter
        .matches(&SockEntry::bare(&sock, now, &table.ctx), now)
        .then(|| Event::closed(end, None, host))
}

/// A connection no poll saw, as far as its end tells it: TCP, its two ends, its cookie.
fn unseen(t: &crate::model::ends::trace::Tuple, cookie: Option<u64>) -> crate::model::RawSock {
    tcp_sock(t.local_addr(), t.remote_addr(), cookie)
}

/// A TCP socket known only by its ends and cookie (`CLOSE`, its owner unknown).
fn tcp_sock(
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
    cookie: Option<u64>,
) -> crate::model::RawSock {
    use crate::model::{Cookie, Endpoint, Family, InetAddr, Inode, NetnsId, Owner, Proto};
    crate::model::RawSock {
        proto: Proto::Tcp,
        family: if local.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        },
        state: SockState::Close,
        local: Endpoint::Inet(InetAddr::from(local)),
        remote: Endpoint::Inet(InetAddr::from(remote)),
        interface: 0,
        inode: Inode(0),
        cookie: Cookie(cookie.unwrap_or(0)),
        netns: NetnsId::default(),
        uid: None,
        recv_q: 0,
        send_q: 0,
        timer: None,
        tcp_info: None,
        owner: Owner::Unknown,
        opts: crate::model::SockOpts::default(),
    }
}

/// A stored event's connection, as far as the event tells it, for the filter.
pub fn sock_of(ev: &Event) -> crate::model::RawSock {
    use crate::model::{Owner, Process, Proto};
    let addr = |a: &Option<String>| {
        a.as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .unwrap_or_else(|| (std::net::Ipv4Addr::UNSPECIFIED, 0).into())
    };
    let mut sock = tcp_sock(addr(&ev.local), addr(&ev.remote), ev.cookie);
    sock.state = ev
        .state
        .as_deref()
        .and_then(|n| {
            (1..=12)
                .map(SockState::from_kernel)
                .find(|s| s.name(Proto::Tcp) == n)
        })
        .unwrap_or(SockState::Close);
    if let (Some(pid), Some(name)) = (ev.pid, &ev.process) {
        sock.owner = Owner::Process {
            process: std::sync::Arc::new(Process {
                pid,
                name: name.as_str().into(),
                cmdline: "".into(),
                container: ev.container.as_deref().map(Into::into),
            }),
            fd: 0,
        };
    }
    sock
}
