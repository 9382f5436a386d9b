use super::*;
use crate::model::table::tests::sock;
use std::net::Ipv6Addr;

const W: SystemTime = SystemTime::UNIX_EPOCH;

fn tuple(port: u16) -> Tuple {
    Tuple {
        local: (Ipv6Addr::LOCALHOST, port),
        remote: (Ipv6Addr::LOCALHOST, 5432),
    }
}

fn traced(cookie: Option<u64>, port: u16, cause: Cause) -> Traced {
    Traced {
        cookie,
        tuple: tuple(port),
        cause,
        errno: None,
        reset_reason: None,
        at: W,
        evidence: true,
    }
}

fn raw(cookie: u64, port: u16, state: SockState) -> RawSock {
    let mut s = sock(state);
    s.cookie.0 = cookie;
    s.local = Endpoint::Inet(crate::model::InetAddr::new(
        Ipv6Addr::LOCALHOST.into(),
        port,
    ));
    s.remote = Endpoint::Inet("[::1]:5432".parse().unwrap());
    s
}

fn gone(cookie: u64, port: u16, state: SockState) -> Gone {
    Gone::of(&raw(cookie, port, state), W, true).unwrap()
}

fn what(e: &[Ended]) -> Vec<(Option<u64>, Cause, CauseSource, bool)> {
    e.iter()
        .map(|e| (e.cookie, e.cause, e.source, e.sock.is_some()))
        .collect()
}

use CauseSource::{Inferred, Tracepoint};

#[test]
fn a_verdict_meets_its_socket_by_cookie_or_by_tuple() {
    let mut d = Departures::default();
    let t0 = Instant::now();
    let out = d.step(
        vec![
            gone(7, 1000, SockState::Established),
            gone(8, 1001, SockState::Established),
        ],
        Some(vec![
            traced(Some(7), 1000, Cause::ResetReceived),
            traced(None, 1001, Cause::KeepaliveTimeout),
        ]),
        |_| None,
        t0,
        W,
    );
    assert_eq!(
        what(&out),
        [
            (Some(7), Cause::ResetReceived, Tracepoint, true),
            (Some(8), Cause::KeepaliveTimeout, Tracepoint, true)
        ]
    );
}

#[test]
fn a_socket_waits_a_poll_for_its_verdict_then_is_inferred() {
    let mut d = Departures::default();
    let t0 = Instant::now();
    let step = |d: &mut Departures, g, t, at| d.step(g, Some(t), |_| None, at, W);
    assert!(step(&mut d, vec![gone(7, 1, SockState::CloseWait)], vec![], t0).is_empty());
    // The verdict comes a poll later.
    let out = step(&mut d, vec![], vec![traced(Some(7), 1, Cause::Closed)], t0);
    assert_eq!(what(&out), [(Some(7), Cause::Closed, Tracepoint, true)]);
    // None within a poll and the grace: inferred from the last poll.
    assert!(step(&mut d, vec![gone(8, 2, SockState::FinWait2)], vec![], t0).is_empty());
    assert!(
        step(&mut d, vec![], vec![], t0).is_empty(),
        "a poll, not the grace"
    );
    let out = step(&mut d, vec![], vec![], t0 + GRACE);
    assert_eq!(what(&out), [(Some(8), Cause::Closed, Inferred, true)]);
}

#[test]
fn without_tracepoints_every_cause_is_inferred_at_once() {
    let mut d = Departures::default();
    assert!(Gone::of(&raw(9, 3, SockState::Listen), W, true).is_none());
    let mut probing = raw(7, 1, SockState::Established);
    probing.timer = Some(crate::model::Timer {
        kind: TimerKind::Keepalive,
        expires_ms: 100,
        retrans: 2,
    });
    let out = d.step(
        vec![
            Gone::of(&probing, W, true).unwrap(),
            gone(8, 2, SockState::TimeWait),
        ],
        None,
        |_| None,
        Instant::now(),
        W,
    );
    assert_eq!(
        what(&out),
        [
            (Some(7), Cause::Unknown, Inferred, true),
            (Some(8), Cause::Closed, Inferred, true)
        ]
    );
}

#[test]
fn ends_no_poll_saw_are_kept_and_a_listed_time_wait_is_told_once() {
    let mut d = Departures::default();
    let t0 = Instant::now();
    let listed = |c: u64| (c == 2).then(|| gone(2, 2, SockState::Established));
    let out = d.step(
        vec![],
        Some(vec![
            traced(Some(1), 1, Cause::ResetSent),
            traced(Some(2), 2, Cause::Closed),
        ]),
        listed,
        t0,
        W,
    );
    assert_eq!(
        what(&out),
        [
            (Some(1), Cause::ResetSent, Tracepoint, false),
            (Some(2), Cause::Closed, Tracepoint, true)
        ]
    );
    // Its TIME_WAIT over, cookie 2 leaves without a second end.
    let out = d.step(
        vec![gone(2, 2, SockState::TimeWait)],
        Some(vec![]),
        |_| None,
        t0,
        W,
    );
    assert!(out.is_empty());
    // An end told by tuple that meets no socket is kept after the grace.
    d.step(
        vec![],
        Some(vec![traced(None, 9, Cause::RetransmitTimeout)]),
        |_| None,
        t0,
        W,
    );
    let out = d.step(vec![], Some(vec![]), |_| None, t0 + GRACE, W);
    assert_eq!(
        what(&out),
        [(None, Cause::RetransmitTimeout, Tracepoint, false)]
    );
}

#[test]
fn a_burst_of_ends_told_by_tuple_each_meets_its_own_socket() {
    let mut d = Departures::default();
    let t0 = Instant::now();
    let gone: Vec<Gone> = (0..2000u16)
        .map(|p| gone(u64::from(p) + 1, 1000 + p, SockState::Established))
        .collect();
    // Told in another order, by tuple alone, half before their sockets leave.
    let told = |ports: std::ops::Range<u16>| {
        ports
            .rev()
            .map(|p| traced(None, 1000 + p, Cause::KeepaliveTimeout))
            .collect::<Vec<_>>()
    };
    let mut out = d.step(vec![], Some(told(0..1000)), |_| None, t0, W);
    assert!(out.is_empty(), "they wait for their sockets");
    out = d.step(gone, Some(told(1000..2000)), |_| None, t0, W);
    assert_eq!(out.len(), 2000);
    for e in &out {
        let sock = e.sock.as_ref().unwrap();
        assert_eq!(Some(sock.cookie.0), e.cookie);
        assert_eq!(sock.local.port(), Some(999 + e.cookie.unwrap() as u16));
        assert_eq!((e.cause, e.source), (Cause::KeepaliveTimeout, Tracepoint));
    }
}

#[test]
fn a_time_wait_seen_alive_whose_end_was_never_told_is_inferred_closed() {
    let mut d = Departures::default();
    let t0 = Instant::now();
    let mut never_alive = gone(2, 2, SockState::TimeWait);
    never_alive.seen_alive = false;
    let out = d.step(
        vec![gone(1, 1, SockState::TimeWait), never_alive],
        Some(vec![]),
        |_| None,
        t0,
        W,
    );
    assert!(out.is_empty());
    assert!(d.step(vec![], Some(vec![]), |_| None, t0, W).is_empty());
    let out = d.step(vec![], Some(vec![]), |_| None, t0 + GRACE, W);
    assert_eq!(what(&out), [(Some(1), Cause::Closed, Inferred, true)]);
}
