//! katop's store: what `katop record` writes and `katop history` reads. A directory of its own
//! (`0700`, files `0600`: who talks to whom is sensitive), written only through [`crate::files`];
//! append-only segments of checksummed, compressed frames ([`frame`]), one segment an hour at
//! most, dropped whole when older than the retention or when the store outgrows its size.
//!
//! Nothing is lost to a crash: a frame is synced as it is written, a torn one ends its segment
//! for readers, and a new recorder starts a new segment. A full disk drops the oldest data
//! first and keeps the recorder running. One recorder at a time (a lock file).

pub mod changes;
pub mod events;
pub mod frame;
pub mod memory;
pub mod read;
pub mod snapshot;
pub mod when;

/// An ESTABLISHED TCP connection with this cookie, idle for `idle_ms`, from a port of its own
/// (the store's tests' socket).
#[cfg(test)]
pub(crate) fn test_conn(cookie: u64, idle_ms: u32) -> crate::model::RawSock {
    crate::app::tests::conn(
        cookie,
        &format!("10.0.0.1:{}", 40_000 + cookie),
        "10.0.0.2:5432",
        crate::model::SockState::Established,
        idle_ms,
    )
}

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::files::{Dir, FileError};

/// Segment files: `events-<unix seconds of their first frame>[-n].kz`.
pub const PREFIX: &str = "events-";
const SUFFIX: &str = ".kz";
/// A segment takes frames for an hour at most, or this many bytes.
const SEGMENT_SPAN: Duration = Duration::from_secs(3600);
const SEGMENT_MAX: u64 = 64 << 20;
/// Room kept for a last frame: past this a segment is full for [`Writer::next_starts_segment`].
const SEGMENT_MARGIN: u64 = 8 << 20;

/// How much the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub retain: Duration,
    pub max_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store {0}: {1}")]
    File(String, FileError),
    #[error("no --store given, and no HOME or XDG_STATE_HOME to keep one in")]
    NoHome,
    #[error("another katop record is writing to {0}")]
    Busy(String),
    #[error(
        "{0} is not private and holds other files: katop keeps its store in a directory of its \
         own (made 0700); give a new one"
    )]
    Shared(String),
    #[error("cannot write to the store: {0}")]
    Write(std::io::Error),
    #[error("cannot read the store: {0}")]
    Read(std::io::Error),
}

/// The default store: `/var/lib/katop` as root, else `$XDG_STATE_HOME/katop`
/// (`~/.local/state/katop`).
/// `--store` when given, else the default; an error when there is no home to put it in
/// (never a directory relative to wherever katop was started).
pub fn dir_or_default(given: Option<&Path>) -> Result<PathBuf, StoreError> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/katop"));
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|h| h.is_absolute())
                .map(|h| h.join(".local/state"))
        })
        .map(|d| d.join("katop"))
        .ok_or(StoreError::NoHome)
}

/// Whether `path` is an existing directory others may read that holds anything but a store.
fn others_can_read_files_besides_a_store(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let others = meta.permissions().mode() & 0o077;
    if !meta.is_dir() || others == 0 {
        return false;
    }
    std::fs::read_dir(path).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !(name == "lock" || name.starts_with(PREFIX))
        })
    })
}

fn shown(p: &Path) -> String {
    crate::text::printable(&p.to_string_lossy()).into_owned()
}

struct Segment {
    name: OsString,
    file: File,
    /// Bytes written whole so far (a failed write is cut back to it).
    len: u64,
    started: SystemTime,
}

/// The store, open for appending.
pub struct Writer {
    dir: Dir,
    _lock: File,
    current: Option<Segment>,
    limits: Limits,
    /// The largest frame written (at scale, a keyframe: 25 MB at 1M sockets).
    largest: u64,
}

impl Writer {
    /// Opens (or makes) the store at `path` for one recorder.
    pub fn open(path: &Path, limits: Limits) -> Result<Writer, StoreError> {
        let err = |e| StoreError::File(shown(path), e);
        // A shared directory (`/tmp`, `/var/lib`) is never made private under its users.
        let shared = crate::privilege::as_real_user(|| {
            Ok::<_, std::io::Error>(others_can_read_files_besides_a_store(path))
        });
        if shared.unwrap_or(false) {
            return Err(StoreError::Shared(shown(path)));
        }
        let dir = Dir::private(path).map_err(err)?;
        let lock = dir.append("lock".as_ref(), 0o600, false).map_err(err)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| StoreError::Busy(shown(path)))?;
        Ok(Writer {
            dir,
            _lock: lock,
            current: None,
            largest: 0,
            limits,
        })
    }

    /// Appends one batch of NDJSON lines (one poll's events) as a frame, synced. On a full disk
    /// the oldest segment goes and the write is tried again; a batch that still cannot be
    /// written is lost (the error says so) and the recorder goes on.
    pub fn append(&mut self, lines: &[u8], now: SystemTime) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.append_with((now, true), |w| w.write_all(lines))
            .map(|_| ())
    }

    /// [`Self::append`] of what `write` writes, compressed as it goes (harder for a
    /// `keyframe`: [`frame::KEYFRAME_LEVEL`]); the bytes it wrote (before compression). Only a
    /// keyframe begins a segment: a poll's delta too large for the segment's room still goes
    /// in it, and the next poll begins the next segment with a keyframe (a segment reads
    /// alone: `--at` and the stale events stored by cookie need its first sockets whole).
    pub fn append_with(
        &mut self,
        (now, keyframe): (SystemTime, bool),
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        let level = if keyframe {
            frame::KEYFRAME_LEVEL
        } else {
            frame::LEVEL
        };
        let (frame, raw) = frame::encode_with(level, write).map_err(StoreError::Write)?;
        let mut result = self.write_frame(&frame, now, keyframe);
        if matches!(&result, Err(StoreError::Write(e)) if e.raw_os_error() == Some(28)) {
            self.drop_oldest();
            result = self.write_frame(&frame, now, keyframe);
        }
        self.trim(now);
        result.map(|()| raw)
    }

    /// Whether the next frame written at `now` begins a segment (the recorder then writes a
    /// keyframe in it: a segment reads alone, whatever retention dropped before it).
    pub fn next_starts_segment(&self, now: SystemTime) -> bool {
        self.current.as_ref().is_none_or(|s| {
            s.len + SEGMENT_MARGIN > SEGMENT_MAX
                || now.duration_since(s.started).unwrap_or_default() >= SEGMENT_SPAN
        })
    }

    /// A keyframe is due mid-segment: when the segment could not then take another as large
    /// (the largest frame written), the keyframe begins a new one instead, so that the segment
    /// does not fill right after it and the next poll write a second keyframe. At 1M sockets
    /// a 64 MiB segment holds two keyframes at most.
    pub fn make_room_for_keyframe(&mut self) {
        if self
            .current
            .as_ref()
            .is_some_and(|s| s.len + 2 * self.largest > SEGMENT_MAX)
        {
            self.current = None;
        }
    }

    fn write_frame(
        &mut self,
        frame: &[u8],
        now: SystemTime,
        keyframe: bool,
    ) -> Result<(), StoreError> {
        let due = match &self.current {
            None => true,
            Some(s) => {
                keyframe
                    && (self.next_starts_segment(now) || s.len + frame.len() as u64 > SEGMENT_MAX)
            }
        };
        if due {
            self.current = None;
            self.current = Some(self.new_segment(now)?);
        }
        let Some(seg) = self.current.as_mut() else {
            return Ok(());
        };
        let written = seg
            .file
            .write_all(frame)
            .and_then(|()| seg.file.sync_data());
        match written {
            Ok(()) => {
                seg.len += frame.len() as u64;
                self.largest = self.largest.max(frame.len() as u64);
                Ok(())
            }
            Err(e) => {
                // No torn frame (nor a hole) stays before the next one.
                let _ = seg.file.set_len(seg.len);
                let _ = std::io::Seek::seek(&mut seg.file, std::io::SeekFrom::Start(seg.len));
                Err(StoreError::Write(e))
            }
        }
    }

    fn new_segment(&self, now: SystemTime) -> Result<Segment, StoreError> {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // `events-SECONDS-N`: names sort as they were made, a restart in the same second too.
        for n in 0..1000 {
            let name = format!("{PREFIX}{secs:012}-{n:03}{SUFFIX}");
            let file = self.dir.create(name.as_ref(), 0o600).map_err(|e| match e {
                FileError::Io(e) => StoreError::Write(e),
                e => StoreError::File(shown(self.dir.path()), e),
            })?;
            if let Some(mut file) = file {
                if let Err(e) = file.write_all(frame::MAGIC).and_then(|()| file.sync_data()) {
                    let _ = self.dir.remove(name.as_ref());
                    return Err(StoreError::Write(e));
                }
                return Ok(Segment {
                    name: name.into(),
                    file,
                    len: frame::MAGIC.len() as u64,
                    started: now,
                });
            }
        }
        Err(StoreError::Write(std::io::Error::other(
            "no free segment name",
        )))
    }

    /// The segments, oldest first, with their start times and sizes.
    fn segments(&self) -> Vec<(OsString, u64, u64)> {
        segments(&self.dir).unwrap_or_default()
    }

    /// The segments but the one being written, oldest first.
    fn finished(&self) -> Vec<(OsString, u64, u64)> {
        let current = self.current.as_ref().map(|s| &s.name);
        self.segments()
            .into_iter()
            .filter(|s| Some(&s.0) != current)
            .collect()
    }

    fn drop_oldest(&mut self) {
        if let Some(oldest) = self.finished().first() {
            let _ = self.dir.remove(&oldest.0);
        }
    }

    /// Drops whole segments whose data is all older than the retention, then the oldest while
    /// the store is over its size.
    fn trim(&mut self, now: SystemTime) {
        let all = self.segments();
        let current = self.current.as_ref().map(|s| s.name.clone());
        let cut = now
            .checked_sub(self.limits.retain)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let mut total: u64 = all.iter().map(|s| s.2).sum();
        for (i, (name, _, size)) in all.iter().enumerate() {
            // Never the one being written (nor any after it: the last is the newest).
            if i + 1 == all.len() || current.as_ref() == Some(name) {
                break;
            }
            // Its data ends where the next segment begins.
            let old = all[i + 1].1 <= cut;
            if old || total > self.limits.max_size {
                if self.dir.remove(name).is_ok() {
                    total -= size;
                }
            } else {
                break;
            }
        }
    }
}

/// A store's segments, oldest first: (name, start in unix seconds, size). Named
/// `events-SECONDS-N.kz`; anything else is not a segment.
pub fn segments(dir: &Dir) -> Result<Vec<(OsString, u64, u64)>, FileError> {
    let mut all: Vec<((u64, u32), OsString, u64)> = dir
        .files(PREFIX)?
        .into_iter()
        .filter_map(|(name, size)| {
            let text = name.to_str()?.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
            let (secs, n) = text.split_once('-')?;
            Some(((secs.parse().ok()?, n.parse().ok()?), name, size))
        })
        .collect();
    all.sort_by_key(|s| s.0);
    Ok(all
        .into_iter()
        .map(|((secs, _), name, size)| (name, secs, size))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("katop-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn segments_rotate_hourly_and_go_whole_past_the_retention_or_the_size() {
        let path = scratch("trim");
        let limits = Limits {
            retain: Duration::from_secs(3 * 3600),
            max_size: 1 << 30,
        };
        let mut w = Writer::open(&path, limits).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = Duration::from_secs(3600);
        for h in 0..6 {
            w.append(b"{\"time\":\"x\"}\n", t0 + hour * h).unwrap();
        }
        let starts: Vec<u64> = w.segments().iter().map(|s| s.1).collect();
        // One segment an hour; what ended more than 3 h before the last write is gone.
        assert_eq!(starts.len(), 4, "{starts:?}");
        assert_eq!(starts[0], 1_800_000_000 + 2 * 3600);
        // Over the size: the oldest go first, never the one being written.
        w.limits.max_size = 1;
        w.append(b"{}\n", t0 + hour * 5).unwrap();
        assert_eq!(w.segments().len(), 1);
        drop(w);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_keyframe_due_late_in_a_segment_begins_the_next() {
        let path = scratch("keyframe");
        let limits = Limits {
            retain: Duration::from_secs(3600),
            max_size: 1 << 30,
        };
        let mut w = Writer::open(&path, limits).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // A 20 MB frame that does not compress (a keyframe at scale), then 8 MB of deltas.
        let noise = |n: usize| -> Vec<u8> {
            let mut x = 0x9e37_79b9_7f4a_7c15_u64;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        };
        w.append(&noise(20 << 20), t0).unwrap();
        // Room for two more: it stays in this segment.
        w.make_room_for_keyframe();
        w.append(&noise(8 << 20), t0).unwrap();
        assert_eq!(w.segments().len(), 1);
        // 20 + 8 + 2 x 20 MB is past 64 MiB: the next frame begins a new segment.
        w.make_room_for_keyframe();
        w.append(b"{}\n", t0).unwrap();
        assert_eq!(w.segments().len(), 2);
        // A delta past the segment's room stays in it: only a keyframe begins a segment, and
        // the next poll, told so, writes one.
        let delta = |w: &mut Writer, n: usize| {
            w.append_with((t0, false), |out| out.write_all(&noise(n)))
                .unwrap();
        };
        for _ in 0..3 {
            delta(&mut w, 25 << 20);
        }
        assert_eq!(w.segments().len(), 2);
        assert!(w.next_starts_segment(t0));
        drop(w);
        let _ = std::fs::remove_dir_all(&path);
    }
}
