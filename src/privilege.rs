//! Whether katop runs with privileges its real user lacks, and the one rule for what such a run
//! may do with the paths that user names.
//!
//! A copy of katop given file capabilities (`setcap cap_dac_read_search,…+ep`) or a setuid bit
//! is run by users who must not gain its powers over files: every path a user names (the
//! config file, the kill log, the textfile, the store) is opened by [`as_real_user`], on a
//! short-lived thread that holds only the real user's ids and no capabilities, so the kernel
//! answers exactly as it would answer that user (no file they could not read is read, and no
//! error says more than they could learn themselves). Root, and a user whose privileges are
//! their own, open files directly.

use std::sync::OnceLock;

use rustix::process::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};

/// `AT_SECURE` in the auxiliary vector: the kernel set it because this exec gained privileges
/// (setuid, setgid or file capabilities).
const AT_SECURE: u64 = 23;

/// What this process may do beyond its real user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Nothing the real user could not do (root included: root's privileges are its own).
    Own,
    /// Privileges gained at exec (file capabilities, setuid or setgid) by real user `uid`.
    Gained { uid: u32, gid: u32 },
}

impl Privilege {
    /// This process's, worked out once.
    pub fn current() -> Privilege {
        static CURRENT: OnceLock<Privilege> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let uid = rustix::process::getuid();
            let gid = rustix::process::getgid();
            let gained = rustix::process::geteuid() != uid
                || rustix::process::getegid() != gid
                || secure_exec().unwrap_or_else(has_capabilities);
            Privilege::of(uid.as_raw(), gid.as_raw(), gained)
        })
    }

    /// The privilege of real user `uid` (group `gid`) that did or did not gain any at exec.
    pub fn of(uid: u32, gid: u32, gained: bool) -> Privilege {
        if uid == 0 || !gained {
            Privilege::Own
        } else {
            Privilege::Gained { uid, gid }
        }
    }

    pub fn is_gained(self) -> bool {
        matches!(self, Privilege::Gained { .. })
    }
}

/// Runs `f` with the real user's access to files: directly when katop's privileges are that
/// user's own, else on a thread that first takes the real uid and gid and drops every
/// capability (ids and capabilities are per thread on Linux; the thread ends with `f`, so no
/// other thread is affected and nothing is left to restore). Whatever `f` opens stays usable
/// by the whole process.
pub fn as_real_user<T: Send, E: Send + From<std::io::Error>>(
    f: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, E> {
    let Privilege::Gained { uid, gid } = Privilege::current() else {
        return f();
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("katop-as-user".into())
            .spawn_scoped(s, move || {
                become_user(uid, gid)?;
                f()
            })?
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the file thread failed").into()))
    })
}

/// On this thread only: the real ids everywhere, no capabilities.
fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    let gid = Gid::from_raw(gid);
    let uid = Uid::from_raw(uid);
    // The gid first: once the uid is dropped, changing it is no longer allowed.
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )?;
    Ok(())
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
    fn root_and_unprivileged_users_keep_their_own_access() {
        assert_eq!(Privilege::of(0, 0, true), Privilege::Own);
        assert_eq!(Privilege::of(1000, 1000, false), Privilege::Own);
        assert_eq!(
            Privilege::of(65534, 65534, true),
            Privilege::Gained {
                uid: 65534,
                gid: 65534
            }
        );
    }

    #[test]
    fn this_test_process_gained_nothing_at_exec() {
        // cargo runs tests without setuid or file capabilities.
        assert_eq!(secure_exec(), Some(false));
        assert_eq!(Privilege::current(), Privilege::Own);
        assert_eq!(as_real_user(|| Ok::<_, std::io::Error>(7)).unwrap(), 7);
    }

    #[test]
    fn a_thread_that_becomes_the_user_is_refused_what_the_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            crate::say!("skipped: needs root (to become another user on one thread)");
            return;
        }
        // A root-only file: readable here, not once the thread is nobody.
        let secret = std::env::temp_dir().join(format!("katop-priv-{}", std::process::id()));
        std::fs::write(&secret, "root only").unwrap();
        rustix::fs::chmod(&secret, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        let path = secret.clone();
        let r = std::thread::spawn(move || {
            become_user(65534, 65534)?;
            std::fs::read(&path).map(|_| ())
        })
        .join()
        .unwrap();
        assert_eq!(
            r.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied,
            "the thread kept root's access"
        );
        // The rest of the process is still root.
        assert!(rustix::process::geteuid().is_root());
        assert!(std::fs::read(&secret).is_ok());
        let _ = std::fs::remove_file(&secret);
    }
}
