//! Errors at the edges of katop's layers, each saying what failed and on what.

use std::io;

use crate::collector::wire::WireError;

/// Why a poll of the kernel failed. A failed poll is data for the UI, never a crash.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Open(#[source] io::Error),
    #[error("cannot send the {what} dump request: {source}")]
    Send {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot read the {what} dump reply: {source}")]
    Recv {
        what: &'static str,
        source: io::Error,
    },
    #[error("the {what} dump failed: {source}")]
    Reply {
        what: &'static str,
        source: WireError,
    },
    #[error("network namespace {0} no longer exists (no process or mount holds it)")]
    NetnsGone(u64),
    #[error("network namespace {id}: {what}: {errno}")]
    Netns {
        id: u64,
        what: String,
        errno: rustix::io::Errno,
    },
}
