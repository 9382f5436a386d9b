//! The table's history across polls, its stale rules and helpers other tests build on.

use super::*;
use crate::model::tcp_info::TcpInfo;
use crate::model::{Cookie, Endpoint, Family, Inode, Owner, Process, Proto, StaleReason};
use std::sync::Arc;

/// A TCP socket 127.0.0.1:40000 → 127.0.0.1:5432 owned by pid 42, in `state`.
pub fn sock(state: SockState) -> RawSock {
    RawSock {
        proto: Proto::Tcp,
        family: Family::Inet,
        state,
        local: Endpoint::Inet("127.0.0.1:40000".parse().unwrap()),
        remote: Endpoint::Inet("127.0.0.1:5432".parse().unwrap()),
        interface: 0,
        inode: Inode(1000),
        cookie: Cookie(1),
        netns: NetnsId(1),
        uid: crate::model::Uid::new(1000),
        recv_q: 0,
        send_q: 0,
        timer: None,
        tcp_info: None,
        opts: crate::model::SockOpts::default(),
        owner: Owner::Process {
            process: Arc::new(Process {
                pid: 42,
                name: "psql".into(),
                cmdline: "psql db".into(),
                container: None,
            }),
            fd: 3,
        },
    }
}

/// Sets `tcp_info` with last data sent/received and last ACK all `idle_ms` ago.
/// Linux's default keepalive and retransmission sysctls.
pub fn linux_defaults() -> crate::model::KernelSettings {
    crate::model::KernelSettings {
        keepalive_time_s: Some(7200),
        keepalive_intvl_s: Some(75),
        keepalive_probes: Some(9),
        retries2: Some(15),
        rto_max_ms: Some(120_000),
        conntrack_established_s: None,
        hz: Some(250),
    }
}

pub fn with_idle(mut s: RawSock, idle_ms: u32) -> RawSock {
    s.tcp_info = Some(info(idle_ms, 0, 0));
    s
}

pub fn info(idle_ms: u32, bytes_acked: u64, bytes_received: u64) -> TcpInfo {
    let mut b = vec![0u8; 248];
    for off in [44, 52, 56] {
        b[off..off + 4].copy_from_slice(&idle_ms.to_ne_bytes());
    }
    b[120..128].copy_from_slice(&bytes_acked.to_ne_bytes());
    b[128..136].copy_from_slice(&bytes_received.to_ne_bytes());
    TcpInfo::from_kernel_bytes(&b)
}

pub fn snapshot(socks: Vec<RawSock>) -> Snapshot {
    Snapshot {
        socks,
        netns: NetnsId(1),
        settings: KernelSettings::default(),
        interfaces: HashMap::new(),
        holders: Arc::default(),
        namespaces: Vec::new(),
        unread_namespaces: 0,
        taken_at: Instant::now(),
        wall: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_308_072),
        cost: PollCost::default(),
        warnings: Vec::new(),
        ends: None,
        every_namespace: true,
        unlisted: Vec::new(),
        opts_changed: Vec::new(),
    }
}

#[test]
fn history_carries_over_by_cookie() {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    let mut a = sock(SockState::Established);
    a.tcp_info = Some(info(0, 1000, 500));
    table.apply(snapshot(vec![a.clone()]), t0);
    let e = table.get(&a.key()).unwrap();
    assert_eq!(e.first_seen(), t0);
    assert_eq!(e.rate_in(), None);

    a.tcp_info = Some(info(0, 3000, 1500));
    let t1 = t0 + Duration::from_secs(2);
    table.apply(snapshot(vec![a.clone()]), t1);
    let e = table.get(&a.key()).unwrap();
    assert_eq!(e.first_seen(), t0);
    assert_eq!(e.rate_out(), Some(1000.0));
    assert_eq!(e.rate_in(), Some(500.0));
    assert_eq!(e.age(t1), Duration::from_secs(2));
    assert_eq!(e.service(), Some("postgres"));
}

#[test]
fn close_wait_watched_long_enough_is_stale() {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    let est = with_idle(sock(SockState::Established), 0);
    table.apply(snapshot(vec![est]), t0);
    let cw = with_idle(sock(SockState::CloseWait), 0);
    table.apply(snapshot(vec![cw.clone()]), t0 + Duration::from_secs(1));
    assert!(table.get(&cw.key()).unwrap().stale.is_empty());
    table.apply(snapshot(vec![cw.clone()]), t0 + Duration::from_secs(302));
    let e = table.get(&cw.key()).unwrap();
    assert_eq!(e.state_since(), t0 + Duration::from_secs(1));
    assert!(e.stale.contains(StaleReason::CloseWait));
}

#[test]
fn a_retired_table_carries_history_over() {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    let mut a = sock(SockState::Established);
    a.tcp_info = Some(info(0, 1000, 500));
    table.apply(snapshot(vec![a.clone()]), t0);
    table.retire(Keep::History);
    assert!(table.is_empty());
    a.tcp_info = Some(info(0, 3000, 1500));
    let t1 = t0 + Duration::from_secs(2);
    table.apply(snapshot(vec![a.clone()]), t1);
    let e = table.get(&a.key()).unwrap();
    assert_eq!(e.first_seen(), t0);
    assert_eq!(e.rate_out(), Some(1000.0));
    assert_eq!(e.state_since(), t0);
}

#[test]
fn gone_sockets_leave_and_apply_is_idempotent() {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    let a = sock(SockState::Established);
    let mut b = sock(SockState::Listen);
    b.cookie = Cookie(2);
    table.apply(snapshot(vec![a.clone(), b.clone()]), t0);
    table.apply(snapshot(vec![a.clone(), b.clone()]), t0);
    assert_eq!(table.len(), 2);
    table.apply(snapshot(vec![b.clone()]), t0 + Duration::from_secs(1));
    assert_eq!(table.len(), 1);
    assert!(table.get(&a.key()).is_none());
    assert_eq!(table.get(&b.key()).unwrap().first_seen(), t0);
    assert_eq!(table.get(&b.key()).unwrap().idle_ms(), None);
}

#[test]
fn a_socket_listed_twice_keeps_its_first_listing_and_the_index_its_place() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut table = ConnTable::new(Duration::from_secs(300));
    let with = |cookie: u64, recv_q: u32| {
        let mut s = sock(SockState::Established);
        (s.cookie, s.recv_q) = (Cookie(cookie), recv_q);
        s
    };
    table.apply(snapshot(vec![with(1, 0), with(2, 0), with(3, 0)]), t0);
    // 2 left; 1 is listed twice (the second listing a moment later); 3 is carried, after
    // both repeats (its place moves up); 4 is new, listed twice as well.
    let applied = table.apply(
        snapshot(vec![
            with(4, 40),
            with(1, 10),
            with(4, 41),
            with(1, 11),
            with(3, 30),
        ]),
        t1,
    );
    assert_eq!(table.len(), 3);
    assert_eq!(applied.gone, vec![1], "the last poll's second socket left");
    for (cookie, recv_q, first_seen) in [(1, 10, t0), (3, 30, t0), (4, 40, t1)] {
        let e = table.by_cookie(Cookie(cookie)).unwrap();
        assert_eq!(
            (e.sock.recv_q, e.first_seen()),
            (recv_q, first_seen),
            "{cookie}"
        );
    }
    assert!(table.by_cookie(Cookie(2)).is_none());
    // Applied in place: 1 and 3 keep their places (3 moves up by the one that left before
    // it), and the new 4 comes after them.
    let order: Vec<Cookie> = table.entries().map(|e| e.sock.cookie).collect();
    assert_eq!(order, [Cookie(1), Cookie(3), Cookie(4)]);
    // A cookie now in another namespace is another socket: the one before left.
    let mut moved = with(3, 31);
    moved.netns = NetnsId(99);
    let t2 = t1 + Duration::from_secs(1);
    let applied = table.apply(snapshot(vec![with(1, 12), moved.clone(), with(4, 42)]), t2);
    assert_eq!(applied.gone, vec![1], "3 was second in the last poll");
    assert_eq!(applied.departed[0].netns, NetnsId(1), "the one that left");
    assert_eq!(table.get(&moved.key()).unwrap().first_seen(), t2);
    assert_eq!(table.by_cookie(Cookie(4)).unwrap().first_seen(), t1);
}

#[test]
fn local_pairs_carry_across_polls_and_new_ones_are_found() {
    let mk = |cookie: u64, state: SockState, local: &str, remote: &str| {
        let mut s = sock(state);
        s.cookie = Cookie(cookie);
        s.local = Endpoint::Inet(local.parse().unwrap());
        s.remote = Endpoint::Inet(remote.parse().unwrap());
        s
    };
    let listener = mk(1, SockState::Listen, "127.0.0.1:5432", "0.0.0.0:0");
    let client = mk(
        2,
        SockState::Established,
        "127.0.0.1:40000",
        "127.0.0.1:5432",
    );
    let server = mk(
        3,
        SockState::Established,
        "127.0.0.1:5432",
        "127.0.0.1:40000",
    );
    let client2 = mk(
        4,
        SockState::Established,
        "127.0.0.1:40001",
        "127.0.0.1:5432",
    );
    let server2 = mk(
        5,
        SockState::Established,
        "127.0.0.1:5432",
        "127.0.0.1:40001",
    );
    let peer = |t: &ConnTable, cookie: u64| {
        t.entries()
            .find(|e| e.sock.cookie.0 == cookie)
            .and_then(|e| e.peer())
            .map(|p| p.cookie)
    };
    let t0 = Instant::now();
    let mut t = ConnTable::new(Duration::from_secs(300));
    t.apply(
        snapshot(vec![listener.clone(), client.clone(), server.clone()]),
        t0,
    );
    assert_eq!((peer(&t, 2), peer(&t, 3)), (Some(3), Some(2)));
    // Reordered, with a new pair: the old one carried, the new one found.
    t.apply(
        snapshot(vec![
            server2,
            server,
            listener.clone(),
            client2,
            client.clone(),
        ]),
        t0 + Duration::from_secs(1),
    );
    assert_eq!((peer(&t, 2), peer(&t, 3)), (Some(3), Some(2)));
    assert_eq!((peer(&t, 4), peer(&t, 5)), (Some(5), Some(4)));
    // One end closes: the other has no peer any more.
    t.apply(
        snapshot(vec![listener, client]),
        t0 + Duration::from_secs(2),
    );
    assert_eq!(peer(&t, 2), None);
}

/// The end of a connection that left, told by a table kept whole between polls or retired.
fn end_after_leaving(keep: Option<Keep>) -> Ended {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    let mut a = sock(SockState::Established);
    a.tcp_info = Some(info(0, 3000, 1500));
    a.opts = crate::model::SockOpts {
        user_timeout_ms: 0,
        idle_s: 60,
        intvl_s: 10,
        cnt: 5,
        keepalive: true,
        read: true,
    };
    a.timer = Some(crate::model::Timer {
        kind: crate::model::TimerKind::Keepalive,
        expires_ms: 1000,
        retrans: 0,
    });
    a.recv_q = 3;
    let mut listener = sock(SockState::Listen);
    listener.cookie = Cookie(2);
    table.apply(snapshot(vec![a, listener.clone()]), t0);
    if let Some(keep) = keep {
        assert!(table.retire(keep).is_empty());
        // Between retire and the next poll the table lists nothing, and says so.
        assert!(table.by_cookie(Cookie(1)).is_none());
        assert!(table
            .get(&SockKey {
                netns: NetnsId(1),
                cookie: Cookie(1)
            })
            .is_none());
    }
    let applied = table.apply(snapshot(vec![listener]), t0 + Duration::from_secs(1));
    assert_eq!(applied.ended.len(), 1, "{:?}", applied.ended);
    applied.ended.into_iter().next().unwrap()
}

#[test]
fn a_retired_table_tells_an_end_with_what_the_whole_one_does() {
    let whole = end_after_leaving(None);
    let kept = end_after_leaving(Some(Keep::Ends));
    for e in [&whole, &kept] {
        assert_eq!(e.cookie, Some(1));
        assert_eq!(
            (e.bytes.sent(), e.bytes.received()),
            (Some(3000), Some(1500))
        );
        let s = e.sock.as_ref().expect("the last poll's view of it");
        assert_eq!(s.owner.process().map(|p| p.pid), Some(42));
        assert_eq!(s.local.to_string(), "127.0.0.1:40000");
        assert_eq!(s.remote.to_string(), "127.0.0.1:5432");
        assert_eq!(
            (s.family, s.inode, s.uid),
            (Family::Inet, Inode(1000), crate::model::Uid::new(1000))
        );
        assert_eq!(s.netns, NetnsId(1));
        // A filter on its end sees its options, timer and queues as the last poll saw them.
        assert_eq!(stale::Keepalive::of(s), Some(stale::Keepalive::On));
        assert!(s.opts.read && s.opts.idle_s == 60);
        assert_eq!(
            s.timer.map(|t| t.kind),
            Some(crate::model::TimerKind::Keepalive)
        );
        assert_eq!(s.recv_q, 3);
    }
    assert_eq!(whole.cause, kept.cause);
    // What is not kept is not made up.
    assert!(kept.sock.as_ref().unwrap().tcp_info.is_none());
    // Its history alone: the end is counted, by cause, with its bytes.
    let history = end_after_leaving(Some(Keep::History));
    assert!(history.sock.is_none());
    assert_eq!(history.cause, whole.cause);
    assert_eq!(history.bytes.sent(), Some(3000));
}

#[test]
fn a_retired_table_gives_a_dead_connection_its_peer_back() {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    table.apply(snapshot(vec![sock(SockState::Established)]), t0);
    let spare = table.retire(Keep::Ends);
    // Held by its process, gone from the socket tables: CLOSE, its peer forgotten.
    let mut dead = sock(SockState::Close);
    dead.remote = Endpoint::Inet("0.0.0.0:0".parse().unwrap());
    let mut snap = snapshot(spare);
    snap.unlisted = vec![dead];
    table.apply(snap, t0 + Duration::from_secs(1));
    let e = table.by_cookie(Cookie(1)).expect("listed as dead");
    assert!(crate::model::stale::is_dead(e.sock));
    assert_eq!(e.sock.remote.to_string(), "127.0.0.1:5432");
    assert_eq!(e.first_seen(), t0);
}

#[test]
fn a_dead_ipv6_socket_whose_peer_is_unknown_keeps_it_unknown_when_retired() {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    // Born and ended between two polls: held, its peer never seen (`0.0.0.0:0`, as `held`
    // reports it in either family).
    let mut dead = sock(SockState::Close);
    dead.family = Family::Inet6;
    dead.local = Endpoint::Inet("[::1]:40000".parse().unwrap());
    dead.remote = Endpoint::Inet("0.0.0.0:0".parse().unwrap());
    let mut snap = snapshot(vec![]);
    snap.unlisted = vec![dead.clone()];
    snap.ends = Some(vec![crate::model::ends::tracker::Traced {
        cookie: Some(1),
        tuple: crate::model::ends::trace::Tuple {
            local: (std::net::Ipv6Addr::LOCALHOST, 40000),
            remote: (std::net::Ipv6Addr::LOCALHOST, 5432),
        },
        cause: crate::model::ends::Cause::ResetReceived,
        errno: None,
        reset_reason: None,
        at: std::time::SystemTime::UNIX_EPOCH,
        evidence: true,
    }]);
    table.apply(snap, t0);
    assert_eq!(
        table
            .by_cookie(Cookie(1))
            .expect("dead")
            .sock
            .remote
            .to_string(),
        "*"
    );
    let spare = table.retire(Keep::Ends);
    let mut snap = snapshot(spare);
    snap.unlisted = vec![dead];
    table.apply(snap, t0 + Duration::from_secs(1));
    let e = table.by_cookie(Cookie(1)).expect("still dead");
    assert_eq!(e.sock.remote.to_string(), "*");
    assert_eq!(e.sock.local.to_string(), "[::1]:40000");
}

#[test]
fn an_ipv6_connection_keeps_its_family_when_retired() {
    let t0 = Instant::now();
    let mut table = ConnTable::new(Duration::from_secs(300));
    let mut a = sock(SockState::Established);
    a.family = Family::Inet6;
    a.local = Endpoint::Inet("[::ffff:127.0.0.1]:40000".parse().unwrap());
    a.remote = Endpoint::Inet("[::1]:5432".parse().unwrap());
    table.apply(snapshot(vec![a.clone()]), t0);
    table.retire(Keep::Ends);
    let ended = table
        .apply(snapshot(vec![]), t0 + Duration::from_secs(1))
        .ended;
    let s = ended[0].sock.as_ref().unwrap();
    assert_eq!((s.local.clone(), s.remote.clone()), (a.local, a.remote));
}

#[test]
fn the_cookie_index_grows_while_a_poll_claims_it_and_finds_every_socket() {
    let t0 = Instant::now();
    let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
    let with = |cookie: u64| {
        let mut s = sock(SockState::Established);
        s.cookie = Cookie(cookie);
        s.inode = Inode(1000 + cookie as u32);
        s.local = Endpoint::Inet(format!("127.0.0.1:{}", 40_000 + cookie).parse().unwrap());
        s
    };
    for retire in [None, Some(Keep::History), Some(Keep::Ends)] {
        let mut table = ConnTable::new(Duration::from_secs(300));
        table.apply(snapshot((1..=64).map(with).collect()), t0);
        let mut next = retire.map_or_else(Vec::new, |keep| table.retire(keep));
        // The odd half leaves, 64 new arrive and one kept socket is listed twice: mid-claim
        // the index holds 128 cookies, more than the room it made up front (64 + 33), so it
        // grows while places of this poll and of the last one (or of what was retired) mix.
        next.extend((2..=64).step_by(2).map(with));
        next.push(with(2));
        next.extend((1001..=1064).map(with));
        let applied = table.apply(snapshot(next), t1);
        assert_eq!(table.len(), 96, "{retire:?}");
        let odd_places: Vec<u32> = (0..64).step_by(2).collect();
        assert_eq!(applied.gone, odd_places, "{retire:?}");
        let check = |table: &ConnTable| {
            for c in (2..=64).step_by(2) {
                let e = table.by_cookie(Cookie(c)).expect("kept");
                assert_eq!(
                    (e.sock.cookie, e.first_seen()),
                    (Cookie(c), t0),
                    "{retire:?}"
                );
            }
            for c in 1001..=1064 {
                let e = table.by_cookie(Cookie(c)).expect("new");
                assert_eq!(
                    (e.sock.cookie, e.first_seen()),
                    (Cookie(c), t1),
                    "{retire:?}"
                );
            }
            for c in (1..=64).step_by(2) {
                assert!(
                    table.by_cookie(Cookie(c)).is_none(),
                    "{c} left ({retire:?})"
                );
            }
        };
        check(&table);
        // The settled index serves the next poll: every socket carried, none gone.
        let again = (2..=64).step_by(2).chain(1001..=1064).map(with).collect();
        let applied = table.apply(snapshot(again), t2);
        assert!(applied.gone.is_empty(), "{retire:?}");
        check(&table);
    }
}
