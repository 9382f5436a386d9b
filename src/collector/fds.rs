//! katop's file descriptors, shared out. Any local user can make thousands of network
//! namespaces, and each one katop holds open costs descriptors: at the common soft limit of
//! 1,024 a few hundred would leave none for `/proc` or the exporter's clients. So the soft
//! limit is raised to the hard one at start, and what it allows is divided once: a reserve
//! for everything else (stdio, netlink, the `/proc` scan, borrowed sockets, files), the
//! exporter's connections, and the namespaces katop keeps open; namespaces beyond their share
//! are visited (entered, read and let go) instead.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors kept for everything but namespaces and exporter clients: stdio, the `sock_diag`
/// socket, the `/proc` scan's threads, borrowed sockets, the log, the textfile, a visit.
const RESERVE: u64 = 128;

/// Namespaces kept open at most, whatever the limit: past this many, visiting them costs less
/// than the kernel memory of keeping them all open.
const NAMESPACES_MAX: usize = 4096;

/// Descriptors one namespace held open costs: its `sock_diag` socket and two `sockstat` files.
pub const PER_NAMESPACE: u64 = 3;

/// Raises the soft limit on open files to the hard limit; returns the soft limit now.
pub fn raise() -> u64 {
    let mut l = getrlimit(Resource::Nofile);
    if let Some(hard) = l.maximum {
        if l.current.is_some_and(|soft| soft < hard) {
            l.current = Some(hard);
            let _ = setrlimit(Resource::Nofile, l);
        }
    }
    limit()
}

/// The soft limit on open files (a large number when unlimited).
pub fn limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}

/// How the descriptors allowed are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub limit: u64,
    /// Exporter connections served at once.
    pub connections: usize,
    /// Namespaces kept open between polls.
    pub namespaces: usize,
}

impl Shares {
    /// The shares of `limit`: a sixteenth for the exporter's clients (16 to 512), an eighth as
    /// a margin, the reserve, and the rest for namespaces.
    pub fn of(limit: u64) -> Shares {
        let connections = (limit / 16).clamp(16, 512);
        let rest = limit
            .saturating_sub(RESERVE)
            .saturating_sub(connections)
            .saturating_sub(limit / 8);
        Shares {
            limit,
            connections: connections as usize,
            namespaces: ((rest / PER_NAMESPACE) as usize).min(NAMESPACES_MAX),
        }
    }

    /// The shares of the limit now.
    pub fn now() -> Shares {
        Shares::of(limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_soft_limit_keeps_room_for_proc_and_clients() {
        let s = Shares::of(1024);
        assert_eq!(s.connections, 64);
        // 1024 - 128 - 64 - 128 = 704 descriptors: 234 namespaces kept open.
        assert_eq!(s.namespaces, 234);
        let held = s.namespaces as u64 * PER_NAMESPACE + s.connections as u64;
        assert!(held + RESERVE < 1024);
        // A tiny limit holds no namespace open, and still serves a few clients.
        assert_eq!(Shares::of(64).namespaces, 0);
        assert_eq!(Shares::of(64).connections, 16);
        assert_eq!(Shares::of(524_288).connections, 512);
        assert_eq!(Shares::of(524_288).namespaces, NAMESPACES_MAX);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let soft = raise();
        assert_eq!(
            Some(soft),
            getrlimit(Resource::Nofile).maximum.or(Some(soft))
        );
    }
}
