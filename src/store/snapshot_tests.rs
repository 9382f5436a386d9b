//! The store's snapshots: keyframes and deltas written, and a moment read back.

use super::*;
use crate::store::changes::Changes;
use crate::store::test_conn as conn;
use std::time::Duration;

/// The lines the recorder writes for these polls (a keyframe first, then deltas).
fn recorded(polls: &[(SystemTime, Vec<RawSock>)]) -> Vec<String> {
    let mut changes = Changes::default();
    let mut lines = Vec::new();
    for (i, (wall, socks)) in polls.iter().enumerate() {
        let delta = changes.delta(socks.iter(), (*wall, Duration::ZERO), i == 0);
        let time = crate::actions::log::rfc3339(*wall);
        let mut out = Vec::new();
        if i == 0 {
            let settings = crate::model::table::tests::linux_defaults();
            let socks = delta.socks.into_iter().filter_map(StoredSock::of);
            write_keyframe(&mut out, &time, (&settings, &[]), socks).unwrap();
        } else {
            write_delta(&mut out, &time, &[], &delta).unwrap();
            // What is written is what is read.
            let _: Delta = serde_json::from_slice(&out).unwrap();
        }
        lines.push(String::from_utf8(out).unwrap().trim_end().to_string());
    }
    lines
}

/// A keyframe poll of `socks` at `t0` as the recorder writes it, and the bytes `write_poll`
/// counted.
fn keyframe_of(socks: &[RawSock], t0: SystemTime) -> (Vec<u8>, u64) {
    let delta = Changes::default().delta(socks.iter(), (t0, Duration::ZERO), true);
    let sample = Sample {
        time: crate::actions::log::rfc3339(t0),
        sample: socks.len(),
    };
    let settings = crate::model::table::tests::linux_defaults();
    let mut out = Vec::new();
    let counted = write_poll(&mut out, &sample, (&settings, &[]), true, delta).unwrap();
    (out, counted)
}

fn idle_at(snap: &crate::model::Snapshot, cookie: u64) -> Option<u32> {
    let s = snap.socks.iter().find(|s| s.cookie.0 == cookie)?;
    s.tcp_info?.idle_ms()
}

#[test]
fn a_keyframe_keeps_its_sockets_in_inode_order_and_reads_back_whole() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // Dumped in an order of their own: inodes 40, 10, 30, 20 (and a tie, by cookie).
    let socks: Vec<RawSock> = [(1, 40), (2, 10), (3, 30), (4, 20), (5, 10)]
        .into_iter()
        .map(|(cookie, inode)| {
            let mut s = conn(cookie, 1_000);
            s.inode = crate::model::Inode(inode);
            s
        })
        .collect();
    let (out, counted) = keyframe_of(&socks, t0);
    assert_eq!(
        counted,
        out.len() as u64,
        "the bytes a moment's reading costs"
    );
    let lines: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let frame: Keyframe = serde_json::from_str(&lines[1]).unwrap();
    let order: Vec<(u32, u64)> = frame.keyframe.iter().map(|s| (s.inode, s.cookie)).collect();
    assert_eq!(order, [(10, 2), (10, 5), (20, 4), (30, 3), (40, 1)]);
    let snap = at(&lines, t0).expect("the keyframe's moment");
    let mut cookies: Vec<u64> = snap.socks.iter().map(|s| s.cookie.0).collect();
    cookies.sort_unstable();
    assert_eq!(cookies, [1, 2, 3, 4, 5]);
}

#[test]
fn a_moment_is_its_keyframe_with_the_deltas_since_and_clocks_aged_to_it() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let s = Duration::from_secs;
    let polls = [
        (t0, vec![conn(1, 5_000), conn(2, 5_000), conn(3, 5_000)]),
        // 1 idle on; 2 talked 100 ms ago; 3 gone.
        (t0 + s(10), vec![conn(1, 15_000), conn(2, 100)]),
        // 4 opened.
        (
            t0 + s(20),
            vec![conn(1, 25_000), conn(2, 10_100), conn(4, 0)],
        ),
    ];
    let lines = recorded(&polls);
    // An idle connection costs nothing after the keyframe.
    assert!(!lines[1].contains("40001"), "{}", lines[1]);
    // The lines up to `t`, as the store's reader gives them.
    let at = |t| {
        let upto = polls.iter().filter(|(w, _)| *w <= t).count();
        super::at(&lines[..upto], t).unwrap()
    };
    let mid = at(t0 + s(12));
    assert_eq!(idle_at(&mid, 1), Some(17_000));
    assert_eq!(
        idle_at(&mid, 2),
        Some(2_100),
        "its talk after the keyframe counts"
    );
    assert_eq!(idle_at(&mid, 3), None, "gone by then");
    assert_eq!(idle_at(&mid, 4), None, "not open yet");
    assert_eq!(mid.settings, crate::model::table::tests::linux_defaults());
    let end = at(t0 + s(20));
    assert_eq!(idle_at(&end, 4), Some(0));
    assert_eq!(end.socks.len(), 3);
}

#[test]
fn a_namespace_first_seen_between_keyframes_is_named_in_the_past() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut host = conn(1, 1_000);
    host.netns = NetnsId(4_026_531_840);
    let mut born = conn(2, 1_000);
    born.netns = NetnsId(4_026_532_999);
    let host_ns: StoredNs = (4_026_531_840, "host".into(), None, true);
    let new_ns: StoredNs = (4_026_532_999, "advns".into(), Some("web".into()), false);
    let settings = crate::model::table::tests::linux_defaults();
    let mut changes = Changes::default();
    let mut out = Vec::new();
    let mut poll = |socks: &[RawSock], names: Vec<StoredNs>, wall: SystemTime, key: bool| {
        let names = changes.to_name(names, key);
        let delta = changes.delta(socks.iter(), (wall, Duration::ZERO), key);
        let sample = Sample {
            time: crate::actions::log::rfc3339(wall),
            sample: socks.len(),
        };
        write_poll(&mut out, &sample, (&settings, &names), key, delta).unwrap();
        names
    };
    poll(&[host.clone()], vec![host_ns.clone()], t0, true);
    let t1 = t0 + Duration::from_secs(10);
    let both = [host, born];
    let named = poll(&both, vec![host_ns.clone(), new_ns.clone()], t1, false);
    assert_eq!(named, std::slice::from_ref(&new_ns), "the new one alone");
    let t2 = t1 + Duration::from_secs(10);
    assert!(poll(&both, vec![host_ns.clone(), new_ns], t2, false).is_empty());
    // Its container found later: named again.
    let t3 = t2 + Duration::from_secs(10);
    let renamed: StoredNs = (4_026_532_999, "advns".into(), Some("api".into()), false);
    let named = poll(&both, vec![host_ns.clone(), renamed.clone()], t3, false);
    assert_eq!(named, std::slice::from_ref(&renamed));
    let lines: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // Each poll wrote two lines: its mark and its sockets.
    let container_at = |polls: usize, t: SystemTime| {
        let snap = at(&lines[..2 * polls], t).unwrap();
        assert_eq!(snap.socks.len(), 2);
        let ns = snap.namespaces.iter().find(|n| n.id.0 == 4_026_532_999);
        let ns = ns.expect("the namespace born after the keyframe is named");
        assert_eq!(&*ns.name, "advns");
        ns.container.as_deref().map(String::from)
    };
    assert_eq!(container_at(3, t2).as_deref(), Some("web"));
    assert_eq!(container_at(4, t3).as_deref(), Some("api"));
}

#[test]
fn netns_narrows_the_past_by_the_names_the_keyframe_kept() {
    use crate::collector::namespaces::Which;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut in_ns = conn(2, 1_000);
    in_ns.netns = NetnsId(4_026_532_999);
    let mut host = conn(1, 1_000);
    host.netns = NetnsId(4_026_531_840);
    let mut changes = Changes::default();
    let polled = [host, in_ns];
    let delta = changes.delta(polled.iter(), (t0, Duration::ZERO), true);
    let names = vec![
        (4_026_531_840, "host".to_string(), None, true),
        (4_026_532_999, "advns".to_string(), None, false),
    ];
    let mut out = Vec::new();
    let settings = crate::model::table::tests::linux_defaults();
    let time = crate::actions::log::rfc3339(t0);
    write_keyframe(
        &mut out,
        &time,
        (&settings, &names),
        delta.socks.into_iter().filter_map(StoredSock::of),
    )
    .unwrap();
    let lines = vec![String::from_utf8(out).unwrap().trim_end().to_string()];
    let cookies = |which: Which| {
        let mut snap = super::at(&lines, t0).unwrap();
        narrow(&mut snap, &which);
        let mut c: Vec<u64> = snap.socks.iter().map(|s| s.cookie.0).collect();
        c.sort_unstable();
        c
    };
    assert_eq!(cookies(Which::All), [1, 2]);
    assert_eq!(cookies(Which::Own), [1]);
    assert_eq!(cookies(Which::Some(vec!["advns".into()])), [2]);
    assert_eq!(cookies(Which::Some(vec!["4026532999".into()])), [2]);
    assert_eq!(cookies(Which::Some(vec!["host".into()])), [1]);
    let snap = super::at(&lines, t0).unwrap();
    assert_eq!(snap.namespaces[1].name.as_ref(), "advns");
}

#[test]
fn a_keyframe_is_compressed_harder_than_a_poll_s_other_lines() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let socks: Vec<RawSock> = (1..=5_000).map(|c| conn(c, 1_000 + c as u32 * 7)).collect();
    let (lines, _) = keyframe_of(&socks, t0);
    let size = |level| {
        crate::store::frame::encode_with(level, |w| w.write_all(&lines))
            .unwrap()
            .0
            .len()
    };
    let (usual, keyframe) = (
        size(crate::store::frame::LEVEL),
        size(crate::store::frame::KEYFRAME_LEVEL),
    );
    assert!(
        keyframe < usual,
        "{keyframe} bytes at the keyframe's level, {usual} at the usual"
    );
}
