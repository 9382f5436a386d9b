//! Cell formats shared by every view: human units, `ss`'s short state names, and text
//! elided to a width.

/// Bytes in IEC units: `512 B`, `1.2 MiB`.
pub fn format_bytes(b: u64) -> String {
    bytesize::ByteSize::b(b).display().iec().to_string()
}

/// Bytes per second in IEC units: `0 B/s`, `5 B/s`, `1.2 MiB/s`.
pub fn format_rate(bps: f32) -> String {
    format!("{}/s", format_bytes(bps.max(0.0).round() as u64))
}

/// Round-trip times: `850µs`, `1.2ms`, `210ms`.
pub fn format_rtt(us: u32) -> String {
    match us {
        0..1000 => format!("{us}µs"),
        1000..100_000 => format!("{:.1}ms", f64::from(us) / 1000.0),
        _ => format!("{}ms", us / 1000),
    }
}

/// `ss`'s short state names (`ESTAB`, `CLOSE-WAIT`, `FIN-WAIT-1`, `UNCONN`).
pub fn short_state(state: crate::model::SockState, proto: crate::model::Proto) -> &'static str {
    use crate::model::SockState as S;
    match state {
        S::Established => "ESTAB",
        S::SynSent => "SYN-SENT",
        S::SynRecv => "SYN-RECV",
        S::FinWait1 => "FIN-WAIT-1",
        S::FinWait2 => "FIN-WAIT-2",
        S::TimeWait => "TIME-WAIT",
        S::Close if proto == crate::model::Proto::Tcp => "CLOSE",
        S::Close => "UNCONN",
        S::CloseWait => "CLOSE-WAIT",
        S::LastAck => "LAST-ACK",
        S::Listen => "LISTEN",
        S::Closing => "CLOSING",
        S::Other(_) => "UNKNOWN",
    }
}

/// `text` in at most `width` terminal columns: as it is when it fits, else with `…` in place
/// of what is left out (addresses keep their port, `name[pid]` its pid, other text its start).
pub fn elide(text: &str, width: usize) -> std::borrow::Cow<'_, str> {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    if text.width() <= width {
        return text.into();
    }
    if width == 0 {
        return "".into();
    }
    let cw = |c: char| c.width().unwrap_or(0);
    // The first characters that fill `room` columns, in the order `chars` gives them.
    let take = |chars: &mut dyn Iterator<Item = char>, room: usize| -> Vec<char> {
        let mut used = 0;
        let mut out = Vec::new();
        for c in chars {
            if used + cw(c) > room {
                break;
            }
            used += cw(c);
            out.push(c);
        }
        out
    };
    let address = !text.contains(' ')
        && text
            .rfind(':')
            .is_some_and(|i| text[i + 1..].bytes().all(|b| b.is_ascii_digit()));
    let keep = width - 1;
    // `postgres[4121]`, `java[77]+2`: the pid tells two processes apart, the name's end less.
    let pid_suffix = text.rfind('[').map(|i| &text[i..]).filter(|s| {
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        s.strip_prefix('[')
            .and_then(|s| s.split_once(']'))
            .is_some_and(|(pid, more)| {
                digits(pid) && (more.is_empty() || more.strip_prefix('+').is_some_and(digits))
            })
    });
    let (head, tail) = if let Some(suffix) = pid_suffix.filter(|s| s.width() + 2 <= keep) {
        let name = &text[..text.len() - suffix.len()];
        (
            take(&mut name.chars(), keep - suffix.width()),
            suffix.chars().collect(),
        )
    } else if address {
        let tail_room = (keep * 2 / 3).max(1).min(keep);
        let mut tail = take(&mut text.chars().rev(), tail_room);
        tail.reverse();
        let used: usize = tail.iter().map(|&c| cw(c)).sum();
        (take(&mut text.chars(), keep - used), tail)
    } else {
        (take(&mut text.chars(), keep), Vec::new())
    };
    let mut out: String = head.into_iter().collect();
    // Elided again (a compact cell narrowed further): one `…`, not two.
    while out.ends_with('…') {
        out.pop();
    }
    out.push('…');
    out.extend(tail);
    out.into()
}
