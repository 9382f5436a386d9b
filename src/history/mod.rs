//! `katop history`: every connection's life as events (`opened`, `state`, `closed` with why),
//! one per line. `--follow` streams them live from the collector and model every other
//! frontend uses; the events come from what each poll changed and from the kernel's own word
//! on each end (the tracepoints, where katop has root).

pub mod event;
pub mod record;
pub mod source;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::store::when::parse_time;

use crate::cli::{Args, HistoryArgs};
use crate::model::filter::Filter;
use event::Event;

/// Bad usage, as everywhere in katop.
const USAGE: u8 = 2;

pub fn run(args: &Args, h: &HistoryArgs) -> ExitCode {
    let source = h.filter.clone().unwrap_or_default();
    let filter = match Filter::parse(&source) {
        Ok(f) => f,
        Err(e) => {
            crate::say!("katop history: bad --filter: {e}\n{}", e.pointed(&source));
            return ExitCode::from(USAGE);
        }
    };
    let done = if h.follow {
        follow(args, h, &filter)
    } else {
        match (
            parse_time(h.since.as_deref()),
            parse_time(h.until.as_deref()),
        ) {
            (Ok(since), Ok(until)) => stored(h, &filter, since, until),
            (Err(e), _) | (_, Err(e)) => {
                crate::say!("katop history: {e}");
                return ExitCode::from(USAGE);
            }
        }
    };
    match done {
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
    let mut source = source::EventSource::new(args, "katop history")?;
    crate::until_signal(h.interval, || {
        source.poll()?;
        let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
        source.each_event(filter, |ev| print(&mut out, ev, h.json))?;
        out.flush()?;
        Ok(())
    })
}

/// An event to stdout: NDJSON, or a line.
fn print(out: &mut impl Write, ev: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, ev)?;
        out.write_all(b"\n")?;
    } else {
        writeln!(out, "{}", ev.line())?;
    }
    Ok(())
}

/// Events read back from the store, oldest first.
fn stored(
    h: &HistoryArgs,
    filter: &Filter,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
) -> anyhow::Result<()> {
    let dir = crate::store::dir_or_default(h.store.as_deref())?;
    let now = Instant::now();
    let ctx = crate::model::entry::Ctx::default();
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    crate::store::read::for_each_event(
        &dir,
        (
            since.unwrap_or(SystemTime::UNIX_EPOCH),
            until.unwrap_or_else(SystemTime::now),
        ),
        None,
        |ev, stored| {
            let sock = source::sock_of(ev);
            if !filter.matches(&crate::model::SockEntry::bare(&sock, now, &ctx), now) {
                return Ok(());
            }
            match (h.json, stored) {
                // As stored: the same object `--follow --json` printed.
                (true, Some(line)) => writeln!(out, "{line}")?,
                (true, None) => {
                    serde_json::to_writer(&mut out, ev)?;
                    out.write_all(b"\n")?;
                }
                (false, _) => writeln!(out, "{}", ev.line())?,
            }
            Ok(())
        },
    )?;
    out.flush()?;
    Ok(())
}
