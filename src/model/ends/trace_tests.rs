//! Lines as this machine's kernel (6.18) wrote them while each end was made to happen.
use super::*;

fn run(lines: &str) -> Vec<Traced> {
    let mut t = Tracker::default();
    lines
        .lines()
        .filter_map(parse)
        .filter_map(|e| t.feed(e, SystemTime::UNIX_EPOCH))
        .collect()
}

fn causes(lines: &str) -> Vec<(Option<u64>, Cause)> {
    run(lines)
        .into_iter()
        .map(|t| (t.cookie, t.cause))
        .collect()
}

#[test]
fn an_orderly_close_on_both_sides() {
    let lines = "\
python3-18392   [001] ..... 32046.223091: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=53390 dport=35613 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_FIN_WAIT1
python3-18392   [001] .Ns2. 32046.223113: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=35613 dport=53390 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE_WAIT
lto cgu.0-18388   [001] .Ns1. 32046.223853: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=53390 dport=35613 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_FIN_WAIT2 newstate=TCP_CLOSE
lto cgu.0-18388   [001] .Ns1. 32046.223873: tcp_destroy_sock: family=AF_INET sport=53390 dport=35613 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=cc31e
python3-18392   [001] ..... 32046.323385: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=35613 dport=53390 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_LAST_ACK newstate=TCP_CLOSE
python3-18392   [001] ..... 32046.323388: tcp_destroy_sock: family=AF_INET sport=35613 dport=53390 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=cc31f
";
    assert_eq!(
        causes(lines),
        [
            (Some(0xcc31e), Cause::Closed),
            (Some(0xcc31f), Cause::Closed)
        ]
    );
}

#[test]
fn a_linger_zero_close_is_reset_sent_here_and_received_there() {
    // The aborting side is destroyed with its remote port and local address zeroed.
    let lines = "\
python3-18392   [001] ..... 32046.523961: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=53406 dport=35613 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE
python3-18392   [001] ..s2. 32046.523987: tcp_receive_reset: family=AF_INET sport=35613 dport=53406 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=cc320
python3-18392   [001] ..s2. 32046.523988: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=35613 dport=53406 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE
python3-18392   [001] ..s2. 32046.523990: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP sport=35613 dport=53406 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 error=104
python3-18392   [001] ..... 32046.524030: tcp_send_reset: skbaddr=0000000000000000 skaddr=0000000025a2ce4d src=127.0.0.1:53406 dest=127.0.0.1:35613 state=TCP_CLOSE reason=TCP_STATE
python3-18392   [001] ..... 32046.524032: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP sport=53406 dport=0 saddr=0.0.0.0 daddr=127.0.0.1 saddrv6=::ffff:0.0.0.0 daddrv6=::ffff:127.0.0.1 error=104
python3-18392   [001] b..1. 32046.524034: tcp_destroy_sock: family=AF_INET sport=53406 dport=0 saddr=0.0.0.0 daddr=127.0.0.1 saddrv6=::ffff:0.0.0.0 daddrv6=::ffff:127.0.0.1 sock_cookie=cc321
python3-18392   [001] b..1. 32046.724289: tcp_destroy_sock: family=AF_INET sport=35613 dport=53406 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=cc320
";
    let ends = run(lines);
    assert_eq!(
        ends.iter().map(|t| (t.cookie, t.cause)).collect::<Vec<_>>(),
        // The reset side is told at its error (its application holds it a while yet), with
        // the reset's cookie; the aborting side at its destroy.
        [
            (Some(0xcc320), Cause::ResetReceived),
            (Some(0xcc321), Cause::ResetSent)
        ]
    );
    // The aborted side keeps its full tuple.
    assert_eq!(ends[1].tuple.remote.1, 35613);
    assert_eq!(ends[0].errno, Some(104));
}

#[test]
fn a_kill_is_killed_and_its_peer_reset() {
    let lines = "\
ss-18535   [001] b..1. 32046.930173: tcp_send_reset: skbaddr=0000000000000000 skaddr=0000000075859b3a src=127.0.0.1:53418 dest=127.0.0.1:35613 state=TCP_ESTABLISHED reason=TCP_STATE
ss-18535   [001] b..1. 32046.930211: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=53418 dport=35613 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE
ss-18535   [001] b..1. 32046.930212: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP sport=53418 dport=35613 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 error=103
ss-18535   [001] ..s2. 32046.930220: tcp_receive_reset: family=AF_INET sport=35613 dport=53418 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=cc323
ss-18535   [001] ..s2. 32046.930220: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=35613 dport=53418 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE
ss-18535   [001] ..s2. 32046.930221: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP sport=35613 dport=53418 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 error=104
python3-18392   [001] b..1. 32047.137379: tcp_destroy_sock: family=AF_INET sport=53418 dport=35613 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=cc322
python3-18392   [001] b..1. 32047.137448: tcp_destroy_sock: family=AF_INET sport=35613 dport=53418 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=cc323
";
    assert_eq!(
        causes(lines),
        // Both told at their errors, before their destroys: the killed one by tuple alone.
        [(None, Cause::Killed), (Some(0xcc323), Cause::ResetReceived)]
    );
}

#[test]
fn a_keepalive_timeout_and_a_silent_timeout() {
    let lines = "\
rustc-18726   [001] ..s1. 32052.607825: tcp_send_reset: skbaddr=0000000000000000 skaddr=00000000a749b507 src=10.213.186.18:55514 dest=10.213.186.17:32849 state=TCP_ESTABLISHED reason=TCP_KEEPALIVE_TIMEOUT
rustc-18726   [001] ..s1. 32052.607855: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=55514 dport=32849 saddr=10.213.186.18 daddr=10.213.186.17 saddrv6=::ffff:10.213.186.18 daddrv6=::ffff:10.213.186.17 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE
rustc-18726   [001] .Ns1. 32052.607861: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP sport=55514 dport=32849 saddr=10.213.186.18 daddr=10.213.186.17 saddrv6=::ffff:10.213.186.18 daddrv6=::ffff:10.213.186.17 error=110
sysctl_defaults-18653   [000] b..1. 32052.611120: tcp_destroy_sock: family=AF_INET sport=55514 dport=32849 saddr=10.213.186.18 daddr=10.213.186.17 saddrv6=::ffff:10.213.186.18 daddrv6=::ffff:10.213.186.17 sock_cookie=cb4be
x-1   [000] ..s1. 1.000000: inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP sport=40000 dport=443 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=fd00::1 daddrv6=fd00::2 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE
x-1   [000] ..s1. 1.000001: inet_sk_error_report: family=AF_INET6 protocol=IPPROTO_TCP sport=40000 dport=443 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=fd00::1 daddrv6=fd00::2 error=110
x-1   [000] ..s1. 1.000002: tcp_destroy_sock: family=AF_INET6 sport=40000 dport=443 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=fd00::1 daddrv6=fd00::2 sock_cookie=10
";
    let ends = run(lines);
    assert_eq!(
        ends.iter().map(|t| (t.cookie, t.cause)).collect::<Vec<_>>(),
        [
            (None, Cause::KeepaliveTimeout),
            (None, Cause::RetransmitTimeout)
        ]
    );
    assert_eq!(
        ends[0].reset_reason.as_deref(),
        Some("TCP_KEEPALIVE_TIMEOUT")
    );
}

#[test]
fn listeners_other_protocols_and_garbage_end_nothing() {
    let lines = "\
# tracer: nop
python3-18392   [001] ..... 32047.445063: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=35613 dport=0 saddr=127.0.0.1 daddr=0.0.0.0 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:0.0.0.0 oldstate=TCP_LISTEN newstate=TCP_CLOSE
python3-18392   [001] b..1. 32047.445090: tcp_destroy_sock: family=AF_INET sport=35613 dport=0 saddr=127.0.0.1 daddr=0.0.0.0 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:0.0.0.0 sock_cookie=cb4ba
x-1 [000] ..... 1.0: inet_sock_set_state: family=AF_INET protocol=IPPROTO_SCTP sport=1 dport=2 saddr=1.1.1.1 daddr=1.1.1.2 saddrv6=::ffff:1.1.1.1 daddrv6=::ffff:1.1.1.2 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE
x-1 [000] ..... 1.0: tcp_destroy_sock: family=AF_INET sport=1 dport=2 saddr=1.1.1.1 daddr=1.1.1.2 saddrv6=nonsense daddrv6=::ffff:1.1.1.2 sock_cookie=zz
x-1 [000] ..... 1.0: tcp_destroy_sock: sport=
";
    assert_eq!(causes(lines), []);
}

#[test]
fn the_pending_table_stays_bounded() {
    let mut t = Tracker::default();
    for i in 0..(MAX_PENDING as u32 + 5000) {
        let tuple = Tuple {
            local: (Ipv6Addr::LOCALHOST, (i % 60000) as u16 + 1),
            remote: (Ipv6Addr::from(u128::from(i)), 80),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(i));
        assert!(t
            .feed(
                Event::ResetReceived {
                    tuple,
                    cookie: None
                },
                at
            )
            .is_none());
    }
    assert!(t.pending() <= MAX_PENDING);
}

proptest::proptest! {
    #[test]
    fn any_line_parses_or_not_without_panicking(line in ".{0,300}") {
        let mut t = Tracker::default();
        if let Some(e) = parse(&line) {
            let _ = t.feed(e, SystemTime::UNIX_EPOCH);
        }
    }
}
