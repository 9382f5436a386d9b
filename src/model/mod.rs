//! Pure data and functions: no I/O, no terminal, no clock reads (time comes in as `now`).

pub mod addr;
pub mod duration;
pub mod ends;
pub mod entry;
pub mod filter;
pub mod keepalive;
pub mod peers;
pub(crate) mod place_index;
pub mod retransmit;
pub mod services;
pub mod socket;
pub mod stale;
pub mod table;
pub mod tcp_info;
pub mod wheel;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use keepalive::{Basis, Countdown, Detect, Middlebox, Params, SockOpts};
pub use peers::Peer;
pub use socket::{
    Cookie, Endpoint, Family, Holder, Holders, InetAddr, Inode, NetnsId, Owner, Process, Proto,
    RawSock, SockKey, SockState, Timer, TimerKind, Uid,
};
pub use stale::{Keepalive, StaleReason, StaleSet};
pub use table::{ConnTable, Keep, SockEntry};

/// Everything one poll read, handed from the collector to the model by value.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub socks: Vec<RawSock>,
    /// The namespace these sockets were read in.
    pub netns: NetnsId,
    pub settings: KernelSettings,
    /// Interface index → name, for the indexes the sockets use.
    pub interfaces: HashMap<u32, Box<str>>,
    /// Every holder of the sockets held by more than one fd.
    pub holders: std::sync::Arc<Holders>,
    /// The namespaces the sockets were read in, beyond the host's (names, containers, their
    /// own sysctls, how fresh their data is); empty when katop reads only its own.
    pub namespaces: Vec<NsInfo>,
    /// Namespaces asked for whose sockets could not be read (the warnings say why).
    pub unread_namespaces: usize,
    /// When the kernel's dumps were read (their timers count from then).
    pub taken_at: Instant,
    /// The same moment by the wall clock, for outputs that carry a date (JSON's `time`).
    pub wall: std::time::SystemTime,
    pub cost: PollCost,
    /// Things that went partly wrong (unreadable processes, skipped messages), for the status line.
    pub warnings: Vec<String>,
    /// Connection ends the kernel's tracepoints told since the last poll (drained before the
    /// dump); `None` when katop does not read them (causes are then inferred).
    pub ends: Option<Vec<ends::trace::Traced>>,
    /// Whether katop read every network namespace: the tracepoints tell ends in all of them,
    /// so an end no poll saw is kept only then.
    pub every_namespace: bool,
    /// TCP sockets processes hold that no socket table lists (`CLOSE`): connections the kernel
    /// ended while held, or sockets never connected. The table keeps the ones it knew as
    /// connections (stale reason `dead`).
    pub unlisted: Vec<RawSock>,
    /// Sockets whose keepalive options this poll found changed (read again, and different).
    pub opts_changed: Vec<Cookie>,
}

/// A network namespace katop read sockets in.
#[derive(Debug, Clone, PartialEq)]
pub struct NsInfo {
    pub id: NetnsId,
    /// Its human name, best first: `host`, the container it belongs to, its `ip netns` or
    /// bind-mount name, else `netns:<inode>`.
    pub name: std::sync::Arc<str>,
    /// The container whose namespace it is (`podman:web-1`, `docker:3f2a91c0d4e1`, …).
    pub container: Option<std::sync::Arc<str>>,
    /// Its own keepalive and retransmission sysctls.
    pub settings: KernelSettings,
    /// How old its sockets' data is (namespaces other than the host's and the focused ones
    /// are refreshed less often).
    pub age: Duration,
    pub host: bool,
}

/// What a poll cost, for the header and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollCost {
    /// The netlink dumps alone.
    pub dump: Duration,
    /// Dumps, process join and settings.
    pub total: Duration,
}

/// A namespace's TCP keepalive and retry sysctls; `None` where unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelSettings {
    pub keepalive_time_s: Option<u32>,
    pub keepalive_intvl_s: Option<u32>,
    pub keepalive_probes: Option<u32>,
    pub retries2: Option<u32>,
    /// `tcp_rto_max_ms` (Linux 6.15+; 120 s before).
    pub rto_max_ms: Option<u32>,
    /// `nf_conntrack_tcp_timeout_established`, when conntrack is loaded.
    pub conntrack_established_s: Option<u32>,
    /// The kernel's `CONFIG_HZ` (its timer wheel's tick), where `/proc/config.gz` says.
    pub hz: Option<u32>,
}

impl KernelSettings {
    /// When the kernel gives up on a silent peer of an idle keepalive connection:
    /// `tcp_keepalive_time + tcp_keepalive_intvl × tcp_keepalive_probes` (7875 s by default).
    pub fn dead_peer_after_s(&self) -> Option<u64> {
        let (t, i, p) = (
            self.keepalive_time_s?,
            self.keepalive_intvl_s?,
            self.keepalive_probes?,
        );
        Some(u64::from(t) + u64::from(i) * u64::from(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_linux_gives_up_after_2h11m15s() {
        let s = KernelSettings {
            keepalive_time_s: Some(7200),
            keepalive_intvl_s: Some(75),
            keepalive_probes: Some(9),
            ..KernelSettings::default()
        };
        assert_eq!(s.dead_peer_after_s(), Some(7875));
        assert_eq!(duration::format_secs(7875), "2h11m15s");
    }
}
