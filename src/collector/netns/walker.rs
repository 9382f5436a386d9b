//! The one thread that enters network namespaces. setns is per thread, and a thread that
//! entered one and then exits costs the kernel a grace period: a short-lived thread per
//! namespace made 2,000 namespaces take 27 s to read. So one long-lived thread does it: it
//! enters a namespace, runs the job (making sockets there, dumping, reading its `/proc` files),
//! and goes back to katop's own namespace at once, so it never keeps a dead container's
//! namespace alive. It runs nothing else; every other thread stays where it is.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

use rustix::io::Errno;
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// A job: run once the walker entered the namespace (`Ok`), or told why it could not (`Err`).
type Job = Box<dyn FnOnce(Result<(), Errno>) + Send>;

/// The walker's mailbox, started on first use (again, if it ever ended).
static WALKER: Mutex<Option<Sender<(OwnedFd, Job)>>> = Mutex::new(None);

/// Runs `job` on the walker inside the namespace `fd` refers to; `Err` when the walker cannot
/// be started or has gone (then `job` never runs).
pub fn run(fd: OwnedFd, job: Job) -> Result<(), Errno> {
    let mut walker = WALKER.lock().map_err(|_| Errno::IO)?;
    let mut work = (fd, job);
    for _ in 0..2 {
        let tx = match walker.as_ref() {
            Some(tx) => tx.clone(),
            None => walker.insert(start()?).clone(),
        };
        match tx.send(work) {
            Ok(()) => return Ok(()),
            // It ended (a job panicked): start another and hand the job to it.
            Err(e) => {
                work = e.0;
                *walker = None;
            }
        }
    }
    Err(Errno::IO)
}

fn start() -> Result<Sender<(OwnedFd, Job)>, Errno> {
    let home = rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let (tx, rx) = channel::<(OwnedFd, Job)>();
    std::thread::Builder::new()
        .name("katop-setns".into())
        .spawn(move || {
            for (fd, job) in rx {
                let entered =
                    move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network));
                drop(fd);
                let ok = entered.is_ok();
                job(entered);
                // Home again before anything else: no namespace is held between jobs.
                if ok
                    && move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network))
                        .is_err()
                {
                    return;
                }
            }
        })
        .map_err(|_| Errno::AGAIN)?;
    Ok(tx)
}
