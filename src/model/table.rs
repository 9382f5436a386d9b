//! The connection table: the latest snapshot plus what only history can tell (age, time in
//! state, byte rates), with keepalive status and stale reasons worked out once per poll.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::ends::join::{self, Bytes, Departures, Ended, Gone};
use crate::model::ends::LastSeen;
pub use crate::model::entry::{Ctx, Derived, SockEntry};
use crate::model::keepalive::{self, Middlebox};
use crate::model::stale::{self, Keepalive, StaleSet, Unowned};
use crate::model::{
    services, Endpoint, KernelSettings, NetnsId, PollCost, Proto, RawSock, Snapshot, SockKey,
    SockState,
};

/// What one socket carries from a poll into the next.
#[derive(Debug, Clone, Copy)]
struct Carry {
    netns: NetnsId,
    state: SockState,
    first_seen_ms: u32,
    state_since_ms: u32,
    bytes: Bytes,
    /// What its end would be inferred from; `None` for a socket whose leaving ends no
    /// connection.
    last: Option<LastSeen>,
    /// Its 4-tuple's digest, to meet an end the tracepoints told by tuple.
    tuple_hash: u32,
    stale: StaleSet,
}

impl Carry {
    fn of(s: &RawSock, d: &Derived) -> Carry {
        Carry {
            netns: s.netns,
            state: s.state,
            first_seen_ms: d.first_seen_ms,
            state_since_ms: d.state_since_ms,
            bytes: Bytes::of(s),
            last: join::is_connection(s).then(|| join::last_seen(s)),
            tuple_hash: join::tuple_of(s).map_or(0, |t| t.hash32()),
            stale: d.stale,
        }
    }
}

/// Every TCP listener's namespace, address and port.
fn listening(socks: &[RawSock]) -> FxHashSet<(NetnsId, IpAddr, u16)> {
    socks
        .iter()
        .filter(|s| s.proto == Proto::Tcp && s.state == SockState::Listen)
        .filter_map(|s| Some((s.netns, s.local.ip()?, s.local.port()?)))
        .collect()
}

/// Ports a known server process listens on, by namespace: `postgres` on 20432 serves
/// postgres whatever the port table says.
type Served = FxHashMap<(NetnsId, u16), services::ServiceId>;

fn served_by_process(socks: &[RawSock]) -> Served {
    socks
        .iter()
        .filter(|s| s.proto == Proto::Tcp && s.state == SockState::Listen)
        .filter_map(|s| {
            let service = services::by_process(&s.owner.process()?.name);
            Some(((s.netns, s.local.port()?), service)).filter(|_| service.is_some())
        })
        .collect()
}

/// A connection's service: the config file's name for either port first, then a server
/// process listening on its local port (its server side) or, for a client of a server on this
/// host, on its remote port; else the port table's.
fn service_of(sock: &RawSock, served: &Served) -> services::ServiceId {
    let by_port = services::of(&sock.local, &sock.remote);
    if served.is_empty() {
        return by_port;
    }
    let (local, remote) = (sock.local.port(), sock.remote.port());
    if [local, remote]
        .into_iter()
        .flatten()
        .any(services::is_configured)
    {
        return by_port;
    }
    let on_this_host = match (&sock.local, &sock.remote) {
        (Endpoint::Inet(l), Endpoint::Inet(r)) => r.ip().is_loopback() || l.ip() == r.ip(),
        _ => false,
    };
    local
        .and_then(|p| served.get(&(sock.netns, p)))
        .or_else(|| {
            remote
                .filter(|_| on_this_host)
                .and_then(|p| served.get(&(sock.netns, p)))
        })
        .copied()
        .unwrap_or(by_port)
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

/// What finishing a poll hands back: the sockets that left, and the connections that ended,
/// with why.
#[derive(Debug, Default)]
pub struct Applied {
    /// The snapshot's vector, emptied, for the next poll to fill (from [`ConnTable::apply`]).
    pub spare: Vec<RawSock>,
    /// The sockets that left, in `gone`'s order (none where the table was retired).
    pub departed: Vec<RawSock>,
    /// Their places in the last poll, in order.
    pub gone: Vec<u32>,
    pub ended: Vec<Ended>,
    /// Dead connections no longer dead (their process let go), with the end told for each.
    pub released: Vec<(u64, crate::model::entry::HeldEnd)>,
}

/// All sockets of the latest poll, keyed by cookie.
#[derive(Debug, Clone)]
pub struct ConnTable {
    socks: Vec<RawSock>,
    derived: Vec<Derived>,
    /// Cookie → position. Cookies are unique host-wide (one kernel counter for every
    /// namespace), so the cookie alone keys it; `get` still checks the namespace.
    index: crate::model::place_index::PlaceIndex,
    /// Cookie → when katop first saw a connected TCP socket with no holder (ms after the
    /// epoch); a few entries, not one per socket.
    ownerless_since: FxHashMap<u64, u32>,
    /// Each socket's peer on this host (index into `socks`, [`peers::NONE`] for none); empty
    /// when no socket has one.
    peer_of: Vec<u32>,
    /// Whether to pair local connections at all (the exporter does not show them).
    pairs: bool,
    /// What the sockets carry into the next poll, when the table let them go ([`Self::retire`]).
    retired: Option<retiring::Retired>,
    /// Connections that left, on their way to an end with a cause.
    departures: Departures,
    pub netns: NetnsId,
    pub ctx: Ctx,
    pub interfaces: HashMap<u32, Box<str>>,
    pub cost: PollCost,
    pub warnings: Vec<String>,
    /// Sockets whose keepalive options the last poll found changed.
    pub opts_changed: Vec<super::Cookie>,
    /// Namespaces asked for whose sockets the last poll could not read.
    pub unread_namespaces: usize,
    last_poll: Option<Instant>,
    /// The poll under way, between [`Self::begin`] and [`Self::apply`].
    absorbing: Option<absorbing::Absorbing>,
    /// Connections a poll given up found dead ([`Self::give_up`]), told with the next.
    dead_since_given_up: Vec<Gone>,
    /// The first poll's time; entries keep times as ms after it.
    epoch: Option<Instant>,
}

impl ConnTable {
    pub fn new(stale_after: Duration) -> Self {
        ConnTable {
            socks: Vec::new(),
            derived: Vec::new(),
            index: crate::model::place_index::PlaceIndex::default(),
            ownerless_since: FxHashMap::default(),
            retired: None,
            departures: Departures::default(),
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
            opts_changed: Vec::new(),
            unread_namespaces: 0,
            last_poll: None,
            absorbing: None,
            dead_since_given_up: Vec::new(),
            epoch: None,
        }
    }

    /// An empty table that judges as this one does (stale threshold, middleboxes, peers): for
    /// another source of snapshots, such as the store.
    #[must_use]
    pub fn empty_like(&self) -> ConnTable {
        let mut t = ConnTable::new(self.ctx.stale_after);
        t.set_middleboxes(self.ctx.declared.clone());
        t.set_peers(self.pairs);
        t
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

    /// Replaces the table with `snap`, carrying history over for sockets seen before. A poll
    /// [`Self::begin`]s (unless its first sockets were absorbed already, as they came), takes
    /// the snapshot's sockets (the rest of them, streamed) and finishes: it absorbs the dead
    /// connections the poll found held, lets go of the last poll's sockets none claimed, works
    /// out what needs the whole poll (services, keepalive, stale reasons, local pairs), and
    /// tells which connections ended, with why. Hands back the snapshot's vector, emptied, for
    /// the caller's next poll to fill.
    pub fn apply(&mut self, mut snap: Snapshot, now: Instant) -> Applied {
        if self.absorbing.is_none() {
            let traced: Vec<u64> = snap
                .ends
                .iter()
                .flatten()
                .filter_map(|t| t.cookie)
                .collect();
            self.begin(now, snap.wall, &traced);
        }
        let spare = self.absorb_vec(std::mem::take(&mut snap.socks));
        let mut applied = self.finish(snap);
        applied.spare = spare;
        applied
    }

    fn finish(&mut self, mut snap: Snapshot) -> Applied {
        let dead = self.known_dead(std::mem::take(&mut snap.unlisted), snap.ends.as_deref());
        self.absorb(dead);
        let Some(mut ab) = self.absorbing.take() else {
            // Not reached: `apply` begins a poll unless one was begun.
            return Applied::default();
        };
        let (now, now_ms) = (ab.clock.now, ab.now_ms);
        self.ctx.take(
            snap.settings,
            snap.holders,
            snap.namespaces,
            (now, snap.wall),
        );
        self.ctx.dumped_at = Some(snap.taken_at.min(now));
        let gone = ab.unclaimed();
        let (mut gone_conns, departed) = self.let_go(&ab, &gone);
        gone_conns.append(&mut ab.turned_dead);
        gone_conns.append(&mut self.dead_since_given_up);
        let first_new = ab.old_len - if ab.in_place { gone.len() } else { 0 };
        let is_new = |i: usize| {
            if ab.in_place {
                i >= first_new
            } else {
                ab.is_new(i)
            }
        };
        self.derive_whole(is_new, now_ms);
        if self.pairs {
            let known = if ab.in_place {
                let now_at: Vec<u32> = (0..self.peer_of.len().min(ab.old_len))
                    .map(|i| {
                        if ab.claimed[i] {
                            (i - gone.partition_point(|&g| (g as usize) < i)) as u32
                        } else {
                            crate::model::peers::NONE
                        }
                    })
                    .collect();
                self.carried_pairs(&now_at, self.socks.len())
            } else {
                Vec::new()
            };
            self.peer_of = crate::model::peers::pair(&self.socks, known);
        }
        self.retired = None;
        let mut ended = self.ends(gone_conns, snap.ends, &ab.before, ab.clock);
        if !snap.every_namespace {
            // The tracepoints see every namespace; an end no poll saw may be another's.
            ended.retain(|e| e.sock.is_some() || e.first_seen.is_some());
        }
        let released = self.keep_held_ends(&ended);
        self.netns = snap.netns;
        self.interfaces = snap.interfaces;
        self.cost = snap.cost;
        self.warnings = snap.warnings;
        self.opts_changed = snap.opts_changed;
        self.unread_namespaces = snap.unread_namespaces;
        self.last_poll = Some(now);
        Applied {
            spare: Vec::new(),
            departed,
            gone,
            ended,
            released,
        }
    }

    /// The last poll's sockets none of this one claimed (`gone`, their places then) leave the
    /// table; the connections among them are handed on for their ends, and the sockets
    /// themselves returned (none from a retired table, which kept no sockets). The index then
    /// holds this poll's places.
    fn let_go(&mut self, ab: &absorbing::Absorbing, gone: &[u32]) -> (Vec<Gone>, Vec<RawSock>) {
        let clock = ab.clock;
        let gone_one = |cookie: u64, c: Carry, sock: Option<RawSock>| {
            Some(Gone {
                cookie,
                tuple_hash: c.tuple_hash,
                sock,
                last: c.last?,
                bytes: c.bytes,
                first_seen: Some(clock.at(c.first_seen_ms)),
                seen_alive: c.state_since_ms > c.first_seen_ms,
            })
        };
        let mut conns = Vec::new();
        let mut departed = Vec::new();
        if ab.in_place {
            let mut next = gone.iter().peekable();
            let mut at = 0;
            departed = self
                .socks
                .extract_if(.., |_| {
                    let leaves = next.next_if(|&&g| g as usize == at).is_some();
                    at += 1;
                    leaves
                })
                .collect();
            let mut next = gone.iter().peekable();
            let mut at = 0;
            let mut left_derived = Vec::with_capacity(gone.len());
            self.derived.retain(|d| {
                let leaves = next.next_if(|&&g| g as usize == at).is_some();
                at += 1;
                if leaves {
                    left_derived.push(*d);
                }
                !leaves
            });
            conns = departed
                .iter()
                .zip(&left_derived)
                .filter_map(|(s, d)| gone_one(s.cookie.0, Carry::of(s, d), Some(s.clone())))
                .collect();
        } else if let Some(r) = &self.retired {
            let last = retiring::Last::Retired(r);
            conns = gone
                .iter()
                .filter_map(|&i| {
                    let i = i as usize;
                    let cookie = last.cookie(i)?;
                    gone_one(cookie, last.carry(i), last.sock(i, cookie))
                })
                .collect();
        }
        self.settle_index(ab, gone);
        (conns, departed)
    }

    /// What needs the whole poll, for every socket: its service (a server process listening
    /// on its port), keepalive status and stale reasons (a listener queueing an unaccepted
    /// one); `is_new` tells the sockets first seen in this poll.
    fn derive_whole(&mut self, is_new: impl Fn(usize) -> bool, now_ms: u32) {
        let socks = &self.socks;
        let mut listeners: Option<FxHashSet<(NetnsId, IpAddr, u16)>> = None;
        let served = served_by_process(socks);
        let mut ownerless_since = FxHashMap::default();
        let mut derived = std::mem::take(&mut self.derived);
        for (i, (sock, d)) in socks.iter().zip(derived.iter_mut()).enumerate() {
            let unowned = Unowned::applies(sock).then(|| {
                let since = *self.ownerless_since.get(&sock.cookie.0).unwrap_or(&now_ms);
                ownerless_since.insert(sock.cookie.0, since);
                let watched = Duration::from_millis(now_ms.saturating_sub(since).into());
                let queued = sock.inode.0 == 0
                    && has_listener(listeners.get_or_insert_with(|| listening(socks)), sock);
                Unowned {
                    waited: Unowned::kernel_age(sock).unwrap_or(watched),
                    queued,
                }
            });
            d.service = service_of(sock, &served);
            d.keepalive = Keepalive::of(sock);
            d.stale = self.stale(sock, absorbing::in_state(d, now_ms), unowned);
            if is_new(i) {
                // First seen: nothing changed yet.
                d.stale_was = d.stale;
            }
        }
        self.derived = derived;
        self.ownerless_since = ownerless_since;
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
        // A retired table keeps its index, not its sockets: nothing is found in it.
        let i = self.place(key.cookie.0)?;
        (self.socks[i].netns == key.netns).then(|| self.entry(i))
    }

    /// The socket with this cookie (cookies are unique host-wide).
    pub fn by_cookie(&self, cookie: super::Cookie) -> Option<SockEntry<'_>> {
        self.place(cookie.0).map(|i| self.entry(i))
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

#[path = "table_absorb.rs"]
mod absorbing;
#[path = "table_ends.rs"]
mod departed;
#[path = "table_retire.rs"]
mod retiring;
pub use retiring::Keep;

#[cfg(test)]
mod size {
    /// One per socket beside the snapshot: its size is a memory budget at 100k+ sockets.
    #[test]
    fn derived_stays_20_bytes() {
        assert_eq!(std::mem::size_of::<super::Derived>(), 24);
    }
}
