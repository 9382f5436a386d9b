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
    let mut lines = Vec::new();
    each_frame(dir, name, |frame| {
        lines.extend(frame.lines().map(String::from));
        true
    })?;
    Ok(lines)
}

/// Each frame of a segment as text, one in memory at a time, until `each` says stop; nothing
/// for a segment removed meanwhile (retention).
fn each_frame(
    dir: &Dir,
    name: &std::ffi::OsStr,
    mut each: impl FnMut(&str) -> bool,
) -> Result<(), StoreError> {
    let file = match dir.open_read(name) {
        Ok(f) => f,
        Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::File(shown(dir.path()), e)),
    };
    frame::for_each(std::io::BufReader::new(file), |b| {
        each(&String::from_utf8_lossy(&b))
    })
    .map_err(StoreError::Read)
}

/// A segment's socket lines and poll marks up to `at`, from its last keyframe at or before `at` when it holds one
/// (`true`): what came before that keyframe is let go as the segment is read, and reading
/// stops at the first line after `at`.
fn lines_up_to(
    dir: &Dir,
    name: &std::ffi::OsStr,
    at: SystemTime,
) -> Result<(Vec<String>, bool), StoreError> {
    let mut kept = Vec::new();
    let mut keyframe = false;
    each_frame(dir, name, |frame| {
        for line in frame.lines() {
            if time_of(line).is_some_and(|t| t > at) {
                return false;
            }
            // Events are not part of a moment's sockets: a burst of them is not held.
            if !(super::events::is_socket_line(line) || is_sample(line)) {
                continue;
            }
            if line.contains("\"keyframe\":") {
                kept.clear();
                keyframe = true;
            }
            kept.push(line.to_string());
        }
        true
    })?;
    Ok((kept, keyframe))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every stored event whose `time` lies in `[since, until]` (only those of the connection
/// `only`, when given), oldest first, to `each`: with its line as stored when it was stored
/// whole, else filled in from its poll's socket lines ([`super::events`]).
pub fn for_each_event(
    path: &Path,
    (since, until): (SystemTime, SystemTime),
    only: Option<u64>,
    mut each: impl FnMut(&crate::history::event::Event, Option<&str>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use super::events::{is_run, is_socket_line, run_needle, Filler};
    let (dir, all) = open(path)?;
    // One connection's events are found without reading the others: (in a whole event, in
    // a run).
    let named = only.map(|c| (format!("\"cookie\":{c},"), run_needle(c)));
    for (i, (name, start, _)) in all.iter().enumerate() {
        let ends = all.get(i + 1).map_or(u64::MAX, |n| n.1);
        if *start > secs(until) || ends < secs(since) {
            continue;
        }
        let lines = segment_lines(&dir, name)?;
        let told = |l: &str| time_of(l).is_some_and(|t| t >= since && t <= until);
        let mut filler =
            Filler::wanting(lines.iter().map(String::as_str).filter(|l| told(l)), only);
        // From a run on, a poll's lines wait for its socket line, which follows them.
        let mut waiting: Vec<&str> = Vec::new();
        let mut tell = |line: &str, filler: &Filler| -> anyhow::Result<()> {
            let run = is_run(line);
            let ours = named.as_ref().is_none_or(|(whole, in_run)| {
                line.contains(if run { in_run } else { whole }.as_str())
            });
            if !ours {
                return Ok(());
            }
            if run {
                filler.fill(line, only, |ev| each(ev, None))?;
            } else if let Ok(ev) = serde_json::from_str::<crate::history::event::Event>(line) {
                if only.is_none_or(|c| ev.cookie == Some(c)) {
                    each(&ev, Some(line))?;
                }
            }
            Ok(())
        };
        for line in &lines {
            if is_socket_line(line) {
                filler.apply(line);
                for l in waiting.drain(..) {
                    tell(l, &filler)?;
                }
            } else if told(line) {
                if is_run(line) || !waiting.is_empty() {
                    waiting.push(line);
                } else {
                    tell(line, &filler)?;
                }
            }
        }
        for l in waiting.drain(..) {
            tell(l, &filler)?;
        }
    }
    Ok(())
}

/// The lines `--at` needs, oldest first: from the last keyframe at or before `at` up to `at`.
/// An error that says why when the store holds no record near `at`.
pub fn lines_for_at(path: &Path, at: SystemTime) -> anyhow::Result<Vec<String>> {
    // No store knows what has not happened yet.
    if at > SystemTime::now() + Duration::from_secs(1) {
        anyhow::bail!(
            "{} is in the future: katop looks back, not ahead",
            crate::actions::log::rfc3339(at)
        );
    }
    let (dir, all) = open(path)?;
    let mut kept: Vec<Vec<String>> = Vec::new();
    let mut latest: Option<SystemTime> = None;
    // Newest first, until a segment with a keyframe before `at`.
    for (name, start, _) in all.iter().rev() {
        if *start > secs(at) {
            continue;
        }
        let (lines, keyframe) = lines_up_to(&dir, name, at)?;
        if latest.is_none() {
            latest = lines.iter().rev().find_map(|l| time_of(l));
        }
        kept.push(lines);
        if keyframe {
            break;
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
        None => {
            let first = all
                .first()
                .map(|(_, start, _)| {
                    crate::actions::log::rfc3339(
                        SystemTime::UNIX_EPOCH + Duration::from_secs(*start),
                    )
                })
                .map_or_else(
                    || "it holds no records".to_string(),
                    |f| format!("its records begin at {f}"),
                );
            anyhow::bail!(
                "the store {} holds nothing at {shown_at}: it was not recording then ({first})",
                shown(path)
            )
        }
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
    let mut lines = std::collections::VecDeque::new();
    for_each_event(
        path,
        (SystemTime::UNIX_EPOCH, until),
        Some(cookie),
        |ev, _| {
            lines.push_back(ev.line());
            if lines.len() > LIFELINE {
                lines.pop_front();
            }
            Ok(())
        },
    )?;
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
