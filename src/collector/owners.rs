//! Socket inode → its first holder (pid and fd) and the last poll that listed the socket, as
//! the last scan found them: 16 bytes a socket in one vector, with a place index beside it (5
//! bytes a slot). A map of inode → (process, fd, poll) took 25 bytes a slot: 52 MB at 1M
//! sockets, where this takes 27.

use crate::model::place_index::{PlaceIndex, Slot};
use crate::model::Inode;

/// One socket's first holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub inode: Inode,
    pub pid: u32,
    pub fd: u32,
    /// The last poll that listed the socket (`ProcessMap::polls`).
    pub listed: u32,
}

#[derive(Debug, Default)]
pub(super) struct Owners {
    held: Vec<Held>,
    index: PlaceIndex,
}

impl Owners {
    fn key_at(held: &[Held]) -> impl Fn(u32) -> Option<u64> + '_ {
        |p| held.get(p as usize).map(|h| u64::from(h.inode.0))
    }

    pub(super) fn get(&self, inode: Inode) -> Option<&Held> {
        let p = self
            .index
            .get(u64::from(inode.0), Self::key_at(&self.held))?;
        self.held.get(p as usize)
    }

    pub(super) fn get_mut(&mut self, inode: Inode) -> Option<&mut Held> {
        let p = self
            .index
            .get(u64::from(inode.0), Self::key_at(&self.held))?;
        self.held.get_mut(p as usize)
    }

    pub(super) fn contains(&self, inode: Inode) -> bool {
        self.get(inode).is_some()
    }

    /// The holder of `inode` to change, if it has one; else `first` becomes it.
    pub(super) fn holder_or(&mut self, first: Held) -> Option<&mut Held> {
        let place = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
        self.held.push(first);
        let (held, index) = (&mut self.held, &mut self.index);
        match index.entry(u64::from(first.inode.0), place, Self::key_at(held)) {
            Slot::Made => None,
            Slot::Found(&mut p) => {
                held.pop();
                held.get_mut(p as usize)
            }
        }
    }

    /// Forgets every holder, keeping the room (a scan finds them all again).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.index.clear();
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Held> + '_ {
        self.held.iter()
    }

    /// Gives back room after a spike.
    pub(super) fn shrink(&mut self) {
        if crate::collector::sparse(self.held.capacity(), self.held.len()) {
            self.held.shrink_to(2 * self.held.len());
        }
        self.index.shrink(Self::key_at(&self.held));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_holder_an_inode_and_finds_it_again() {
        let held = |inode: u32, pid: u32| Held {
            inode: Inode(inode),
            pid,
            fd: inode % 1000,
            listed: 0,
        };
        let mut owners = Owners::default();
        for i in 0..50_000 {
            assert!(owners.holder_or(held(i * 3, 10)).is_none());
        }
        // A second holder of one inode finds the first and is not added.
        let first = owners.holder_or(held(300, 20)).copied();
        assert_eq!(first, Some(held(300, 10)));
        assert_eq!(owners.iter().count(), 50_000);
        owners.get_mut(Inode(300)).unwrap().pid = 20;
        assert_eq!(owners.get(Inode(300)).map(|h| h.pid), Some(20));
        assert!(owners.contains(Inode(149_997)));
        assert!(!owners.contains(Inode(301)));
        owners.clear();
        assert!(!owners.contains(Inode(300)));
        assert!(owners.holder_or(held(300, 30)).is_none());
        assert_eq!(owners.iter().count(), 1);
        owners.shrink();
        assert_eq!(owners.get(Inode(300)).map(|h| h.pid), Some(30));
    }
}
