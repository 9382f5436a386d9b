//! Whose sockets katop may act on. A capability granted to the katop binary (`setcap
//! cap_net_admin+ep`) or a setuid bit must not make it a host-wide connection killer for every
//! local user: when the process holds privileges its real user lacks, it acts only on sockets
//! that user owns, as `kill(2)` only signals your own processes. Root acts on everything, and
//! a user whose privileges are their own (no file capabilities, not setuid) is limited by the
//! kernel alone.

use std::fmt;

/// `AT_SECURE` in the auxiliary vector: the kernel set it because this exec gained privileges
/// (setuid, setgid or file capabilities).
const AT_SECURE: u64 = 23;

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
        let uid = rustix::process::getuid().as_raw();
        let gained = rustix::process::geteuid().as_raw() != uid
            || rustix::process::getegid() != rustix::process::getgid()
            || secure_exec().unwrap_or_else(has_capabilities);
        Scope::of(uid, gained)
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

/// Whether the kernel marked this exec as privilege-gaining; `None` when the auxiliary vector
/// cannot be read.
fn secure_exec() -> Option<bool> {
    let auxv = std::fs::read("/proc/self/auxv").ok()?;
    let word = std::mem::size_of::<usize>();
    let read = |b: &[u8]| -> u64 {
        let mut v = [0u8; 8];
        v[..word].copy_from_slice(&b[..word]);
        // usize-wide native words; widen as the platform's byte order says.
        if cfg!(target_endian = "little") {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v) >> (8 * (8 - word))
        }
    };
    auxv.chunks_exact(2 * word)
        .map(|pair| (read(&pair[..word]), read(&pair[word..])))
        .find(|&(key, _)| key == AT_SECURE)
        .map(|(_, value)| value != 0)
}

/// Fallback without `/proc/self/auxv`: any effective capability counts as gained.
fn has_capabilities() -> bool {
    rustix::thread::capabilities(None).is_ok_and(|c| !c.effective.is_empty())
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

    #[test]
    fn this_test_process_gained_nothing_at_exec() {
        // cargo runs tests without setuid or file capabilities.
        assert_eq!(secure_exec(), Some(false));
    }
}
