//! Stale events stored by cookie, and read back as the live ones were.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::model::entry::Ctx;
use crate::model::{NetnsId, NsInfo, Owner, Process, RawSock, SockEntry, SockState};
use crate::store::changes::Changes;
use crate::store::snapshot::{stored_namespaces, write_poll, Sample};
use crate::store::{Limits, Writer};

const NS: u32 = 4_026_532_999;

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("katop-events-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ctx() -> Ctx {
    let mut ctx = Ctx::default();
    ctx.set_namespaces(vec![NsInfo {
        id: NetnsId(NS),
        name: "podman:web-1".into(),
        container: Some("web-1".into()),
        settings: crate::model::KernelSettings::default(),
        age: Duration::ZERO,
        host: false,
    }]);
    ctx
}

fn sock(cookie: u64) -> RawSock {
    let mut s = crate::store::test_conn(cookie, 1_000);
    s.netns = NetnsId(NS);
    s.owner = Owner::Process {
        process: Arc::new(Process {
            pid: 4242,
            name: "postgres".into(),
            cmdline: "".into(),
            container: None,
        }),
        fd: 9,
    };
    s
}

/// A stale event as the live source makes it.
fn stale(s: &RawSock, ctx: &Ctx, wall: SystemTime, gained: &str) -> Event {
    let mut ev = Event::of(
        Kind::Stale,
        &SockEntry::bare(s, Instant::now(), ctx),
        wall,
        "h",
    );
    ev.stale = Some(vec![gained.into()]);
    ev.gained = Some(vec![gained.into()]);
    ev.lost = Some(Vec::new());
    ev
}

/// One poll written as the recorder writes it: its events, then its socket lines.
fn poll(
    w: &mut Writer,
    changes: &mut Changes,
    (wall, socks, keyframe): (SystemTime, &[RawSock], bool),
    events: &[Event],
) {
    let ctx = ctx();
    let delta = changes.delta(socks.iter(), (wall, Duration::ZERO), keyframe);
    let sample = Sample {
        time: crate::actions::log::rfc3339(wall),
        sample: delta.tcp,
    };
    let settings = crate::model::KernelSettings::default();
    let named = stored_namespaces(&ctx.namespaces);
    let stored = |c: u64| socks.iter().any(|s| s.cookie.0 == c);
    w.append_with((wall, keyframe), |out| {
        let mut run = Run::default();
        for ev in events {
            run.write(out, ev, stored)?;
        }
        run.close(out)?;
        write_poll(out, &sample, (&settings, &named), keyframe, delta).map(|_| ())
    })
    .unwrap();
}

#[test]
fn stale_events_are_stored_by_cookie_and_read_back_as_they_were_told() {
    let path = scratch("roundtrip");
    let limits = Limits {
        retain: Duration::from_secs(3600),
        max_size: 1 << 30,
    };
    let mut writer = Writer::open(&path, limits).unwrap();
    let mut changes = Changes::default();
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let t1 = t0 + Duration::from_secs(10);
    // The second stays idle: the same clock, 10 s older, so no delta lists it again.
    let (first, second) = (sock(1), sock(2));
    let mut second_later = second.clone();
    if let Some(i) = &mut second_later.tcp_info {
        *i = i.aged(10_000);
    }
    poll(
        &mut writer,
        &mut changes,
        (t0, &[first.clone(), second.clone()], true),
        &[],
    );
    // The next poll: the first went to CLOSE_WAIT (its moving part), the second idle, a third
    // opened.
    let mut closing = first.clone();
    closing.state = SockState::CloseWait;
    let opening = sock(3);
    let socks = [closing.clone(), second_later.clone(), opening.clone()];
    let ctx = ctx();
    let opened = Event::of(
        Kind::Opened,
        &SockEntry::bare(&opening, Instant::now(), &ctx),
        t1,
        "h",
    );
    // A stale event of a socket the socket lines do not hold is stored whole.
    let mut unstored = stale(&sock(99), &ctx, t1, "idle");
    unstored.proto = "udp".into();
    let told = vec![
        opened,
        stale(&closing, &ctx, t1, "close-wait"),
        stale(&second_later, &ctx, t1, "idle"),
        unstored,
    ];
    poll(&mut writer, &mut changes, (t1, &socks, false), &told);
    drop(writer);

    let mut read = Vec::new();
    let mut whole = Vec::new();
    let span = (SystemTime::UNIX_EPOCH, SystemTime::now());
    crate::store::read::for_each_event(&path, span, None, |ev, line| {
        read.push(serde_json::to_value(ev).unwrap());
        whole.push(line.is_some());
        Ok(())
    })
    .unwrap();
    let told: Vec<_> = told
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(read, told);
    assert_eq!(whole, [true, false, false, true]);
    assert_eq!(read[1]["state"], "CLOSE_WAIT");
    assert_eq!(read[1]["process"], "postgres");
    assert_eq!(read[1]["netns_name"], "podman:web-1");

    // The two stale events of stored sockets are one line, by cookie.
    let stored = std::fs::read_dir(&path)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("events-"))
        .flat_map(|e| {
            let f = std::fs::File::open(e.path()).unwrap();
            crate::store::frame::decode_all(f).unwrap()
        })
        .map(|b| String::from_utf8(b).unwrap())
        .collect::<String>();
    let delta: serde_json::Value = stored
        .lines()
        .find(|l| l.contains("\"gone\":"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    let listed: Vec<u64> = ["socks", "moved"]
        .iter()
        .flat_map(|k| delta[k].as_array().unwrap().iter())
        .map(|r| r[0].as_u64().unwrap())
        .collect();
    assert!(
        !listed.contains(&2),
        "the idle one is filled in from the keyframe: {listed:?}"
    );
    let runs: Vec<&str> = stored.lines().filter(|l| is_run(l)).collect();
    assert_eq!(runs.len(), 1, "{stored}");
    assert!(runs[0].contains("[1,[\"close-wait\"],[\"close-wait\"],[]]"));
    assert_eq!(stored.matches("\"event\":\"stale\"").count(), 1);

    // One connection's life: its events alone.
    let life = crate::store::read::lifeline(&path, 2, SystemTime::now()).unwrap();
    assert_eq!(life.len(), 1, "{life:?}");
    assert!(life[0].contains("+idle") && life[0].contains("postgres[4242]"));
    let life = crate::store::read::lifeline(&path, 3, SystemTime::now()).unwrap();
    assert_eq!(life.len(), 1, "{life:?}");
    assert!(life[0].contains("opened"), "{life:?}");
    let _ = std::fs::remove_dir_all(&path);
}

#[test]
fn a_run_naming_a_socket_no_line_holds_tells_its_cookie_and_nothing_guessed() {
    let line = r#"{"time":"2026-12-07T10:00:00.000Z","host":"h","stale_events":[[7,["idle"],["idle"],[]]]}"#;
    let mut filler = Filler::wanting(std::iter::once(line), None);
    filler.apply(r#"{"time":"2026-12-07T10:00:00.000Z","socks":[],"moved":[],"gone":[]}"#);
    let mut evs = Vec::new();
    filler
        .fill(line, None, |ev| {
            evs.push(ev.clone());
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(evs.len(), 1);
    let v = serde_json::to_value(&evs[0]).unwrap();
    assert_eq!(v["cookie"], 7);
    assert_eq!(v["event"], "stale");
    assert_eq!(v["time"], "2026-12-07T10:00:00.000Z");
    assert!(v["local"].is_null() && v["process"].is_null() && v["state"].is_null());
    // A damaged run tells nothing rather than failing the read.
    let mut told = 0;
    let damaged = r#"{"time":"x","stale_events":[[1,"#;
    filler
        .fill(damaged, None, |_| {
            told += 1;
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(told, 0);
}
