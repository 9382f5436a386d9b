//! Parser tests on `sock_diag` messages captured from a live kernel with
//! `cargo run --example capture` (netlink header included), then cut and corrupted.

use super::*;

const PROBING: &[u8] = include_bytes!("../../tests/fixtures/tcp4_probing.bin");
const KEEPALIVE_CLIENT: &[u8] = include_bytes!("../../tests/fixtures/tcp4_keepalive_client.bin");
const SERVER_END: &[u8] = include_bytes!("../../tests/fixtures/tcp4_server_end.bin");
const LISTENER: &[u8] = include_bytes!("../../tests/fixtures/tcp4_listener_or_server.bin");
const TCP6: &[u8] = include_bytes!("../../tests/fixtures/tcp6.bin");
const UDP4: &[u8] = include_bytes!("../../tests/fixtures/udp4.bin");
const UNIX: &[u8] = include_bytes!("../../tests/fixtures/unix_listen.bin");

const NS: NetnsId = NetnsId(7);

fn one(msg: &[u8], proto: Proto) -> RawSock {
    let mut sink = DumpSink::default();
    assert_eq!(
        parse_datagram(msg, proto, NS, &mut sink),
        Ok(Progress::More)
    );
    assert_eq!(sink.skipped, 0, "{:?}", sink.first_skip);
    assert_eq!(sink.socks.len(), 1);
    sink.socks.pop().unwrap()
}

#[test]
fn keepalive_probe_count_survives() {
    // A connection to a peer whose link went down: the kernel had sent 42 unanswered probes.
    let s = one(PROBING, Proto::Tcp);
    assert_eq!(s.state, SockState::Established);
    assert_eq!(s.local.to_string(), "10.213.46.1:53524");
    assert_eq!(s.remote.to_string(), "10.213.46.2:5432");
    assert_eq!(
        s.timer,
        Some(Timer {
            kind: TimerKind::Keepalive,
            expires_ms: 1100,
            retrans: 42
        })
    );
    let info = s.tcp_info.unwrap();
    assert_eq!(info.probes(), Some(42));
    assert_eq!(info.bytes_acked(), Some(7));
    assert_eq!(info.idle_ms(), Some(85_564));
    assert_eq!(
        (s.inode, s.cookie, s.uid, s.netns),
        (Inode(9751), Cookie(8), crate::model::Uid::new(0), NS)
    );
}

#[test]
fn keepalive_client_and_server_ends() {
    let c = one(KEEPALIVE_CLIENT, Proto::Tcp);
    assert_eq!(c.local.to_string(), "127.0.0.1:47012");
    assert_eq!(
        c.timer,
        Some(Timer {
            kind: TimerKind::Keepalive,
            expires_ms: 595_204,
            retrans: 0
        })
    );
    let info = c.tcp_info.unwrap();
    // 1000 bytes sent; bytes_acked also counts the SYN's sequence number, as the kernel does.
    assert_eq!(info.bytes_acked(), Some(1001));
    assert_eq!(info.bytes_sent(), Some(1000));
    assert_eq!(info.rtt(), Some(19));
    assert_eq!((c.inode, c.cookie), (Inode(13844), Cookie(4129)));

    let s = one(SERVER_END, Proto::Tcp);
    assert_eq!(s.local.to_string(), "127.0.0.1:47001");
    assert_eq!(s.timer, None);
    assert_eq!(s.tcp_info.unwrap().bytes_received(), Some(1000));
}

#[test]
fn listeners_udp_and_unix() {
    let l = one(LISTENER, Proto::Tcp);
    assert_eq!((l.state, l.recv_q, l.send_q), (SockState::Listen, 0, 128));
    assert_eq!(l.remote.to_string(), "*");
    assert!(l.tcp_info.is_none(), "a listener's tcp_info is dropped");
    let six = one(TCP6, Proto::Tcp);
    assert_eq!(
        (six.family, six.local.to_string()),
        (Family::Inet6, "[::1]:47003".to_string())
    );
    let u = one(UDP4, Proto::Udp);
    assert_eq!((u.proto, u.state.name(u.proto)), (Proto::Udp, "UNCONN"));
    assert_eq!(u.local.to_string(), "127.0.0.1:47004");
    let x = one(UNIX, Proto::Unix);
    assert_eq!(x.local.to_string(), "@katop-fixture");
    assert_eq!(
        (x.state, x.send_q, x.uid, x.inode),
        (
            SockState::Listen,
            128,
            crate::model::Uid::new(0),
            Inode(13842)
        )
    );
}

#[test]
fn done_and_errors_end_the_dump() {
    let mut done = vec![0u8; 20];
    done[..4].copy_from_slice(&20u32.to_ne_bytes());
    done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
    let mut sink = DumpSink::default();
    let mut two = PROBING.to_vec();
    two.extend_from_slice(&done);
    assert_eq!(
        parse_datagram(&two, Proto::Tcp, NS, &mut sink),
        Ok(Progress::Done)
    );
    assert_eq!(sink.socks.len(), 1);
    assert_eq!(scan_done(&two), Progress::Done);
    assert_eq!(scan_done(PROBING), Progress::More);

    let mut err = done.clone();
    err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
    err[16..20].copy_from_slice(&(-1i32).to_ne_bytes()); // -EPERM
    assert_eq!(
        parse_datagram(&err, Proto::Tcp, NS, &mut sink),
        Err(WireError::Kernel(1))
    );
    assert!(WireError::Kernel(1).to_string().contains("not permitted"));
    // Codes that are no errno are errors, not a panic or an overflow.
    for kind in [NLMSG_ERROR, NLMSG_DONE] {
        for code in [i32::MIN, -4096] {
            let mut bad = done.clone();
            bad[4..6].copy_from_slice(&kind.to_ne_bytes());
            bad[16..20].copy_from_slice(&code.to_ne_bytes());
            assert_eq!(
                parse_datagram(&bad, Proto::Tcp, NS, &mut sink),
                Err(WireError::BadCode(code))
            );
        }
    }
}

#[test]
fn truncated_and_malformed_messages_are_errors_not_panics() {
    // Header says 408 bytes, only 100 arrived: framing error.
    let cut = &PROBING[..100];
    let mut sink = DumpSink::default();
    assert!(matches!(
        parse_datagram(cut, Proto::Tcp, NS, &mut sink),
        Err(WireError::Framing { offset: 0, .. })
    ));
    // A message whose own length is honest but too short for inet_diag_msg: skipped, counted.
    let mut short = PROBING[..16 + 40].to_vec();
    short[..4].copy_from_slice(&56u32.to_ne_bytes());
    let mut sink = DumpSink::default();
    assert_eq!(
        parse_datagram(&short, Proto::Tcp, NS, &mut sink),
        Ok(Progress::More)
    );
    assert_eq!((sink.socks.len(), sink.skipped), (0, 1));
    assert!(sink.first_skip.unwrap().contains("40 bytes"));
    // A Unix reply in a TCP dump is skipped, not misread.
    let mut sink = DumpSink::default();
    parse_datagram(UNIX, Proto::Tcp, NS, &mut sink).unwrap();
    assert_eq!(sink.skipped, 1);
}

#[test]
fn short_tcp_info_attribute_keeps_the_socket() {
    // Rewrite INET_DIAG_INFO's length to 104 bytes, as kernels before 4.1 send it.
    let mut msg = PROBING.to_vec();
    let mut at = 16 + 72;
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
        if kind == INET_DIAG_INFO {
            msg[at..at + 2].copy_from_slice(&(4u16 + 104).to_ne_bytes());
            break;
        }
        at += (len + 3) & !3;
    }
    let s = one(&msg, Proto::Tcp);
    let info = s.tcp_info.unwrap();
    assert_eq!(info.probes(), Some(42));
    assert_eq!(info.bytes_acked(), None);
    // A broken attribute length ends the attributes, not the socket.
    let mut broken = PROBING.to_vec();
    broken[16 + 72..16 + 72 + 2].copy_from_slice(&0xfff0u16.to_ne_bytes());
    assert_eq!(one(&broken, Proto::Tcp).timer.unwrap().retrans, 42);
}

proptest::proptest! {
    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let mut sink = DumpSink::default();
        let _ = parse_datagram(&bytes, Proto::Tcp, NS, &mut sink);
        let _ = parse_datagram(&bytes, Proto::Unix, NS, &mut sink);
        let _ = scan_done(&bytes);
    }

    #[test]
    fn never_panics_on_corrupted_captures(at in 0usize..408, byte in proptest::num::u8::ANY, cut in 0usize..=408) {
        let mut msg = PROBING.to_vec();
        msg[at] = byte;
        msg.truncate(cut);
        let mut sink = DumpSink::default();
        let _ = parse_datagram(&msg, Proto::Tcp, NS, &mut sink);
    }
}

#[test]
fn a_delayed_ack_or_unknown_timer_says_nothing_of_keepalive() {
    // The same connection as the kernel reports it with its delayed-ACK timer armed (5), and
    // with a value katop does not know: keepalive is then unknown, never "off".
    for (value, kind) in [(5u8, TimerKind::Delack), (9, TimerKind::Other(9))] {
        let mut msg = PROBING.to_vec();
        // idiag_timer: the third byte after the 16-byte netlink header.
        msg[16 + 2] = value;
        let s = one(&msg, Proto::Tcp);
        assert_eq!(s.timer.map(|t| t.kind), Some(kind));
        assert_eq!(
            crate::model::Keepalive::of(&s),
            Some(crate::model::Keepalive::Unknown)
        );
    }
    assert_eq!(TimerKind::Delack.name(), "delack");
}
