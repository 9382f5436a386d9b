//! A private tmux server driving the real katop binary: `send-keys` types, `capture-pane`
//! reads. Waits are bounded polls for text to appear, never fixed sleeps asserted on.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server with one shell pane; killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(name: &str, width: u16, height: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "tmux is missing: .ci/run installs it"
            );
            super::skipped("tmux is not installed");
            return None;
        }
        let t = Tmux {
            socket: format!("katop-{name}-{}", std::process::id()),
        };
        t.cmd(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "bash --norc --noprofile",
        ]);
        t.cmd(&["set-option", "-g", "status", "off"]);
        Some(t)
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.cmd(&["send-keys", "-t", "0", k]);
        }
    }

    pub fn type_text(&self, text: &str) {
        self.cmd(&["send-keys", "-t", "0", "-l", text]);
    }

    pub fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-t", "0", "-p"])
    }

    /// Waits (at most 30 s: a loaded 2-core CI machine runs five of these at once) until `pred`
    /// holds for the screen, and returns that screen.
    pub fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_for(&self, needle: &str) -> String {
        self.wait(needle, |s| s.contains(needle))
    }

    /// After katop exits, `stty -a` (run by `start_katop`'s command line) must show `icanon`:
    /// the terminal is back in cooked mode.
    pub fn assert_cooked(&self) {
        let s = self.wait("stty's answer", |s| {
            s.lines()
                .any(|l| l.trim() == "icanon" || l.trim() == "-icanon")
        });
        assert!(
            s.lines().any(|l| l.trim() == "icanon"),
            "the terminal was left in raw mode:\n{s}"
        );
    }

    pub fn start_katop(&self, args: &str) {
        self.launch(args);
        // The dashboard itself, after a poll: keys sent before it reads the terminal would go
        // to the shell's line (the command line matches "katop " long before that).
        self.wait("the dashboard's first poll", |s| {
            s.contains("q quit")
                && s.contains(" sockets")
                && !s.contains("waiting for the first poll")
        });
    }

    /// Starts the dashboard with its action log in a fresh file, whose path it returns.
    pub fn start_logging_katop(&self, name: &str) -> std::path::PathBuf {
        let log =
            std::env::temp_dir().join(format!("katop-tui-{name}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&log);
        self.start_katop(&format!("--interval 300ms --kill-log {}", log.display()));
        log
    }

    /// Filters the dashboard to one connection, by both its addresses and its state, in the
    /// host's namespace (as root the dashboard reads every namespace, and other tests' sockets,
    /// old `TIME_WAIT`s among them, may share a port); returns the filter and the connection's
    /// local address.
    pub fn show_only(&self, client: &TcpStream) -> (String, String) {
        let local = client.local_addr().unwrap();
        let only_it = format!(
            "netns:host src:{local} dst:{} established",
            client.peer_addr().unwrap()
        );
        self.keys(&["F4"]);
        self.type_text(&only_it);
        self.keys(&["Enter"]);
        (only_it, local.to_string())
    }

    /// Types the katop command line alone (a job the shell can stop and bring back with `fg`),
    /// and waits for the dashboard's first poll.
    pub fn start_katop_alone(&self, args: &str) {
        let bin = env!("CARGO_BIN_EXE_katop");
        self.type_text(&format!("clear; {bin} {args}"));
        self.keys(&["Enter"]);
        self.wait("the dashboard's first poll", |s| {
            s.contains("q quit") && s.contains(" sockets")
        });
    }

    /// After katop exits: its exit status and the terminal's mode, as `launch` prints them.
    pub fn after_katop(&self) {
        self.type_text("echo AFTER-KATOP-$?; stty -a | tr ' ' '\\n' | grep -x -- '-*icanon'");
        self.keys(&["Enter"]);
    }

    /// [`Tmux::launch`] with environment variables (`NAME=value ...`) before the command.
    pub fn launch_with_env(&self, env: &str, args: &str) {
        let bin = env!("CARGO_BIN_EXE_katop");
        self.type_text(&format!(
            "clear; {env} {bin} {args}; echo AFTER-KATOP-$?; stty -a | tr ' ' '\\n' | grep -x -- '-*icanon'"
        ));
        self.keys(&["Enter"]);
    }

    /// Types the katop command line, followed by what shows the terminal's mode afterwards.
    pub fn launch(&self, args: &str) {
        let bin = env!("CARGO_BIN_EXE_katop");
        self.type_text(&format!("clear; {bin} {args}; echo AFTER-KATOP-$?; stty -a | tr ' ' '\\n' | grep -x -- '-*icanon'"));
        self.keys(&["Enter"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        // A killed server leaves its socket file behind.
        let dir = std::env::var_os("TMUX_TMPDIR").unwrap_or_else(|| "/tmp".into());
        let uid = rustix::process::getuid().as_raw();
        let _ = std::fs::remove_file(
            std::path::Path::new(&dir)
                .join(format!("tmux-{uid}"))
                .join(&self.socket),
        );
    }
}
