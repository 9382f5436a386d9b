//! Evaluating an expression against one socket.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn eval(x: &Expr, e: &SockEntry, now: Instant) -> bool {
    match x {
        Expr::All => true,
        Expr::And(v) => v.iter().all(|x| eval(x, e, now)),
        Expr::Or(v) => v.iter().any(|x| eval(x, e, now)),
        Expr::Not(x) => !eval(x, e, now),
        Expr::Term(t) => term(t, e, now),
    }
}

pub(super) fn term(t: &Term, e: &SockEntry, now: Instant) -> bool {
    let s = &e.sock;
    match t {
        Term::State(states) => states.contains(&s.state),
        Term::Connected => !matches!(s.state, SockState::Listen | SockState::Close),
        Term::Proto(p) => s.proto == *p,
        Term::Family(f) => s.family == *f,
        Term::Addr { remote, pat } => pat.matches(if *remote { &s.remote } else { &s.local }),
        Term::Cmp(Num::Port, op, v) => [s.local.port(), s.remote.port()]
            .into_iter()
            .flatten()
            .any(|p| op.test(u64::from(p), *v)),
        Term::Cmp(num, op, v) => number(*num, e, now).is_some_and(|n| op.test(n, *v)),
        Term::Service(name) => e
            .service()
            .is_some_and(|svc| svc.eq_ignore_ascii_case(name)),
        Term::ProcName(name) => s
            .owner
            .process()
            .is_some_and(|p| p.name.to_ascii_lowercase().contains(name.as_str())),
        Term::Comm(pat) => s.owner.process().is_some_and(|p| pat.matches(&p.name)),
        Term::Owner(kind) => matches!(
            (kind, &s.owner),
            (OwnerIs::Process, crate::model::Owner::Process { .. })
                | (OwnerIs::None, crate::model::Owner::None)
                | (OwnerIs::Unknown, crate::model::Owner::Unknown)
        ),
        Term::Netns(want) => netns_is(e, want),
        Term::Container(pat) => e.container().is_some_and(|c| pat.matches(c)),
        Term::Keepalive(k) => e.keepalive == Some(*k),
        Term::KaSource(src) => e.params().is_some_and(|p| p.source == *src),
        Term::Timer(kind) => s.timer.map(|t| t.kind) == *kind,
        Term::Stale(None) => !e.stale.is_empty(),
        Term::Stale(Some(r)) => e.stale.contains(*r),
    }
}

/// `netns:host`, `netns:INODE`, or a glob on the namespace's name (or its container's). With
/// one namespace read, every socket is in it: katop's own, taken as the host's.
pub(super) fn netns_is(e: &SockEntry, want: &str) -> bool {
    let ns = e.ctx.namespace(e.sock.netns);
    if want == "host" {
        return ns.is_none_or(|n| n.host);
    }
    if let Ok(inode) = want.parse::<u64>() {
        return e.sock.netns.ino() == inode;
    }
    let pat = glob::Pattern::new(want).ok();
    let hit = |name: &str| pat.as_ref().map_or(name == want, |p| p.matches(name));
    ns.is_some_and(|n| hit(&n.name) || n.container.as_deref().is_some_and(hit))
}

pub(super) fn number(n: Num, e: &SockEntry, now: Instant) -> Option<u64> {
    let s = &e.sock;
    let info = s.tcp_info.as_ref();
    match n {
        Num::Sport => s.local.port().map(u64::from),
        Num::Dport => s.remote.port().map(u64::from),
        Num::Port => None, // handled in `term`: either end
        Num::Uid => s.uid.map(|u| u64::from(u.get())),
        Num::Pid => s.owner.process().map(|p| u64::from(p.pid)),
        Num::Probes => e.keepalive_probes().map(u64::from),
        Num::Retrans => info
            .and_then(crate::model::tcp_info::TcpInfo::retransmits)
            .map(u64::from),
        Num::RecvQ => Some(u64::from(s.recv_q)),
        Num::SendQ => Some(u64::from(s.send_q)),
        Num::IdleMs => e.idle_ms().map(u64::from),
        Num::AgeMs => Some(e.age(now).as_millis() as u64),
        Num::RttUs => info
            .and_then(crate::model::tcp_info::TcpInfo::rtt)
            .map(u64::from),
        Num::KaIdleMs => e.params().map(|p| u64::from(p.idle_s) * 1000),
        Num::KaIntvlMs => e.params().map(|p| u64::from(p.intvl_s) * 1000),
        Num::KaCnt => e.params().map(|p| u64::from(p.cnt)),
        Num::UserTimeoutMs => e.params().map(|p| u64::from(p.user_timeout_ms)),
        Num::DetectMs => e.detect(now).map(|c| match c.detect {
            crate::model::Detect::Never | crate::model::Detect::ZeroWindow => u64::MAX,
            crate::model::Detect::InMs(ms) => ms,
        }),
    }
}
