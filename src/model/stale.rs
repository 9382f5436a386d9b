//! Keepalive status and the stale rules: why a connection deserves an operator's look.

use std::time::Duration;

use serde::Serialize;

use crate::model::{Owner, Proto, RawSock, SockState, TimerKind};

/// Whether TCP keepalive protects a connection, as far as the kernel's armed timer tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Keepalive {
    /// The keepalive timer is armed.
    On,
    /// Connected, no timer armed, nothing to retransmit: `SO_KEEPALIVE` is off.
    Off,
    /// Another timer (retransmit, zero-window probe) hides the keepalive timer.
    Unknown,
}

impl Keepalive {
    /// `None` where keepalive does not apply (listeners, UDP, closing states).
    pub fn of(sock: &RawSock) -> Option<Keepalive> {
        // The kernel's keepalive timer runs in these states (tcp_keepalive_timer).
        let applies = sock.proto == Proto::Tcp
            && matches!(sock.state, SockState::Established | SockState::CloseWait);
        if !applies {
            return None;
        }
        // Read from the socket: SO_KEEPALIVE itself, whatever timer is armed.
        if sock.opts.read {
            return Some(if sock.opts.keepalive {
                Keepalive::On
            } else {
                Keepalive::Off
            });
        }
        Some(match sock.timer.map(|t| t.kind) {
            Some(TimerKind::Keepalive) => Keepalive::On,
            None => Keepalive::Off,
            Some(_) => Keepalive::Unknown,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Keepalive::On => "on",
            Keepalive::Off => "off",
            Keepalive::Unknown => "unknown",
        }
    }
}

/// One reason a socket is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleReason {
    Probing,
    Retransmitting,
    Dead,
    CloseWait,
    Unaccepted,
    Orphan,
    AtRisk,
    NoKeepalive,
    Idle,
}

impl StaleReason {
    /// Every reason, most severe first: a peer not answering probes or acknowledgements, then
    /// leaks and connections no one will take, then what a middlebox or a missing keepalive
    /// may cost later, then mere idleness. Cells, JSON lists and counts follow this order.
    pub const ALL: [StaleReason; 9] = [
        StaleReason::Probing,
        StaleReason::Retransmitting,
        StaleReason::Dead,
        StaleReason::CloseWait,
        StaleReason::Unaccepted,
        StaleReason::Orphan,
        StaleReason::AtRisk,
        StaleReason::NoKeepalive,
        StaleReason::Idle,
    ];

    /// The name used in filters, JSON and tags.
    pub fn name(self) -> &'static str {
        match self {
            StaleReason::Idle => "idle",
            StaleReason::NoKeepalive => "no-keepalive",
            StaleReason::Probing => "probing",
            StaleReason::Retransmitting => "retransmitting",
            StaleReason::Dead => "dead",
            StaleReason::CloseWait => "close-wait",
            StaleReason::Orphan => "orphan",
            StaleReason::Unaccepted => "unaccepted",
            StaleReason::AtRisk => "at-risk",
        }
    }

    /// One line for the UI and `--help`.
    pub fn explain(self) -> &'static str {
        match self {
            StaleReason::Idle => "ESTABLISHED and no data either way for longer than --stale-after",
            StaleReason::NoKeepalive => {
                "idle with keepalive off: if the peer died, this side will never notice"
            }
            StaleReason::Probing => "keepalive probes go unanswered: the peer is not responding",
            StaleReason::Retransmitting => {
                "data is being retransmitted without acknowledgement (backoff > 0)"
            }
            StaleReason::Dead => {
                "the kernel ended this connection (a reset, a timeout, a kill) and its \
                 application still holds it: it finds out at its next read or write"
            }
            StaleReason::CloseWait => {
                "the peer closed longer than --stale-after ago and the application never called close()"
            }
            StaleReason::Orphan => {
                "no process holds this connection and no listener is taking it, for longer than \
                 --stale-after (a kernel socket, one in flight between processes, or leaked)"
            }
            StaleReason::Unaccepted => {
                "waiting in its listener's accept queue for longer than --stale-after: the \
                 application stopped calling accept()"
            }
            StaleReason::AtRisk => {
                "silent longer than a declared middlebox (--middlebox-timeout) or conntrack \
                 remembers, with no keepalive probing sooner: the flow is likely forgotten"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<StaleReason> {
        StaleReason::ALL.into_iter().find(|r| r.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A connected TCP socket that no process holds, as far as katop could see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unowned {
    /// How long it has had no holder: for a socket no file ever referred to, its age as the
    /// kernel measures it; otherwise how long katop has watched it ownerless.
    pub waited: Duration,
    /// A listener on its local address and port exists: it is waiting to be accepted.
    pub queued: bool,
}

impl Unowned {
    /// Whether `sock` is connected TCP with no holder (`Owner::None`; an unknown owner is
    /// not no owner), and so may be an [`Unowned`].
    pub fn applies(sock: &RawSock) -> bool {
        sock.proto == Proto::Tcp
            && sock.owner == Owner::None
            && matches!(sock.state, SockState::Established | SockState::CloseWait)
    }

    /// A socket no file ever referred to was never accepted: it has not sent a byte since the
    /// handshake, so the kernel's time since data was sent is its age.
    pub fn kernel_age(sock: &RawSock) -> Option<Duration> {
        (sock.inode.0 == 0)
            .then(|| sock.tcp_info.as_ref()?.last_data_sent())
            .flatten()
            .map(|ms| Duration::from_millis(ms.into()))
    }
}

/// A small set of stale reasons (two bytes per socket).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StaleSet(u16);

impl StaleSet {
    pub fn insert(&mut self, r: StaleReason) {
        self.0 |= r.bit();
    }

    pub fn contains(self, r: StaleReason) -> bool {
        self.0 & r.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How bad the worst reason is: 9 for a peer not answering probes down to 1 for idle, 0
    /// when not stale.
    pub fn severity(self) -> u8 {
        if self.0 == 0 {
            0
        } else {
            StaleReason::ALL.len() as u8 - self.0.trailing_zeros() as u8
        }
    }

    /// The reasons, most severe first.
    pub fn iter(self) -> impl Iterator<Item = StaleReason> {
        StaleReason::ALL
            .into_iter()
            .filter(move |r| self.contains(*r))
    }
}

impl Serialize for StaleSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(StaleReason::name))
    }
}

/// A TCP connection the kernel ended (`CLOSE`, out of the socket tables) that a process still
/// holds: what the collector finds behind a process's fd with no listed socket.
pub fn is_dead(sock: &RawSock) -> bool {
    sock.proto == Proto::Tcp
        && sock.state == SockState::Close
        && matches!(sock.owner, Owner::Process { .. })
}

/// The stale rules; `in_state` is how long the socket has been in its state, as far as known,
/// and `unowned` says how long a connected TCP socket has had no holder.
pub fn reasons(
    sock: &RawSock,
    in_state: Duration,
    unowned: Option<Unowned>,
    stale_after: Duration,
) -> StaleSet {
    let mut set = StaleSet::default();
    let info = sock.tcp_info.as_ref();
    let idle = info
        .and_then(super::tcp_info::TcpInfo::idle_ms)
        .map(|ms| Duration::from_millis(ms.into()));
    if sock.state == SockState::Established && idle.is_some_and(|i| i >= stale_after) {
        set.insert(StaleReason::Idle);
        if Keepalive::of(sock) == Some(Keepalive::Off) {
            set.insert(StaleReason::NoKeepalive);
        }
    }
    if let Some(t) = sock.timer {
        if t.kind == TimerKind::Keepalive && t.retrans > 0 {
            set.insert(StaleReason::Probing);
        }
        if t.kind == TimerKind::Retransmit && t.retrans > 0 {
            set.insert(StaleReason::Retransmitting);
        }
    }
    if info
        .and_then(super::tcp_info::TcpInfo::backoff)
        .is_some_and(|b| b > 0)
        && sock.timer.is_some_and(|t| t.kind == TimerKind::Retransmit)
    {
        set.insert(StaleReason::Retransmitting);
    }
    if is_dead(sock) {
        set.insert(StaleReason::Dead);
    }
    if sock.state == SockState::CloseWait {
        // The peer's FIN came no later than its last ACK, so the time since that ACK is a
        // lower bound on the time in CLOSE_WAIT even before katop has watched it that long.
        let since_ack = info
            .and_then(super::tcp_info::TcpInfo::last_ack_recv)
            .map_or(Duration::ZERO, |ms| Duration::from_millis(ms.into()));
        if in_state.max(since_ack) >= stale_after {
            set.insert(StaleReason::CloseWait);
        }
    }
    // A connection no process holds is normal for the milliseconds before accept(): only
    // one that has waited --stale-after counts.
    if let Some(u) = unowned.filter(|u| u.waited >= stale_after) {
        set.insert(if u.queued {
            StaleReason::Unaccepted
        } else {
            StaleReason::Orphan
        });
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::table::tests::{sock, with_idle};
    use crate::model::{Timer, TimerKind};

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn idle_and_no_keepalive() {
        let quiet = with_idle(sock(SockState::Established), 600_000);
        let r = reasons(&quiet, Duration::ZERO, None, FIVE_MIN);
        assert!(r.contains(StaleReason::Idle));
        assert!(r.contains(StaleReason::NoKeepalive));

        let mut protected = quiet.clone();
        protected.timer = Some(Timer {
            kind: TimerKind::Keepalive,
            expires_ms: 1000,
            retrans: 0,
        });
        let r = reasons(&protected, Duration::ZERO, None, FIVE_MIN);
        assert!(r.contains(StaleReason::Idle));
        assert!(!r.contains(StaleReason::NoKeepalive));

        let busy = with_idle(sock(SockState::Established), 1000);
        assert!(reasons(&busy, Duration::ZERO, None, FIVE_MIN).is_empty());
    }

    #[test]
    fn idle_is_monotonic_in_idle_time() {
        let mut was = false;
        for ms in (0..1_000_000).step_by(50_000) {
            let now = reasons(
                &with_idle(sock(SockState::Established), ms),
                Duration::ZERO,
                None,
                FIVE_MIN,
            )
            .contains(StaleReason::Idle);
            assert!(now || !was, "idle flag dropped at {ms} ms");
            was = now;
        }
        assert!(was);
    }

    #[test]
    fn probing_and_retransmitting() {
        let mut s = with_idle(sock(SockState::Established), 0);
        s.timer = Some(Timer {
            kind: TimerKind::Keepalive,
            expires_ms: 1000,
            retrans: 3,
        });
        assert!(reasons(&s, Duration::ZERO, None, FIVE_MIN).contains(StaleReason::Probing));
        s.timer = Some(Timer {
            kind: TimerKind::Retransmit,
            expires_ms: 200,
            retrans: 2,
        });
        let r = reasons(&s, Duration::ZERO, None, FIVE_MIN);
        assert!(r.contains(StaleReason::Retransmitting));
        assert!(!r.contains(StaleReason::Probing));
        assert_eq!(Keepalive::of(&s), Some(Keepalive::Unknown));
    }

    #[test]
    fn close_wait_counts_from_the_peers_last_ack() {
        let cw = with_idle(sock(SockState::CloseWait), 0);
        assert!(
            !reasons(&cw, Duration::from_secs(10), None, FIVE_MIN).contains(StaleReason::CloseWait)
        );
        assert!(
            reasons(&cw, Duration::from_secs(301), None, FIVE_MIN).contains(StaleReason::CloseWait)
        );
        // with_idle sets last_ack_recv too: ten minutes since the FIN.
        let old = with_idle(sock(SockState::CloseWait), 600_000);
        assert!(reasons(&old, Duration::ZERO, None, FIVE_MIN).contains(StaleReason::CloseWait));
    }

    #[test]
    fn ownerless_connections_count_only_after_stale_after() {
        let mut s = sock(SockState::Established);
        s.owner = Owner::None;
        assert!(Unowned::applies(&s));
        let young = Unowned {
            waited: Duration::from_millis(3),
            queued: false,
        };
        assert!(reasons(&s, Duration::ZERO, Some(young), FIVE_MIN).is_empty());
        let old = Unowned {
            waited: FIVE_MIN,
            ..young
        };
        assert!(reasons(&s, Duration::ZERO, Some(old), FIVE_MIN).contains(StaleReason::Orphan));
        // Waiting in a listener's accept queue is its own reason, never orphan.
        let queued = Unowned {
            queued: true,
            ..old
        };
        let r = reasons(&s, Duration::ZERO, Some(queued), FIVE_MIN);
        assert!(r.contains(StaleReason::Unaccepted) && !r.contains(StaleReason::Orphan));
        // An owner katop could not see is not no owner; TIME_WAIT is held by none by design.
        s.owner = Owner::Unknown;
        assert!(!Unowned::applies(&s));
        let mut tw = sock(SockState::TimeWait);
        tw.owner = Owner::None;
        assert!(!Unowned::applies(&tw));
    }

    #[test]
    fn a_never_accepted_socket_is_as_old_as_its_last_send() {
        let mut s = with_idle(sock(SockState::Established), 2500);
        s.owner = Owner::None;
        assert_eq!(Unowned::kernel_age(&s), None, "a file refers to it");
        s.inode = crate::model::Inode(0);
        assert_eq!(Unowned::kernel_age(&s), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn names_round_trip_and_serialize() {
        for r in StaleReason::ALL {
            assert_eq!(StaleReason::from_name(r.name()), Some(r));
        }
        let mut set = StaleSet::default();
        set.insert(StaleReason::NoKeepalive);
        set.insert(StaleReason::Idle);
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["no-keepalive","idle"]"#
        );
    }
}
