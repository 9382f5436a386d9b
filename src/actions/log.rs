//! The audit log: one JSON line per attempt, appended to `$XDG_STATE_HOME/katop/kills.jsonl`
//! (default `~/.local/state/katop/kills.jsonl`), or the `--kill-log` path.
//!
//! The log is opened through [`crate::files`]: never through a link, never a FIFO or device, in
//! a directory others cannot swap it in; the default directory is created private (`0700`).
//! A path the user named is opened as that user could.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::target::Report;

/// Where the log goes when `--kill-log` is not given; `None` without `XDG_STATE_HOME` and `HOME`.
pub fn default_path() -> Option<PathBuf> {
    Some(crate::config::xdg_base("XDG_STATE_HOME", ".local/state")?.join("katop/kills.jsonl"))
}

use crate::files::Dir;
pub use crate::files::FileError as LogError;

/// An open, append-only log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    actor: Actor,
}

/// Who acted: the real uid, its name, and the `sudo` caller when there is one.
#[derive(Debug, Clone, Serialize)]
struct Actor {
    uid: u32,
    user: Option<String>,
    sudo_user: Option<String>,
}

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    #[serde(flatten)]
    actor: &'a Actor,
    #[serde(flatten)]
    record: T,
}

impl AuditLog {
    /// Opens (creating it, and its directory private to the user) the log at `path`, which
    /// the user named (`explicit`) or is the default. Done before any action, so nothing is
    /// killed that could not be recorded.
    pub fn open(path: &Path, explicit: bool) -> Result<Self, LogError> {
        let (dir, name) = crate::files::split(path)?;
        let dir = if explicit {
            // A directory the user named is used as it is; a missing one is made private.
            match Dir::existing(dir) {
                Err(LogError::Missing(_)) => Dir::private(dir)?,
                other => other?,
            }
        } else {
            Dir::private(dir)?
        };
        let file = dir.append(name, 0o600, explicit)?;
        let uid = rustix::process::getuid().as_raw();
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            actor: Actor {
                uid,
                user: user_name(uid),
                sudo_user: std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()),
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line per report, each written whole (one `write` per line).
    pub fn append(&mut self, reports: &[Report]) -> io::Result<()> {
        for r in reports {
            let mut line = Vec::new();
            crate::text::to_writer(
                &mut line,
                &Line {
                    actor: &self.actor,
                    record: r.json(),
                },
            )?;
            line.push(b'\n');
            self.file.write_all(&line)?;
        }
        self.file.sync_data()
    }
}

/// The name of `uid` through NSS (files, LDAP, sssd…), if it has one.
fn user_name(uid: u32) -> Option<String> {
    uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
}

/// `2026-11-22T00:41:12.123Z`: UTC, milliseconds.
/// A clock set before 1970 or past 9999 (which humantime's formatter cannot write, and panics
/// on) is written as the nearest time it can.
pub fn rfc3339(t: SystemTime) -> String {
    // 9999-12-31T23:59:59.999Z.
    let last = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(253_402_300_799_999);
    let t = t.clamp(SystemTime::UNIX_EPOCH, last);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_regular_files_of_ones_own_are_logs_never_through_a_link() {
        use std::fs;
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("katop-log-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // The default path's directory is created private.
        let default = dir.join("state/katop/kills.jsonl");
        AuditLog::open(&default, false).unwrap();
        let mode = fs::metadata(default.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // A link, even one the user made and named: refused, and its target not created.
        let real = dir.join("real.jsonl");
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        for explicit in [true, false] {
            assert!(matches!(
                AuditLog::open(&link, explicit),
                Err(LogError::Symlink)
            ));
        }
        assert!(!real.exists());
        // Not a regular file.
        assert!(matches!(
            AuditLog::open(Path::new("/dev/null"), true),
            Err(LogError::NotRegular)
        ));
        assert!(matches!(
            AuditLog::open(&dir, true),
            Err(LogError::NotRegular)
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn formats_utc_times() {
        use std::time::UNIX_EPOCH;
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A clock before 1970 or past 9999 is written, not a panic.
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1970-01-01T00:00:00.000Z"
        );
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_308_072_123);
        assert_eq!(rfc3339(t), "2026-11-22T00:41:12.123Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
        // root is root, whatever NSS source answers.
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
