//! `katop history`: every connection's life as events (`opened`, `state`, `closed` with why),
//! one per line. `--follow` streams them live from the collector and model every other
//! frontend uses; the events come from what each poll changed and from the kernel's own word
//! on each end (the tracepoints, where katop has root).

pub mod event;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::{Args, HistoryArgs};
use crate::collector::Collector;
use crate::model::ends::join::{self, Ended};
use crate::model::filter::Filter;
use crate::model::{ConnTable, SockEntry, SockState};
use event::{Event, Kind};

/// Bad usage, as everywhere in katop.
const USAGE: u8 = 2;

pub fn run(args: &Args, h: &HistoryArgs) -> ExitCode {
    if !h.follow {
        crate::say!(
            "katop history: reading past events needs a store (katop record), which this \
             version does not write yet; --follow streams them as they happen"
        );
        return ExitCode::from(USAGE);
    }
    let source = h.filter.clone().unwrap_or_default();
    let filter = match Filter::parse(&source) {
        Ok(f) => f,
        Err(e) => {
            crate::say!("katop history: bad --filter: {e}\n{}", e.pointed(&source));
            return ExitCode::from(USAGE);
        }
    };
    match follow(args, h, &filter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::say!("katop history: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn follow(args: &Args, h: &HistoryArgs, filter: &Filter) -> anyhow::Result<()> {
    let mut collector = Collector::new(crate::selection(args))?;
    if let Err(why) = collector.watch_ends() {
        crate::say!("katop history: causes are inferred from the last poll (marked so): {why}");
    }
    let mut table = ConnTable::new(args.stale_after);
    table.set_peers(false);
    table.set_middleboxes(crate::middleboxes(args));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut warned = Vec::new();
    let mut first = true;
    crate::until_signal(h.interval, || {
        let snap = collector.poll()?;
        let now = Instant::now();
        let applied = table.apply(snap, now);
        crate::say_new_warnings(&table.warnings, &mut warned);
        let mut events = Vec::new();
        // The first poll is where katop starts watching, not where connections open.
        if !first {
            events.extend(changes(&table, filter, now, &host));
        }
        first = false;
        for end in &applied.ended {
            if let Some(ev) = closed(end, &table, filter, now, &host) {
                events.push(ev);
            }
        }
        events.sort_by(|a, b| a.time.cmp(&b.time));
        let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
        for ev in &events {
            if h.json {
                serde_json::to_writer(&mut out, ev)?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "{}", ev.line())?;
            }
        }
        out.flush()?;
        Ok(())
    })
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
    table.entries().filter_map(move |e| {
        if !join::is_connection(e.sock) || !this_poll(e.state_since()) {
            return None;
        }
        let kind = if this_poll(e.first_seen()) {
            // Seen first in TIME_WAIT: it opened and ended between two polls.
            if e.sock.state == SockState::TimeWait {
                return None;
            }
            Kind::Opened
        } else {
            Kind::State
        };
        filter
            .matches(&e, now)
            .then(|| Event::of(kind, &e, wall, host))
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
    use crate::model::{Cookie, Endpoint, Family, InetAddr, Inode, NetnsId, Owner, Proto};
    let local = t.local_addr();
    crate::model::RawSock {
        proto: Proto::Tcp,
        family: if local.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        },
        state: SockState::Close,
        local: Endpoint::Inet(InetAddr::from(local)),
        remote: Endpoint::Inet(InetAddr::from(t.remote_addr())),
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
