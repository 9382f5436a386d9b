//! Sockets held by a process whose main thread exited alone (`pthread_exit` in `main`): the
//! leader is a zombie with no fd table, its threads live on sharing one. Their sockets are
//! that process's, with either reader, never held by none.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use katop::collector::{Collector, Selection};
use katop::model::{Owner, Proto};

mod common;

/// Opens a listener, starts a thread that sleeps, prints its pid and port, then ends its main
/// thread alone (`exit(2)`, not `exit_group(2)`).
const CHILD: &str = r"
import ctypes, os, socket, threading, time
l = socket.socket()
l.bind(('127.0.0.1', 0))
l.listen()
threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
print(os.getpid(), l.getsockname()[1], flush=True)
ctypes.CDLL(None).syscall(60, 0)
";

fn status(pid: u32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| Some(l.strip_prefix(field)?.trim().to_string()))
}

#[test]
fn a_leader_that_exited_alone_still_owns_its_threads_sockets() {
    if !common::is_root() {
        common::skipped("needs root to read another process's fds whoever runs the tests");
        return;
    }
    let Ok(child) = Command::new("python3")
        .args(["-c", CHILD])
        .stdout(Stdio::piped())
        .spawn()
    else {
        common::skipped("python3 is missing (.ci/run installs it)");
        return;
    };
    let mut child = common::Reaped(child);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut words = line.split_whitespace().map(|w| w.parse::<u32>().unwrap());
    let (pid, port) = (words.next().unwrap(), words.next().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status(pid, "State:").is_some_and(|s| s.starts_with('Z')) {
        assert!(Instant::now() < deadline, "the leader never exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        status(pid, "Threads:").as_deref(),
        Some("2"),
        "its thread lives on"
    );
    // Every reader: `/proc` (read through the thread), and the BPF reader where it loads.
    for bpf_from in [None, Some(0)] {
        let mut c = Collector::new(Selection {
            protos: vec![Proto::Tcp],
            bpf_from,
            ..Selection::default()
        })
        .unwrap();
        let snap = c.poll().unwrap();
        let listener = snap
            .socks
            .iter()
            .find(|s| s.local.to_string() == format!("127.0.0.1:{port}"))
            .expect("the child's listener");
        match &listener.owner {
            Owner::Process { process, .. } => assert_eq!(process.pid, pid, "{bpf_from:?}"),
            other => panic!("held by {other:?} with bpf_from {bpf_from:?}"),
        }
    }
}
