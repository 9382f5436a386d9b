//! Terminal set-up and, on every way out (quit, error, panic, signal, suspend, abort),
//! restore.

mod abort;

use std::io::{self, Stdout};
use std::sync::Mutex;

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Threads whose panic ends katop through the UI loop (which restores the terminal, then
/// prints the message) rather than under a UI that would go on drawing.
pub const WORKER_PREFIX: &str = "katop-";

/// The first worker thread's panic message, for the UI loop to report.
static WORKER_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Raw mode, alternate screen, mouse, bracketed paste. A panic on the UI thread restores the
/// terminal before its message prints; a worker's panic is kept for the UI loop, which sees
/// the worker gone and ends katop with it.
pub fn init() -> io::Result<Term> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let worker = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with(WORKER_PREFIX));
        if worker {
            if let Ok(mut slot) = WORKER_PANIC.lock() {
                let name = std::thread::current().name().unwrap_or("?").to_string();
                slot.get_or_insert(format!("{name} thread: {info}"));
            }
            return;
        }
        restore();
        hook(info);
    }));
    enter()?;
    Terminal::new(CrosstermBackend::new(io::stdout())).inspect_err(|_| restore())
}

fn enter() -> io::Result<()> {
    abort::arm();
    enable_raw_mode()?;
    let mut out = io::stdout();
    if let Err(e) = execute!(
        out,
        EnterAlternateScreen,
        EnableMouseCapture,
        EnableBracketedPaste
    ) {
        restore();
        return Err(e);
    }
    Ok(())
}

/// Puts the terminal back as it was; safe to call more than once.
pub fn restore() {
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
}

/// Ctrl-Z or SIGTSTP, as htop does it: the terminal restored, the process stopped (the shell
/// takes the terminal back); after `fg` (SIGCONT) raw mode again and the whole screen redrawn.
pub fn suspend(terminal: &mut Term) -> io::Result<()> {
    restore();
    // SIGSTOP cannot be caught, so this stops katop even with its own SIGTSTP handler.
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    resume(terminal)
}

/// After SIGCONT: back to raw mode and the alternate screen (idempotent when katop was stopped
/// from outside without leaving them), and a full redraw.
pub fn resume(terminal: &mut Term) -> io::Result<()> {
    enter()?;
    // Not `clear()`: it asks the terminal for the cursor position, an answer the event
    // reader may take. A resize to the current size clears and forces a full redraw.
    let size = terminal.size()?;
    terminal.resize(ratatui::layout::Rect::new(0, 0, size.width, size.height))
}

/// A worker thread's panic, once (see [`init`]).
pub fn take_worker_panic() -> Option<String> {
    WORKER_PANIC.lock().ok()?.take()
}
