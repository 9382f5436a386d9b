//! What this process can do, foreseen before anyone confirms: a kill without `CAP_NET_ADMIN`,
//! or a keepalive change on another user's process without ptrace rights, would be refused by
//! the kernel; the dry run and the dashboard's dialogs say so first (with why), instead of
//! asking and then refusing.

use rustix::thread::CapabilitySet;

use super::kill::{Method, NEED_NET_ADMIN};
use super::target::{Action, Target};

/// The effective capabilities that decide whether an action can succeed, and who katop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Powers {
    pub net_admin: bool,
    pub ptrace: bool,
    pub euid: u32,
}

impl Powers {
    /// This process's.
    pub fn current() -> Powers {
        let caps =
            rustix::thread::capabilities(None).map_or(CapabilitySet::empty(), |c| c.effective);
        Powers {
            net_admin: caps.contains(CapabilitySet::NET_ADMIN),
            ptrace: caps.contains(CapabilitySet::SYS_PTRACE),
            euid: rustix::process::geteuid().as_raw(),
        }
    }

    /// Everything allowed (root's, and the tests' default).
    pub fn all() -> Powers {
        Powers {
            net_admin: true,
            ptrace: true,
            euid: 0,
        }
    }

    /// Why `action` (a kill by `method`) on `t` would be refused for lack of a privilege or
    /// of an owner to act through, if it would.
    pub fn refusal(&self, action: Action, method: Method, t: &Target) -> Option<String> {
        let through_fd = match action {
            Action::Kill if method != Method::Shutdown => {
                return (!self.net_admin).then(|| NEED_NET_ADMIN.to_string());
            }
            Action::Kill => "shutdown(2)",
            Action::Keepalive(_) => "a keepalive change",
        };
        let Some(owner) = &t.owner else {
            return Some(format!(
                "{through_fd} needs the owning process's fd, and no process is known to hold \
                 this socket (run as root to see every process's fds)"
            ));
        };
        match t.uid {
            Some(uid) if uid == self.euid || self.ptrace => None,
            uid => Some(format!(
                "{through_fd} borrows the fd of {}[{}], whose socket belongs to uid {}: that \
                 needs ptrace rights over it (root or CAP_SYS_PTRACE)",
                owner.name,
                owner.pid,
                uid.map_or_else(|| "?".into(), |u| u.to_string())
            )),
        }
    }
}
