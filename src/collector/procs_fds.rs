//! Reading processes' fd tables from `/proc`: which of their fds are sockets, by inode.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use rustc_hash::{FxHashMap, FxHashSet};
use rustix::fs::{Dir, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::collector::fd_iter::FdTable;
use crate::model::{Inode, NetnsId};

pub(super) type FdsRead = Result<(FxHashMap<u32, Inode>, usize), Errno>;

/// The processes to read, `(pid, reuse)`, and every pid seen.
pub(super) type Listing = (Vec<(u32, bool)>, HashSet<u32>);

/// Each process of `work`'s socket fds from one BPF pass (taken out of `table`), in order.
/// A process the pass did not walk (it held no file, started after the pass, or the iterator
/// skipped it) is read from `/proc`, so an fd table katop could not read is never taken for
/// an empty one.
pub(super) fn bpf_reads(
    table: &mut FdTable,
    procs: &super::Procs,
    work: &[(u32, bool)],
    live: &FxHashSet<Inode>,
) -> Vec<FdsRead> {
    let own = std::process::id();
    let empty = FxHashMap::default();
    let reads = work
        .iter()
        .map(|&(pid, reuse)| {
            if !table.walked.contains(&pid) {
                let cached = procs.get(&pid).map_or(&empty, |e| &e.fds);
                return read_socket_fds(pid, cached, live, reuse);
            }
            let mut fds = table.by_pid.remove(&pid).unwrap_or_default();
            // A socket katop holds borrowed is another process's, not katop's.
            if pid == own {
                fds.retain(|_, inode| !crate::collector::borrow::is_borrowed(*inode));
            }
            Ok((fds, 0))
        })
        .collect();
    table.by_pid = FxHashMap::default();
    table.walked = FxHashSet::default();
    reads
}

/// [`read_socket_fds`] for every `(pid, reuse)` of `work`, in order; with `parallel`, spread
/// over the cores (every n-th process to each, so neighbouring big processes are split).
pub(super) fn read_all_fds(
    procs: &super::Procs,
    work: &[(u32, bool)],
    live: &FxHashSet<Inode>,
    parallel: bool,
) -> Vec<FdsRead> {
    let empty = FxHashMap::default();
    let one = |&(pid, reuse): &(u32, bool)| {
        let cached = procs.get(&pid).map_or(&empty, |e| &e.fds);
        read_socket_fds(pid, cached, live, reuse)
    };
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if !parallel || threads < 2 || work.len() < 2 {
        return work.iter().map(one).collect();
    }
    let mut out: Vec<Option<FdsRead>> = std::iter::repeat_with(|| None).take(work.len()).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                // Named as katop's workers, so a panic here ends katop through the UI loop.
                std::thread::Builder::new()
                    .name("katop-procs".into())
                    .spawn_scoped(scope, move || {
                        (k..work.len())
                            .step_by(threads)
                            .map(|i| (i, one(&work[i])))
                            .collect::<Vec<_>>()
                    })
            })
            .filter_map(Result::ok)
            .collect();
        for h in handles {
            for (i, r) in h.join().unwrap_or_default() {
                out[i] = Some(r);
            }
        }
    });
    // A read that never came back (its thread failed) is a blind spot, not an exit.
    out.into_iter()
        .map(|r| r.unwrap_or(Err(Errno::IO)))
        .collect()
}

/// Reads `/proc/PID/fd`, returning its socket fds and how many links were read. With `reuse`,
/// an fd whose cached socket is still alive is trusted without reading its link.
pub(super) fn read_socket_fds(
    pid: u32,
    cached: &FxHashMap<u32, Inode>,
    live: &FxHashSet<Inode>,
    reuse: bool,
) -> Result<(FxHashMap<u32, Inode>, usize), Errno> {
    let (fds, read, listed) = read_fd_dir(&format!("/proc/{pid}/fd"), pid, cached, live, reuse)?;
    if listed > 0 {
        return Ok((fds, read));
    }
    // A leader that exited alone (`pthread_exit` in main) is a zombie with no fd table, while
    // its threads live on sharing one: read that through a thread, or their sockets would look
    // held by none.
    match other_thread(pid) {
        Some(tid) => match read_fd_dir(
            &format!("/proc/{pid}/task/{tid}/fd"),
            pid,
            cached,
            live,
            reuse,
        ) {
            Ok((fds, more, _)) => Ok((fds, read + more)),
            // The thread ended meanwhile: so, most likely, did the process.
            Err(Errno::NOENT | Errno::SRCH) => Ok((fds, read)),
            Err(e) => Err(e),
        },
        None => Ok((fds, read)),
    }
}

/// A thread of process `pid` other than its leader, if it has one.
fn other_thread(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&tid| tid != pid)
}

/// Reads one fd directory of process `pid`: its socket fds, the links read, and the entries
/// listed.
fn read_fd_dir(
    path: &str,
    pid: u32,
    cached: &FxHashMap<u32, Inode>,
    live: &FxHashSet<Inode>,
    reuse: bool,
) -> Result<(FxHashMap<u32, Inode>, usize, usize), Errno> {
    let dirfd = rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut dir = Dir::read_from(&dirfd)?;
    let mut listed = 0;
    let mut fds = FxHashMap::with_capacity_and_hasher(cached.len(), rustc_hash::FxBuildHasher);
    let mut read = 0;
    let own = pid == std::process::id();
    let mut link = Vec::with_capacity(64);
    while let Some(entry) = dir.read() {
        // A listing cut short is not a complete one.
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        let Some(fd) = parse_u32(name) else { continue }; // "." and ".."
        listed += 1;
        if reuse {
            if let Some(&inode) = cached.get(&fd).filter(|i| live.contains(i)) {
                fds.insert(fd, inode);
                continue;
            }
        }
        read += 1;
        link.clear();
        let target = match rustix::fs::readlinkat(&dirfd, OsStr::from_bytes(name), link) {
            Ok(t) => t,
            Err(Errno::NOENT) => {
                link = Vec::with_capacity(64);
                continue; // closed meanwhile
            }
            Err(e) => return Err(e),
        };
        if let Some(inode) = socket_inode(target.as_bytes()).map(Inode) {
            // A socket katop holds borrowed is another process's, not katop's.
            if !(own && crate::collector::borrow::is_borrowed(inode)) {
                fds.insert(fd, inode);
            }
        }
        link = target.into_bytes();
    }
    Ok((fds, read, listed))
}

/// The network namespace of process `pid`, when it can be told.
pub(super) fn net_namespace(pid: u32) -> Option<NetnsId> {
    rustix::fs::stat(format!("/proc/{pid}/ns/net"))
        .ok()
        .and_then(|st| NetnsId::from_ino(st.st_ino))
}

/// The most of a command line katop keeps: enough to tell processes apart.
const CMDLINE_MAX: usize = 4096;

/// `/proc/PID/cmdline`, arguments joined by spaces and made UTF-8 lossily (an argument that is
/// not UTF-8 keeps its other characters), at most [`CMDLINE_MAX`] bytes; empty for kernel
/// threads and zombies, and for a process that exited meanwhile.
pub(super) fn read_cmdline(pid: u32) -> String {
    use std::io::Read;
    let mut raw = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/cmdline")) {
        let _ = f.take(CMDLINE_MAX as u64).read_to_end(&mut raw);
    }
    cmdline_text(&raw)
}

pub(super) fn cmdline_text(raw: &[u8]) -> String {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `socket:[12345]` → 12345.
pub fn socket_inode(link: &[u8]) -> Option<u32> {
    parse_u32(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then_some(())?;
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::os::fd::{AsFd, OwnedFd};
    use std::process::{Command, Stdio};

    use super::*;

    fn inode(fd: &impl AsFd) -> Inode {
        Inode(rustix::fs::fstat(fd).unwrap().st_ino as u32)
    }

    /// A process the BPF pass did not walk is read from `/proc`, not taken as holding nothing;
    /// one it walked is taken from the pass alone.
    #[test]
    fn a_process_the_pass_did_not_walk_is_read_from_proc() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let held = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let held_inode = inode(&held);
        let mut child = Command::new("sleep")
            .arg("300")
            .stdin(Stdio::from(OwnedFd::from(held)))
            .spawn()
            .unwrap();
        let (unwalked, walked) = (child.id(), u32::MAX - 1);
        let mut table = FdTable::default();
        table.walked.insert(walked);
        table
            .by_pid
            .insert(walked, [(7, Inode(424_242))].into_iter().collect());
        let live: FxHashSet<Inode> = [held_inode].into_iter().collect();
        let reads = bpf_reads(
            &mut table,
            &crate::collector::procs::Procs::default(),
            &[(unwalked, false), (walked, false)],
            &live,
        );
        let _ = child.kill();
        let _ = child.wait();
        let (fds, links) = reads[0].as_ref().expect("the child's /proc/PID/fd");
        assert_eq!(fds.get(&0), Some(&held_inode), "its stdin, from /proc");
        assert!(*links >= 1, "links were read");
        let (fds, links) = reads[1].as_ref().unwrap();
        assert_eq!(fds.get(&7), Some(&Inode(424_242)), "from the pass");
        assert_eq!(*links, 0, "nothing read from /proc");
        assert!(table.by_pid.is_empty() && table.walked.is_empty());
    }
}
