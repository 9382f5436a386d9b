//! One socket as the views see it: the kernel's record, what the table derived for it, and
//! the poll's context (settings, holders, namespaces, middleboxes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::model::keepalive::{self, AtRisk, Countdown, Middlebox, Params};
use crate::model::services::ServiceId;
use crate::model::stale::{Keepalive, StaleSet, Unowned};
use crate::model::{
    services, Holder, Holders, KernelSettings, NetnsId, RawSock, SockKey, SockState,
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
    /// When the kernel's dumps were read: the timers' "expires in" count from then (a loaded
    /// poll spends a while after the dumps on `/proc`).
    pub dumped_at: Option<Instant>,
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
    pub(super) ns_index: FxHashMap<NetnsId, usize>,
    /// Why and when the kernel ended each dead connection (one its application still holds),
    /// by cookie, once known.
    pub held_ends: FxHashMap<u64, HeldEnd>,
}

/// How a connection still held by its application ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldEnd {
    pub cause: crate::model::ends::Cause,
    pub source: crate::model::ends::CauseSource,
    pub at: std::time::SystemTime,
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

    pub(crate) fn set_namespaces(&mut self, namespaces: Vec<crate::model::NsInfo>) {
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
    pub(super) fn take(
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

    pub(super) fn update_middleboxes(&mut self) {
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
    pub(super) first_seen_ms: u32,
    /// When katop first saw it in its current state, ms after the table's epoch.
    pub(super) state_since_ms: u32,
    /// Bytes/s received and sent (acknowledged) since the previous poll; NaN on first sight
    /// (4 bytes, not an 8-byte `Option`: there is one of these per socket).
    pub(super) rate_in: f32,
    pub(super) rate_out: f32,
    pub(super) service: ServiceId,
    pub keepalive: Option<Keepalive>,
    pub stale: StaleSet,
    /// The stale reasons the poll before gave it (its own on first sight).
    pub(super) stale_was: StaleSet,
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
    pub(super) peer: Option<&'a RawSock>,
}

impl std::ops::Deref for SockEntry<'_> {
    type Target = Derived;

    fn deref(&self) -> &Derived {
        &self.derived
    }
}

impl<'a> SockEntry<'a> {
    pub(super) fn new(sock: &'a RawSock, d: &Derived, epoch: Instant, ctx: &'a Ctx) -> Self {
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
            stale_was: StaleSet::default(),
        };
        SockEntry {
            sock,
            derived,
            epoch: now,
            ctx,
            peer: None,
        }
    }

    /// The stale reasons it had at the poll before.
    pub fn stale_was(&self) -> StaleSet {
        self.derived.stale_was
    }

    /// Why and when the kernel ended it, for a dead connection whose end is known.
    pub fn held_end(&self) -> Option<HeldEnd> {
        self.ctx.held_ends.get(&self.sock.cookie.0).copied()
    }

    /// The keepalive settings that govern it: read from the socket, or the sysctls.
    pub fn params(&self) -> Option<Params> {
        // A dead connection has no keepalive left to govern it.
        if crate::model::stale::is_dead(self.sock) {
            return None;
        }
        Params::of(self.sock, self.ctx.settings_for(self.sock.netns))
    }

    /// If the peer went silent, when the kernel would notice, counted down to `now`.
    pub fn detect(&self, now: Instant) -> Option<Countdown> {
        let settings = self.ctx.settings_for(self.sock.netns);
        let d = keepalive::dead_peer_detect(self.sock, &self.params()?, settings)?;
        // Counted from when its namespace was dumped (the timers are as the kernel read them
        // then): the poll's dumps end later by the namespaces dumped after it.
        let age = self
            .ctx
            .namespace(self.sock.netns)
            .map_or(Duration::ZERO, |n| n.age);
        let since_poll = self
            .ctx
            .dumped_at
            .or(self.ctx.polled_at)
            .map(|t| t.checked_sub(age).unwrap_or(t))
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
