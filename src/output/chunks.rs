//! Rows formatted on two cores: at a million sockets the JSON objects alone take 1.6 s of one
//! core, at the end of a poll when every other part is done. Chunks are formatted in pairs,
//! one on a scoped thread, and written in order: the bytes are those of one thread.

use std::io::{self, Write};

use crate::model::SockEntry;

/// Rows per chunk: a few MB of JSON, few thread starts at a million rows.
const CHUNK: usize = 4096;

/// Writes `format(global index, row, buffer)` of every row to `out`, in order.
pub fn write_formatted<F>(out: &mut impl Write, rows: &[SockEntry], format: F) -> io::Result<()>
where
    F: Fn(usize, &SockEntry, &mut Vec<u8>) -> io::Result<()> + Sync,
{
    let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let format_all = |first: usize, part: &[SockEntry], buf: &mut Vec<u8>| {
        buf.clear();
        part.iter()
            .enumerate()
            .try_for_each(|(i, e)| format(first + i, e, buf))
    };
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    if !two_cores || rows.len() < 2 * CHUNK {
        format_all(0, rows, &mut mine)?;
        return out.write_all(&mine);
    }
    for (pair_at, pair) in (0..).step_by(2 * CHUNK).zip(rows.chunks(2 * CHUNK)) {
        let (a, b) = pair.split_at(CHUNK.min(pair.len()));
        let b_at = pair_at + a.len();
        std::thread::scope(|s| -> io::Result<()> {
            let mut buf = std::mem::take(&mut theirs);
            let other = std::thread::Builder::new()
                .name("katop-json".into())
                .spawn_scoped(s, move || format_all(b_at, b, &mut buf).map(|()| buf));
            format_all(pair_at, a, &mut mine)?;
            out.write_all(&mine)?;
            theirs = if let Ok(handle) = other {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a formatting thread panicked")))?
            } else {
                // No thread to be had: this one does it.
                let mut buf = Vec::new();
                format_all(b_at, b, &mut buf)?;
                buf
            };
            out.write_all(&theirs)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::model::table::tests::{snapshot, sock};
    use crate::model::{ConnTable, Cookie, SockState};

    #[test]
    fn two_cores_write_what_one_writes_in_the_same_order() {
        let mut table = ConnTable::new(Duration::from_secs(300));
        // Two whole pairs of chunks and a part of a third: every split is crossed.
        let socks = (0..(4 * super::CHUNK + 1234) as u64)
            .map(|c| {
                let mut s = sock(SockState::Established);
                s.cookie = Cookie(c + 1);
                s
            })
            .collect();
        table.apply(snapshot(socks), Instant::now());
        let rows: Vec<_> = table.entries().collect();
        let stamp = crate::output::Stamp::of(&table);
        let mut chunked = Vec::new();
        crate::output::write_json(&mut chunked, &rows, &table, &stamp).unwrap();
        let mut one = b"[".to_vec();
        for (i, e) in rows.iter().enumerate() {
            one.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            let json = crate::output::JsonSock::new(e, &table, &stamp);
            crate::text::to_writer(&mut one, &json).unwrap();
        }
        one.extend_from_slice(b"\n]\n");
        assert!(chunked == one, "the chunked JSON differs from one thread's");
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&chunked).unwrap();
        let cookies: Vec<u64> = parsed
            .iter()
            .map(|v| v["cookie"].as_u64().unwrap())
            .collect();
        assert_eq!(cookies, (1..=rows.len() as u64).collect::<Vec<_>>());
        let mut lines = Vec::new();
        crate::output::write_jsonl(&mut lines, &rows, &table, &stamp).unwrap();
        assert_eq!(
            lines
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            rows.len()
        );
    }
}
