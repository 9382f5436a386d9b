//! The network namespaces a collector reads, polled on a schedule: a TCP `sock_diag` dump in
//! any namespace walks the host's whole hash table (~14 ms per family beside 100k host
//! sockets), so fifty containers dumped naively every second would cost well over a second a
//! poll. Here the host's namespace and the ones the operator focuses on are dumped every poll;
//! the others take turns under a per-poll time budget, those whose socket counts changed
//! (`sockstat`) first, each at least every [`MAX_AGE`] while it changes and every
//! [`QUIET_MAX_AGE`] while it is quiet; a protocol and family a namespace has no socket of
//! costs no dump at all. Between its dumps a namespace's sockets are the last ones read, and
//! its age (in the header, and `NsInfo::age`) says so.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::containers::{self, Names};
use super::netns::{self, Counts, Found};
use super::sock_diag::{DiagSocket, DumpKind};
use super::wire::DumpSink;
use crate::error::CollectError;
use crate::model::{KernelSettings, NetnsId, NsInfo, RawSock};

/// The longest a namespace's data may get, while its socket counts change, before it is dumped
/// whatever the budget.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// The same for a namespace whose socket counts have not changed since its last dump.
pub const QUIET_MAX_AGE: Duration = Duration::from_secs(15);
/// Time per poll for dumping namespaces other than the host's and the focused ones.
pub const BUDGET: Duration = Duration::from_millis(30);
/// Polls between two reads of a namespace's sysctls, and between retries of one katop could
/// not enter.
const REFRESH_EVERY: u32 = 30;

/// Which network namespaces to read (`--netns`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Which {
    /// katop's own only.
    #[default]
    Own,
    /// Every namespace on the host.
    All,
    /// These: `host`, a name (`ip netns`, container), a pid (its namespace) or an inode.
    Some(Vec<String>),
}

/// Namespaces the operator is looking at (a filter on them, the selected socket's): dumped
/// every poll. Shared with the UI.
pub type Focus = Arc<Mutex<Vec<NetnsId>>>;

/// One namespace read: held open, entered once, dumped on the schedule.
struct Member {
    id: NetnsId,
    /// Holds the namespace while katop reads it.
    held: OwnedFd,
    diag: DiagSocket,
    counts: Counts,
    settings: KernelSettings,
    name: Arc<str>,
    container: Option<Arc<str>>,
    host: bool,
    /// Its sockets as last dumped, and its socket counts then.
    socks: Vec<RawSock>,
    dumped_at: Option<Instant>,
    counted: Option<netns::InUse>,
}

/// What the last poll spent on namespaces beyond katop's own (for the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsStats {
    /// Namespaces dumped, and the time their dumps took.
    pub dumped: usize,
    pub dump_cost: Duration,
    /// Time spent finding namespaces.
    pub discover_cost: Duration,
}

/// The namespaces of one collector beyond its own.
pub struct Namespaces {
    pub last: NsStats,
    which: Which,
    own: NetnsId,
    host: NetnsId,
    members: Vec<Member>,
    /// Namespaces katop could not enter, and the poll it may try again.
    failed: Vec<(NetnsId, u32, String)>,
    names: Names,
    pub focus: Focus,
    polls: u32,
    /// What one namespace's dump cost lately: how many fit the budget.
    cost_each: Duration,
}

impl Namespaces {
    pub fn new(which: Which, own: NetnsId) -> Self {
        let host = rustix::fs::stat("/proc/1/ns/net").map_or(own, |st| NetnsId(st.st_ino));
        Namespaces {
            last: NsStats::default(),
            which,
            own,
            host,
            members: Vec::new(),
            failed: Vec::new(),
            names: Names::default(),
            focus: Focus::default(),
            polls: 0,
            cost_each: Duration::ZERO,
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
        match &self.which {
            Which::Own | Which::All => true,
            Which::Some(list) => list.iter().any(|w| {
                (w == "host" && self.own == self.host)
                    || w == "self"
                    || *w == self.own.0.to_string()
            }),
        }
    }

    /// Whether more than katop's own namespace is read.
    pub fn reads_others(&self) -> bool {
        self.which != Which::Own
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

    /// Finds namespaces (new ones entered, gone ones let go: their fd and socket closed) and
    /// appends every member's sockets to `out`, dumping those due. Returns what each is, and
    /// warnings (namespaces that could not be entered or dumped).
    pub fn poll(
        &mut self,
        dumps: &[DumpKind],
        out: &mut Vec<RawSock>,
    ) -> (Vec<NsInfo>, Vec<String>) {
        self.polls = self.polls.wrapping_add(1);
        if self.which == Which::Own {
            return (Vec::new(), Vec::new());
        }
        let t = Instant::now();
        let found = netns::discover();
        self.reconcile(&found);
        self.last = NsStats {
            discover_cost: t.elapsed(),
            ..NsStats::default()
        };
        let mut warnings: Vec<String> = self
            .failed
            .iter()
            .map(|(id, _, why)| format!("network namespace {}: {why}", id.0))
            .collect();
        for i in self.schedule() {
            let t = Instant::now();
            if let Err(e) = dump(&mut self.members[i], dumps) {
                warnings.push(e.to_string());
            }
            self.last.dumped += 1;
            self.last.dump_cost += t.elapsed();
        }
        if self.last.dumped > 0 {
            self.cost_each = self.last.dump_cost / self.last.dumped as u32;
        }
        if self.polls % REFRESH_EVERY == 0 {
            for m in &mut self.members {
                if let Some(s) = netns::read_settings(&m.held, m.id) {
                    m.settings = s;
                }
            }
        }
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
        warnings.truncate(5);
        (infos, warnings)
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
            let counts = m.counts.read();
            let changed = m.counted != Some(counts);
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

    /// Enters new namespaces and lets go of those no longer found.
    fn reconcile(&mut self, found: &[Found]) {
        let wanted: Vec<&Found> = found
            .iter()
            .filter(|f| f.id != self.own && self.wants(f))
            .collect();
        self.members.retain(|m| wanted.iter().any(|f| f.id == m.id));
        let polls = self.polls;
        self.failed
            .retain(|(id, retry, _)| *retry > polls && wanted.iter().any(|f| f.id == *id));
        for f in wanted {
            if self.members.iter().any(|m| m.id == f.id) || self.failed.iter().any(|x| x.0 == f.id)
            {
                continue;
            }
            match self.enter(f) {
                Ok(m) => self.members.push(m),
                Err(e) => {
                    self.failed
                        .push((f.id, polls.wrapping_add(REFRESH_EVERY), e.to_string()));
                }
            }
        }
    }

    /// Whether `--netns` asks for this namespace.
    fn wants(&self, f: &Found) -> bool {
        match &self.which {
            Which::Own => false,
            Which::All => true,
            Which::Some(list) => list.iter().any(|w| {
                (w == "host" && f.id == self.host)
                    || w.parse::<u64>()
                        .is_ok_and(|n| n == f.id.0 || f.pids.contains(&(n as u32)))
                    || f.mount_name.as_deref() == Some(w.as_str())
            }),
        }
    }

    fn enter(&mut self, f: &Found) -> Result<Member, CollectError> {
        let held = netns::hold(f.id, &f.handle)?;
        let inside = netns::enter(&held, f.id)?;
        let container = f.pids.iter().find_map(|&p| self.names.of_pid(p));
        let unit = || {
            f.pids
                .iter()
                .find_map(|&p| containers::cgroup_of(p))
                .and_then(|c| containers::systemd_unit(&c).map(|u| format!("systemd:{u}")))
        };
        let host = f.id == self.host;
        let name: Arc<str> = if host {
            "host".into()
        } else if let Some(c) = &container {
            Arc::clone(c)
        } else if let Some(n) = f.mount_name.clone().or_else(unit) {
            n.into()
        } else {
            format!("netns:{}", f.id.0).into()
        };
        Ok(Member {
            id: f.id,
            held,
            diag: inside.diag,
            counts: inside.counts,
            settings: inside.settings,
            name,
            container,
            host,
            socks: Vec::new(),
            dumped_at: None,
            counted: None,
        })
    }
}

/// Dumps one namespace, skipping protocols it has no socket of.
fn dump(m: &mut Member, dumps: &[DumpKind]) -> Result<(), CollectError> {
    let in_use = m.counts.read();
    m.counted = Some(in_use);
    let mut sink = DumpSink {
        socks: std::mem::take(&mut m.socks),
        ..DumpSink::default()
    };
    sink.socks.clear();
    let result = dumps
        .iter()
        .filter(|k| in_use.may_have(k.proto, k.family))
        .try_for_each(|&kind| m.diag.dump(kind, m.id, &mut sink));
    m.socks = sink.socks;
    m.dumped_at = Some(Instant::now());
    result
}
