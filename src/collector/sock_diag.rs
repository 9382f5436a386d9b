//! One netlink `NETLINK_SOCK_DIAG` socket and the dumps katop sends over it.
//!
//! Requests are built with netlink-packet-sock-diag; replies go to [`super::wire`].

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, AF_UNIX, IPPROTO_TCP, IPPROTO_UDP, UDIAG_SHOW_NAME, UDIAG_SHOW_PEER,
    UDIAG_SHOW_RQLEN,
};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::unix::{self, ShowFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use super::wire::{self, DumpSink, Progress};
use crate::error::CollectError;
use crate::model::{Family, NetnsId, Proto};

/// `UDIAG_SHOW_UID` (0x40, Linux 5.3+), not in the crate's flags; its attribute is `UNIX_DIAG_UID` (7).
const UDIAG_SHOW_UID: u32 = 1 << 6;
/// Receive buffer: the kernel fills up to this much per datagram of a dump.
const RECV_BUF: usize = 64 * 1024;

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

/// A connected `sock_diag` socket, reused across polls.
pub struct DiagSocket {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
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

    /// Sends the dump request for `kind` and hands each reply datagram to `on_datagram` until it
    /// says the dump is done. Also used to capture fixtures and to time the bare dump.
    pub fn dump_raw(
        &mut self,
        kind: DumpKind,
        mut on_datagram: impl FnMut(&[u8]) -> Result<Progress, CollectError>,
    ) -> Result<(), CollectError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, kind.request().into());
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket
            .send(&out, 0)
            .map_err(|source| CollectError::Send {
                what: kind.label(),
                source,
            })?;
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|source| CollectError::Recv {
                    what: kind.label(),
                    source,
                })?;
            let n = n.min(self.buf.len());
            if n == 0 || on_datagram(&self.buf[..n])? == Progress::Done {
                return Ok(());
            }
        }
    }
}
