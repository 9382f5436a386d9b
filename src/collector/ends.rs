//! Connection ends as they happen, from the kernel's tracepoints through a tracefs instance of
//! katop's own (`instances/katop-PID`: its events and buffer are apart from anyone else's
//! tracing). Root only; without it, causes are inferred from the last poll.
//!
//! A thread reads `trace_pipe` and joins the events into ends ([`Tracker`]); each poll takes
//! what it found. The instance is removed when the watch is dropped, and an earlier katop's
//! instance left by a crash is removed at start.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags};

use crate::model::ends::trace::{self, Traced, Tracker};

/// Ends held for the next poll at most (a bound when polls stall; more are dropped and
/// counted).
const MAX_WAITING: usize = 200_000;

/// Where tracefs is mounted (the first that is).
const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Default)]
struct Found {
    ended: Vec<Traced>,
    dropped: u64,
}

/// What a poll takes from the watch.
#[derive(Debug, Default)]
pub struct Drained {
    /// Connections destroyed since the last poll, with their cookies.
    pub ended: Vec<Traced>,
    /// Ends lost to a full queue since the last poll.
    pub dropped: u64,
}

/// The running watch; dropping it stops the thread and removes the instance.
pub struct EndWatch {
    instance: PathBuf,
    found: Arc<Mutex<Found>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EndWatch {
    /// Starts watching, or says why it cannot (not root, no tracefs, no such events).
    pub fn start() -> Result<EndWatch, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("exact causes need root (tracefs)".into());
        }
        let root = MOUNTS
            .iter()
            .map(Path::new)
            .find(|p| p.join("instances").is_dir())
            .ok_or("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")?;
        remove_orphans(&root.join("instances"));
        let instance = root
            .join("instances")
            .join(format!("katop-{}", std::process::id()));
        std::fs::create_dir(&instance)
            .map_err(|e| format!("cannot make a tracefs instance: {e}"))?;
        // From here on, dropping the watch removes the instance again.
        let mut watch = EndWatch {
            instance: instance.clone(),
            found: Arc::new(Mutex::new(Found::default())),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        // Room for bursts between reads: 1 MiB a CPU.
        let _ = write_control(&instance.join("buffer_size_kb"), "1024");
        for event in trace::EVENTS {
            write_control(&instance.join("events").join(event).join("enable"), "1")
                .map_err(|e| format!("cannot enable the tracepoint {event}: {e}"))?;
        }
        let pipe = rustix::fs::open(
            instance.join("trace_pipe"),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot read the trace: {e}"))?;
        let (found, stop) = (watch.found.clone(), watch.stop.clone());
        let thread = std::thread::Builder::new()
            .name("katop-ends".into())
            .spawn(move || read_events(pipe, &found, &stop))
            .map_err(|e| format!("cannot start the trace reader: {e}"))?;
        watch.thread = Some(thread);
        Ok(watch)
    }

    /// What was found since the last call.
    pub fn drain(&self) -> Drained {
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Drained {
            ended: std::mem::take(&mut found.ended),
            dropped: std::mem::take(&mut found.dropped),
        }
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for event in trace::EVENTS {
            let _ = write_control(
                &self.instance.join("events").join(event).join("enable"),
                "0",
            );
        }
        let _ = std::fs::remove_dir(&self.instance);
    }
}

/// tracefs control files exist already: opened for writing, never created, no link followed.
fn write_control(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let nofollow = i32::try_from(OFlags::NOFOLLOW.bits()).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nofollow)
        .open(path)?;
    f.write_all(value.as_bytes())
}

/// Instances of katops that are no longer running (killed before they could remove theirs).
fn remove_orphans(instances: &Path) {
    let Ok(dir) = std::fs::read_dir(instances) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("katop-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

fn lost_events(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("[LOST ")?;
    rest.split_once(' ')?.0.parse().ok()
}

fn read_events(pipe: rustix::fd::OwnedFd, found: &Mutex<Found>, stop: &AtomicBool) {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut tracker = Tracker::default();
    let mut reader = BufReader::with_capacity(1 << 16, std::fs::File::from(pipe));
    let mut line = String::new();
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    while !stop.load(Ordering::Relaxed) {
        if reader.buffer().is_empty() {
            let mut fds = [PollFd::new(reader.get_ref(), PollFlags::IN)];
            if poll(&mut fds, Some(&timeout)).is_err() {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            if fds[0].revents().is_empty() {
                continue;
            }
        }
        // A line cut mid-way stays in `line` until its rest arrives.
        match reader.read_line(&mut line) {
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) if !line.ends_with('\n') => {}
            Ok(_) => {
                // The kernel's ring overflowed: `CPU:1 [LOST 12 EVENTS]`.
                if let Some(n) = lost_events(&line) {
                    let mut f = found
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    f.dropped += n;
                }
                let end = trace::parse(&line).and_then(|e| tracker.feed(e, SystemTime::now()));
                line.clear();
                if let Some(end) = end {
                    let mut f = found
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if f.ended.len() >= MAX_WAITING {
                        f.dropped += 1;
                    } else {
                        f.ended.push(end);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                line.clear();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lost_events_are_counted() {
        assert_eq!(super::lost_events("CPU:1 [LOST 12 EVENTS]\n"), Some(12));
        assert_eq!(
            super::lost_events("x-1 [000] ..s1. 1.0: tcp_destroy_sock: a=b"),
            None
        );
    }
}
