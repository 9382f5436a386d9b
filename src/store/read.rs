//! Reading a store back, a segment at a time: the stored event lines between two times, and
//! what `--at` needs (from the last keyframe before a moment).

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{frame, segments, shown, StoreError};
use crate::files::{Dir, FileError};

/// How long before a moment the store must hold a record for `--at` to speak of it (keyframes
/// come every sixth poll: a minute at the default interval).
const RECENT: Duration = Duration::from_secs(90);

/// A store's segments: (name, start in unix seconds, size), oldest first.
type Segments = Vec<(std::ffi::OsString, u64, u64)>;

fn open(path: &Path) -> Result<(Dir, Segments), StoreError> {
    let err = |e| StoreError::File(shown(path), e);
    let dir = Dir::existing(path).map_err(err)?;
    let all = segments(&dir).map_err(err)?;
    Ok((dir, all))
}

/// One segment's lines, oldest first; none for a segment removed meanwhile (retention).
fn segment_lines(dir: &Dir, name: &std::ffi::OsStr) -> Result<Vec<String>, StoreError> {
    let file = match dir.open_read(name) {
        Ok(f) => f,
        Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::File(shown(dir.path()), e)),
    };
    let batches = frame::decode_all(std::io::BufReader::new(file)).map_err(StoreError::Read)?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every stored line whose `time` lies in `[since, until]`, oldest first, to `each`, a segment
/// in memory at a time. A torn or damaged tail is skipped, never an error.
pub fn for_each_line(
    path: &Path,
    since: SystemTime,
    until: SystemTime,
    mut each: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (dir, all) = open(path)?;
    for (i, (name, start, _)) in all.iter().enumerate() {
        // A segment ends where the next begins.
        let ends = all.get(i + 1).map_or(u64::MAX, |n| n.1);
        if *start > secs(until) || ends < secs(since) {
            continue;
        }
        for line in segment_lines(&dir, name)? {
            if time_of(&line).is_some_and(|t| t >= since && t <= until) {
                each(&line)?;
            }
        }
    }
    Ok(())
}

/// The lines `--at` needs, oldest first: from the last keyframe at or before `at` up to `at`.
/// An error that says why when the store holds no record near `at`.
pub fn lines_for_at(path: &Path, at: SystemTime) -> anyhow::Result<Vec<String>> {
    let (dir, all) = open(path)?;
    let mut kept: Vec<Vec<String>> = Vec::new();
    let mut latest: Option<SystemTime> = None;
    // Newest first, until a segment with a keyframe before `at`.
    for (name, start, _) in all.iter().rev() {
        if *start > secs(at) {
            continue;
        }
        let lines: Vec<String> = segment_lines(&dir, name)?
            .into_iter()
            .filter(|l| time_of(l).is_some_and(|t| t <= at))
            .collect();
        if latest.is_none() {
            latest = lines.iter().rev().find_map(|l| time_of(l));
        }
        let keyframe = lines.iter().rposition(|l| l.contains("\"keyframe\":"));
        match keyframe {
            Some(k) => {
                kept.push(lines[k..].to_vec());
                break;
            }
            None => kept.push(lines),
        }
    }
    let shown_at = crate::actions::log::rfc3339(at);
    match latest {
        Some(last) if at.duration_since(last).unwrap_or_default() <= RECENT => {}
        Some(last) => anyhow::bail!(
            "the store {} holds nothing near {shown_at}: its last record before then is at {}",
            shown(path),
            crate::actions::log::rfc3339(last)
        ),
        None => anyhow::bail!(
            "the store {} holds nothing at {shown_at}: it was not recording then",
            shown(path)
        ),
    }
    kept.reverse();
    Ok(kept.concat())
}

/// The snapshot the store holds for `at`: what `--at` and the dashboard's past show.
pub fn snapshot_at(path: &Path, at: SystemTime) -> anyhow::Result<crate::model::Snapshot> {
    let lines = lines_for_at(path, at)?;
    super::snapshot::at(&lines, at).ok_or_else(|| {
        anyhow::anyhow!(
            "the store {} holds no keyframe before {}: it was not recording then",
            shown(path),
            crate::actions::log::rfc3339(at)
        )
    })
}

/// The most events a lifeline keeps (its last ones).
const LIFELINE: usize = 200;

/// A connection's recorded events up to `until`, oldest first, as lines for people (its last
/// [`LIFELINE`]).
pub fn lifeline(path: &Path, cookie: u64, until: SystemTime) -> anyhow::Result<Vec<String>> {
    let needle = format!("\"cookie\":{cookie},");
    let mut lines = std::collections::VecDeque::new();
    for_each_line(path, SystemTime::UNIX_EPOCH, until, |line| {
        if line.contains(&needle) {
            if let Ok(ev) = serde_json::from_str::<crate::history::event::Event>(line) {
                if ev.cookie == Some(cookie) {
                    lines.push_back(ev.line());
                    if lines.len() > LIFELINE {
                        lines.pop_front();
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(lines.into())
}

/// Whether a stored line marks a poll the recorder made (`sample`, or a keyframe).
fn is_sample(line: &str) -> bool {
    line.contains("\"sample\":") || line.contains("\"keyframe\":")
}

/// The recorded poll nearest `from` on one side: the last before it (`back`), or the first
/// after it; `None` when the store holds none there.
pub fn sample_beside(
    path: &Path,
    from: SystemTime,
    back: bool,
) -> anyhow::Result<Option<SystemTime>> {
    let (dir, all) = open(path)?;
    let mut order: Vec<usize> = (0..all.len()).collect();
    if back {
        order.reverse();
    }
    for i in order {
        let (name, start, _) = &all[i];
        let ends = all.get(i + 1).map_or(u64::MAX, |n| n.1);
        // Only segments on the asked side of `from` can hold the answer.
        if (back && *start > secs(from)) || (!back && ends < secs(from)) {
            continue;
        }
        let times = segment_lines(&dir, name)?
            .into_iter()
            .filter(|l| is_sample(l))
            .filter_map(|l| time_of(&l));
        let found = if back {
            times.filter(|t| *t < from).max()
        } else {
            times.filter(|t| *t > from).min()
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn time_of(line: &str) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Time<'a> {
        time: &'a str,
    }
    // katop writes `time` first: read it there, without tokenizing a keyframe of 100k sockets.
    if let Some(rest) = line.strip_prefix("{\"time\":\"") {
        let end = rest.find('"')?;
        return humantime::parse_rfc3339_weak(&rest[..end]).ok();
    }
    serde_json::from_str::<Time>(line)
        .ok()
        .and_then(|t| humantime::parse_rfc3339_weak(t.time).ok())
}
