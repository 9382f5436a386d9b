//! What a poll costs stays bounded by what it looks at: memory held after a spike is given
//! back, and processes in namespaces that were not dumped are not read again between full
//! rescans.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};

use katop::collector::{Collector, Selection, SHRINK_AFTER};
use katop::model::RawSock;

mod common;
use common::{is_root, PeerNs};

#[test]
fn a_spikes_room_is_given_back_once_the_count_stays_low() {
    let mut c = Collector::new(Selection::default()).unwrap();
    // The room a burst of a million sockets left behind (reserved, never touched).
    let mut buf: Vec<RawSock> = Vec::with_capacity(1_000_000);
    let mut capacities = Vec::new();
    for _ in 0..=SHRINK_AFTER + 1 {
        let snap = c.poll_into(std::mem::take(&mut buf)).unwrap();
        capacities.push(snap.socks.capacity());
        buf = snap.socks;
        buf.clear();
    }
    assert!(capacities[0] >= 1_000_000, "{capacities:?}");
    let last = *capacities.last().unwrap();
    assert!(
        last < 100_000,
        "still holding room for {last} sockets: {capacities:?}"
    );
}

/// Not a test on its own: the child of `processes_in_other_namespaces…`, run inside a network
/// namespace. It holds `KATOP_TEST_MANY` connections on its loopback until stdin closes.
#[test]
fn child_holding_many_connections() {
    let Ok(n) = std::env::var("KATOP_TEST_MANY") else {
        return;
    };
    let n: usize = n.parse().unwrap();
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let held: Vec<(TcpStream, TcpStream)> = (0..n)
        .map(|_| {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (c, l.accept().unwrap().0)
        })
        .collect();
    println!("holding {}", held.len());
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

#[test]
fn processes_in_other_namespaces_are_not_read_again_between_full_rescans() {
    if !is_root() {
        common::skipped("needs root for a network namespace");
        return;
    }
    let ns = PeerNs::new();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holding_many_connections",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KATOP_TEST_MANY", "400")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("holding 400") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the child ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // The `/proc` reader (the BPF reader reads every table in one pass, links or not).
    let mut c = Collector::new(Selection {
        bpf_from: None,
        ..Selection::default()
    })
    .unwrap();
    c.poll().unwrap();
    assert!(c.scan_stats().full, "the first scan reads everything");
    // A new connection here: a socket the map cannot account for, so a rescan, which must not
    // read the 800 links of the process in the other namespace again.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _s = l.accept().unwrap();
    c.poll().unwrap();
    let stats = c.scan_stats();
    assert!(stats.scanned && !stats.full, "{stats:?}");
    assert!(stats.skipped >= 1, "{stats:?}");
    assert!(stats.links_read < 400, "{stats:?}");
    drop(child.stdin.take());
    let _ = child.wait();
}
