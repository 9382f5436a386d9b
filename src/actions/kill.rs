//! Killing exactly one socket: `SOCK_DESTROY` over `sock_diag` by id and cookie, or, where the
//! kernel lacks it, `shutdown(2)` on a duplicate of the owner's fd. Each kill is confirmed by
//! asking the kernel about that socket again.

use std::time::SystemTime;

use rustix::io::Errno;

use super::reach::{self, Diags};
use super::scope::Scope;
use super::target::{Action, Outcome, Report, Target};
use crate::collector::sock_diag::{DiagSocket, InetSockId};
use crate::error::CollectError;
use crate::model::{NetnsId, SockState};

/// How a kill was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `SOCK_DESTROY` over `sock_diag` (`ss -K`): TCP sends an RST, the owner reads
    /// `ECONNABORTED`.
    SockDestroy,
    /// `shutdown(SHUT_RDWR)` on a duplicate of the owner's fd: TCP sends a FIN, the owner
    /// reads EOF.
    Shutdown,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::SockDestroy => "sock-destroy",
            Mechanism::Shutdown => "shutdown",
        }
    }
}

/// Which mechanism to use (`katop kill --mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Method {
    /// `SOCK_DESTROY`; `shutdown` on the owner's fd only where the kernel lacks it.
    #[default]
    Auto,
    /// `SOCK_DESTROY` only.
    SockDestroy,
    /// `shutdown(2)` on a duplicate of the owner's fd (`pidfd_getfd`), only.
    Shutdown,
}

/// What the operator must do to be allowed to use `SOCK_DESTROY`.
pub const NEED_NET_ADMIN: &str = "SOCK_DESTROY needs CAP_NET_ADMIN: run katop as root, or \
     grant it with `sudo setcap cap_net_admin+ep $(command -v katop)`";

/// Kills sockets in any network namespace, through a `sock_diag` socket created inside each.
pub struct Killer {
    diags: Diags,
    method: Method,
    scope: Scope,
}

impl Killer {
    pub fn new(method: Method) -> Result<Self, CollectError> {
        Ok(Killer {
            diags: Diags::new()?,
            method,
            scope: Scope::current(),
        })
    }

    /// Kills each target in turn; one report per target, in order.
    pub fn kill_all(&mut self, targets: &[Target]) -> Vec<Report> {
        targets
            .iter()
            .map(|t| Report {
                outcome: self.kill(t),
                target: t.clone(),
                action: Action::Kill,
                at: SystemTime::now(),
            })
            .collect()
    }

    pub fn kill(&mut self, t: &Target) -> Outcome {
        let id = match reach::id(t, &self.scope) {
            Ok(id) => id,
            Err(o) => return o,
        };
        let method = self.method;
        let diag = match self.diags.get(t.netns) {
            Ok(d) => d,
            Err(o) => return o,
        };
        if method == Method::Shutdown {
            return shutdown(diag, t, &id);
        }
        match diag.destroy(&id) {
            Ok(Ok(())) => confirm(diag, &id, t.netns, Mechanism::SockDestroy),
            Ok(Err(Errno::NOENT | Errno::STALE)) => Outcome::AlreadyGone,
            Ok(Err(Errno::PERM | Errno::ACCESS)) => Outcome::Refused(NEED_NET_ADMIN.into()),
            Ok(Err(Errno::OPNOTSUPP)) if method == Method::Auto => shutdown(diag, t, &id),
            Ok(Err(Errno::OPNOTSUPP)) => Outcome::Refused(
                "this kernel has no SOCK_DESTROY (built without CONFIG_INET_DIAG_DESTROY); \
                 --mechanism shutdown closes it through its owner's fd instead"
                    .into(),
            ),
            Ok(Err(e)) => Outcome::Failed(format!("SOCK_DESTROY failed: {e}")),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// `shutdown(2)` on a duplicate of the owner's fd, after checking the socket is still the
/// chosen one (same id and cookie) and the fd still refers to its inode.
fn shutdown(diag: &mut DiagSocket, t: &Target, id: &InetSockId) -> Outcome {
    let dup = match reach::owner_fd(diag, t, id, t.netns) {
        Ok(dup) => dup,
        Err(o) => return o,
    };
    if let Err(e) = rustix::net::shutdown(&dup, rustix::net::Shutdown::Both) {
        return Outcome::Failed(format!("shutdown failed: {e}"));
    }
    drop(dup);
    confirm(diag, id, t.netns, Mechanism::Shutdown)
}

/// Asks the kernel about the socket again: gone or closing is a kill.
fn confirm(
    diag: &mut DiagSocket,
    id: &InetSockId,
    netns: NetnsId,
    mechanism: Mechanism,
) -> Outcome {
    match diag.lookup(id, netns) {
        Ok(None) => Outcome::Killed {
            mechanism,
            after: None,
        },
        Ok(Some(s)) if is_closing(s.state) => Outcome::Killed {
            mechanism,
            after: Some(s.state),
        },
        Ok(Some(s)) => Outcome::Failed(format!(
            "{} reported success, but the kernel still lists the socket as {}",
            mechanism.name(),
            s.state.name(s.proto)
        )),
        Err(e) => Outcome::Failed(format!(
            "{} reported success, but re-reading the socket failed: {e}",
            mechanism.name()
        )),
    }
}

/// States of a socket on its way out (or, for UDP, disconnected).
fn is_closing(state: SockState) -> bool {
    matches!(
        state,
        SockState::FinWait1
            | SockState::FinWait2
            | SockState::TimeWait
            | SockState::Close
            | SockState::LastAck
            | SockState::Closing
    )
}
