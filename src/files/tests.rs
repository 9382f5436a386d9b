use super::*;
use std::os::unix::fs::PermissionsExt;

/// A fresh directory of this test's own (mode 0755), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("katop-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn fifo(p: &Path) {
    rustix::fs::mknodat(CWD, p, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_replaced_file_is_whole_exactly_its_mode_and_leaves_nothing_beside_it() {
    let s = Scratch::new("replace");
    let dir = Dir::existing(&s.0).unwrap();
    let name = OsStr::new("katop.prom");
    dir.replace(name, b"one\n", 0o644).unwrap();
    dir.replace(name, b"two\n", 0o644).unwrap();
    assert_eq!(std::fs::read_to_string(s.0.join(name)).unwrap(), "two\n");
    assert_eq!(mode(&s.0.join(name)), 0o644);
    assert_eq!(names(&s.0), vec!["katop.prom"]);
}

#[test]
fn planted_links_are_never_written_through() {
    let s = Scratch::new("plant");
    let victim = s.0.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // The names the old scheme used (the pid and its neighbours), and the target itself.
    let pid = std::process::id();
    for p in pid.saturating_sub(50)..pid + 50 {
        let link = s.0.join(format!(".katop.prom.katop-{p}.tmp"));
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    let dir = Dir::existing(&s.0).unwrap();
    dir.replace(OsStr::new("katop.prom"), b"metrics\n", 0o644)
        .unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    std::os::unix::fs::symlink(&victim, s.0.join("linked.prom")).unwrap();
    assert!(matches!(
        dir.replace(OsStr::new("linked.prom"), b"x", 0o644),
        Err(FileError::Symlink)
    ));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn only_regular_files_are_replaced_appended_or_read() {
    let s = Scratch::new("kinds");
    fifo(&s.0.join("fifo"));
    std::fs::create_dir(s.0.join("sub")).unwrap();
    let dir = Dir::existing(&s.0).unwrap();
    for name in ["fifo", "sub"] {
        assert!(matches!(
            dir.replace(OsStr::new(name), b"x", 0o644),
            Err(FileError::NotRegular)
        ));
        assert!(matches!(
            dir.append(OsStr::new(name), 0o600, true),
            Err(FileError::NotRegular)
        ));
        assert!(matches!(
            read_small(&s.0.join(name), 1024),
            Err(FileError::NotRegular | FileError::Io(_))
        ));
    }
    // A character device stays one.
    let dev = Dir::existing(Path::new("/dev")).unwrap();
    assert!(matches!(
        dev.check_replaceable(OsStr::new("null")),
        Err(FileError::NotRegular)
    ));
    assert!(matches!(
        dev.append(OsStr::new("null"), 0o600, true),
        Err(FileError::NotRegular)
    ));
    assert!(matches!(
        read_small(Path::new("/dev/zero"), 1024),
        Err(FileError::NotRegular)
    ));
    assert!(matches!(names(&s.0).as_slice(), [a, b] if a == "fifo" && b == "sub"));
}

#[test]
fn appends_go_to_ones_own_regular_file_never_through_a_link() {
    let s = Scratch::new("append");
    let dir = Dir::existing(&s.0).unwrap();
    let mut f = dir.append(OsStr::new("log"), 0o600, false).unwrap();
    f.write_all(b"a\n").unwrap();
    let mut f = dir.append(OsStr::new("log"), 0o600, false).unwrap();
    f.write_all(b"b\n").unwrap();
    assert_eq!(std::fs::read_to_string(s.0.join("log")).unwrap(), "a\nb\n");
    assert_eq!(mode(&s.0.join("log")), 0o600);
    std::os::unix::fs::symlink(s.0.join("log"), s.0.join("link")).unwrap();
    assert!(matches!(
        dir.append(OsStr::new("link"), 0o600, true),
        Err(FileError::Symlink)
    ));
}

#[test]
fn no_append_to_a_hard_link_or_to_another_users_file_in_a_shared_directory() {
    let s = Scratch::new("links");
    std::fs::write(s.0.join("precious"), "x").unwrap();
    std::fs::hard_link(s.0.join("precious"), s.0.join("log")).unwrap();
    let dir = Dir::existing(&s.0).unwrap();
    assert!(matches!(
        dir.append(OsStr::new("log"), 0o600, true),
        Err(FileError::Linked)
    ));
    if !rustix::process::geteuid().is_root() {
        return;
    }
    // A file another user planted in a sticky directory, named explicitly: still refused.
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(s.0.join("planted"), "").unwrap();
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    rustix::fs::chown(s.0.join("planted"), nobody, None).unwrap();
    let dir = Dir::existing(&s.0).unwrap();
    assert!(matches!(
        dir.append(OsStr::new("planted"), 0o600, true),
        Err(FileError::NotOwned(65534))
    ));
    // In a directory only this user writes, a file named explicitly is taken.
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = Dir::existing(&s.0).unwrap();
    assert!(dir.append(OsStr::new("planted"), 0o600, true).is_ok());
}

#[test]
fn a_directory_others_can_write_is_refused_unless_sticky() {
    let s = Scratch::new("shared");
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = Dir::existing(&s.0).unwrap_err();
    assert!(matches!(e, FileError::SharedDir { mode: 0o777, .. }), "{e}");
    assert!(
        e.to_string().contains("can be written by other users"),
        "{e}"
    );
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o775)).unwrap();
    assert!(Dir::existing(&s.0).is_err());
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(Dir::existing(&s.0).is_ok(), "sticky and this user's own");
    if rustix::process::geteuid().is_root() {
        // Sticky, but another user's: they could swap what is in it.
        let nobody = Some(rustix::process::Uid::from_raw(65534));
        rustix::fs::chown(&s.0, nobody, None).unwrap();
        assert!(matches!(
            Dir::existing(&s.0),
            Err(FileError::SharedDir { .. })
        ));
    }
    assert!(matches!(
        Dir::existing(&s.0.join("missing")),
        Err(FileError::Missing(_))
    ));
}

#[test]
fn katops_own_directory_is_made_private() {
    let s = Scratch::new("private");
    let deep = s.0.join("state/katop");
    Dir::private(&deep).unwrap();
    assert_eq!(mode(&deep), 0o700);
    std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o755)).unwrap();
    Dir::private(&deep).unwrap();
    assert_eq!(mode(&deep), 0o700, "a loose mode is tightened");
    // A link in its place is not followed.
    std::os::unix::fs::symlink(&deep, s.0.join("link")).unwrap();
    assert!(Dir::private(&s.0.join("link")).is_err());
}

#[test]
fn a_link_another_user_planted_on_the_way_is_never_followed() {
    let s = Scratch::new("planted-link");
    let target = s.0.join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    // This user's own link on the way is followed (a home moved with a link, say).
    std::os::unix::fs::symlink(&target, s.0.join("mine")).unwrap();
    Dir::private(&s.0.join("mine/store")).unwrap();
    assert!(target.join("store").is_dir());
    assert!(Dir::existing(&s.0.join("mine")).is_ok());
    if !rustix::process::geteuid().is_root() {
        return;
    }
    // Another user's link, in a sticky directory as /tmp is: refused, nothing made there.
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink(&target, s.0.join("theirs")).unwrap();
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    rustix::fs::chownat(
        CWD,
        s.0.join("theirs"),
        nobody,
        None,
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let refused = Dir::private(&s.0.join("theirs/sub"));
    assert!(
        matches!(&refused, Err(FileError::ForeignLink { uid: 65534, .. })),
        "{refused:?}"
    );
    assert!(!target.join("sub").exists());
    assert!(matches!(
        Dir::existing(&s.0.join("theirs")),
        Err(FileError::ForeignLink { .. })
    ));
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_small_read_is_capped() {
    let s = Scratch::new("read");
    std::fs::write(s.0.join("big"), vec![b'x'; 2000]).unwrap();
    assert!(matches!(
        read_small(&s.0.join("big"), 1000),
        Err(FileError::TooLarge(1000))
    ));
    assert_eq!(read_small(&s.0.join("big"), 2000).unwrap().len(), 2000);
    assert_eq!(read_named(&s.0.join("big"), 2000).unwrap().len(), 2000);
}
