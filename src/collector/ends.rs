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
    found: Arc<Mutex<Found>>,
    instance: PathBuf,
}

/// A watch's reader and instance, kept where [`stop_all`] finds it: a frontend whose collector
/// thread is never joined (the dashboard) or that ends on a signal still removes its instance.
struct Live {
    instance: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

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
        let (instance, pipe) = make_instance(&root.join("instances"))?;
        let found = Arc::new(Mutex::new(Found::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut live = Live {
            instance: instance.clone(),
            stop: stop.clone(),
            thread: None,
        };
        if let Err(e) = configure(&instance) {
            drop(pipe);
            live.shut();
            return Err(e);
        }
        let reader_found = found.clone();
        match std::thread::Builder::new()
            .name("katop-ends".into())
            .spawn(move || read_events(pipe, &reader_found, &stop))
        {
            Ok(t) => live.thread = Some(t),
            Err(e) => {
                live.shut();
                return Err(format!("cannot start the trace reader: {e}"));
            }
        }
        LIVE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(live);
        Ok(EndWatch { found, instance })
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

/// A new instance of katop's own and its open pipe. Opened at once: the kernel refuses to
/// remove an instance whose pipe is open, so another katop's clean-up never takes a live one;
/// one taken in the moment between (another katop starting) is made again.
fn make_instance(instances: &Path) -> Result<(PathBuf, rustix::fd::OwnedFd), String> {
    let mut last = String::new();
    for _ in 0..3 {
        // The pid alone may repeat (katops in PID namespaces): a random part makes it ours.
        let mut tag = [0u8; 4];
        let _ = rustix::rand::getrandom(&mut tag, rustix::rand::GetRandomFlags::empty());
        let instance = instances.join(format!(
            "katop-{}-{:08x}",
            std::process::id(),
            u32::from_ne_bytes(tag)
        ));
        std::fs::create_dir(&instance)
            .map_err(|e| format!("cannot make a tracefs instance: {e}"))?;
        match rustix::fs::open(
            instance.join("trace_pipe"),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(pipe) => return Ok((instance, pipe)),
            Err(e) => {
                let _ = std::fs::remove_dir(&instance);
                last = format!("cannot read the trace: {e}");
            }
        }
    }
    Err(last)
}

/// The buffer and the events (the state changes filtered in the kernel to those that end or
/// start a connection's life).
fn configure(instance: &Path) -> Result<(), String> {
    // Room for bursts between reads: 4 MiB a CPU.
    let _ = write_control(&instance.join("buffer_size_kb"), "4096");
    let events = instance.join("events");
    let _ = write_control(
        &events.join("sock/inet_sock_set_state/filter"),
        "protocol == 6 && (newstate == 1 || newstate == 4 || newstate == 7 || newstate == 8)",
    );
    for event in trace::EVENTS {
        write_control(&events.join(event).join("enable"), "1")
            .map_err(|e| format!("cannot enable the tracepoint {event}: {e}"))?;
    }
    Ok(())
}

impl Live {
    /// Stops the reader, turns the events off and removes the instance.
    fn shut(&mut self) {
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

impl Drop for EndWatch {
    fn drop(&mut self) {
        let mut live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = live.iter().position(|l| l.instance == self.instance) {
            live.swap_remove(i).shut();
        }
    }
}

/// Stops every watch this process runs and removes its instance: called as katop exits.
pub fn stop_all() {
    let all = std::mem::take(
        &mut *LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for mut l in all {
        l.shut();
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

/// Instances of katops that are no longer running (killed before they could remove theirs):
/// every `katop-*` instance is tried, and the kernel refuses (EBUSY) to remove one whose
/// pipe a running katop holds open.
fn remove_orphans(instances: &Path) {
    let Ok(dir) = std::fs::read_dir(instances) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("katop-")) else {
            continue;
        };
        // An earlier katop's `katop-PID` (its pipe opened late): only once that pid is gone.
        if let Ok(pid) = rest.parse::<u32>() {
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
        }
        let _ = std::fs::remove_dir(entry.path());
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
