use super::*;
use crate::model::table::tests::{sock, with_idle};
use crate::model::Timer;

fn settings() -> KernelSettings {
    KernelSettings {
        keepalive_time_s: Some(7200),
        keepalive_intvl_s: Some(75),
        keepalive_probes: Some(9),
        retries2: Some(15),
        conntrack_established_s: None,
    }
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

fn detect(s: &RawSock) -> Option<Detect> {
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
    // Timer armed 55 s out: 55 s + 5 × 10 s.
    s.timer = Some(ka_timer(55_000, 0));
    assert_eq!(detect(&s), Some(Detect::InMs(105_000)));
    // No keepalive timer reported (hidden): from the idle time, 60 s − 5 s silent.
    s.timer = None;
    assert_eq!(detect(&s), Some(Detect::InMs(105_000)));
    // System defaults: 2h + 75 s × 9 less the 5 s already silent.
    let mut d = with_idle(sock(SockState::Established), 5000);
    d.timer = Some(ka_timer(7_195_000, 0));
    assert_eq!(detect(&d), Some(Detect::InMs(7_195_000 + 675_000)));
}

#[test]
fn while_probing_it_is_the_next_probe_plus_the_probes_left() {
    let mut s = with_idle(sock(SockState::Established), 90_000);
    s.opts = read(60, 10, 5, true, 0);
    // 3 of 5 probes out, next check in 4 s: two more intervals after it.
    s.timer = Some(ka_timer(4000, 3));
    assert_eq!(detect(&s), Some(Detect::InMs(4000 + 2 * 10_000)));
    // All probes out: the next check drops it.
    s.timer = Some(ka_timer(4000, 5));
    assert_eq!(detect(&s), Some(Detect::InMs(4000)));
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
}

#[test]
fn outstanding_data_times_out_by_retransmissions() {
    assert_eq!(retransmit_give_up_ms(15), 924_600);
    assert_eq!(retransmit_give_up_ms(8), 102_200);
    let mut s = with_idle(sock(SockState::Established), 1000);
    s.timer = Some(Timer {
        kind: TimerKind::Retransmit,
        expires_ms: 400,
        retrans: 2,
    });
    assert_eq!(detect(&s), Some(Detect::InMs(924_600 - 1000)));
    s.opts = read(60, 10, 5, false, 30_000);
    assert_eq!(detect(&s), Some(Detect::InMs(29_000)));
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
