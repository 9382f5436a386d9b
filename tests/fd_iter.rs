//! The BPF fd reader against what the test set up, what `/proc/PID/fd` links say and what
//! `getsockopt` answers: the same sockets, the same holders, the same options (the socket's
//! own, or its namespace's sysctls).

use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use katop::collector::fd_iter::{FdReader, FdTable};
use katop::collector::{sockopts, Collector, Selection};
use katop::model::{Inode, Owner, Proto, RawSock, SockOpts};
use socket2::{SockRef, TcpKeepalive};

mod common;
use common::{connect, is_root, PeerNs};

fn inode(fd: &impl AsFd) -> Inode {
    Inode(rustix::fs::fstat(fd).unwrap().st_ino as u32)
}

/// The inode `/proc/PID/fd/N` names, as the `/proc` reader reads it.
fn proc_link(pid: u32, fd: i32) -> Option<Inode> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    katop::collector::procs::socket_inode(link.as_bytes()).map(Inode)
}

fn sysctl(name: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn held_by(table: &FdTable, pid: u32, fd: i32) -> Option<Inode> {
    table.by_pid.get(&pid)?.get(&(fd as u32)).copied()
}

/// A connection in `ns`, whose keepalive sysctls it sets to 4242/33/6, with keepalive turned
/// on at the client and nothing else of its own: (client, server, listener).
fn keepalive_on_in_namespace(ns: &PeerNs) -> (TcpStream, TcpStream, TcpListener) {
    ns.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.tcp_keepalive_time=4242",
        "net.ipv4.tcp_keepalive_intvl=33",
        "net.ipv4.tcp_keepalive_probes=6",
    ]);
    ns.within(|| {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        SockRef::from(&c).set_keepalive(true).unwrap();
        let s = l.accept().unwrap().0;
        (c, s, l)
    })
}

#[test]
fn reads_every_socket_fd_and_tcp_options_as_proc_and_getsockopt_do() {
    if !is_root() {
        common::skipped("needs root to load a BPF program");
        return;
    }
    let mut reader =
        FdReader::open().expect("the BPF reader loads as root (.ci/run installs clang)");

    // Here: a listener with the defaults and keepalive off; a client with its own options.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (client, server) = connect(&l, Some(Duration::from_secs(77)));
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(77))
        .with_interval(Duration::from_secs(9))
        .with_retries(4);
    SockRef::from(&client).set_tcp_keepalive(&ka).unwrap();
    SockRef::from(&client)
        .set_tcp_user_timeout(Some(Duration::from_millis(4321)))
        .unwrap();
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (unix_a, _unix_b) = UnixStream::pair().unwrap();

    // In a namespace whose sysctls differ: a socket without options of its own takes them.
    let ns = PeerNs::new();
    let (ns_client, _ns_server, _ns_listener) = keepalive_on_in_namespace(&ns);

    // Another process holding a socket as its stdin.
    let (child_end, _our_end) = connect(&l, None);
    let child_inode = inode(&child_end);
    let mut child = Command::new("sleep")
        .arg("300")
        .stdin(Stdio::from(OwnedFd::from(child_end)))
        .spawn()
        .unwrap();

    let table = reader.read().expect("one pass");
    let pid = std::process::id();
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(
        held_by(&table, child.id(), 0),
        Some(child_inode),
        "the child's stdin"
    );
    assert!(
        table.walked.contains(&pid) && table.walked.contains(&child.id()),
        "the pass says it walked both processes"
    );
    let ours: [(&str, i32, Inode); 6] = [
        ("listener", l.as_raw_fd(), inode(&l)),
        ("client", client.as_raw_fd(), inode(&client)),
        ("server", server.as_raw_fd(), inode(&server)),
        ("udp", udp.as_raw_fd(), inode(&udp)),
        ("unix", unix_a.as_raw_fd(), inode(&unix_a)),
        ("namespaced", ns_client.as_raw_fd(), inode(&ns_client)),
    ];
    for (what, fd, ino) in ours {
        assert_eq!(held_by(&table, pid, fd), Some(ino), "{what}: fd {fd}");
        assert_eq!(proc_link(pid, fd), Some(ino), "{what}: /proc agrees");
    }
    // Options: exactly getsockopt's answers, for TCP sockets only.
    for (what, fd) in [
        ("listener", l.as_fd()),
        ("client", client.as_fd()),
        ("server", server.as_fd()),
        ("namespaced", ns_client.as_fd()),
    ] {
        assert_eq!(table.opts(inode(&fd)), sockopts::read(&fd), "{what}");
    }
    assert_eq!(table.opts(inode(&udp)), None);
    assert_eq!(table.opts(inode(&unix_a)), None);
    let defaults = SockOpts {
        user_timeout_ms: 0,
        idle_s: sysctl("tcp_keepalive_time") as u16,
        intvl_s: sysctl("tcp_keepalive_intvl") as u16,
        cnt: sysctl("tcp_keepalive_probes") as u8,
        keepalive: false,
        read: true,
    };
    assert_eq!(table.opts(inode(&l)), Some(defaults));
    let own = SockOpts {
        user_timeout_ms: 4321,
        idle_s: 77,
        intvl_s: 9,
        cnt: 4,
        keepalive: true,
        read: true,
    };
    assert_eq!(table.opts(inode(&client)), Some(own));
    let namespaced = SockOpts {
        user_timeout_ms: 0,
        idle_s: 4242,
        intvl_s: 33,
        cnt: 6,
        keepalive: true,
        read: true,
    };
    assert_eq!(table.opts(inode(&ns_client)), Some(namespaced));
}

#[test]
fn a_closed_socket_is_gone_at_the_next_pass() {
    if !is_root() {
        common::skipped("needs root to load a BPF program");
        return;
    }
    let mut reader = FdReader::open().expect("the BPF reader loads as root");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (fd, ino) = (l.as_raw_fd(), inode(&l));
    let pid = std::process::id();
    assert_eq!(held_by(&reader.read().unwrap(), pid, fd), Some(ino));
    drop(l);
    let after = reader.read().unwrap();
    // The number may be reused by another test's thread meanwhile, but not for this socket.
    assert_ne!(held_by(&after, pid, fd), Some(ino));
    assert_eq!(after.opts(ino), None);
}

/// Each of `inodes`: who holds it (pid, fd) and its options, as one poll of a collector with
/// or without the BPF reader sees it.
/// A socket, its first holder (pid, fd) and its options.
type Seen = (Inode, Option<(u32, u32)>, SockOpts);

fn poll_owners(bpf: bool, inodes: &[Inode]) -> Vec<Seen> {
    let mut c = Collector::new(Selection {
        protos: vec![Proto::Tcp],
        // The reader in every scan, however few sockets it looks for.
        bpf_from: bpf.then_some(0),
        ..Selection::default()
    })
    .unwrap();
    let snap = c.poll().unwrap();
    assert_eq!(c.scan_stats().bpf, bpf, "which reader read the fd tables");
    let find = |ino: Inode| -> &RawSock {
        snap.socks
            .iter()
            .find(|s| s.inode == ino)
            .unwrap_or_else(|| panic!("socket {ino:?} dumped"))
    };
    inodes
        .iter()
        .map(|&ino| {
            let s = find(ino);
            let owner = match &s.owner {
                Owner::Process { process, fd } => Some((process.pid, *fd)),
                _ => None,
            };
            (ino, owner, s.opts)
        })
        .collect()
}

#[test]
fn a_poll_with_the_bpf_reader_shows_what_one_without_it_shows() {
    if !is_root() {
        common::skipped("needs root to load a BPF program");
        return;
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (client, server) = connect(&l, Some(Duration::from_secs(55)));
    SockRef::from(&client)
        .set_tcp_user_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    let (child_end, child_peer) = connect(&l, None);
    let child_inode = inode(&child_end);
    let mut child = common::Reaped(
        Command::new("sleep")
            .arg("300")
            .stdin(Stdio::from(OwnedFd::from(child_end)))
            .spawn()
            .unwrap(),
    );
    let inodes = [
        inode(&l),
        inode(&client),
        inode(&server),
        child_inode,
        inode(&child_peer),
    ];
    let with = poll_owners(true, &inodes);
    let without = poll_owners(false, &inodes);
    assert_eq!(with, without);
    // And both are what the test made.
    let pid = std::process::id();
    assert_eq!(with[1].1, Some((pid, client.as_raw_fd() as u32)));
    assert_eq!(with[3].1, Some((child.0.id(), 0)), "the child's stdin");
    assert_eq!(with[1].2.idle_s, 55);
    assert_eq!(with[1].2.user_timeout_ms, 2500);
    assert!(with[1].2.keepalive && with[1].2.read);
    let _ = child.0.kill();
}

#[test]
fn a_socket_that_is_a_process_first_file_is_listed_whatever_its_kind() {
    if !is_root() {
        common::skipped("needs root to load a BPF program");
        return;
    }
    let mut reader = FdReader::open().expect("the BPF reader loads as root");
    // fd 0 is the first file the pass meets in the child, where it writes its marker too.
    let (unix_end, _peer) = UnixStream::pair().unwrap();
    let unix_inode = inode(&unix_end);
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let udp_inode = inode(&udp);
    let spawn = |stdin: OwnedFd| {
        common::Reaped(
            Command::new("sleep")
                .arg("300")
                .stdin(Stdio::from(stdin))
                .spawn()
                .unwrap(),
        )
    };
    let unix_child = spawn(OwnedFd::from(unix_end));
    let udp_child = spawn(OwnedFd::from(udp));
    let table = reader.read().unwrap();
    assert_eq!(held_by(&table, unix_child.id(), 0), Some(unix_inode));
    assert_eq!(held_by(&table, udp_child.id(), 0), Some(udp_inode));
    assert!(table.walked.contains(&unix_child.id()) && table.walked.contains(&udp_child.id()));
}

#[test]
fn a_copy_given_bpf_capabilities_shows_nobody_no_more_than_proc_would() {
    if !is_root() {
        common::skipped("needs root to run katop as nobody");
        return;
    }
    if Command::new("setcap").arg("-v").output().is_err() {
        common::skipped("setcap is missing (Debian: libcap2-bin; .ci/run installs it)");
        return;
    }
    // Enough sockets for katop to want the reader (BPF_FROM_SOCKETS), all held by root here:
    // nobody cannot read this process's fds, so each owner is unknown to it.
    common::raise_fd_limit();
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let pairs = katop::collector::BPF_FROM_SOCKETS / 2 + 100;
    let held: Vec<(TcpStream, TcpStream)> = (0..pairs).map(|_| connect(&l, None)).collect();
    let (dir, bin) = common::nobody_dir("bpf-caps");
    common::setcap("cap_bpf,cap_perfmon+ep", &bin);
    let filter = format!("tcp dst:127.0.0.1:{port} established");
    let out = common::run_as_nobody(&bin, &dir, &["--json", "--filter", &filter]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(socks.len(), pairs, "every client end");
    let seen: Vec<&serde_json::Value> = socks.iter().filter(|s| !s["pid"].is_null()).collect();
    assert!(
        seen.is_empty(),
        "nobody saw {} of root's fds, first {}",
        seen.len(),
        seen[0]
    );
    assert!(socks.iter().all(|s| s["owner"] == "unknown"));
    // Both readers were wanted (this many sockets) and refused: it says so, and why.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "katop's BPF readers are off (katop runs with privileges its user lacks): katop \
             reads /proc and sock_diag instead"
        ),
        "{stderr}"
    );
    // A copy without capabilities: the kernel would refuse the load, and it says what it needs.
    let (plain_dir, plain) = common::nobody_dir("bpf-plain");
    let out = common::run_as_nobody(&plain, &plain_dir, &["--json", "--filter", &filter]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("katop's BPF readers are off (loading them needs root, or CAP_BPF"),
        "{stderr}"
    );
    drop(held);
}

#[test]
fn a_process_whose_sockets_fill_many_buffers_is_read_whole() {
    if !is_root() {
        common::skipped("needs root to load a BPF program");
        return;
    }
    // 1,400 sockets: 45 KiB of records from one process, past the kernel's 32 KiB seq
    // buffer, so the pass stops and resumes inside it.
    common::raise_fd_limit();
    let mut reader = FdReader::open().expect("the BPF reader loads as root");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let held: Vec<(TcpStream, TcpStream)> = (0..700).map(|_| connect(&l, None)).collect();
    let table = reader.read().unwrap();
    let pid = std::process::id();
    for (c, s) in &held {
        for end in [c, s] {
            let ino = inode(end);
            assert_eq!(held_by(&table, pid, end.as_raw_fd()), Some(ino));
            assert_eq!(table.opts(ino), sockopts::read(&end.as_fd()));
        }
    }
    assert!(table.walked.contains(&pid));
}

#[test]
fn a_pass_over_its_budget_is_given_up_not_trusted() {
    if !is_root() {
        common::skipped("needs root to load a BPF program");
        return;
    }
    let mut reader = FdReader::open().expect("the BPF reader loads as root");
    let err = reader.read_within(Duration::ZERO).unwrap_err();
    assert!(err.contains("took longer than"), "{err}");
    // The budget bounds one pass; the next, given one, reads every table again.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let table = reader.read_within(Duration::from_secs(600)).unwrap();
    assert_eq!(
        held_by(&table, std::process::id(), l.as_raw_fd()),
        Some(inode(&l))
    );
}
