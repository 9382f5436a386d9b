//! The sockets the store keeps, so that it is a second source of snapshots (`katop --at TIME`,
//! the dashboard's past), read by the same model as a live poll: a keyframe (every TCP socket
//! of a poll) now and then, and after each later poll a delta (the sockets whose record
//! changed, whole, and the cookies gone; [`super::changes`]). The sockets at a moment are the
//! last keyframe before it with the deltas after it applied, their "ms ago" clocks aged to that
//! moment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::tcp_info::TcpInfo;
use crate::model::{
    Cookie, Endpoint, Family, InetAddr, Inode, NetnsId, Owner, Process, Proto, RawSock, SockOpts,
    SockState, Timer, TimerKind,
};

/// One stored socket (TCP, inet), written as a JSON array of its fields in this order (a
/// keyframe of 100k sockets spells no field name 100k times).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Row", from = "Row")]
pub struct StoredSock {
    pub cookie: u64,
    pub v6: bool,
    /// The kernel's state number.
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The namespace's inode (32 bits, as the kernel numbers them: a larger one is a damaged
    /// line).
    pub netns: u32,
    pub inode: u32,
    pub uid: Option<u32>,
    pub recv_q: u32,
    pub send_q: u32,
    /// (kernel timer number, ms to expiry, count).
    pub timer: Option<(u8, u32, u8)>,
    /// The `tcp_info` fields katop keeps: the length the kernel sent, then each field
    /// ([`TcpInfo::to_values`]).
    pub tcp_info: Option<Vec<u64>>,
    /// (pid, name, fd, container).
    pub owner: Option<(u32, String, u32, Option<String>)>,
    /// No process held it (known), rather than not known.
    pub unowned: bool,
    /// (`SO_KEEPALIVE`, idle s, intvl s, cnt, user timeout ms), when read from the socket.
    pub opts: Option<(bool, u16, u16, u8, u32)>,
}

/// A [`StoredSock`]'s fields in order, as written.
type Row = (
    u64,
    bool,
    u8,
    SocketAddr,
    SocketAddr,
    u32,
    u32,
    Option<u32>,
    u32,
    u32,
    Option<(u8, u32, u8)>,
    Option<Vec<u64>>,
    Option<(u32, String, u32, Option<String>)>,
    bool,
    Option<(bool, u16, u16, u8, u32)>,
);

impl From<StoredSock> for Row {
    fn from(s: StoredSock) -> Row {
        (
            s.cookie, s.v6, s.state, s.local, s.remote, s.netns, s.inode, s.uid, s.recv_q,
            s.send_q, s.timer, s.tcp_info, s.owner, s.unowned, s.opts,
        )
    }
}

impl From<Row> for StoredSock {
    fn from(r: Row) -> StoredSock {
        let (cookie, v6, state, local, remote, netns, inode, uid, recv_q, send_q) =
            (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9);
        StoredSock {
            cookie,
            v6,
            state,
            local,
            remote,
            netns,
            inode,
            uid,
            recv_q,
            send_q,
            timer: r.10,
            tcp_info: r.11,
            owner: r.12,
            unowned: r.13,
            opts: r.14,
        }
    }
}

/// What changes on a live connection (its state, queues, timer and `tcp_info`), written alone
/// when nothing else of the socket did: `[cookie, state, recv_q, send_q, timer, tcp_info]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Moving(
    pub u64,
    pub u8,
    pub u32,
    pub u32,
    pub Option<(u8, u32, u8)>,
    pub Option<Vec<u64>>,
);

impl StoredSock {
    /// Its moving part.
    pub fn moving(&self) -> Moving {
        Moving(
            self.cookie,
            self.state,
            self.recv_q,
            self.send_q,
            self.timer,
            self.tcp_info.clone(),
        )
    }

    pub(super) fn set_moving(&mut self, m: Moving) {
        (
            self.state,
            self.recv_q,
            self.send_q,
            self.timer,
            self.tcp_info,
        ) = (m.1, m.2, m.3, m.4, m.5);
    }
}

fn state_number(s: SockState) -> u8 {
    (1..=12)
        .find(|&n| SockState::from_kernel(n) == s)
        .unwrap_or(match s {
            SockState::Other(n) => n,
            _ => 0,
        })
}

fn timer_number(k: TimerKind) -> u8 {
    (1..=5)
        .find(|&n| TimerKind::from_kernel(n) == Some(k))
        .unwrap_or(match k {
            TimerKind::Other(n) => n,
            _ => 0,
        })
}

impl StoredSock {
    /// Whether the store keeps this socket: a TCP inet one.
    pub fn keeps(s: &RawSock) -> bool {
        s.proto == Proto::Tcp
            && matches!(
                (&s.local, &s.remote),
                (Endpoint::Inet(_), Endpoint::Inet(_))
            )
    }

    /// A TCP inet socket as stored; `None` for any other.
    pub fn of(s: &RawSock) -> Option<StoredSock> {
        let (Endpoint::Inet(l), Endpoint::Inet(r)) = (&s.local, &s.remote) else {
            return None;
        };
        Self::keeps(s).then(|| StoredSock {
            cookie: s.cookie.0,
            v6: s.family == Family::Inet6,
            state: state_number(s.state),
            local: SocketAddr::new(l.ip(), l.port()),
            remote: SocketAddr::new(r.ip(), r.port()),
            netns: s.netns.0,
            inode: s.inode.0,
            uid: s.uid.map(crate::model::Uid::get),
            recv_q: s.recv_q,
            send_q: s.send_q,
            timer: s
                .timer
                .map(|t| (timer_number(t.kind), t.expires_ms, t.retrans)),
            tcp_info: s.tcp_info.map(|i| i.to_values()),
            owner: match &s.owner {
                Owner::Process { process, fd } => Some((
                    process.pid,
                    process.name.to_string(),
                    *fd,
                    process.container.as_deref().map(String::from),
                )),
                _ => None,
            },
            unowned: s.owner == Owner::None,
            opts: s.opts.read.then_some((
                s.opts.keepalive,
                s.opts.idle_s,
                s.opts.intvl_s,
                s.opts.cnt,
                s.opts.user_timeout_ms,
            )),
        })
    }

    /// The socket back, `ms` after it was stored (its clocks aged by that much).
    pub fn to_raw(&self, ms: u32) -> RawSock {
        RawSock {
            proto: Proto::Tcp,
            family: if self.v6 { Family::Inet6 } else { Family::Inet },
            state: SockState::from_kernel(self.state),
            local: Endpoint::Inet(InetAddr::from(self.local)),
            remote: Endpoint::Inet(InetAddr::from(self.remote)),
            interface: 0,
            inode: Inode(self.inode),
            cookie: Cookie(self.cookie),
            netns: NetnsId(self.netns),
            uid: self.uid.and_then(crate::model::Uid::new),
            recv_q: self.recv_q,
            send_q: self.send_q,
            timer: self.timer.and_then(|(k, expires, retrans)| {
                Some(Timer {
                    kind: TimerKind::from_kernel(k)?,
                    expires_ms: expires.saturating_sub(ms),
                    retrans,
                })
            }),
            tcp_info: self
                .tcp_info
                .as_deref()
                .and_then(TcpInfo::from_values)
                .map(|i| i.aged(ms)),
            owner: self.owner.as_ref().map_or(
                if self.unowned {
                    Owner::None
                } else {
                    Owner::Unknown
                },
                |(pid, name, fd, container)| Owner::Process {
                    process: Arc::new(Process {
                        pid: *pid,
                        name: name.as_str().into(),
                        cmdline: "".into(),
                        container: container.as_deref().map(Arc::from),
                    }),
                    fd: *fd,
                },
            ),
            opts: self.opts.map_or(
                SockOpts::default(),
                |(keepalive, idle_s, intvl_s, cnt, user)| SockOpts {
                    user_timeout_ms: user,
                    idle_s,
                    intvl_s,
                    cnt,
                    keepalive,
                    read: true,
                },
            ),
        }
    }
}

/// A poll's mark: `{"time": …, "sample": N}`, N its TCP sockets.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sample {
    pub time: String,
    pub sample: usize,
}

/// A keyframe line: `{"time": …, "settings": {the host's sysctls}, "namespaces": [[inode,
/// name, container, host]], "keyframe": [sockets]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Keyframe {
    pub time: String,
    #[serde(default)]
    pub settings: crate::model::KernelSettings,
    #[serde(default)]
    pub namespaces: Vec<StoredNs>,
    pub keyframe: Vec<StoredSock>,
}

/// A namespace's names as a keyframe keeps them: (inode, name, container, the host's).
pub type StoredNs = (u32, String, Option<String>, bool);

/// The namespaces of a poll, as a keyframe keeps them.
pub fn stored_namespaces(all: &[crate::model::NsInfo]) -> Vec<StoredNs> {
    all.iter()
        .map(|n| {
            (
                n.id.0,
                n.name.to_string(),
                n.container.as_deref().map(String::from),
                n.host,
            )
        })
        .collect()
}

/// Writes a keyframe line of `socks` one socket at a time (none is held beside the others),
/// with the host's sysctls (the past's countdowns need them).
pub fn write_keyframe(
    w: &mut dyn std::io::Write,
    time: &str,
    (settings, namespaces): (&crate::model::KernelSettings, &[StoredNs]),
    socks: impl Iterator<Item = StoredSock>,
) -> std::io::Result<()> {
    w.write_all(b"{\"time\":")?;
    serde_json::to_writer(&mut *w, time)?;
    w.write_all(b",\"settings\":")?;
    serde_json::to_writer(&mut *w, settings)?;
    w.write_all(b",\"namespaces\":")?;
    serde_json::to_writer(&mut *w, namespaces)?;
    w.write_all(b",\"keyframe\":[")?;
    write_each(w, socks)?;
    w.write_all(b"]}\n")
}

/// A poll's socket lines: its mark (so the dashboard's past steps from one poll to the next),
/// then a keyframe of every socket in `delta` (`keyframe`), or the delta. `context`'s
/// namespaces are those to name ([`super::changes::Changes::to_name`]). Returns the bytes
/// written: what reading a moment costs, which decides when the next keyframe is due (the
/// events beside them do not: `--at` skips them).
pub fn write_poll(
    w: &mut dyn std::io::Write,
    sample: &Sample,
    context: (&crate::model::KernelSettings, &[StoredNs]),
    keyframe: bool,
    delta: super::changes::Delta,
) -> std::io::Result<u64> {
    use std::io::Write;
    let mut w = super::frame::Counted { inner: w, bytes: 0 };
    serde_json::to_writer(&mut w, sample)?;
    w.write_all(b"\n")?;
    if keyframe {
        // In inode order: sockets made one after another sit side by side, their ports,
        // owner and cookies alike, and compress a fifth smaller than in dump order.
        let mut socks = delta.socks;
        socks.sort_unstable_by_key(|s| (s.inode, s.cookie));
        let socks = socks.into_iter().filter_map(StoredSock::of);
        write_keyframe(&mut w, &sample.time, context, socks)?;
    } else {
        write_delta(&mut w, &sample.time, context.1, &delta)?;
    }
    Ok(w.bytes)
}

/// Writes a [`Delta`] line, each record built as it is written; `namespaces`: those first
/// seen since the last line named them.
pub fn write_delta(
    w: &mut dyn std::io::Write,
    time: &str,
    namespaces: &[StoredNs],
    delta: &super::changes::Delta,
) -> std::io::Result<()> {
    w.write_all(b"{\"time\":")?;
    serde_json::to_writer(&mut *w, time)?;
    if !namespaces.is_empty() {
        w.write_all(b",\"namespaces\":")?;
        serde_json::to_writer(&mut *w, namespaces)?;
    }
    w.write_all(b",\"socks\":[")?;
    write_each(w, delta.socks.iter().filter_map(|s| StoredSock::of(s)))?;
    w.write_all(b"],\"moved\":[")?;
    write_each(
        w,
        delta
            .moved
            .iter()
            .filter_map(|s| StoredSock::of(s).map(|s| s.moving())),
    )?;
    w.write_all(b"],\"gone\":")?;
    serde_json::to_writer(&mut *w, &delta.gone)?;
    w.write_all(b"}\n")
}

/// Items of a JSON array, comma-separated.
fn write_each<T: Serialize>(
    w: &mut dyn std::io::Write,
    items: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    for (i, item) in items.enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, &item)?;
    }
    Ok(())
}

/// Keeps the sockets of the namespaces `which` asks for (`--netns`), as a live poll would have
/// read them: by the names the keyframe and the deltas since kept (`host`, a container's, an `ip netns` name) or by
/// inode; `self` and katop's own are the host's here (the recorder's view).
pub fn narrow(snap: &mut crate::model::Snapshot, which: &crate::collector::namespaces::Which) {
    use crate::collector::namespaces::Which;
    let wanted: Vec<NetnsId> = match which {
        Which::All => return,
        Which::Own => vec![snap.netns],
        Which::Some(words) => snap
            .namespaces
            .iter()
            .filter(|n| {
                words.iter().any(|w| {
                    *w == *n.name
                        || n.container.as_deref() == Some(w.as_str())
                        || (n.host && (w == "host" || w == "self"))
                        || w.parse::<u64>().ok() == Some(n.id.ino())
                        || *w == format!("netns:{}", n.id.0)
                })
            })
            .map(|n| n.id)
            .collect(),
    };
    snap.socks.retain(|s| wanted.contains(&s.netns));
}

/// A delta line: `{"time": …, "namespaces": [those first seen since the last line named them;
/// left out when none], "socks": [new or changed sockets, whole], "moved": [the moving part of
/// sockets nothing else of changed], "gone": [cookies]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delta {
    pub time: String,
    #[serde(default)]
    pub namespaces: Vec<StoredNs>,
    pub socks: Vec<StoredSock>,
    pub moved: Vec<Moving>,
    pub gone: Vec<u64>,
}

/// A namespace as a keyframe or a delta named it; the host's governed by `settings` (the
/// store keeps the host's sysctls only).
pub(super) fn ns_info(
    (id, name, container, host): StoredNs,
    settings: crate::model::KernelSettings,
) -> crate::model::NsInfo {
    crate::model::NsInfo {
        id: NetnsId(id),
        name: name.into(),
        container: container.map(Into::into),
        settings: if host {
            settings
        } else {
            crate::model::KernelSettings::default()
        },
        age: std::time::Duration::ZERO,
        host,
    }
}

/// The snapshot the store holds for `at`: the sockets of the last keyframe before it, the
/// deltas after applied. `lines` are the stored lines up to `at`, oldest first.
pub fn at(lines: &[String], at: SystemTime) -> Option<crate::model::Snapshot> {
    let k = lines.iter().rposition(|l| l.contains("\"keyframe\":"))?;
    let frame: Keyframe = serde_json::from_str(&lines[k]).ok()?;
    let taken = humantime::parse_rfc3339_weak(&frame.time).ok()?;
    let settings = frame.settings;
    let ns_info = |n: StoredNs| ns_info(n, settings);
    let mut namespaces: Vec<crate::model::NsInfo> =
        frame.namespaces.into_iter().map(ns_info).collect();
    let own = namespaces
        .iter()
        .find(|n| n.host)
        .map_or(NetnsId::default(), |n| n.id);
    let mut socks: rustc_hash::FxHashMap<u64, (StoredSock, SystemTime)> = frame
        .keyframe
        .into_iter()
        .map(|s| (s.cookie, (s, taken)))
        .collect();
    for line in &lines[k + 1..] {
        if !line.contains("\"gone\":") {
            continue;
        }
        let Ok(delta) = serde_json::from_str::<Delta>(line) else {
            continue;
        };
        let when = humantime::parse_rfc3339_weak(&delta.time).unwrap_or(taken);
        for n in delta.namespaces {
            // New, or renamed (an inode reused, a container found).
            namespaces.retain(|known| known.id.0 != n.0);
            namespaces.push(ns_info(n));
        }
        for cookie in delta.gone {
            socks.remove(&cookie);
        }
        for s in delta.socks {
            socks.insert(s.cookie, (s, when));
        }
        for m in delta.moved {
            if let Some((s, since)) = socks.get_mut(&m.0) {
                s.set_moving(m);
                *since = when;
            }
        }
    }
    let socks = socks
        .into_values()
        .map(|(s, since)| {
            let ms = at.duration_since(since).unwrap_or_default().as_millis();
            s.to_raw(u32::try_from(ms).unwrap_or(u32::MAX))
        })
        .collect();
    Some(crate::model::Snapshot {
        socks,
        netns: own,
        settings,
        interfaces: std::collections::HashMap::new(),
        holders: Arc::default(),
        namespaces,
        unread_namespaces: 0,
        taken_at: Instant::now(),
        wall: at,
        cost: crate::model::PollCost::default(),
        warnings: Vec::new(),
        ends: None,
        every_namespace: false,
        unlisted: Vec::new(),
        opts_changed: Vec::new(),
    })
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
