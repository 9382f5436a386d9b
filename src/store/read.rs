//! Reading a store back: every stored event line between two times, oldest first.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{frame, segments, shown, StoreError};
use crate::files::Dir;

/// The stored event lines (NDJSON, as written) whose `time` lies in `[since, until]`, oldest
/// first. A torn or damaged tail is skipped, never an error.
pub fn lines(path: &Path, since: SystemTime, until: SystemTime) -> Result<Vec<String>, StoreError> {
    let err = |e| StoreError::File(shown(path), e);
    let dir = Dir::existing(path).map_err(err)?;
    let all = segments(&dir).map_err(err)?;
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let (from, to) = (secs(since), secs(until));
    let mut out = Vec::new();
    for (i, (name, start, _)) in all.iter().enumerate() {
        // A segment ends where the next begins.
        let ends = all.get(i + 1).map_or(u64::MAX, |n| n.1);
        if *start > to || ends < from {
            continue;
        }
        let file = dir.open_read(name).map_err(err)?;
        let batches = frame::decode_all(std::io::BufReader::new(file)).map_err(StoreError::Read)?;
        for batch in batches {
            for line in String::from_utf8_lossy(&batch).lines() {
                if in_range(line, since, until) {
                    out.push(line.to_string());
                }
            }
        }
    }
    Ok(out)
}

fn in_range(line: &str, since: SystemTime, until: SystemTime) -> bool {
    #[derive(serde::Deserialize)]
    struct Time<'a> {
        time: &'a str,
    }
    serde_json::from_str::<Time>(line)
        .ok()
        .and_then(|t| humantime::parse_rfc3339_weak(t.time).ok())
        .is_some_and(|t| t >= since && t <= until)
}

/// `--at`, `--since`, `--until`: RFC 3339 (`2026-12-06T03:00:00Z`, or without a zone: UTC), or a
/// duration ago (`10m ago`, `2h ago`, `1d ago`); none is the earliest or now.
pub fn parse_time(text: Option<&str>) -> Result<Option<SystemTime>, String> {
    let Some(text) = text.map(str::trim) else {
        return Ok(None);
    };
    if let Some(ago) = text.strip_suffix("ago") {
        let ms = crate::model::duration::parse_ms(ago.trim())?;
        return SystemTime::now()
            .checked_sub(Duration::from_millis(ms))
            .map(Some)
            .ok_or_else(|| format!("'{text}' is before the epoch"));
    }
    humantime::parse_rfc3339_weak(text).map(Some).map_err(|_| {
        format!(
            "'{}' is not a time: give RFC 3339 (2026-12-06T03:00:00Z) or an age (10m ago)",
            crate::text::printable(text)
        )
    })
}
