//! Socket inode → owning process, from `/proc/PID/fd`, cached across polls.
//!
//! A full scan reads every fd link of every process. Later polls rescan only when the dump holds
//! a socket inode the map has never accounted for, and then read links only for fds that are new
//! or whose cached socket has gone; every [`FULL_RESCAN_EVERY`]th scan reads everything again, so
//! a reused fd number or pid cannot keep a stale answer for long. Processes that exit mid-scan
//! and unreadable fds are skipped, never fatal.
//!
//! procfs gives the process list and each process's `stat` and `cmdline`; the fd links are read
//! here with one `readlinkat` per fd, where procfs's `fd()` makes four syscalls per fd: at 100k
//! sockets that is the difference that matters.

use std::collections::{HashMap, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::fs::{Dir, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::model::{Inode, Owner, Process, RawSock};

/// Every this many scans, read every fd link again instead of trusting the cache.
pub const FULL_RESCAN_EVERY: u32 = 30;

/// One process as last scanned.
struct ProcEntry {
    process: Arc<Process>,
    /// `starttime` from `/proc/PID/stat`: a different value means the pid was reused.
    starttime: u64,
    /// fd → socket inode, socket fds only.
    fds: FxHashMap<u32, Inode>,
}

/// Counters of the last scan, for the poll's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub scanned: bool,
    pub full: bool,
    pub processes: usize,
    pub links_read: usize,
    /// Processes whose fds could not be read (permission): their sockets show as unknown.
    pub denied: usize,
}

/// The cached map; one per collector, reused every poll.
#[derive(Default)]
pub struct ProcessMap {
    procs: HashMap<u32, ProcEntry>,
    owners: FxHashMap<Inode, (Arc<Process>, u32)>,
    /// Inodes the last scan looked for and did not find: no rescan on their account.
    unowned: FxHashSet<Inode>,
    scans: u32,
    /// Some process's fds were unreadable in the last scan.
    incomplete: bool,
    pub last: ScanStats,
}

impl ProcessMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills in `owner` on every socket, rescanning `/proc` only as much as needed.
    pub fn resolve(&mut self, socks: &mut [RawSock]) {
        self.last = ScanStats::default();
        // In the steady state one pass with one lookup per socket does it all.
        if !self.assign(socks) || self.scans == 0 {
            let live: FxHashSet<Inode> =
                socks.iter().map(|s| s.inode).filter(|i| i.0 != 0).collect();
            self.scan(&live);
            self.assign(socks);
        }
    }

    /// Sets every socket's owner from the map; false if some inode is one the map has never
    /// accounted for (neither owned nor looked for in vain), so a scan is due.
    fn assign(&self, socks: &mut [RawSock]) -> bool {
        let my_uid = rustix::process::geteuid().as_raw();
        let mut accounted = true;
        for s in socks.iter_mut() {
            s.owner = match self.owners.get(&s.inode) {
                _ if s.inode.0 == 0 => Owner::None,
                Some((process, fd)) => Owner::Process {
                    process: Arc::clone(process),
                    fd: *fd,
                },
                None => {
                    accounted &= self.unowned.contains(&s.inode);
                    // Not found, and some process was unreadable: it may be another user's.
                    if self.incomplete && s.uid != Some(my_uid) {
                        Owner::Unknown
                    } else {
                        Owner::None
                    }
                }
            };
        }
        accounted
    }

    fn scan(&mut self, live: &FxHashSet<Inode>) {
        let full = self.scans % FULL_RESCAN_EVERY == 0;
        self.scans = self.scans.wrapping_add(1);
        let mut stats = ScanStats {
            scanned: true,
            full,
            ..ScanStats::default()
        };
        let mut seen = HashSet::new();
        let Ok(all) = procfs::process::all_processes() else {
            self.last = stats;
            return;
        };
        // Which processes to read, and whether their cached fds may be trusted.
        let mut work: Vec<(u32, bool)> = Vec::new();
        for proc in all.flatten() {
            let Ok(pid) = u32::try_from(proc.pid()) else {
                continue;
            };
            // A process can exit at any point below; whatever fails is skipped.
            let Ok(stat) = proc.stat() else { continue };
            seen.insert(pid);
            stats.processes += 1;
            let reuse = !full
                && self
                    .procs
                    .get(&pid)
                    .is_some_and(|e| e.starttime == stat.starttime);
            if !reuse {
                let cmdline = proc.cmdline().map(|a| a.join(" ")).unwrap_or_default();
                let process = Arc::new(Process {
                    pid,
                    name: stat.comm.clone().into_boxed_str(),
                    cmdline: cmdline.into_boxed_str(),
                });
                self.procs.insert(
                    pid,
                    ProcEntry {
                        process,
                        starttime: stat.starttime,
                        fds: FxHashMap::default(),
                    },
                );
            }
            work.push((pid, reuse));
        }
        // The first scan reads every fd link of every process (the bulk of a cold poll): on
        // all cores. Later scans read few links, on this thread (no per-thread heaps kept).
        let parallel = self.scans == 1;
        for ((pid, _), read) in work
            .iter()
            .zip(read_all_fds(&self.procs, &work, live, parallel))
        {
            match read {
                Ok((fds, read)) => {
                    if let Some(entry) = self.procs.get_mut(pid) {
                        entry.fds = fds;
                    }
                    stats.links_read += read;
                }
                Err(Errno::ACCESS | Errno::PERM) => stats.denied += 1,
                Err(_) => {} // exited meanwhile
            }
        }
        self.procs.retain(|pid, _| seen.contains(pid));
        self.owners.clear();
        for e in self.procs.values() {
            for (&fd, &inode) in &e.fds {
                // Shared after fork: keep the lowest pid, a stable choice across polls.
                let slot = self
                    .owners
                    .entry(inode)
                    .or_insert((Arc::clone(&e.process), fd));
                if e.process.pid < slot.0.pid {
                    *slot = (Arc::clone(&e.process), fd);
                }
            }
        }
        self.unowned = live
            .iter()
            .copied()
            .filter(|i| !self.owners.contains_key(i))
            .collect();
        self.incomplete = stats.denied > 0;
        self.last = stats;
    }
}

type FdsRead = Result<(FxHashMap<u32, Inode>, usize), Errno>;

/// [`read_socket_fds`] for every `(pid, reuse)` of `work`, in order; with `parallel`, spread
/// over the cores (every n-th process to each, so neighbouring big processes are split).
fn read_all_fds(
    procs: &HashMap<u32, ProcEntry>,
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
                scope.spawn(move || {
                    (k..work.len())
                        .step_by(threads)
                        .map(|i| (i, one(&work[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().unwrap_or_default() {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter()
        .map(|r| r.unwrap_or(Err(Errno::SRCH)))
        .collect()
}

/// Reads `/proc/PID/fd`, returning its socket fds and how many links were read. With `reuse`,
/// an fd whose cached socket is still alive is trusted without reading its link.
fn read_socket_fds(
    pid: u32,
    cached: &FxHashMap<u32, Inode>,
    live: &FxHashSet<Inode>,
    reuse: bool,
) -> Result<(FxHashMap<u32, Inode>, usize), Errno> {
    let dirfd = rustix::fs::openat(
        CWD,
        format!("/proc/{pid}/fd"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut dir = Dir::read_from(&dirfd)?;
    let mut fds = FxHashMap::with_capacity_and_hasher(cached.len(), rustc_hash::FxBuildHasher);
    let mut read = 0;
    let mut link = Vec::with_capacity(64);
    while let Some(entry) = dir.read() {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        let Some(fd) = parse_u32(name) else { continue }; // "." and ".."
        if reuse {
            if let Some(&inode) = cached.get(&fd).filter(|i| live.contains(i)) {
                fds.insert(fd, inode);
                continue;
            }
        }
        read += 1;
        link.clear();
        let Ok(target) = rustix::fs::readlinkat(&dirfd, OsStr::from_bytes(name), link) else {
            link = Vec::with_capacity(64);
            continue; // closed meanwhile
        };
        if let Some(inode) = socket_inode(target.as_bytes()) {
            fds.insert(fd, Inode(inode));
        }
        link = target.into_bytes();
    }
    Ok((fds, read))
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
    use super::*;

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"socket:[4294967295]"), Some(u32::MAX));
        assert_eq!(socket_inode(b"socket:[4294967296]"), None);
        assert_eq!(socket_inode(b"pipe:[12]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
    }

    #[test]
    fn finds_its_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = {
            use std::os::fd::AsRawFd;
            listener.as_raw_fd()
        };
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode = Inode(socket_inode(link.as_os_str().as_bytes()).unwrap());
        let live: FxHashSet<Inode> = [inode].into_iter().collect();
        let (fds, read) =
            read_socket_fds(std::process::id(), &FxHashMap::default(), &live, false).unwrap();
        assert_eq!(fds.get(&(fd as u32)), Some(&inode));
        assert!(read >= 1);
        // With the cache trusted, a cached fd whose socket is live is not read again: a cache
        // that (wrongly) says another live inode is believed. (Asked of the fd itself, not
        // of counts, which other tests' threads change by opening files meanwhile.)
        let decoy = Inode(inode.0 ^ 1);
        let live: FxHashSet<Inode> = [inode, decoy].into_iter().collect();
        let cached: FxHashMap<u32, Inode> = [(fd as u32, decoy)].into_iter().collect();
        let pid = std::process::id();
        let (trusted, _) = read_socket_fds(pid, &cached, &live, true).unwrap();
        assert_eq!(
            trusted.get(&(fd as u32)),
            Some(&decoy),
            "the cached fd was read again"
        );
        // Without reuse (a full rescan) the link is read and the truth wins.
        let (fresh, _) = read_socket_fds(pid, &cached, &live, false).unwrap();
        assert_eq!(fresh.get(&(fd as u32)), Some(&inode));
    }
}
