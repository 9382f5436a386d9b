//! What katop says and serves carries nothing a terminal would act on, `--read-only` stops
//! every acting subcommand, and `--netns` selects by the names katop shows and refuses the rest.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{is_root, katop_checked as katop, stderr, wait_for, Scratch};

/// Whether `text` holds a character a terminal would act on or hide text with.
fn unsafe_chars(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| (c.is_control() && c != '\n') || c == '\u{202e}')
        .collect()
}

#[test]
fn filter_errors_quote_what_was_typed_without_its_control_characters() {
    let hostile = "port:1 \x1b]0;PWNED\x07 \u{202e}";
    for args in [
        vec!["--once", "--filter", hostile],
        vec!["kill", "--dry-run", "--filter", hostile],
    ] {
        let out = katop(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("?]0;PWNED?"), "{}", stderr(&out));
        assert_eq!(unsafe_chars(&stderr(&out)), vec![], "{:?}", stderr(&out));
    }
    let out = katop(&["--once"], &[("KATOP_FILTER", hostile)]);
    assert_eq!(unsafe_chars(&stderr(&out)), vec![], "{:?}", stderr(&out));
}

#[test]
fn metric_labels_carry_no_control_characters_from_process_or_namespace_names() {
    let s = Scratch::new("labels");
    // A process whose name (comm) holds ESC, BEL and a right-to-left override, holding a
    // connection.
    let name = "k\x1b]0;PW\x07\u{202e}";
    let exe = s.0.join(name);
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_server, _) = l.accept().unwrap();
    let inherited = rustix::io::dup(&c).unwrap(); // without close-on-exec
    let child = common::Reaped(common::spawn_retrying(Command::new(&exe).arg("60")));
    drop(inherited);
    drop(c);
    // And, as root, a network namespace with such a name.
    let netns = format!("kt\x1b[31m{}", std::process::id());
    let named_ns = is_root()
        && Command::new("ip")
            .args(["netns", "add", &netns])
            .output()
            .is_ok_and(|o| o.status.success());
    // A socket in it, so it has a series.
    let inside =
        named_ns.then(|| common::within_netns(&netns, || std::net::TcpListener::bind("0.0.0.0:0")));
    let path = s.0.join("katop.prom");
    let e = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_katop"))
            .args(["exporter", "--listen", "none", "--interval", "100ms"])
            .arg("--textfile")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let process_label = "process=\"k?]0;PW??\"";
    let netns_label = format!("netns=\"kt?[31m{}\"", std::process::id());
    wait_for("the process and the namespace in the metrics", || {
        std::fs::read_to_string(&path)
            .is_ok_and(|t| t.contains(process_label) && (!named_ns || t.contains(&netns_label)))
    });
    let text = std::fs::read_to_string(&path).unwrap();
    drop(e);
    drop(child);
    drop(inside);
    if named_ns {
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
    }
    assert_eq!(unsafe_chars(&text), vec![], "{text}");
    promtool_check(&text);
}

/// `promtool check metrics` on an exposition, where promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        common::skipped(
            "promtool is missing (Debian: prometheus; .ci/run installs it): not checked",
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}\n{text}", stderr(&out));
}

#[test]
fn read_only_stops_every_acting_subcommand_wherever_it_is_given() {
    type Env<'a> = &'a [(&'a str, &'a str)];
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let filter = format!(
        "src:{} dst:{} established",
        c.local_addr().unwrap(),
        l.local_addr().unwrap()
    );
    let log = Scratch::new("read-only");
    let log_path = log.0.join("kills.jsonl");
    let log_arg = log_path.to_str().unwrap();
    let f = filter.as_str();
    let cases: [(Vec<&str>, Env); 6] = [
        (
            vec![
                "--read-only",
                "kill",
                "--yes",
                "-f",
                f,
                "--kill-log",
                log_arg,
            ],
            &[],
        ),
        (
            vec![
                "kill",
                "--yes",
                "--read-only",
                "-f",
                f,
                "--kill-log",
                log_arg,
            ],
            &[],
        ),
        (
            vec!["kill", "--yes", "-f", f, "--kill-log", log_arg],
            &[("KATOP_READ_ONLY", "1")],
        ),
        (vec!["--read-only", "keepalive", "--yes", "-f", f], &[]),
        (
            vec![
                "keepalive",
                "--read-only",
                "--yes",
                "-f",
                f,
                "--kill-log",
                log_arg,
            ],
            &[],
        ),
        (
            vec!["keepalive", "--yes", "-f", f, "--kill-log", log_arg],
            &[("KATOP_READ_ONLY", "yes")],
        ),
    ];
    for (args, env) in cases {
        let out = katop(&args, env);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("read-only"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Untouched: not reset, keepalive still off, and nothing logged.
    let sock = socket2::SockRef::from(&c);
    assert!(!sock.keepalive().unwrap(), "keepalive was turned on");
    std::io::Write::write_all(&mut &c, b"alive").unwrap();
    let mut buf = [0u8; 5];
    std::io::Read::read_exact(&mut &s, &mut buf).unwrap();
    assert!(!log_path.exists(), "something was logged");
    // A dry run still lists, and says nothing would be done.
    let out = katop(&["kill", "--dry-run", "-f", f], &[("KATOP_READ_ONLY", "1")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would kill 1"));
    assert!(
        stderr(&out).contains("would do nothing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn netns_selects_by_the_names_katop_shows_and_refuses_the_rest() {
    let out = katop(&["--once", "--netns", "no-such-namespace"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("'no-such-namespace'"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("there are: "), "{}", stderr(&out));
    // 2^32 + this process's pid is an inode no namespace has, not this pid.
    let big = ((1u64 << 32) + u64::from(std::process::id())).to_string();
    let out = katop(&["--once", "--netns", &big], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The exporter runs on: a namespace not there yet is said, and read once it appears.
    let dir = Scratch::new("netns-later");
    let textfile = dir.0.join("katop.prom");
    let mut e = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_katop"))
            .args(["exporter", "--listen", "none", "--interval", "100ms"])
            .args(["--netns", "host,not-there-yet", "--textfile"])
            .arg(&textfile)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("the exporter's textfile", || textfile.exists());
    let _ = e.kill();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut e.stderr.take().unwrap(), &mut said).unwrap();
    assert!(
        said.contains("'not-there-yet'") && said.contains("read once it appears"),
        "{said}"
    );
    if !is_root() {
        common::skipped("the container name: needs root (a namespace in a fake cgroup)");
        return;
    }
    // A process in a namespace of its own, in a (fake) docker container's cgroup: its
    // namespace is named as the container, and that name selects it.
    let id = format!("{:064x}", u128::from(std::process::id()) << 64 | 0xbeef);
    let Some(cg) = common::FakeCgroup::new(&format!("docker/{id}")) else {
        common::skipped("cannot make cgroups here");
        return;
    };
    let inside = common::Reaped(
        Command::new("unshare")
            .args(["-n", "busybox", "nc", "-l", "-p", "7788"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cg.add(inside.id());
    let name = format!("docker:{}", &id[..12]);
    let listening = |socks: &[serde_json::Value]| {
        socks
            .iter()
            .any(|s| s["state"] == "LISTEN" && s["local"] == "[::]:7788")
    };
    let mut socks = Vec::new();
    wait_for("the container's listener", || {
        let out = katop(&["--json", "-t", "--netns", &name], &[("KATOP_NETNS", "")]);
        socks = serde_json::from_slice(&out.stdout).unwrap_or_default();
        listening(&socks)
    });
    assert!(
        socks.iter().all(|s| s["netns_name"] == name.as_str()),
        "only its namespace: {socks:?}"
    );
    drop(inside);
    std::thread::sleep(Duration::from_millis(100));
    drop(cg);
}
