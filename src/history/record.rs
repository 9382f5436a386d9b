//! `katop record`: the flight recorder. Polls like the dashboard and appends each poll's events
//! to the store ([`crate::store`]) until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::SystemTime;

use crate::cli::{Args, RecordArgs};
use crate::model::filter::Filter;
use crate::store::{Limits, Writer};

pub fn run(args: &Args, r: &RecordArgs) -> ExitCode {
    let dir = match crate::store::dir_or_default(r.store.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            crate::say!("katop record: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limits = Limits {
        retain: r.retain,
        max_size: r.max_size,
    };
    let mut writer = match Writer::open(&dir, limits) {
        Ok(w) => w,
        Err(e) => {
            crate::say!("katop record: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut source = match super::source::EventSource::new(args, "katop record") {
        Ok(s) => s,
        Err(e) => {
            crate::say!("katop record: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let everything = Filter::parse("").expect("the empty filter parses");
    // A store that cannot be written is said once, and again once it works.
    let mut failing = false;
    let mut polls: u32 = 0;
    let done = crate::until_signal(r.interval, || {
        let events = source.poll(&everything)?;
        let mut lines = Vec::new();
        for ev in &events {
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
        serde_json::to_writer(&mut lines, &source.sample())?;
        lines.push(b'\n');
        // Every connection now and then, for `katop --at`.
        if polls % crate::store::snapshot::KEYFRAME_EVERY == 0 {
            serde_json::to_writer(&mut lines, &source.keyframe())?;
            lines.push(b'\n');
        }
        polls = polls.wrapping_add(1);
        match writer.append(&lines, SystemTime::now()) {
            Ok(()) if failing => {
                crate::say!("katop record: writing to the store again");
                failing = false;
            }
            Ok(()) => {}
            // Whatever went wrong (a full disk, no inode left, the directory gone), recording
            // goes on: the oldest data is dropped to make room, and this poll's events are lost.
            Err(e) => {
                if !failing {
                    crate::say!(
                        "katop record: {e}: dropping the oldest data to make room; events are \
                         lost until a write succeeds; recording goes on"
                    );
                }
                failing = true;
            }
        }
        Ok(())
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::say!("katop record: {e:#}");
            ExitCode::FAILURE
        }
    }
}
