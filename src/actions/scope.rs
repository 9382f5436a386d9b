//! Whose sockets katop may act on. A capability granted to the katop binary (`setcap
//! cap_net_admin+ep`) or a setuid bit must not make it a host-wide connection killer for every
//! local user: when the process holds privileges its real user lacks, it acts only on sockets
//! that user owns, as `kill(2)` only signals your own processes. Root acts on everything, and
//! a user whose privileges are their own (no file capabilities, not setuid) is limited by the
//! kernel alone.

use std::fmt;

/// Whose sockets actions may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Any socket the kernel lets katop act on.
    Everything,
    /// Only sockets of this real user: katop runs with privileges that user lacks.
    OwnOnly { uid: u32 },
}

impl Scope {
    /// The scope of this process.
    pub fn current() -> Scope {
        match crate::privilege::Privilege::current() {
            crate::privilege::Privilege::Gained { uid, .. } => Scope::of(uid, true),
            crate::privilege::Privilege::Own => Scope::Everything,
        }
    }

    /// The scope for real user `uid`, with or without privileges it lacks.
    pub fn of(uid: u32, gained_privileges: bool) -> Scope {
        if uid == 0 || !gained_privileges {
            Scope::Everything
        } else {
            Scope::OwnOnly { uid }
        }
    }

    /// Why katop will not act on a socket owned by `socket_uid`, if it will not.
    pub fn refusal(&self, socket_uid: Option<u32>) -> Option<String> {
        match *self {
            Scope::Everything => None,
            Scope::OwnOnly { uid } if socket_uid == Some(uid) => None,
            Scope::OwnOnly { uid } => Some(format!(
                "the socket belongs to uid {}, and katop acts only on your own (uid {uid}): it \
                 runs with privileges (file capabilities or setuid) that your user lacks",
                socket_uid.map_or_else(|| "?".into(), |u| u.to_string())
            )),
        }
    }
}

impl fmt::Display for Scope {
    /// One line for the dashboard and `katop kill`, only when limited.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Everything => Ok(()),
            Scope::OwnOnly { uid } => write!(
                f,
                "acting only on uid {uid}'s sockets: katop runs with privileges its user lacks"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_privileged_non_root_user_is_limited_to_its_own_sockets() {
        assert_eq!(Scope::of(0, true), Scope::Everything);
        assert_eq!(Scope::of(1000, false), Scope::Everything);
        let own = Scope::of(65534, true);
        assert_eq!(own.refusal(Some(65534)), None);
        let why = own.refusal(Some(0)).unwrap();
        assert!(
            why.contains("uid 0") && why.contains("your own (uid 65534)"),
            "{why}"
        );
        assert!(own.refusal(None).is_some(), "an unknown owner is not yours");
        assert_eq!(Scope::Everything.refusal(Some(0)), None);
    }
}
