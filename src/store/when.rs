//! The moments an operator names (`--at`, `--since`, `--until`, the dashboard's `b`): RFC 3339
//! with or without an offset, a clock time (`03:00`, `03:00:10`: today in the local time zone,
//! or yesterday when that is still to come), an age (`10m ago`), or `now`. Time zones are
//! jiff's (the system's tz database), not katop's.

use std::time::{Duration, SystemTime};

use jiff::{civil, Timestamp, ZonedDateTime as Zoned};

/// `text` as a moment, `now` being the present in the local time zone.
pub fn parse_at(text: &str, now: &Zoned) -> Result<SystemTime, String> {
    let text = text.trim();
    let wall = system(now.timestamp())?;
    if text.eq_ignore_ascii_case("now") {
        return Ok(wall);
    }
    if let Some(ago) = text.strip_suffix("ago") {
        let ms = crate::model::duration::parse_ms(ago.trim())?;
        return wall
            .checked_sub(Duration::from_millis(ms))
            .ok_or_else(|| format!("'{text}' is before the epoch"));
    }
    if let Some(clock) = clock(text) {
        return system(at_clock(clock, now)?);
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return system(t);
    }
    // Without an offset a date and time are taken as UTC, as katop prints them.
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!(
            "'{}' is not a time: give RFC 3339 (2026-12-06T03:00:00Z, or +01:00), a clock time \
             (03:00, 03:00:10: the last one passed), or an age (10m ago)",
            crate::text::printable(text)
        )
    })
}

fn system(t: Timestamp) -> Result<SystemTime, String> {
    SystemTime::try_from(t).map_err(|e| e.to_string())
}

/// `HH:MM` or `HH:MM:SS`, each part in range.
fn clock(text: &str) -> Option<civil::Time> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse::<i8>().ok());
    civil::Time::new(n(0)?, n(1)?, n(2)?, 0).ok()
}

/// The last time the local clock showed `clock`: today, or yesterday if today's is to come.
fn at_clock(clock: civil::Time, now: &Zoned) -> Result<Timestamp, String> {
    let zone = now.time_zone().clone();
    let on = |date: civil::Date| {
        date.to_datetime(clock)
            .to_zoned_datetime(zone.clone())
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string())
    };
    let today = on(now.date())?;
    if today <= now.timestamp() {
        return Ok(today);
    }
    let yesterday = now.date().yesterday().map_err(|e| e.to_string())?;
    on(yesterday)
}

/// `--at`, `--since`, `--until` as given; none is the earliest or now.
pub fn parse_time(text: Option<&str>) -> Result<Option<SystemTime>, String> {
    text.map(|t| parse_at(t, &Zoned::now())).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoned(text: &str) -> Zoned {
        text.parse().unwrap()
    }

    fn rfc(t: SystemTime) -> String {
        Timestamp::try_from(t).unwrap().to_string()
    }

    #[test]
    fn a_clock_time_is_the_last_one_passed_in_the_local_zone() {
        let now = zoned("2026-12-06T10:30:00+01:00[+01:00]");
        assert_eq!(
            rfc(parse_at("03:00", &now).unwrap()),
            "2026-12-06T02:00:00Z"
        );
        assert_eq!(
            rfc(parse_at("10:30:00", &now).unwrap()),
            "2026-12-06T09:30:00Z"
        );
        // Still to come today: yesterday's.
        assert_eq!(
            rfc(parse_at("23:15:07", &now).unwrap()),
            "2026-12-05T22:15:07Z"
        );
    }

    #[test]
    fn rfc3339_takes_an_offset_and_no_offset_is_utc() {
        let now = zoned("2026-12-06T10:30:00+00:00[+00:00]");
        let plus = parse_at("2026-12-06T03:00:00+02:00", &now).unwrap();
        assert_eq!(rfc(plus), "2026-12-06T01:00:00Z");
        let bare = parse_at("2026-12-06T03:00:00", &now).unwrap();
        assert_eq!(rfc(bare), "2026-12-06T03:00:00Z");
        let ago = parse_at("2h ago", &now).unwrap();
        assert_eq!(rfc(ago), "2026-12-06T08:30:00Z");
        assert_eq!(rfc(parse_at("now", &now).unwrap()), "2026-12-06T10:30:00Z");
    }

    #[test]
    fn what_is_not_a_time_says_what_would_be() {
        let now = zoned("2026-12-06T10:30:00+00:00[+00:00]");
        for bad in [
            "25:00",
            "3:00",
            "03:60",
            "03:00:00:00",
            "yesterday",
            "\u{1b}[2J",
        ] {
            let e = parse_at(bad, &now).unwrap_err();
            assert!(
                e.contains("not a time") && !e.contains('\u{1b}'),
                "{bad}: {e}"
            );
        }
    }
}
