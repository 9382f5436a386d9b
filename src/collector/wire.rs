//! Lenient parser for `sock_diag` dump replies (`inet_diag_msg`, `unix_diag_msg`).
//!
//! Requests are encoded by netlink-packet-sock-diag; replies are parsed here because the crate
//! (0.5) drops `idiag_retrans` for keepalive and probe0 timers (the keepalive probe count), drops
//! the `TIME_WAIT` expiry, and with `rich_nlas` rejects a whole message whose `tcp_info` is
//! shorter than its struct. Here a short attribute only makes later fields absent, and a
//! malformed message is counted and skipped, never a panic and never the end of the dump.
//! Netlink framing and attributes use netlink-packet-core's buffers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NetlinkBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP};
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, AF_UNIX, INET_DIAG_INFO, SOCK_DIAG_BY_FAMILY, UNIX_DIAG_NAME,
    UNIX_DIAG_PEER, UNIX_DIAG_RQLEN,
};

use crate::model::tcp_info::TcpInfo;
use crate::model::SockOpts;
use crate::model::{
    Cookie, Endpoint, Family, InetAddr, Inode, NetnsId, Owner, Proto, RawSock, SockState, Timer,
    TimerKind,
};

/// `UNIX_DIAG_UID` (Linux 5.3+), not in the crate's constants.
const UNIX_DIAG_UID: u16 = 7;
/// `TCP_LISTEN`.
const TCP_LISTEN: u8 = 10;
/// `sizeof(struct inet_diag_msg)`.
const INET_DIAG_MSG_LEN: usize = 72;
/// `sizeof(struct unix_diag_msg)`.
const UNIX_DIAG_MSG_LEN: usize = 16;

/// What one received datagram meant for the dump in progress.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` seen: the dump is complete.
    Done,
}

/// A reply the kernel sent as an error, or framing too broken to go on reading.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// `NLMSG_ERROR` or a `NLMSG_DONE` carrying an error: a positive errno.
    #[error("the kernel answered the sock_diag request with errno {errno} ({msg})", errno = .0, msg = std::io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    #[error("malformed netlink framing at byte {offset}: {reason}")]
    Framing { offset: usize, reason: String },
    /// An error message whose code is no errno (not -4095..=-1): data, not a crash.
    #[error("the kernel answered with an error code out of range ({0})")]
    BadCode(i32),
}

/// The errno an `NLMSG_ERROR` / `NLMSG_DONE` code carries: `Ok(None)` for 0 or positive (an
/// ACK, or a dump's count), the errno for -4095..=-1, and an error for anything else.
pub fn kernel_errno(code: i32) -> Result<Option<rustix::io::Errno>, WireError> {
    match code {
        0.. => Ok(None),
        -4095..=-1 => Ok(Some(rustix::io::Errno::from_raw_os_error(-code))),
        _ => Err(WireError::BadCode(code)),
    }
}

/// Sockets parsed from one dump, with the messages that had to be skipped.
#[derive(Debug, Default)]
pub struct DumpSink<'a> {
    pub socks: Vec<RawSock>,
    /// Messages skipped as malformed, and the first reason.
    pub skipped: usize,
    pub first_skip: Option<String>,
    /// Where sockets go on as they come, in a streamed poll.
    pub hand_on: Option<HandOn<'a>>,
}

/// Offers a streamed poll's sockets as they come, a batch at a time.
pub struct HandOn<'a> {
    /// The sockets from here on have not been offered (the ones before were kept back).
    from: usize,
    /// A batch.
    every: usize,
    /// Takes out of `socks[from..]` the sockets it hands on; the rest stay, in order.
    take: &'a mut dyn FnMut(&mut Vec<RawSock>, usize),
}

impl<'a> HandOn<'a> {
    pub fn new(every: usize, take: &'a mut dyn FnMut(&mut Vec<RawSock>, usize)) -> Self {
        HandOn {
            from: 0,
            every: every.max(1),
            take,
        }
    }
}

impl std::fmt::Debug for HandOn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOn")
            .field("from", &self.from)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl DumpSink<'_> {
    fn skip(&mut self, reason: String) {
        self.skipped += 1;
        self.first_skip.get_or_insert(reason);
    }

    /// Offers the sockets that came since the last offer, once they make a batch (`all`: any
    /// that came).
    pub fn offer(&mut self, all: bool) {
        let Some(h) = &mut self.hand_on else {
            return;
        };
        // A reader that gave up dropped what it had read (the offered sockets are gone).
        h.from = h.from.min(self.socks.len());
        let came = self.socks.len() - h.from;
        if came >= h.every || (all && came > 0) {
            (h.take)(&mut self.socks, h.from);
            h.from = self.socks.len();
        }
    }
}

/// Parses one datagram of a dump reply for `proto`, appending sockets to `sink`.
pub fn parse_datagram(
    mut buf: &[u8],
    proto: Proto,
    netns: NetnsId,
    sink: &mut DumpSink<'_>,
) -> Result<Progress, WireError> {
    let mut offset = 0;
    while !buf.is_empty() {
        let msg = NetlinkBuffer::new_checked(buf).map_err(|e| WireError::Framing {
            offset,
            reason: e.to_string(),
        })?;
        let len = msg.length() as usize;
        let payload = msg.payload();
        match msg.message_type() {
            NLMSG_DONE => {
                return match kernel_errno(read_i32(payload, 0).unwrap_or(0))? {
                    Some(e) => Err(WireError::Kernel(e.raw_os_error())),
                    None => Ok(Progress::Done),
                };
            }
            NLMSG_ERROR => {
                // An error message with code 0 is an ACK; a dump has none, but it is no error.
                if let Some(e) = kernel_errno(read_i32(payload, 0).unwrap_or(0))? {
                    return Err(WireError::Kernel(e.raw_os_error()));
                }
            }
            NLMSG_NOOP => {}
            // TCP dumped for both families at once answers with its request's type.
            t if t == SOCK_DIAG_BY_FAMILY
                || (t == super::sock_diag::TCPDIAG_GETSOCK && proto == Proto::Tcp) =>
            {
                match parse_sock(payload, proto, netns) {
                    Ok(sock) => sink.socks.push(sock),
                    Err(reason) => sink.skip(reason),
                }
            }
            other => sink.skip(format!("unexpected message type {other}")),
        }
        // Messages are 4-byte aligned within a datagram.
        let step = (len + 3) & !3;
        offset += step;
        buf = buf.get(step..).unwrap_or_default();
    }
    sink.offer(false);
    Ok(Progress::More)
}

/// Whether a datagram ends the dump, without parsing its sockets (for timing the bare dump).
pub fn scan_done(mut buf: &[u8]) -> Progress {
    while let Ok(msg) = NetlinkBuffer::new_checked(buf) {
        if matches!(msg.message_type(), NLMSG_DONE | NLMSG_ERROR) {
            return Progress::Done;
        }
        let step = (msg.length() as usize + 3) & !3;
        buf = buf.get(step..).unwrap_or_default();
    }
    Progress::More
}

/// Parses the payload of one `SOCK_DIAG_BY_FAMILY` message.
pub fn parse_sock(payload: &[u8], proto: Proto, netns: NetnsId) -> Result<RawSock, String> {
    match payload.first().copied() {
        Some(AF_INET | AF_INET6) if proto != Proto::Unix => parse_inet(payload, proto, netns),
        Some(AF_UNIX) if proto == Proto::Unix => parse_unix(payload, netns),
        Some(af) => Err(format!(
            "unexpected address family {af} in a {} reply",
            proto.name()
        )),
        None => Err("empty message".into()),
    }
}

fn parse_inet(p: &[u8], proto: Proto, netns: NetnsId) -> Result<RawSock, String> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(format!(
            "inet_diag_msg is {} bytes, expected {INET_DIAG_MSG_LEN}",
            p.len()
        ));
    }
    let family = if p[0] == AF_INET {
        Family::Inet
    } else {
        Family::Inet6
    };
    let addr = |port_at: usize, addr_at: usize| {
        let port = u16::from_be_bytes([p[port_at], p[port_at + 1]]);
        let raw: [u8; 16] = p[addr_at..addr_at + 16].try_into().unwrap_or_default();
        let ip = match family {
            Family::Inet => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
            _ => IpAddr::V6(Ipv6Addr::from(raw)),
        };
        Endpoint::Inet(InetAddr::new(ip, port))
    };
    let timer_kind = TimerKind::from_kernel(p[2]);
    let u32_at = |at: usize| read_u32(p, at).unwrap_or(0);
    let mut tcp_info = None;
    for nla in NlasIterator::new(&p[INET_DIAG_MSG_LEN..]) {
        // A broken attribute ends the attributes, not the socket.
        let Ok(nla) = nla else { break };
        // A listener's tcp_info describes no connection (its rtt and bytes are zeros).
        if nla.kind() == INET_DIAG_INFO && proto == Proto::Tcp && p[1] != TCP_LISTEN {
            tcp_info = Some(TcpInfo::from_kernel_bytes(nla.value()));
        }
    }
    Ok(RawSock {
        proto,
        family,
        state: SockState::from_kernel(p[1]),
        local: addr(4, 8),
        remote: addr(6, 24),
        interface: u32_at(40),
        cookie: Cookie(u64::from(u32_at(44)) | (u64::from(u32_at(48)) << 32)),
        timer: timer_kind.map(|kind| Timer {
            kind,
            expires_ms: u32_at(52),
            retrans: p[3],
        }),
        recv_q: u32_at(56),
        send_q: u32_at(60),
        uid: crate::model::Uid::new(u32_at(64)),
        inode: Inode(u32_at(68)),
        netns,
        tcp_info,
        owner: Owner::None,
        opts: SockOpts::default(),
    })
}

fn parse_unix(p: &[u8], netns: NetnsId) -> Result<RawSock, String> {
    if p.len() < UNIX_DIAG_MSG_LEN {
        return Err(format!(
            "unix_diag_msg is {} bytes, expected {UNIX_DIAG_MSG_LEN}",
            p.len()
        ));
    }
    let u32_at = |at: usize| read_u32(p, at).unwrap_or(0);
    let mut sock = RawSock {
        proto: Proto::Unix,
        family: Family::Unix,
        state: SockState::from_kernel(p[2]),
        local: Endpoint::Unix(None),
        remote: Endpoint::UnixPeer(None),
        interface: 0,
        inode: Inode(u32_at(4)),
        cookie: Cookie(u64::from(u32_at(8)) | (u64::from(u32_at(12)) << 32)),
        netns,
        uid: None,
        recv_q: 0,
        send_q: 0,
        timer: None,
        tcp_info: None,
        owner: Owner::None,
        opts: SockOpts::default(),
    };
    for nla in NlasIterator::new(&p[UNIX_DIAG_MSG_LEN..]) {
        let Ok(nla) = nla else { break };
        let v = nla.value();
        match nla.kind() {
            UNIX_DIAG_NAME => sock.local = Endpoint::Unix(Some(unix_name(v).into())),
            UNIX_DIAG_PEER => {
                sock.remote = Endpoint::UnixPeer(read_u32(v, 0).filter(|&i| i != 0).map(Inode));
            }
            UNIX_DIAG_RQLEN => {
                sock.recv_q = read_u32(v, 0).unwrap_or(0);
                sock.send_q = read_u32(v, 4).unwrap_or(0);
            }
            UNIX_DIAG_UID => sock.uid = read_u32(v, 0).and_then(crate::model::Uid::new),
            _ => {}
        }
    }
    Ok(sock)
}

/// A Unix socket name: a path, or an abstract name (leading NUL) shown as `@name`, as `ss` does.
fn unix_name(v: &[u8]) -> String {
    if let Some((0, rest)) = v.split_first() {
        format!("@{}", String::from_utf8_lossy(rest))
    } else {
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
