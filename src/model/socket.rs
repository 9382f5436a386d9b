//! What one socket is, as read from the kernel: the collector fills a [`RawSock`], the model
//! wraps it in a [`crate::model::SockEntry`] with what it derives across polls.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use crate::model::keepalive::SockOpts;
use crate::model::tcp_info::TcpInfo;

/// The socket cookie: the kernel's unique id for a socket, stable for its whole life and never
/// reused (unlike addresses and ports), so a kill or a selection can name exactly one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Cookie(pub u64);

/// A socket inode number, the link between a socket and the fds that hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(transparent)]
pub struct Inode(pub u32);

/// A network namespace, named by the inode of its `/proc/PID/ns/net` link: the kernel's
/// `ns_common.inum`, an `unsigned int`, so 4 bytes in every socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(transparent)]
pub struct NetnsId(pub u32);

impl NetnsId {
    /// The namespace whose nsfs file has this inode number (`stat`'s `st_ino`); `None` for a
    /// number no namespace has (one past 32 bits).
    pub fn from_ino(ino: u64) -> Option<NetnsId> {
        u32::try_from(ino).ok().map(NetnsId)
    }

    /// Its inode number, as `stat` and `ls -i` give it.
    pub fn ino(self) -> u64 {
        u64::from(self.0)
    }
}

/// A user id in 4 bytes with its absence (`Option<Uid>`): `(uid_t)-1` names no user (the
/// kernel shows a uid it cannot map as the overflow uid instead), so its bits mark none.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uid(std::num::NonZeroU32);

impl Uid {
    /// `None` for `(uid_t)-1`, which is no user.
    pub fn new(uid: u32) -> Option<Uid> {
        std::num::NonZeroU32::new(!uid).map(Uid)
    }

    pub fn get(self) -> u32 {
        !self.0.get()
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Identifies one socket across polls: cookies are unique within a host, the namespace keeps
/// keys from different namespaces apart once several are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockKey {
    pub netns: NetnsId,
    pub cookie: Cookie,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Unix,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Unix => "unix",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
    Unix,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
            Family::Unix => "unix",
        }
    }
}

/// Kernel socket states (`include/net/tcp_states.h`). UDP and Unix sockets reuse them:
/// `ESTABLISHED` for connected, `CLOSE` for unconnected (shown as `UNCONN`, as `ss` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SockState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    /// `TCP_CLOSE`: a closed TCP socket, or an unconnected UDP/Unix socket.
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    /// A state number this build does not know; kept, never guessed.
    Other(u8),
}

impl SockState {
    /// Every named state, in kernel order; for help texts and parsing.
    pub const ALL: [SockState; 11] = [
        SockState::Established,
        SockState::SynSent,
        SockState::SynRecv,
        SockState::FinWait1,
        SockState::FinWait2,
        SockState::TimeWait,
        SockState::Close,
        SockState::CloseWait,
        SockState::LastAck,
        SockState::Listen,
        SockState::Closing,
    ];

    pub fn from_kernel(n: u8) -> Self {
        match n {
            1 => SockState::Established,
            2 => SockState::SynSent,
            // 12 is TCP_NEW_SYN_RECV: a request socket, which userspace knows as SYN-RECV.
            3 | 12 => SockState::SynRecv,
            4 => SockState::FinWait1,
            5 => SockState::FinWait2,
            6 => SockState::TimeWait,
            7 => SockState::Close,
            8 => SockState::CloseWait,
            9 => SockState::LastAck,
            10 => SockState::Listen,
            11 => SockState::Closing,
            other => SockState::Other(other),
        }
    }

    /// The upper-case name used in JSON and tables (`ESTABLISHED`, `CLOSE_WAIT`, …).
    pub fn name(self, proto: Proto) -> &'static str {
        match self {
            SockState::Established => "ESTABLISHED",
            SockState::SynSent => "SYN_SENT",
            SockState::SynRecv => "SYN_RECV",
            SockState::FinWait1 => "FIN_WAIT1",
            SockState::FinWait2 => "FIN_WAIT2",
            SockState::TimeWait => "TIME_WAIT",
            SockState::Close if proto == Proto::Tcp => "CLOSE",
            SockState::Close => "UNCONN",
            SockState::CloseWait => "CLOSE_WAIT",
            SockState::LastAck => "LAST_ACK",
            SockState::Listen => "LISTEN",
            SockState::Closing => "CLOSING",
            SockState::Other(_) => "UNKNOWN",
        }
    }
}

/// Which timer the kernel has armed (`idiag_timer`); words as `ss -o` prints them where it
/// has one, the issue's `probe0` for the zero-window probe, `delack` for the delayed-ACK
/// timer newer kernels report (5), and a value katop does not know kept as such: it says
/// nothing of keepalive (only one timer is reported), so keepalive is then unknown, never off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    Retransmit,
    Keepalive,
    Timewait,
    Probe0,
    Delack,
    Other(u8),
}

impl TimerKind {
    /// The kernel's `idiag_timer` value; `None` for 0 (no timer).
    pub fn from_kernel(v: u8) -> Option<TimerKind> {
        Some(match v {
            0 => return None,
            1 => TimerKind::Retransmit,
            2 => TimerKind::Keepalive,
            3 => TimerKind::Timewait,
            4 => TimerKind::Probe0,
            5 => TimerKind::Delack,
            v => TimerKind::Other(v),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TimerKind::Retransmit => "retransmit",
            TimerKind::Keepalive => "keepalive",
            TimerKind::Timewait => "timewait",
            TimerKind::Probe0 => "probe0",
            TimerKind::Delack => "delack",
            TimerKind::Other(_) => "unknown",
        }
    }
}

/// The armed timer with its expiry and `idiag_retrans`: for a keepalive timer the unanswered
/// keepalive probes so far, for retransmit the retransmissions, for probe0 the window probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub kind: TimerKind,
    pub expires_ms: u32,
    pub retrans: u8,
}

/// An IP address and port, stored compactly: `SocketAddr` carries IPv6 flow info and scope id
/// that `sock_diag` does not report, 8 bytes per end that 100k sockets do not need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InetAddr {
    ip: IpAddr,
    port: u16,
}

impl InetAddr {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        InetAddr { ip, port }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<SocketAddr> for InetAddr {
    fn from(a: SocketAddr) -> Self {
        InetAddr {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl std::str::FromStr for InetAddr {
    type Err = std::net::AddrParseError;

    /// `ip:port` or `[ip6]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<SocketAddr>().map(InetAddr::from)
    }
}

impl fmt::Display for InetAddr {
    /// As `SocketAddr` prints: `ip:port`, `[ip6]:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// One end of a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Inet(InetAddr),
    /// A Unix socket's bound path; abstract names start with `@`; `None` when unbound.
    Unix(Option<Box<str>>),
    /// A Unix socket's peer, by inode (the kernel gives no path for it).
    UnixPeer(Option<Inode>),
}

impl Endpoint {
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Inet(a) => Some(a.port()),
            _ => None,
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Inet(a) => Some(a.ip()),
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    /// `ip:port`, `[ip6]:port`, a Unix path, or `*` for an unbound/unknown end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A listener's or unconnected socket's remote end, as `ss` shows it.
            Endpoint::Inet(a) if a.port() == 0 && a.ip().is_unspecified() => f.write_str("*"),
            Endpoint::Inet(a) => write!(f, "{a}"),
            Endpoint::Unix(Some(p)) => f.write_str(p),
            Endpoint::UnixPeer(Some(Inode(i))) => write!(f, "peer:{i}"),
            Endpoint::Unix(None) | Endpoint::UnixPeer(None) => f.write_str("*"),
        }
    }
}

/// A process that holds sockets. Shared by all its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// `comm`, lossily made UTF-8.
    pub name: Box<str>,
    /// Arguments joined by spaces, lossily made UTF-8; empty for kernel threads and zombies.
    pub cmdline: Box<str>,
    /// The container it runs in, from its cgroup (`podman:web-1`); `None` on the host.
    pub container: Option<Arc<str>>,
}

/// One fd, of one process, that refers to a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub process: Arc<Process>,
    pub fd: u32,
}

/// Every holder of the sockets that more than one fd refers to (a listener shared by
/// workers, a socket inherited after fork or passed with `SCM_RIGHTS`), by inode, in pid and
/// fd order. Most sockets have one holder and no entry here: it costs nothing per socket.
pub type Holders = rustc_hash::FxHashMap<Inode, Vec<Holder>>;

/// Who holds a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// An fd of this process refers to the socket (the lowest pid when several do: see
    /// [`Holders`]).
    Process { process: Arc<Process>, fd: u32 },
    /// No process holds it: closed by its application (`TIME_WAIT`, `FIN_WAIT`), not yet
    /// accepted, or leaked.
    None,
    /// Not found, but katop could not read every process that might hold it (another
    /// user's process without root, or a read of `/proc` that failed): unknown, never none.
    Unknown,
}

impl Owner {
    pub fn process(&self) -> Option<&Process> {
        match self {
            Owner::Process { process, .. } => Some(process),
            _ => None,
        }
    }
}

/// One socket as the kernel reported it in one poll, joined with its owning process.
#[derive(Debug, Clone)]
pub struct RawSock {
    pub proto: Proto,
    pub family: Family,
    pub state: SockState,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// Interface index the socket is bound to (0: any).
    pub interface: u32,
    pub inode: Inode,
    pub cookie: Cookie,
    pub netns: NetnsId,
    /// Socket owner's uid; `None` where the kernel does not say.
    pub uid: Option<Uid>,
    pub recv_q: u32,
    pub send_q: u32,
    pub timer: Option<Timer>,
    /// `struct tcp_info`, TCP sockets with a full socket (not `TIME_WAIT` or `SYN_RECV`) only.
    pub tcp_info: Option<TcpInfo>,
    pub owner: Owner,
    /// Keepalive options read from the socket (TCP sockets with a visible owner).
    pub opts: SockOpts,
}

impl RawSock {
    pub fn key(&self) -> SockKey {
        SockKey {
            netns: self.netns,
            cookie: self.cookie,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_follow_proto() {
        assert_eq!(SockState::from_kernel(7).name(Proto::Tcp), "CLOSE");
        assert_eq!(SockState::from_kernel(7).name(Proto::Udp), "UNCONN");
        assert_eq!(SockState::from_kernel(8).name(Proto::Tcp), "CLOSE_WAIT");
        assert_eq!(SockState::from_kernel(12), SockState::SynRecv);
        assert_eq!(SockState::from_kernel(99), SockState::Other(99));
    }

    #[test]
    fn endpoints_print_like_ss() {
        let v6: InetAddr = "[::1]:5432".parse().unwrap();
        assert_eq!(Endpoint::Inet(v6).to_string(), "[::1]:5432");
        let v4: InetAddr = "10.0.0.1:22".parse().unwrap();
        assert_eq!(Endpoint::Inet(v4).to_string(), "10.0.0.1:22");
        assert_eq!(
            Endpoint::Unix(Some("@abstract".into())).to_string(),
            "@abstract"
        );
        assert_eq!(Endpoint::Unix(None).to_string(), "*");
    }
}

#[cfg(test)]
mod size {
    /// Every socket is held twice (two poll buffers take turns) at 100k+ sockets: its size is
    /// a memory budget. The keepalive options fit where `Option<TcpInfo>`'s tag used to be;
    /// the RTO and the kernel's RTO-recovery clock (the dead-peer countdown with data in
    /// flight) cost 8 bytes; the uid and the namespace take 4 each.
    #[test]
    fn raw_sock_stays_184_bytes() {
        assert_eq!(std::mem::size_of::<super::RawSock>(), 184);
        assert_eq!(std::mem::size_of::<Option<super::Uid>>(), 4);
    }
}
