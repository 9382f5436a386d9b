//! The one way katop touches files: every file it writes (the textfile, the kill log, the
//! store) and every file a user names (the config).
//!
//! katop often runs as root, in directories other accounts may write (`node_exporter`'s textfile
//! directory, `/tmp`), so:
//! - a directory is opened once, as the user who named it ([`crate::privilege`]), and every
//!   file in it is reached relative to that fd;
//! - a directory group or world can write is refused unless it is sticky and the user's own
//!   (`/tmp` for root: then only a file's owner may swap it), and there a file of another
//!   user's, or one with other hard links, is never appended to;
//! - a new file is created with `O_CREAT | O_EXCL | O_NOFOLLOW` under an unpredictable name, so
//!   no planted link or file is ever opened in its place;
//! - a file is replaced whole ([`Dir::replace`]: written beside it, then `renameat`), and its
//!   temporary file removed on every error;
//! - only regular files are written or read: a FIFO, a device or a directory at the name is
//!   refused before a byte is written (opens never block, and a file katop writes is never
//!   reached through a final link; a file it reads, such as the config, may be).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::privilege::as_real_user;
use crate::text::printable;

/// Why a file or directory was refused, or could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("it is not a regular file (a FIFO, device or directory): katop reads and writes only regular files")]
    NotRegular,
    #[error("it is a symbolic link: katop never writes through one; give the real path")]
    Symlink,
    #[error("the file belongs to uid {0}, not to you: give a path in a directory you own")]
    NotOwned(u32),
    #[error(
        "the directory {dir} can be written by other users (mode {mode:04o}) and is not a \
         sticky directory of yours: anyone who can write there could swap the file; use a \
         directory only its owner can write (chmod go-w)"
    )]
    SharedDir { dir: String, mode: u32 },
    #[error("the directory {dir} belongs to uid {uid}, not to you")]
    DirNotOwned { dir: String, uid: u32 },
    #[error("{0} is not a directory")]
    NotDir(String),
    #[error("{0} does not exist")]
    Missing(String),
    #[error(
        "the file has other hard links: katop does not write a file reachable by another name"
    )]
    Linked,
    #[error("larger than {}", size_text(*.0))]
    TooLarge(u64),
    #[error(
        "{path} goes through {link}, a symbolic link of uid {uid}'s: katop follows only links \
         of root's or yours; give the real path"
    )]
    ForeignLink {
        path: String,
        link: String,
        uid: u32,
    },
}

impl From<Errno> for FileError {
    fn from(e: Errno) -> Self {
        FileError::Io(e.into())
    }
}

/// A directory katop writes files in, held open: every file is reached relative to it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `1 MiB`, `8 MiB`, `4096 bytes`.
fn size_text(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Group or world may write a directory of mode `mode`.
fn shared(mode: u32) -> bool {
    mode & 0o022 != 0
}

/// A shared directory katop may still write in: sticky (only a file's owner may rename or
/// remove it) and owned by this thread's user.
fn sticky_and_mine(mode: u32, owner: u32) -> bool {
    mode & 0o1000 != 0 && owner == me()
}

/// A path for messages: its unsafe characters replaced.
fn shown(path: &Path) -> String {
    printable(&path.to_string_lossy()).into_owned()
}

/// The effective uid of this thread (the real user's on an [`as_real_user`] thread).
fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens directory `path` a component at a time, making the missing ones (`0700`) when
/// `create`. A symbolic link on the way is followed only when it is root's or this user's: a
/// link another user planted (in `/tmp`, say) never leads katop, running as root, to write
/// where that user chose (what `fs.protected_symlinks` does in sticky directories, wherever
/// the link is). `last_link`: whether the last component may be such a link.
fn walk(path: &Path, create: bool, last_link: bool) -> Result<OwnedFd, FileError> {
    use std::path::Component;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let start = if path.is_absolute() { "/" } else { "." };
    let mut fd = rustix::fs::openat(CWD, start, dir_flags, Mode::empty())?;
    let parts: Vec<Component> = path.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let name: &OsStr = match part {
            Component::Normal(n) => n,
            Component::ParentDir => OsStr::new(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        };
        let last = i + 1 == parts.len();
        if create {
            match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut flags = dir_flags;
        match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink() => {
                if last && !last_link {
                    return Err(FileError::NotDir(shown(path)));
                }
                if st.st_uid != 0 && st.st_uid != me() {
                    let upto: PathBuf = parts[..=i].iter().collect();
                    return Err(FileError::ForeignLink {
                        path: shown(path),
                        link: shown(&upto),
                        uid: st.st_uid,
                    });
                }
            }
            Ok(_) => flags |= OFlags::NOFOLLOW,
            Err(Errno::NOENT) => return Err(FileError::Missing(shown(path))),
            Err(e) => return Err(e.into()),
        }
        fd = rustix::fs::openat(&fd, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => FileError::NotDir(shown(path)),
            Errno::NOENT => FileError::Missing(shown(path)),
            e => FileError::Io(io::Error::from(e)),
        })?;
    }
    Ok(fd)
}

impl Dir {
    /// An existing directory to write in, opened as the user who named it; refused when it is
    /// not one, when a link of another user's leads there, or when others may write in it and
    /// it is not sticky.
    pub fn existing(path: &Path) -> Result<Dir, FileError> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        as_real_user(|| {
            let fd = walk(path, false, true)?;
            let st = rustix::fs::fstat(&fd)?;
            if shared(st.st_mode) && !sticky_and_mine(st.st_mode, st.st_uid) {
                return Err(FileError::SharedDir {
                    dir: shown(path),
                    mode: st.st_mode & 0o7777,
                });
            }
            Ok(Dir {
                fd,
                path: path.to_path_buf(),
            })
        })
    }

    /// katop's own directory (the kill log's default, the store): created private (`0700`)
    /// with its missing parents, tightened to `0700` when it exists, refused when it is
    /// another user's.
    pub fn private(path: &Path) -> Result<Dir, FileError> {
        as_real_user(|| {
            // Its own directory is never a link; links on the way only root's or the user's.
            let fd = walk(path, true, false)?;
            let st = rustix::fs::fstat(&fd)?;
            if st.st_uid != me() {
                return Err(FileError::DirNotOwned {
                    dir: shown(path),
                    uid: st.st_uid,
                });
            }
            if st.st_mode & 0o077 != 0 {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
            }
            Ok(Dir {
                fd,
                path: path.to_path_buf(),
            })
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `name` may be replaced: absent, or a regular file (a link, FIFO or device at
    /// the name is refused: `--textfile /dev/null` must not turn the device into a file).
    pub fn check_replaceable(&self, name: &OsStr) -> Result<(), FileError> {
        as_real_user(|| self.replaceable(name))
    }

    fn replaceable(&self, name: &OsStr) -> Result<(), FileError> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Ok(()),
                FileType::Symlink => Err(FileError::Symlink),
                _ => Err(FileError::NotRegular),
            },
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces `name` with `bytes` whole, with permissions `mode`: a reader sees the old file
    /// or the new one, never a part. The bytes go to a new file of an unpredictable name
    /// created exclusively (never through a planted link), are synced, and the file is
    /// renamed over `name`; on any error it is removed.
    pub fn replace(&self, name: &OsStr, bytes: &[u8], mode: u32) -> Result<(), FileError> {
        as_real_user(|| {
            self.replaceable(name)?;
            let (tmp, file) = self.create_temporary(name, mode)?;
            let written = write_synced(file, bytes).and_then(|()| {
                rustix::fs::renameat(&self.fd, &tmp, &self.fd, name).map_err(io::Error::from)
            });
            written.map_err(|e| {
                let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
                FileError::Io(e)
            })
        })
    }

    /// `.NAME.katop-RANDOM.tmp`, created `O_EXCL | O_NOFOLLOW` (a new name on a collision).
    fn create_temporary(&self, name: &OsStr, mode: u32) -> Result<(OsString, File), FileError> {
        let mut last = Errno::EXIST;
        for _ in 0..16 {
            let mut random = [0u8; 8];
            rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
            let mut tmp = OsString::from(".");
            tmp.push(name);
            tmp.push(".katop-");
            for b in random {
                tmp.push(format!("{b:02x}"));
            }
            tmp.push(".tmp");
            match rustix::fs::openat(
                &self.fd,
                &tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(fd) => {
                    // Exactly `mode`, whatever the umask took away.
                    if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)) {
                        let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
                        return Err(e.into());
                    }
                    return Ok((tmp, File::from(fd)));
                }
                Err(Errno::EXIST) => last = Errno::EXIST,
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.into())
    }

    /// `name` opened for appending, created with permissions `mode` when missing: never
    /// through a link, never waiting on a FIFO, only a regular file, and a file another user
    /// owns only when the user named it (`explicit`) and the directory is theirs.
    pub fn append(&self, name: &OsStr, mode: u32, explicit: bool) -> Result<File, FileError> {
        as_real_user(|| {
            // Said plainly first (in a sticky directory the kernel may answer EACCES for a
            // link); the open below refuses one anyway, whatever changes meanwhile.
            self.replaceable(name)?;
            let fd = rustix::fs::openat(
                &self.fd,
                name,
                OFlags::WRONLY
                    | OFlags::APPEND
                    | OFlags::CREATE
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            )
            .map_err(|e| match e {
                Errno::LOOP => FileError::Symlink,
                // A FIFO no one reads (O_NONBLOCK made the open fail instead of waiting), or
                // a directory.
                Errno::NXIO | Errno::ISDIR => FileError::NotRegular,
                e => e.into(),
            })?;
            let st = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(FileError::NotRegular);
            }
            // Another name for the file could be anyone's (a hard link planted to a file only
            // katop's user may write).
            if st.st_nlink > 1 {
                return Err(FileError::Linked);
            }
            // Another user's file only where the user named it in a directory only they write.
            let dir = rustix::fs::fstat(&self.fd)?;
            let theirs = dir.st_uid == me() && !shared(dir.st_mode);
            if st.st_uid != me() && !(explicit && theirs) {
                return Err(FileError::NotOwned(st.st_uid));
            }
            // Back to blocking writes: a regular file never blocks anyway.
            rustix::fs::fcntl_setfl(&fd, OFlags::APPEND)?;
            Ok(File::from(fd))
        })
    }

    /// The names of the regular files in it whose names start with `prefix`, with their sizes.
    pub fn files(&self, prefix: &str) -> Result<Vec<(OsString, u64)>, FileError> {
        let mut out = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if !name.as_bytes().starts_with(prefix.as_bytes()) {
                continue;
            }
            match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    out.push((name.to_os_string(), st.st_size as u64));
                }
                Ok(_) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// A regular file in it, opened for reading (never through a link).
    pub fn open_read(&self, name: &OsStr) -> Result<File, FileError> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => FileError::Symlink,
            e => e.into(),
        })?;
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
            return Err(FileError::NotRegular);
        }
        Ok(File::from(fd))
    }

    /// A new file `name` with permissions `mode`, created exclusively (`O_EXCL | O_NOFOLLOW`):
    /// `Ok(None)` when the name is taken.
    pub fn create(&self, name: &OsStr, mode: u32) -> Result<Option<File>, FileError> {
        match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                Ok(Some(File::from(fd)))
            }
            Err(Errno::EXIST) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the file `name` from it.
    pub fn remove(&self, name: &OsStr) -> Result<(), FileError> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn write_synced(mut file: File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_data()
}

/// The directory holding `path` and the file's name in it (`NAME` alone is in `.`).
pub fn split(path: &Path) -> Result<(&Path, &OsStr), FileError> {
    let name = path
        .file_name()
        .ok_or_else(|| FileError::NotDir(shown(path)))?;
    Ok((path.parent().unwrap_or(Path::new("")), name))
}

/// Reads a small regular file with katop's own privileges (a runtime's state file, a kernel
/// table): opened without blocking (a FIFO planted there would otherwise hang every poll),
/// refused unless regular, at most `max` bytes.
pub fn read_small(path: &Path, max: u64) -> Result<String, FileError> {
    let fd = rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(FileError::NotRegular);
    }
    let mut text = String::new();
    let read = File::from(fd)
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| io::Error::new(e.kind(), format!("not UTF-8 text ({e})")))?;
    if read as u64 > max {
        return Err(FileError::TooLarge(max));
    }
    Ok(text)
}

/// [`read_small`] for a path a user named: opened as that user could
/// ([`crate::privilege::as_real_user`]), so a privileged copy of katop reads nothing its user
/// could not.
pub fn read_named(path: &Path, max: u64) -> Result<String, FileError> {
    as_real_user(|| read_small(path, max))
}

#[cfg(test)]
mod tests;
