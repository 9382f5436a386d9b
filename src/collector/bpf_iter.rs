//! What katop's two BPF readers ([`super::fd_iter`], [`super::tcp_iter`]) share: loading an
//! iterator program against the kernel's BTF, and one pass over the fixed-size records it
//! writes.

use std::io::Read;
use std::time::Duration;

/// A BPF reader as a collector holds it: not tried yet, loaded, or off, with why when it was
/// wanted and could not be had or failed a pass (`None`: not asked for, `--no-bpf`). Off is
/// for good: the next polls read `/proc` and `sock_diag`, which say the same.
#[derive(Debug)]
pub enum Reader<R> {
    Untried,
    Ready(R),
    Off(Option<String>),
}

impl<R> Reader<R> {
    /// Untried when `wanted`, else off without a reason.
    pub fn new(wanted: bool) -> Self {
        if wanted {
            Reader::Untried
        } else {
            Reader::Off(None)
        }
    }

    /// Loads it with `open`, the first time only.
    pub fn load(&mut self, open: impl FnOnce() -> Result<R, String>) {
        if matches!(self, Reader::Untried) {
            *self = match open() {
                Ok(r) => Reader::Ready(r),
                Err(why) => Reader::Off(Some(brief(&why))),
            };
        }
    }

    /// The reader, when loaded.
    pub fn ready(&mut self) -> Option<&mut R> {
        match self {
            Reader::Ready(r) => Some(r),
            _ => None,
        }
    }

    /// Off for good after a failed pass, saying why.
    pub fn failed_pass(&mut self, why: &str) {
        *self = Reader::Off(Some(brief(&format!("a pass failed: {why}"))));
    }

    /// Why it is off, when it was wanted.
    pub fn why_off(&self) -> Option<&str> {
        match self {
            Reader::Off(why) => why.as_deref(),
            _ => None,
        }
    }
}

/// Whether this process holds what the kernel asks of a tracing program's load:
/// `bpf_capable()` and `perfmon_capable()` (`CAP_SYS_ADMIN` stands for either).
fn may_load_tracing() -> bool {
    use rustix::thread::CapabilitySet as Cap;
    rustix::thread::capabilities(None).is_ok_and(|c| {
        let has = |cap: Cap| c.effective.intersects(cap | Cap::SYS_ADMIN);
        has(Cap::BPF) && has(Cap::PERFMON)
    })
}

/// A reason in a line: the first line of what went wrong, at most [`REASON_CHARS`] characters
/// (a verifier's refusal carries its whole log).
fn brief(why: &str) -> String {
    let line = why.lines().next().unwrap_or_default();
    match line.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

const REASON_CHARS: usize = 160;

/// The running kernel's BTF, which both readers load against: parsing it is most of a load's
/// time and memory (about 60 ms and 35 MiB), so a collector that loads both parses it once.
pub fn kernel_btf() -> Result<aya::Btf, String> {
    aya::Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {e}"))
}

/// Loads iterator program `program` of `object` (what build.rs made: empty without clang) for
/// the kernel's `target` iterator, against `btf` (parsed here when `None`), or says why not.
/// Never where katop gained privileges at exec: a pass sees past the checks `/proc` and
/// `sock_diag` make for its user.
pub fn load(
    object: &[u8],
    program: &str,
    target: &str,
    btf: Option<&aya::Btf>,
) -> Result<aya::Ebpf, String> {
    if object.is_empty() {
        return Err("katop was built without clang".into());
    }
    if crate::privilege::Privilege::current().is_gained() {
        return Err("katop runs with privileges its user lacks".into());
    }
    if !may_load_tracing() {
        // Said the same for both readers (the kernel's EPERM would name each iterator).
        return Err("loading them needs root, or CAP_BPF with CAP_PERFMON".into());
    }
    // Parsed once, for the CO-RE relocations and the iterator's attach point both.
    let parsed;
    let btf = if let Some(btf) = btf {
        btf
    } else {
        parsed = kernel_btf()?;
        &parsed
    };
    let mut ebpf = aya::EbpfLoader::new()
        .btf(Some(btf))
        .load(object)
        .map_err(|e| format!("loading BPF: {e}"))?;
    iter(&mut ebpf, program)?
        .load(target, btf)
        .map_err(|e| format!("loading the {target} iterator: {}", chain(&e)))?;
    Ok(ebpf)
}

fn iter<'a>(ebpf: &'a mut aya::Ebpf, program: &str) -> Result<&'a mut aya::programs::Iter, String> {
    ebpf.program_mut(program)
        .ok_or_else(|| format!("the BPF object has no program {program}"))?
        .try_into()
        .map_err(|e| format!("{e}"))
}

/// One pass of `program`: every whole `size`-byte record, in order, to `each` (an error from
/// it ends the pass). Given up once it has taken longer than `budget`, which is checked between
/// reads: each ends after at most a million objects (`bpf_seq_read`), or waits, as a
/// `sock_diag` dump does, for a socket whose lock its owner holds. `what` names what is read.
pub fn pass(
    ebpf: &mut aya::Ebpf,
    program: &str,
    size: usize,
    (budget, what): (Duration, &str),
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let program = iter(ebpf, program)?;
    let link = program.attach().map_err(|e| chain(&e))?;
    let link = program.take_link(link).map_err(|e| chain(&e))?;
    let mut file = link.into_file().map_err(|e| chain(&e))?;
    let mut buf = vec![0u8; 1 << 18];
    let mut held = 0;
    loop {
        if started.elapsed() > budget {
            return Err(format!("a pass over {what} took longer than {budget:?}"));
        }
        let n = match file.read(&mut buf[held..]) {
            Ok(0) => break,
            Ok(n) => n,
            // EAGAIN: a million objects without output in one read (`bpf_seq_read`).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("reading {what}: {e}")),
        };
        held += n;
        let whole = held / size * size;
        for raw in buf[..whole].chunks_exact(size) {
            each(raw)?;
        }
        buf.copy_within(whole..held, 0);
        held -= whole;
    }
    if held == 0 {
        Ok(())
    } else {
        Err(format!(
            "the pass over {what} ended mid-record ({held} bytes)"
        ))
    }
}

/// An error with its sources (aya's say which syscall failed, then why).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{Reader, REASON_CHARS};

    #[test]
    fn a_reader_is_tried_once_and_off_says_why_in_a_line() {
        let mut wanted: Reader<u8> = Reader::new(true);
        assert_eq!(wanted.why_off(), None);
        wanted.load(|| Err("refused\nverifier log: 1000 lines".into()));
        assert_eq!(wanted.why_off(), Some("refused"));
        // Off for good: never tried again.
        wanted.load(|| Ok(7));
        assert!(wanted.ready().is_none());
        let mut loaded: Reader<u8> = Reader::new(true);
        loaded.load(|| Ok(7));
        assert_eq!(loaded.ready(), Some(&mut 7));
        assert_eq!(loaded.why_off(), None);
        loaded.failed_pass(&"x".repeat(1000));
        let why = loaded.why_off().unwrap();
        assert_eq!(
            why.chars().count(),
            REASON_CHARS + 1,
            "cut, with an ellipsis"
        );
        // Not asked for: off, with nothing to say, and never loaded.
        let mut not: Reader<u8> = Reader::new(false);
        not.load(|| Ok(7));
        assert!(not.ready().is_none() && not.why_off().is_none());
    }
}
