//! The terminal restored when katop aborts: an allocation that fails, a stack overflow, a
//! panic while panicking all end in `abort()`, which no Rust code outlives. A `SIGABRT` handler
//! writes the escape sequences that undo the dashboard's terminal modes and puts back the
//! terminal settings saved before raw mode, then does what `SIGABRT` does by default (ends the
//! process, with a core dump where enabled), whether `abort()` or `kill -ABRT` sent it. The only
//! unsafe code in katop: installing that handler, whose body does nothing but `write(2)`,
//! `tcsetattr(3)` and the default action (all async-signal-safe) on data prepared beforehand.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use rustix::termios::{OptionalActions, Termios};

/// Bracketed paste off, mouse reporting off (every mode crossterm turns on), the main screen
/// back, the cursor shown.
const RESTORE: &[u8] =
    b"\x1b[?2004l\x1b[?1006l\x1b[?1015l\x1b[?1003l\x1b[?1002l\x1b[?1000l\x1b[?1049l\x1b[?25h";

/// The terminal and its settings before raw mode.
static SAVED: OnceLock<(OwnedFd, Termios)> = OnceLock::new();

/// Saves the terminal's settings (call before raw mode) and installs the handler, once.
pub fn arm() {
    if SAVED.get().is_some() {
        return;
    }
    let Ok(tty) = rustix::fs::open(
        "/dev/tty",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    let Ok(settings) = rustix::termios::tcgetattr(&tty) else {
        return;
    };
    if SAVED.set((tty, settings)).is_err() {
        return;
    }
    // SAFETY: the handler only reads `SAVED`, set above and never changed again (a `OnceLock`
    // read is an atomic load), and makes async-signal-safe system calls (signal-hook documents
    // `emulate_default_handler` as such); it allocates, locks and panics nothing.
    let _ = unsafe { signal_hook::low_level::register(signal_hook::consts::SIGABRT, restore) };
}

/// In the signal handler: the terminal put back.
fn restore() {
    if let Some((tty, settings)) = SAVED.get() {
        let _ = rustix::io::write(tty, RESTORE);
        let _ = rustix::termios::tcsetattr(tty, OptionalActions::Now, settings);
    }
    let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGABRT);
}
