//! Socket inode → owning process, from `/proc/PID/fd`, cached across polls.
//!
//! A full scan reads every fd link of every process. Later polls rescan only when the dump holds
//! a socket inode the map has never accounted for, and then read links only for fds that are new
//! or whose cached socket has gone; every [`FULL_RESCAN_EVERY`]th scan reads everything again, so
//! a reused fd number or pid cannot keep a stale answer for long.
//!
//! An error is never an absence: only "no such process" means a process exited. A process
//! whose fds could not be read for any other reason (permission, `EMFILE`, a failed `/proc`
//! listing) is a blind spot, and a socket no readable process holds is then `Owner::Unknown`,
//! not `Owner::None`: katop cannot tell that nobody holds it.
//!
//! procfs gives the process list and each process's `stat` and `cmdline`; the fd links are read
//! here with one `readlinkat` per fd, where procfs's `fd()` makes four syscalls per fd: at 100k
//! sockets that is the difference that matters.

use std::collections::HashSet;

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use rustix::io::Errno;

use super::fd_iter::{FdReader, FdTable};
use crate::model::{Holder, Holders, Inode, NetnsId, Owner, Process, RawSock};

/// Every this many scans, read every fd link again instead of trusting the cache.
pub const FULL_RESCAN_EVERY: u32 = 30;

/// Every process scanned, by pid.
type Procs = FxHashMap<u32, ProcEntry>;

/// One process as last scanned.
struct ProcEntry {
    process: Arc<Process>,
    /// `starttime` from `/proc/PID/stat`: a different value means the pid was reused.
    starttime: u64,
    /// fd → socket inode, socket fds only.
    fds: FxHashMap<u32, Inode>,
    /// Another katop (the same program): it borrows each socket's fd for a moment to read its
    /// options (`pidfd_getfd`), so it is an owner only where no other process holds the socket.
    katop: bool,
}

/// Whether `pid` runs the program this process runs (the same file, by device and inode).
fn runs_katop(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Ours, read once: it does not change while katop runs.
    static OURS: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let ours = OURS.get_or_init(|| {
        std::fs::metadata("/proc/self/exe")
            .ok()
            .map(|m| (m.dev(), m.ino()))
    });
    let theirs = std::fs::metadata(format!("/proc/{pid}/exe"));
    matches!((ours, theirs), (Some(a), Ok(b)) if *a == (b.dev(), b.ino()))
}

/// Counters of the last scan, for the poll's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub scanned: bool,
    pub full: bool,
    /// The fds were read with the BPF reader (one pass), not from `/proc`.
    pub bpf: bool,
    pub processes: usize,
    pub links_read: usize,
    /// Processes not read again: they live in a namespace that was not dumped.
    pub skipped: usize,
    /// Processes whose fds could not be read for lack of permission, and the first of them.
    pub denied: usize,
    pub first_denied: Option<u32>,
    /// Processes (or the process list) that could not be read for another reason, and the
    /// first such error: every socket no readable process holds is then unknown.
    pub failed: usize,
    pub first_failure: Option<String>,
}

impl ScanStats {
    /// One warning for the status line, while the last scan had blind spots.
    pub fn warning(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.denied > 0 {
            let fix = if rustix::process::geteuid().is_root() {
                "denied even to root"
            } else {
                "run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
            };
            parts.push(format!(
                "the fds of {} process(es) could not be read (first: pid {}; {fix})",
                self.denied,
                self.first_denied.unwrap_or(0)
            ));
        }
        if self.failed > 0 {
            parts.push(format!(
                "reading /proc failed {} time(s) (first: {})",
                self.failed,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "{}, so sockets no readable process holds show their owner as ?",
                parts.join("; ")
            )
        })
    }

    fn deny(&mut self, pid: u32) {
        self.denied += 1;
        self.first_denied.get_or_insert(pid);
    }

    fn fail(&mut self, what: impl FnOnce() -> String) {
        self.failed += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(what());
        }
    }
}

/// Where the last scan could not see.
#[derive(Debug, Default)]
enum Blind {
    /// Every process's fds were read.
    #[default]
    Nothing,
    /// Only processes of these users were unreadable (permission): a socket of another user
    /// that no process holds is held by none.
    Users(FxHashSet<u32>),
    /// Some read failed for another reason: no socket can be said to be held by none.
    Everything,
}

/// The cached map; one per collector, reused every poll.
pub struct ProcessMap {
    procs: Procs,
    /// Inode → its first holder and fd, and the last poll (`polls`) that listed the socket.
    owners: Owners,
    /// Polls resolved so far.
    polls: u32,
    /// Every holder of the sockets more than one fd refers to (usually few).
    shared: Arc<Holders>,
    /// Inodes the last scan looked for and did not find: no rescan on their account.
    unowned: FxHashSet<Inode>,
    scans: u32,
    blind: Blind,
    /// Container labels, read once per container.
    containers: super::containers::Names,
    /// What the latest scan saw; kept until the next scan, so its warning stays up while true.
    pub last: ScanStats,
    bpf: super::bpf_iter::Reader<FdReader>,
    /// Scans looking for fewer sockets read `/proc` (see [`super::BPF_FROM_SOCKETS`]).
    bpf_from: usize,
    /// What the BPF reader found in this poll's scan; `None` when this poll did not scan.
    fresh: Option<FdTable>,
}

impl ProcessMap {
    /// With `bpf_from`, fd tables are read with the BPF reader, where it loads, in scans that
    /// look for at least that many sockets.
    pub fn new(bpf_from: Option<usize>) -> Self {
        Self {
            procs: Procs::default(),
            owners: Owners::default(),
            polls: 0,
            shared: Arc::default(),
            unowned: FxHashSet::default(),
            scans: 0,
            blind: Blind::default(),
            containers: super::containers::Names::default(),
            last: ScanStats::default(),
            bpf: super::bpf_iter::Reader::new(bpf_from.is_some()),
            bpf_from: bpf_from.unwrap_or(usize::MAX),
            fresh: None,
        }
    }

    /// What this poll's BPF pass found (every TCP socket's options among it), if it made one;
    /// taken, so its maps are freed once the options are filled in.
    pub fn take_fresh(&mut self) -> Option<FdTable> {
        self.fresh.take()
    }

    /// Loads the BPF reader ahead of a scan that will want it (`expected` sockets, as the
    /// kernel counts them before the dump): loading parses the kernel's BTF (tens of MB, freed
    /// after), best done before the dump fills memory.
    pub fn prepare(&mut self, expected: usize, btf: Option<&aya::Btf>) {
        if expected >= self.bpf_from {
            self.bpf.load(|| FdReader::open_with(btf));
        }
    }

    /// Why the BPF reader is off though it was wanted (it failed to load, or a pass failed).
    pub fn bpf_off(&self) -> Option<&str> {
        self.bpf.why_off()
    }

    /// One BPF pass, if the reader loads (tried once) and reads; a failed read turns it off
    /// for good, and `/proc` is read instead.
    fn read_with_bpf(&mut self) -> Option<FdTable> {
        self.bpf.load(FdReader::open);
        let read = self.bpf.ready()?.read();
        read.map_err(|why| self.bpf.failed_pass(&why)).ok()
    }

    /// Fills in `owner` on every socket, rescanning `/proc` only as much as needed. `dumped`
    /// are the network namespaces the sockets were read in: between full rescans, a process
    /// in another namespace holds none of the sockets looked for, and is not read again.
    pub fn resolve(&mut self, socks: &mut [RawSock], dumped: &[NetnsId]) {
        self.begin_poll();
        self.resolve_rest(socks, &[], dumped);
    }

    /// Begins a poll whose sockets are resolved as they come ([`Self::ready`]), the rest at its
    /// end ([`Self::resolve_rest`]).
    pub fn begin_poll(&mut self) {
        self.last.scanned = false;
        self.fresh = None;
        self.polls = self.polls.wrapping_add(1);
    }

    /// Sets the owner of a socket of the poll begun, if the map accounts for its inode (the
    /// steady state); false for one that waits for the poll's scan, if any (a new socket, or
    /// any before a first scan).
    pub fn ready(&mut self, s: &mut RawSock) -> bool {
        self.scans != 0 && self.assign_one(s)
    }

    /// Fills in `owner` on the poll's sockets not handed on (`socks`), scanning `/proc` if one
    /// is new. `handed_on`: the inodes of those already handed on, owners set ([`Self::ready`]),
    /// which the scan looks for too and counts as listed. (A scan that finds one of them held
    /// by another process now tells so from the next poll on, as a scan does for any socket.)
    pub fn resolve_rest(&mut self, socks: &mut [RawSock], handed_on: &[Inode], dumped: &[NetnsId]) {
        // In the steady state one pass with one lookup per socket does it all.
        if !self.assign(socks) || self.scans == 0 {
            let live: FxHashSet<Inode> = socks
                .iter()
                .map(|s| s.inode)
                .chain(handed_on.iter().copied())
                .filter(|i| i.0 != 0)
                .collect();
            self.scan(&live, dumped);
            self.assign(socks);
            let polls = self.polls;
            for inode in handed_on {
                if let Some(held) = self.owners.get_mut(u64::from(inode.0)) {
                    held.listed = polls;
                }
            }
        }
    }

    /// Gives back room the maps no longer need.
    pub fn shrink(&mut self) {
        self.owners.shrink();
        if super::sparse(self.unowned.capacity(), self.unowned.len()) {
            self.unowned.shrink_to(2 * self.unowned.len());
        }
    }

    /// Sockets a process holds that this poll's dumps did not list (`SOCK_DESTROY`ed, reset or
    /// timed out while held, never connected, or of a family katop does not dump), as
    /// (inode, first holder, its fd), as of the last scan.
    pub fn unlisted(&self) -> impl Iterator<Item = (Inode, &Arc<Process>, u32)> + '_ {
        self.owners
            .iter()
            .filter(|h| h.listed != self.polls)
            .filter_map(|h| Some((h.inode, &self.procs.get(&h.pid)?.process, h.fd)))
    }

    /// Every holder of the sockets that more than one fd refers to, by inode.
    pub fn shared(&self) -> Arc<Holders> {
        Arc::clone(&self.shared)
    }

    /// Sets every socket's owner from the map; false if some inode is one the map has never
    /// accounted for (neither owned nor looked for in vain), so a scan is due.
    fn assign(&mut self, socks: &mut [RawSock]) -> bool {
        let mut accounted = true;
        for s in socks.iter_mut() {
            accounted &= self.assign_one(s);
        }
        accounted
    }

    /// [`Self::assign`] for one socket.
    fn assign_one(&mut self, s: &mut RawSock) -> bool {
        let held = self.owners.get_mut(u64::from(s.inode.0));
        let holder = held.and_then(|h| Some((self.procs.get(&h.pid)?, h)));
        let mut accounted = true;
        s.owner = match holder {
            // No file refers to it (not yet accepted, or closed by its application).
            _ if s.inode.0 == 0 => Owner::None,
            Some((entry, held)) => {
                held.listed = self.polls;
                Owner::Process {
                    process: Arc::clone(&entry.process),
                    fd: held.fd,
                }
            }
            None => {
                accounted = self.unowned.contains(&s.inode);
                // Not found: held by none only if katop saw every process that could.
                let unseen = match &self.blind {
                    Blind::Nothing => false,
                    Blind::Users(uids) => s.uid.is_none_or(|u| uids.contains(&u.get())),
                    Blind::Everything => true,
                };
                if unseen {
                    Owner::Unknown
                } else {
                    Owner::None
                }
            }
        };
        accounted
    }

    fn scan(&mut self, live: &FxHashSet<Inode>, dumped: &[NetnsId]) {
        let full = self.scans.is_multiple_of(FULL_RESCAN_EVERY);
        self.scans = self.scans.wrapping_add(1);
        let mut stats = ScanStats {
            scanned: true,
            full,
            ..ScanStats::default()
        };
        let mut denied_uids = FxHashSet::default();
        let Some((work, seen)) = self.list(full, dumped, &mut stats, &mut denied_uids) else {
            // Nothing is known: keep the last map, and trust no absence.
            self.blind = Blind::Everything;
            self.last = stats;
            return;
        };
        let bpf = live.len() >= self.bpf_from;
        let reads = if let Some(mut table) = bpf.then(|| self.read_with_bpf()).flatten() {
            stats.bpf = true;
            let reads = bpf_reads(&mut table, &self.procs, &work, live);
            self.fresh = Some(table);
            reads
        } else {
            // The first scan reads every fd link of every process (the bulk of a cold poll):
            // on all cores. Later scans read few links, on this thread (no per-thread heaps
            // kept).
            read_all_fds(&self.procs, &work, live, self.scans == 1)
        };
        for ((pid, _), read) in work.iter().zip(reads) {
            match read {
                Ok((fds, read)) => {
                    if let Some(entry) = self.procs.get_mut(pid) {
                        entry.fds = fds;
                    }
                    stats.links_read += read;
                }
                // Exited meanwhile: its fds are gone with it.
                Err(Errno::NOENT | Errno::SRCH) => {
                    if let Some(entry) = self.procs.get_mut(pid) {
                        entry.fds.clear();
                    }
                }
                Err(Errno::ACCESS | Errno::PERM) => {
                    stats.deny(*pid);
                    if let Ok(p) = procfs::process::Process::new(*pid as i32) {
                        note_denied(&p, &mut denied_uids, &mut stats);
                    }
                }
                Err(e) => stats.fail(|| format!("/proc/{pid}/fd: {e}")),
            }
        }
        self.procs.retain(|pid, _| seen.contains(pid));
        self.shared = Arc::new(self.index_owners());
        self.unowned = live
            .iter()
            .copied()
            .filter(|i| !self.owners.contains(u64::from(i.0)))
            .collect();
        self.blind = if stats.failed > 0 {
            Blind::Everything
        } else if stats.denied > 0 {
            Blind::Users(denied_uids)
        } else {
            Blind::Nothing
        };
        self.last = stats;
    }

    /// Lists the processes to read, refreshing the entries of new ones: `(pid, reuse)`, where
    /// `reuse` says the cached fds may be trusted, and the pids seen. `None` when `/proc`
    /// cannot be listed at all.
    fn list(
        &mut self,
        full: bool,
        dumped: &[NetnsId],
        stats: &mut ScanStats,
        denied_uids: &mut FxHashSet<u32>,
    ) -> Option<Listing> {
        let all = match procfs::process::all_processes() {
            Ok(all) => all,
            Err(e) => {
                stats.fail(|| format!("listing /proc: {e}"));
                return None;
            }
        };
        let mut seen = HashSet::new();
        let mut work: Vec<(u32, bool)> = Vec::new();
        for proc in all {
            // A process can exit at any point below: "not found" is that, anything else a
            // blind spot.
            let proc = match proc {
                Ok(p) => p,
                Err(procfs::ProcError::NotFound(_)) => continue,
                Err(e) => {
                    stats.fail(|| format!("listing /proc: {e}"));
                    continue;
                }
            };
            let Ok(pid) = u32::try_from(proc.pid()) else {
                continue;
            };
            let stat = match proc.stat() {
                Ok(stat) => stat,
                Err(procfs::ProcError::NotFound(_)) => continue,
                Err(procfs::ProcError::PermissionDenied(_)) => {
                    stats.deny(pid);
                    note_denied(&proc, denied_uids, stats);
                    continue;
                }
                Err(e) => {
                    stats.fail(|| format!("/proc/{pid}/stat: {e}"));
                    continue;
                }
            };
            seen.insert(pid);
            stats.processes += 1;
            let reuse = !full
                && self
                    .procs
                    .get(&pid)
                    // exec() keeps the pid and start time but not the name (`ip netns exec`,
                    // a shell's `exec`): a new name is a new program.
                    .is_some_and(|e| {
                        e.starttime == stat.starttime && *e.process.name == *stat.comm
                    });
            if !reuse {
                let cmdline = read_cmdline(pid);
                let process = Arc::new(Process {
                    pid,
                    name: stat.comm.clone().into_boxed_str(),
                    cmdline: cmdline.into_boxed_str(),
                    container: self.containers.of_pid(pid),
                });
                self.procs.insert(
                    pid,
                    ProcEntry {
                        process,
                        starttime: stat.starttime,
                        fds: FxHashMap::default(),
                        katop: runs_katop(pid),
                    },
                );
            }
            // Its fds stay as last read when it lives in a namespace not dumped: a socket this
            // poll looks for is not its (a process that moved its sockets across namespaces
            // is caught at the next full rescan).
            if reuse && net_namespace(pid).is_some_and(|ns| !dumped.contains(&ns)) {
                stats.skipped += 1;
                continue;
            }
            work.push((pid, reuse));
        }
        Some((work, seen))
    }

    /// Rebuilds inode → first holder (the lowest pid, a stable choice across polls; another
    /// katop only where no other process holds it, since its fds may be borrowed) and
    /// returns every holder of the sockets held more than once (inherited after fork, a
    /// listener shared by workers, passed with `SCM_RIGHTS`), in pid and fd order.
    fn index_owners(&mut self) -> Holders {
        self.owners.clear();
        let mut shared: Holders = FxHashMap::default();
        // Whether the first holder so far is another katop.
        let mut by_katop: FxHashSet<Inode> = FxHashSet::default();
        let procs = &self.procs;
        self.owners
            .reserve(procs.values().map(|e| e.fds.len()).sum());
        for e in procs.values() {
            for (&fd, &inode) in &e.fds {
                let holder = || Holder {
                    process: Arc::clone(&e.process),
                    fd,
                };
                let first = Held {
                    inode,
                    pid: e.process.pid,
                    fd,
                    listed: 0,
                };
                let Some(held) = self.owners.get_or_add(first) else {
                    if e.katop {
                        by_katop.insert(inode);
                    }
                    continue;
                };
                let first_katop = by_katop.contains(&inode);
                let Some(first_entry) = procs.get(&held.pid) else {
                    continue; // every holder is one of `procs`
                };
                let first_process = &first_entry.process;
                shared
                    .entry(inode)
                    .or_insert_with(|| {
                        vec![Holder {
                            process: Arc::clone(first_process),
                            fd: held.fd,
                        }]
                    })
                    .push(holder());
                if (e.katop, e.process.pid, fd) < (first_katop, held.pid, held.fd) {
                    *held = first;
                    if !e.katop {
                        by_katop.remove(&inode);
                    }
                }
            }
        }
        for list in shared.values_mut() {
            list.sort_unstable_by_key(|h| (h.process.pid, h.fd));
        }
        shared
    }
}

/// Records the user of a process whose fds katop may not read; a process whose user cannot
/// be told makes every absence unknown.
fn note_denied(proc: &procfs::process::Process, uids: &mut FxHashSet<u32>, stats: &mut ScanStats) {
    match proc.uid() {
        Ok(uid) => {
            uids.insert(uid);
        }
        Err(procfs::ProcError::NotFound(_)) => {}
        Err(e) => stats.fail(|| format!("/proc/{}: {e}", proc.pid())),
    }
}

#[path = "procs_fds.rs"]
mod fds;
#[path = "owners.rs"]
mod owners;
pub use fds::socket_inode;
use fds::{bpf_reads, net_namespace, read_all_fds, read_cmdline, Listing};
use owners::{Held, Owners};

#[cfg(test)]
mod tests {
    use super::fds::{cmdline_text, read_socket_fds};
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn command_lines_are_lossy_never_empty() {
        assert_eq!(cmdline_text(b"postgres: idle\0"), "postgres: idle");
        assert_eq!(cmdline_text(b"java\0-jar\0app.jar\0"), "java -jar app.jar");
        assert_eq!(cmdline_text(b"a\xffb\0--x\0"), "a\u{fffd}b --x");
        assert_eq!(cmdline_text(b""), "");
        assert!(!read_cmdline(std::process::id()).is_empty());
    }

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
