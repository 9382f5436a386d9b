//! Keyframes: every TCP socket of a poll, stored whole now and then, so the store is a second
//! source of snapshots (`katop --at TIME`), read by the same model as a live poll. The sockets
//! at a moment are the last keyframe before it, with the events after it applied (opened,
//! state, closed), their "ms ago" clocks aged to that moment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::tcp_info::TcpInfo;
use crate::model::{
    Cookie, Endpoint, Family, InetAddr, Inode, NetnsId, Owner, Process, Proto, RawSock, SockOpts,
    SockState, Timer, TimerKind,
};

/// One stored socket (TCP, inet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSock {
    pub cookie: u64,
    pub v6: bool,
    /// The kernel's state number.
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: u64,
    pub inode: u32,
    pub uid: Option<u32>,
    pub recv_q: u32,
    pub send_q: u32,
    /// (kernel timer number, ms to expiry, count).
    pub timer: Option<(u8, u32, u8)>,
    /// `struct tcp_info` as the kernel laid it out, hex.
    pub tcp_info: Option<String>,
    /// (pid, name, fd, container).
    pub owner: Option<(u32, String, u32, Option<String>)>,
    /// No process held it (known), rather than not known.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unowned: bool,
    /// (`SO_KEEPALIVE`, idle s, intvl s, cnt, user timeout ms), when read from the socket.
    pub opts: Option<(bool, u16, u16, u8, u32)>,
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl StoredSock {
    /// A TCP inet socket as stored; `None` for any other.
    pub fn of(s: &RawSock) -> Option<StoredSock> {
        let (Endpoint::Inet(l), Endpoint::Inet(r)) = (&s.local, &s.remote) else {
            return None;
        };
        (s.proto == Proto::Tcp).then(|| StoredSock {
            cookie: s.cookie.0,
            v6: s.family == Family::Inet6,
            state: state_number(s.state),
            local: SocketAddr::new(l.ip(), l.port()),
            remote: SocketAddr::new(r.ip(), r.port()),
            netns: s.netns.0,
            inode: s.inode.0,
            uid: s.uid,
            recv_q: s.recv_q,
            send_q: s.send_q,
            timer: s
                .timer
                .map(|t| (timer_number(t.kind), t.expires_ms, t.retrans)),
            tcp_info: s.tcp_info.map(|i| hex(&i.to_kernel_bytes())),
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
            uid: self.uid,
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
                .and_then(unhex)
                .map(|b| TcpInfo::from_kernel_bytes(&b).aged(ms)),
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

/// A connection as it opened or changed state: `{"time": …, "sock": {…}}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SockLine {
    pub time: String,
    pub sock: StoredSock,
}

/// A poll's mark: `{"time": …, "sample": N}`, N its TCP sockets.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sample {
    pub time: String,
    pub sample: usize,
}

/// A keyframe line: `{"time": …, "keyframe": [sockets]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Keyframe {
    pub time: String,
    pub keyframe: Vec<StoredSock>,
}

/// The snapshot the store holds for `at`: the sockets of the last keyframe before it, the
/// events after applied. `lines` are the stored lines up to `at`, oldest first.
pub fn at(lines: &[String], at: SystemTime) -> Option<crate::model::Snapshot> {
    let k = lines.iter().rposition(|l| l.contains("\"keyframe\":"))?;
    let frame: Keyframe = serde_json::from_str(&lines[k]).ok()?;
    let taken = humantime::parse_rfc3339_weak(&frame.time).ok()?;
    let mut socks: Vec<(StoredSock, SystemTime)> =
        frame.keyframe.into_iter().map(|s| (s, taken)).collect();
    for line in &lines[k + 1..] {
        if let Ok(s) = serde_json::from_str::<SockLine>(line) {
            let when = humantime::parse_rfc3339_weak(&s.time).unwrap_or(taken);
            socks.retain(|(old, _)| old.cookie != s.sock.cookie);
            socks.push((s.sock, when));
            continue;
        }
        let Ok(ev) = serde_json::from_str::<crate::history::event::Event>(line) else {
            continue;
        };
        let Some(cookie) = ev.cookie else { continue };
        let when = humantime::parse_rfc3339_weak(&ev.time).unwrap_or(taken);
        match ev.event {
            crate::history::event::Kind::Closed => socks.retain(|(s, _)| s.cookie != cookie),
            crate::history::event::Kind::State => {
                if let Some((s, _)) = socks.iter_mut().find(|(s, _)| s.cookie == cookie) {
                    s.state = ev
                        .state
                        .as_deref()
                        .and_then(|n| {
                            (1..=12).find(|&k| SockState::from_kernel(k).name(Proto::Tcp) == n)
                        })
                        .unwrap_or(s.state);
                }
            }
            // Its `closed` follows.
            crate::history::event::Kind::Stale | crate::history::event::Kind::Killed => {}
            crate::history::event::Kind::Keepalive => {
                if let (Some((s, _)), Some(k)) = (
                    socks.iter_mut().find(|(s, _)| s.cookie == cookie),
                    ev.keepalive,
                ) {
                    s.opts = Some((k.on, k.idle_s, k.intvl_s, k.cnt, k.user_timeout_ms));
                }
            }
            // Its socket line follows with the whole of it; this is a store without one.
            crate::history::event::Kind::Opened => {
                let sock = crate::history::source::sock_of(&ev);
                if let Some(stored) = StoredSock::of(&sock) {
                    if !socks.iter().any(|(s, _)| s.cookie == cookie) {
                        socks.push((stored, when));
                    }
                }
            }
        }
    }
    let socks = socks
        .into_iter()
        .map(|(s, since)| {
            let ms = at.duration_since(since).unwrap_or_default().as_millis();
            s.to_raw(u32::try_from(ms).unwrap_or(u32::MAX))
        })
        .collect();
    Some(crate::model::Snapshot {
        socks,
        netns: NetnsId::default(),
        settings: crate::model::KernelSettings::default(),
        interfaces: std::collections::HashMap::new(),
        holders: Arc::default(),
        namespaces: Vec::new(),
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

/// How often the recorder writes a keyframe, in polls.
pub const KEYFRAME_EVERY: u32 = 6;
