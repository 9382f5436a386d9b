//! No local user can turn katop's privileged surfaces against the host: its files (links
//! planted where the textfile is written, devices named as outputs, a full disk), what a
//! capability copy reads for its user (`tests/choices.rs`: what katop prints and serves,
//! `--read-only`, `--netns`).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{
    is_root, katop_checked as katop, nobody_dir, run_as_nobody, stderr, wait_for, Scratch,
};

/// `katop exporter --listen none --textfile PATH`, killed on drop.
struct TextfileExporter {
    child: Child,
    errors: std::sync::mpsc::Receiver<String>,
}

impl TextfileExporter {
    fn start(path: &Path) -> TextfileExporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_katop"))
            .env("KATOP_NETNS", "host")
            .args(["exporter", "--listen", "none", "--interval", "100ms"])
            .arg("--textfile")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, errors) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        TextfileExporter { child, errors }
    }

    /// Waits for a line of stderr containing `what`.
    fn said(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.errors.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the exporter never said {what:?}");
    }
}

impl Drop for TextfileExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
fn links_planted_at_the_textfiles_temporary_names_are_never_followed() {
    let s = Scratch::new("plant");
    // A file only root may write, and links to it at every name the next thousands of pids
    // would have given the temporary file.
    let victim = s.0.join("victim");
    std::fs::write(&victim, "root's own\n").unwrap();
    rustix::fs::chmod(&victim, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    let out = s.0.join("out");
    std::fs::create_dir(&out).unwrap();
    let next: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .map_or(0, |t| t.trim().parse().unwrap_or(0));
    for pid in next..next + 3000 {
        std::os::unix::fs::symlink(&victim, out.join(format!(".katop.prom.katop-{pid}.tmp")))
            .unwrap();
    }
    let path = out.join("katop.prom");
    let e = TextfileExporter::start(&path);
    wait_for("the textfile", || path.exists());
    drop(e);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("katop_build_info"), "{text}");
    assert!(
        std::fs::symlink_metadata(&path).unwrap().is_file(),
        "the textfile is a file of its own"
    );
}

#[test]
fn a_device_or_a_link_named_as_the_textfile_is_refused_and_left_alone() {
    let s = Scratch::new("device");
    // Never the real /dev/null: were the test to fail, it would have turned it into a file.
    let device = s.0.join("null");
    let fifo = s.0.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let link = s.0.join("link.prom");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let mut cases = vec![
        (fifo.clone(), "not a regular file"),
        (link.clone(), "symbolic link"),
        (
            PathBuf::from("/nonexistent-dir/katop.prom"),
            "does not exist",
        ),
    ];
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &device,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        cases.push((device.clone(), "not a regular file"));
    }
    for (path, what) in &cases {
        let textfile = path.to_str().unwrap();
        let out = katop(
            &["exporter", "--listen", "none", "--textfile", textfile],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{path:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(what), "{path:?}: {}", stderr(&out));
    }
    let kind = |p: &Path| std::fs::symlink_metadata(p).unwrap().file_type();
    assert!(kind(&fifo).is_fifo(), "the FIFO is still one");
    assert!(kind(&link).is_symlink(), "the link is still one");
    if is_root() {
        assert!(kind(&device).is_char_device(), "the device is still one");
    }
    // A directory anyone can write (and not sticky) is no place for it either.
    let shared = s.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    rustix::fs::chmod(&shared, rustix::fs::Mode::from_raw_mode(0o777)).unwrap();
    let textfile = shared.join("katop.prom");
    let out = katop(
        &[
            "exporter",
            "--listen",
            "none",
            "--textfile",
            textfile.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("can be written by other users"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_full_disk_leaves_no_temporary_file_and_the_exporter_running() {
    if !is_root() {
        common::skipped("needs root (mounts a tiny tmpfs)");
        return;
    }
    let s = Scratch::new("full");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&s.0)
        .output()
        .unwrap();
    assert!(mounted.status.success(), "{}", stderr(&mounted));
    // Fill it, leaving less room than the metrics take.
    let mut filler = std::fs::File::create(s.0.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    let e = TextfileExporter::start(&s.0.join("katop.prom"));
    let line = e.said("cannot write");
    assert!(line.contains("No space left"), "{line}");
    // A later poll fails the same way: the exporter carries on.
    e.said("cannot write");
    assert_eq!(
        names(&s.0),
        vec!["filler"],
        "a temporary file was left behind"
    );
}

/// A copy of katop with the README's capabilities, runnable by nobody.
fn capability_copy(tag: &str) -> Option<(common::NobodyDir, PathBuf)> {
    if !is_root() {
        common::skipped("needs root (setcap, and running katop as nobody)");
        return None;
    }
    if Command::new("setcap").arg("-v").output().is_err() {
        common::skipped("setcap is missing (Debian: libcap2-bin; .ci/run installs it)");
        return None;
    }
    let (dir, bin) = nobody_dir(tag);
    common::setcap("cap_net_admin,cap_sys_ptrace,cap_dac_read_search+ep", &bin);
    Some((dir, bin))
}

#[test]
fn a_capability_copy_reads_no_file_its_user_could_not() {
    let Some((dir, bin)) = capability_copy("cap-read") else {
        return;
    };
    // A root-only directory holding a root-only file that is almost a config.
    let secret_dir = Scratch::new("secret");
    rustix::fs::chmod(&secret_dir.0, rustix::fs::Mode::from_raw_mode(0o700)).unwrap();
    let secret = secret_dir.0.join("shadow");
    std::fs::write(&secret, "root:$6$SECRETHASH$x:19000:0:99999:7:::\n").unwrap();
    rustix::fs::chmod(&secret, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    std::fs::create_dir(secret_dir.0.join("katop")).unwrap();
    std::fs::copy(&secret, secret_dir.0.join("katop/config.toml")).unwrap();
    let run = |args: &[&str], env: &[(&str, &Path)]| {
        use std::os::unix::process::CommandExt;
        let out = common::output_within(
            Command::new(&bin)
                .args(args)
                .env("HOME", &dir)
                .env_remove("KATOP_CONFIG")
                .envs(env.iter().map(|(k, v)| (*k, *v)))
                .uid(65534)
                .gid(65534),
            Duration::from_secs(20),
        );
        assert!(
            !stderr(&out).contains("SECRETHASH")
                && !String::from_utf8_lossy(&out.stdout).contains("SECRETHASH"),
            "{args:?}: the secret was read: {}",
            stderr(&out)
        );
        out
    };
    let secret_arg = secret.to_str().unwrap();
    let named = run(&["--once", "--config", secret_arg], &[]);
    assert_eq!(named.status.code(), Some(2), "{}", stderr(&named));
    assert!(
        stderr(&named).contains("Permission denied"),
        "{}",
        stderr(&named)
    );
    let env = run(&["--once"], &[("KATOP_CONFIG", &secret)]);
    assert_eq!(env.status.code(), Some(2), "{}", stderr(&env));
    assert!(
        stderr(&env).contains("Permission denied"),
        "{}",
        stderr(&env)
    );
    // The default path, through XDG_CONFIG_HOME: not read, and said.
    let xdg = run(&["--once"], &[("XDG_CONFIG_HOME", &secret_dir.0)]);
    assert!(
        stderr(&xdg).contains("Permission denied"),
        "{}",
        stderr(&xdg)
    );
    // No oracle: a name that does not exist there gets the same answer as one that does.
    let missing = secret_dir.0.join("no-such-file");
    let absent = run(&["--once", "--config", missing.to_str().unwrap()], &[]);
    assert_eq!(
        stderr(&absent).replace("no-such-file", "shadow"),
        stderr(&named),
        "the answers tell an existing file from a missing one"
    );
    // Nor is a kill log or a textfile made there. (A connection of the test's own for the kill
    // to match: with nothing matched katop would stop before the log is opened.)
    let log = secret_dir.0.join("kills.jsonl");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_s, _) = l.accept().unwrap();
    let out = run(
        &[
            "kill",
            "--filter",
            &format!("tcp dst:{} established", l.local_addr().unwrap()),
            "--yes",
            "--kill-log",
            log.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!log.exists());
    let _ = out;
    let textfile = secret_dir.0.join("katop.prom");
    let out = run(
        &[
            "exporter",
            "--listen",
            "none",
            "--textfile",
            textfile.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_capability_copy_quotes_nothing_of_a_config_its_user_can_read() {
    let Some((dir, bin)) = capability_copy("cap-quote") else {
        return;
    };
    let config = dir.join("config.toml");
    std::fs::write(&config, "[ui]\nsort = \"not-a-column-QUOTED\"\n").unwrap();
    let out = run_as_nobody(
        &bin,
        &dir,
        &["--once", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains("QUOTED"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a valid katop config"),
        "{}",
        stderr(&out)
    );
    // Without the capabilities, the same file's error says what is wrong.
    let plain = dir.join("plain");
    std::fs::copy(env!("CARGO_BIN_EXE_katop"), &plain).unwrap();
    let out = run_as_nobody(
        &plain,
        &dir,
        &["--once", "--config", config.to_str().unwrap()],
    );
    assert!(
        stderr(&out).contains("not-a-column-QUOTED"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_textfile_directory_removed_and_made_again_is_written_again() {
    let s = Scratch::new("remade");
    let dir = s.0.join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("katop.prom");
    let e = TextfileExporter::start(&path);
    wait_for("the textfile", || path.exists());
    // As a package upgrade might: the directory goes, and a new one takes its place.
    // (A temporary file may appear in it meanwhile: removed again until it is gone.)
    wait_for("the directory removed", || {
        std::fs::remove_dir_all(&dir).is_ok()
    });
    std::fs::create_dir(&dir).unwrap();
    wait_for("the textfile in the new directory", || path.exists());
    drop(e);
}
