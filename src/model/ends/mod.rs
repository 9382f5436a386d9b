//! Why a connection ended: the causes, where each was learned, and the tracker that reads
//! them off the kernel's tracepoints.
//!
//! What the kernel does (`net/ipv4/tcp_input.c`, `tcp_timer.c`, `tcp.c`; checked on 6.18):
//! - an RST received: `tcp:tcp_receive_reset` (with the cookie), then ECONNRESET;
//! - a keepalive timeout: `tcp:tcp_send_reset` with reason `TCP_KEEPALIVE_TIMEOUT`, then
//!   `tcp_write_err`: ETIMEDOUT (or the ICMP soft error recorded, e.g. EHOSTUNREACH);
//! - a retransmission (or zero-window probe) timeout: `tcp_write_err` without a reset;
//! - `SOCK_DESTROY` (`katop kill`, `ss -K`): `tcp_abort` reports ECONNABORTED;
//! - a close with `SO_LINGER {1, 0}` or unread data: `tcp:tcp_send_reset`, no FIN;
//! - an orderly close: the socket passes through `FIN_WAIT1` or `CLOSE_WAIT`.
//!
//! `tcp:tcp_destroy_sock` ends the story with the socket's cookie.

pub mod join;
pub mod trace;
pub mod tracker;

use std::fmt;

/// Why a connection ended (JSON `cause`; the words are a contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// An orderly close (FIN), by either side.
    Closed,
    /// The peer sent RST.
    ResetReceived,
    /// This host aborted it (`SO_LINGER` 0, unread data at close, …).
    ResetSent,
    /// The peer stopped answering keepalive probes.
    KeepaliveTimeout,
    /// Unacknowledged data outlived `tcp_retries2` or `TCP_USER_TIMEOUT`.
    RetransmitTimeout,
    /// `SOCK_DESTROY`: `katop kill`, `ss -K`.
    Killed,
    Unknown,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Closed,
        Cause::ResetReceived,
        Cause::ResetSent,
        Cause::KeepaliveTimeout,
        Cause::RetransmitTimeout,
        Cause::Killed,
        Cause::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cause::Closed => "closed",
            Cause::ResetReceived => "reset-received",
            Cause::ResetSent => "reset-sent",
            Cause::KeepaliveTimeout => "keepalive-timeout",
            Cause::RetransmitTimeout => "retransmit-timeout",
            Cause::Killed => "killed",
            Cause::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a cause came from (JSON `cause_source`): seen happen, or inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CauseSource {
    /// The kernel's tracepoints said so as it happened (exact).
    Tracepoint,
    /// Worked out from katop's last poll of the socket (its state, probes, retransmits):
    /// an inference, marked as such everywhere.
    Inferred,
}

impl CauseSource {
    pub fn name(self) -> &'static str {
        match self {
            CauseSource::Tracepoint => "tracepoint",
            CauseSource::Inferred => "inferred",
        }
    }

    pub fn is_inferred(self) -> bool {
        self == CauseSource::Inferred
    }
}

/// A cause as the dashboard shows it: its name, `~` before it when inferred.
pub fn label(cause: Cause, source: CauseSource) -> String {
    match source {
        CauseSource::Tracepoint => format!("ended: {cause}"),
        CauseSource::Inferred => format!("ended: ~{cause}"),
    }
}

/// What katop's last poll saw of a socket that is gone: enough to infer a cause when no
/// tracepoint said one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSeen {
    pub state: crate::model::SockState,
    /// Keepalive probes out unanswered (`tcpi_probes` with a keepalive timer).
    pub probes: u8,
    /// Retransmissions of the head segment (`tcpi_retransmits`).
    pub retransmits: u8,
}

/// The cause a socket's last poll suggests, always [`CauseSource::Inferred`]: a socket last
/// seen closing closed; one last seen probing an unanswering peer or retransmitting most
/// likely timed out; anything else cannot be told.
pub fn infer(last: LastSeen) -> Cause {
    use crate::model::SockState as S;
    match last.state {
        S::FinWait1 | S::FinWait2 | S::TimeWait | S::CloseWait | S::LastAck | S::Closing => {
            Cause::Closed
        }
        S::Established if last.probes > 0 => Cause::KeepaliveTimeout,
        S::Established if last.retransmits > 0 => Cause::RetransmitTimeout,
        _ => Cause::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SockState;

    #[test]
    fn causes_are_named_as_documented() {
        let names: Vec<&str> = Cause::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "closed",
                "reset-received",
                "reset-sent",
                "keepalive-timeout",
                "retransmit-timeout",
                "killed",
                "unknown"
            ]
        );
    }

    #[test]
    fn inference_follows_the_last_poll() {
        let seen = |state, probes, retransmits| LastSeen {
            state,
            probes,
            retransmits,
        };
        assert_eq!(infer(seen(SockState::CloseWait, 0, 0)), Cause::Closed);
        assert_eq!(infer(seen(SockState::FinWait2, 0, 0)), Cause::Closed);
        assert_eq!(
            infer(seen(SockState::Established, 3, 0)),
            Cause::KeepaliveTimeout
        );
        assert_eq!(
            infer(seen(SockState::Established, 0, 4)),
            Cause::RetransmitTimeout
        );
        assert_eq!(infer(seen(SockState::Established, 0, 0)), Cause::Unknown);
        assert_eq!(infer(seen(SockState::SynSent, 0, 2)), Cause::Unknown);
    }
}
