//! Socket inode → its first holder (pid and fd) and the last poll that listed the socket, as
//! the last scan found them: 16 bytes a socket in a [`KeyedVec`] (with its index, 5 bytes a
//! slot). A map of inode → (process, fd, poll) took 25 bytes a slot: 52 MB at 1M sockets,
//! where this takes 27.

use crate::model::place_index::{Keyed, KeyedVec};
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

impl Keyed for Held {
    fn key(&self) -> u64 {
        u64::from(self.inode.0)
    }
}

pub(super) type Owners = KeyedVec<Held>;
