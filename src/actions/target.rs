//! What an action is aimed at, as the operator saw it, and what came of it.

use std::time::SystemTime;

use serde::Serialize;

use super::kill::Outcome;
use crate::collector::sock_diag::InetSockId;
use crate::model::{Inode, NetnsId, Owner, Proto, SockEntry, SockState};

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
    pub inode: Inode,
    pub cookie: u64,
    pub owner: Option<TargetOwner>,
    pub idle_ms: Option<u32>,
    /// Stale reasons' names, as flagged when chosen.
    pub stale: Vec<&'static str>,
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
            inode: s.inode,
            cookie: s.cookie.0,
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

    /// `name[pid]`, or `-` when no process is known.
    pub fn process_label(&self) -> String {
        self.owner
            .as_ref()
            .map_or_else(|| "-".into(), |o| format!("{}[{}]", o.name, o.pid))
    }

    /// One line for confirmations and dry runs: `tcp ESTABLISHED 10.0.0.1:5 → 10.0.0.2:80 …`.
    pub fn describe(&self) -> String {
        let idle = self.idle_ms.map_or_else(
            || "-".into(),
            |ms| crate::model::duration::format_secs(u64::from(ms) / 1000),
        );
        let stale = if self.stale.is_empty() {
            String::new()
        } else {
            format!("  stale: {}", self.stale.join(","))
        };
        format!(
            "{} {} {} → {}  {}  idle {idle}{stale}",
            self.proto.name(),
            self.state_name(),
            self.local,
            self.remote,
            self.process_label()
        )
    }
}

/// One attempt on one target: the log's and `--json`'s record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub target: Target,
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
            Outcome::AlreadyGone => format!("already gone  {what}"),
            Outcome::Refused(r) => format!("refused       {what}: {r}"),
            Outcome::Failed(r) => format!("failed        {what}: {r}"),
        }
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
    format!(
        "killed {}, already gone {}, refused {}, failed {}",
        count("killed"),
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
}

impl Report {
    pub fn json(&self) -> JsonReport<'_> {
        let o = &self.outcome;
        JsonReport {
            result: o.result(),
            mechanism: o.mechanism().map(super::Mechanism::name),
            state_after: match o {
                Outcome::Killed { after, .. } => {
                    Some(after.map_or("gone", |s| s.name(self.target.proto)))
                }
                _ => None,
            },
            reason: o.reason(),
            ..JsonReport::planned(&self.target, self.at)
        }
    }
}

impl<'a> JsonReport<'a> {
    /// A target not acted on (a dry run): `result` is `"dry-run"`.
    pub fn planned(t: &'a Target, at: SystemTime) -> Self {
        JsonReport {
            time: super::log::rfc3339(at),
            action: "kill",
            proto: t.proto.name(),
            state: t.state_name(),
            local: &t.local,
            remote: &t.remote,
            netns: t.netns.0,
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
