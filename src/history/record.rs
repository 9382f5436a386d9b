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
        changes: crate::store::changes::Changes::default(),
        everything: Filter::parse("").expect("the empty filter parses"),
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
    /// What each socket was when last written, and when the next keyframe is due.
    changes: crate::store::changes::Changes,
    /// The filter that takes every event.
    everything: Filter,
    /// A store that cannot be written is said once, and again once it works.
    failing: bool,
}

impl Recorder {
    /// One poll: its events stored, its metrics published; how long it took.
    fn once(&mut self) -> std::time::Duration {
        let started = Instant::now();
        let polled = self.source.poll();
        match polled {
            Ok(()) => {
                self.write();
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

    /// The poll's lines: its events, its mark, and the sockets (a keyframe, or what changed).
    fn write(&mut self) {
        let now = SystemTime::now();
        let starts = self.writer.next_starts_segment(now);
        let keyframe = self.changes.keyframe_due(starts);
        if keyframe && !starts {
            self.writer.make_room_for_keyframe();
        }
        let (socks, read) = self.source.socks();
        let wall = read.0;
        let delta = self.changes.delta(socks, read, keyframe);
        let sample = crate::store::snapshot::Sample {
            time: crate::actions::log::rfc3339(wall),
            sample: delta.tcp,
        };
        let settings = *self.source.last().0.settings();
        let namespaces = self.changes.to_name(
            crate::store::snapshot::stored_namespaces(&self.source.last().0.ctx.namespaces),
            keyframe,
        );
        let (source, everything) = (&self.source, &self.everything);
        // A stale event of a socket the socket lines hold is stored by its cookie.
        let table = &source.last().0;
        let stored = |cookie: u64| {
            table
                .by_cookie(crate::model::Cookie(cookie))
                .is_some_and(|e| crate::store::snapshot::StoredSock::keeps(e.sock))
        };
        let mut socket_bytes = 0;
        let written = self.writer.append_with((now, keyframe), |w| {
            let mut run = crate::store::events::Run::default();
            source.each_event(everything, |ev| run.write(w, ev, stored))?;
            run.close(w)?;
            socket_bytes = crate::store::snapshot::write_poll(
                w,
                &sample,
                (&settings, &namespaces),
                keyframe,
                delta,
            )?;
            Ok(())
        });
        match written {
            Ok(_) => {
                // Reading a moment costs its socket lines, not the events beside them.
                self.changes.wrote(socket_bytes, keyframe);
                self.stored_again();
            }
            Err(e) => {
                // What was not written is written again, whole, in the next poll's keyframe.
                self.changes.forget();
                self.failed(&e);
            }
        }
    }

    fn stored_again(&mut self) {
        if self.failing {
            crate::say!("{WHO}: writing to the store again");
            self.failing = false;
        }
    }

    /// Whatever went wrong (a full disk, no inode left, the directory gone, a poll too large
    /// for a frame), recording goes on and this poll's events are lost; on a full disk the
    /// store drops its oldest data to make room.
    fn failed(&mut self, e: &crate::store::StoreError) {
        if !self.failing {
            let full = matches!(e, crate::store::StoreError::Write(io)
                if io.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()));
            let making_room = if full {
                "dropping the oldest data to make room; "
            } else {
                ""
            };
            crate::say!(
                "{WHO}: {e}: {making_room}events are lost until a write succeeds; recording \
                 goes on"
            );
        }
        self.failing = true;
    }
}
