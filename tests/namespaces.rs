//! Every network namespace and container on the host in one view: namespaces made with
//! `ip netns add` and with `unshare --net` (held only by a process), one with its own
//! keepalive sysctls, a real Podman container, and fake container cgroups for the runtimes
//! that cannot run here. Root only (namespaces, setns, cgroups).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use katop::collector::namespaces::Which;
use katop::collector::{Collector, Selection};
use serde_json::Value;
use socket2::{SockRef, TcpKeepalive};

mod common;
use common::{held_by, is_root, within_netns};

fn skip(what: &str) -> bool {
    if !is_root() {
        common::skipped(&format!("{what}: needs root for namespaces"));
    }
    !is_root()
}

fn sh(args: &[&str]) {
    common::sh(args);
}

/// A namespace made with `ip netns add`, loopback up; deleted on drop.
struct Named(String);

impl Named {
    fn new(tag: &str) -> Named {
        let name = format!("kt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        Named(name)
    }

    fn inode(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.0))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap()
    }

    /// Runs `f` on a thread inside the namespace.
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        within_netns(&self.0, f)
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn katop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_katop"))
        .args(args)
        .env_remove("KATOP_FILTER")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
        .as_array()
        .unwrap()
        .clone()
}

/// A listener and `n` connected clients on `port` of the calling thread's loopback.
fn server_and_clients(port: u16, n: usize, ka: Option<(u64, u64, u32)>) -> Vec<TcpStream> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let mut held = Vec::new();
    for _ in 0..n {
        let c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        if let Some((idle, intvl, cnt)) = ka {
            let k = TcpKeepalive::new()
                .with_time(Duration::from_secs(idle))
                .with_interval(Duration::from_secs(intvl))
                .with_retries(cnt);
            SockRef::from(&c).set_tcp_keepalive(&k).unwrap();
        }
        held.push(l.accept().unwrap().0);
        held.push(c);
    }
    drop(l);
    held
}

/// Not a test on its own: run inside `unshare --net` by `every_namespace…`. It holds a server
/// and two clients with keepalive 33 s / 11 s / 3 on port 7002 until stdin closes.
#[test]
fn child_in_its_own_namespace() {
    if std::env::var_os("KATOP_TEST_UNSHARED").is_none() {
        return;
    }
    sh(&["ip", "link", "set", "lo", "up"]);
    let _held = server_and_clients(7002, 2, Some((33, 11, 3)));
    println!("ready");
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

/// Waits for the child's "ready" (libtest may print its own words before it on the line);
/// the reader is kept until the child ends, so its last words do not meet a closed pipe.
fn wait_ready(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child did not start"
        );
    }
    out
}

#[test]
fn every_namespace_on_the_host_in_one_view() {
    if skip("every namespace") {
        return;
    }
    // One made by `ip netns add`, with its own keepalive sysctl, and a server inside.
    let a = Named::new("a");
    sh(&[
        "ip",
        "netns",
        "exec",
        &a.0,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_keepalive_time=77",
    ]);
    let held_a = a.within(|| {
        let h = server_and_clients(7001, 2, None);
        // SO_KEEPALIVE alone: the namespace's 77 s governs it.
        SockRef::from(&h[1]).set_keepalive(true).unwrap();
        h
    });
    let a_client = held_a[1].local_addr().unwrap().port();
    // One held only by a process (`unshare --net`): no name, no mount.
    let mut b = Command::new("unshare")
        .args(["--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_in_its_own_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KATOP_TEST_UNSHARED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _b_out = wait_ready(&mut b);
    let b_ns = std::fs::metadata(format!("/proc/{}/ns/net", b.id()))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();

    let all = json(&katop(&["--json", "--filter", "port:7001 or port:7002"]));
    let in_a: Vec<&Value> = all.iter().filter(|e| e["netns"] == a.inode()).collect();
    let in_b: Vec<&Value> = all.iter().filter(|e| e["netns"] == b_ns).collect();
    // Two connections, both ends, in each.
    assert_eq!(in_a.len(), 4, "{all:?}");
    assert_eq!(in_b.len(), 4, "{all:?}");
    for e in &in_a {
        assert_eq!(e["netns_name"], a.0.as_str(), "{e}");
    }
    assert!(
        in_b.iter()
            .all(|e| e["netns_name"] == format!("netns:{b_ns}")),
        "{in_b:?}"
    );
    // The namespace's own sysctl, and the socket's own settings, each where they apply.
    let a_ka = in_a
        .iter()
        .find(|e| e["local"] == format!("127.0.0.1:{a_client}"))
        .unwrap();
    assert_eq!(a_ka["keepalive"], "on", "{a_ka}");
    assert_eq!(a_ka["keepalive_idle_s"], 77, "{a_ka}");
    let detect = a_ka["dead_peer_detect_s"].as_f64().unwrap();
    // (Its ten timers each fire up to a 2 s granule late at HZ=250: the wheel's rounding.)
    assert!(
        detect > 70.0 && detect <= 77.0 + 75.0 * 9.0 + 10.0 * 2.1,
        "{a_ka}"
    );
    let b_clients: Vec<&&Value> = in_b
        .iter()
        .filter(|e| e["remote"] == "127.0.0.1:7002" && e["keepalive"] == "on")
        .collect();
    assert_eq!(b_clients.len(), 2, "{in_b:?}");
    for e in &b_clients {
        assert_eq!(
            (e["keepalive_idle_s"].as_u64(), e["keepalive_cnt"].as_u64()),
            (Some(33), Some(3))
        );
        assert_eq!(e["pid"], b.id(), "{e}");
    }
    kill_one_inside(&a, a_client);
    drop(b.stdin.take());
    let _ = b.wait();
}

/// Killing one connection inside namespace `a` (its client end at port `client`) kills
/// exactly it, seen from inside with `ss`, and the log records the namespace.
fn kill_one_inside(a: &Named, client: u16) {
    // Killing one connection inside a namespace kills exactly it.
    let dir = std::env::temp_dir().join(format!("katop-ns-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("kills.jsonl");
    let filter = format!("netns:{} sport:{client}", a.0);
    let out = katop(&[
        "kill",
        "--filter",
        &filter,
        "--yes",
        "--json",
        "--kill-log",
        log.to_str().unwrap(),
    ]);
    let reports = json(&out);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["result"], "killed", "{reports:?}");
    assert_eq!(reports[0]["netns"], a.inode());
    let ss = Command::new("ip")
        .args(["netns", "exec", &a.0, "ss", "-tnH", "state", "established"])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(!ss.contains(&format!(":{client} ")), "{ss}");
    assert_eq!(
        ss.lines().count(),
        2,
        "the other connection lives on:\n{ss}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("\"netns\":{}", a.inode())),
        "{logged}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Not a test on its own: polls every namespace in its own process and reports, after each
/// poll (a line on stdin asks for the next), which namespaces it holds fds to and how many
/// sockets it has open.
#[test]
fn child_polling_namespaces() {
    if std::env::var_os("KATOP_TEST_POLLER").is_none() {
        return;
    }
    let mut c = Collector::new(Selection {
        netns: Which::All,
        ..Selection::default()
    })
    .unwrap();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let snap = c.poll().unwrap();
        let names: Vec<String> = snap.namespaces.iter().map(|n| n.id.0.to_string()).collect();
        // What each fd is: a socket, or (a namespace held through /proc or a mount) its
        // inode, which is the namespace's.
        let mut held = Vec::new();
        let mut sockets = 0;
        for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let link = std::fs::read_link(fd.path()).map(|l| l.display().to_string());
            match link.as_deref() {
                Ok(l) if l.starts_with("socket:[") => sockets += 1,
                Ok(_) => {
                    if let Ok(m) = std::fs::metadata(fd.path()) {
                        held.push(std::os::unix::fs::MetadataExt::ino(&m).to_string());
                    }
                }
                Err(_) => {}
            }
        }
        println!(
            "\nread {} held {} sockets {sockets}",
            names.join(","),
            held.join(",")
        );
        std::io::stdout().flush().unwrap();
        if lines.next().is_none() {
            return;
        }
    }
}

#[test]
fn a_namespace_deleted_while_polling_leaves_and_is_let_go() {
    if skip("namespace deletion") {
        return;
    }
    let gone = Named::new("gone");
    let ino = gone.inode();
    let mut poller = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_polling_namespaces",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KATOP_TEST_POLLER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(poller.stdout.take().unwrap());
    let mut next = || {
        let mut line = String::new();
        while !line.starts_with("read ") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the poller ended");
        }
        line.trim_end().to_string()
    };
    let first = next();
    let part = |l: &str, key: &str| -> String {
        l.split(key)
            .nth(1)
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert!(
        part(&first, "read").contains(&ino.to_string()),
        "the new namespace is read: {first}"
    );
    // No descriptor of the namespace itself is ever kept: its sock_diag socket pins it.
    assert!(
        !part(&first, "held").contains(&ino.to_string()),
        "an fd to the namespace is held: {first}"
    );
    let sockets = |l: &str| -> usize { l.rsplit(' ').next().unwrap().trim().parse().unwrap() };
    drop(gone);
    poller
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"again\n")
        .unwrap();
    let second = next();
    assert!(
        !part(&second, "read").contains(&ino.to_string()),
        "still read: {second}"
    );
    assert!(
        !part(&second, "held").contains(&ino.to_string()),
        "still held: {second}"
    );
    // One sock_diag socket per namespace read (other namespaces come and go meanwhile): none
    // is left for the one that went.
    let read = |l: &str| part(l, "read").split(',').count();
    assert_eq!(sockets(&first), read(&first), "{first}");
    assert_eq!(
        sockets(&second),
        read(&second),
        "its socket was not closed: {second}"
    );
    drop(poller.stdin.take());
    let _ = poller.wait();
}

#[test]
fn fake_container_cgroups_name_host_network_connections() {
    if skip("fake cgroups") {
        return;
    }
    let id = format!("{:064x}", u128::from(std::process::id()) << 64 | 0xfeed);
    let uid = "1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d";
    for (rel, want) in [
        (format!("docker/{id}"), format!("docker:{}", &id[..12])),
        (
            format!("kubepods/burstable/pod{uid}/{id}"),
            format!("k8s:pod-{uid}"),
        ),
    ] {
        let Some(cg) = common::FakeCgroup::new(&rel) else {
            common::skipped("cannot make cgroups here");
            return;
        };
        // A process in the host's namespace, in the fake container's cgroup, holding a
        // connection: host networking, still attributed to its container.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        let inherited = rustix::io::dup(&c).unwrap();
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        drop(inherited);
        drop(c);
        cg.add(sleeper.id());
        let filter = format!("dport:{}", l.local_addr().unwrap().port());
        let all = json(&katop(&["--json", "--filter", &filter]));
        let e = held_by(&all, sleeper.id()).unwrap_or_else(|| panic!("{all:?}"));
        assert_eq!(e["container"], want.as_str(), "{e}");
        let only = json(&katop(&[
            "--json",
            "--filter",
            &format!("container:{want} {filter}"),
        ]));
        assert_eq!(only.len(), 1);
        // The CONTAINER column names it, in the default table and by -o.
        for args in [vec!["--once"], vec!["--once", "-o", "container,process"]] {
            let mut args = args;
            let host_filter = format!("netns:host {filter}");
            args.extend(["--filter", &host_filter]);
            let table = katop(&args);
            let text = String::from_utf8_lossy(&table.stdout);
            assert!(
                table.status.success(),
                "{}",
                String::from_utf8_lossy(&table.stderr)
            );
            assert!(
                text.lines().next().is_some_and(|h| h.contains("CONTAINER"))
                    && text.contains(&want),
                "{args:?}:\n{text}"
            );
        }
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        // Out of the cgroup before it is removed.
        std::thread::sleep(Duration::from_millis(100));
        drop(cg);
    }
}

#[test]
fn a_podman_container_lists_its_connections_by_name() {
    if skip("podman") {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        common::skipped("podman is not installed (.ci/run installs podman, runc, busybox-static)");
        return;
    }
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        common::skipped("busybox-static is not installed");
        return;
    };
    let root = std::env::temp_dir().join(format!("katop-rootfs-{}", std::process::id()));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "nc", "sleep"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let name = format!("katop-test-{}", std::process::id());
    let _ = Command::new("podman").args(["rm", "-f", &name]).output();
    let run = Command::new("podman")
        .args([
            "--runtime",
            "runc",
            "--cgroup-manager=cgroupfs",
            "run",
            "-d",
            "--name",
            &name,
        ])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--rootfs",
        ])
        .arg(&root)
        // (Each nc reads a stdin that never ends, so neither closes its side.)
        .args([
            "/bin/sh",
            "-c",
            "sleep 600 | nc -l -p 6543 & sleep 1; sleep 600 | nc 127.0.0.1 6543 & sleep 600",
        ])
        .output()
        .unwrap();
    if !run.status.success() {
        common::skipped(&format!(
            "podman cannot start a container here: {}",
            String::from_utf8_lossy(&run.stderr)
        ));
        let _ = std::fs::remove_dir_all(&root);
        return;
    }
    let label = format!("podman:{name}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let all = json(&katop(&[
            "--json",
            "--filter",
            "port:6543 state:established",
        ]));
        let mine: Vec<Value> = all
            .into_iter()
            .filter(|e| e["container"] == label.as_str())
            .collect();
        if mine.len() == 2 || Instant::now() > deadline {
            break mine;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    // The container's name, as the NETNS column shows it, selects its namespace.
    let selected = json(&katop(&[
        "--json",
        "--netns",
        &label,
        "--filter",
        "port:6543 state:established",
    ]));
    let _ = Command::new("podman")
        .args(["rm", "-f", "-t", "0", &name])
        .output();
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(
        found.len(),
        2,
        "the listener's connection and the client: {found:?}"
    );
    for e in &found {
        assert_eq!(e["netns_name"], label.as_str(), "{e}");
        assert_eq!(e["process"], "nc", "{e}");
    }
    assert_eq!(selected.len(), 2, "--netns {label}: {selected:?}");
}
