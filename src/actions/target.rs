//! What an action is aimed at, as the operator saw it, and what came of it.

use std::time::SystemTime;

use serde::Serialize;

use super::kill::Mechanism;
use crate::collector::sock_diag::InetSockId;
use crate::model::{Inode, NetnsId, Owner, Proto, SockEntry, SockOpts, SockState};

/// The process that held a target socket, and through which fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetOwner {
    pub pid: u32,
    pub fd: u32,
    pub name: Box<str>,
}

/// One socket chosen for an action: its kernel identity (with cookie) plus what the operator
/// was shown, for the confirmation and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None` for a Unix socket (no kernel call can destroy one).
    pub id: Option<InetSockId>,
    pub proto: Proto,
    pub state: SockState,
    pub local: String,
    pub remote: String,
    pub netns: NetnsId,
    /// The namespace's name when katop read several (`podman:web-1`, `host`).
    pub netns_name: Option<String>,
    pub inode: Inode,
    pub cookie: u64,
    /// The socket's owner uid (whose it is, for [`super::Scope`]).
    pub uid: Option<u32>,
    pub owner: Option<TargetOwner>,
    /// No owner was found because katop could not see every process (`?`, not `-`).
    pub owner_unknown: bool,
    pub idle_ms: Option<u32>,
    /// Stale reasons' names, as flagged when chosen.
    pub stale: Vec<&'static str>,
    /// Why the model says never to act on it, whatever the filter chose (a connection not
    /// yet accepted, younger than `--stale-after`).
    pub guard: Option<String>,
}

impl Target {
    pub fn of(e: &SockEntry<'_>) -> Self {
        let s = e.sock;
        Target {
            id: InetSockId::of(s),
            proto: s.proto,
            state: s.state,
            local: s.local.to_string(),
            remote: s.remote.to_string(),
            netns: s.netns,
            netns_name: e.netns_name().map(str::to_string),
            inode: s.inode,
            cookie: s.cookie.0,
            uid: s.uid.map(crate::model::Uid::get),
            owner_unknown: s.owner == Owner::Unknown,
            guard: e.protected(),
            owner: match &s.owner {
                Owner::Process { process, fd } => Some(TargetOwner {
                    pid: process.pid,
                    fd: *fd,
                    name: process.name.clone(),
                }),
                _ => None,
            },
            idle_ms: e.idle_ms(),
            stale: e
                .stale
                .iter()
                .map(crate::model::StaleReason::name)
                .collect(),
        }
    }

    pub fn state_name(&self) -> &'static str {
        self.state.name(self.proto)
    }

    /// `name[pid]`; `-` when no process holds it, `?` when katop could not see.
    pub fn process_label(&self) -> String {
        match &self.owner {
            Some(o) => format!("{}[{}]", o.name, o.pid),
            None if self.owner_unknown => "?".into(),
            None => "-".into(),
        }
    }

    /// Why katop will not act on it, if it will not: the model's guard, then whose it is.
    pub fn refusal(&self, scope: &super::Scope) -> Option<String> {
        self.guard.clone().or_else(|| scope.refusal(self.uid))
    }

    /// [`Target::refusal`], and what the kernel would refuse `action` (a kill by `method`) for
    /// lack of a privilege: everything foreseeable before acting.
    pub fn foreseen_refusal(
        &self,
        scope: &super::Scope,
        powers: &super::Powers,
        action: Action,
        method: super::Method,
    ) -> Option<String> {
        self.refusal(scope)
            .or_else(|| powers.refusal(action, method, self))
    }

    /// One line for confirmations and dry runs: `tcp ESTABLISHED 10.0.0.1:5 → 10.0.0.2:80 …`,
    /// printable (a process name or Unix path cannot smuggle escapes to the terminal).
    pub fn describe(&self) -> String {
        let idle = self.idle_ms.map_or_else(
            || "-".into(),
            |ms| crate::model::duration::format_ms_short(u64::from(ms)),
        );
        let stale = if self.stale.is_empty() {
            String::new()
        } else {
            format!("  stale: {}", self.stale.join(","))
        };
        // Outside the host, the namespace first: a port says little across namespaces.
        let ns = match self.netns_name.as_deref() {
            Some(n) if n != "host" => format!("[{n}] "),
            _ => String::new(),
        };
        crate::text::printable_owned(format!(
            "{ns}{} {} {} → {}  {}  idle {idle}{stale}",
            self.proto.name(),
            self.state_name(),
            self.local,
            self.remote,
            self.process_label()
        ))
    }
}

/// What happened to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel acted, and re-reading it shows the socket gone (`after: None`) or closing.
    Killed {
        mechanism: Mechanism,
        after: Option<SockState>,
    },
    /// The chosen socket no longer exists (a socket that reuses its ports is another socket
    /// and was not touched).
    AlreadyGone,
    /// Keepalive options were set: what they were and are, read back from the socket, and
    /// whether the kernel now reports a keepalive timer armed.
    Changed {
        before: SockOpts,
        after: SockOpts,
        timer_armed: bool,
    },
    /// Nothing was done, for this reason (a missing privilege says which and how to get it).
    Refused(String),
    /// The attempt was made and did not work.
    Failed(String),
}

impl Outcome {
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Killed { .. } => "killed",
            Outcome::Changed { .. } => "changed",
            Outcome::AlreadyGone => "already-gone",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }

    pub fn mechanism(&self) -> Option<Mechanism> {
        match self {
            Outcome::Killed { mechanism, .. } => Some(*mechanism),
            _ => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Refused(r) | Outcome::Failed(r) => Some(r),
            _ => None,
        }
    }

    /// Done, or moot: the socket is not there any more, whoever closed it.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Killed { .. } | Outcome::Changed { .. } | Outcome::AlreadyGone
        )
    }
}

/// What was asked of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Kill,
    /// Turn keepalive on with these timers.
    Keepalive(super::keepalive::Change),
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Keepalive(_) => "keepalive",
        }
    }

    /// The word for success in summaries.
    fn done(self) -> &'static str {
        match self {
            Action::Kill => "killed",
            Action::Keepalive(_) => "changed",
        }
    }
}

/// One attempt on one target: the log's and `--json`'s record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub target: Target,
    pub action: Action,
    pub outcome: Outcome,
    pub at: SystemTime,
}

impl Report {
    /// `killed (sock-destroy, now gone)  tcp ESTABLISHED …`: one line for people.
    pub fn line(&self) -> String {
        let what = self.target.describe();
        match &self.outcome {
            Outcome::Killed { mechanism, after } => format!(
                "killed ({}, now {})  {what}",
                mechanism.name(),
                after.map_or("gone", |s| s.name(self.target.proto))
            ),
            Outcome::Changed {
                before,
                after,
                timer_armed,
            } => format!(
                "changed ({}, was {}{})  {what}",
                opts_text(after),
                opts_text(before),
                if *timer_armed {
                    "; keepalive timer armed"
                } else {
                    ""
                }
            ),
            Outcome::AlreadyGone => format!("already gone  {what}"),
            Outcome::Refused(r) => format!("refused       {what}: {r}"),
            Outcome::Failed(r) => format!("failed        {what}: {r}"),
        }
    }
}

/// `keepalive on 60s/10s×5` or `keepalive off`.
pub fn opts_text(o: &SockOpts) -> String {
    if o.keepalive {
        format!("keepalive on {}s/{}s×{}", o.idle_s, o.intvl_s, o.cnt)
    } else {
        "keepalive off".into()
    }
}

/// Counts of outcomes, for one summary line.
pub fn summary(reports: &[Report]) -> String {
    let count = |name: &str| {
        reports
            .iter()
            .filter(|r| r.outcome.result() == name)
            .count()
    };
    let done = reports.first().map_or(Action::Kill, |r| r.action).done();
    format!(
        "{done} {}, already gone {}, refused {}, failed {}",
        count(done),
        count("already-gone"),
        count("refused"),
        count("failed")
    )
}

/// The JSON form of a [`Report`] (README, "Kill log"): a stable contract.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub time: String,
    pub action: &'static str,
    pub proto: &'static str,
    pub state: &'static str,
    pub local: &'a str,
    pub remote: &'a str,
    pub netns: u64,
    pub inode: u32,
    pub cookie: u64,
    pub pid: Option<u32>,
    pub process: Option<&'a str>,
    pub fd: Option<u32>,
    pub idle_ms: Option<u32>,
    pub stale: &'a [&'static str],
    pub result: &'static str,
    pub mechanism: Option<&'static str>,
    /// The state the kernel reports after the kill, `"gone"` when it lists no such socket.
    pub state_after: Option<&'static str>,
    pub reason: Option<&'a str>,
    /// Keepalive changes: what was asked, the options before and after (read back), and
    /// whether the kernel then reported a keepalive timer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<super::keepalive::Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<JsonOpts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<JsonOpts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timer: Option<bool>,
}

/// Socket options in the log.
#[derive(Serialize)]
pub struct JsonOpts {
    pub keepalive: bool,
    pub idle_s: u16,
    pub intvl_s: u16,
    pub cnt: u8,
    pub user_timeout_ms: u32,
}

impl From<&SockOpts> for JsonOpts {
    fn from(o: &SockOpts) -> Self {
        JsonOpts {
            keepalive: o.keepalive,
            idle_s: o.idle_s,
            intvl_s: o.intvl_s,
            cnt: o.cnt,
            user_timeout_ms: o.user_timeout_ms,
        }
    }
}

impl Report {
    pub fn json(&self) -> JsonReport<'_> {
        let o = &self.outcome;
        JsonReport {
            result: o.result(),
            mechanism: o.mechanism().map(Mechanism::name),
            state_after: match o {
                Outcome::Killed { after, .. } => {
                    Some(after.map_or("gone", |s| s.name(self.target.proto)))
                }
                _ => None,
            },
            reason: o.reason(),
            before: match o {
                Outcome::Changed { before, .. } => Some(before.into()),
                _ => None,
            },
            after: match o {
                Outcome::Changed { after, .. } => Some(after.into()),
                _ => None,
            },
            keepalive_timer: match o {
                Outcome::Changed { timer_armed, .. } => Some(*timer_armed),
                _ => None,
            },
            ..JsonReport::planned(&self.target, self.action, self.at)
        }
    }
}

impl<'a> JsonReport<'a> {
    /// A target not acted on (a dry run): `result` is `"dry-run"`.
    pub fn planned(t: &'a Target, action: Action, at: SystemTime) -> Self {
        JsonReport {
            time: super::log::rfc3339(at),
            action: action.name(),
            requested: match action {
                Action::Keepalive(c) => Some(c),
                Action::Kill => None,
            },
            before: None,
            after: None,
            keepalive_timer: None,
            proto: t.proto.name(),
            state: t.state_name(),
            local: &t.local,
            remote: &t.remote,
            netns: t.netns.ino(),
            inode: t.inode.0,
            cookie: t.cookie,
            pid: t.owner.as_ref().map(|o| o.pid),
            process: t.owner.as_ref().map(|o| &*o.name),
            fd: t.owner.as_ref().map(|o| o.fd),
            idle_ms: t.idle_ms,
            stale: &t.stale,
            result: "dry-run",
            mechanism: None,
            state_after: None,
            reason: None,
        }
    }
}
