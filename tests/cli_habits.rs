//! The command line as `ss` users and log shippers use it: ss's flags, state words alone, the
//! config file's `[ui]` and `[services]`, JSON's host and time, and `--jsonl --interval`.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn katop_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_katop"));
    // The host namespace only, nothing else from the environment, no user config.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("KATOP_") {
            c.env_remove(var);
        }
    }
    c.env("KATOP_NETNS", "host")
        .env("XDG_CONFIG_HOME", "/nonexistent-katop-config")
        .args(args);
    c
}

fn katop(args: &[&str]) -> Output {
    katop_cmd(args).output().unwrap()
}

fn lines(o: &Output) -> Vec<String> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn json(o: &Output) -> Vec<serde_json::Value> {
    lines(o)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ss_flags_mean_what_they_mean_to_ss() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_s, _) = l.accept().unwrap();
    let mine = format!(
        "tcp (src:{a} or dst:{a}) !time-wait",
        a = l.local_addr().unwrap()
    );
    // -l: the listener only; -a (the default) and -n -p are accepted.
    let listening = json(&katop(&["--jsonl", "-l", "-t", "-f", &mine]));
    assert_eq!(listening.len(), 1, "{listening:?}");
    assert_eq!(listening[0]["state"], "LISTEN");
    let all = json(&katop(&["--jsonl", "-a", "-n", "-p", "-t", "-f", &mine]));
    assert_eq!(all.len(), 3, "{all:?}");
    // -e and -i add columns to the table.
    let table = lines(&katop(&["--once", "-t", "-e", "-i", "-f", &mine]));
    for header in ["UID", "INODE", "COOKIE", "TIMER", "RTT", "BYTES-IN"] {
        assert!(table[0].contains(header), "{header} missing: {}", table[0]);
    }
    // State words alone, as `ss state established` takes them.
    let estab = json(&katop(&["--jsonl", "-f", &format!("established {mine}")]));
    assert_eq!(estab.len(), 2);
    assert!(estab.iter().all(|s| s["state"] == "ESTABLISHED"));
    // -l and -a contradict each other.
    assert_eq!(katop(&["--once", "-l", "-a"]).status.code(), Some(2));
}

#[test]
fn json_objects_say_which_host_and_when() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let filter = format!("sport:{}", l.local_addr().unwrap().port());
    let before = std::time::SystemTime::now();
    let o = katop(&["--json", "-f", &filter]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let obj = &v[0];
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(obj["host"], host.trim());
    let time = humantime::parse_rfc3339(obj["time"].as_str().unwrap()).unwrap();
    let skew = time.duration_since(before).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(30), "{time:?} vs {before:?}");
}

#[test]
fn jsonl_with_an_interval_streams_until_interrupted() {
    // Ctrl-C, a service manager's stop, a closed ssh session.
    for signal in [
        rustix::process::Signal::INT,
        rustix::process::Signal::TERM,
        rustix::process::Signal::HUP,
    ] {
        stream_until(signal);
    }
}

fn stream_until(signal: rustix::process::Signal) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("tcp src:{} listen", l.local_addr().unwrap());
    let mut child = katop_cmd(&["--jsonl", "--interval", "200ms", "-f", &filter])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Three polls, three objects (one listener), each with its own time.
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while times.len() < 3 {
        assert!(Instant::now() < deadline, "no stream: {times:?}");
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the stream ended");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["state"], "LISTEN");
        times.push(v["time"].as_str().unwrap().to_string());
    }
    times.dedup();
    assert_eq!(times.len(), 3, "one poll per object: {times:?}");
    // The signal ends it between polls: exit 0, every line whole.
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{signal:?}: {status:?}");
    for line in out.lines() {
        let line = line.unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[test]
fn the_config_file_sets_defaults_that_flags_override() {
    let dir = std::env::temp_dir().join(format!("katop-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::fs::write(
        &config,
        format!(
            "[ui]\ncolumns = [\"state\", \"local\", \"service\"]\nstale_after = \"1s\"\n\
             [services]\n{port} = \"test-svc\"\n"
        ),
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let filter = format!("src:{} listen", l.local_addr().unwrap());
    // [ui] columns for the table, [services] names the port.
    let table = lines(&katop(&["--once", "--config", path, "-f", &filter]));
    assert!(
        table[0].starts_with("STATE") && table[0].contains("SERVICE"),
        "{table:?}"
    );
    assert!(!table[0].contains("PROCESS"), "{table:?}");
    assert!(table[1].contains("test-svc"), "{table:?}");
    // -o wins over the file.
    let table = lines(&katop(&[
        "--once", "--config", path, "-o", "local", "-f", &filter,
    ]));
    assert!(table[0].trim() == "LOCAL", "{table:?}");
    let v = json(&katop(&["--jsonl", "--config", path, "-f", &filter]));
    assert_eq!(v[0]["service"], "test-svc");
    assert_eq!(
        json(&katop(&[
            "--jsonl",
            "--config",
            path,
            "-f",
            &format!("service:test-svc src:{} listen", l.local_addr().unwrap())
        ]))
        .len(),
        1
    );
    // KATOP_COLUMNS beats the file too (and a flag beats KATOP_COLUMNS).
    let table = lines(
        &katop_cmd(&["--once", "--config", path, "-f", &filter])
            .env("KATOP_COLUMNS", "remote")
            .output()
            .unwrap(),
    );
    assert!(table[0].trim() == "REMOTE", "{table:?}");
    let table = lines(
        &katop_cmd(&["--once", "--config", path, "-o", "local", "-f", &filter])
            .env("KATOP_COLUMNS", "remote")
            .output()
            .unwrap(),
    );
    assert!(table[0].trim() == "LOCAL", "{table:?}");
    // The file's stale_after (1s) makes an idle connection stale; KATOP_STALE_AFTER beats it.
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_s, _) = l.accept().unwrap();
    let client = format!(
        "src:{} dst:{} established",
        c.local_addr().unwrap(),
        l.local_addr().unwrap()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let v = json(&katop(&["--jsonl", "--config", path, "-f", &client]));
    assert!(
        v[0]["stale"].as_array().unwrap().contains(&"idle".into()),
        "{v:?}"
    );
    let v = json(
        &katop_cmd(&["--jsonl", "--config", path, "-f", &client])
            .env("KATOP_STALE_AFTER", "1h")
            .output()
            .unwrap(),
    );
    assert_eq!(v[0]["stale"], serde_json::json!([]), "{v:?}");
    // A mistake in it is a usage error that says where.
    std::fs::write(&config, "[ui]\nsort = \"sideways\"\n").unwrap();
    let o = katop(&["--once", "--config", path]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("config.toml") && err.contains("'sideways' is not a column"),
        "{err}"
    );
    // The file's text quoted back carries no escape sequence to the terminal.
    std::fs::write(&config, "[services]\n22 = \"evil\x1b[31mred\"\n").unwrap();
    let o = katop(&["--once", "--config", path]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("?[31mred") && !err.contains('\x1b'), "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_an_sre_types_first_works_as_ss() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_s, _) = l.accept().unwrap();
    let mine = format!(
        "tcp (src:{a} or dst:{a}) !time-wait",
        a = l.local_addr().unwrap()
    );
    // ss's -o (timers: katop always shows them) in a cluster, at its end, alone.
    let tanoi = lines(&katop(&["--once", "-tanoi", "-f", &mine]));
    assert!(
        tanoi[0].contains("TIMER") && tanoi[0].contains("RTT"),
        "{tanoi:?}"
    );
    for args in [["--once", "-tnpo"], ["--once", "-o"]] {
        let out = katop(&[args[0], args[1], "-f", &mine]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // katop's own -o COLS is unchanged.
    let cols = lines(&katop(&["--once", "-o", "state,local", "-f", &mine]));
    assert!(
        cols[0].starts_with("STATE") && !cols[0].contains("REMOTE"),
        "{cols:?}"
    );
    // ss's filter words after the options.
    let state = json(&katop(&["--jsonl", "-f", &mine, "state", "established"]));
    assert_eq!(state.len(), 2, "{state:?}");
    assert!(state.iter().all(|s| s["state"] == "ESTABLISHED"));
    let rest = json(&katop(&["--jsonl", "-f", &mine, "exclude", "established"]));
    assert!(rest.iter().all(|s| s["state"] == "LISTEN"), "{rest:?}");
}
