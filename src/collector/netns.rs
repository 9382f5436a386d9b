//! Every network namespace on the host, and a way into each.
//!
//! Found through the `ns/net` link of every process and through `nsfs` bind mounts
//! (`/run/netns/*` as `ip netns` makes them, `/run/docker/netns/*`, any other in
//! `/proc/self/mountinfo`), so a namespace no process is in still shows. It is entered through
//! an fd opened for the moment (without blocking: a FIFO swapped in for a mount hangs nothing)
//! and checked to be the same inode; its `sock_diag` socket is created by katop's one
//! namespace thread ([`walker`]) while inside it (a netlink socket belongs to the namespace it
//! was created in), so no thread that runs anything else ever changes namespace. When a
//! namespace is no longer found, katop closes every socket it opened there: it never keeps a
//! dead container's namespace alive.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use rustix::fs::{Mode, OFlags, CWD};

mod walker;

use rustix::io::Errno;

use super::sock_diag::DiagSocket;
use crate::error::CollectError;
use crate::model::{KernelSettings, NetnsId};

/// How katop reaches a namespace: a process in it, or a bind mount of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handle {
    Pid(u32),
    Mount(PathBuf),
}

impl Handle {
    fn path(&self) -> PathBuf {
        match self {
            Handle::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Handle::Mount(p) => p.clone(),
        }
    }
}

/// A namespace found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: NetnsId,
    pub handle: Handle,
    /// The name of its bind mount (`ip netns` name), if it has one.
    pub mount_name: Option<String>,
    /// Some processes in it (the first few found), to name it by their cgroup.
    pub pids: Vec<u32>,
}

/// Processes kept per namespace for naming it.
const PIDS_KEPT: usize = 4;

/// Every network namespace on the host, by inode: processes' first, then bind mounts. A
/// process that exits meanwhile, or whose link katop may not read, is skipped (its namespace
/// is found through another process, or is not enterable anyway).
pub fn discover() -> Vec<Found> {
    let mut by_id: FxHashMap<NetnsId, Found> = FxHashMap::default();
    let mut order = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(st) = rustix::fs::stat(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            let Some(id) = NetnsId::from_ino(st.st_ino) else {
                continue;
            };
            let f = by_id.entry(id).or_insert_with(|| {
                order.push(id);
                Found {
                    id,
                    handle: Handle::Pid(pid),
                    mount_name: None,
                    pids: Vec::new(),
                }
            });
            if f.pids.len() < PIDS_KEPT {
                f.pids.push(pid);
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (id, path) in nsfs_mounts(&mountinfo) {
        let name = mount_name(&path);
        let f = by_id.entry(id).or_insert_with(|| {
            order.push(id);
            Found {
                id,
                handle: Handle::Mount(path.clone()),
                mount_name: None,
                pids: Vec::new(),
            }
        });
        if f.mount_name.is_none() {
            f.mount_name = name;
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

/// The network namespace bind mounts in a `mountinfo` text: (inode, mount point).
pub fn nsfs_mounts(mountinfo: &str) -> Vec<(NetnsId, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "nsfs" {
                return None;
            }
            let mut f = left.split_whitespace();
            let root = f.nth(3)?;
            let point = f.next()?;
            let inode = root
                .strip_prefix("net:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((NetnsId(inode), PathBuf::from(unescape(point))))
        })
        .collect()
}

/// `mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The name a bind mount gives its namespace: the file name (`ip netns add web` → `web`).
fn mount_name(path: &Path) -> Option<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
}

/// The namespace at `handle`, held by an fd, after checking it is still namespace `id` (a pid
/// can be reused, a mount replaced).
pub fn hold(id: NetnsId, handle: &Handle) -> Result<OwnedFd, CollectError> {
    let path = handle.path();
    let fd = rustix::fs::openat(
        CWD,
        &path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CollectError::Netns {
        id: id.ino(),
        // No path: many namespaces failing alike are counted as one cause.
        what: "open its namespace file".into(),
        errno: e,
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| CollectError::Netns {
        id: id.ino(),
        what: "fstat".into(),
        errno: e,
    })?;
    if st.st_ino != id.ino() {
        return Err(CollectError::Netns {
            id: id.ino(),
            what: format!("{} is now namespace {}", path.display(), st.st_ino),
            errno: rustix::io::Errno::STALE,
        });
    }
    Ok(fd)
}

/// Runs `f` inside namespace `fd` on katop's namespace thread ([`walker`]: setns is per
/// thread, and no thread that runs anything else ever switches); what `f` opens there stays
/// bound to it.
pub fn inside<T: Send + 'static>(
    fd: &OwnedFd,
    id: NetnsId,
    f: impl FnOnce() -> Result<T, CollectError> + Send + 'static,
) -> Result<T, CollectError> {
    let failed = move |what: &str, errno| CollectError::Netns {
        id: id.ino(),
        what: what.into(),
        errno,
    };
    let fd = fd
        .try_clone()
        .map_err(|e| failed("dup", Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
    let (tx, rx) = std::sync::mpsc::channel();
    walker::run(
        fd,
        Box::new(move |entered| {
            let result = entered
                .map_err(|e| failed("setns (needs CAP_SYS_ADMIN)", e))
                .and_then(|()| f());
            let _ = tx.send(result);
        }),
    )
    .map_err(|e| failed("start the namespace thread", e))?;
    rx.recv()
        .unwrap_or_else(|_| Err(failed("the namespace thread failed", Errno::IO)))
}

/// A `sock_diag` socket inside namespace `id`, to act on a socket there; an error when the
/// namespace is gone or cannot be entered.
pub fn diag_in(id: NetnsId) -> Result<DiagSocket, CollectError> {
    if id == super::current_netns() {
        return DiagSocket::open();
    }
    let found = discover()
        .into_iter()
        .find(|f| f.id == id)
        .ok_or(CollectError::NetnsGone(id.ino()))?;
    let fd = hold(id, &found.handle)?;
    // The socket keeps the namespace alive for as long as katop acts through it.
    inside(&fd, id, DiagSocket::open)
}

/// Reads a namespace's sysctls again, on a thread that enters it.
pub fn read_settings(fd: &OwnedFd, id: NetnsId) -> Option<KernelSettings> {
    inside(fd, id, || Ok(super::sysctl::read())).ok()
}

/// A namespace's `sockstat` files, opened inside it (they stay bound to it): how many TCP and
/// UDP sockets it has, so a namespace without any costs no dump of them (a TCP dump walks the
/// host's whole hash table, whichever namespace asks).
pub struct Counts {
    v4: Option<File>,
    v6: Option<File>,
}

/// Sockets a namespace has, by protocol and family; `None` where unknown (then dump anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InUse {
    pub tcp4: Option<u64>,
    pub tcp6: Option<u64>,
    pub udp4: Option<u64>,
    pub udp6: Option<u64>,
}

impl InUse {
    /// Whether a dump of `proto` over `family` can find anything.
    pub fn may_have(&self, proto: crate::model::Proto, family: crate::model::Family) -> bool {
        use crate::model::{Family, Proto};
        let n = match (proto, family) {
            (Proto::Tcp, Family::Inet) => self.tcp4,
            (Proto::Tcp, _) => self.tcp6,
            (Proto::Udp, Family::Inet) => self.udp4,
            (Proto::Udp, _) => self.udp6,
            (Proto::Unix, _) => None,
        };
        n != Some(0)
    }
}

impl Counts {
    /// This thread's namespace's counts (opened inside it, they stay bound to it).
    pub fn open() -> Counts {
        Counts {
            v4: File::open("/proc/thread-self/net/sockstat").ok(),
            v6: File::open("/proc/thread-self/net/sockstat6").ok(),
        }
    }

    /// No counts: every dump is made.
    pub fn unknown() -> Counts {
        Counts { v4: None, v6: None }
    }

    /// The counts now.
    pub fn read(&mut self) -> InUse {
        let mut text = String::new();
        let mut read = |f: &mut Option<File>| -> Option<String> {
            let f = f.as_mut()?;
            f.rewind().ok()?;
            text.clear();
            f.take(4096).read_to_string(&mut text).ok()?;
            Some(text.clone())
        };
        let (v4, v6) = (read(&mut self.v4), read(&mut self.v6));
        // TIME_WAIT sockets of both families are counted on the IPv4 TCP line: a namespace
        // with any keeps both TCP dumps.
        let tw = v4.as_deref().and_then(sockstat_tw);
        let count = |text: &Option<String>, key: &str| sockstat_count(text.as_deref()?, key, false);
        let plus_tw = |n: Option<u64>| Some(n? + tw?);
        InUse {
            tcp4: plus_tw(count(&v4, "TCP:")),
            tcp6: plus_tw(count(&v6, "TCP6:")),
            udp4: count(&v4, "UDP:"),
            udp6: count(&v6, "UDP6:"),
        }
    }
}

/// The `tw` count on the `TCP:` line.
fn sockstat_tw(text: &str) -> Option<u64> {
    Some(sockstat_count(text, "TCP:", true)? - sockstat_count(text, "TCP:", false)?)
}

/// `inuse` (plus `tw` for TCP) on the line starting with `key` of a `sockstat` file.
pub fn sockstat_count(text: &str, key: &str, with_tw: bool) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut words = line.split_whitespace().skip(1);
    let mut total = 0;
    while let (Some(k), Some(v)) = (words.next(), words.next()) {
        if k == "inuse" || (with_tw && k == "tw") {
            total += v.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_namespace_bind_mounts_in_mountinfo() {
        let text = "\
36 25 0:4 net:[4026532451] /run/netns/web rw shared:5 - nsfs nsfs rw
37 25 0:4 net:[4026532999] /run/docker/netns/3f2a91c0d4e1 rw - nsfs nsfs rw
38 25 0:4 mnt:[4026532000] /run/mnt-ns rw - nsfs nsfs rw
39 25 0:21 / /proc rw - proc proc rw
40 25 0:4 net:[4026532777] /run/netns/with\\040space rw - nsfs nsfs rw
";
        let found = nsfs_mounts(text);
        assert_eq!(
            found,
            vec![
                (NetnsId(4_026_532_451), PathBuf::from("/run/netns/web")),
                (
                    NetnsId(4_026_532_999),
                    PathBuf::from("/run/docker/netns/3f2a91c0d4e1")
                ),
                (
                    NetnsId(4_026_532_777),
                    PathBuf::from("/run/netns/with space")
                ),
            ]
        );
        assert_eq!(mount_name(&found[0].1).as_deref(), Some("web"));
    }

    #[test]
    fn reads_socket_counts() {
        let v4 =
            "sockets: used 120\nTCP: inuse 3 orphan 0 tw 2 alloc 9 mem 1\nUDP: inuse 1 mem 0\n";
        assert_eq!(sockstat_count(v4, "TCP:", true), Some(5));
        assert_eq!(sockstat_count(v4, "TCP:", false), Some(3));
        assert_eq!(sockstat_count(v4, "UDP:", false), Some(1));
        assert_eq!(sockstat_count(v4, "RAW:", false), None);
    }

    #[test]
    fn discovers_this_processs_namespace() {
        let own = crate::collector::current_netns();
        let all = discover();
        let me = all
            .iter()
            .find(|f| f.id == own)
            .expect("katop's own namespace is found");
        let fd = hold(me.id, &me.handle).unwrap();
        assert_eq!(rustix::fs::fstat(&fd).unwrap().st_ino, own.ino());
        // The wrong inode for a handle is refused, never entered.
        assert!(hold(NetnsId(own.0 ^ 1), &me.handle).is_err());
    }
}
