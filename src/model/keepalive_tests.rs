use super::*;
use crate::model::table::tests::{sock, with_idle};
use crate::model::Timer;

fn settings() -> KernelSettings {
    crate::model::table::tests::linux_defaults()
}

fn read(idle_s: u16, intvl_s: u16, cnt: u8, keepalive: bool, user_timeout_ms: u32) -> SockOpts {
    SockOpts {
        user_timeout_ms,
        idle_s,
        intvl_s,
        cnt,
        keepalive,
        read: true,
    }
}

fn ka_timer(expires_ms: u32, probes: u8) -> Timer {
    Timer {
        kind: TimerKind::Keepalive,
        expires_ms,
        retrans: probes,
    }
}

/// `naive` ms (the timers' own lengths) plus the timer wheel's expected lateness for these
/// keepalive settings (ms) and this state of the socket ([`keepalive_lateness`], HZ=250).
#[allow(clippy::unnecessary_wraps)] // compared with `detect`'s answer
fn late(naive: u64, settings: (u64, u64, u64), state: (u64, u64, u64)) -> Option<Detect> {
    let l = keepalive_lateness(Wheel { hz: 250 }, settings, state);
    Some(Detect::InMs(naive + l.mean_ms.round() as u64))
}

fn detect(s: &RawSock) -> Option<Detect> {
    countdown(s).map(|c| c.detect)
}

fn countdown(s: &RawSock) -> Option<Countdown> {
    let p = Params::of(s, &settings())?;
    dead_peer_detect(s, &p, &settings())
}

#[test]
fn options_read_from_the_socket_win_over_sysctls() {
    let mut s = with_idle(sock(SockState::Established), 1000);
    let p = Params::of(&s, &settings()).unwrap();
    assert_eq!(p.source, Source::SysctlDefault);
    assert_eq!((p.idle_s, p.intvl_s, p.cnt), (7200, 75, 9));
    // No timer armed: keepalive is off, as far as the kernel's timers tell.
    assert_eq!(p.enabled, Some(false));
    s.opts = read(60, 10, 5, true, 0);
    let p = Params::of(&s, &settings()).unwrap();
    assert_eq!(p.source, Source::Socket);
    assert_eq!(
        (p.enabled, p.idle_s, p.intvl_s, p.cnt),
        (Some(true), 60, 10, 5)
    );
    // Not TCP, or TIME_WAIT: keepalive does not apply.
    s.proto = Proto::Udp;
    assert_eq!(Params::of(&s, &settings()), None);
    assert_eq!(Params::of(&sock(SockState::TimeWait), &settings()), None);
}

#[test]
fn keepalive_off_never_notices() {
    let mut s = with_idle(sock(SockState::Established), 5000);
    s.opts = read(60, 10, 5, false, 0);
    assert_eq!(detect(&s), Some(Detect::Never));
    // Not ESTABLISHED: the question does not apply.
    let mut cw = with_idle(sock(SockState::CloseWait), 5000);
    cw.opts = s.opts;
    assert_eq!(detect(&cw), None);
}

#[test]
fn keepalive_on_is_time_to_first_probe_plus_all_probes() {
    let mut s = with_idle(sock(SockState::Established), 5000);
    s.opts = read(60, 10, 5, true, 0);
    // Timer armed 55 s out, the peer silent 5 s: 55 s + 5 × 10 s, each timer a little late.
    s.timer = Some(ka_timer(55_000, 0));
    let ka = (60_000, 10_000, 5);
    assert_eq!(detect(&s), late(105_000, ka, (5000, 55_000, 0)));
    assert_eq!(countdown(&s).unwrap().basis, Basis::Socket);
    // No keepalive timer reported (hidden): from the idle time, 60 s − 5 s silent.
    s.timer = None;
    assert_eq!(detect(&s), late(105_000, ka, (5000, 0, 0)));
    // System defaults, not read: 2h + 75 s × 9 less the 5 s already silent, an estimate.
    let mut d = with_idle(sock(SockState::Established), 5000);
    d.timer = Some(ka_timer(7_195_000, 0));
    let c = countdown(&d).unwrap();
    let defaults = (7_200_000, 75_000, 9);
    assert_eq!(
        Some(c.detect),
        late(7_195_000 + 675_000, defaults, (5000, 7_195_000, 0))
    );
    assert_eq!(c.basis, Basis::SysctlDefault);
    assert!(c.is_estimate());
}

#[test]
fn the_keepalive_timer_rearms_lazily_after_traffic() {
    // Keepalive 5 s / 1 s / 3, armed at the handshake; the peer's last packet 1 s ago, the
    // timer fires in 1 s: then the silence is only 2 s, so it waits 3 s more before the first
    // probe (4 s from now), and drops it 3 probes later: 7 s, not 1 + 3 = 4 s.
    let mut s = with_idle(sock(SockState::Established), 1000);
    s.opts = read(5, 1, 3, true, 0);
    s.timer = Some(ka_timer(1000, 0));
    assert_eq!(detect(&s), late(7000, (5000, 1000, 3), (1000, 1000, 0)));
    // Silent for longer than the idle time already: the armed firing probes.
    let mut quiet = with_idle(sock(SockState::Established), 6000);
    quiet.opts = s.opts;
    quiet.timer = Some(ka_timer(500, 0));
    assert_eq!(
        detect(&quiet),
        late(500 + 3000, (5000, 1000, 3), (6000, 500, 0))
    );
}

#[test]
fn silence_is_the_time_since_any_segment_from_the_peer() {
    // Data 100 s ago, but an ACK 2 s ago: the keepalive timer counts from the ACK.
    let mut s = with_idle(sock(SockState::Established), 100_000);
    set_ms(&mut s, 56, 2000);
    s.opts = read(60, 10, 5, true, 0);
    s.timer = Some(ka_timer(0, 0));
    assert_eq!(
        detect(&s),
        late(58_000 + 50_000, (60_000, 10_000, 5), (2000, 0, 0))
    );
}

#[test]
fn while_probing_it_is_the_next_probe_plus_the_probes_left() {
    let mut s = with_idle(sock(SockState::Established), 90_000);
    s.opts = read(60, 10, 5, true, 0);
    // 3 of 5 probes out, next check in 4 s: two more intervals after it.
    s.timer = Some(ka_timer(4000, 3));
    let ka = (60_000, 10_000, 5);
    assert_eq!(detect(&s), late(4000 + 2 * 10_000, ka, (90_000, 4000, 3)));
    // All probes out: the next check drops it.
    s.timer = Some(ka_timer(4000, 5));
    assert_eq!(detect(&s), late(4000, ka, (90_000, 4000, 5)));
}

#[test]
fn user_timeout_replaces_the_probe_count() {
    let mut s = with_idle(sock(SockState::Established), 0);
    // idle 60, intvl 10, cnt 9, user timeout 75 s: first probe at 60 s, checks at 70, 80 s:
    // at 80 s the silence (80 s) passed 75 s with a probe out.
    s.opts = read(60, 10, 9, true, 75_000);
    s.timer = Some(ka_timer(60_000, 0));
    assert_eq!(detect(&s), Some(Detect::InMs(80_000)));
    // A user timeout shorter than the idle time: the first check after a probe.
    s.opts = read(60, 10, 9, true, 5_000);
    assert_eq!(detect(&s), Some(Detect::InMs(70_000)));
    // Probing, 2 probes out, silent 75 s, next check in 5 s: 80 s passes 78 s: dropped then.
    let mut p = with_idle(sock(SockState::Established), 75_000);
    p.opts = read(60, 10, 9, true, 78_000);
    p.timer = Some(ka_timer(5000, 2));
    assert_eq!(detect(&p), Some(Detect::InMs(5000)));
}

/// A retransmit timer with `n` retransmissions, and `tcpi_rto`.
fn retransmitting(expires_ms: u32, n: u8, rto_ms: u32) -> RawSock {
    let mut s = with_idle(sock(SockState::Established), 4000);
    s.timer = Some(Timer {
        kind: TimerKind::Retransmit,
        expires_ms,
        retrans: n,
    });
    set_ms(&mut s, 8, rto_ms * 1000);
    s
}

/// Overwrites a u32 of the test socket's `tcp_info` at `offset`.
fn set_ms(s: &mut RawSock, offset: usize, v: u32) {
    let info = s.tcp_info.unwrap();
    let mut b = vec![0u8; 248];
    for (off, val) in [
        (44, info.last_data_sent().unwrap()),
        (52, info.last_data_recv().unwrap()),
        (56, info.last_ack_recv().unwrap()),
        (8, info.rto().unwrap()),
    ] {
        b[off..off + 4].copy_from_slice(&val.to_ne_bytes());
    }
    b[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
    s.tcp_info = Some(crate::model::tcp_info::TcpInfo::from_kernel_bytes(&b));
}

#[test]
fn outstanding_data_times_out_from_the_first_retransmission() {
    // A write after 4 s of silence; the first RTO fires in 200 ms and starts the clock: the
    // user timeout of 8 s runs from then, not from the peer's last packet 4 s ago.
    let mut s = retransmitting(200, 0, 200);
    s.opts = read(60, 10, 5, false, 8000);
    let c = countdown(&s).unwrap();
    assert_eq!(c, Countdown::new(Detect::InMs(8200), Basis::Socket));
    // Two retransmissions later, no exact clock (a short tcp_info): estimated, and said so.
    let mut s = retransmitting(500, 2, 800);
    s.opts = read(60, 10, 5, false, 8000);
    let c = countdown(&s).unwrap();
    // Waits 400 ms, then 300 of the current 800: 0.7 s since the first retransmission.
    assert_eq!(c.detect, Detect::InMs(7300));
    assert_eq!(c.basis, Basis::Estimate);
    // The kernel's own clock (tcpi_total_rto_time, the only recovery) makes it exact.
    let mut exact = s.clone();
    set_ms(&mut exact, 244, 1000);
    let mut b = vec![0u8; 248];
    b.copy_from_slice(&tcp_info_bytes(&exact));
    b[242..244].copy_from_slice(&1u16.to_ne_bytes());
    exact.tcp_info = Some(crate::model::tcp_info::TcpInfo::from_kernel_bytes(&b));
    let c = countdown(&exact).unwrap();
    assert_eq!(c, Countdown::new(Detect::InMs(7000), Basis::Socket));
    // Without a user timeout: tcp_retries2's model, from the first retransmission.
    let mut d = retransmitting(200, 0, 200);
    d.opts = read(60, 10, 5, false, 0);
    assert_eq!(detect(&d), Some(Detect::InMs(200 + 1_044_400)));
}

fn tcp_info_bytes(s: &RawSock) -> Vec<u8> {
    let info = s.tcp_info.unwrap();
    let mut b = vec![0u8; 248];
    for (off, val) in [
        (44, info.last_data_sent().unwrap()),
        (52, info.last_data_recv().unwrap()),
        (56, info.last_ack_recv().unwrap()),
        (8, info.rto().unwrap()),
        (244, info.total_rto_time().unwrap()),
    ] {
        b[off..off + 4].copy_from_slice(&val.to_ne_bytes());
    }
    b
}

#[test]
fn a_zero_window_peer_keeps_the_connection_unless_a_user_timeout_ends_it() {
    let mut s = with_idle(sock(SockState::Established), 1000);
    s.timer = Some(Timer {
        kind: TimerKind::Probe0,
        expires_ms: 3000,
        retrans: 0,
    });
    set_ms(&mut s, 8, 200_000);
    s.opts = read(60, 10, 5, true, 0);
    assert_eq!(detect(&s), Some(Detect::ZeroWindow));
    s.opts = read(60, 10, 5, true, 30_000);
    let c = countdown(&s).unwrap();
    assert_eq!(c.detect, Detect::InMs(33_000));
}

#[test]
fn middlebox_declarations_parse_with_clear_errors() {
    let m = Middlebox::parse(None, "350s").unwrap();
    assert_eq!((m.timeout_s, m.dest.is_none()), (350, true));
    let m = Middlebox::parse(None, "10.0.0.0/8=aws-nlb").unwrap();
    assert_eq!((m.name.as_str(), m.timeout_s), ("aws-nlb", 350));
    assert!(m.applies_to(&Endpoint::Inet("10.1.2.3:5432".parse().unwrap())));
    assert!(!m.applies_to(&Endpoint::Inet("192.168.1.1:5432".parse().unwrap())));
    let m = Middlebox::parse(Some("pg-proxy"), ":5432=4m").unwrap();
    assert_eq!((m.name.as_str(), m.timeout_s), ("pg-proxy", 240));
    assert!(m.applies_to(&Endpoint::Inet("192.168.1.1:5432".parse().unwrap())));
    let e = Middlebox::parse(None, "10.0.0.0/99=350s").unwrap_err();
    assert!(e.contains("not a destination"), "{e}");
    let e = Middlebox::parse(None, "soon").unwrap_err();
    assert!(e.contains("aws-nlb"), "{e}");
    assert!(Middlebox::parse(None, "500ms").is_err());
}

#[test]
fn at_risk_when_silent_past_the_middlebox_without_shorter_keepalive() {
    let mbs = vec![
        Middlebox::parse(Some("nlb"), "350s").unwrap(),
        Middlebox::parse(Some("pg-proxy"), ":5432=240s").unwrap(),
    ];
    let st = settings();
    // Silent 5 min towards :5432: the 240 s proxy is the tightest; keepalive off.
    let mut s = with_idle(sock(SockState::Established), 300_000);
    s.opts = read(7200, 75, 9, false, 0);
    let r = at_risk(&s, &st, &mbs).expect("at risk");
    assert_eq!(r.middlebox.name, "pg-proxy");
    let text = r.to_string();
    assert!(
        text.contains("silent for 5m")
            && text.contains("pg-proxy's 4m")
            && text.contains("keepalive is off"),
        "{text}"
    );
    // Keepalive that probes before the middlebox forgets protects it.
    s.opts = read(60, 10, 5, true, 0);
    assert_eq!(at_risk(&s, &st, &mbs), None);
    // Keepalive slower than the middlebox does not.
    s.opts = read(7200, 75, 9, true, 0);
    let r = at_risk(&s, &st, &mbs).unwrap();
    assert!(r.to_string().contains("keepalive waits 2h"), "{r}");
    // Not yet silent that long: not at risk; no middlebox declared: never.
    let quiet = with_idle(sock(SockState::Established), 100_000);
    assert_eq!(at_risk(&quiet, &st, &mbs), None);
    assert_eq!(at_risk(&s, &st, &[]), None);
}

#[test]
fn the_timer_wheel_makes_long_probe_intervals_late_and_the_countdown_says_by_how_much() {
    // 30 s × 20 probes, 3 out, next in 10 s: every probe timer is re-armed from its callback,
    // so each of the 18 still to fire is 0.72 s late at HZ=250 (the countdown came
    // out 14 s early at its start): 13 s in all, known exactly.
    let mut s = with_idle(sock(SockState::Established), 100_000);
    s.opts = read(60, 30, 20, true, 0);
    s.timer = Some(ka_timer(10_000, 3));
    let c = countdown(&s).unwrap();
    let naive = 10_000 + 17 * 30_000;
    assert_eq!(c.detect, Detect::InMs(naive + 18 * 720));
    assert_eq!(c.spread, Some((naive + 18 * 720, naive + 18 * 720)));
    // Before the first probe the idle timer's own rounding is not known: a range around
    // the expected moment.
    s.timer = Some(ka_timer(50_000, 0));
    s.opts = read(60, 30, 20, true, 0);
    let mut fresh = with_idle(sock(SockState::Established), 10_000);
    fresh.opts = s.opts;
    fresh.timer = s.timer;
    let c = countdown(&fresh).unwrap();
    let (lo, hi) = c.spread.unwrap();
    let Detect::InMs(mid) = c.detect else {
        panic!("{c:?}")
    };
    assert!(lo < mid && mid < hi, "{c:?}");
    // 20 aligned 30 s timers after a 60 s idle timer (same level): 20 × 0.72 s at least.
    assert!(lo >= 50_000 + 20 * 30_000 + 20 * 720, "{c:?}");
    // Later, the same countdown moves with the clock.
    assert_eq!(c.after(1000).spread, Some((lo - 1000, hi - 1000)));
}

#[test]
fn a_count_of_billions_is_one_product_not_billions_of_steps() {
    // A misconfigured sysctl (or fuzzed one) may say 4 billion probes: the lateness is the
    // sum of as many equal terms, computed at once (a loop took the fuzz suite 40 minutes).
    let wheel = Wheel { hz: 250 };
    let one = keepalive_lateness(wheel, (7_200_000, 75_000, 1), (0, 7_200_000, 0));
    let three = keepalive_lateness(wheel, (7_200_000, 75_000, 3), (0, 7_200_000, 0));
    let many = keepalive_lateness(
        wheel,
        (7_200_000, 75_000, u64::from(u32::MAX)),
        (0, 7_200_000, 0),
    );
    let step = three.mean_ms - one.mean_ms;
    assert!(
        (many.mean_ms - (one.mean_ms + step / 2.0 * (f64::from(u32::MAX) - 1.0))).abs() < 1.0e3
    );
    let probing = keepalive_lateness(
        wheel,
        (7_200_000, 75_000, u64::from(u32::MAX)),
        (0, 75_000, 3),
    );
    assert!(probing.max_ms.is_finite());
}
