//! The connection table: the latest snapshot plus what only history can tell (age, time in
//! state, byte rates), with keepalive status and stale reasons worked out once per poll.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashSet;

use crate::model::keepalive::{self, AtRisk, Countdown, Middlebox, Params};
use crate::model::services::ServiceId;
use crate::model::stale::{self, Keepalive, StaleSet, Unowned};
use crate::model::tcp_info::TcpInfo;
use crate::model::{
    services, Endpoint, Holder, Holders, KernelSettings, NetnsId, PollCost, Proto, RawSock,
    Snapshot, SockKey, SockState,
};

/// What entries' derived views need beside the socket: the poll's settings, when it was
/// taken, and the middleboxes in front of the peers.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub settings: KernelSettings,
    /// When the latest poll was applied: timer expiries count from it.
    pub polled_at: Option<Instant>,
    /// When it was taken, by the wall clock.
    pub polled_wall: Option<std::time::SystemTime>,
    /// Declared middleboxes (`--middlebox-timeout`, the config file).
    pub declared: Vec<Middlebox>,
    /// The declared ones plus the local conntrack table, when loaded.
    pub middleboxes: Vec<Middlebox>,
    /// Idle (or ownerless, or in `CLOSE_WAIT`) this long counts as stale.
    pub stale_after: Duration,
    /// Every holder of the sockets held by more than one fd.
    pub holders: Arc<Holders>,
    /// The namespaces read, beyond the host's, and where each is in that list.
    pub namespaces: Vec<crate::model::NsInfo>,
    ns_index: FxHashMap<NetnsId, usize>,
}

impl Ctx {
    /// The namespace `id`, if katop read it as one of several.
    pub fn namespace(&self, id: NetnsId) -> Option<&crate::model::NsInfo> {
        self.ns_index.get(&id).map(|&i| &self.namespaces[i])
    }

    /// The sysctls that govern sockets of namespace `id`: its own, else the host's.
    pub fn settings_for(&self, id: NetnsId) -> &KernelSettings {
        self.namespace(id).map_or(&self.settings, |n| &n.settings)
    }

    fn set_namespaces(&mut self, namespaces: Vec<crate::model::NsInfo>) {
        self.ns_index = namespaces
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i))
            .collect();
        self.namespaces = namespaces;
    }
}

impl Ctx {
    /// A poll's context: its settings, holders and namespaces, and when it was applied.
    fn take(
        &mut self,
        settings: KernelSettings,
        holders: Arc<Holders>,
        namespaces: Vec<crate::model::NsInfo>,
        (now, wall): (Instant, std::time::SystemTime),
    ) {
        if self.settings != settings || self.polled_at.is_none() {
            self.settings = settings;
            self.update_middleboxes();
        }
        self.polled_at = Some(now);
        self.polled_wall = Some(wall);
        self.holders = holders;
        self.set_namespaces(namespaces);
    }

    fn update_middleboxes(&mut self) {
        self.middleboxes.clone_from(&self.declared);
        if let Some(s) = self.settings.conntrack_established_s {
            self.middleboxes.push(Middlebox {
                name: "the local conntrack table".into(),
                dest: None,
                timeout_s: s,
                spec: "net.netfilter.nf_conntrack_tcp_timeout_established".into(),
            });
        }
    }
}

/// What the model derives for one socket; kept beside the snapshot's sockets, not copied
/// into them, so a poll hands its socket vector to the table without moving a byte of it.
#[derive(Debug, Clone, Copy)]
pub struct Derived {
    /// When katop first saw this socket (its age as observed), ms after the table's epoch.
    first_seen_ms: u32,
    /// When katop first saw it in its current state, ms after the table's epoch.
    state_since_ms: u32,
    /// Bytes/s received and sent (acknowledged) since the previous poll; NaN on first sight
    /// (4 bytes, not an 8-byte `Option`: there is one of these per socket).
    rate_in: f32,
    rate_out: f32,
    service: ServiceId,
    pub keepalive: Option<Keepalive>,
    pub stale: StaleSet,
}

impl Derived {
    /// Bytes/s received since the previous poll; `None` on first sight.
    pub fn rate_in(&self) -> Option<f32> {
        (!self.rate_in.is_nan()).then_some(self.rate_in)
    }

    /// Bytes/s sent and acknowledged since the previous poll; `None` on first sight.
    pub fn rate_out(&self) -> Option<f32> {
        (!self.rate_out.is_nan()).then_some(self.rate_out)
    }

    /// The well-known service at either end.
    pub fn service(&self) -> Option<&'static str> {
        self.service.name()
    }
}

/// One socket in the model: the kernel's view, borrowed from the table, and what katop derived
/// (its fields read through: `entry.stale`, `entry.keepalive`, …).
#[derive(Debug, Clone, Copy)]
pub struct SockEntry<'a> {
    pub sock: &'a RawSock,
    pub derived: Derived,
    /// The table's first poll: `Derived` keeps times as 4-byte offsets from it.
    epoch: Instant,
    pub ctx: &'a Ctx,
    /// The socket at the other end, when it is on this host.
    peer: Option<&'a RawSock>,
}

impl std::ops::Deref for SockEntry<'_> {
    type Target = Derived;

    fn deref(&self) -> &Derived {
        &self.derived
    }
}

impl<'a> SockEntry<'a> {
    fn new(sock: &'a RawSock, d: &Derived, epoch: Instant, ctx: &'a Ctx) -> Self {
        SockEntry {
            sock,
            derived: *d,
            epoch,
            ctx,
            peer: None,
        }
    }

    /// When katop first saw this socket.
    pub fn first_seen(&self) -> Instant {
        self.epoch + Duration::from_millis(self.derived.first_seen_ms.into())
    }

    /// When katop first saw it in its current state.
    pub fn state_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.derived.state_since_ms.into())
    }

    /// A view of a socket the table no longer holds (e.g. one that just closed): what can be
    /// derived without history.
    pub fn bare(sock: &'a RawSock, now: Instant, ctx: &'a Ctx) -> Self {
        let derived = Derived {
            first_seen_ms: 0,
            state_since_ms: 0,
            rate_in: f32::NAN,
            rate_out: f32::NAN,
            service: services::of(&sock.local, &sock.remote),
            keepalive: Keepalive::of(sock),
            stale: StaleSet::default(),
        };
        SockEntry {
            sock,
            derived,
            epoch: now,
            ctx,
            peer: None,
        }
    }

    /// The keepalive settings that govern it: read from the socket, or the sysctls.
    pub fn params(&self) -> Option<Params> {
        Params::of(self.sock, self.ctx.settings_for(self.sock.netns))
    }

    /// If the peer went silent, when the kernel would notice, counted down to `now`.
    pub fn detect(&self, now: Instant) -> Option<Countdown> {
        let settings = self.ctx.settings_for(self.sock.netns);
        let d = keepalive::dead_peer_detect(self.sock, &self.params()?, settings)?;
        let since_poll = self
            .ctx
            .polled_at
            .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
        Some(d.after(since_poll))
    }

    /// Why katop refuses to act on it whatever the filter says, if it does: a connection not
    /// yet accepted by its listener is healthy for the moments before `accept()` (the cookie
    /// stays the same once accepted), so one younger than `--stale-after` is never touched.
    pub fn protected(&self) -> Option<String> {
        if !Unowned::applies(self.sock) {
            return None;
        }
        let age = Unowned::kernel_age(self.sock)?;
        (age < self.ctx.stale_after).then(|| {
            format!(
                "not yet accepted by its application ({} old, younger than --stale-after {}): \
                 it may be accepted any moment, and killing it would reset a healthy connection",
                crate::model::duration::format_ms_short(age.as_millis() as u64),
                crate::model::duration::format_secs(self.ctx.stale_after.as_secs())
            )
        })
    }

    /// Every fd that refers to it, when more than one does (the first is `sock.owner`).
    pub fn holders(&self) -> Option<&'a [Holder]> {
        self.ctx.holders.get(&self.sock.inode).map(Vec::as_slice)
    }

    /// How many processes besides the first hold it.
    pub fn other_processes(&self) -> usize {
        self.holders().map_or(0, |h| {
            let mut pids: Vec<u32> = h.iter().map(|h| h.process.pid).collect();
            pids.dedup();
            pids.len().saturating_sub(1)
        })
    }

    /// The container the socket belongs to: its owner's (a container sharing the host's
    /// namespace is still named), else its namespace's.
    pub fn container(&self) -> Option<&'a str> {
        self.sock
            .owner
            .process()
            .and_then(|p| p.container.as_deref())
            .or_else(|| self.ctx.namespace(self.sock.netns)?.container.as_deref())
    }

    /// The name of the socket's network namespace, when katop read several.
    pub fn netns_name(&self) -> Option<&'a str> {
        self.ctx.namespace(self.sock.netns).map(|n| &*n.name)
    }

    /// Why a middlebox has probably forgotten it, if it has.
    pub fn at_risk(&self) -> Option<AtRisk<'a>> {
        let settings = self.ctx.settings_for(self.sock.netns);
        keepalive::at_risk(self.sock, settings, &self.ctx.middleboxes)
    }

    /// The socket at the other end, when it is on this host too.
    pub fn peer(&self) -> Option<crate::model::Peer> {
        self.peer.map(crate::model::Peer::of)
    }

    pub fn key(&self) -> SockKey {
        self.sock.key()
    }

    /// ms since data moved either way; TCP connections only (not listeners).
    pub fn idle_ms(&self) -> Option<u32> {
        if self.sock.state == SockState::Listen {
            return None;
        }
        self.sock.tcp_info.as_ref()?.idle_ms()
    }

    /// Unanswered keepalive probes, when a keepalive timer is what the kernel reports.
    pub fn keepalive_probes(&self) -> Option<u8> {
        self.sock
            .timer
            .filter(|t| t.kind == crate::model::TimerKind::Keepalive)
            .map(|t| t.retrans)
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.first_seen())
    }
}

/// What one socket carries from a poll into the next.
#[derive(Debug, Clone, Copy)]
struct Carry {
    netns: NetnsId,
    state: SockState,
    first_seen_ms: u32,
    state_since_ms: u32,
    bytes_acked: Option<u64>,
    bytes_received: Option<u64>,
}

impl Carry {
    fn of(s: &RawSock, d: &Derived) -> Carry {
        let info = s.tcp_info.as_ref();
        Carry {
            netns: s.netns,
            state: s.state,
            first_seen_ms: d.first_seen_ms,
            state_since_ms: d.state_since_ms,
            bytes_acked: info.and_then(TcpInfo::bytes_acked),
            bytes_received: info.and_then(TcpInfo::bytes_received),
        }
    }
}

/// Cookie → position, after dropping repeats: a dump can list a socket twice when it moves
/// between hash buckets mid-dump; the first is kept.
fn dedup_by_cookie(socks: &mut Vec<RawSock>) -> FxHashMap<u64, u32> {
    let mut index = FxHashMap::with_capacity_and_hasher(socks.len(), rustc_hash::FxBuildHasher);
    let mut dups = Vec::new();
    for (i, s) in socks.iter().enumerate() {
        if index.insert(s.cookie.0, i as u32).is_some() {
            dups.push(i);
        }
    }
    if !dups.is_empty() {
        let mut n = 0;
        socks.retain(|_| {
            n += 1;
            dups.binary_search(&(n - 1)).is_err()
        });
        index.clear();
        index.extend(
            socks
                .iter()
                .enumerate()
                .map(|(i, s)| (s.cookie.0, i as u32)),
        );
    }
    index
}

/// Every TCP listener's namespace, address and port.
fn listening(socks: &[RawSock]) -> FxHashSet<(NetnsId, IpAddr, u16)> {
    socks
        .iter()
        .filter(|s| s.proto == Proto::Tcp && s.state == SockState::Listen)
        .filter_map(|s| Some((s.netns, s.local.ip()?, s.local.port()?)))
        .collect()
}

/// Whether a listener takes connections at `sock`'s local end: its address, or a wildcard
/// of either family (a dual-stack `[::]` listener's IPv4 connections are IPv4-mapped).
fn has_listener(listeners: &FxHashSet<(NetnsId, IpAddr, u16)>, sock: &RawSock) -> bool {
    let Endpoint::Inet(local) = &sock.local else {
        return false;
    };
    let (ns, port) = (sock.netns, local.port());
    let any4 = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let any6 = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    let ip = local.ip();
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
    };
    [Some(ip), mapped, Some(any4), Some(any6)]
        .into_iter()
        .flatten()
        .any(|a| listeners.contains(&(ns, a, port)))
}

/// What `ConnTable::apply` hands back: the previous poll's sockets and the indices (into
/// them) of those that are gone.
#[derive(Debug)]
pub struct Applied {
    pub previous: Vec<RawSock>,
    pub gone: Vec<u32>,
}

/// All sockets of the latest poll, keyed by cookie.
#[derive(Debug, Clone)]
pub struct ConnTable {
    socks: Vec<RawSock>,
    derived: Vec<Derived>,
    /// Cookie → position. Cookies are unique host-wide (one kernel counter for every
    /// namespace), so the cookie alone keys it: 12 bytes a socket, not 24; `get` still checks
    /// the namespace.
    index: FxHashMap<u64, u32>,
    /// Cookie → when katop first saw a connected TCP socket with no holder (ms after the
    /// epoch); a few entries, not one per socket.
    ownerless_since: FxHashMap<u64, u32>,
    /// Each socket's peer on this host (index into `socks`, [`peers::NONE`] for none); empty
    /// when no socket has one.
    peer_of: Vec<u32>,
    /// Whether to pair local connections at all (the exporter does not show them).
    pairs: bool,
    /// What the sockets carry into the next poll, when the table let them go ([`Self::retire`]).
    retired: Option<FxHashMap<u64, Carry>>,
    pub netns: NetnsId,
    pub ctx: Ctx,
    pub interfaces: HashMap<u32, Box<str>>,
    pub cost: PollCost,
    pub warnings: Vec<String>,
    last_poll: Option<Instant>,
    /// The first poll's time; entries keep times as ms after it.
    epoch: Option<Instant>,
}

impl ConnTable {
    pub fn new(stale_after: Duration) -> Self {
        ConnTable {
            socks: Vec::new(),
            derived: Vec::new(),
            index: FxHashMap::default(),
            ownerless_since: FxHashMap::default(),
            retired: None,
            peer_of: Vec::new(),
            pairs: true,
            netns: NetnsId::default(),
            ctx: Ctx {
                stale_after,
                ..Ctx::default()
            },
            interfaces: HashMap::new(),
            cost: PollCost::default(),
            warnings: Vec::new(),
            last_poll: None,
            epoch: None,
        }
    }

    /// Whether to find each local connection's other end (on by default; a view that never
    /// shows them can spare the work).
    pub fn set_peers(&mut self, on: bool) {
        self.pairs = on;
        if !on {
            self.peer_of = Vec::new();
        }
    }

    pub fn stale_after(&self) -> Duration {
        self.ctx.stale_after
    }

    /// Declares the middleboxes in front of the peers (for the `at-risk` rule).
    pub fn set_middleboxes(&mut self, middleboxes: Vec<Middlebox>) {
        self.ctx.declared = middleboxes;
        self.ctx.update_middleboxes();
    }

    pub fn settings(&self) -> &KernelSettings {
        &self.ctx.settings
    }

    /// Replaces the table with `snap`, carrying history over for sockets seen before. Returns
    /// the previous poll's sockets and which of them left: the caller may look at those, then
    /// clear the vector and hand it to the next poll (two buffers take turns instead of a new
    /// 20+ MiB vector every second).
    pub fn apply(&mut self, snap: Snapshot, now: Instant) -> Applied {
        let dt = self
            .last_poll
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        let epoch = *self.epoch.get_or_insert(now);
        // 4-byte stamps last 49 days; an older socket's age saturates there.
        let now_ms =
            u32::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u32::MAX);
        let mut socks = snap.socks;
        let index = dedup_by_cookie(&mut socks);
        self.ctx.take(
            snap.settings,
            snap.holders,
            snap.namespaces,
            (now, snap.wall),
        );
        let mut listeners: Option<FxHashSet<(NetnsId, IpAddr, u16)>> = None;
        let mut ownerless_since = FxHashMap::default();
        let mut derived = Vec::with_capacity(socks.len());
        // Where each of the last poll's sockets is now, when local pairs are to be carried.
        let carry_pairs = self.pairs && !self.peer_of.is_empty();
        let mut now_at: Vec<u32> = if carry_pairs {
            vec![crate::model::peers::NONE; self.socks.len()]
        } else {
            Vec::new()
        };
        let mut carried = vec![false; self.socks.len()];
        let retired = std::mem::take(&mut self.retired);
        for sock in &socks {
            let prev: Option<Carry> = match &retired {
                Some(history) => history.get(&sock.cookie.0).copied(),
                None => self
                    .index
                    .get(&sock.cookie.0)
                    .map(|&i| i as usize)
                    .filter(|&i| self.socks[i].netns == sock.netns)
                    .map(|i| {
                        carried[i] = true;
                        if carry_pairs {
                            now_at[i] = derived.len() as u32;
                        }
                        Carry::of(&self.socks[i], &self.derived[i])
                    }),
            }
            .filter(|c| c.netns == sock.netns);
            let first_seen_ms = prev.map_or(now_ms, |c| c.first_seen_ms);
            let state_since_ms = match prev {
                Some(c) if c.state == sock.state => c.state_since_ms,
                _ => now_ms,
            };
            let rate = |cur: Option<u64>, old: Option<u64>| match (cur, old, dt) {
                (Some(c), Some(o), Some(dt)) if dt > 0.0 => {
                    Some((c.saturating_sub(o) as f64 / dt) as f32)
                }
                _ => None,
            };
            let info = sock.tcp_info.as_ref();
            // Time in state counts from first sight only when katop saw the state change.
            let in_state = match prev {
                Some(_) => Duration::from_millis(now_ms.saturating_sub(state_since_ms).into()),
                None => Duration::ZERO,
            };
            let unowned = Unowned::applies(sock).then(|| {
                let since = *self.ownerless_since.get(&sock.cookie.0).unwrap_or(&now_ms);
                ownerless_since.insert(sock.cookie.0, since);
                let watched = Duration::from_millis(now_ms.saturating_sub(since).into());
                let queued = sock.inode.0 == 0
                    && has_listener(listeners.get_or_insert_with(|| listening(&socks)), sock);
                Unowned {
                    waited: Unowned::kernel_age(sock).unwrap_or(watched),
                    queued,
                }
            });
            derived.push(Derived {
                first_seen_ms,
                state_since_ms,
                rate_in: rate(
                    info.and_then(TcpInfo::bytes_received),
                    prev.and_then(|c| c.bytes_received),
                )
                .unwrap_or(f32::NAN),
                rate_out: rate(
                    info.and_then(TcpInfo::bytes_acked),
                    prev.and_then(|c| c.bytes_acked),
                )
                .unwrap_or(f32::NAN),
                service: services::of(&sock.local, &sock.remote),
                keepalive: Keepalive::of(sock),
                stale: self.stale(sock, in_state, unowned),
            });
        }
        self.ownerless_since = ownerless_since;
        if self.pairs {
            let known = self.carried_pairs(&now_at, socks.len());
            self.peer_of = crate::model::peers::pair(&socks, known);
        }
        let previous = std::mem::replace(&mut self.socks, socks);
        self.derived = derived;
        self.index = index;
        self.netns = snap.netns;
        self.interfaces = snap.interfaces;
        self.cost = snap.cost;
        self.warnings = snap.warnings;
        self.last_poll = Some(now);
        let gone = (0..carried.len() as u32)
            .filter(|&i| !carried[i as usize])
            .collect();
        Applied { previous, gone }
    }

    /// The last poll's local pairs whose two sockets are both still here, at their new places
    /// (`now_at`: each old socket's new index). Empty when there were none.
    fn carried_pairs(&self, now_at: &[u32], len: usize) -> Vec<u32> {
        use crate::model::peers::NONE;
        if now_at.is_empty() {
            return Vec::new();
        }
        let mut known = vec![NONE; len];
        for (old, &new) in now_at.iter().enumerate() {
            let peer = self.peer_of[old];
            if new == NONE || peer == NONE {
                continue;
            }
            if let Some(&peer_now) = now_at.get(peer as usize).filter(|&&p| p != NONE) {
                known[new as usize] = peer_now;
            }
        }
        known
    }

    /// The stale rules, with `at-risk` when middleboxes are declared.
    fn stale(&self, sock: &RawSock, in_state: Duration, unowned: Option<Unowned>) -> StaleSet {
        let mut set = stale::reasons(sock, in_state, unowned, self.ctx.stale_after);
        let settings = self.ctx.settings_for(sock.netns);
        if keepalive::at_risk(sock, settings, &self.ctx.middleboxes).is_some() {
            set.insert(stale::StaleReason::AtRisk);
        }
        set
    }

    /// Forgets the sockets but what the next `apply` carries over (first sight, state and its
    /// start, byte counters): for a caller that does not look at the table between polls (the
    /// exporter), so a poll's new sockets never sit beside the old ones (a few bytes a socket
    /// instead of a whole `RawSock`).
    pub fn retire(&mut self) {
        let history = self
            .socks
            .iter()
            .zip(&self.derived)
            .map(|(s, d)| (s.cookie.0, Carry::of(s, d)))
            .collect();
        self.retired = Some(history);
        self.peer_of = Vec::new();
        self.socks = Vec::new();
        self.derived = Vec::new();
        self.index = FxHashMap::default();
    }

    /// Entries exist only after a first `apply`, which sets the epoch.
    fn epoch(&self) -> Instant {
        self.epoch
            .expect("a table with entries has had a first apply")
    }

    /// Every socket, in dump order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = SockEntry<'_>> + '_ {
        (0..self.socks.len()).map(|i| self.entry(i))
    }

    /// The socket at `i` (0..len), in dump order.
    pub fn entry(&self, i: usize) -> SockEntry<'_> {
        let mut e = SockEntry::new(&self.socks[i], &self.derived[i], self.epoch(), &self.ctx);
        e.peer = self
            .peer_of
            .get(i)
            .filter(|&&p| p != crate::model::peers::NONE)
            .map(|&p| &self.socks[p as usize]);
        e
    }

    pub fn get(&self, key: &SockKey) -> Option<SockEntry<'_>> {
        let i = *self.index.get(&key.cookie.0)? as usize;
        (self.socks[i].netns == key.netns).then(|| self.entry(i))
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
mod size {
    /// One per socket beside the snapshot: its size is a memory budget at 100k+ sockets.
    #[test]
    fn derived_stays_20_bytes() {
        assert_eq!(std::mem::size_of::<super::Derived>(), 20);
    }
}
