//! `katop record` and `katop history` over a real store: events recorded and read back, a
//! SIGKILL and a torn tail, two recorders, a full filesystem, and the store's privacy.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

mod common;
use common::{Reaped, Scratch};

/// A recorder on `store`, polling every 200 ms; what it says comes through the channel.
fn record(store: &Path) -> (Reaped, Receiver<String>) {
    record_with(store, &[])
}

/// [`record`] with more options.
fn record_with(store: &Path, more: &[&str]) -> (Reaped, Receiver<String>) {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_katop"))
        .args(["record", "--interval", "200ms", "--store"])
        .arg(store)
        .args(more)
        .env("KATOP_NETNS", "host")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Reaped(child), rx)
}

/// `katop history --store STORE --json --filter FILTER`: its objects.
fn history(store: &Path, filter: &str) -> Vec<serde_json::Value> {
    let out = common::katop_checked(
        &[
            "history",
            "--json",
            "--store",
            store.to_str().unwrap(),
            "--filter",
            filter,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A connection to `l` whose opening the recorder recorded (one made before its first poll is
/// only listed: connections are made until one is seen opening), then closed.
fn a_connection(l: &TcpListener, store: &Path, filter: &str) -> String {
    let mut made = Vec::new();
    let local = common::wait_until("an opening recorded", || {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        made.push((c, l.accept().unwrap().0));
        std::thread::sleep(Duration::from_millis(300));
        let opened: Vec<String> = history(store, filter)
            .iter()
            .filter(|v| v["event"] == "opened")
            .filter_map(|v| v["local"].as_str().map(String::from))
            .collect();
        made.iter()
            .map(|(c, _)| c.local_addr().unwrap().to_string())
            .find(|l| opened.contains(l))
    });
    drop(made);
    local
}

fn closed_recorded(store: &Path, filter: &str, local: &str) -> bool {
    history(store, filter)
        .iter()
        .any(|v| v["event"] == "closed" && v["local"] == local)
}

/// The past the tests look back at: A open at THEN (stored with its idle time) and closed
/// after (recorded), B opened after THEN and still open. THEN, A's and B's local addresses,
/// and B's two ends (kept open by the caller).
fn a_then_b(
    l: &TcpListener,
    store: &Path,
    filter: &str,
) -> (String, String, String, (TcpStream, TcpStream)) {
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let a_server = l.accept().unwrap().0;
    let a_local = a.local_addr().unwrap().to_string();
    common::wait_for("A in the store", || {
        let out = common::katop_checked(
            &[
                "--json",
                "--at",
                "0s ago",
                "--store",
                store.to_str().unwrap(),
                "--filter",
                &format!("src:{a_local}"),
            ],
            &[],
        );
        out.status.success()
            && serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
                .is_ok_and(|v| v.iter().any(|s| s["idle_ms"].is_number()))
    });
    let then = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    // B's first poll comes after THEN's millisecond.
    std::thread::sleep(Duration::from_millis(20));
    let b = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let b_server = l.accept().unwrap().0;
    let b_local = b.local_addr().unwrap().to_string();
    drop(a);
    drop(a_server);
    common::wait_for("A's close recorded", || {
        closed_recorded(store, filter, &a_local)
    });
    (then, a_local, b_local, (b, b_server))
}

fn term(child: &mut Reaped) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_raw(child.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.0.wait().unwrap()
}

#[test]
fn a_connections_life_is_recorded_and_read_back_from_a_private_store() {
    let scratch = Scratch::new("store-life");
    let store = scratch.0.join("store");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("src:{a} or dst:{a}", a = l.local_addr().unwrap());
    let (mut rec, _said) = record(&store);
    let local = a_connection(&l, &store, &filter);
    common::wait_for("its close recorded", || {
        closed_recorded(&store, &filter, &local)
    });
    let closed = history(&store, &filter)
        .into_iter()
        .find(|v| v["event"] == "closed" && v["local"] == local.as_str())
        .unwrap();
    // As root the kernel said why; otherwise it is inferred, and says so.
    if common::is_root() {
        assert_eq!(
            (&closed["cause"], &closed["cause_source"]),
            (&"closed".into(), &"tracepoint".into()),
            "{closed}"
        );
    } else {
        assert_eq!(closed["cause_source"], "inferred", "{closed}");
    }
    // --since and --until take the window.
    let out = common::katop_checked(
        &[
            "history",
            "--store",
            store.to_str().unwrap(),
            "--until",
            "1d ago",
        ],
        &[],
    );
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "nothing a day old"
    );
    assert!(term(&mut rec).success(), "SIGTERM ends a recorder with 0");
    // Private: the directory 0700, every file 0600.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    for f in std::fs::read_dir(&store).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
}

#[test]
fn a_stale_reason_is_stored_by_cookie_and_read_back_whole() {
    let scratch = Scratch::new("store-stale");
    let store = scratch.0.join("store");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("src:{a} or dst:{a}", a = l.local_addr().unwrap());
    let (mut rec, _said) = record_with(&store, &["--stale-after", "1s"]);
    common::wait_for("the store made", || store.exists());
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _server = l.accept().unwrap().0;
    let local = client.local_addr().unwrap().to_string();
    let has =
        |list: &serde_json::Value, r: &str| list.as_array().is_some_and(|l| l.contains(&r.into()));
    // Silent past --stale-after: idle gained, told with all the poll knew of it.
    let gained = common::wait_until("idle gained, recorded", || {
        history(&store, &filter).into_iter().find(|v| {
            v["event"] == "stale" && v["local"] == local.as_str() && has(&v["gained"], "idle")
        })
    });
    assert_eq!(
        gained["remote"],
        l.local_addr().unwrap().to_string(),
        "{gained}"
    );
    assert_eq!(gained["state"], "ESTABLISHED", "{gained}");
    assert_eq!(gained["proto"], "tcp", "{gained}");
    assert_eq!(gained["pid"], std::process::id(), "{gained}");
    assert!(gained["process"].is_string(), "{gained}");
    assert!(has(&gained["stale"], "idle") && gained["lost"] == serde_json::json!([]));
    assert!(term(&mut rec).success());
    // Stored by its cookie in a run, not spelled out.
    let cookie = gained["cookie"].as_u64().unwrap();
    let mut stored = String::new();
    for f in std::fs::read_dir(&store).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "kz") {
            let file = std::fs::File::open(p).unwrap();
            katop::store::frame::for_each(file, |frame| {
                stored.push_str(&String::from_utf8(frame).unwrap());
                true
            })
            .unwrap();
        }
    }
    let run = format!("[{cookie},");
    assert!(
        stored
            .lines()
            .any(|l| l.contains("\"stale_events\":") && l.contains(&run)),
        "no run names {cookie}"
    );
    assert!(!stored
        .lines()
        .any(|l| l.contains("\"event\":\"stale\"") && l.contains(&local)));
}

#[test]
fn a_killed_recorder_leaves_a_readable_store_and_a_second_one_is_refused() {
    let scratch = Scratch::new("store-kill");
    let store = scratch.0.join("store");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("src:{a} or dst:{a}", a = l.local_addr().unwrap());
    let (mut rec, _said) = record(&store);
    let first = a_connection(&l, &store, &filter);
    // One store, one recorder.
    let (mut second, said) = record(&store);
    let status = second.0.wait().unwrap();
    assert!(!status.success());
    let why = said.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(why.contains("another katop record"), "{why}");
    // Killed mid-life, its last frame torn (as a crash mid-write leaves it).
    rec.0.kill().unwrap();
    rec.0.wait().unwrap();
    let last = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kz"))
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    f.write_all(&[200, 1, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(f);
    let before = history(&store, &filter);
    assert!(
        before.iter().any(|v| v["local"] == first.as_str()),
        "what came before the torn frame reads"
    );
    // A new recorder goes on (in a segment of its own) and both are read.
    let (mut rec, _said) = record(&store);
    let second = a_connection(&l, &store, &filter);
    common::wait_for("the second connection's close", || {
        closed_recorded(&store, &filter, &second)
    });
    assert!(history(&store, &filter)
        .iter()
        .any(|v| v["local"] == first.as_str()));
    assert!(term(&mut rec).success());
}

#[test]
fn a_full_filesystem_keeps_the_recorder_running() {
    if !common::is_root() {
        common::skipped("mounting a small filesystem needs root");
        return;
    }
    let scratch = Scratch::new("store-full");
    // Mounted on the scratch directory itself, which its drop unmounts and removes.
    let mount = scratch.0.clone();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let store = mount.join("store");
    // Full from the start: a file takes every block.
    let ballast = mount.join("ballast");
    let mut f = std::fs::File::create(&ballast).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);
    let (mut rec, said) = record(&store);
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut held = Vec::new();
    let mut told = None;
    for _ in 0..100 {
        // Connections come and go: events to write.
        held.push(TcpStream::connect(l.local_addr().unwrap()).unwrap());
        held.push(l.accept().unwrap().0);
        if let Ok(line) = said.recv_timeout(Duration::from_millis(300)) {
            if line.contains("cannot write") {
                told = Some(line);
                break;
            }
        }
    }
    let told = told.expect("the recorder says it cannot write");
    assert!(told.contains("recording goes on"), "{told}");
    assert!(told.contains("dropping the oldest data"), "{told}");
    assert!(rec.0.try_wait().unwrap().is_none(), "still running");
    // Room again: it writes again, and says so.
    std::fs::remove_file(&ballast).unwrap();
    let mut again = false;
    for _ in 0..100 {
        held.push(TcpStream::connect(l.local_addr().unwrap()).unwrap());
        held.push(l.accept().unwrap().0);
        if let Ok(line) = said.recv_timeout(Duration::from_millis(300)) {
            if line.contains("writing to the store again") {
                again = true;
                break;
            }
        }
    }
    assert!(again, "the recorder never wrote again");
    // And what it writes after is readable: no hole where the failed writes were.
    let filter = format!("dst:{}", l.local_addr().unwrap());
    let local = a_connection(&l, &store, &filter);
    common::wait_for("a connection after the full disk, read back", || {
        closed_recorded(&store, &filter, &local)
    });
    assert!(term(&mut rec).success());
}

#[test]
fn a_small_store_never_loses_the_segment_being_written() {
    let scratch = Scratch::new("store-small");
    let store = scratch.0.join("store");
    std::fs::create_dir(&store).unwrap();
    // An earlier recorder's segment of this very second, as a restart leaves.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(store.join(format!("events-{secs:012}-000.kz")), b"KATOPEV1").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_katop"))
        .args([
            "record",
            "--interval",
            "200ms",
            "--max-size",
            "1KB",
            "--store",
        ])
        .arg(&store)
        .env("KATOP_NETNS", "host")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut rec = Reaped(child);
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("dst:{}", l.local_addr().unwrap());
    let local = a_connection(&l, &store, &filter);
    common::wait_for("its close recorded", || {
        closed_recorded(&store, &filter, &local)
    });
    let deleted: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains("events-") && p.ends_with("(deleted)"))
        .collect();
    assert!(
        deleted.is_empty(),
        "writing to a removed segment: {deleted:?}"
    );
    assert!(term(&mut rec).success());
}

#[test]
fn a_shared_directory_is_never_taken_for_a_store() {
    let scratch = Scratch::new("store-shared");
    let shared = scratch.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("someone-elses.txt"), b"hello").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::katop_checked(&["record", "--store", shared.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("not private"),
        "{}",
        common::stderr(&out)
    );
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "left as it was");
    // And a moment the store never saw (the future) is refused, saying where it ends.
    let store = scratch.0.join("store");
    let (mut rec, _said) = record(&store);
    common::wait_for("a first record", || {
        std::fs::read_dir(&store).is_ok_and(|d| d.count() > 1)
    });
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("dst:{}", l.local_addr().unwrap());
    a_connection(&l, &store, &filter);
    let out = common::katop_checked(
        &[
            "--json",
            "--at",
            "2099-01-01T00:00:00Z",
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("in the future"),
        "{}",
        common::stderr(&out)
    );
    assert!(term(&mut rec).success());
}

#[test]
fn the_past_is_shown_as_it_was_at_a_moment() {
    let scratch = Scratch::new("store-at");
    let store = scratch.0.join("store");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("src:{a} or dst:{a}", a = l.local_addr().unwrap());
    let (mut rec, _said) = record(&store);
    // A is open at T (long enough for a keyframe: every 6 polls of 200 ms) and closed after;
    // B opens after T.
    let (t, a_local, b_local, _b) = a_then_b(&l, &store, &filter);
    let out = common::katop_checked(
        &[
            "--json",
            "--at",
            &t,
            "--store",
            store.to_str().unwrap(),
            "--filter",
            &format!("({filter}) !listen"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let at_t: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let a_then = at_t
        .iter()
        .find(|s| s["local"] == a_local.as_str())
        .unwrap_or_else(|| panic!("A was open at {t}: {at_t:#?}"));
    assert_eq!(a_then["state"], "ESTABLISHED");
    assert!(
        a_then["idle_ms"].is_number(),
        "its idle time at T: {a_then}"
    );
    assert!(
        at_t.iter().all(|s| s["local"] != b_local.as_str()),
        "B opened after {t}: {at_t:#?}"
    );
    // Before the store began: nothing to show, said plainly.
    let out = common::katop_checked(
        &[
            "--json",
            "--at",
            "1d ago",
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let said = common::stderr(&out);
    assert!(
        said.contains("was not recording then") && said.contains("its records begin at"),
        "{said}"
    );
    // Nor does it know what has not happened yet.
    let ahead = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(600))
        .to_string();
    let out = common::katop_checked(
        &["--json", "--at", &ahead, "--store", store.to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("in the future"));
    assert!(term(&mut rec).success());
}

/// The dashboard opens on a past moment (`--at`), says so, steps through the recorded polls,
/// refuses to act on the past, and comes back to the present.
#[test]
fn the_dashboard_shows_the_past_and_comes_back_to_the_present() {
    let Some(t) = common::tmux::Tmux::start("past", 200, 40) else {
        return;
    };
    let scratch = Scratch::new("store-tui");
    let store = scratch.0.join("store");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("src:{a} or dst:{a}", a = l.local_addr().unwrap());
    let (mut rec, _said) = record(&store);
    // A opens after the recorder's first poll: its opening is an event.
    common::wait_for("the first poll stored", || {
        std::fs::read_dir(&store).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 8) && e.file_name() != "lock")
        })
    });
    let (then, a_local, b_local, _b) = a_then_b(&l, &store, &filter);
    // The store ends here: its newest poll has B and not A.
    assert!(term(&mut rec).success());
    t.start_katop(&format!(
        "--interval 300ms --at {then} --store {} --filter '({filter}) established'",
        store.display()
    ));
    let past = t.wait("the moment shown", |s| {
        s.contains("THE PAST") && s.contains(&a_local)
    });
    assert!(!past.contains(&b_local), "B opened after {then}:\n{past}");
    // Its details tell its recorded life so far: it opened (and has not closed yet).
    t.keys(&["Enter"]);
    let details = t.wait("A's lifeline", |s| {
        s.contains("its recorded life") && s.contains("opened") && !s.contains("reading the store")
    });
    assert!(
        !details.contains(" closed "),
        "A closed after {then}:\n{details}"
    );
    // No age made up from the moment it was read back.
    assert!(
        details.contains("at this moment") && !details.contains("in this state"),
        "{details}"
    );
    t.keys(&["Escape"]);
    // Nothing in the past is acted on.
    t.keys(&["k"]);
    t.wait_for("nothing in it can be changed");
    assert!(!t.screen().contains("Kill"), "{}", t.screen());
    // The present: B, and not A.
    t.keys(&["b"]);
    t.type_text("now");
    t.keys(&["Enter"]);
    let live = t.wait("the present", |s| {
        !s.contains("THE PAST") && s.contains(&b_local)
    });
    assert!(!live.contains(&format!("{a_local} ")), "A closed:\n{live}");
    // T: the newest recorded poll (B open, A gone); t past it: live again.
    t.keys(&["T"]);
    let newest = t.wait("the newest record", |s| {
        s.contains("THE PAST") && s.contains(&b_local)
    });
    assert!(!newest.contains(&format!("{a_local} ")), "{newest}");
    t.keys(&["t"]);
    t.wait("live again", |s| {
        !s.contains("THE PAST") && s.contains("nothing recorded after that: live")
    });
    t.keys(&["q"]);
    t.assert_cooked();
}
