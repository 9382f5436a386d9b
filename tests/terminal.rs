//! The terminal on every way out and back: Ctrl-Z and SIGTSTP leave a usable shell and `fg`
//! brings the dashboard back in raw mode; SIGQUIT and an abort (a failed allocation) restore
//! the terminal; a long paste arrives whole. The real binary in tmux.

use std::process::Command;

mod common;
use common::tmux::Tmux;

/// Whether the pane shows the alternate screen (the dashboard) rather than the shell's.
fn alternate(t: &Tmux) -> bool {
    t.cmd(&["display-message", "-p", "-t", "0", "#{alternate_on}"])
        .trim()
        == "1"
}

fn signal_katop(t: &Tmux, signal: &str) {
    let shell = t.cmd(&["display-message", "-p", "-t", "0", "#{pane_pid}"]);
    let out = Command::new("pkill")
        .args([signal, "-P", shell.trim(), "katop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "no katop child of the pane's shell");
}

/// Stopped: the shell has the terminal back in cooked mode; `fg` brings the dashboard back,
/// redrawn, and it answers single keys again (raw mode).
fn back_from_suspend(t: &Tmux) {
    t.wait("the shell to report katop stopped", |s| {
        s.contains("Stopped")
    });
    assert!(
        !alternate(t),
        "the alternate screen was left on while stopped"
    );
    t.type_text("stty -a | tr ' ' '\\n' | grep -x -- '-*icanon'");
    t.keys(&["Enter"]);
    t.wait("stty's answer while stopped", |s| {
        s.lines().any(|l| l.trim() == "icanon")
    });
    t.type_text("fg");
    t.keys(&["Enter"]);
    t.wait("the dashboard back after fg", |s| s.contains("q quit"));
    assert!(alternate(t), "fg did not bring the alternate screen back");
    // One key, no Enter: raw mode is back.
    t.keys(&["?"]);
    t.wait_for("katop help");
    t.keys(&["Escape"]);
    // (Esc and q sent together can arrive as one Alt-q: the help closes first.)
    t.wait("the help closed", |s| !s.contains("katop help"));
    t.keys(&["q"]);
    t.wait("the shell back", |s| !s.contains("q quit"));
    t.after_katop();
    t.wait_for("AFTER-KATOP-0");
    t.assert_cooked();
}

#[test]
fn ctrl_z_suspends_and_fg_resumes() {
    let Some(t) = Tmux::start("ctrl-z", 120, 30) else {
        return;
    };
    t.start_katop_alone("");
    t.keys(&["C-z"]);
    back_from_suspend(&t);
}

#[test]
fn sigtstp_from_outside_suspends_and_fg_resumes() {
    let Some(t) = Tmux::start("sigtstp", 120, 30) else {
        return;
    };
    t.start_katop_alone("");
    signal_katop(&t, "-TSTP");
    back_from_suspend(&t);
}

#[test]
fn a_panic_on_a_worker_thread_ends_katop_cleanly() {
    let Some(t) = Tmux::start("worker-panic", 120, 30) else {
        return;
    };
    // (A debug build's collector panics on demand.)
    t.launch_with_env("KATOP_TEST_PANIC=collector", "");
    let s = t.wait("katop's exit status", |s| {
        s.lines().any(|l| l.starts_with("AFTER-KATOP-"))
    });
    assert!(s.contains("AFTER-KATOP-1"), "{s}");
    assert!(
        s.contains("the collector thread failed") && s.contains("injected by KATOP_TEST_PANIC"),
        "{s}"
    );
    assert!(!alternate(&t));
    t.assert_cooked();
}

#[test]
fn sigquit_restores_the_terminal() {
    let Some(t) = Tmux::start("sigquit", 100, 30) else {
        return;
    };
    t.start_katop("");
    signal_katop(&t, "-QUIT");
    let s = t.wait("katop's exit status", |s| {
        s.lines().any(|l| l.starts_with("AFTER-KATOP-"))
    });
    assert!(s.contains("AFTER-KATOP-0"), "{s}");
    assert!(!alternate(&t));
    t.assert_cooked();
}

#[test]
fn an_allocation_failure_restores_the_terminal_before_the_abort() {
    let Some(t) = Tmux::start("abort", 100, 30) else {
        return;
    };
    // (A debug build fails an allocation on demand once the dashboard shows.)
    t.launch_with_env("KATOP_TEST_PANIC=alloc", "");
    let s = t.wait("katop's exit status", |s| {
        s.lines().any(|l| l.starts_with("AFTER-KATOP-"))
    });
    // Killed by SIGABRT (128 + 6), as an abort is, with the terminal put back.
    assert!(s.contains("AFTER-KATOP-134"), "{s}");
    assert!(!alternate(&t), "the alternate screen was left on");
    t.assert_cooked();
    // SIGABRT from outside ends it the same way (not a restored terminal under a dashboard
    // that carries on).
    t.start_katop("");
    signal_katop(&t, "-ABRT");
    let s = t.wait("katop's exit status after SIGABRT", |s| {
        s.contains("AFTER-KATOP-134")
    });
    assert!(!alternate(&t), "the alternate screen was left on: {s}");
}

#[test]
fn esc_and_q_typed_together_close_the_help_and_quit() {
    let Some(t) = Tmux::start("esc-q", 100, 30) else {
        return;
    };
    t.start_katop("");
    t.keys(&["?"]);
    t.wait_for("katop help");
    // One write: the terminal delivers ESC q together, which reads as Alt-q.
    t.cmd(&["send-keys", "-t", "0", "Escape", "q"]);
    t.wait_for("AFTER-KATOP-0");
    t.assert_cooked();
}

/// Pastes `text` (bracketed, as terminals paste, or as plain keystrokes) into the filter bar
/// and checks the whole filter was applied: it is valid only whole (the parenthesis closes at
/// the very end), so a paste cut short leaves the bar open saying "never closed".
fn paste_filter(t: &Tmux, text: &str, bracketed: bool) {
    t.cmd(&["set-buffer", "-b", "long", text]);
    t.keys(&["F4"]);
    t.wait_for("filter:");
    let mut paste = vec!["paste-buffer", "-b", "long", "-t", "0"];
    if bracketed {
        paste.push("-p");
    }
    t.cmd(&paste);
    t.keys(&["Enter"]);
    let s = t.wait("the pasted filter applied", |s| {
        s.lines()
            .last()
            .is_some_and(|l| l.contains("[(idle>=0s and"))
    });
    assert!(!s.contains("never closed"), "{s}");
}

#[test]
fn a_long_paste_arrives_whole() {
    let Some(t) = Tmux::start("paste", 160, 30) else {
        return;
    };
    t.start_katop("");
    // ~3,000 characters pasted as a terminal pastes them (bracketed: one event).
    let long = format!("({} idle>=0s)", "idle>=0s and ".repeat(230));
    assert!(long.len() > 3000);
    paste_filter(&t, &long, true);
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
    // And as keystrokes: more than one 1,024-byte read of the terminal, none left waiting.
    let keys = format!("({} idle>=1s)", "idle>=0s and ".repeat(100));
    assert!(keys.len() > 1300);
    t.start_katop("");
    paste_filter(&t, &keys, false);
    t.keys(&["q"]);
    t.wait_for("AFTER-KATOP-0");
}

#[test]
fn partial_results_are_said_for_as_long_as_they_last() {
    if !common::is_root() {
        common::skipped("needs root to run katop as nobody");
        return;
    }
    let Some(t) = Tmux::start("partial", 200, 30) else {
        return;
    };
    // As nobody, other users' processes and sockets cannot be read: every poll says so, not
    // only those that rescan /proc.
    let (dir, bin) = common::nobody_dir("partial");
    t.type_text(&format!(
        "clear; HOME={} setpriv --reuid=65534 --regid=65534 --clear-groups {} --interval 200ms",
        dir.display(),
        bin.display()
    ));
    t.keys(&["Enter"]);
    t.wait("the dashboard as nobody, and its warning", |s| {
        s.contains("q quit") && s.contains("could not be read")
    });
    // Polls every 200 ms for 3 s: the warning is on screen at every look.
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let s = t.screen();
        assert!(
            s.contains("could not be read"),
            "the warning went away:\n{s}"
        );
    }
    t.keys(&["q"]);
    let _ = std::fs::remove_dir_all(dir);
}
