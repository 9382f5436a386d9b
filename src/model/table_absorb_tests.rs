//! A poll absorbed in pieces, the vector of a first poll taken as the table's own, and a poll
//! given up.

use std::time::{Duration, Instant};

use crate::model::table::tests::{info, snapshot, sock};
use crate::model::{ConnTable, Cookie, Endpoint, Inode, RawSock, SockState};

/// A socket's cookie, inode, state, send rate, first sight and local peer.
type Seen = (u64, u32, SockState, Option<f32>, Instant, Option<u64>);

/// A poll taken in pieces as they come (as the dashboard streams it) leaves the table a whole
/// poll leaves: the same sockets in the same places, with the same history, the same sockets
/// gone and the same local pairs; a socket the pieces list twice keeps its first listing.
#[test]
fn a_poll_absorbed_in_pieces_is_the_poll_applied_whole() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    let with = |cookie: u64, state: SockState, bytes: u64| {
        let mut s = sock(state);
        s.cookie = Cookie(cookie);
        s.inode = Inode(2000 + cookie as u32);
        s.local = Endpoint::Inet(format!("127.0.0.1:{}", 41_000 + cookie).parse().unwrap());
        s.tcp_info = Some(info(10, bytes, bytes / 2));
        s
    };
    // A local pair (3 ↔ 4, a client of the listener 9), a listener that goes (2), a connection
    // that closes (5).
    let mut listener = with(9, SockState::Listen, 0);
    listener.local = Endpoint::Inet("127.0.0.1:5432".parse().unwrap());
    listener.remote = Endpoint::Inet("0.0.0.0:0".parse().unwrap());
    let p3 = with(3, SockState::Established, 0);
    let mut p4 = with(4, SockState::Established, 0);
    (p4.local, p4.remote) = (p3.remote.clone(), p3.local.clone());
    let first: Vec<RawSock> = vec![
        with(1, SockState::Established, 100),
        with(2, SockState::Listen, 0),
        p3.clone(),
        p4.clone(),
        with(5, SockState::Established, 500),
        with(6, SockState::Established, 600),
        listener.clone(),
    ];
    let second: Vec<RawSock> = vec![
        with(7, SockState::Established, 0),
        with(6, SockState::CloseWait, 900),
        p4,
        with(1, SockState::Established, 4100),
        with(1, SockState::Established, 9999),
        p3,
        with(8, SockState::SynSent, 0),
        listener,
    ];
    let mut whole = ConnTable::new(Duration::from_secs(300));
    whole.apply(snapshot(first.clone()), t0);
    let whole_applied = whole.apply(snapshot(second.clone()), t1);
    let mut pieces = ConnTable::new(Duration::from_secs(300));
    pieces.apply(snapshot(first), t0);
    let wall = snapshot(Vec::new()).wall;
    pieces.begin(t1, wall, &[]);
    pieces.absorb(second[..2].to_vec());
    pieces.absorb(Vec::new());
    pieces.absorb(second[2..5].to_vec());
    let pieces_applied = pieces.apply(snapshot(second[5..].to_vec()), t1);
    let seen = |t: &ConnTable| -> Vec<Seen> {
        t.entries()
            .map(|e| {
                (
                    e.sock.cookie.0,
                    e.sock.inode.0,
                    e.sock.state,
                    e.derived.rate_out(),
                    e.first_seen(),
                    e.peer.map(|p| p.cookie.0),
                )
            })
            .collect()
    };
    assert_eq!(seen(&pieces), seen(&whole));
    assert_eq!(pieces_applied.gone, whole_applied.gone);
    let left: Vec<u64> = pieces_applied.departed.iter().map(|s| s.cookie.0).collect();
    assert_eq!(left, [2, 5], "the listener and the connection that went");
    let e1 = pieces.by_cookie(Cookie(1)).unwrap();
    assert_eq!(e1.first_seen(), t0, "carried from the first poll");
    assert_eq!(
        e1.derived.rate_out(),
        Some(2000.0),
        "its first listing: 4000 B in 2 s"
    );
    assert_eq!(
        pieces.by_cookie(Cookie(3)).unwrap().peer.map(|p| p.cookie),
        Some(Cookie(4)),
        "the local pair carried"
    );
    let order: Vec<u64> = pieces.entries().map(|e| e.sock.cookie.0).collect();
    assert_eq!(order, [1, 3, 4, 6, 9, 7, 8], "in place, the new ones after");
}

/// A table that holds no sockets (its first poll, or retired) makes the poll's vector its own:
/// the sockets are not copied, so a first poll of 1M sockets is not held twice.
#[test]
fn a_first_poll_and_a_retired_tables_next_keep_the_polls_vector() {
    let t0 = Instant::now();
    let socks = |n: u64| -> Vec<RawSock> {
        (1..=n)
            .map(|c| {
                let mut s = sock(SockState::Established);
                s.cookie = Cookie(c);
                s
            })
            .collect()
    };
    let mut table = ConnTable::new(Duration::from_secs(300));
    let first = snapshot(socks(8));
    let at = first.socks.as_ptr();
    table.apply(first, t0);
    assert!(
        std::ptr::eq(table.entry(0).sock, at),
        "the first poll was copied"
    );
    let mut next = table.retire(crate::model::Keep::Ends);
    next.extend(socks(9));
    let at = next.as_ptr();
    table.apply(snapshot(next), t0 + Duration::from_secs(1));
    assert!(
        std::ptr::eq(table.entry(0).sock, at),
        "the retired table's next was copied"
    );
    assert_eq!(table.by_cookie(Cookie(3)).unwrap().first_seen(), t0);
    assert_eq!(table.len(), 9);
}

/// A poll begun and not finished (its dump failed) is given up: what it absorbed stays, no
/// socket left on its account, and the next poll goes on from there.
#[test]
fn a_poll_given_up_loses_no_socket() {
    let t0 = Instant::now();
    let with = |cookie: u64, recv_q: u32| {
        let mut s = sock(SockState::Established);
        (s.cookie, s.recv_q) = (Cookie(cookie), recv_q);
        s
    };
    let mut table = ConnTable::new(Duration::from_secs(300));
    table.apply(snapshot(vec![with(1, 0), with(2, 0)]), t0);
    let t1 = t0 + Duration::from_secs(1);
    table.begin(t1, snapshot(Vec::new()).wall, &[]);
    table.absorb(vec![with(2, 20), with(3, 30)]);
    table.give_up();
    let listed = |t: &ConnTable| -> Vec<(u64, u32)> {
        t.entries()
            .map(|e| (e.sock.cookie.0, e.sock.recv_q))
            .collect()
    };
    assert_eq!(listed(&table), [(1, 0), (2, 20), (3, 30)]);
    let t2 = t1 + Duration::from_secs(1);
    let applied = table.apply(snapshot(vec![with(3, 31), with(1, 1)]), t2);
    assert_eq!(listed(&table), [(1, 1), (3, 31)]);
    assert_eq!(applied.gone, [1], "2 left in the poll after");
    assert_eq!(table.by_cookie(Cookie(3)).unwrap().first_seen(), t1);
}

/// Between two pieces the table stays whole for a view drawn meanwhile: a socket claimed in
/// this poll, one new in it and one not listed yet are all found by cookie, and the ones
/// overwritten keep their service and keepalive status.
#[test]
fn between_pieces_every_socket_is_found_as_it_was() {
    let t0 = Instant::now();
    let with = |cookie: u64| {
        let mut s = sock(SockState::Established);
        s.cookie = Cookie(cookie);
        s
    };
    let mut table = ConnTable::new(Duration::from_secs(300));
    table.apply(snapshot(vec![with(1), with(2), with(3)]), t0);
    let service = table.by_cookie(Cookie(2)).unwrap().derived.service;
    table.begin(t0 + Duration::from_secs(1), snapshot(Vec::new()).wall, &[]);
    // 2 out of its order (claimed through the index), 4 new; 1 and 3 not yet.
    table.absorb(vec![with(2), with(4)]);
    for c in 1..=4 {
        assert!(
            table.by_cookie(Cookie(c)).is_some(),
            "{c} not found mid-poll"
        );
    }
    let two = table.by_cookie(Cookie(2)).unwrap();
    assert_eq!(two.derived.service, service, "its service kept mid-poll");
}

/// A poll given up leaves nothing it saw untold: a connection that died in it is told ended
/// with the next poll, and the next poll's rates are unknown (its counters mix two polls).
#[test]
fn a_poll_given_up_tells_its_dead_and_no_false_rate() {
    let t0 = Instant::now();
    let mut alive = sock(SockState::Established);
    alive.tcp_info = Some(info(0, 1000, 0));
    let mut other = sock(SockState::Established);
    other.cookie = Cookie(2);
    other.tcp_info = Some(info(0, 1000, 0));
    let mut table = ConnTable::new(Duration::from_secs(300));
    table.apply(snapshot(vec![alive.clone(), other.clone()]), t0);
    let mut dead = alive.clone();
    dead.state = SockState::Close;
    table.begin(t0 + Duration::from_secs(1), snapshot(Vec::new()).wall, &[]);
    table.absorb(vec![dead.clone()]);
    table.give_up();
    other.tcp_info = Some(info(0, 9000, 0));
    let applied = table.apply(snapshot(vec![dead, other]), t0 + Duration::from_secs(2));
    let told: Vec<Option<u64>> = applied.ended.iter().map(|e| e.cookie).collect();
    assert_eq!(
        told,
        [Some(1)],
        "the connection that died in the poll given up"
    );
    let e = table.by_cookie(Cookie(2)).unwrap();
    assert_eq!(e.derived.rate_out(), None, "8000 B over which interval?");
}
