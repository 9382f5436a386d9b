//! The network namespaces a collector reads, polled on a schedule: a TCP `sock_diag` dump in
//! any namespace walks the host's whole hash table (~14 ms per family beside 100k host
//! sockets), so fifty containers dumped naively every second would cost well over a second a
//! poll. Here the host's namespace and the ones the operator focuses on are dumped every poll;
//! the others take turns under a per-poll time budget, those whose socket counts changed
//! (`sockstat`) first, each at least every [`MAX_AGE`] while it changes and every
//! [`QUIET_MAX_AGE`] while it is quiet; a protocol and family a namespace has no socket of
//! costs no dump at all. Between its dumps a namespace's sockets are the last ones read, and
//! its age (in the header, and `NsInfo::age`) says so.
//!
//! Any local user can make namespaces by the thousand: katop keeps open only as many as its
//! share of descriptors allows ([`super::fds::Shares`]) and visits the rest
//! ([`member::Member`]), so every namespace is read and `/proc` always has descriptors left.
//! One katop could not read is tried again soon (after 1, 2, 4… polls, at most
//! [`REFRESH_EVERY`]), and how many are unread, and why, is said.

mod member;
mod wanted;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::containers::Names;
use super::netns::{self, Found};
use super::sock_diag::DumpKind;
use crate::error::CollectError;
use crate::model::{KernelSettings, NetnsId, NsInfo, RawSock};
use member::Member;
pub use wanted::{check, Which};
use wanted::{name_of, Wanted};

/// The longest a namespace's data may get, while its socket counts change, before it is dumped
/// whatever the budget.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// The same for a namespace whose socket counts have not changed since its last dump (or
/// that is visited, so its counts are not watched).
pub const QUIET_MAX_AGE: Duration = Duration::from_secs(15);
/// Time per poll for dumping namespaces other than the host's and the focused ones.
pub const BUDGET: Duration = Duration::from_millis(30);
/// Polls between two reads of a namespace's sysctls, and the longest wait before trying
/// again one katop could not enter.
const REFRESH_EVERY: u32 = 30;

/// Namespaces the operator is looking at (a filter on them, the selected socket's): dumped
/// every poll. Shared with the UI.
pub type Focus = Arc<Mutex<Vec<NetnsId>>>;

/// What the last poll spent on namespaces beyond katop's own (for the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsStats {
    /// Namespaces dumped, and the time their dumps took.
    pub dumped: usize,
    pub dump_cost: Duration,
    /// Time spent finding namespaces.
    pub discover_cost: Duration,
    /// Namespaces kept open, and visited.
    pub open: usize,
    pub visited: usize,
}

/// A namespace katop could not enter: why, and when to try again.
struct Failed {
    id: NetnsId,
    why: CollectError,
    retry_at: u32,
    tries: u32,
}

/// The namespaces of one collector beyond its own.
pub struct Namespaces {
    pub last: NsStats,
    which: Which,
    own: NetnsId,
    own_wanted: bool,
    host: NetnsId,
    members: Vec<Member>,
    failed: Vec<Failed>,
    names: Names,
    pub focus: Focus,
    polls: u32,
    /// What one namespace's dump cost lately: how many fit the budget.
    cost_each: Duration,
    /// How many namespaces may be kept open (the descriptor budget's share).
    open_max: usize,
}

impl Namespaces {
    pub fn new(which: Which, own: NetnsId) -> Self {
        let host = rustix::fs::stat("/proc/1/ns/net")
            .ok()
            .and_then(|st| NetnsId::from_ino(st.st_ino))
            .unwrap_or(own);
        let mut names = Names::default();
        let own_wanted = match &which {
            Which::Own | Which::All => true,
            Which::Some(_) => {
                let me = Found {
                    id: own,
                    handle: netns::Handle::Pid(std::process::id()),
                    mount_name: None,
                    pids: vec![std::process::id()],
                };
                let w = Wanted::of(&which);
                w.wants(&me, true, own == host, || {
                    name_of(&mut names, &me, own == host).0
                })
            }
        };
        Namespaces {
            last: NsStats::default(),
            which,
            own,
            own_wanted,
            host,
            members: Vec::new(),
            failed: Vec::new(),
            names,
            focus: Focus::default(),
            polls: 0,
            cost_each: Duration::ZERO,
            open_max: super::fds::Shares::now().namespaces,
        }
    }

    pub fn host(&self) -> NetnsId {
        self.host
    }

    /// The namespaces read now, beyond katop's own.
    pub fn ids(&self) -> impl Iterator<Item = NetnsId> + '_ {
        self.members.iter().map(|m| m.id)
    }

    /// Whether katop's own namespace is among those asked for.
    pub fn reads_own(&self) -> bool {
        self.own_wanted
    }

    /// Whether more than katop's own namespace is read.
    pub fn reads_others(&self) -> bool {
        self.which != Which::Own
    }

    /// Caps the namespaces kept open (the rest are visited); for tests and benchmarks.
    pub fn set_open_max(&mut self, n: usize) {
        self.open_max = n;
    }

    /// What katop's own namespace is, named as the others are.
    pub fn own_info(&mut self, settings: KernelSettings) -> NsInfo {
        let host = self.own == self.host;
        let container = self.names.of_pid(std::process::id());
        let name: Arc<str> = if host {
            "host".into()
        } else {
            container
                .clone()
                .unwrap_or_else(|| format!("netns:{}", self.own.0).into())
        };
        NsInfo {
            id: self.own,
            name,
            container,
            settings,
            age: Duration::ZERO,
            host,
        }
    }

    /// Finds namespaces (new ones entered or marked for visits, gone ones let go: their
    /// sockets closed) and appends every member's sockets to `out`, dumping those due.
    /// Returns what each is, warnings, and how many namespaces asked for could not be read.
    pub fn poll(
        &mut self,
        dumps: &[DumpKind],
        out: &mut Vec<RawSock>,
    ) -> (Vec<NsInfo>, Vec<String>, usize) {
        self.polls = self.polls.wrapping_add(1);
        if self.which == Which::Own {
            return (Vec::new(), Vec::new(), 0);
        }
        let t = Instant::now();
        let found = netns::discover();
        self.reconcile(&found);
        self.last = NsStats {
            discover_cost: t.elapsed(),
            ..NsStats::default()
        };
        for i in self.schedule() {
            let t = Instant::now();
            let m = &mut self.members[i];
            // Gone since it was found (its process exited, its mount went): not a failure;
            // the next discovery lets it go.
            m.failure = m.dump(dumps).err().filter(|e| !gone(e));
            self.last.dumped += 1;
            self.last.dump_cost += t.elapsed();
        }
        if self.last.dumped > 0 {
            self.cost_each = self.last.dump_cost / self.last.dumped as u32;
        }
        if self.polls.is_multiple_of(REFRESH_EVERY) {
            for m in &mut self.members {
                m.refresh_settings();
            }
        }
        self.last.open = self.members.iter().filter(|m| m.open.is_some()).count();
        self.last.visited = self.members.len() - self.last.open;
        let now = Instant::now();
        let infos = self
            .members
            .iter()
            .map(|m| {
                out.extend(m.socks.iter().cloned());
                NsInfo {
                    id: m.id,
                    name: Arc::clone(&m.name),
                    container: m.container.clone(),
                    settings: m.settings,
                    age: m
                        .dumped_at
                        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                    host: m.host,
                }
            })
            .collect();
        let (warnings, unread) = self.unread();
        (infos, warnings, unread)
    }

    /// Namespaces asked for whose sockets katop could not read (not entered, or their last
    /// dump failed): one warning per cause, with how many.
    fn unread(&self) -> (Vec<String>, usize) {
        let mut by_cause: Vec<(String, NetnsId, usize)> = Vec::new();
        let failures = self.failed.iter().map(|f| (f.id, &f.why));
        let dumps = self
            .members
            .iter()
            .filter_map(|m| Some((m.id, m.failure.as_ref()?)));
        for (id, why) in failures.chain(dumps) {
            let cause = cause(why);
            match by_cause.iter_mut().find(|(c, _, _)| *c == cause) {
                Some(entry) => entry.2 += 1,
                None => by_cause.push((cause, id, 1)),
            }
        }
        let total = by_cause.iter().map(|(_, _, n)| n).sum();
        let warnings = by_cause
            .into_iter()
            .map(|(cause, id, n)| match n {
                1 => format!("network namespace {} not read: {cause}", id.0),
                n => format!("{n} network namespaces not read: {cause} (one is {})", id.0),
            })
            .collect();
        (warnings, total)
    }

    /// Which members to dump this poll, in order: the host's and the focused ones, then those
    /// past their age, then (while the budget lasts, judged by what dumps cost so far) those
    /// whose counts changed, then the rest, oldest first.
    fn schedule(&mut self) -> Vec<usize> {
        let focus = self.focus.lock().map(|f| f.clone()).unwrap_or_default();
        let now = Instant::now();
        let mut must = Vec::new();
        let mut may: Vec<(bool, Duration, usize)> = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            // A visited namespace's counts are not watched: it is quiet until its visit.
            let changed = m.count().is_some_and(|c| m.counted != Some(c));
            let age = m
                .dumped_at
                .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            let limit = if changed { MAX_AGE } else { QUIET_MAX_AGE };
            if m.host || focus.contains(&m.id) || age >= limit {
                must.push(i);
            } else {
                may.push((changed, age, i));
            }
        }
        // Changed first, then the oldest.
        may.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        // A dump costs about what the last ones did: as many as fit the budget.
        let each = self.cost_each.max(Duration::from_micros(100));
        let room = (BUDGET.as_micros() / each.as_micros()) as usize;
        must.extend(may.into_iter().take(room).map(|(_, _, i)| i));
        must
    }

    /// Takes in new namespaces (kept open while the budget allows, else visited), lets go of
    /// those no longer found, and tries again those that failed when their time comes.
    fn reconcile(&mut self, found: &[Found]) {
        let wanted = Wanted::of(&self.which);
        let (own, host) = (self.own, self.host);
        let names = &mut self.names;
        let wanted: Vec<&Found> = found
            .iter()
            .filter(|f| {
                f.id != own
                    && wanted.wants(f, false, f.id == host, || name_of(names, f, f.id == host).0)
            })
            .collect();
        self.members.retain(|m| wanted.iter().any(|f| f.id == m.id));
        let polls = self.polls;
        self.failed.retain(|x| wanted.iter().any(|f| f.id == x.id));
        for f in wanted {
            if let Some(m) = self.members.iter_mut().find(|m| m.id == f.id) {
                if m.handle != f.handle {
                    m.handle = f.handle.clone();
                    // Not kept open, the inode may now be another namespace's: name it again.
                    if m.open.is_none() {
                        (m.name, m.container) = name_of(&mut self.names, f, m.host);
                    }
                }
                continue;
            }
            let retry = self.failed.iter().position(|x| x.id == f.id);
            if retry.is_some_and(|i| self.failed[i].retry_at > polls) {
                continue;
            }
            let tries = retry.map_or(0, |i| self.failed.swap_remove(i).tries);
            let host = f.id == self.host;
            let (name, container) = name_of(&mut self.names, f, host);
            let mut m = Member::visited(f, name, container, host);
            let open = self.members.iter().filter(|m| m.open.is_some()).count();
            // Kept open while the budget allows; entering checks it can be entered at all.
            let entered = if open < self.open_max {
                m.open()
            } else {
                Ok(())
            };
            match entered {
                Ok(()) => self.members.push(m),
                Err(why) if gone(&why) => {}
                Err(why) => self.failed.push(Failed {
                    id: f.id,
                    why,
                    retry_at: polls.wrapping_add((1u32 << tries.min(5)).min(REFRESH_EVERY)),
                    tries: tries + 1,
                }),
            }
        }
        self.open_more();
    }

    /// Opens visited members while the budget has room (some kept open went away).
    fn open_more(&mut self) {
        let mut open = self.members.iter().filter(|m| m.open.is_some()).count();
        for m in &mut self.members {
            if open >= self.open_max {
                return;
            }
            if m.open.is_none() {
                if m.open().is_err() {
                    // Descriptors are short after all: the rest stay visited.
                    return;
                }
                open += 1;
            }
        }
    }
}

/// Whether `e` says the namespace went away between its discovery and its reading.
fn gone(e: &CollectError) -> bool {
    use rustix::io::Errno;
    match e {
        CollectError::NetnsGone(_) => true,
        CollectError::Netns { errno, .. } => {
            matches!(*errno, Errno::NOENT | Errno::SRCH | Errno::STALE)
        }
        _ => false,
    }
}

/// Why a namespace could not be read, without its id (so that many are counted as one cause),
/// and in words when the cause is the file limit.
fn cause(e: &CollectError) -> String {
    let errno = match e {
        CollectError::Netns { errno, .. } => Some(*errno),
        CollectError::Open(io) => io.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        _ => None,
    };
    if matches!(
        errno,
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
    ) {
        return format!("file limit {} reached", super::fds::limit());
    }
    match e {
        CollectError::Netns { what, errno, .. } => format!("{what}: {errno}"),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    fn failed(id: u32, errno: Errno) -> Failed {
        Failed {
            id: NetnsId(id),
            why: CollectError::Netns {
                id: id.into(),
                what: "open its namespace file".into(),
                errno,
            },
            retry_at: 0,
            tries: 1,
        }
    }

    #[test]
    fn unread_namespaces_are_counted_by_cause_and_the_file_limit_is_named() {
        let mut ns = Namespaces::new(Which::All, NetnsId(1));
        ns.failed = vec![
            failed(10, Errno::MFILE),
            failed(11, Errno::MFILE),
            failed(12, Errno::MFILE),
            failed(13, Errno::PERM),
            failed(14, Errno::PERM),
        ];
        let (warnings, unread) = ns.unread();
        assert_eq!(unread, 5);
        let limit = super::super::fds::limit();
        assert_eq!(
            warnings,
            vec![
                format!("3 network namespaces not read: file limit {limit} reached (one is 10)"),
                "2 network namespaces not read: open its namespace file: Operation not permitted (os error 1) (one is 13)"
                    .to_string(),
            ]
        );
    }
}
