//! Durations as operators write them: `500ms`, `90s`, `10m`, `2h11m15s`, `1d`.

use std::fmt::Write as _;

/// Parses a duration into milliseconds. A bare number is seconds.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a duration like 500ms, 30s, 10m, 2h or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(bad);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(per)
            .and_then(|v| v.checked_add(total))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// `7875` → `2h11m15s`; `0` → `0s`; days past 48 hours (`3d4h`).
pub fn format_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let hours = if secs >= 172_800 {
        let _ = write!(out, "{d}d");
        h
    } else {
        secs / 3600
    };
    for (n, unit) in [(hours, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// Compact form for table cells: at most two units (`2h11m`, `45s`, `850ms`).
pub fn format_ms_short(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match () {
        () if d > 0 => format!("{d}d{h}h"),
        () if h > 0 => format!("{h}h{m:02}m"),
        () if m > 0 => format!("{m}m{s:02}s"),
        () => format!("{s}s"),
    }
}

/// [`format_ms_short`] with tenths of a second under 10 s, for what katop itself takes (a poll
/// of 1.9 s is not one of 1 s).
pub fn format_ms_tenths(ms: u64) -> String {
    if (1000..10_000).contains(&ms) {
        format!("{}.{}s", ms / 1000, ms / 100 % 10)
    } else {
        format_ms_short(ms)
    }
}

/// [`format_ms_short`] of whole seconds: the one duration format of every human-facing view.
pub fn format_s_short(secs: u64) -> String {
    format_ms_short(secs.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("30"), Ok(30_000));
        assert_eq!(parse_ms("10m"), Ok(600_000));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("2h11m15s"), Ok(7_875_000));
        assert_eq!(parse_ms("1d"), Ok(86_400_000));
        for bad in [
            "",
            "m",
            "10x",
            "1.5h",
            "-1s",
            "10m5",
            "99999999999999999999d",
        ] {
            assert!(parse_ms(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_secs(7875), "2h11m15s");
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(432_000), "5d");
        assert_eq!(parse_ms(&format_secs(7875)), Ok(7_875_000));
        assert_eq!(format_ms_short(850), "850ms");
        assert_eq!(format_ms_short(7_875_000), "2h11m");
        assert_eq!(format_ms_short(65_000), "1m05s");
        assert_eq!(format_ms_tenths(1_960), "1.9s");
        assert_eq!(format_ms_tenths(850), "850ms");
        assert_eq!(format_ms_tenths(12_400), "12s");
    }
}
