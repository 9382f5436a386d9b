//! Borrowing a socket from the process that holds it: `pidfd_open` + `pidfd_getfd` give katop
//! its own duplicate of the owner's fd (the owner's fd is untouched; closing the duplicate
//! does not close the socket). Checked against the socket's inode, so an fd number that now
//! holds another file is never acted on.
//!
//! While katop holds a duplicate, its own fd table lists the socket too: the sockets it holds
//! borrowed are registered ([`is_borrowed`]), so that reading its own `/proc/self/fd` never
//! makes katop the owner of another process's socket.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use rustc_hash::FxHashMap;

use rustix::io::Errno;
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};

use crate::model::Inode;

/// Why an owner's socket could not be borrowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BorrowError {
    #[error("process {pid} has exited")]
    ProcessGone { pid: u32 },
    #[error("fd {fd} of process {pid} is closed")]
    FdClosed { pid: u32, fd: u32 },
    #[error("fd {fd} of process {pid} is no longer socket inode {inode}")]
    Replaced { pid: u32, fd: u32, inode: u32 },
    #[error(
        "no ptrace rights over process {pid} (pidfd_getfd needs them: run as root, grant \
         CAP_SYS_PTRACE, or run as the owner's user with kernel.yama.ptrace_scope=0)"
    )]
    NotPermitted { pid: u32 },
    #[error("this kernel has no pidfd_getfd (Linux 5.6+ needed)")]
    Unsupported,
    #[error("cannot duplicate fd {fd} of process {pid}: {errno}")]
    Other { pid: u32, fd: u32, errno: Errno },
}

/// Socket inodes katop holds borrowed now, with how many duplicates of each.
static BORROWED: Mutex<Option<FxHashMap<u32, u32>>> = Mutex::new(None);

fn count(inode: Inode, up: bool) {
    let Ok(mut map) = BORROWED.lock() else { return };
    let map = map.get_or_insert_with(FxHashMap::default);
    let n = map.entry(inode.0).or_insert(0);
    if up {
        *n += 1;
    } else {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&inode.0);
        }
    }
}

/// Whether katop holds socket `inode` borrowed now (so an fd of its own for it is not its).
pub fn is_borrowed(inode: Inode) -> bool {
    BORROWED
        .lock()
        .is_ok_and(|m| m.as_ref().is_some_and(|m| m.contains_key(&inode.0)))
}

/// A borrowed socket: katop's duplicate, registered until it is closed (on drop).
#[derive(Debug)]
pub struct Borrowed {
    fd: Option<OwnedFd>,
    inode: Inode,
}

impl AsFd for Borrowed {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("held until dropped").as_fd()
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        // Closed first, then no longer registered: never listed unregistered.
        drop(self.fd.take());
        count(self.inode, false);
    }
}

/// A duplicate of fd `fd` of process `pid`, which must still be socket `inode`.
pub fn borrow(pid: u32, fd: u32, inode: Inode) -> Result<Borrowed, BorrowError> {
    borrow_from(&open_process(pid)?, pid, fd, inode)
}

/// A pidfd for `pid`, to borrow several of its sockets.
pub fn open_process(pid: u32) -> Result<OwnedFd, BorrowError> {
    let target = Pid::from_raw(pid as i32).ok_or(BorrowError::ProcessGone { pid })?;
    pidfd_open(target, PidfdFlags::empty()).map_err(|e| match e {
        Errno::SRCH => BorrowError::ProcessGone { pid },
        Errno::NOSYS => BorrowError::Unsupported,
        errno => BorrowError::Other { pid, fd: 0, errno },
    })
}

/// Like [`borrow`], through a pidfd from [`open_process`].
pub fn borrow_from(
    pidfd: &OwnedFd,
    pid: u32,
    fd: u32,
    inode: Inode,
) -> Result<Borrowed, BorrowError> {
    let other = |errno| BorrowError::Other { pid, fd, errno };
    // Registered before it exists: no moment lists it in katop's fd table unregistered.
    count(inode, true);
    let guard = Borrowed { fd: None, inode };
    let dup = pidfd_getfd(pidfd, fd as i32, PidfdGetfdFlags::empty()).map_err(|e| match e {
        Errno::BADF => BorrowError::FdClosed { pid, fd },
        Errno::PERM | Errno::ACCESS => BorrowError::NotPermitted { pid },
        Errno::SRCH => BorrowError::ProcessGone { pid },
        Errno::NOSYS => BorrowError::Unsupported,
        e => other(e),
    })?;
    let borrowed = Borrowed {
        fd: Some(dup),
        ..guard
    };
    let st = rustix::fs::fstat(&borrowed).map_err(other)?;
    if st.st_ino != u64::from(inode.0) {
        return Err(BorrowError::Replaced {
            pid,
            fd,
            inode: inode.0,
        });
    }
    Ok(borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn borrows_own_socket_and_checks_the_inode() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd() as u32;
        let ino = rustix::fs::fstat(&listener).unwrap().st_ino as u32;
        let pid = std::process::id();
        let dup = borrow(pid, fd, Inode(ino)).unwrap();
        assert_eq!(rustix::fs::fstat(&dup).unwrap().st_ino, u64::from(ino));
        assert_eq!(
            borrow(pid, fd, Inode(ino.wrapping_add(1))).err(),
            Some(BorrowError::Replaced {
                pid,
                fd,
                inode: ino.wrapping_add(1)
            })
        );
        // An fd number nobody holds.
        assert_eq!(
            borrow(pid, 999_999, Inode(ino)).err(),
            Some(BorrowError::FdClosed { pid, fd: 999_999 })
        );
    }
}
