//! A store segment's records: `KATOPEV1`, then frames `[length u32 LE][crc32 u32 LE][payload]`,
//! the payload a zstd-compressed batch of NDJSON events (one poll's). A frame cut short by a
//! crash or a full disk, or damaged, ends the segment for readers: everything before it reads,
//! and it is never an error.

use std::io::{self, Read};

/// The first bytes of every segment.
pub const MAGIC: &[u8; 8] = b"KATOPEV1";

/// The most one frame may hold compressed (a sanity bound for readers of damaged files; a
/// keyframe of 1M sockets is about 30 MB).
const MAX_FRAME: u32 = 256 << 20;

/// How hard a poll's lines are compressed (zstd's level): most polls' deltas and events are
/// small, and recording costs a share of a core every poll.
pub const LEVEL: i32 = 3;
/// How hard a keyframe is: level 9 writes a 200k-socket keyframe a quarter smaller than 3
/// (2.66 MB, not 3.59; level 6: 3.11), for 0.2 s more of CPU a 100k-socket keyframe (2 s at
/// 1M), once in many polls; the recorder's peak at 100k stays 62 MiB.
pub const KEYFRAME_LEVEL: i32 = 9;

/// One frame holding `lines` (NDJSON, compressed): the tests' way to make segments.
#[cfg(test)]
pub fn encode(lines: &[u8]) -> io::Result<Vec<u8>> {
    encode_with(LEVEL, |w| w.write_all(lines)).map(|(frame, _)| frame)
}

/// One frame holding what `write` writes, compressed as it is written at zstd's `level` (a
/// keyframe of 100k sockets never sits whole in memory uncompressed); the frame and the bytes
/// written.
pub fn encode_with(
    level: i32,
    write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> io::Result<(Vec<u8>, u64)> {
    encode_within(write, MAX_LINES, level)
}

/// [`encode_with`], refusing lines past `max_lines` bytes: a frame no reader would take (it
/// would end its segment for them) is never written.
fn encode_within(
    write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    max_lines: u64,
    level: i32,
) -> io::Result<(Vec<u8>, u64)> {
    let (payload, raw) = compress_within(write, max_lines, level)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(|| io::Error::other("a batch too large for one frame"))?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok((out, raw))
}

/// What `write` writes, zstd-compressed as it is written (a frame's payload, what
/// [`decompress`] reads), and its length before compression.
pub fn compress_with(
    write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> io::Result<(Vec<u8>, u64)> {
    compress_within(write, MAX_LINES, LEVEL)
}

fn compress_within(
    write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    max_lines: u64,
    level: i32,
) -> io::Result<(Vec<u8>, u64)> {
    let mut encoder = Counted {
        inner: zstd::stream::write::Encoder::new(Vec::new(), level)?,
        bytes: 0,
    };
    {
        // serde hands over a record a few bytes at a time, and zstd runs for every write it
        // gets: it gets them in blocks.
        let mut blocks = io::BufWriter::with_capacity(1 << 17, &mut encoder);
        write(&mut blocks)?;
        // Not `flush`: that would end a zstd block early.
        blocks
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
    }
    let raw = encoder.bytes;
    if raw > max_lines {
        return Err(io::Error::other(format!(
            "a poll of {raw} bytes, more than one frame holds ({max_lines})"
        )));
    }
    Ok((encoder.inner.finish()?, raw))
}

/// A writer that counts what goes through it.
pub(super) struct Counted<W> {
    pub(super) inner: W,
    pub(super) bytes: u64,
}

impl<W: io::Write> io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Every whole, intact frame of a segment, decompressed, in order; stops at the first torn or
/// damaged one. `Err` only for a read that failed (not for what was read). The tests' view of
/// [`for_each`].
#[cfg(test)]
pub fn decode_all(r: impl Read) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for_each(r, |frame| {
        out.push(frame);
        true
    })?;
    Ok(out)
}

/// Each whole, intact frame of a segment, decompressed, in order, one in memory at a time,
/// until `each` says stop (false) or a torn or damaged frame ends the segment.
pub fn for_each(mut r: impl Read, mut each: impl FnMut(Vec<u8>) -> bool) -> io::Result<()> {
    let mut magic = [0u8; 8];
    if !read_full(&mut r, &mut magic)? || &magic != MAGIC {
        return Ok(());
    }
    loop {
        let mut head = [0u8; 8];
        if !read_full(&mut r, &mut head)? {
            return Ok(());
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME {
            return Ok(());
        }
        let mut payload = vec![0u8; len as usize];
        if !read_full(&mut r, &mut payload)? || crc32fast::hash(&payload) != crc {
            return Ok(());
        }
        match decompress(&payload) {
            Some(lines) => {
                if !each(lines) {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
}

/// A payload's lines, growing as they come (never a large reservation up front), at most
/// [`MAX_LINES`] bytes; `None` for a damaged payload or one past the bound.
pub fn decompress(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(payload)
        .ok()?
        .take(MAX_LINES + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= MAX_LINES).then_some(out)
}

/// The most one frame's lines may hold once decompressed (a keyframe of 1M sockets is about
/// 150 MB, 250 MB in IPv6; the writer refuses more, so more is a crafted frame, not katop's).
const MAX_LINES: u64 = 1 << 30;

/// Fills `buf`; false when the data ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(batches: &[&str]) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        for b in batches {
            s.extend(encode(b.as_bytes()).unwrap());
        }
        s
    }

    #[test]
    fn frames_read_back_and_a_torn_tail_is_ignored() {
        let s = segment(&["{\"a\":1}\n", "{\"b\":2}\n{\"c\":3}\n"]);
        let all = decode_all(&s[..]).unwrap();
        assert_eq!(
            all,
            [b"{\"a\":1}\n".to_vec(), b"{\"b\":2}\n{\"c\":3}\n".to_vec()]
        );
        // Cut anywhere inside the second frame: the first still reads, no error.
        let first_end = MAGIC.len() + encode(b"{\"a\":1}\n").unwrap().len();
        for cut in first_end..s.len() {
            assert_eq!(decode_all(&s[..cut]).unwrap().len(), 1, "cut at {cut}");
        }
        // A flipped byte in the second frame: the first reads.
        let mut bad = s.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(decode_all(&bad[..]).unwrap().len(), 1);
        // Not a segment at all.
        assert!(decode_all(&b"hello world"[..]).unwrap().is_empty());
    }

    #[test]
    fn a_poll_past_what_a_reader_takes_is_refused_not_written() {
        let lines = |n: usize| move |w: &mut dyn io::Write| w.write_all(&vec![b'x'; n]);
        assert!(encode_within(lines(1000), 1000, LEVEL).is_ok());
        let err = encode_within(lines(1001), 1000, LEVEL).unwrap_err();
        assert!(
            err.to_string().contains("more than one frame holds"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_stop_without_panicking(bytes in proptest::collection::vec(0u8..=255, 0..512)) {
            let mut s = MAGIC.to_vec();
            s.extend(bytes);
            let _ = decode_all(&s[..]).unwrap();
        }
    }
}
