//! `katop record`: the flight recorder. Polls like the dashboard and appends each poll's events
//! to the store ([`crate::store`]) until SIGTERM or SIGINT. With `--listen` or `--textfile` the
//! same poll feeds the exporter's metrics too: a host runs one katop, not two.

use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::cli::{Args, RecordArgs};
use crate::exporter::{Publisher, Serving};
use crate::model::filter::Filter;
use crate::store::{Limits, Writer};

use super::source::EventSource;

const WHO: &str = "katop record";

pub fn run(args: &Args, r: &RecordArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        crate::say!("{WHO}: {e}");
        ExitCode::FAILURE
    };
    let dir = match crate::store::dir_or_default(r.store.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let serving = match Serving::prepare(WHO, r.listen, r.textfile.as_deref()) {
        Ok(s) => s,
        Err((msg, code)) => {
            crate::say!("{msg}");
            return code;
        }
    };
    let limits = Limits {
        retain: r.retain,
        max_size: r.max_size,
    };
    let writer = match Writer::open(&dir, limits) {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let source = match EventSource::new(args, WHO) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{e:#}")),
    };
    let Serving {
        textfile,
        listener,
        runtime,
    } = serving;
    // Metrics only when asked for: a port or a file.
    let publisher = (listener.is_some() || textfile.is_some()).then(|| {
        let mut p = Publisher::new(r.max_groups, textfile, WHO);
        p.ends_from(source.watching());
        p
    });
    let latest = publisher
        .as_ref()
        .map(|p| std::sync::Arc::clone(&p.latest))
        .unwrap_or_default();
    let mut recorder = Recorder {
        source,
        writer,
        publisher,
        polls: 0,
        failing: false,
    };
    crate::exporter::run_polling(WHO, listener, latest, r.interval, runtime, move || {
        recorder.once()
    })
}

/// The poll, the store, and the metrics when they are asked for.
struct Recorder {
    source: EventSource,
    writer: Writer,
    publisher: Option<Publisher>,
    polls: u32,
    /// A store that cannot be written is said once, and again once it works.
    failing: bool,
}

impl Recorder {
    /// One poll: its events stored, its metrics published; how long it took.
    fn once(&mut self) -> std::time::Duration {
        let started = Instant::now();
        let everything = Filter::parse("").expect("the empty filter parses");
        let polled = self.source.poll(&everything);
        match polled {
            Ok(events) => {
                match self.lines(&events) {
                    Ok(lines) => self.store(&lines),
                    Err(e) => crate::say!("{WHO}: {e}"),
                }
                if let Some(p) = &mut self.publisher {
                    p.publish(Ok(self.source.last()), started);
                }
            }
            Err(e) => match &mut self.publisher {
                Some(p) => p.publish(Err(e), started),
                None => crate::say!("{WHO}: poll failed: {e:#}"),
            },
        }
        started.elapsed()
    }

    /// The poll's lines: its events (with the sockets `--at` needs), its mark, and now and then
    /// a keyframe.
    fn lines(&mut self, events: &[super::event::Event]) -> serde_json::Result<Vec<u8>> {
        let mut lines = Vec::new();
        for ev in events {
            serde_json::to_writer(&mut lines, ev)?;
            lines.push(b'\n');
            // What `--at` needs of a connection that opened or changed since the keyframe.
            if let Some(sock) = &ev.stored {
                let line = crate::store::snapshot::SockLine {
                    time: ev.time.clone(),
                    sock: sock.clone(),
                };
                serde_json::to_writer(&mut lines, &line)?;
                lines.push(b'\n');
            }
        }
        // Each poll marked, so the dashboard's past steps from one to the next.
        serde_json::to_writer(&mut lines, &self.source.sample())?;
        lines.push(b'\n');
        // Every connection now and then, for `katop --at`.
        if self.polls % crate::store::snapshot::KEYFRAME_EVERY == 0 {
            serde_json::to_writer(&mut lines, &self.source.keyframe())?;
            lines.push(b'\n');
        }
        self.polls = self.polls.wrapping_add(1);
        Ok(lines)
    }

    fn store(&mut self, lines: &[u8]) {
        match self.writer.append(lines, SystemTime::now()) {
            Ok(()) if self.failing => {
                crate::say!("{WHO}: writing to the store again");
                self.failing = false;
            }
            Ok(()) => {}
            // Whatever went wrong (a full disk, no inode left, the directory gone), recording
            // goes on: the oldest data is dropped to make room, and this poll's events are lost.
            Err(e) => {
                if !self.failing {
                    crate::say!(
                        "{WHO}: {e}: dropping the oldest data to make room; events are lost \
                         until a write succeeds; recording goes on"
                    );
                }
                self.failing = true;
            }
        }
    }
}
