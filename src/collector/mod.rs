//! The only code that talks to the kernel: `sock_diag` dumps, `/proc` and `/proc/sys`.
//!
//! A [`Collector`] is created once and polled; each poll returns a whole [`Snapshot`] by value.

pub mod borrow;
pub mod bpf_iter;
pub mod containers;
pub mod ends;
pub mod fd_iter;
pub mod fds;
pub mod held;
pub mod namespaces;
pub mod netns;
pub mod procs;
pub mod sock_diag;
pub mod sockopts;
pub mod sysctl;
pub mod tcp_iter;
pub mod wire;

use std::collections::HashMap;
use std::time::Instant;

use crate::error::CollectError;
use crate::model::{NetnsId, PollCost, Proto, RawSock, Snapshot};
use procs::ProcessMap;
use sock_diag::{DiagSocket, DumpKind};
use sockopts::OptsCache;
use wire::DumpSink;

/// Where the BPF fd reader starts to pay: loading it (parsing the kernel's BTF) costs about
/// 60 ms and 35 MiB at its peak, as much as reading /proc for some 10k sockets.
pub const BPF_FROM_SOCKETS: usize = 10_000;

/// Sockets in katop's network namespace, as `/proc/net/sockstat` counts them: before a first
/// dump, what it will hold.
fn sockets_in_use() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("sockets: used "))?
        .trim()
        .parse()
        .ok()
}

/// Which sockets to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub protos: Vec<Proto>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Which network namespaces.
    pub netns: namespaces::Which,
    /// Read fd tables and options with the BPF reader where it loads ([`fd_iter`]), in scans
    /// that look for at least this many sockets; below, and with `None`, from `/proc` and
    /// `getsockopt` only. The same answers either way.
    pub bpf_from: Option<usize>,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            protos: vec![Proto::Tcp, Proto::Udp, Proto::Unix],
            ipv4: true,
            ipv6: true,
            netns: namespaces::Which::Own,
            bpf_from: Some(BPF_FROM_SOCKETS),
        }
    }
}

impl Selection {
    pub fn dumps(&self) -> Vec<DumpKind> {
        let mut out = Vec::new();
        for &proto in &self.protos {
            match proto {
                Proto::Tcp | Proto::Udp => {
                    let (v4, v6) = if proto == Proto::Tcp {
                        (DumpKind::TCP4, DumpKind::TCP6)
                    } else {
                        (DumpKind::UDP4, DumpKind::UDP6)
                    };
                    if self.ipv4 {
                        out.push(v4);
                    }
                    if self.ipv6 {
                        out.push(v6);
                    }
                }
                Proto::Unix => out.push(DumpKind::UNIX),
            }
        }
        out
    }
}

/// Polls the kernel; keeps the netlink socket and the process map between polls.
pub struct Collector {
    diag: DiagSocket,
    /// The namespaces read beyond katop's own.
    pub namespaces: namespaces::Namespaces,
    procs: ProcessMap,
    /// Each TCP socket's keepalive options, by cookie.
    pub opts: OptsCache,
    selection: Selection,
    netns: NetnsId,
    interfaces: HashMap<u32, Box<str>>,
    /// Sockets in the last poll: the next one reserves room for about as many up front, so the
    /// vector is not regrown (and 100k sockets copied) while the dump streams in.
    last_count: usize,
    /// Polls in a row whose sockets fill under a quarter of the buffer: after a spike, memory
    /// is given back once the count has stayed low for [`SHRINK_AFTER`] polls.
    sparse_polls: u32,
    /// Connection ends as the tracepoints tell them, when asked for and possible.
    ends: Option<ends::EndWatch>,
    held: held::HeldSockets,
    /// Its own namespace's TCP sockets through the BPF reader, where it is used.
    tcp: tcp_iter::TcpSource,
}

/// Sockets a streamed poll hands on at a time ([`Collector::poll_streamed`]): 3 MB.
pub const PIECE: usize = 16_384;

/// A streamed poll's sockets, as they are read.
#[derive(Debug, Clone)]
pub struct Piece {
    pub socks: Vec<RawSock>,
    /// In the poll's first piece: how it begins.
    pub begins: Option<Begins>,
}

/// What a consumer begins a streamed poll with ([`crate::model::ConnTable::begin`]).
#[derive(Debug, Clone)]
pub struct Begins {
    /// The cookies of the connection ends the tracepoints told since the last poll.
    pub traced: Vec<u64>,
    /// When the poll's first piece was read, by the wall clock.
    pub wall: std::time::SystemTime,
}

/// The sockets a streamed poll handed on: how many, and their inodes (the poll's scan, if it
/// makes one, looks for them too).
struct HandedOn {
    count: usize,
    inodes: Vec<crate::model::Inode>,
}

/// Polls in a row with far fewer sockets than room before buffers and caches shrink.
pub const SHRINK_AFTER: u32 = 10;

/// Whether `capacity` is far more than `len` needs (a quarter used, beyond a small floor).
pub fn sparse(capacity: usize, len: usize) -> bool {
    capacity > 4 * len + 4096
}

impl Collector {
    pub fn new(selection: Selection) -> Result<Self, CollectError> {
        let own = current_netns();
        Ok(Collector {
            diag: DiagSocket::open()?,
            namespaces: namespaces::Namespaces::new(selection.netns.clone(), own),
            procs: ProcessMap::new(selection.bpf_from),
            tcp: tcp_iter::TcpSource::new(selection.bpf_from),
            opts: OptsCache::default(),
            selection,
            netns: current_netns(),
            interfaces: HashMap::new(),
            last_count: 0,
            sparse_polls: 0,
            ends: None,
            held: held::HeldSockets::default(),
        })
    }

    /// Reads why connections end from the kernel's tracepoints from now on (root), or says
    /// why it cannot; without it, each poll's causes are inferred.
    pub fn watch_ends(&mut self) -> Result<(), String> {
        if self.ends.is_none() {
            self.ends = Some(ends::EndWatch::start()?);
        }
        Ok(())
    }

    /// One poll: every selected dump, the process join, and the settings.
    pub fn poll(&mut self) -> Result<Snapshot, CollectError> {
        self.poll_into(Vec::new())
    }

    /// A poll that fills `buf` (emptied first), reusing its allocation: see `ConnTable::apply`.
    pub fn poll_into(&mut self, buf: Vec<RawSock>) -> Result<Snapshot, CollectError> {
        self.poll_with(buf, None)
    }

    /// A poll that hands its sockets on as they are read, in pieces of [`PIECE`], to a
    /// consumer that applies them in place ([`crate::model::ConnTable::absorb`]): the poll's
    /// sockets are never all in memory beside the last poll's. A socket goes on once its owner
    /// and options are known without a scan (the steady state); the rest, and the other
    /// namespaces' sockets, are in the snapshot returned, which completes the poll. `buf` is
    /// filled only with those.
    pub fn poll_streamed(
        &mut self,
        buf: Vec<RawSock>,
        emit: &mut dyn FnMut(Piece),
    ) -> Result<Snapshot, CollectError> {
        self.poll_with(buf, Some(emit))
    }

    fn poll_with(
        &mut self,
        mut buf: Vec<RawSock>,
        emit: Option<&mut dyn FnMut(Piece)>,
    ) -> Result<Snapshot, CollectError> {
        let started = Instant::now();
        let streamed = emit.is_some();
        // Before the dump: an end told now is of a socket this dump no longer lists (or lists
        // in TIME_WAIT), never of one it shows alive.
        let drained = self.ends.as_ref().map(ends::EndWatch::drain);
        let expected = self.expected();
        buf.clear();
        if streamed {
            // What stays in it: a piece at most, and the sockets kept back.
            buf.shrink_to(2 * PIECE);
        } else {
            // Empty now, so this makes the capacity at least the last count (at the first
            // poll, the kernel's) plus a little growth: a first dump of 1M sockets that
            // doubled its way up would copy them over and over, and leave each smaller buffer
            // in the heap.
            buf.reserve_exact(expected + expected / 32);
        }
        self.procs.begin_poll();
        self.opts.begin_poll();
        let traced = drained
            .iter()
            .flat_map(|d| d.ended.iter().filter_map(|t| t.cookie))
            .collect();
        let dumps = self.selection.dumps();
        let (mut sink, handed_on) = self.dump_own(buf, &dumps, expected, (emit, traced))?;
        // Its sockets' timers were read by then: every other namespace's dump comes after.
        let own_dumped = Instant::now();
        let (mut namespaces, mut warnings, unread_namespaces) =
            self.namespaces.poll(&dumps, &mut sink.socks);
        let settings = sysctl::read();
        let dump_cost = started.elapsed();
        let mut dumps_read = Instant::now();
        if self.namespaces.reads_others() {
            let mut own = self.namespaces.own_info(settings);
            own.age = dumps_read.saturating_duration_since(own_dumped);
            namespaces.push(own);
        } else {
            dumps_read = own_dumped;
        }
        self.last_count = sink.socks.len() + handed_on.count;
        self.give_back_memory(&mut sink.socks);
        let dumped: Vec<NetnsId> = std::iter::once(self.netns)
            .chain(self.namespaces.ids())
            .collect();
        self.procs
            .resolve_rest(&mut sink.socks, &handed_on.inodes, &dumped);
        drop(handed_on);
        let unlisted = if self.selection.protos.contains(&Proto::Tcp) {
            self.held.find(&self.procs, &dumped)
        } else {
            Vec::new()
        };
        self.opts
            .fill_rest(&mut sink.socks, self.procs.take_fresh().as_ref());
        for s in &sink.socks {
            name_interface(&mut self.interfaces, s.interface);
        }
        self.warn(
            &mut warnings,
            (sink.skipped, sink.first_skip),
            drained.as_ref().map_or(0, |d| d.dropped),
        );
        Ok(Snapshot {
            socks: sink.socks,
            netns: self.netns,
            settings,
            interfaces: self.interfaces.clone(),
            holders: self.procs.shared(),
            namespaces,
            unread_namespaces,
            taken_at: dumps_read,
            // The dumps' moment, as `taken_at` (not the poll's end: the fd scan and options
            // after the dumps can take seconds at 1M sockets, and the clocks count from then).
            wall: std::time::SystemTime::now()
                .checked_sub(dumps_read.elapsed())
                .unwrap_or_else(std::time::SystemTime::now),
            cost: PollCost {
                dump: dump_cost,
                total: started.elapsed(),
            },
            warnings,
            ends: drained.map(|d| d.ended),
            every_namespace: self.selection.netns == namespaces::Which::All,
            unlisted,
            opts_changed: self.opts.changed().to_vec(),
        })
    }

    /// Dumps katop's own namespace into `buf`; in a streamed poll (`emit`: where the pieces go,
    /// the first with `traced`, the cookies of the ends traced since the last poll), hands each
    /// socket on as it comes where it can ([`Collector::poll_streamed`]), and keeps the rest.
    fn dump_own(
        &mut self,
        buf: Vec<RawSock>,
        dumps: &[sock_diag::DumpKind],
        expected: usize,
        (mut emit, traced): (Option<&mut dyn FnMut(Piece)>, Vec<u64>),
    ) -> Result<(DumpSink<'static>, HandedOn), CollectError> {
        let streamed = emit.is_some();
        let mut traced = Some(traced);
        let mut handed_on = HandedOn {
            count: 0,
            inodes: Vec::with_capacity(if streamed { expected } else { 0 }),
        };
        let (procs, opts, interfaces) = (&mut self.procs, &mut self.opts, &mut self.interfaces);
        let mut take = |socks: &mut Vec<RawSock>, from: usize| {
            // Room for all that came at once: a piece grown by doubling would be copied over
            // and over (3 MB, dozens of times a poll at 1M sockets).
            let mut piece = Vec::with_capacity(socks.len() - from);
            piece.extend(socks.extract_if(from.., |s| procs.ready(s) && opts.ready(s)));
            if piece.is_empty() {
                return;
            }
            for s in &piece {
                name_interface(interfaces, s.interface);
                if s.inode.0 != 0 {
                    handed_on.inodes.push(s.inode);
                }
            }
            handed_on.count += piece.len();
            if let Some(emit) = emit.as_mut() {
                let begins = traced.take().map(|traced| Begins {
                    traced,
                    wall: std::time::SystemTime::now(),
                });
                emit(Piece {
                    socks: piece,
                    begins,
                });
            }
        };
        let mut sink = DumpSink {
            socks: buf,
            hand_on: streamed.then(|| wire::HandOn::new(PIECE, &mut take)),
            ..DumpSink::default()
        };
        if self.namespaces.reads_own() {
            let mut own = dumps.to_vec();
            self.tcp.take(&mut own, expected, self.netns, &mut sink);
            self.diag.dump_each(&own, self.netns, &mut sink)?;
            sink.offer(true);
        }
        // What it kept, no longer handed on.
        let DumpSink {
            socks,
            skipped,
            first_skip,
            ..
        } = sink;
        let kept = DumpSink {
            socks,
            skipped,
            first_skip,
            hand_on: None,
        };
        Ok((kept, handed_on))
    }

    /// The poll's warnings beyond the namespaces': malformed messages `skipped` (how many,
    /// and the first reason), trace events `dropped`, blind spots of the scan and the options.
    fn warn(&self, warnings: &mut Vec<String>, skipped: (usize, Option<String>), dropped: u64) {
        if skipped.0 > 0 {
            warnings.push(format!(
                "{} malformed sock_diag messages skipped (first: {})",
                skipped.0,
                skipped.1.unwrap_or_default()
            ));
        }
        if dropped > 0 {
            warnings.push(format!(
                "{dropped} trace events were lost in a burst: some connection ends are missing, \
                 and some causes are inferred"
            ));
        }
        if let Some(w) = self.procs.last.warning() {
            warnings.push(w);
        }
        warnings.extend(self.bpf_warning());
        if self.opts.last.unreadable > 0 {
            warnings.push(format!(
                "the keepalive options of {} sockets could not be read (no ptrace rights over \
                 their owners: run as root or grant CAP_SYS_PTRACE), so they show the sysctl \
                 defaults, marked ~",
                self.opts.last.unreadable
            ));
        }
    }

    /// Why the BPF readers are off, when a poll wanted them (10k sockets or more) and they could
    /// not load or a pass failed: polls cost more, and the operator is told why rather than
    /// left to guess. Said while it holds (it is off for good), in the same words every poll:
    /// a warning is said again only when it changes.
    fn bpf_warning(&self) -> Option<String> {
        let off: Vec<(&str, &str)> = [("TCP", self.tcp.off()), ("fd", self.procs.bpf_off())]
            .into_iter()
            .filter_map(|(which, why)| Some((which, why?)))
            .collect();
        let what = match off.as_slice() {
            [] => return None,
            [(which, why)] => format!("katop's BPF {which} reader is off ({why})"),
            [(_, a), (_, b)] if a == b => format!("katop's BPF readers are off ({a})"),
            [(w1, a), (w2, b), ..] => {
                format!("katop's BPF {w1} reader is off ({a}), and its {w2} reader ({b})")
            }
        };
        Some(format!(
            "{what}: katop reads /proc and sock_diag instead, the same answers at a higher \
             cost (--no-bpf does that without this note)"
        ))
    }

    /// The sockets this poll expects: the last poll's count, or at the first what the kernel
    /// counts (the BPF readers it will want are loaded then, before the dump fills memory,
    /// with one parse of the kernel's BTF).
    fn expected(&mut self) -> usize {
        if self.last_count != 0 {
            return self.last_count;
        }
        let expected = sockets_in_use().unwrap_or(0);
        if self.selection.bpf_from.is_some_and(|from| expected >= from) {
            let btf = bpf_iter::kernel_btf().ok();
            self.procs.prepare(expected, btf.as_ref());
            // Only where the TCP reader could be used: this namespace's TCP sockets are read.
            if self.namespaces.reads_own() && self.selection.protos.contains(&Proto::Tcp) {
                self.tcp.prepare(expected, btf.as_ref());
            }
        }
        expected
    }

    /// Whether the last poll read its own namespace's TCP sockets with the BPF reader.
    pub fn tcp_bpf(&self) -> bool {
        self.tcp.used
    }

    /// What the last `/proc` scan did (for tests and the benchmark).
    pub fn scan_stats(&self) -> &procs::ScanStats {
        &self.procs.last
    }

    /// After a spike (a burst of sockets elsewhere on the host), the buffers and caches keep
    /// their high-water room; once the count has stayed far below it for a while, give it back.
    fn give_back_memory(&mut self, socks: &mut Vec<RawSock>) {
        let n = socks.len();
        if sparse(socks.capacity(), n) {
            self.sparse_polls += 1;
        } else {
            self.sparse_polls = 0;
        }
        if self.sparse_polls >= SHRINK_AFTER {
            socks.shrink_to(n + n / 32 + 1024);
            self.opts.shrink();
            self.procs.shrink();
        }
    }

    /// The bare netlink dump, no parsing kept: the floor a poll is measured against.
    pub fn bare_dump(&mut self) -> Result<usize, CollectError> {
        let mut bytes = 0;
        for kind in self.selection.dumps() {
            self.diag.dump_raw(kind, |d| {
                bytes += d.len();
                Ok(wire::scan_done(d))
            })?;
        }
        Ok(bytes)
    }
}

/// The inode of this process's network namespace.
pub fn current_netns() -> NetnsId {
    rustix::fs::stat("/proc/thread-self/ns/net")
        .ok()
        .and_then(|st| NetnsId::from_ino(st.st_ino))
        .unwrap_or_default()
}

/// Learns the name of the interface a socket is bound to, once.
fn name_interface(names: &mut HashMap<u32, Box<str>>, index: u32) {
    if index != 0 && !names.contains_key(&index) {
        names.insert(index, interface_name(index));
    }
}

fn interface_name(index: u32) -> Box<str> {
    let name = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .and_then(|fd| rustix::net::netdevice::index_to_name(fd, index));
    name.map_or_else(
        |_| index.to_string().into_boxed_str(),
        String::into_boxed_str,
    )
}
