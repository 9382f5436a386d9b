//! Helpers shared by the integration tests: one poll, finding a socket by its ends, connecting.
#![allow(dead_code)] // each test crate uses its own subset

pub mod ends;
pub mod postgres;
pub mod tmux;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use katop::collector::{Collector, Selection};
use katop::model::{ConnTable, Proto, SockEntry, SockState};
use socket2::{Domain, Socket, TcpKeepalive, Type};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One poll of every TCP socket, in a table with `stale_after`.
pub fn poll(stale_after: Duration) -> ConnTable {
    let mut c = Collector::new(Selection {
        protos: vec![Proto::Tcp],
        ipv4: true,
        ipv6: true,
        ..Selection::default()
    })
    .expect("open sock_diag");
    let snap = c.poll().expect("poll");
    let mut t = ConnTable::new(stale_after);
    t.apply(snap, Instant::now());
    t
}

/// The one socket at `local` (a client's unique port, or a listener: `peer` `None`), or at
/// `local` talking to `peer` (a server end, which shares the listener's address).
pub fn find_pair(t: &ConnTable, local: SocketAddr, peer: Option<SocketAddr>) -> SockEntry<'_> {
    let peer = peer.map_or_else(|| "*".to_string(), |p| p.to_string());
    let found: Vec<SockEntry> = t
        .entries()
        .filter(|e| e.sock.local.to_string() == local.to_string())
        // Without a peer: the live socket at a client's port (old TIME_WAITs may reuse it).
        .filter(|e| {
            e.sock.remote.to_string() == peer
                || (peer == "*" && !matches!(e.sock.state, SockState::Listen | SockState::TimeWait))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one socket at {local} -> {peer}, found {}",
        found.len()
    );
    found[0]
}

/// A client connected to `listener`, with keepalive idle `keepidle` if given, and the accepted
/// server end.
pub fn connect(listener: &TcpListener, keepidle: Option<Duration>) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    if let Some(idle) = keepidle {
        s.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))
            .unwrap();
    }
    s.connect(&addr.into()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (s.into(), server)
}

// ---- root only: a peer in its own network namespace that can go silent --------------------

pub fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces made by this test process so far (each gets its own names and /30).
static NAMESPACES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A network namespace joined to ours by a veth pair, `host_ip` on our side and `peer_ip`
/// inside; removed on drop. Several can exist at once in one test process.
pub struct PeerNs {
    pub name: String,
    host_if: String,
    peer_if: String,
    pub host_ip: String,
    pub peer_ip: String,
}

impl PeerNs {
    pub fn new() -> PeerNs {
        assert!(
            std::process::Command::new("ip").arg("-V").output().is_ok(),
            "iproute2's `ip` is missing: .ci/run installs it"
        );
        let id = std::process::id();
        let n = NAMESPACES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (net, block) = reserve_subnet();
        let ns = PeerNs {
            name: format!("katop-test-{id}-{n}"),
            host_if: format!("kt{id}x{n}a"),
            peer_if: format!("kt{id}x{n}b"),
            host_ip: format!("{net}.{}", block + 1),
            peer_ip: format!("{net}.{}", block + 2),
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns.name])
            .output();
        sh(&["ip", "netns", "add", &ns.name]);
        sh(&[
            "ip",
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.peer_if,
        ]);
        sh(&["ip", "link", "set", &ns.peer_if, "netns", &ns.name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        sh(&["ip", "link", "set", &ns.host_if, "up"]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.peer_ip),
            "dev",
            &ns.peer_if,
        ]);
        ns.exec(&["ip", "link", "set", &ns.peer_if, "up"]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// Runs `f` on a thread that has entered the namespace (setns is per thread).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        within_netns(&self.name, f)
    }

    /// Cuts the namespace off without a FIN or RST: its packets just stop. Neighbour entries
    /// are pinned first, so no ARP failure turns the silence into ICMP errors.
    pub fn go_silent(&self) {
        self.pin_neighbours();
        self.exec(&["ip", "link", "set", &self.peer_if, "down"]);
    }

    /// Cuts our side off instead: from inside the namespace, the host goes silent.
    pub fn host_goes_silent(&self) {
        self.pin_neighbours();
        sh(&["ip", "link", "set", &self.host_if, "down"]);
    }

    fn pin_neighbours(&self) {
        let mac = |ifname: &str, inside: bool| {
            let path = format!("/sys/class/net/{ifname}/address");
            let out = if inside {
                std::process::Command::new("ip")
                    .args(["netns", "exec", &self.name, "cat", &path])
                    .output()
                    .unwrap()
                    .stdout
            } else {
                std::fs::read(&path).unwrap()
            };
            String::from_utf8(out).unwrap().trim().to_string()
        };
        let (host_mac, peer_mac) = (mac(&self.host_if, false), mac(&self.peer_if, true));
        sh(&[
            "ip",
            "neigh",
            "replace",
            &self.peer_ip,
            "lladdr",
            &peer_mac,
            "dev",
            &self.host_if,
            "nud",
            "permanent",
        ]);
        self.exec(&[
            "ip",
            "neigh",
            "replace",
            &self.host_ip,
            "lladdr",
            &host_mac,
            "dev",
            &self.peer_if,
            "nud",
            "permanent",
        ]);
    }
}

/// Where test processes reserve their /30s: one file each, holding the owner's pid.
const SUBNETS: &str = "/tmp/katop-test-subnets";

/// A /30 in 10.213.0.0/16 no other test process (running now) holds: `("10.213.A", B)` for
/// A.B/30. Reserved by an exclusively created file; one whose owner is gone is taken over.
fn reserve_subnet() -> (String, u32) {
    let _ = std::fs::create_dir_all(SUBNETS);
    let start = (std::process::id() as usize).wrapping_mul(2_654_435_761) % (250 * 64);
    for k in 0..250 * 64 {
        let i = (start + k) % (250 * 64);
        let (a, b) = (i / 64, 4 * (i % 64) as u32);
        let file = std::path::Path::new(SUBNETS).join(format!("10.213.{a}.{b}"));
        let take = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, std::process::id().to_string().as_bytes())
                })
                .is_ok()
        };
        if take() {
            return (format!("10.213.{a}"), b);
        }
        let owner = std::fs::read_to_string(&file).unwrap_or_default();
        let alive = owner.trim().parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive
            && owner.trim().parse::<u32>().is_ok()
            && std::fs::remove_file(&file).is_ok()
            && take()
        {
            return (format!("10.213.{a}"), b);
        }
    }
    panic!("no free /30 in 10.213.0.0/16 for a test namespace");
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        let octets: Vec<&str> = self.host_ip.split('.').collect();
        if let [a, b, c, d] = octets[..] {
            let block = d.parse::<u32>().unwrap_or(1) - 1;
            let _ = std::fs::remove_file(
                std::path::Path::new(SUBNETS).join(format!("{a}.{b}.{c}.{block}")),
            );
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A TCP connection from here to a listener in a fresh network namespace, which can then go
/// silent (its link down: no FIN, no RST). Needs root.
pub struct SilentPeer {
    pub client: TcpStream,
    /// The accepted end and its listener, held inside the namespace.
    accepted: (TcpListener, TcpStream),
    ns: PeerNs,
}

impl SilentPeer {
    /// Connects with keepalive `ka` and sends a greeting.
    pub fn connect(ka: &TcpKeepalive) -> SilentPeer {
        Self::connect_with(|s| s.set_tcp_keepalive(ka).unwrap())
    }

    /// Connects with options set by `setup` before the handshake, and sends a greeting.
    pub fn connect_with(setup: impl FnOnce(&Socket)) -> SilentPeer {
        let ns = PeerNs::new();
        let peer: SocketAddr = format!("{}:5432", ns.peer_ip).parse().unwrap();
        let listener = ns.within(|| TcpListener::bind(peer).unwrap());
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        setup(&s);
        s.connect(&peer.into()).unwrap();
        let mut client: TcpStream = s.into();
        std::io::Write::write_all(&mut client, b"hello").unwrap();
        let (conn, _) = listener.accept().unwrap();
        SilentPeer {
            client,
            accepted: (listener, conn),
            ns,
        }
    }

    /// The accepted end, inside the namespace (to send the client something).
    pub fn server(&mut self) -> &mut TcpStream {
        &mut self.accepted.1
    }

    pub fn go_silent(&self) {
        self.ns.go_silent();
    }
}

/// A directory of `nobody`'s own (mode 0755: no one else may write in it) holding a copy of
/// the katop binary (root's, 0755) that `nobody` may run; removed on drop (the binary is tens
/// of MB).
pub fn nobody_dir(name: &str) -> (NobodyDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("katop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("katop");
    std::fs::copy(env!("CARGO_BIN_EXE_katop"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    let nogroup = Some(rustix::process::Gid::from_raw(65534));
    rustix::fs::chown(&dir, nobody, nogroup).unwrap();
    (NobodyDir(dir), bin)
}

/// See [`nobody_dir`].
pub struct NobodyDir(pub std::path::PathBuf);

impl std::ops::Deref for NobodyDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for NobodyDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for NobodyDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for NobodyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the katop binary as the unprivileged user `nobody` (root only), from [`nobody_dir`],
/// with `HOME` there too (root's config is not nobody's to read); the directory is removed
/// once it ran.
pub fn katop_as_nobody(name: &str, args: &[&str]) -> std::process::Output {
    let (dir, bin) = nobody_dir(name);
    run_as_nobody(&bin, &dir, args)
}

/// Runs `bin` as `nobody` with `HOME` at `dir`.
pub fn run_as_nobody(
    bin: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    output_retrying(
        std::process::Command::new(bin)
            .args(args)
            .stdin(std::process::Stdio::null())
            .env("HOME", dir)
            .env_remove("KATOP_FILTER")
            .uid(65534)
            .gid(65534),
    )
}

/// Runs a binary this test just copied: another test thread forking while the copy was open
/// for writing can make its exec fail with ETXTBSY for a moment (rust-lang/rust#114554).
pub fn output_retrying(cmd: &mut std::process::Command) -> std::process::Output {
    retrying(|| cmd.output())
}

/// [`output_retrying`] for a child that runs on.
pub fn spawn_retrying(cmd: &mut std::process::Command) -> std::process::Child {
    retrying(|| cmd.spawn())
}

fn retrying<T>(mut run: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..50 {
        match run() {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::TXTBSY.raw_os_error()) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r.unwrap(),
        }
    }
    run().unwrap()
}

/// Runs `f` on a thread that has entered the `ip netns` namespace `name` (setns is per
/// thread: the test's own threads stay where they are).
pub fn within_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// The JSON socket (of `katop --json`) one of whose holders is process `pid`.
pub fn held_by(sockets: &[serde_json::Value], pid: u32) -> Option<&serde_json::Value> {
    sockets.iter().find(|e| {
        e["owners"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["pid"] == pid))
    })
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit` (katop must never
/// hang: a hang fails, it does not stall the suite).
pub fn output_within(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = spawn_retrying(cmd);
    // Drained as it runs: a full pipe would stall the child.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|o| Box::new(o) as _));
    let stderr = drain(child.stderr.take().map(|e| Box::new(e) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap();
            panic!(
                "{cmd:?} still ran after {limit:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A cgroup made by the test, in the unified hierarchy or the v1 `pids` one; removed on drop.
pub struct FakeCgroup(std::path::PathBuf);

impl FakeCgroup {
    pub fn new(rel: &str) -> Option<FakeCgroup> {
        let base = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/pids"
        };
        let dir = std::path::Path::new(base).join(rel);
        std::fs::create_dir_all(&dir).ok()?;
        Some(FakeCgroup(dir))
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for FakeCgroup {
    fn drop(&mut self) {
        // Leaves first; directories in the way up to the hierarchy's root.
        let mut d = self.0.clone();
        for _ in 0..6 {
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            if !d.pop() {
                break;
            }
        }
    }
}

/// A child killed and reaped on drop: a test that fails leaves nothing running.
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of this test's own, removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("katop-sec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (up to a minute) until `done`, failing the test with `what` otherwise.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    wait_until(what, || done().then_some(()));
}

/// Tries `attempt` (every 20 ms, up to a minute) until it gives something, and returns that,
/// failing the test with `what` otherwise.
pub fn wait_until<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// katop with `args` and `env`, which must end within 20 s.
pub fn katop_checked(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_katop"))
            .env("KATOP_NETNS", "host")
            .env_remove("KATOP_FILTER")
            .env_remove("KATOP_READ_ONLY")
            .env_remove("KATOP_CONFIG")
            .envs(env.iter().copied())
            .args(args),
        Duration::from_secs(20),
    )
}

/// A child's stderr, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Says a test (or a part of one) did not run, and why, where a person sees it: straight to
/// stderr, past the test harness's capture (which hides what passing tests print), named by
/// the test.
pub fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// The address a katop serves its metrics on, as it says on stderr (`WHO: serving
/// http://ADDR/metrics`); the rest of what it says is drained so it never blocks on it.
pub fn serving(child: &mut std::process::Child, who: &str) -> std::net::SocketAddr {
    use std::io::BufRead;
    let prefix = format!("{who}: serving http://");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix(&prefix)?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{who} never said where it serves"));
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// A loopback connection this process holds both ends of, and the filter that lists its
/// client's end alone.
pub struct Established {
    pub listener: TcpListener,
    pub client: TcpStream,
    pub server: TcpStream,
    pub filter: String,
}

pub fn established() -> Established {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let filter = format!(
        "src:{} dst:{} established",
        client.local_addr().unwrap(),
        listener.local_addr().unwrap()
    );
    Established {
        listener,
        client,
        server,
        filter,
    }
}

/// Gives `bin` the file capabilities `caps` (`setcap`'s text form, `cap_net_admin+ep`).
pub fn setcap(caps: &str, bin: &std::path::Path) {
    let out = std::process::Command::new("setcap")
        .arg(caps)
        .arg(bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setcap {caps}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Raises this process's open-file limit to its hard limit, for tests that hold thousands of
/// sockets.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    setrlimit(Resource::Nofile, l).unwrap();
}
