//! Bad input gets a clear error and nothing is lost: deep filters, files that never end or
//! never open, hostile log paths and hostile process names.

use std::ffi::OsStr;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::is_root;

/// Runs katop, failing the test if it takes longer than `limit` (it must never hang).
fn katop_within(limit: Duration, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_katop"))
        // The host namespace only: sockets of other tests' namespaces may share its ports.
        .env("KATOP_NETNS", "host")
        .args(args)
        .env_remove("KATOP_FILTER")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("katop {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PROMPTLY: Duration = Duration::from_secs(20);

#[test]
fn deep_nesting_is_a_usage_error_everywhere_a_filter_is_read() {
    let deep = "(".repeat(20_000);
    let negations = "!".repeat(40_000);
    for (args, env) in [
        (vec!["--once", "--filter", &deep], vec![]),
        (vec!["--once"], vec![("KATOP_FILTER", negations.as_str())]),
        (vec!["kill", "--dry-run", "--filter", &deep], vec![]),
        (
            vec!["keepalive", "--dry-run", "--filter", &negations],
            vec![],
        ),
    ] {
        let out = katop_within(PROMPTLY, &args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("levels deep"), "{}", stderr(&out));
    }
}

#[test]
fn a_config_that_never_ends_or_never_opens_is_refused_at_once() {
    let fifo = std::env::temp_dir().join(format!("katop-config-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for path in ["/dev/urandom", "/dev/zero", fifo.to_str().unwrap()] {
        let out = katop_within(PROMPTLY, &["--once", "--config", path], &[]);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not a regular file"),
            "{}",
            stderr(&out)
        );
    }
    let _ = std::fs::remove_file(&fifo);
}

#[test]
fn the_interval_has_a_floor() {
    let out = katop_within(PROMPTLY, &["--once", "--interval", "0s"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("at least 100ms"), "{}", stderr(&out));
}

#[test]
fn a_log_path_katop_must_not_write_stops_a_kill_before_it_starts() {
    let dir = std::env::temp_dir().join(format!("katop-log-paths-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let common::Established {
        listener: _l,
        client: c,
        server: _s,
        filter,
    } = common::established();
    // A FIFO no one reads (it would block the open for ever) and /dev/null (a write to it
    // records nothing): neither is a log.
    for log in [fifo.to_str().unwrap(), "/dev/null"] {
        let out = katop_within(
            PROMPTLY,
            &["kill", "--filter", &filter, "--yes", "--kill-log", log],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{log}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not a regular file"),
            "{}",
            stderr(&out)
        );
    }
    c.set_nonblocking(true).unwrap();
    let r = (&c).read(&mut [0u8; 1]);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the connection was touched: {r:?}"
    );
    if is_root() {
        // A dangling symlink another user planted in a world-writable sticky directory:
        // refused, and its target is not created.
        let sticky = dir.join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        rustix::fs::chmod(&sticky, rustix::fs::Mode::from_raw_mode(0o1777)).unwrap();
        let target = dir.join("planted-target");
        let link = sticky.join("kills.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            &link,
            Some(rustix::process::Uid::from_raw(65534)),
            Some(rustix::process::Gid::from_raw(65534)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let out = katop_within(
            PROMPTLY,
            &[
                "kill",
                "--filter",
                &filter,
                "--yes",
                "--kill-log",
                link.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
        assert!(!target.exists(), "katop followed the planted link");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_process_names_are_escaped_in_json_and_replaced_on_terminals() {
    let dir = std::env::temp_dir().join(format!("katop-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // comm is the executable's file name: a C1 control (NEL) and a right-to-left override;
    // argv[0] is not UTF-8. The process holds a connection it inherited.
    let name = "k\u{85}x\u{202e}t";
    let exe = dir.join(name);
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_server, _) = l.accept().unwrap();
    let port = c.local_addr().unwrap().port();
    let inherited = rustix::io::dup(&c).unwrap(); // without close-on-exec
    let mut child = {
        use std::os::unix::process::CommandExt;
        common::spawn_retrying(
            Command::new(&exe)
                .arg0(OsStr::from_bytes(b"\xffnot-utf8"))
                .arg("60"),
        )
    };
    drop(inherited);
    drop(c);
    let filter = format!("sport:{port}");
    let out = katop_within(PROMPTLY, &["--json", "--filter", &filter], &[]);
    let json = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        json.contains("\\u0085") && json.contains("\\u202e"),
        "{json}"
    );
    assert!(
        !json.chars().any(|c| c == '\u{85}' || c == '\u{202e}'),
        "{json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // (Other namespaces may have a socket on the same port: find the child's.)
    let mine = common::held_by(v.as_array().unwrap(), child.id())
        .unwrap_or_else(|| panic!("the child is not among the holders: {v}"));
    let held = mine["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["pid"] == child.id())
        .unwrap();
    assert_eq!(held["process"], name, "{v}");
    if mine["pid"] == child.id() {
        let cmdline = mine["cmdline"].as_str().unwrap();
        assert!(
            cmdline.contains("not-utf8") && cmdline.starts_with('\u{fffd}'),
            "{cmdline:?}"
        );
    }
    let table = katop_within(
        PROMPTLY,
        &[
            "--once",
            "-o",
            "process,cmdline",
            "--filter",
            &format!("netns:host {filter}"),
        ],
        &[],
    );
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("k?x?t["), "{text:?}");
    assert!(text.contains("\u{fffd}not-utf8 60"), "{text:?}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
