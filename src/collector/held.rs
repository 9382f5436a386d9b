//! TCP sockets a process holds that no socket table lists: `CLOSE`, and out of the tables,
//! because the kernel ended the connection (a reset, a timeout, a kill) while its application
//! still holds the fd, or because the socket never connected. The model keeps the ones it knew
//! as connections (`dead`); the collector only finds them.
//!
//! Each is borrowed from its holder (`pidfd_getfd`, checked against its inode) and asked its
//! family, protocol, cookie and local address. Never `SO_ERROR`: reading it would clear the
//! error its application is about to get.

use std::net::{IpAddr, Ipv4Addr};

use rustc_hash::FxHashSet;
use rustix::net::{sockopt, AddressFamily, SocketType};

use super::borrow;
use super::procs::ProcessMap;
use crate::model::{
    Cookie, Endpoint, Family, InetAddr, Inode, NetnsId, Owner, Proto, RawSock, SockState,
};

/// At most this many held sockets are looked at in one poll (each costs a few syscalls).
const MAX_PER_POLL: usize = 4096;

/// Inodes already found not to be TCP (netlink, packet, Unix sockets katop did not dump…),
/// not asked again while they are held.
#[derive(Debug, Default)]
pub struct HeldSockets {
    not_tcp: FxHashSet<Inode>,
    /// Where the next poll's asking starts, past [`MAX_PER_POLL`] (so more held sockets than
    /// that are all asked about, over several polls, not the same first ones every poll).
    from: Inode,
}

impl HeldSockets {
    /// The TCP sockets processes in the `dumped` namespaces hold that this poll's dumps did
    /// not list, as `CLOSE`.
    pub fn find(&mut self, procs: &ProcessMap, dumped: &[NetnsId]) -> Vec<RawSock> {
        let mut found = Vec::new();
        let mut still_held = FxHashSet::default();
        let mut asked = 0;
        let mut capped = false;
        let mut netns_of_pid: rustc_hash::FxHashMap<u32, NetnsId> =
            rustc_hash::FxHashMap::default();
        // By inode, from where the last poll stopped, round: a stable order that moves on.
        let mut unlisted: Vec<_> = procs.unlisted().collect();
        unlisted.sort_unstable_by_key(|(inode, ..)| *inode);
        let start = unlisted.partition_point(|(inode, ..)| *inode < self.from);
        unlisted.rotate_left(start);
        for (inode, process, fd) in unlisted {
            // A process in a namespace not read holds no socket of this poll's.
            let netns = *netns_of_pid
                .entry(process.pid)
                .or_insert_with(|| netns_of(process.pid));
            if !dumped.contains(&netns) {
                continue;
            }
            if self.not_tcp.contains(&inode) {
                still_held.insert(inode);
                continue;
            }
            if asked == MAX_PER_POLL {
                // The next poll starts at the first one not asked.
                if !capped {
                    self.from = inode;
                    capped = true;
                }
                continue;
            }
            asked += 1;
            if asked == 1 {
                // All asked this time: the next poll starts at the beginning.
                self.from = Inode(0);
            }
            let Ok(dup) = borrow::borrow(process.pid, fd, inode) else {
                continue;
            };
            match ask(&dup) {
                Asked::Tcp(family, cookie, local) => found.push(RawSock {
                    proto: Proto::Tcp,
                    family,
                    state: SockState::Close,
                    local: Endpoint::Inet(local),
                    // A connection in CLOSE has no peer to ask for: the model knows it.
                    remote: Endpoint::Inet(InetAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
                    interface: 0,
                    inode,
                    cookie: Cookie(cookie),
                    netns,
                    uid: rustix::fs::fstat(&dup)
                        .ok()
                        .and_then(|st| crate::model::Uid::new(st.st_uid)),
                    recv_q: 0,
                    send_q: 0,
                    timer: None,
                    tcp_info: None,
                    owner: Owner::Process {
                        process: std::sync::Arc::clone(process),
                        fd,
                    },
                    opts: crate::model::SockOpts::default(),
                }),
                Asked::Other => {
                    self.not_tcp.insert(inode);
                    still_held.insert(inode);
                }
                Asked::Failed => {}
            }
        }
        self.not_tcp.retain(|i| still_held.contains(i));
        found
    }
}

enum Asked {
    Tcp(Family, u64, InetAddr),
    /// Another kind of socket.
    Other,
    /// A question failed: asked again next poll.
    Failed,
}

/// A TCP socket's family, cookie and local address.
fn ask(fd: &impl std::os::fd::AsFd) -> Asked {
    let (Ok(domain), Ok(kind), Ok(protocol)) = (
        sockopt::socket_domain(fd),
        sockopt::socket_type(fd),
        sockopt::socket_protocol(fd),
    ) else {
        return Asked::Failed;
    };
    let family = match domain {
        AddressFamily::INET => Family::Inet,
        AddressFamily::INET6 => Family::Inet6,
        _ => return Asked::Other,
    };
    if kind != SocketType::STREAM || protocol != Some(rustix::net::ipproto::TCP) {
        return Asked::Other;
    }
    tcp_details(fd).map_or(Asked::Failed, |(cookie, local)| {
        Asked::Tcp(family, cookie, local)
    })
}

fn tcp_details(fd: &impl std::os::fd::AsFd) -> Option<(u64, InetAddr)> {
    let cookie = sockopt::socket_cookie(fd).ok()?;
    let local = match rustix::net::getsockname(fd).ok()? {
        a if a.address_family() == AddressFamily::INET => {
            std::net::SocketAddr::V4(a.try_into().ok()?)
        }
        a => std::net::SocketAddr::V6(a.try_into().ok()?),
    };
    Some((cookie, InetAddr::from(local)))
}

fn netns_of(pid: u32) -> NetnsId {
    rustix::fs::stat(format!("/proc/{pid}/ns/net"))
        .ok()
        .and_then(|st| NetnsId::from_ino(st.st_ino))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    fn inode(fd: &impl std::os::fd::AsFd) -> Inode {
        Inode(rustix::fs::fstat(fd).unwrap().st_ino as u32)
    }

    #[test]
    fn finds_a_held_tcp_socket_the_kernel_ended_and_nothing_else() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The peer aborts: this end is reset, out of the tables, and still held here.
        socket2::SockRef::from(&c)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(c);
        let ended = (inode(&s), sockopt::socket_cookie(&s).unwrap());
        let mut procs = ProcessMap::new(None);
        // Nothing listed: every socket this process holds is unlisted.
        procs.resolve(&mut [], &[]);
        // Only what this test made: other processes' sockets (a million on a host under a
        // scale test) are listed, as if dumped.
        let mut others: Vec<RawSock> = procs
            .unlisted()
            .filter(|(_, p, _)| p.pid != std::process::id())
            .map(|(inode, ..)| RawSock {
                inode,
                ..crate::model::table::tests::sock(SockState::Established)
            })
            .collect();
        procs.resolve(&mut others, &[]);
        let mut held = HeldSockets::default();
        let own = netns_of(std::process::id());
        // This process's other tests hold sockets too: enough polls to ask about them all.
        let mut found = Vec::new();
        for _ in 0..procs.unlisted().count() / MAX_PER_POLL + 2 {
            found = held.find(&procs, &[own]);
            if found.iter().any(|f| f.inode == ended.0) && held.not_tcp.contains(&inode(&udp)) {
                break;
            }
        }
        let ours = found
            .iter()
            .find(|f| f.inode == ended.0)
            .expect("the reset socket is found");
        assert_eq!(ours.cookie.0, ended.1);
        assert_eq!((ours.proto, ours.state), (Proto::Tcp, SockState::Close));
        assert_eq!(ours.local.to_string(), s.local_addr().unwrap().to_string());
        assert!(
            matches!(&ours.owner, Owner::Process { process, .. } if process.pid == std::process::id())
        );
        // The UDP socket is no TCP one, and is remembered as such.
        assert!(found.iter().all(|f| f.inode != inode(&udp)));
        assert!(held.not_tcp.contains(&inode(&udp)));
        drop((s, udp, l));
    }
}
