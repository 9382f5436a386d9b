//! The BPF TCP reader: every TCP socket of katop's network namespace in one pass of the
//! kernel's `tcp` iterator (`tcp_iter.bpf.c`), in place of the `sock_diag` dump with
//! `tcp_info`. The sockets are the same and so is what katop keeps of each (the program
//! computes every field as `inet_diag` and `tcp_get_info` do); the kernel's cost is a fraction:
//! at 1M sockets the dump fills a netlink message and a 280-byte `tcp_info` per socket.
//!
//! Optional, as the fd reader is ([`super::fd_iter`]; both load through
//! [`super::bpf_iter`]): clang at build time, BTF and the privileges to load a tracing program
//! at run time, and never when katop gained privileges at exec. Where it does not load, or a pass fails, the `sock_diag` dump gives the same.
//!
//! Every pass checks itself against a listening socket katop opens for it on 127.0.0.1 (port,
//! inode, owner, state) and whose keepalive time it set: that gives the kernel's `HZ`, which
//! the clocks are counted in. That socket is left out of what the pass lists and closed after
//! it, so no dump nor any other tool sees it for longer than a pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::{sockopt, AddressFamily, SocketType};

use super::bpf_iter;
use super::wire::DumpSink;
use crate::model::tcp_info::TcpInfo;

use crate::model::{
    Cookie, Endpoint, Family, InetAddr, Inode, NetnsId, Owner, Proto, RawSock, SockOpts, SockState,
    Timer, TimerKind,
};

/// The object build.rs made; empty when clang was not there.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tcp_iter.bpf.o"));

/// The program's name in the object.
const PROGRAM: &str = "katop_tcp";
/// Bytes per record (`struct record` in `tcp_iter.bpf.c`).
const RECORD: usize = 144;
const REC_FULL: u8 = 1;
const REC_UNREAD: u8 = 2;
const AF_INET6: u8 = 10;
const TCP_LISTEN: u8 = 10;

/// The check socket's keepalive time: large, so `HZ` divides out exactly.
const CHECK_IDLE_S: u32 = 1000;

/// The longest a pass may take before the dump is used instead (a million sockets take about a
/// second). Checked between reads: a read waits, as the dump does, for a socket whose lock
/// its owner holds.
pub const PASS_BUDGET: Duration = Duration::from_secs(10);

/// A loaded iterator program.
pub struct TcpReader {
    ebpf: aya::Ebpf,
}

impl std::fmt::Debug for TcpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpReader").finish_non_exhaustive()
    }
}

/// katop's own listener: what a pass must say of it.
struct Check {
    _fd: OwnedFd,
    port: u16,
    inode: u32,
    uid: u32,
}

impl TcpReader {
    /// Loads the program, or says why it cannot be used here.
    pub fn open() -> Result<Self, String> {
        Self::open_with(None)
    }

    /// [`TcpReader::open`] with the kernel's BTF parsed already
    /// ([`super::bpf_iter::kernel_btf`]).
    pub fn open_with(btf: Option<&aya::Btf>) -> Result<Self, String> {
        // The records are written in the host's order; parsed as little-endian.
        if cfg!(target_endian = "big") {
            return Err("the TCP reader reads little-endian records only".into());
        }
        let ebpf = bpf_iter::load(OBJECT, PROGRAM, "tcp", btf)?;
        Ok(Self { ebpf })
    }

    /// Appends every TCP socket of the calling thread's network namespace to `socks`, as
    /// `netns`'s: those of `families` only. On an error nothing is appended.
    pub fn read_into(
        &mut self,
        netns: NetnsId,
        families: (bool, bool),
        socks: &mut Vec<RawSock>,
    ) -> Result<(), String> {
        let mut sink = DumpSink {
            socks: std::mem::take(socks),
            ..DumpSink::default()
        };
        let result = self.read_within(PASS_BUDGET, netns, families, &mut sink);
        *socks = sink.socks;
        result
    }

    /// [`TcpReader::read_into`] a sink (which may hand the sockets on as they come), given up
    /// once it has taken longer than `budget`.
    pub fn read_within(
        &mut self,
        budget: Duration,
        netns: NetnsId,
        families: (bool, bool),
        sink: &mut DumpSink<'_>,
    ) -> Result<(), String> {
        let before = sink.socks.len();
        let result = self.pass(budget, netns, families, sink);
        if result.is_err() {
            // What the pass read and kept back goes (what it handed on was read whole).
            sink.socks.truncate(before);
        }
        result
    }

    fn pass(
        &mut self,
        budget: Duration,
        netns: NetnsId,
        (ipv4, ipv6): (bool, bool),
        sink: &mut DumpSink<'_>,
    ) -> Result<(), String> {
        // Made for this pass and closed with it (listening on 127.0.0.1, so that the iterator
        // lists it).
        let check = Check::open().map_err(|e| format!("making the check socket: {e}"))?;
        // Listeners wait here until the check socket's record gives HZ: the iterator walks
        // the listening hash before the established one, so only listeners can come first.
        let mut waiting: Vec<Record> = Vec::new();
        let mut clock: Option<Clock> = None;
        bpf_iter::pass(
            &mut self.ebpf,
            PROGRAM,
            RECORD,
            (budget, "the TCP sockets"),
            |raw| {
                let r = Record::parse(raw);
                if r.flags & REC_UNREAD != 0 {
                    return Err("the TCP iterator could not read a socket".into());
                }
                if r.is_check(&check) {
                    let c = check.verify(&r)?;
                    sink.socks
                        .extend(waiting.drain(..).map(|w| w.sock(c, netns)));
                    clock = Some(c);
                    return Ok(());
                }
                if !(if r.family == AF_INET6 { ipv6 } else { ipv4 }) {
                    return Ok(());
                }
                match &clock {
                    Some(c) => {
                        sink.socks.push(r.sock(*c, netns));
                        sink.offer(false);
                    }
                    None if r.state == TCP_LISTEN => waiting.push(r),
                    None => {
                        return Err(
                            "the TCP iterator listed a connection before its listeners".into()
                        )
                    }
                }
                Ok(())
            },
        )?;
        if clock.is_none() {
            return Err("the TCP iterator did not list katop's own check socket".into());
        }
        Ok(())
    }
}

impl Check {
    fn open() -> rustix::io::Result<Check> {
        let fd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        sockopt::set_tcp_keepidle(&fd, Duration::from_secs(CHECK_IDLE_S.into()))?;
        rustix::net::bind(&fd, &std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        // Listening, so the iterator lists it; a backlog of 0 queues at most one stranger.
        rustix::net::listen(&fd, 0)?;
        let port = std::net::SocketAddrV4::try_from(rustix::net::getsockname(&fd)?)
            .map_err(|_| rustix::io::Errno::AFNOSUPPORT)?
            .port();
        // The socket's owner, as the kernel records it (the creator's fsuid).
        let stat = rustix::fs::fstat(&fd)?;
        Ok(Check {
            _fd: fd,
            port,
            inode: stat.st_ino as u32,
            uid: stat.st_uid,
        })
    }

    /// The pass's record of this socket, checked: the clock it gives.
    fn verify(&self, r: &Record) -> Result<Clock, String> {
        let ok = r.state == TCP_LISTEN
            && r.uid == self.uid
            && r.flags & REC_FULL != 0
            && r.ip(&r.src) == IpAddr::V4(Ipv4Addr::LOCALHOST);
        let hz = r.keepalive_time_jiffies / CHECK_IDLE_S;
        if !ok || hz == 0 || !r.keepalive_time_jiffies.is_multiple_of(CHECK_IDLE_S) {
            return Err(format!(
                "the TCP iterator disagrees with katop's check socket (state {}, uid {}, \
                 keepalive {} jiffies)",
                r.state, r.uid, r.keepalive_time_jiffies
            ));
        }
        Ok(Clock { hz })
    }
}

/// The kernel's clock rate, and its conversions as kernel/time/time.c makes them on a 64-bit
/// kernel: `j * (unit / HZ)` where HZ divides the unit; else `jiffies_to_msecs` rounds up
/// (`DIV_ROUND_UP(j * NUM, DEN)`, the ratio in lowest terms) and `jiffies_to_usecs` down;
/// either way truncated to 32 bits.
#[derive(Debug, Clone, Copy)]
struct Clock {
    hz: u32,
}

impl Clock {
    fn to(self, unit: u64, j: u32, round_up: bool) -> u32 {
        let hz = u64::from(self.hz);
        let g = gcd(unit, hz);
        let (num, den) = (u64::from(j) * (unit / g), hz / g);
        let v = if round_up {
            num.div_ceil(den)
        } else {
            num / den
        };
        v as u32
    }

    fn ms(self, j: u32) -> u32 {
        self.to(1000, j, true)
    }

    fn us(self, j: u32) -> u32 {
        self.to(1_000_000, j, false)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One record, as the program wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    cookie: u64,
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    inode: u32,
    uid: u32,
    rqueue: u32,
    wqueue: u32,
    expires_jiffies: u32,
    sport: u16,
    dport: u16,
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    /// `tcp_info`'s `ca_state`, `retransmits`, `probes`, `backoff`.
    counts: [u8; 4],
    rto_jiffies: u32,
    /// Since the last data sent, the last data received, the last ACK received.
    since_jiffies: [u32; 3],
    rtt_us: u32,
    rttvar_us: u32,
    total_retrans: u32,
    bytes: [u64; 3],
    total_rto_recoveries: u16,
    info_len: u16,
    total_rto_time_ms: u32,
    keepalive_time_jiffies: u32,
    flags: u8,
    has_rto_fields: bool,
}

impl Record {
    fn parse(raw: &[u8]) -> Self {
        let u16_at = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or_default());
        let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or_default());
        let addr = |at: usize| <[u8; 16]>::try_from(&raw[at..at + 16]).unwrap_or_default();
        Record {
            cookie: u64_at(0),
            src: addr(8),
            dst: addr(24),
            ifindex: u32_at(40),
            inode: u32_at(44),
            uid: u32_at(48),
            rqueue: u32_at(52),
            wqueue: u32_at(56),
            expires_jiffies: u32_at(60),
            sport: u16_at(64),
            dport: u16_at(66),
            family: raw[68],
            state: raw[69],
            timer: raw[70],
            retrans: raw[71],
            counts: [raw[72], raw[73], raw[74], raw[75]],
            rto_jiffies: u32_at(76),
            since_jiffies: [u32_at(80), u32_at(84), u32_at(88)],
            rtt_us: u32_at(92),
            rttvar_us: u32_at(96),
            total_retrans: u32_at(100),
            bytes: [u64_at(104), u64_at(112), u64_at(120)],
            total_rto_recoveries: u16_at(128),
            info_len: u16_at(130),
            total_rto_time_ms: u32_at(132),
            keepalive_time_jiffies: u32_at(136),
            flags: raw[140],
            has_rto_fields: raw[141] != 0,
        }
    }

    fn is_check(&self, check: &Check) -> bool {
        self.inode == check.inode && self.sport == check.port && self.family != AF_INET6
    }

    fn ip(&self, raw: &[u8; 16]) -> IpAddr {
        if self.family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(*raw))
        } else {
            IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
        }
    }

    /// The socket as the `sock_diag` parser makes it from the same kernel state.
    fn sock(&self, clock: Clock, netns: NetnsId) -> RawSock {
        let full = self.flags & REC_FULL != 0;
        RawSock {
            proto: Proto::Tcp,
            family: if self.family == AF_INET6 {
                Family::Inet6
            } else {
                Family::Inet
            },
            state: SockState::from_kernel(self.state),
            local: Endpoint::Inet(InetAddr::new(self.ip(&self.src), self.sport)),
            remote: Endpoint::Inet(InetAddr::new(self.ip(&self.dst), self.dport)),
            interface: self.ifindex,
            cookie: Cookie(self.cookie),
            timer: TimerKind::from_kernel(self.timer).map(|kind| Timer {
                kind,
                expires_ms: clock.ms(self.expires_jiffies),
                retrans: self.retrans,
            }),
            recv_q: self.rqueue,
            send_q: self.wqueue,
            uid: crate::model::Uid::new(self.uid),
            inode: Inode(self.inode),
            netns,
            // As the parser: a listener's describes no connection.
            tcp_info: (full && self.state != TCP_LISTEN).then(|| self.tcp_info(clock)),
            owner: Owner::None,
            opts: SockOpts::default(),
        }
    }

    /// `struct tcp_info` as long as this kernel's, the fields katop reads at their uapi
    /// offsets (include/uapi/linux/tcp.h).
    fn tcp_info(&self, clock: Clock) -> TcpInfo {
        let mut buf = [0u8; 512];
        let len = usize::from(self.info_len).clamp(1, buf.len());
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(dst) = buf
                .get_mut(at..at + bytes.len())
                .filter(|_| at + bytes.len() <= len)
            {
                dst.copy_from_slice(bytes);
            }
        };
        put(1, &self.counts);
        put(8, &clock.us(self.rto_jiffies).to_ne_bytes());
        put(44, &clock.ms(self.since_jiffies[0]).to_ne_bytes());
        put(52, &clock.ms(self.since_jiffies[1]).to_ne_bytes());
        put(56, &clock.ms(self.since_jiffies[2]).to_ne_bytes());
        put(68, &self.rtt_us.to_ne_bytes());
        put(72, &self.rttvar_us.to_ne_bytes());
        put(100, &self.total_retrans.to_ne_bytes());
        put(120, &self.bytes[0].to_ne_bytes());
        put(128, &self.bytes[1].to_ne_bytes());
        put(200, &self.bytes[2].to_ne_bytes());
        if self.has_rto_fields {
            put(242, &self.total_rto_recoveries.to_ne_bytes());
            put(244, &self.total_rto_time_ms.to_ne_bytes());
        }
        TcpInfo::from_kernel_bytes(&buf[..len])
    }
}

/// When the collector reads its own namespace's TCP sockets with the reader: in polls that
/// expect at least `from` sockets (below, loading it costs more than the dump), once it has
/// loaded (tried once; a failed pass turns it off, and the dump gives the same).
#[derive(Debug)]
pub struct TcpSource {
    reader: super::bpf_iter::Reader<TcpReader>,
    from: usize,
    /// Whether the last poll read TCP with it.
    pub used: bool,
}

impl TcpSource {
    pub fn new(bpf_from: Option<usize>) -> Self {
        TcpSource {
            reader: super::bpf_iter::Reader::new(bpf_from.is_some()),
            from: bpf_from.unwrap_or(usize::MAX),
            used: false,
        }
    }

    /// Loads the reader ahead of a first poll that will want it (`expected` sockets, as the
    /// kernel counts them), with the kernel's BTF the collector parsed for both readers.
    pub fn prepare(&mut self, expected: usize, btf: Option<&aya::Btf>) {
        if expected >= self.from {
            self.reader.load(|| TcpReader::open_with(btf));
        }
    }

    /// Why the reader is off though it was wanted (it failed to load, or a pass failed).
    pub fn off(&self) -> Option<&str> {
        self.reader.why_off()
    }

    /// Reads the TCP sockets of `dumps` (either family or both) into `socks` with the reader,
    /// where it is used for `expected` sockets, and takes them out of `dumps`; else leaves
    /// `dumps` whole for the `sock_diag` dump.
    pub fn take(
        &mut self,
        dumps: &mut Vec<super::sock_diag::DumpKind>,
        expected: usize,
        netns: NetnsId,
        sink: &mut DumpSink<'_>,
    ) {
        use super::sock_diag::DumpKind;
        self.used = false;
        let families = (
            dumps.contains(&DumpKind::TCP4),
            dumps.contains(&DumpKind::TCP6),
        );
        // The iterator lists the namespace of the thread that makes it: never another's.
        if families == (false, false) || expected < self.from || super::current_netns() != netns {
            return;
        }
        self.reader.load(TcpReader::open);
        let Some(reader) = self.reader.ready() else {
            return;
        };
        if let Err(why) = reader.read_within(PASS_BUDGET, netns, families, sink) {
            self.reader.failed_pass(&why);
            return;
        }
        dumps.retain(|k| *k != DumpKind::TCP4 && *k != DumpKind::TCP6);
        self.used = true;
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn jiffies_convert_as_the_kernel_converts_them() {
        // (HZ, jiffies, jiffies_to_msecs, jiffies_to_usecs), from kernel/time/time.c's formulas.
        for (hz, j, ms, us) in [
            (100, 7, 70, 70_000),
            (250, 7, 28, 28_000),
            (
                250,
                u32::MAX,
                u32::MAX.wrapping_mul(4),
                u32::MAX.wrapping_mul(4_000),
            ),
            (300, 1, 4, 3_333),
            (300, 3, 10, 10_000),
            (300, 7, 24, 23_333),
            (1000, 7, 7, 7_000),
        ] {
            let c = Clock { hz };
            assert_eq!((c.ms(j), c.us(j)), (ms, us), "HZ {hz}, {j} jiffies");
        }
    }
}
