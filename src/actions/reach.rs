//! Reaching exactly the chosen socket: checks shared by every action.

use std::os::fd::OwnedFd;

use super::scope::Scope;
use super::target::{Outcome, Target};
use crate::collector::borrow;
use crate::collector::sock_diag::{DiagSocket, InetSockId};
use crate::model::{NetnsId, RawSock};

/// The target's kernel id, if katop may act on it (its guard and whose it is, for `scope`)
/// and can from namespace `netns`.
pub fn id(t: &Target, netns: NetnsId, scope: &Scope) -> Result<InetSockId, Outcome> {
    if let Some(why) = t.refusal(scope) {
        return Err(Outcome::Refused(why));
    }
    let Some(id) = t.id else {
        return Err(Outcome::Refused(
            "a Unix socket cannot be acted on (the kernel offers no way)".into(),
        ));
    };
    if t.netns != netns {
        return Err(Outcome::Refused(format!(
            "the socket is in network namespace {}, katop runs in {}",
            t.netns.0, netns.0
        )));
    }
    Ok(id)
}

/// The socket as the kernel has it now, if it is still the chosen one (same id and cookie).
pub fn lookup(diag: &mut DiagSocket, id: &InetSockId, netns: NetnsId) -> Result<RawSock, Outcome> {
    match diag.lookup(id, netns) {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(Outcome::AlreadyGone),
        Err(e) => Err(Outcome::Failed(e.to_string())),
    }
}

/// A duplicate of the owner's fd for the chosen socket, after checking it still exists and
/// the fd still refers to its inode.
pub fn owner_fd(
    diag: &mut DiagSocket,
    t: &Target,
    id: &InetSockId,
    netns: NetnsId,
) -> Result<OwnedFd, Outcome> {
    lookup(diag, id, netns)?;
    let Some(owner) = &t.owner else {
        return Err(Outcome::Refused(
            "this needs the owning process's fd, and no process is known to hold this socket \
             (run as root to see every process's fds)"
                .into(),
        ));
    };
    borrow::borrow(owner.pid, owner.fd, t.inode).map_err(|e| Outcome::Refused(e.to_string()))
}
