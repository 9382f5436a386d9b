//! A retired table: what each socket of the last poll leaves for the next, when the caller does
//! not look at the table between polls (the exporter, the recorder, `--jsonl`). The next dump
//! then fills the buffer the last poll's sockets were in: one poll's sockets in memory, not two.

use std::net::{IpAddr, Ipv6Addr};

use super::{Carry, ConnTable};
use crate::model::ends::join;
use crate::model::ends::trace::Tuple;
use crate::model::{
    Cookie, Endpoint, Family, InetAddr, Inode, Owner, Proto, RawSock, SockOpts, SockState, Timer,
};

/// What a retired table keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Each socket's history only (first sight, state, byte counters): enough for the next
    /// poll's values and for counting ends by cause.
    History,
    /// Also each connection's two ends and owner, so its end is told with them (the events).
    Ends,
}

/// What is kept of each socket, by its place in the last poll (the table keeps its cookie
/// index).
#[derive(Debug, Clone, Default)]
pub(super) struct Retired {
    pub(super) carry: Vec<Carry>,
    /// Each socket's cookie: the index reads them back (it keeps places only).
    cookies: Vec<u64>,
    /// Each connection's ends and owner ([`Keep::Ends`]); empty otherwise.
    epitaphs: Vec<Option<Epitaph>>,
}

/// What a connection's end is told with, beside its [`Carry`]: 96 bytes where its `RawSock`
/// takes 184. All but its `tcp_info`, whose byte counters the [`Carry`] keeps: a filter on
/// its end sees what the last poll saw, and an unknown for the rest, never a made-up value.
#[derive(Debug, Clone)]
struct Epitaph {
    tuple: Tuple,
    family: Family,
    inode: Inode,
    uid: Option<crate::model::Uid>,
    owner: Owner,
    opts: SockOpts,
    timer: Option<Timer>,
    recv_q: u32,
    send_q: u32,
}

impl Epitaph {
    fn of(s: &RawSock) -> Option<Epitaph> {
        if !(join::is_connection(s) || crate::model::stale::is_dead(s)) {
            return None;
        }
        Some(Epitaph {
            tuple: join::tuple_of(s)?,
            family: s.family,
            inode: s.inode,
            uid: s.uid,
            owner: s.owner.clone(),
            opts: s.opts,
            timer: s.timer,
            recv_q: s.recv_q,
            send_q: s.send_q,
        })
    }

    /// The socket as far as kept: all but its `tcp_info` (the end's byte counters come from
    /// its [`Carry`]).
    fn sock(&self, c: &Carry, cookie: u64) -> RawSock {
        let end = |(ip, port): (Ipv6Addr, u16)| {
            // An end not known (a dead socket's forgotten peer) is `0.0.0.0:0` in either family.
            let ip = match (self.family, ip.to_ipv4_mapped()) {
                (Family::Inet, Some(v4)) => IpAddr::V4(v4),
                (_, Some(v4)) if v4.is_unspecified() && port == 0 => IpAddr::V4(v4),
                _ => IpAddr::V6(ip),
            };
            Endpoint::Inet(InetAddr::new(ip, port))
        };
        RawSock {
            proto: Proto::Tcp,
            family: self.family,
            state: c.state,
            local: end(self.tuple.local),
            remote: end(self.tuple.remote),
            interface: 0,
            inode: self.inode,
            cookie: Cookie(cookie),
            netns: c.netns,
            uid: self.uid,
            recv_q: self.recv_q,
            send_q: self.send_q,
            timer: self.timer,
            tcp_info: None,
            owner: self.owner.clone(),
            opts: self.opts,
        }
    }
}

impl Retired {
    /// The socket at `i` as kept, when its ends were.
    pub(super) fn sock(&self, i: usize, cookie: u64) -> Option<RawSock> {
        let e = self.epitaphs.get(i)?.as_ref()?;
        Some(e.sock(&self.carry[i], cookie))
    }
}

/// The last poll as `apply` sees it: whole, or retired.
#[derive(Clone, Copy)]
pub(super) enum Last<'a> {
    Whole(&'a [RawSock], &'a [crate::model::entry::Derived]),
    Retired(&'a Retired),
}

impl<'a> Last<'a> {
    /// From the table's fields, for a caller that borrows another of them mutably meanwhile.
    pub(super) fn of(
        retired: Option<&'a Retired>,
        socks: &'a [RawSock],
        derived: &'a [crate::model::entry::Derived],
    ) -> Self {
        match retired {
            Some(r) => Last::Retired(r),
            None => Last::Whole(socks, derived),
        }
    }

    pub(super) fn len(self) -> usize {
        match self {
            Last::Whole(socks, _) => socks.len(),
            Last::Retired(r) => r.carry.len(),
        }
    }

    /// The cookie of the socket at `i`, if there is one.
    pub(super) fn cookie(self, i: usize) -> Option<u64> {
        match self {
            Last::Whole(socks, _) => socks.get(i).map(|s| s.cookie.0),
            Last::Retired(r) => r.cookies.get(i).copied(),
        }
    }

    /// The namespace of the socket at `i` (without making its whole [`Carry`]).
    pub(super) fn netns(self, i: usize) -> crate::model::NetnsId {
        match self {
            Last::Whole(socks, _) => socks[i].netns,
            Last::Retired(r) => r.carry[i].netns,
        }
    }

    pub(super) fn carry(self, i: usize) -> Carry {
        match self {
            Last::Whole(socks, derived) => Carry::of(&socks[i], &derived[i]),
            Last::Retired(r) => r.carry[i],
        }
    }

    /// The socket at `i` as the last poll saw it, as far as kept.
    pub(super) fn sock(self, i: usize, cookie: u64) -> Option<RawSock> {
        match self {
            Last::Whole(socks, _) => Some(socks[i].clone()),
            Last::Retired(r) => r.sock(i, cookie),
        }
    }

    /// Whether the socket at `i` was a connection (or a dead one).
    pub(super) fn was_connection(self, i: usize) -> bool {
        match self {
            Last::Whole(socks, _) => {
                join::is_connection(&socks[i]) || crate::model::stale::is_dead(&socks[i])
            }
            Last::Retired(r) => {
                let c = &r.carry[i];
                c.last.is_some() || c.state == SockState::Close
            }
        }
    }
}

impl ConnTable {
    /// Forgets the sockets but what the next `apply` carries over ([`Keep`]), and hands back
    /// their buffer, emptied, for the next poll to fill: for a caller that does not look at
    /// the table between polls. The table is empty until that `apply`.
    pub fn retire(&mut self, keep: Keep) -> Vec<RawSock> {
        let mut socks = std::mem::take(&mut self.socks);
        let derived = std::mem::take(&mut self.derived);
        let retired = match self.retired.take() {
            // Retired twice without a poll between: nothing new to keep.
            Some(r) if socks.is_empty() => r,
            _ => Retired {
                carry: socks
                    .iter()
                    .zip(&derived)
                    .map(|(s, d)| Carry::of(s, d))
                    .collect(),
                cookies: socks.iter().map(|s| s.cookie.0).collect(),
                epitaphs: match keep {
                    Keep::Ends => socks.iter().map(Epitaph::of).collect(),
                    Keep::History => Vec::new(),
                },
            },
        };
        self.retired = Some(retired);
        self.peer_of = Vec::new();
        self.opts_changed.clear();
        socks.clear();
        socks
    }

    /// The last poll, whole or retired.
    pub(super) fn last(&self) -> Last<'_> {
        Last::of(self.retired.as_ref(), &self.socks, &self.derived)
    }
}

#[cfg(test)]
mod size {
    /// Kept per socket between polls in the recorder: with its [`super::Carry`], a budget.
    #[test]
    fn an_epitaph_stays_96_bytes() {
        assert_eq!(std::mem::size_of::<Option<super::Epitaph>>(), 96);
        assert_eq!(std::mem::size_of::<super::Carry>(), 40);
    }
}
