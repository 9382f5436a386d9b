//! Connections whose two ends are both on this host: a client of a local server and the
//! server's socket for it (pgbouncer → postgres, an app → its local redis), and Unix socket
//! pairs. Each end learns the process at the other.
//!
//! Only sockets that can have a local peer are hashed: TCP clients whose remote port is one
//! a local listener serves (in the same namespace), then the server-side sockets on those
//! ports. A busy server with no local clients pays one set lookup per connection.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Endpoint, InetAddr, NetnsId, Process, Proto, RawSock, SockState};

/// The socket at the other end of a connection on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub cookie: u64,
    /// Its process, when one holds it and katop could see it.
    pub process: Option<Arc<Process>>,
}

impl Peer {
    pub fn of(s: &RawSock) -> Peer {
        Peer {
            cookie: s.cookie.0,
            process: match &s.owner {
                crate::model::Owner::Process { process, .. } => Some(Arc::clone(process)),
                _ => None,
            },
        }
    }
}

/// No peer, in [`pair`]'s answer.
pub const NONE: u32 = u32::MAX;

/// An address as one number: IPv4 (and v4-mapped IPv6, as a dual-stack server sees an IPv4
/// client) packed with the port; IPv6 hashed apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum End {
    V4(u64),
    V6(u128, u16),
}

fn end(a: InetAddr) -> End {
    match a.ip().to_canonical() {
        std::net::IpAddr::V4(v4) => End::V4(u64::from(u32::from(v4)) << 16 | u64::from(a.port())),
        std::net::IpAddr::V6(v6) => End::V6(u128::from(v6), a.port()),
    }
}

/// `(namespace, this end, other end)`.
type Ends = (NetnsId, End, End);

fn ends(s: &RawSock) -> Option<Ends> {
    match (&s.local, &s.remote) {
        (Endpoint::Inet(l), Endpoint::Inet(r)) if r.port() != 0 => {
            Some((s.netns, end(*l), end(*r)))
        }
        _ => None,
    }
}

fn hash(ends: &Ends) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(ends)
}

/// A TCP socket with both ends set: not listening, not closed, not `TIME_WAIT` (which no
/// process holds).
fn connected_tcp(s: &RawSock) -> bool {
    s.proto == Proto::Tcp
        && !matches!(
            s.state,
            SockState::Listen | SockState::Close | SockState::TimeWait
        )
}

/// Each socket's local peer, as an index into `socks` ([`NONE`] for none); empty when no
/// socket has one (no memory spent on a host without local connections). `known` holds the
/// pairs carried from the last poll (or is empty): only the sockets it leaves unpaired are
/// looked at, so a poll pays for the connections that are new, not for all of them.
pub fn pair(socks: &[RawSock], known: Vec<u32>) -> Vec<u32> {
    let mut out = known;
    // A TCP connection keeps its ends for life; a Unix datagram socket can connect elsewhere
    // under the same cookie, so a carried Unix link holds only while it names that peer still.
    for (i, p) in out.iter_mut().enumerate() {
        if *p != NONE && socks[i].proto == Proto::Unix {
            let names = socks[i].remote == Endpoint::UnixPeer(Some(socks[*p as usize].inode));
            if !names {
                *p = NONE;
            }
        }
    }
    let paired = |out: &[u32], i: usize| out.get(i).is_some_and(|&p| p != NONE);
    let link = |out: &mut Vec<u32>, a: usize, b: usize| {
        if out.is_empty() {
            out.resize(socks.len(), NONE);
        }
        out[a] = b as u32;
        out[b] = a as u32;
    };
    let listening: FxHashSet<(NetnsId, u16)> = socks
        .iter()
        .filter(|s| s.proto == Proto::Tcp && s.state == SockState::Listen)
        .filter_map(|s| Some((s.netns, s.local.port()?)))
        .collect();
    if !listening.is_empty() {
        // Clients of a local listener, by the ends their server-side socket has. (A listener
        // here on the port it connects to; the exact match of both ends below tells a local
        // server from a remote one on the same port.)
        // Keyed by a hash of the ends (8 bytes, not 56: tens of thousands of local clients
        // are hashed every poll on a busy host); a hit is checked against the real ends.
        let mut wanted: FxHashMap<u64, u32> = FxHashMap::default();
        let mut ports: FxHashSet<(NetnsId, u16)> = FxHashSet::default();
        for (i, s) in socks.iter().enumerate() {
            let Some(remote) = s.remote.port() else {
                continue;
            };
            if paired(&out, i) || !listening.contains(&(s.netns, remote)) || !connected_tcp(s) {
                continue;
            }
            if let Some((ns, local, remote_end)) = ends(s) {
                wanted.insert(hash(&(ns, remote_end, local)), i as u32);
                ports.insert((ns, remote));
            }
        }
        if !wanted.is_empty() {
            for (i, s) in socks.iter().enumerate() {
                if paired(&out, i)
                    || !s
                        .local
                        .port()
                        .is_some_and(|p| ports.contains(&(s.netns, p)))
                    || !connected_tcp(s)
                {
                    continue;
                }
                let Some(these) = ends(s) else {
                    continue;
                };
                if let Some(&c) = wanted.get(&hash(&these)) {
                    let (ns, local, remote) = these;
                    let theirs = ends(&socks[c as usize]);
                    if c as usize != i && theirs == Some((ns, remote, local)) {
                        link(&mut out, i, c as usize);
                    }
                }
            }
        }
    }
    // Unix sockets name their peer's inode. A stream pair names each other; a datagram client
    // (a logger on /dev/log) names its server, which names no one: the link is one-way, so the
    // server is never said to have one client of many as its peer.
    if socks
        .iter()
        .enumerate()
        .any(|(i, s)| !paired(&out, i) && matches!(s.remote, Endpoint::UnixPeer(Some(_))))
    {
        let by_inode: FxHashMap<(NetnsId, u32), usize> = socks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.proto == Proto::Unix)
            .map(|(i, s)| ((s.netns, s.inode.0), i))
            .collect();
        for (i, s) in socks.iter().enumerate() {
            if paired(&out, i) {
                continue;
            }
            if let Endpoint::UnixPeer(Some(peer)) = s.remote {
                if let Some(&j) = by_inode.get(&(s.netns, peer.0)).filter(|&&j| j != i) {
                    if out.is_empty() {
                        out.resize(socks.len(), NONE);
                    }
                    out[i] = j as u32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::table::tests::sock;
    use crate::model::{Cookie, Inode};

    fn by_cookie(socks: &[RawSock], peers: &[u32]) -> FxHashMap<u64, Peer> {
        peers
            .iter()
            .enumerate()
            .filter(|(_, &p)| p != NONE)
            .map(|(i, &p)| (socks[i].cookie.0, Peer::of(&socks[p as usize])))
            .collect()
    }

    fn tcp(cookie: u64, state: SockState, local: &str, remote: &str, pid: u32) -> RawSock {
        let mut s = sock(state);
        s.cookie = Cookie(cookie);
        s.local = Endpoint::Inet(local.parse().unwrap());
        s.remote = Endpoint::Inet(remote.parse().unwrap());
        if let crate::model::Owner::Process { process, .. } = &mut s.owner {
            let mut p = (**process).clone();
            p.pid = pid;
            *process = Arc::new(p);
        }
        s
    }

    #[test]
    fn a_local_client_and_its_server_backend_know_each_other() {
        let socks = vec![
            tcp(1, SockState::Listen, "0.0.0.0:5432", "0.0.0.0:0", 10),
            // pgbouncer → postgres over loopback, and the backend's socket for it.
            tcp(
                2,
                SockState::Established,
                "127.0.0.1:40000",
                "127.0.0.1:5432",
                20,
            ),
            tcp(
                3,
                SockState::Established,
                "127.0.0.1:5432",
                "127.0.0.1:40000",
                30,
            ),
            // A dual-stack server sees an IPv4 client as v4-mapped.
            tcp(
                4,
                SockState::Established,
                "127.0.0.1:40001",
                "127.0.0.1:5432",
                21,
            ),
            tcp(
                5,
                SockState::Established,
                "[::ffff:127.0.0.1]:5432",
                "[::ffff:127.0.0.1]:40001",
                31,
            ),
            // A remote client of the same server: no peer here.
            tcp(
                6,
                SockState::Established,
                "10.0.0.5:5432",
                "10.0.0.9:50000",
                32,
            ),
            // An outgoing connection to a remote server.
            tcp(
                7,
                SockState::Established,
                "10.0.0.5:41000",
                "10.0.0.8:443",
                22,
            ),
        ];
        let p = by_cookie(&socks, &pair(&socks, Vec::new()));
        let pid = |c: u64| p.get(&c).and_then(|p| p.process.as_ref()).map(|p| p.pid);
        assert_eq!(p.get(&2).map(|p| p.cookie), Some(3));
        assert_eq!(pid(2), Some(30));
        assert_eq!(pid(3), Some(20));
        assert_eq!(pid(4), Some(31));
        assert_eq!(pid(5), Some(21));
        assert!(!p.contains_key(&6) && !p.contains_key(&7) && !p.contains_key(&1));
        // Another namespace's socket with the same addresses is not the peer.
        let mut other = socks[2].clone();
        other.netns = NetnsId(99);
        let q = pair(&[socks[0].clone(), socks[1].clone(), other], Vec::new());
        assert!(q.is_empty(), "{q:?}");
        // Nothing local: nothing allocated.
        assert!(pair(&socks[5..], Vec::new()).is_empty());
        // Pairs carried from the last poll stand; only the rest are looked for.
        let mut known = vec![NONE; socks.len()];
        (known[1], known[2]) = (2, 1);
        let again = pair(&socks, known);
        assert_eq!((again[1], again[2], again[3], again[4]), (2, 1, 4, 3));
    }

    #[test]
    fn unix_pairs_by_inode() {
        let mut a = sock(SockState::Established);
        a.proto = Proto::Unix;
        a.cookie = Cookie(1);
        a.inode = Inode(100);
        a.remote = Endpoint::UnixPeer(Some(Inode(200)));
        let mut b = a.clone();
        b.cookie = Cookie(2);
        b.inode = Inode(200);
        b.remote = Endpoint::UnixPeer(Some(Inode(100)));
        let socks = [a, b];
        let p = by_cookie(&socks, &pair(&socks, Vec::new()));
        assert_eq!(p.get(&1).map(|p| p.cookie), Some(2));
        assert_eq!(p.get(&2).map(|p| p.cookie), Some(1));
    }

    /// Loggers on /dev/log: each names the server, the server names no one.
    #[test]
    fn a_unix_datagram_server_is_no_clients_peer() {
        let mut server = sock(SockState::Close);
        server.proto = Proto::Unix;
        server.cookie = Cookie(5);
        server.inode = Inode(500);
        server.remote = Endpoint::UnixPeer(None);
        let client = |cookie: u64| {
            let mut c = server.clone();
            c.cookie = Cookie(cookie);
            c.inode = Inode(cookie as u32 * 100);
            c.remote = Endpoint::UnixPeer(Some(Inode(500)));
            c
        };
        // Clients before and after the server in dump order.
        let socks = [client(1), client(2), server.clone(), client(7)];
        let links = pair(&socks, Vec::new());
        let p = by_cookie(&socks, &links);
        for c in [1, 2, 7] {
            assert_eq!(p.get(&c).map(|p| p.cookie), Some(5), "client {c}");
        }
        assert_eq!(p.get(&5), None);
        // Client 2 connects elsewhere under the same cookie: its carried link is dropped.
        let mut moved = socks.clone();
        moved[1].remote = Endpoint::UnixPeer(Some(Inode(100)));
        let p = by_cookie(&moved, &pair(&moved, links));
        assert_eq!(p.get(&2).map(|p| p.cookie), Some(1));
    }
}
