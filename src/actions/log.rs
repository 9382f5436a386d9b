//! The audit log: one JSON line per attempt, appended to `$XDG_STATE_HOME/katop/kills.jsonl`
//! (default `~/.local/state/katop/kills.jsonl`), or the `--kill-log` path.
//!
//! katop often runs as root, so where it writes is checked: the log must be a regular file
//! (or a new one); it is opened without following a symbolic link and without blocking (a FIFO
//! with no reader would hang the open); a symbolic link, or a file another user owns, is
//! refused unless the path was given explicitly, the link is the user's own, and it leads into
//! a directory the user owns. The default directory is created private (`0700`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::target::Report;

/// Where the log goes when `--kill-log` is not given; `None` without `XDG_STATE_HOME` and `HOME`.
pub fn default_path() -> Option<PathBuf> {
    Some(crate::config::xdg_base("XDG_STATE_HOME", ".local/state")?.join("katop/kills.jsonl"))
}

/// Why the log path was refused or could not be opened; nothing is done without a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "it is not a regular file (a FIFO, device or directory): the log must be a regular file"
    )]
    NotRegular,
    #[error(
        "it is a symbolic link that is not yours or leads outside your own directories: give \
         the real path"
    )]
    Symlink,
    #[error("the file belongs to uid {0}, not to you: give a path in a directory you own")]
    NotOwned(u32),
}

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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let me = rustix::process::geteuid().as_raw();
        let target = match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                // Followed (one step) only when the user named it, owns it, and it leads into
                // a directory the user owns.
                if !(explicit && m.uid() == me) {
                    return Err(LogError::Symlink);
                }
                let to = fs::read_link(path)?;
                let real = match path.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
                if !parent_owned_by(&real, me) {
                    return Err(LogError::Symlink);
                }
                real
            }
            Ok(m) if !m.file_type().is_file() => return Err(LogError::NotRegular),
            Ok(m) if m.uid() != me && !(explicit && parent_owned_by(path, me)) => {
                return Err(LogError::NotOwned(m.uid()));
            }
            Ok(_) => path.to_path_buf(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
            Err(e) => return Err(e.into()),
        };
        // No link followed and no wait for a reader, whatever changed since the check.
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(flags.bits() as i32)
            .open(&target)
            .map_err(|e| {
                let errno = e.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
                match errno {
                    Some(rustix::io::Errno::LOOP) => LogError::Symlink,
                    // A FIFO no one reads: O_NONBLOCK made the open fail instead of waiting.
                    Some(rustix::io::Errno::NXIO) => LogError::NotRegular,
                    _ => LogError::Io(e),
                }
            })?;
        if !file.metadata()?.file_type().is_file() {
            return Err(LogError::NotRegular);
        }
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

/// Whether the directory holding `path` belongs to `uid`.
fn parent_owned_by(path: &Path, uid: u32) -> bool {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::metadata(dir).is_ok_and(|m| m.uid() == uid)
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
    fn only_regular_files_of_ones_own_and_safe_links_are_logs() {
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
        // A link the user made, named explicitly, into the user's own directory: followed.
        let real = dir.join("real.jsonl");
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        AuditLog::open(&link, true).unwrap();
        assert!(real.exists());
        // Not named explicitly: refused.
        assert!(matches!(
            AuditLog::open(&link, false),
            Err(LogError::Symlink)
        ));
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
