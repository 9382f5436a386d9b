use std::time::{Duration, Instant};

use super::*;
use crate::model::table::tests::{info, snapshot, sock, with_idle};
use crate::model::{ConnTable, Cookie, Endpoint, Owner, RawSock, SockState, Timer, TimerKind};

/// Builds a table from raw sockets and returns the cookies `expr` selects.
fn select(expr: &str, socks: Vec<RawSock>) -> Vec<u64> {
    let f = Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let now = Instant::now();
    let mut t = ConnTable::new(Duration::from_secs(300));
    t.apply(snapshot(socks), now);
    let mut out: Vec<u64> = t
        .entries()
        .filter(|e| f.matches(e, now))
        .map(|e| e.sock.cookie.0)
        .collect();
    out.sort_unstable();
    out
}

fn with_cookie(mut s: RawSock, c: u64) -> RawSock {
    s.cookie = Cookie(c);
    s
}

/// 1: idle postgres client without keepalive; 2: busy postgres with keepalive;
/// 3: `CLOSE_WAIT` to redis over IPv6; 4: listener on :5432; 5: keepalive probing, java.
fn farm() -> Vec<RawSock> {
    let idle_pg = with_cookie(with_idle(sock(SockState::Established), 3_600_000), 1);
    let mut busy_pg = with_cookie(with_idle(sock(SockState::Established), 10), 2);
    busy_pg.timer = Some(Timer {
        kind: TimerKind::Keepalive,
        expires_ms: 5000,
        retrans: 0,
    });
    let mut cw = with_cookie(with_idle(sock(SockState::CloseWait), 900_000), 3);
    cw.local = Endpoint::Inet("[::1]:41000".parse().unwrap());
    cw.remote = Endpoint::Inet("[::1]:6379".parse().unwrap());
    cw.family = Family::Inet6;
    let mut listen = with_cookie(sock(SockState::Listen), 4);
    listen.local = Endpoint::Inet("0.0.0.0:5432".parse().unwrap());
    listen.remote = Endpoint::Inet("0.0.0.0:0".parse().unwrap());
    let mut probing = with_cookie(with_idle(sock(SockState::Established), 8_000_000), 5);
    probing.timer = Some(Timer {
        kind: TimerKind::Keepalive,
        expires_ms: 5000,
        retrans: 3,
    });
    probing.remote = Endpoint::Inet("10.1.2.3:8080".parse().unwrap());
    probing.owner = Owner::Process {
        process: std::sync::Arc::new(crate::model::Process {
            pid: 7,
            name: "java".into(),
            cmdline: "java -jar app".into(),
            container: None,
        }),
        fd: 9,
    };
    vec![idle_pg, busy_pg, cw, listen, probing]
}

#[test]
fn selects_what_the_issue_examples_mean() {
    assert_eq!(select("", farm()), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        select("state:established idle>10m service:postgres", farm()),
        vec![1]
    );
    assert_eq!(select("dport:5432 !keepalive", farm()), vec![1]);
    assert_eq!(select("proc:java probes>0", farm()), vec![5]);
    assert_eq!(select("stale", farm()), vec![1, 3, 5]);
    assert_eq!(select("src:10.0.0.0/8 or dst:[::1]", farm()), vec![3]);
    assert_eq!(select("dst:10.0.0.0/8 or dst:[::1]", farm()), vec![3, 5]);
}

#[test]
fn terms_and_operators() {
    assert_eq!(select("state:close-wait", farm()), vec![3]);
    assert_eq!(select("state:CLOSE_WAIT", farm()), vec![3]);
    assert_eq!(select("state!=established", farm()), vec![3, 4]);
    assert_eq!(select("state:listen", farm()), vec![4]);
    assert_eq!(select("connected", farm()), vec![1, 2, 3, 5]);
    assert_eq!(select("sport:5432", farm()), vec![4]);
    assert_eq!(select("port:5432", farm()), vec![1, 2, 4]);
    assert_eq!(select("dport>=6000 dport<7000", farm()), vec![3]);
    assert_eq!(select("idle < 1s", farm()), vec![2]);
    assert_eq!(select("idle:1h", farm()), vec![1, 5]);
    assert_eq!(select("keepalive:off", farm()), vec![1, 3]);
    assert_eq!(select("keepalive", farm()), vec![2, 5]);
    assert_eq!(select("not keepalive and connected", farm()), vec![1, 3]);
    assert_eq!(select("!(keepalive or state:listen)", farm()), vec![1, 3]);
    assert_eq!(select("no-keepalive", farm()), vec![1]);
    assert_eq!(select("stale:probing", farm()), vec![5]);
    assert_eq!(select("stale:close-wait", farm()), vec![3]);
    assert_eq!(select("proc:42", farm()), vec![1, 2, 3, 4]);
    assert_eq!(select("proc:PSQL", farm()), vec![1, 2, 3, 4]);
    assert_eq!(select("pid:7 or uid:0", farm()), vec![5]);
    // comm: the whole name (a glob), where proc: takes part of it.
    assert_eq!(select("comm:jav", farm()), Vec::<u64>::new());
    assert_eq!(select("proc:jav", farm()), vec![5]);
    assert_eq!(select("comm:java", farm()), vec![5]);
    assert_eq!(select("comm:j*", farm()), vec![5]);
    assert_eq!(select("comm!=java", farm()), vec![1, 2, 3, 4]);
    assert_eq!(select("owner:process", farm()), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        select("owner:none or owner:unknown", farm()),
        Vec::<u64>::new()
    );
    assert_eq!(select("family:inet6", farm()), vec![3]);
    assert_eq!(select("dst:[::1]:6379", farm()), vec![3]);
    assert_eq!(select("dst:10.1.2.3:8080", farm()), vec![5]);
    assert_eq!(select("dst::8080", farm()), vec![5]);
    assert_eq!(select("src:127.0.0.1", farm()), vec![1, 2, 5]);
    assert_eq!(select("timer:keepalive probes=0", farm()), vec![2]);
    assert_eq!(select("proto:udp", farm()), Vec::<u64>::new());
    assert_eq!(
        select("service:redis or service:postgres and idle>30m", farm()),
        vec![1, 3]
    );
    assert_eq!(
        select("(service:redis or service:postgres) and idle>30m", farm()),
        vec![1]
    );
    assert_eq!(select("age>1h", farm()), Vec::<u64>::new());
}

#[test]
fn state_words_alone_as_ss_takes_them() {
    let mut young_cw = with_cookie(sock(SockState::CloseWait), 6);
    young_cw.remote = Endpoint::Inet("10.9.9.9:80".parse().unwrap());
    let with_young = || {
        let mut f = farm();
        f.push(young_cw.clone());
        f
    };
    // The state, not the stale reason: a CLOSE_WAIT younger than --stale-after is listed.
    assert_eq!(select("close-wait", with_young()), vec![3, 6]);
    assert_eq!(select("stale:close-wait", with_young()), vec![3]);
    assert_eq!(select("established", farm()), vec![1, 2, 5]);
    assert_eq!(select("estab", farm()), vec![1, 2, 5]);
    assert_eq!(select("ESTABLISHED", farm()), vec![1, 2, 5]);
    assert_eq!(select("listen or listening", farm()), vec![4]);
    assert_eq!(select("state:listening", farm()), vec![4]);
    assert_eq!(select("!established !listen", farm()), vec![3]);
    assert_eq!(select("synchronized", farm()), vec![1, 2, 3, 5]);
    assert_eq!(select("time-wait", farm()), Vec::<u64>::new());
    assert_eq!(
        select("state:fin-wait-1 or fin_wait2", farm()),
        Vec::<u64>::new()
    );
    // And a TIME_WAIT word asks for the summarised rows one by one.
    assert!(Filter::parse("time-wait").unwrap().asks_for_time_wait());
}

#[test]
fn missing_values_never_match_a_comparison() {
    let mut s = with_cookie(sock(SockState::Established), 9);
    s.tcp_info = None;
    assert!(select("idle>0ms", vec![s.clone()]).is_empty());
    assert!(select("idle<1h", vec![s.clone()]).is_empty());
    s.tcp_info = Some(info(0, 0, 0));
    assert_eq!(select("rtt<1ms", vec![s]), vec![9]);
}

fn err(expr: &str) -> FilterError {
    match Filter::parse(expr) {
        Ok(f) => panic!("{expr:?} parsed as {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_expressions_say_where_and_what() {
    let e = err("state:established idle>");
    assert_eq!(e.column, 24);
    assert_eq!(
        e.to_string(),
        "error at 24: expected a duration like 10m after 'idle>'"
    );
    let e = err("idle>10x");
    assert_eq!(e.column, 6);
    assert!(e.message.contains("duration"), "{e}");
    let e = err("state:establised");
    assert_eq!(e.column, 7);
    assert!(e.message.contains("close-wait"), "{e}");
    let e = err("dport:http");
    assert_eq!(e.column, 7);
    assert!(e.message.contains("number"), "{e}");
    let e = err("frobnicate");
    assert_eq!(e.column, 1);
    assert!(e.message.contains("unknown term 'frobnicate'"), "{e}");
    let e = err("(stale or idle");
    assert_eq!(e.column, 1);
    assert!(e.message.contains("never closed"), "{e}");
    assert_eq!(err("stale )").column, 7);
    assert_eq!(err("stale or").column, 9);
    assert_eq!(err("src:10.0.0.0/33").column, 5);
    assert_eq!(err("service:nosuch").column, 9);
    assert_eq!(err("proto>tcp").column, 6);
    assert_eq!(err("dport").column, 6);
    assert_eq!(err("idle>10m $").column, 10);
    // Columns count characters, not bytes.
    assert_eq!(err("proc:é idle>").column, 13);
    assert!(err("x").pointed("x").ends_with("\n  ^"));
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(s in "\\PC{0,40}") {
        let _ = Filter::parse(&s);
    }

    #[test]
    fn parser_never_panics_on_filter_like_text(s in "[a-z!():<>=\\[\\]0-9./ -]{0,40}") {
        let _ = Filter::parse(&s);
    }
}

#[test]
fn knows_when_time_wait_is_asked_for() {
    for (expr, asks) in [
        ("state:time-wait", true),
        ("state:TIME_WAIT or stale", true),
        ("timer:timewait", true),
        ("!state:time-wait", true),
        ("stale", false),
        ("proc:timewait", false),
    ] {
        assert_eq!(
            Filter::parse(expr).unwrap().asks_for_time_wait(),
            asks,
            "{expr}"
        );
    }
}

#[test]
fn keepalive_settings_and_detection_are_filterable() {
    use crate::model::SockOpts;
    let opts = |idle_s, keepalive| SockOpts {
        user_timeout_ms: 0,
        idle_s,
        intvl_s: 10,
        cnt: 5,
        keepalive,
        read: true,
    };
    // 1: keepalive on after 60 s; 2: keepalive set to 2 h; 3: unread (sysctl defaults), off.
    let mut short = with_cookie(with_idle(sock(SockState::Established), 1000), 1);
    short.opts = opts(60, true);
    let mut long = with_cookie(with_idle(sock(SockState::Established), 1000), 2);
    long.opts = opts(7200, true);
    let unread = with_cookie(with_idle(sock(SockState::Established), 1000), 3);
    let socks = vec![short, long, unread];
    assert_eq!(select("ka_idle>1h", socks.clone()), [2, 3]);
    assert_eq!(select("ka_idle>1h ka_source:socket", socks.clone()), [2]);
    assert_eq!(select("ka_source:sysctl-default", socks.clone()), [3]);
    assert_eq!(select("ka_cnt=5", socks.clone()), [1, 2]);
    assert_eq!(select("ka_intvl<=10s", socks.clone()), [1, 2]);
    // 60 s + 5 × 10 s; never (keepalive off) is longer than any bound.
    assert_eq!(select("detect<2m", socks.clone()), [1]);
    assert_eq!(select("detect>3h", socks.clone()), [3]);
    let e = Filter::parse("ka_source:maybe").unwrap_err();
    assert!(e.message.contains("socket or sysctl-default"), "{e}");
    assert_eq!(Filter::parse("detect>soon").unwrap_err().column, 8);
}

#[test]
fn nesting_is_bounded_with_an_error_at_its_column() {
    // 256 levels parse; one more is an error at the 257th opener, not a stack overflow.
    let ok = format!("{}idle>1s{}", "(".repeat(256), ")".repeat(256));
    assert!(Filter::parse(&ok).is_ok());
    let deep = format!("{}idle>1s{}", "(".repeat(257), ")".repeat(257));
    let e = Filter::parse(&deep).unwrap_err();
    assert_eq!(e.column, 257, "{e}");
    assert!(e.message.contains("more than 256 levels"), "{e}");
    // What crashed katop before: ~8,900 parentheses, ~18,000 negations.
    for text in [
        "(".repeat(100_000),
        "!".repeat(100_000),
        "not ".repeat(50_000),
    ] {
        let e = Filter::parse(&text).unwrap_err();
        assert!(e.message.contains("levels"), "{e}");
    }
    assert!(Filter::parse(&format!("{}idle", "!".repeat(256))).is_ok());
}

#[test]
fn namespaces_and_containers() {
    use crate::model::{NetnsId, NsInfo};
    let now = Instant::now();
    let mut host = sock(SockState::Established);
    host.netns = NetnsId(10);
    let mut web = sock(SockState::Established);
    web.netns = NetnsId(20);
    web.cookie = Cookie(2);
    let mut snap = snapshot(vec![host, web]);
    let info = |id, name: &str, container: Option<&str>, is_host| NsInfo {
        id: NetnsId(id),
        name: name.into(),
        container: container.map(Into::into),
        settings: crate::model::KernelSettings::default(),
        age: Duration::ZERO,
        host: is_host,
    };
    snap.namespaces = vec![
        info(10, "host", None, true),
        info(20, "podman:web-1", Some("podman:web-1"), false),
    ];
    let mut t = ConnTable::new(Duration::from_secs(300));
    t.apply(snap, now);
    let pick = |expr: &str| -> Vec<u64> {
        let f = Filter::parse(expr).unwrap();
        t.entries()
            .filter(|e| f.matches(e, now))
            .map(|e| e.sock.cookie.0)
            .collect()
    };
    assert_eq!(pick("netns:host"), [1]);
    assert_eq!(pick("netns:20"), [2]);
    assert_eq!(pick("netns:podman:web-1"), [2]);
    assert_eq!(pick("container:podman:web-*"), [2]);
    assert_eq!(pick("!container:*"), [1]);
    assert_eq!(pick("netns!=host"), [2]);
    let e = Filter::parse("container:[").unwrap_err();
    assert!(e.message.contains("not a glob"), "{e}");
}
