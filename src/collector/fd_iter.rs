//! The BPF fd reader: every process's socket fds and every TCP socket's keepalive options in
//! one pass of the kernel's `task_file` iterator (`fd_iter.bpf.c`), instead of a `readlinkat`
//! per fd under `/proc` and a `pidfd_getfd` plus five `getsockopt` calls per socket. At 1M
//! sockets that is seconds of system time (making and looking up `/proc` dentries) against a
//! fraction of one.
//!
//! It is optional: it needs clang at build time, BTF and the BPF syscall at run time, and the
//! privileges to load a tracing program (root, or `CAP_BPF` with `CAP_PERFMON`). Where any of
//! that is missing, [`FdReader::open`] says why and katop reads `/proc`, with the same result.
//!
//! Every read checks itself against a socket katop holds and whose options it set: the record
//! must say exactly what `getsockopt` says, and it gives the kernel's `HZ` (the options are
//! kept in jiffies). A reader that disagrees is not used.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use rustix::net::{sockopt, AddressFamily, SocketType};

use super::bpf_iter;
use crate::model::{Inode, SockOpts};

/// The object build.rs made; empty when clang was not there.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fd_iter.bpf.o"));

/// Bytes per record (`struct record` in `fd_iter.bpf.c`).
const RECORD: usize = 32;
const REC_TCP: u8 = 1;
const REC_KEEPALIVE: u8 = 2;
/// A marker: the pass walked this process's fd table (it had at least one file).
const REC_PROCESS: u8 = 4;
/// A TCP field could not be copied: the options are not known from the pass.
const REC_UNREAD: u8 = 8;

/// The longest a pass may take. The iterator visits every file of every fd table, and the
/// threads of a process whose leader exited each walk the table they share (the kernel skips
/// only those that share their leader's): a local user could make a pass cost threads × files.
/// A pass of a million sockets takes well under a second; past the budget katop reads `/proc`,
/// whose cost such a process does not multiply.
pub const PASS_BUDGET: Duration = Duration::from_secs(10);

/// The options set on katop's own check socket: `TCP_KEEPIDLE` (large, so `HZ` divides out
/// exactly), `TCP_KEEPINTVL`, `TCP_KEEPCNT`, `TCP_USER_TIMEOUT`.
const CHECK_IDLE_S: u32 = 1000;
const CHECK_INTVL_S: u32 = 7;
const CHECK_CNT: u8 = 3;
const CHECK_USER_TIMEOUT_MS: u32 = 1234;

/// What one pass found.
#[derive(Debug, Default)]
pub struct FdTable {
    /// pid → fd → socket inode, for every process holding a socket.
    pub by_pid: FxHashMap<u32, FxHashMap<u32, Inode>>,
    /// Every process whose fd table the pass walked: one not here held no file, or was not
    /// seen (it started after the pass, or the iterator skipped it) and must be read otherwise.
    pub walked: FxHashSet<u32>,
    /// Each TCP socket's options, as the kernel keeps them (see [`FdTable::opts`]), in inode
    /// order once the pass is over: 20 bytes a socket where a map of them took 50 (75 while it
    /// grew), at 1M sockets the largest part of a scan.
    tcp: Vec<(Inode, KernelOpts)>,
    /// The kernel's clock rate, which the times are counted in.
    hz: u32,
}

/// A TCP socket's options as the kernel holds them: times in jiffies.
#[derive(Debug, Clone, Copy)]
struct KernelOpts {
    idle_jiffies: u32,
    intvl_jiffies: u32,
    user_timeout_ms: u32,
    cnt: u8,
    keepalive: bool,
}

/// A loaded iterator program and the socket it checks itself against.
pub struct FdReader {
    ebpf: aya::Ebpf,
    check: OwnedFd,
}

impl std::fmt::Debug for FdReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdReader").finish_non_exhaustive()
    }
}

/// The program's name in the object.
const PROGRAM: &str = "katop_fds";

impl FdReader {
    /// Loads the program, or says why it cannot be used here.
    pub fn open() -> Result<Self, String> {
        Self::open_with(None)
    }

    /// [`FdReader::open`] with the kernel's BTF parsed already
    /// ([`super::bpf_iter::kernel_btf`]).
    pub fn open_with(btf: Option<&aya::Btf>) -> Result<Self, String> {
        // Checked before anything is made (the load checks the same).
        if OBJECT.is_empty() {
            return Err("katop was built without clang".into());
        }
        // The iterator gives global pids; /proc's are the ones katop shows.
        if !in_initial_pid_namespace() {
            return Err("katop runs in a child PID namespace".into());
        }
        let check = check_socket().map_err(|e| format!("making the check socket: {e}"))?;
        // The pass sees every process's fds, past the ptrace checks (Yama, LSMs) that
        // `/proc` and `pidfd_getfd` make: the load refuses where katop gained privileges.
        let ebpf = bpf_iter::load(OBJECT, PROGRAM, "task_file", btf)?;
        Ok(Self { ebpf, check })
    }

    /// One pass over every fd table, within [`PASS_BUDGET`]. An error means nothing read can
    /// be trusted.
    pub fn read(&mut self) -> Result<FdTable, String> {
        self.read_within(PASS_BUDGET)
    }

    /// [`FdReader::read`], given up once it has taken longer than `budget` (then `/proc` is
    /// read instead).
    pub fn read_within(&mut self, budget: Duration) -> Result<FdTable, String> {
        let own = (std::process::id(), self.check.as_raw_fd() as u32);
        let mut table = FdTable::default();
        let mut hz = None;
        bpf_iter::pass(
            &mut self.ebpf,
            PROGRAM,
            RECORD,
            (budget, "the fd tables"),
            |raw| {
                let r = Record::parse(raw);
                if (r.tgid, r.fd) == own && r.flags != REC_PROCESS {
                    hz = Some(r.check()?);
                    return Ok(());
                }
                table.add(&r)
            },
        )?;
        table.hz = hz.ok_or("the fd iterator did not list katop's own check socket")?;
        table.settle();
        Ok(table)
    }
}

/// One record, as the program wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    tgid: u32,
    fd: u32,
    ino: u64,
    idle_jiffies: u32,
    intvl_jiffies: u32,
    user_timeout_ms: u32,
    probes: u8,
    flags: u8,
    leader: bool,
}

impl Record {
    fn parse(raw: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        Self {
            tgid: u32_at(0),
            fd: u32_at(4),
            ino: u64::from(u32_at(8)) | u64::from(u32_at(12)) << 32,
            idle_jiffies: u32_at(16),
            intvl_jiffies: u32_at(20),
            user_timeout_ms: u32_at(24),
            probes: raw[28],
            flags: raw[29],
            leader: raw[30] != 0,
        }
    }

    /// The kernel's HZ, if this record of the check socket says what katop set on it.
    fn check(&self) -> Result<u32, String> {
        let hz = self.idle_jiffies / CHECK_IDLE_S;
        let agrees = hz > 0
            && self.idle_jiffies == CHECK_IDLE_S * hz
            && self.intvl_jiffies == CHECK_INTVL_S * hz
            && self.probes == CHECK_CNT
            && self.user_timeout_ms == CHECK_USER_TIMEOUT_MS
            && self.flags == REC_TCP | REC_KEEPALIVE;
        agrees
            .then_some(hz)
            .ok_or_else(|| format!("the fd iterator misread katop's own socket: {self:?}"))
    }
}

impl FdTable {
    /// Takes in one record; an error says the pass cannot be trusted.
    fn add(&mut self, r: &Record) -> Result<(), String> {
        if r.flags == REC_PROCESS {
            self.walked.insert(r.tgid);
            return Ok(());
        }
        // Socket inodes are 32-bit (`get_next_ino`): another is a misread, not a socket to skip.
        let ino = u32::try_from(r.ino)
            .map_err(|_| format!("the fd iterator gave a socket inode past 32 bits: {r:?}"))?;
        let inode = Inode(ino);
        let fds = self.by_pid.entry(r.tgid).or_default();
        // A thread with its own fd table is listed under its process too; /proc/PID/fd shows
        // the leader's table, which wins where both use a number.
        if r.leader {
            fds.insert(r.fd, inode);
        } else {
            fds.entry(r.fd).or_insert(inode);
        }
        if r.flags & REC_TCP != 0 && r.flags & REC_UNREAD == 0 {
            self.tcp.push((
                inode,
                KernelOpts {
                    idle_jiffies: r.idle_jiffies,
                    intvl_jiffies: r.intvl_jiffies,
                    user_timeout_ms: r.user_timeout_ms,
                    cnt: r.probes,
                    keepalive: r.flags & REC_KEEPALIVE != 0,
                },
            ));
        }
        Ok(())
    }

    /// Puts the options in inode order, once each (a socket held by several fds is listed
    /// under each, with the same options: the socket's).
    fn settle(&mut self) {
        self.tcp.sort_unstable_by_key(|(inode, _)| *inode);
        self.tcp.dedup_by_key(|(inode, _)| *inode);
    }

    /// A TCP socket's options, exactly as `getsockopt` would have answered (`tcp_getsockopt`
    /// divides the jiffies by HZ).
    pub fn opts(&self, inode: Inode) -> Option<SockOpts> {
        let at = self.tcp.binary_search_by_key(&inode, |(i, _)| *i).ok()?;
        let k = &self.tcp[at].1;
        let secs = |j: u32| u16::try_from(j / self.hz.max(1)).unwrap_or(u16::MAX);
        Some(SockOpts {
            user_timeout_ms: k.user_timeout_ms,
            idle_s: secs(k.idle_jiffies),
            intvl_s: secs(k.intvl_jiffies),
            cnt: k.cnt,
            keepalive: k.keepalive,
            read: true,
        })
    }
}

/// A TCP socket of katop's own with known options, for the reader to find and check.
fn check_socket() -> rustix::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_keepalive(&fd, true)?;
    sockopt::set_tcp_keepidle(&fd, Duration::from_secs(CHECK_IDLE_S.into()))?;
    sockopt::set_tcp_keepintvl(&fd, Duration::from_secs(CHECK_INTVL_S.into()))?;
    sockopt::set_tcp_keepcnt(&fd, CHECK_CNT.into())?;
    sockopt::set_tcp_user_timeout(&fd, CHECK_USER_TIMEOUT_MS)?;
    Ok(fd)
}

/// Whether katop sees pids as the kernel's task iterator writes them (`NSpid` has one level).
fn in_initial_pid_namespace() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|pids| pids.split_whitespace().count() == 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(ino: u64, flags: u8) -> Record {
        Record {
            tgid: 10,
            fd: 3,
            ino,
            idle_jiffies: 7200 * 250,
            intvl_jiffies: 75 * 250,
            user_timeout_ms: 0,
            probes: 9,
            flags,
            leader: true,
        }
    }

    fn table() -> FdTable {
        FdTable {
            hz: 250,
            ..FdTable::default()
        }
    }

    #[test]
    fn a_field_the_kernel_copy_failed_on_leaves_the_options_unknown() {
        let mut t = table();
        t.add(&tcp(5, REC_TCP | REC_KEEPALIVE)).unwrap();
        t.add(&tcp(6, REC_TCP | REC_KEEPALIVE | REC_UNREAD))
            .unwrap();
        // The same socket under another fd: its options once.
        t.add(&Record {
            fd: 4,
            ..tcp(5, REC_TCP | REC_KEEPALIVE)
        })
        .unwrap();
        t.settle();
        assert_eq!(t.tcp.len(), 1);
        assert_eq!(
            t.opts(Inode(5)).map(|o| (o.idle_s, o.keepalive)),
            Some((7200, true))
        );
        assert_eq!(t.opts(Inode(6)), None, "asked of getsockopt instead");
        // Still held: who holds it is known.
        assert_eq!(t.by_pid[&10].get(&3), Some(&Inode(6)));
    }

    #[test]
    fn an_inode_past_32_bits_fails_the_pass_and_a_marker_only_marks() {
        let mut t = table();
        assert!(t.add(&tcp(1 << 33, REC_TCP)).is_err());
        let marker = Record {
            flags: REC_PROCESS,
            ..tcp(0, 0)
        };
        t.add(&marker).unwrap();
        assert!(t.walked.contains(&10));
        assert!(t.by_pid.is_empty(), "a marker is no socket");
    }
}
