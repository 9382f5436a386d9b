//! Lines as this machine's kernel (6.18) wrote them while each end was made to happen.
use super::*;
use crate::model::ends::tracker::MAX_PENDING;
use crate::model::ends::Cause;
use std::net::Ipv6Addr;
use std::time::SystemTime;

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

/// A `trace_pipe` line for `event` with `fields` (as this kernel formats them).
fn line(event: &str, fields: &str) -> String {
    format!("x-1 [000] ..s1. 1.000000: {event}: {fields}\n")
}

fn state(sport: u16, dport: u16, old: &str, new: &str) -> String {
    line(
        "inet_sock_set_state",
        &format!(
            "family=AF_INET protocol=IPPROTO_TCP sport={sport} dport={dport} saddr=127.0.0.1 \
             daddr=127.0.0.2 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.2 \
             oldstate=TCP_{old} newstate=TCP_{new}"
        ),
    )
}

fn ends_line(event: &str, sport: u16, dport: u16, tail: &str) -> String {
    let (s, d) = if dport == 0 {
        ("0.0.0.0", "::ffff:0.0.0.0")
    } else {
        ("127.0.0.1", "::ffff:127.0.0.1")
    };
    line(
        event,
        &format!(
            "family=AF_INET protocol=IPPROTO_TCP sport={sport} dport={dport} saddr={s} \
             daddr=127.0.0.2 saddrv6={d} daddrv6=::ffff:127.0.0.2 {tail}"
        ),
    )
}

fn reset_sent(sport: u16, dport: u16, skaddr: &str, reason: &str) -> String {
    line(
        "tcp_send_reset",
        &format!(
            "skbaddr=0000000000000000 skaddr={skaddr} src=127.0.0.1:{sport} \
             dest=127.0.0.2:{dport} state=TCP_CLOSE reason={reason}"
        ),
    )
}

#[test]
fn a_connect_that_never_opened_ends_no_connection() {
    let lines = [
        ends_line("tcp_receive_reset", 41000, 80, "sock_cookie=5"),
        state(41000, 80, "SYN_SENT", "CLOSE"),
        ends_line("inet_sk_error_report", 41000, 80, "error=111"),
        ends_line("tcp_destroy_sock", 41000, 80, "sock_cookie=5"),
    ]
    .concat();
    assert_eq!(causes(&lines), []);
}

#[test]
fn a_reset_no_socket_sent_does_not_mark_the_next_connection_on_its_tuple() {
    let lines = [
        reset_sent(80, 41000, "0000000000000000", "NO_SOCKET"),
        state(80, 41000, "SYN_RECV", "ESTABLISHED"),
        state(80, 41000, "ESTABLISHED", "CLOSE_WAIT"),
        state(80, 41000, "LAST_ACK", "CLOSE"),
        ends_line("tcp_destroy_sock", 80, 41000, "sock_cookie=6"),
    ]
    .concat();
    assert_eq!(causes(&lines), [(Some(6), Cause::Closed)]);
}

#[test]
fn an_icmp_reject_is_its_error_not_the_empty_report_before_it() {
    let lines = [
        state(41001, 80, "ESTABLISHED", "CLOSE"),
        ends_line("inet_sk_error_report", 41001, 80, "error=0"),
        ends_line("inet_sk_error_report", 41001, 80, "error=113"),
    ]
    .concat();
    let ends = run(&lines);
    assert_eq!(ends.len(), 1);
    assert_eq!(
        (ends[0].cause, ends[0].errno),
        (Cause::RetransmitTimeout, Some(113))
    );
}

#[test]
fn an_orphan_whose_fin_was_never_acknowledged_timed_out() {
    let lines = [
        state(41002, 80, "ESTABLISHED", "FIN_WAIT1"),
        state(41002, 80, "FIN_WAIT1", "CLOSE"),
        ends_line("tcp_destroy_sock", 41002, 80, "sock_cookie=7"),
    ]
    .concat();
    assert_eq!(causes(&lines), [(Some(7), Cause::RetransmitTimeout)]);
}

#[test]
fn an_abort_is_not_confused_with_a_sibling_from_the_same_client() {
    // Two server sockets for one client address: one in CLOSE_WAIT, one aborted (its destroy
    // zeroes the remote port).
    let lines = [
        state(80, 41003, "ESTABLISHED", "CLOSE_WAIT"),
        state(80, 41004, "ESTABLISHED", "CLOSE"),
        reset_sent(80, 41004, "00000000deadbeef", "TCP_ABORT_ON_CLOSE"),
        ends_line("tcp_destroy_sock", 80, 0, "sock_cookie=8"),
        state(80, 41003, "LAST_ACK", "CLOSE"),
        ends_line("tcp_destroy_sock", 80, 41003, "sock_cookie=9"),
    ]
    .concat();
    let ends = run(&lines);
    assert_eq!(
        ends.iter().map(|t| (t.cookie, t.cause)).collect::<Vec<_>>(),
        [(Some(8), Cause::ResetSent), (Some(9), Cause::Closed)]
    );
    assert_eq!(ends[0].tuple.remote.1, 41004, "the aborted one's own tuple");
    assert_eq!(ends[0].errno, None, "its application closed it: no error");
}

#[test]
fn a_destroy_alone_is_no_evidence_of_a_cause() {
    let ends = run(&ends_line("tcp_destroy_sock", 41005, 80, "sock_cookie=a"));
    assert_eq!(ends.len(), 1);
    assert!(!ends[0].evidence);
    assert_eq!(ends[0].cause, Cause::Unknown);
}
