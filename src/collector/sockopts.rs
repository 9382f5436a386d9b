//! Each TCP socket's real keepalive options (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
//! `TCP_KEEPCNT`, `TCP_USER_TIMEOUT`), read with `getsockopt` on a duplicate of its owner's fd
//! (`pidfd_getfd`; the owner's socket is untouched) and cached by cookie.
//!
//! Options seldom change, so a socket is read when first seen and again every
//! [`REFRESH_EVERY`]th poll (spread by cookie, so refreshes do not come in bursts), or at once
//! when asked to ([`Reread`], after katop itself changed them). A socket whose owner katop may
//! not inspect is remembered as unreadable (its values are then the sysctl defaults).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;
use rustix::net::sockopt;

use super::borrow::{self, BorrowError};
use crate::model::{Cookie, Owner, Proto, RawSock, SockOpts, SockState};

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
    /// Sockets katop may not inspect (no ptrace rights over their owner), this poll.
    pub denied: usize,
    /// Sockets left for later polls by the budget.
    pub deferred: usize,
}

/// The cache: 24 bytes per TCP socket with a visible owner.
#[derive(Debug, Default)]
pub struct OptsCache {
    /// Options (`read: false`: not permitted) and the poll that last saw the socket.
    map: FxHashMap<Cookie, (SockOpts, u32)>,
    polls: u32,
    /// Most sockets read per poll (`None`: all), so a first poll of 100k sockets does not
    /// stall the dashboard: the rest follow in the next polls.
    pub budget: Option<usize>,
    pub reread: Reread,
    pub last: OptsStats,
}

/// Sockets whose options mean something and can be read: TCP, held by a known process.
fn wanted(s: &RawSock) -> bool {
    s.proto == Proto::Tcp
        && !matches!(s.state, SockState::TimeWait | SockState::SynRecv)
        && matches!(s.owner, Owner::Process { .. })
}

fn due(cookie: Cookie, poll: u32) -> bool {
    (cookie.0 as u32).wrapping_add(poll) % REFRESH_EVERY == 0
}

impl OptsCache {
    /// Sets every wanted socket's `opts`, from the cache or by reading it.
    pub fn fill(&mut self, socks: &mut [RawSock]) {
        self.polls = self.polls.wrapping_add(1);
        let poll = self.polls;
        if let Ok(mut again) = self.reread.lock() {
            for c in again.drain(..) {
                self.map.remove(&c);
            }
        }
        let mut todo: Vec<u32> = Vec::new();
        for (i, s) in socks.iter_mut().enumerate() {
            if !wanted(s) {
                continue;
            }
            match self.map.get_mut(&s.cookie) {
                Some((opts, seen)) => {
                    s.opts = *opts;
                    *seen = poll;
                    if due(s.cookie, poll) {
                        todo.push(i as u32);
                    }
                }
                None => todo.push(i as u32),
            }
        }
        let mut stats = OptsStats::default();
        if let Some(b) = self.budget {
            stats.deferred = todo.len().saturating_sub(b);
            todo.truncate(b);
        }
        // One pidfd per process: visit each process's sockets together.
        let pid_of = |s: &RawSock| s.owner.process().map_or(0, |p| p.pid);
        todo.sort_unstable_by_key(|&i| pid_of(&socks[i as usize]));
        let mut process: Option<(u32, Result<OwnedFd, BorrowError>)> = None;
        for i in todo {
            let s = &mut socks[i as usize];
            let Owner::Process { process: p, fd } = &s.owner else {
                continue;
            };
            let pid = p.pid;
            if process.as_ref().map(|(p, _)| *p) != Some(pid) {
                process = Some((pid, borrow::open_process(pid)));
            }
            let Some((_, pidfd)) = &process else { continue };
            let opts = match pidfd
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|pidfd| borrow::borrow_from(pidfd, pid, *fd, s.inode))
            {
                Ok(dup) => match read(&dup) {
                    Some(o) => o,
                    None => continue,
                },
                Err(BorrowError::NotPermitted { .. }) => {
                    stats.denied += 1;
                    SockOpts::default()
                }
                // The process, fd or socket went away mid-poll: nothing to remember.
                Err(_) => continue,
            };
            stats.read += usize::from(opts.read);
            s.opts = opts;
            self.map.insert(s.cookie, (opts, poll));
        }
        // Forget sockets this poll did not see.
        self.map.retain(|_, (_, seen)| *seen == poll);
        self.last = stats;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The options of a socket katop holds a duplicate of.
pub fn read(fd: &OwnedFd) -> Option<SockOpts> {
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
