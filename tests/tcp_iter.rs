//! The BPF TCP reader against the `sock_diag` dump of the same sockets: every field katop keeps
//! the same, for sockets in the states and timers the test sets up (keepalive, unread data,
//! IPv6 and IPv4-mapped, `CLOSE_WAIT`, `FIN_WAIT2`, `TIME_WAIT`, a full accept queue, and a
//! connection retransmitting to a peer gone silent). The clocks move between two reads, so a
//! dump is taken between two passes and its clocks must lie between theirs.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use katop::collector::sock_diag::{DiagSocket, DumpKind};
use katop::collector::tcp_iter::TcpReader;
use katop::collector::wire::DumpSink;
use katop::collector::{current_netns, Collector, Selection};
use katop::model::tcp_info::TcpInfo;
use katop::model::{Cookie, Endpoint, RawSock};
use socket2::{SockRef, TcpKeepalive};

mod common;
use common::{is_root, SilentPeer};

/// The reader, where it loads; else says why the test cannot run.
fn reader() -> Option<TcpReader> {
    if !is_root() {
        common::skipped("needs root to load a BPF iterator");
        return None;
    }
    match TcpReader::open() {
        Ok(r) => Some(r),
        Err(e) if e.contains("without clang") => {
            common::skipped("katop was built without clang (KATOP_CLANG=none)");
            None
        }
        Err(e) => panic!("the TCP reader does not load as root on this kernel: {e}"),
    }
}

fn pass(reader: &mut TcpReader) -> Vec<RawSock> {
    let mut socks = Vec::new();
    reader
        .read_into(current_netns(), (true, true), &mut socks)
        .unwrap();
    socks
}

fn dump() -> Vec<RawSock> {
    let mut diag = DiagSocket::open().unwrap();
    let mut sink = DumpSink::default();
    diag.dump_each(
        &[DumpKind::TCP4, DumpKind::TCP6],
        current_netns(),
        &mut sink,
    )
    .unwrap();
    assert_eq!(sink.skipped, 0, "{:?}", sink.first_skip);
    sink.socks
}

/// A socket with its moving clocks set aside: (the rest, the clocks that grow, the timer's
/// time left).
type Split = (RawSock, Vec<u64>, Option<u32>);

fn split(s: &RawSock) -> Split {
    let mut rest = s.clone();
    let mut grow = Vec::new();
    rest.tcp_info = s.tcp_info.map(TcpInfo::without_clocks);
    if let Some(t) = &s.tcp_info {
        grow.extend(t.clocks().map(u64::from));
        grow.push(t.total_rto_time().map_or(0, u64::from));
    }
    let left = rest
        .timer
        .as_mut()
        .map(|t| std::mem::take(&mut t.expires_ms));
    (rest, grow, left)
}

/// The test's own sockets: those with an end at one of `ends`, a listening socket's address
/// (any IP of its family: accepted ends have a real one) or a client's.
fn mine<'a>(socks: &'a [RawSock], ends: &[SocketAddr]) -> Vec<&'a RawSock> {
    let at = |e: &Endpoint| {
        let Endpoint::Inet(a) = e else { return false };
        ends.iter()
            .any(|end| a.port() == end.port() && (end.ip().is_unspecified() || a.ip() == end.ip()))
    };
    let mut out: Vec<&RawSock> = socks
        .iter()
        .filter(|s| at(&s.local) || at(&s.remote))
        .collect();
    out.sort_by_key(|s| s.cookie);
    out
}

/// `total_rto_time` is not a clock that only grows by the read's delay: it is compared as the
/// rest are, except that the kernel adds the time since the recovery began.
fn without_rto_time(mut s: RawSock) -> RawSock {
    if let Some(t) = s.tcp_info.as_mut() {
        let mut bytes = t.to_kernel_bytes();
        if let Some(b) = bytes.get_mut(244..248) {
            b.fill(0);
        }
        *t = TcpInfo::from_kernel_bytes(&bytes);
    }
    s
}

/// Everything but the clocks, as text (`RawSock` has no `==`: its owner is shared).
fn shape(s: &RawSock) -> String {
    format!("{:?}", without_rto_time(split(s).0))
}

/// Whether a timer was set again between two reads (a request socket's is, with no count
/// changing): its time left grew.
fn rearmed(early: &RawSock, late: &RawSock) -> bool {
    let left = |s: &RawSock| s.timer.map_or(0, |t| t.expires_ms);
    left(late) > left(early)
}

/// Pass, dump, pass, until both passes agree on everything but the clocks (a retransmission
/// between them changes a count); then the dump must say the same and its clocks lie between.
fn agree(reader: &mut TcpReader, ends: &[SocketAddr], expect: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let cookies = |v: &[&RawSock]| v.iter().map(|s| s.cookie).collect::<Vec<Cookie>>();
    loop {
        let (first, dumped, second) = (pass(reader), dump(), pass(reader));
        let (early, dumped, late) = (mine(&first, ends), mine(&dumped, ends), mine(&second, ends));
        // A timer set again between the reads is read again; a reader whose times are wrong
        // never settles, and fails at the deadline.
        let settled = cookies(&early) == cookies(&late)
            && cookies(&early) == cookies(&dumped)
            && early
                .iter()
                .zip(&late)
                .zip(&dumped)
                .all(|((e, l), d)| shape(e) == shape(l) && !rearmed(e, d) && !rearmed(d, l));
        if !settled {
            assert!(Instant::now() < deadline, "the sockets never held still");
            continue;
        }
        assert_eq!(early.len(), expect, "the pass lists {early:#?}");
        for ((e, d), l) in early.iter().zip(&dumped).zip(&late) {
            in_order(&split(e), &split(d), &split(l));
        }
        return;
    }
}

/// A socket as a pass, the dump after it and the pass after that read it: the same but for
/// the clocks, which the dump read in between.
fn in_order(early: &Split, dumped: &Split, late: &Split) {
    assert_eq!(
        format!("{:#?}", without_rto_time(early.0.clone())),
        format!("{:#?}", without_rto_time(dumped.0.clone())),
        "pass and dump differ"
    );
    for ((e, d), l) in early.1.iter().zip(&dumped.1).zip(&late.1) {
        assert!(
            e <= d && d <= l,
            "a clock out of order: {:?} / {:?} / {:?} for {:#?}",
            early.1,
            dumped.1,
            late.1,
            dumped.0
        );
    }
    if let (Some(e), Some(d), Some(l)) = (early.2, dumped.2, late.2) {
        assert!(
            e >= d && d >= l,
            "a timer out of order: {e} / {d} / {l} for {:#?}",
            dumped.0
        );
    }
}

#[test]
fn the_pass_says_what_the_dump_says_of_every_kind_of_socket() {
    let Some(mut reader) = reader() else { return };
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let dual = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    dual.set_only_v6(false).unwrap();
    dual.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())
        .unwrap();
    dual.listen(8).unwrap();
    let dual: TcpListener = dual.into();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let ends = [&v4, &v6, &dual].map(|l| l.local_addr().unwrap());

    // Keepalive on, 600 s idle: a keepalive timer; and 5 bytes the other end has not read.
    // Its owner is another user (fchown on a socket sets the uid the kernel reports).
    let (mut ka, _ka_server) = common::connect(&v4, Some(Duration::from_secs(600)));
    ka.write_all(b"hello").unwrap();
    rustix::fs::fchown(&ka, Some(rustix::fs::Uid::from_raw(12_345)), None).unwrap();
    // Bound to an interface.
    let bound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    bound.bind_device(Some(b"lo")).unwrap();
    bound.connect(&v4.local_addr().unwrap().into()).unwrap();
    let bound_server = v4.accept().unwrap().0;
    // IPv6, and IPv4 into a dual-stack listener (the server end is IPv4-mapped).
    let six = TcpStream::connect(v6.local_addr().unwrap()).unwrap();
    let six_server = v6.accept().unwrap().0;
    let mapped = TcpStream::connect((Ipv4Addr::LOCALHOST, port(&dual))).unwrap();
    let mapped_server = dual.accept().unwrap().0;
    // The client closes: it waits in FIN_WAIT2, the server in CLOSE_WAIT.
    let (half, half_server) = common::connect(&v4, None);
    drop(half);
    // Both close, the client first: it lingers in TIME_WAIT.
    let (gone, gone_server) = common::connect(&v4, None);
    drop(gone);
    drop(gone_server);
    // The same over IPv6.
    let closed6 = TcpStream::connect(v6.local_addr().unwrap()).unwrap();
    let closed6_server = v6.accept().unwrap().0;
    drop(closed6);
    drop(closed6_server);
    // Connected but not accepted: in the dual listener's queue.
    let queued = TcpStream::connect((Ipv6Addr::LOCALHOST, port(&dual))).unwrap();
    common::wait_for("the TIME_WAIT and CLOSE_WAIT sockets", || {
        let d = dump();
        let states: Vec<&str> = mine(&d, &ends)
            .iter()
            .map(|s| s.state.name(s.proto))
            .collect();
        states.iter().filter(|s| **s == "TIME_WAIT").count() == 2 && states.contains(&"CLOSE_WAIT")
    });
    // listeners 3; keepalive 2, bound 2, six 2, mapped 2, half 2, gone 1, gone6 1, queued 2
    agree(&mut reader, &ends, 17);
    let found = pass(&mut reader);
    let ka_sock = mine(&found, &ends)
        .into_iter()
        .find(|s| s.local == Endpoint::Inet(ka.local_addr().unwrap().into()))
        .unwrap();
    assert_eq!(
        ka_sock.timer.map(|t| t.kind.name()),
        Some("keepalive"),
        "{ka_sock:#?}"
    );
    assert_eq!(
        ka_sock.uid.map(katop::model::Uid::get),
        Some(12_345),
        "{ka_sock:#?}"
    );
    let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap();
    let local = |s: &socket2::Socket| s.local_addr().unwrap().as_socket().unwrap();
    let bound_sock = mine(&found, &ends)
        .into_iter()
        .find(|s| s.local == Endpoint::Inet(local(&bound).into()))
        .unwrap();
    assert_eq!(bound_sock.interface.to_string(), lo.trim());
    drop((
        six,
        six_server,
        mapped,
        mapped_server,
        half_server,
        queued,
        bound_server,
    ));
}

#[test]
fn a_connection_retransmitting_to_a_silent_peer_reads_the_same() {
    let Some(mut reader) = reader() else { return };
    let ka = TcpKeepalive::new().with_time(Duration::from_secs(600));
    let mut peer = SilentPeer::connect(&ka);
    peer.go_silent();
    peer.client.write_all(b"into the void").unwrap();
    let ends = [peer.client.local_addr().unwrap()];
    // Its first timeout has passed: it retransmits, backed off, in loss recovery.
    common::wait_for("a retransmission", || {
        mine(&dump(), &ends)
            .first()
            .and_then(|s| s.tcp_info)
            .is_some_and(|t| t.retransmits() >= Some(1))
    });
    agree(&mut reader, &ends, 1);
    let s = pass(&mut reader);
    let s = mine(&s, &ends)[0].clone();
    assert_eq!(s.timer.map(|t| t.kind.name()), Some("retransmit"), "{s:#?}");
    assert!(s.tcp_info.unwrap().backoff() >= Some(1), "{s:#?}");
    assert!(s.send_q > 0, "{s:#?}");
    let _ = SockRef::from(&peer.client);
}

#[test]
fn a_sender_facing_a_zero_window_probes_and_reads_the_same() {
    let Some(mut reader) = reader() else { return };
    // A receiver that never reads, with a small buffer: the sender's window closes and its
    // zero-window probe timer runs (kind 4, probe0).
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.set_recv_buffer_size(4096).unwrap();
    l.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    l.listen(1).unwrap();
    let l: TcpListener = l.into();
    let mut sender = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _receiver = l.accept().unwrap().0;
    sender.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 65536];
    while sender.write(&chunk).is_ok() {}
    let ends = [l.local_addr().unwrap()];
    let at = sender.local_addr().unwrap();
    common::wait_for("the probe0 timer", || {
        mine(&dump(), &ends).iter().any(|s| {
            s.local == Endpoint::Inet(at.into())
                && s.timer.is_some_and(|t| t.kind.name() == "probe0")
        })
    });
    agree(&mut reader, &ends, 3);
}

#[test]
fn a_collector_with_the_reader_polls_the_same_sockets_as_without() {
    if reader().is_none() {
        return;
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (_c, _s) = common::connect(&l, Some(Duration::from_secs(900)));
    let ends = [l.local_addr().unwrap()];
    let poll = |bpf_from: Option<usize>| {
        let mut c = Collector::new(Selection {
            bpf_from,
            ..Selection::default()
        })
        .unwrap();
        let snap = c.poll().unwrap();
        let used = c.tcp_bpf();
        let socks: Vec<String> = mine(&snap.socks, &ends).into_iter().map(shape).collect();
        // Of the TCP reader (the fd reader may be refused where the TCP one is not: a PID
        // namespace of its own).
        let bpf_notes = snap
            .warnings
            .iter()
            .filter(|w| w.contains("BPF TCP reader") || w.contains("BPF readers"))
            .count();
        (socks, used, bpf_notes)
    };
    let (with, used, notes) = poll(Some(0));
    let (without, not_used, notes_without) = poll(None);
    assert!(used, "the collector did not use the reader");
    assert!(!not_used);
    // Loaded and used: nothing to say; not asked for (`--no-bpf`): nothing either.
    assert_eq!((notes, notes_without), (0, 0));
    assert_eq!(with.len(), 3);
    assert_eq!(with, without);
}

/// A listener that accepts only once data comes (`TCP_DEFER_ACCEPT`), which socket2 and rustix
/// do not set: a python3 child holds it and prints its port.
const DEFERRING: &str = r"
import socket, sys, time
l = socket.socket()
l.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 60)
l.bind(('127.0.0.1', 0))
l.listen()
print(l.getsockname()[1], flush=True)
sys.stdin.read()
";

#[test]
fn a_connection_not_yet_accepted_reads_the_same() {
    let Some(mut reader) = reader() else { return };
    let mut child = std::process::Command::new("python3")
        .args(["-c", DEFERRING])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (.ci/run installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let listening = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // The client is connected; the server keeps a request socket until data comes.
    let client = TcpStream::connect(listening).unwrap();
    common::wait_for("the request socket", || {
        mine(&dump(), &[listening])
            .iter()
            .any(|s| s.state.name(s.proto) == "SYN_RECV")
    });
    agree(&mut reader, &[listening], 3);
    let socks = pass(&mut reader);
    let request = mine(&socks, &[listening])
        .into_iter()
        .find(|s| s.state.name(s.proto) == "SYN_RECV")
        .unwrap()
        .clone();
    assert_eq!(request.timer.map(|t| t.kind.name()), Some("retransmit"));
    assert_eq!(
        (request.uid.map(katop::model::Uid::get), request.inode.0),
        (Some(0), 0),
        "{request:#?}"
    );
    drop(client);
    drop(child.stdin.take());
    let _ = child.wait();
}
