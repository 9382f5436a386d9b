//! Reaching exactly the chosen socket: checks shared by every action.

use std::collections::HashMap;

use super::scope::Scope;
use super::target::{Outcome, Target};
use crate::collector::borrow;
use crate::collector::sock_diag::{DiagSocket, InetSockId};
use crate::model::{NetnsId, RawSock};

/// The target's kernel id, if katop may act on it (its guard, and whose it is for `scope`).
pub fn id(t: &Target, scope: &Scope) -> Result<InetSockId, Outcome> {
    if let Some(why) = t.refusal(scope) {
        return Err(Outcome::Refused(why));
    }
    t.id.ok_or_else(|| {
        Outcome::Refused("a Unix socket cannot be acted on (the kernel offers no way)".into())
    })
}

/// `sock_diag` sockets by network namespace: a socket is destroyed or looked up through one
/// created inside its own namespace. katop's own is opened at once, others when first needed.
pub struct Diags {
    map: HashMap<NetnsId, DiagSocket>,
}

impl Diags {
    pub fn new() -> Result<Self, crate::error::CollectError> {
        let own = crate::collector::current_netns();
        Ok(Diags {
            map: HashMap::from([(own, DiagSocket::open()?)]),
        })
    }

    /// The socket for namespace `netns`: already gone when the namespace is (its sockets went
    /// with it), refused when it cannot be entered (nothing was done).
    pub fn get(&mut self, netns: NetnsId) -> Result<&mut DiagSocket, Outcome> {
        match self.map.entry(netns) {
            std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let diag = crate::collector::netns::diag_in(netns).map_err(|e| match e {
                    crate::error::CollectError::NetnsGone(_) => Outcome::AlreadyGone,
                    e => Outcome::Refused(format!("cannot reach the socket's namespace: {e}")),
                })?;
                Ok(v.insert(diag))
            }
        }
    }
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
) -> Result<crate::collector::borrow::Borrowed, Outcome> {
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
