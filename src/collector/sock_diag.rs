//! One netlink `NETLINK_SOCK_DIAG` socket and the dumps katop sends over it.
//!
//! Requests are built with netlink-packet-sock-diag; replies go to [`super::wire`].

use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkSerializable, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::SOCK_DIAG_BY_FAMILY;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, AF_UNIX, IPPROTO_TCP, IPPROTO_UDP, UDIAG_SHOW_NAME, UDIAG_SHOW_PEER,
    UDIAG_SHOW_RQLEN,
};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::unix::{self, ShowFlags, UnixRequest};
use netlink_packet_sock_diag::{SockDiagDestroy, SockDiagMessage};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use super::wire::{self, DumpSink, Progress};
use crate::error::CollectError;
use crate::model::{Cookie, Endpoint, Family, InetAddr, NetnsId, Proto, RawSock};

/// `UDIAG_SHOW_UID` (0x40, Linux 5.3+), not in the crate's flags; its attribute is `UNIX_DIAG_UID` (7).
const UDIAG_SHOW_UID: u32 = 1 << 6;
/// Receive buffer: the kernel fills up to this much per datagram of a dump.
const RECV_BUF: usize = 64 * 1024;
/// `TCPDIAG_GETSOCK`: the original `inet_diag` request (`struct inet_diag_req`), which the
/// kernel still serves (`inet_diag_rcv_msg_compat`) for both address families at once
/// (`AF_UNSPEC`). Its replies carry this type instead of `SOCK_DIAG_BY_FAMILY`.
pub const TCPDIAG_GETSOCK: u16 = 18;

/// What one dump asks for: a protocol over one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpKind {
    pub proto: Proto,
    pub family: Family,
}

impl DumpKind {
    pub const TCP4: DumpKind = DumpKind {
        proto: Proto::Tcp,
        family: Family::Inet,
    };
    pub const TCP6: DumpKind = DumpKind {
        proto: Proto::Tcp,
        family: Family::Inet6,
    };
    pub const UDP4: DumpKind = DumpKind {
        proto: Proto::Udp,
        family: Family::Inet,
    };
    pub const UDP6: DumpKind = DumpKind {
        proto: Proto::Udp,
        family: Family::Inet6,
    };
    pub const UNIX: DumpKind = DumpKind {
        proto: Proto::Unix,
        family: Family::Unix,
    };

    /// For error messages: "tcp/inet6".
    pub fn label(self) -> &'static str {
        match (self.proto, self.family) {
            (Proto::Tcp, Family::Inet) => "tcp/inet",
            (Proto::Tcp, _) => "tcp/inet6",
            (Proto::Udp, Family::Inet) => "udp/inet",
            (Proto::Udp, _) => "udp/inet6",
            (Proto::Unix, _) => "unix",
        }
    }

    fn request(self) -> SockDiagMessage {
        let family = match self.family {
            Family::Inet => AF_INET,
            Family::Inet6 => AF_INET6,
            Family::Unix => AF_UNIX,
        };
        let inet = |protocol, extensions| {
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions,
                states: StateFlags::all(),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            })
        };
        match self.proto {
            Proto::Tcp => inet(IPPROTO_TCP, ExtensionFlags::INFO),
            Proto::Udp => inet(IPPROTO_UDP, ExtensionFlags::empty()),
            Proto::Unix => SockDiagMessage::UnixRequest(UnixRequest {
                state_flags: unix::StateFlags::all(),
                inode: 0,
                show_flags: ShowFlags::from_bits_retain(
                    UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID,
                ),
                cookie: [0xff; 8],
            }),
        }
    }
}

/// The kernel's identity of one TCP or UDP socket: what `SOCK_DESTROY` and an exact lookup
/// match. The cookie makes it exact: a later socket that reuses the same ports has another one,
/// and the kernel answers `ESTALE` instead of acting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetSockId {
    pub proto: Proto,
    pub family: Family,
    pub local: InetAddr,
    pub remote: InetAddr,
    pub interface: u32,
    pub cookie: Cookie,
}

impl InetSockId {
    /// The id of an inet socket from a dump; `None` for Unix sockets.
    pub fn of(sock: &RawSock) -> Option<Self> {
        match (&sock.local, &sock.remote, sock.proto) {
            (Endpoint::Inet(local), Endpoint::Inet(remote), Proto::Tcp | Proto::Udp) => {
                Some(InetSockId {
                    proto: sock.proto,
                    family: sock.family,
                    local: *local,
                    remote: *remote,
                    interface: sock.interface,
                    cookie: sock.cookie,
                })
            }
            _ => None,
        }
    }

    fn request(&self) -> SockDiagMessage {
        let v4 = self.family == Family::Inet;
        // The kernel splits the cookie into two native-endian u32s, low word first.
        let mut cookie = [0u8; 8];
        cookie[..4].copy_from_slice(&(self.cookie.0 as u32).to_ne_bytes());
        cookie[4..].copy_from_slice(&((self.cookie.0 >> 32) as u32).to_ne_bytes());
        let ip = |ip: IpAddr| match (v4, ip) {
            (false, IpAddr::V4(a)) => IpAddr::V6(a.to_ipv6_mapped()),
            _ => ip,
        };
        SockDiagMessage::InetRequest(InetRequest {
            family: if v4 { AF_INET } else { AF_INET6 },
            protocol: if self.proto == Proto::Udp {
                IPPROTO_UDP
            } else {
                IPPROTO_TCP
            },
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: self.local.port(),
                destination_port: self.remote.port(),
                source_address: ip(self.local.ip()),
                destination_address: ip(self.remote.ip()),
                interface_id: self.interface,
                cookie,
            },
        })
    }
}

/// A connected `sock_diag` socket, reused across polls.
pub struct DiagSocket {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
    /// Whether the kernel refused the one-walk TCP dump ([`TCPDIAG_GETSOCK`]): then TCP is
    /// dumped one family at a time.
    no_tcp_any: bool,
}

/// The `TCPDIAG_GETSOCK` request for every TCP socket of both families, with `tcp_info`:
/// `struct inet_diag_req` after the netlink header (`include/uapi/linux/inet_diag.h`).
fn tcp_any_request(seq: u32) -> Vec<u8> {
    const REQ_LEN: usize = 60;
    let mut b = Vec::with_capacity(16 + REQ_LEN);
    b.extend_from_slice(&(16 + REQ_LEN as u32).to_ne_bytes());
    b.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // idiag_family (AF_UNSPEC: both), idiag_src_len, idiag_dst_len, idiag_ext.
    b.extend_from_slice(&[0, 0, 0, ExtensionFlags::INFO.bits()]);
    // struct inet_diag_sockid: ports, addresses and interface 0 (any); no cookie.
    b.extend_from_slice(&[0; 2 + 2 + 16 + 16 + 4]);
    b.extend_from_slice(&[0xff; 8]);
    b.extend_from_slice(&StateFlags::all().bits().to_ne_bytes());
    // idiag_dbs
    b.extend_from_slice(&0u32.to_ne_bytes());
    debug_assert_eq!(b.len(), 16 + REQ_LEN);
    b
}

impl DiagSocket {
    pub fn open() -> Result<Self, CollectError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(CollectError::Open)?;
        socket.bind_auto().map_err(CollectError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(CollectError::Open)?;
        Ok(DiagSocket {
            socket,
            buf: vec![0; RECV_BUF],
            seq: 0,
            no_tcp_any: false,
        })
    }

    /// Dumps every kind in `kinds` into `sink`. TCP of both families is one dump, where the
    /// kernel allows: each dump walks the whole TCP hash table (262k buckets and every
    /// socket of either family), so a second family's dump costs as much again.
    pub fn dump_each(
        &mut self,
        kinds: &[DumpKind],
        netns: NetnsId,
        sink: &mut DumpSink,
    ) -> Result<(), CollectError> {
        let both =
            !self.no_tcp_any && kinds.contains(&DumpKind::TCP4) && kinds.contains(&DumpKind::TCP6);
        for &kind in kinds {
            if both && kind == DumpKind::TCP6 {
                continue;
            }
            if both && kind == DumpKind::TCP4 {
                let before = sink.socks.len();
                match self.dump_tcp_any(netns, sink) {
                    Ok(()) => continue,
                    // Refused before any socket came: dumped by family from now on.
                    Err(CollectError::Reply {
                        source: wire::WireError::Kernel(_),
                        ..
                    }) if sink.socks.len() == before => {
                        self.no_tcp_any = true;
                        self.dump(DumpKind::TCP4, netns, sink)?;
                        self.dump(DumpKind::TCP6, netns, sink)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.dump(kind, netns, sink)?;
        }
        Ok(())
    }

    /// Every TCP socket of both families, in one walk ([`TCPDIAG_GETSOCK`]).
    fn dump_tcp_any(&mut self, netns: NetnsId, sink: &mut DumpSink) -> Result<(), CollectError> {
        let what = "tcp";
        self.ensure_buffer();
        self.seq = self.seq.wrapping_add(1);
        self.socket
            .send(&tcp_any_request(self.seq), 0)
            .map_err(|source| CollectError::Send { what, source })?;
        self.receive_dump(what, |datagram| {
            wire::parse_datagram(datagram, Proto::Tcp, netns, sink)
                .map_err(|source| CollectError::Reply { what, source })
        })
    }

    /// Dumps every socket of `kind` into `sink`.
    pub fn dump(
        &mut self,
        kind: DumpKind,
        netns: NetnsId,
        sink: &mut DumpSink,
    ) -> Result<(), CollectError> {
        self.dump_raw(kind, |datagram| {
            wire::parse_datagram(datagram, kind.proto, netns, sink).map_err(|source| {
                CollectError::Reply {
                    what: kind.label(),
                    source,
                }
            })
        })
    }

    /// Asks the kernel to destroy exactly this socket (`SOCK_DESTROY`, as `ss -K` does): TCP
    /// sends the peer an RST and the owner gets `ECONNABORTED`. The inner error is the
    /// kernel's refusal: `ENOENT`/`ESTALE` no such socket, `EPERM` no `CAP_NET_ADMIN`,
    /// `EOPNOTSUPP` no `CONFIG_INET_DIAG_DESTROY`.
    pub fn destroy(
        &mut self,
        id: &InetSockId,
    ) -> Result<Result<(), rustix::io::Errno>, CollectError> {
        let reply = self.exact(SockDiagDestroy::new(id.request()), NLM_F_ACK)?;
        Ok(match reply {
            Exact::Errno(e) => Err(e),
            Exact::Ack | Exact::Sock(_) => Ok(()),
        })
    }

    /// The kernel's current view of exactly this socket; `None` when it no longer exists (no
    /// socket with that id, or one with another cookie).
    pub fn lookup(
        &mut self,
        id: &InetSockId,
        netns: NetnsId,
    ) -> Result<Option<RawSock>, CollectError> {
        let what = "lookup";
        match self.exact(id.request(), 0)? {
            Exact::Sock(payload) => wire::parse_sock(&payload, id.proto, netns)
                .map(Some)
                .map_err(|reason| CollectError::Reply {
                    what,
                    source: wire::WireError::Framing { offset: 0, reason },
                }),
            Exact::Errno(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::STALE => {
                Ok(None)
            }
            Exact::Errno(e) => Err(CollectError::Reply {
                what,
                source: wire::WireError::Kernel(e.raw_os_error()),
            }),
            Exact::Ack => Ok(None),
        }
    }

    /// Sends one request under the next sequence number.
    fn send<M: NetlinkSerializable>(
        &mut self,
        payload: M,
        flags: u16,
        what: &'static str,
    ) -> Result<(), CollectError>
    where
        netlink_packet_core::NetlinkPayload<M>: From<M>,
    {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, payload.into());
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket
            .send(&out, 0)
            .map(drop)
            .map_err(|source| CollectError::Send { what, source })
    }

    /// Sends one non-dump request and reads its one answer (replies to other sequence numbers,
    /// e.g. the tail of an abandoned dump, are skipped).
    fn exact<M: NetlinkSerializable>(
        &mut self,
        payload: M,
        extra_flags: u16,
    ) -> Result<Exact, CollectError>
    where
        netlink_packet_core::NetlinkPayload<M>: From<M>,
    {
        let what = "single-socket";
        self.ensure_buffer();
        self.send(payload, NLM_F_REQUEST | extra_flags, what)?;
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|source| CollectError::Recv { what, source })?;
            let datagram = &self.buf[..n.min(self.buf.len())];
            if let Some(answer) = answer_in(datagram, self.seq)
                .map_err(|source| CollectError::Reply { what, source })?
            {
                return Ok(answer);
            }
            if n == 0 {
                return Ok(Exact::Ack);
            }
        }
    }

    fn ensure_buffer(&mut self) {
        if self.buf.len() < RECV_BUF {
            self.buf.resize(RECV_BUF, 0);
        }
    }

    /// Gives back the receive buffer until the next request: a namespace kept open between
    /// its dumps costs its socket alone, not 64 KiB (thousands may be kept open).
    pub fn release_buffer(&mut self) {
        self.buf = Vec::new();
    }

    /// Sends the dump request for `kind` and hands each reply datagram to `on_datagram` until it
    /// says the dump is done. Also used to capture fixtures and to time the bare dump.
    pub fn dump_raw(
        &mut self,
        kind: DumpKind,
        on_datagram: impl FnMut(&[u8]) -> Result<Progress, CollectError>,
    ) -> Result<(), CollectError> {
        self.ensure_buffer();
        self.send(kind.request(), NLM_F_REQUEST | NLM_F_DUMP, kind.label())?;
        self.receive_dump(kind.label(), on_datagram)
    }

    /// Hands each datagram of the dump just asked for to `on_datagram` until it says the
    /// dump is done.
    fn receive_dump(
        &mut self,
        what: &'static str,
        mut on_datagram: impl FnMut(&[u8]) -> Result<Progress, CollectError>,
    ) -> Result<(), CollectError> {
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|source| CollectError::Recv { what, source })?;
            let n = n.min(self.buf.len());
            if n == 0 || on_datagram(&self.buf[..n])? == Progress::Done {
                return Ok(());
            }
        }
    }
}

/// The answer to request `seq` in one datagram, if it holds one; every value in it is data
/// (an out-of-range error code is an error, never a panic).
fn answer_in(mut buf: &[u8], seq: u32) -> Result<Option<Exact>, wire::WireError> {
    while let Ok(msg) = NetlinkBuffer::new_checked(buf) {
        let step = (msg.length() as usize + 3) & !3;
        if msg.sequence_number() == seq {
            let payload = msg.payload();
            match msg.message_type() {
                NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, i32::from_ne_bytes);
                    return Ok(Some(match wire::kernel_errno(code)? {
                        Some(e) => Exact::Errno(e),
                        None => Exact::Ack,
                    }));
                }
                SOCK_DIAG_BY_FAMILY => return Ok(Some(Exact::Sock(payload.to_vec()))),
                _ => {}
            }
        }
        buf = buf.get(step..).unwrap_or_default();
    }
    Ok(None)
}

/// One answer to a non-dump request.
#[derive(Debug, PartialEq, Eq)]
enum Exact {
    Ack,
    Errno(rustix::io::Errno),
    /// A `SOCK_DIAG_BY_FAMILY` payload.
    Sock(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` answering `seq` with `code`.
    fn error_msg(seq: u32, code: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&20u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        b
    }

    #[test]
    fn error_codes_out_of_range_are_errors_not_panics() {
        assert_eq!(
            answer_in(&error_msg(7, -2), 7).unwrap(),
            Some(Exact::Errno(rustix::io::Errno::NOENT))
        );
        assert_eq!(answer_in(&error_msg(7, 0), 7).unwrap(), Some(Exact::Ack));
        for code in [i32::MIN, -4096, -70_000] {
            assert_eq!(
                answer_in(&error_msg(7, code), 7),
                Err(wire::WireError::BadCode(code)),
                "{code}"
            );
        }
        // Another request's answer is skipped.
        assert_eq!(answer_in(&error_msg(6, i32::MIN), 7).unwrap(), None);
    }

    /// The cookies of this process's listeners in a dump of `kinds`.
    fn dumped(diag: &mut DiagSocket, kinds: &[DumpKind], ports: &[u16]) -> Vec<(Family, u16)> {
        let mut sink = DumpSink::default();
        diag.dump_each(kinds, NetnsId(0), &mut sink).unwrap();
        let mut found: Vec<(Family, u16)> = sink
            .socks
            .iter()
            .filter(|s| s.state == crate::model::SockState::Listen)
            .filter_map(|s| Some((s.family, s.local.port()?)))
            .filter(|(_, p)| ports.contains(p))
            .collect();
        found.sort_by_key(|&(f, p)| (f == Family::Inet6, p));
        found
    }

    #[test]
    fn tcp_of_both_families_is_one_dump_with_what_two_would_give() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let Ok(v6) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let ports = [
            v4.local_addr().unwrap().port(),
            v6.local_addr().unwrap().port(),
        ];
        let want = vec![(Family::Inet, ports[0]), (Family::Inet6, ports[1])];
        let both = [DumpKind::TCP4, DumpKind::TCP6];
        let mut diag = DiagSocket::open().unwrap();
        let mut sink = DumpSink::default();
        diag.dump_tcp_any(NetnsId(0), &mut sink)
            .expect("this kernel serves TCPDIAG_GETSOCK");
        assert_eq!(dumped(&mut diag, &both, &ports), want, "one walk");
        assert!(!diag.no_tcp_any);
        diag.no_tcp_any = true;
        assert_eq!(
            dumped(&mut diag, &both, &ports),
            want,
            "one family at a time"
        );
        diag.no_tcp_any = false;
        assert_eq!(
            dumped(&mut diag, &[DumpKind::TCP6], &ports),
            want[1..],
            "IPv6 alone"
        );
    }

    #[test]
    fn the_one_walk_request_is_an_inet_diag_req() {
        let b = tcp_any_request(9);
        assert_eq!(b.len(), 76);
        assert_eq!(u32::from_ne_bytes(b[..4].try_into().unwrap()), 76);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 18);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 9);
        // AF_UNSPEC, then INET_DIAG_INFO's bit (1 << (2 - 1)).
        assert_eq!((b[16], b[19]), (0, 2));
        // Every state (1..=11; the kernel adds NEW_SYN_RECV to SYN_RECV), after the sockid.
        assert_eq!(
            u32::from_ne_bytes(b[68..72].try_into().unwrap()) & 0xffe,
            0xffe
        );
    }
}
