//! Each TCP socket's real keepalive options (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
//! `TCP_KEEPCNT`, `TCP_USER_TIMEOUT`), read with `getsockopt` on a duplicate of its owner's fd
//! (`pidfd_getfd`; the owner's socket is untouched) and cached by cookie.
//!
//! Options seldom change, so a socket is read when first seen and again every
//! [`REFRESH_EVERY`]th poll (spread by cookie, so refreshes do not come in bursts), at once
//! when asked to ([`Reread`], after katop itself changed them), and at once when the kernel's
//! timer contradicts the cached `SO_KEEPALIVE`: an ESTABLISHED socket's `sk_timer` is pending
//! exactly while keepalive is on (`net/ipv4/tcp_timer.c` re-arms it unless `SOCK_KEEPOPEN` is
//! off; `tcp_set_keepalive` arms or deletes it), and `inet_diag` shows it as timer 2 unless a
//! retransmission or zero-window probe timer is pending (shown instead). So turning keepalive
//! on or off is seen at the next poll; other changes (idle, interval, count) at the next
//! refresh. A read that finds different options than the cache held is reported
//! ([`OptsCache::changed`]). A socket whose owner katop may not inspect is remembered as
//! unreadable (its values are then the sysctl defaults).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;
use rustix::net::sockopt;

use super::borrow::{self, BorrowError};
use super::fd_iter::FdTable;
use crate::model::place_index::{Keyed, KeyedVec};
use crate::model::{Cookie, Inode, Owner, Proto, RawSock, SockOpts, SockState};

/// Polls between two reads of one socket's options.
pub const REFRESH_EVERY: u32 = 300;

/// Cookies whose options must be read again at the next poll; shared with whoever changes
/// options (the dashboard's actions thread).
pub type Reread = Arc<Mutex<Vec<Cookie>>>;

/// Counters of the last poll, for warnings and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptsStats {
    /// Sockets whose options were read in this poll.
    pub read: usize,
    /// Sockets katop may not inspect (no ptrace rights over their owner), found this poll.
    pub denied: usize,
    /// Sockets of this poll whose options are known to be unreadable (found now or before):
    /// they show the sysctl defaults, and the warning says how many, every poll.
    pub unreadable: usize,
    /// Sockets left for later polls by the budget.
    pub deferred: usize,
}

/// One socket's cached options: its cookie, then its options (`read: false`: not permitted)
/// and the poll that last saw it, packed into one word ([`pack`]).
#[derive(Debug, Clone, Copy)]
struct Cached {
    cookie: u64,
    word: u64,
}

impl Keyed for Cached {
    fn key(&self) -> u64 {
        self.cookie
    }
}

/// The cache: 16 bytes per TCP socket with a visible owner (there may be 1M), and 5 bytes a
/// slot of its index.
#[derive(Debug, Default)]
pub struct OptsCache {
    map: KeyedVec<Cached>,
    /// `TCP_USER_TIMEOUT` of the few sockets that set one.
    user_timeouts: FxHashMap<u64, u32>,
    polls: u32,
    /// Most sockets read per poll (`None`: all), so a first poll of 100k sockets does not
    /// stall the dashboard: the rest follow in the next polls.
    pub budget: Option<usize>,
    pub reread: Reread,
    pub last: OptsStats,
    /// Sockets whose options the last poll found changed (read again, and different).
    changed: Vec<Cookie>,
    /// The cookies asked to be read again, from the poll's beginning to its end.
    again: rustc_hash::FxHashSet<u64>,
}

/// Whether the kernel's timer says `SO_KEEPALIVE` is not what `cached` holds (ESTABLISHED,
/// no retransmission or probe timer hiding the keepalive one).
fn contradicts(s: &RawSock, cached: &SockOpts) -> bool {
    use crate::model::TimerKind;
    if !cached.read || s.proto != Proto::Tcp || s.state != SockState::Established {
        return false;
    }
    match s.timer.map(|t| t.kind) {
        None => cached.keepalive,
        Some(TimerKind::Keepalive) => !cached.keepalive,
        Some(_) => false,
    }
}

/// The read of socket `index`, if its options mean something and can be read: TCP, held by
/// a known process.
fn job(index: usize, s: &RawSock) -> Option<Job> {
    let Owner::Process { process, fd } = &s.owner else {
        return None;
    };
    (s.proto == Proto::Tcp && !matches!(s.state, SockState::TimeWait | SockState::SynRecv)).then(
        || Job {
            index: index as u32,
            pid: process.pid,
            fd: *fd,
            inode: s.inode,
        },
    )
}

fn due(cookie: Cookie, poll: u32) -> bool {
    (cookie.0 as u32)
        .wrapping_add(poll)
        .is_multiple_of(REFRESH_EVERY)
}

impl OptsCache {
    /// Sets every wanted socket's `opts`, from the cache or by reading it: from `fresh`, this
    /// poll's BPF pass, where it has the socket (free, so outside the budget), else with
    /// `getsockopt` on a borrowed fd.
    pub fn fill(&mut self, socks: &mut [RawSock], fresh: Option<&FdTable>) {
        self.begin_poll();
        self.fill_rest(socks, fresh);
    }

    /// Begins a poll whose sockets take their options from the cache as they come
    /// ([`Self::ready`]), the rest at its end ([`Self::fill_rest`]).
    pub fn begin_poll(&mut self) {
        self.polls = self.polls.wrapping_add(1);
        // Asked to read again: read at once, and compared with what was held (kept until a
        // poll gets that far: one whose dump failed leaves them for the next).
        if let Ok(mut asked) = self.reread.lock() {
            self.again.extend(asked.drain(..).map(|c| c.0));
        }
        self.changed.clear();
    }

    /// Sets a socket's options from the cache, where nothing is to be read this poll (its
    /// owner set first); false for one to read ([`Self::fill_rest`] does).
    pub fn ready(&mut self, s: &mut RawSock) -> bool {
        let poll = self.polls;
        let job = job(0, s);
        let Some(word) = self.map.get_mut(s.cookie.0).map(|c| &mut c.word) else {
            return job.is_none();
        };
        let ut = self.user_timeouts.get(&s.cookie.0).copied().unwrap_or(0);
        s.opts = unpack(*word, ut);
        *word = pack(&s.opts, poll);
        let now = self.again.contains(&s.cookie.0) || contradicts(s, &s.opts);
        job.is_none() || !(now || due(s.cookie, poll))
    }

    /// Sets the options of the poll's sockets not set as they came ([`Self::ready`]), and
    /// forgets the sockets the poll did not see.
    pub fn fill_rest(&mut self, socks: &mut [RawSock], fresh: Option<&FdTable>) {
        let poll = self.polls;
        let again = std::mem::take(&mut self.again);
        // What each read needs, taken out of the sockets so threads can share the work.
        let mut jobs: Vec<Job> = Vec::new();
        let mut new = 0;
        for (i, s) in socks.iter_mut().enumerate() {
            let job = job(i, s);
            // Read before: the options stay what they were, even once no process holds the
            // socket any more (its last moments: the kernel keeps the options, and the sysctls
            // would be a guess).
            if let Some(word) = self.map.get_mut(s.cookie.0).map(|c| &mut c.word) {
                let ut = self.user_timeouts.get(&s.cookie.0).copied().unwrap_or(0);
                s.opts = unpack(*word, ut);
                *word = pack(&s.opts, poll);
                let now = again.contains(&s.cookie.0) || contradicts(s, &s.opts);
                if let Some(job) = job.filter(|_| now || due(s.cookie, poll)) {
                    jobs.push(job);
                }
            } else {
                new += usize::from(job.is_some());
                jobs.extend(job);
            }
        }
        let mut stats = OptsStats::default();
        // New sockets get an entry each: room for all of them at once (one allocation on a
        // first poll of 1M, not a doubling per budgeted poll, nor room for those read again).
        self.map.reserve(new);
        let mut answered: Vec<(Job, Read)> = Vec::new();
        if let Some(table) = fresh {
            jobs.retain(|job| match table.opts(job.inode) {
                Some(o) => {
                    answered.push((*job, Read::Opts(o)));
                    false
                }
                None => true,
            });
        }
        if let Some(b) = self.budget {
            stats.deferred = jobs.len().saturating_sub(b);
            jobs.truncate(b);
        }
        // One pidfd per process: visit each process's sockets together.
        jobs.sort_unstable_by_key(|j| j.pid);
        let borrowed = read_all(&jobs);
        for (job, read) in answered.into_iter().chain(jobs.into_iter().zip(borrowed)) {
            let opts = match read {
                Read::Opts(o) => o,
                Read::Denied => {
                    stats.denied += 1;
                    SockOpts::default()
                }
                Read::Gone => continue,
            };
            stats.read += usize::from(opts.read);
            let s = &mut socks[job.index as usize];
            // Read before (the cached values are in `s.opts`), and not the same now.
            let before = self.map.contains(s.cookie.0).then_some(s.opts);
            if before.is_some_and(|b| b.read && opts.read && b != opts) {
                self.changed.push(s.cookie);
            }
            s.opts = opts;
            self.map.insert(Cached {
                cookie: s.cookie.0,
                word: pack(&opts, poll),
            });
            if opts.user_timeout_ms > 0 {
                self.user_timeouts.insert(s.cookie.0, opts.user_timeout_ms);
            } else {
                self.user_timeouts.remove(&s.cookie.0);
            }
        }
        // Forget sockets this poll did not see; count the unreadable ones it did.
        let stamp = u64::from(poll & 0xffff);
        self.map.retain(|c| {
            let seen = c.word >> 48 == stamp;
            stats.unreadable += usize::from(seen && c.word >> 38 & 1 == 0);
            seen
        });
        let map = &self.map;
        self.user_timeouts.retain(|c, _| map.contains(*c));
        self.last = stats;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The sockets whose options the last poll found changed.
    pub fn changed(&self) -> &[Cookie] {
        &self.changed
    }

    /// Gives back room the cache no longer needs.
    pub fn shrink(&mut self) {
        self.map.shrink();
        if super::sparse(self.user_timeouts.capacity(), self.user_timeouts.len()) {
            self.user_timeouts.shrink_to(2 * self.user_timeouts.len());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

/// Options and a 16-bit poll stamp in one word: idle (15 bits), intvl (15), cnt (7),
/// keepalive, read, and the stamp in the top 16 bits. The user timeout lives beside it.
fn pack(o: &SockOpts, poll: u32) -> u64 {
    u64::from(o.idle_s & 0x7fff)
        | u64::from(o.intvl_s & 0x7fff) << 15
        | u64::from(o.cnt & 0x7f) << 30
        | u64::from(o.keepalive) << 37
        | u64::from(o.read) << 38
        | u64::from(poll & 0xffff) << 48
}

fn unpack(w: u64, user_timeout_ms: u32) -> SockOpts {
    SockOpts {
        idle_s: (w & 0x7fff) as u16,
        intvl_s: (w >> 15 & 0x7fff) as u16,
        cnt: (w >> 30 & 0x7f) as u8,
        keepalive: w >> 37 & 1 == 1,
        read: w >> 38 & 1 == 1,
        user_timeout_ms,
    }
}

/// One socket to read: where it is in the poll, and whose fd it is.
#[derive(Debug, Clone, Copy)]
struct Job {
    index: u32,
    pid: u32,
    fd: u32,
    inode: Inode,
}

enum Read {
    Opts(SockOpts),
    /// No ptrace rights over the owner: remembered as unreadable.
    Denied,
    /// The process, fd or socket went away mid-poll: nothing to remember.
    Gone,
}

/// Below this many reads one thread does them all.
const PARALLEL_FROM: usize = 4096;

/// Reads every job (the answers in the same order), on as many threads as there are cores
/// when there are many: a first poll of 100k sockets is ~8 syscalls each. The threads fill
/// slices of one vector allocated here, so they leave no per-thread heap behind.
fn read_all(jobs: &[Job]) -> Vec<Read> {
    let mut out: Vec<Read> = std::iter::repeat_with(|| Read::Gone)
        .take(jobs.len())
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if jobs.len() < PARALLEL_FROM || threads < 2 {
        read_some(jobs, &mut out);
        return out;
    }
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (part, answers) in jobs.chunks(chunk).zip(out.chunks_mut(chunk)) {
            // Named as katop's workers, so a panic here ends katop through the UI loop. A
            // chunk whose thread cannot start stays unread (`Gone`): read again next poll.
            let _ = std::thread::Builder::new()
                .name("katop-options".into())
                .spawn_scoped(scope, move || read_some(part, answers));
        }
    });
    out
}

fn read_some(jobs: &[Job], out: &mut [Read]) {
    let mut process: Option<(u32, Result<OwnedFd, BorrowError>)> = None;
    for (job, answer) in jobs.iter().zip(out) {
        if process.as_ref().map(|(p, _)| *p) != Some(job.pid) {
            process = Some((job.pid, borrow::open_process(job.pid)));
        }
        *answer = match process.as_ref().map(|(_, r)| r) {
            Some(Ok(pidfd)) => match borrow::borrow_from(pidfd, job.pid, job.fd, job.inode) {
                Ok(dup) => read(&dup).map_or(Read::Gone, Read::Opts),
                Err(BorrowError::NotPermitted { .. }) => Read::Denied,
                Err(_) => Read::Gone,
            },
            Some(Err(BorrowError::NotPermitted { .. })) => Read::Denied,
            _ => Read::Gone,
        };
    }
}

/// The options of a socket katop holds a duplicate of.
pub fn read(fd: &impl std::os::fd::AsFd) -> Option<SockOpts> {
    let secs = |d: std::time::Duration| u16::try_from(d.as_secs()).unwrap_or(u16::MAX);
    Some(SockOpts {
        keepalive: sockopt::socket_keepalive(fd).ok()?,
        idle_s: secs(sockopt::tcp_keepidle(fd).ok()?),
        intvl_s: secs(sockopt::tcp_keepintvl(fd).ok()?),
        cnt: u8::try_from(sockopt::tcp_keepcnt(fd).ok()?).unwrap_or(u8::MAX),
        user_timeout_ms: sockopt::tcp_user_timeout(fd).unwrap_or(0),
        read: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket asked to be read again stays asked through a poll whose dump failed (begun,
    /// never filled): the next poll reads it.
    #[test]
    fn a_reread_asked_survives_a_failed_poll() {
        let mut cache = OptsCache::default();
        cache.reread.lock().unwrap().push(Cookie(7));
        cache.begin_poll();
        cache.begin_poll();
        assert!(cache.again.contains(&7));
    }

    #[test]
    fn packing_keeps_every_option_at_the_kernels_limits() {
        for o in [
            SockOpts::default(),
            SockOpts {
                user_timeout_ms: 7,
                idle_s: 32_767,
                intvl_s: 32_767,
                cnt: 127,
                keepalive: true,
                read: true,
            },
            SockOpts {
                user_timeout_ms: 0,
                idle_s: 60,
                intvl_s: 10,
                cnt: 5,
                keepalive: false,
                read: true,
            },
        ] {
            let w = pack(&o, 0x1_2345);
            assert_eq!(unpack(w, o.user_timeout_ms), o);
            assert_eq!(w >> 48, 0x2345);
        }
    }
}
