//! The groups view: TCP connections by process name and service, as servers run them
//! (`PostgreSQL`'s backend per connection, `php-fpm`'s and gunicorn's worker pools are one group
//! each), with the processes of a group listed when it is expanded.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use rustc_hash::FxHashSet;

use crate::model::filter::Filter;
use crate::model::{services, ConnTable, Keepalive, NetnsId, Owner, Proto, SockEntry, SockState};

/// Which end of the connections the group's processes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// They serve this local port (a listener takes connections on it).
    Serves(u16),
    /// They connect to this remote port.
    To(u16),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, port) = match *self {
            Role::Serves(p) => ("serves", p),
            Role::To(p) => ("→", p),
        };
        write!(f, "{word} :{port}")?;
        match services::by_port(port).name() {
            Some(name) => write!(f, " {name}"),
            None => Ok(()),
        }
    }
}

/// Whose connections a group holds: a process name, no process, or processes katop cannot see
/// (kept apart from processes that happen to be named `-` or `?`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    Name(String),
    Nobody,
    Unseen,
}

/// Connections of one process name at one end of one port, in one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The container the group's processes run in, when there is one.
    pub container: Option<String>,
    /// The process name; `(no process)` when none holds the sockets, `(not visible)` when
    /// katop cannot see.
    pub process: String,
    pub who: Who,
    pub role: Role,
    /// A filter that selects this group's sockets.
    pub filter: String,
    pub count: usize,
    pub idle_min_ms: Option<u32>,
    pub idle_max_ms: Option<u32>,
    pub stale: usize,
    pub keepalive_off: usize,
    /// The processes, most connections first.
    pub members: Vec<Member>,
}

impl Group {
    /// Names a group across polls (for keeping it expanded).
    pub fn id(&self) -> String {
        format!(
            "{}\u{0}{:?}\u{0}{:?}",
            self.container.as_deref().unwrap_or(""),
            self.who,
            self.role
        )
    }
}

/// One process of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub pid: u32,
    pub count: usize,
    pub idle_max_ms: Option<u32>,
    pub stale: usize,
    pub keepalive_off: usize,
}

/// A row of the groups view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupLine {
    Group(u32),
    /// A process of an expanded group: (group, member).
    Member(u32, u32),
}

/// What the groups view is ordered by (`<` `>`), largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSort {
    Count,
    Stale,
    IdleMax,
    KeepaliveOff,
    Process,
}

impl GroupSort {
    pub const ALL: [GroupSort; 5] = [
        GroupSort::Process,
        GroupSort::Count,
        GroupSort::IdleMax,
        GroupSort::Stale,
        GroupSort::KeepaliveOff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupSort::Count => "connections",
            GroupSort::Stale => "stale",
            GroupSort::IdleMax => "longest idle",
            GroupSort::KeepaliveOff => "keepalive off",
            GroupSort::Process => "process",
        }
    }
}

type Key = (Option<String>, Who, Role);

/// Groups of the filtered TCP connections (not listeners, not `TIME_WAIT`), in `sort` order.
pub fn groups(table: &ConnTable, filter: &Filter, now: Instant, sort: GroupSort) -> Vec<Group> {
    let listened: FxHashSet<(NetnsId, u16)> = table
        .entries()
        .filter(|e| e.sock.proto == Proto::Tcp && e.sock.state == SockState::Listen)
        .filter_map(|e| Some((e.sock.netns, e.sock.local.port()?)))
        .collect();
    let mut map: HashMap<Key, (Group, HashMap<u32, Member>)> = HashMap::new();
    for e in table.entries().filter(|e| {
        e.sock.proto == Proto::Tcp
            && e.sock.state != SockState::Listen
            && e.sock.state != SockState::TimeWait
    }) {
        if !filter.matches(&e, now) {
            continue;
        }
        let (Some(local), Some(remote)) = (e.sock.local.port(), e.sock.remote.port()) else {
            continue;
        };
        let role = if listened.contains(&(e.sock.netns, local)) {
            Role::Serves(local)
        } else {
            Role::To(remote)
        };
        let who = match &e.sock.owner {
            Owner::Process { process, .. } => Who::Name(process.name.to_string()),
            Owner::None => Who::Nobody,
            Owner::Unknown => Who::Unseen,
        };
        let container = e.container().map(str::to_string);
        let key = (container, who, role);
        let (g, members) = map.entry(key.clone()).or_insert_with(|| {
            let (container, who, role) = key;
            (new_group(container, who, role), HashMap::new())
        });
        add(g, &e);
        if let Some(p) = e.sock.owner.process() {
            let m = members.entry(p.pid).or_insert(Member {
                pid: p.pid,
                count: 0,
                idle_max_ms: None,
                stale: 0,
                keepalive_off: 0,
            });
            m.count += 1;
            m.idle_max_ms = m.idle_max_ms.max(e.idle_ms());
            m.stale += usize::from(!e.stale.is_empty());
            m.keepalive_off += usize::from(e.keepalive == Some(Keepalive::Off));
        }
    }
    let containers = map.keys().any(|(c, _, _)| c.is_some());
    let mut out: Vec<Group> = map
        .into_values()
        .map(|(mut g, members)| {
            g.members = members.into_values().collect();
            g.members
                .sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
            g.filter = group_filter(&g, containers);
            g
        })
        .collect();
    out.sort_by(|a, b| {
        let by = match sort {
            GroupSort::Count => b.count.cmp(&a.count),
            GroupSort::Stale => b.stale.cmp(&a.stale),
            GroupSort::IdleMax => b.idle_max_ms.cmp(&a.idle_max_ms),
            GroupSort::KeepaliveOff => b.keepalive_off.cmp(&a.keepalive_off),
            GroupSort::Process => a.process.cmp(&b.process),
        };
        by.then_with(|| b.count.cmp(&a.count))
            .then_with(|| a.process.cmp(&b.process))
            .then_with(|| a.role.cmp(&b.role))
            .then_with(|| a.container.cmp(&b.container))
    });
    out
}

fn new_group(container: Option<String>, who: Who, role: Role) -> Group {
    let process = match &who {
        Who::Name(name) => name.clone(),
        // Apart from processes that happen to be named `-` or `?`.
        Who::Nobody => "(no process)".into(),
        Who::Unseen => "(not visible)".into(),
    };
    Group {
        container,
        process,
        who,
        role,
        filter: String::new(),
        count: 0,
        idle_min_ms: None,
        idle_max_ms: None,
        stale: 0,
        keepalive_off: 0,
        members: Vec::new(),
    }
}

/// A filter that selects the group's sockets, and only them.
/// `containers`: whether any group is a container's (else no term about containers is needed).
fn group_filter(g: &Group, containers: bool) -> String {
    // What no word of the filter language spells exactly (empty, or with a space or
    // parenthesis, for which `?` stands): the members' pids say which processes.
    let unspellable =
        |name: &str| name.is_empty() || glob_word(name) != glob::Pattern::escape(name);
    let mut terms = Vec::new();
    let mut by_pid = false;
    match &g.container {
        Some(c) => {
            by_pid |= unspellable(c);
            terms.push(format!("container:{}", glob_word(c)));
        }
        // The host's processes, not a container's of the same name.
        None if containers => terms.push("!container:*".into()),
        None => {}
    }
    terms.push(match &g.who {
        Who::Nobody => "owner:none".into(),
        Who::Unseen => "owner:unknown".into(),
        Who::Name(name) => {
            by_pid |= unspellable(name);
            let word = if name.is_empty() {
                "*".into()
            } else {
                glob_word(name)
            };
            format!("comm:{word}")
        }
    });
    if by_pid && !g.members.is_empty() {
        let pids: Vec<String> = g.members.iter().map(|m| format!("pid:{}", m.pid)).collect();
        terms.push(format!("({})", pids.join(" or ")));
    }
    terms.push(match g.role {
        Role::Serves(p) => format!("sport:{p}"),
        Role::To(p) => format!("dport:{p}"),
    });
    terms.push("!listen !time-wait".into());
    terms.join(" ")
}

/// A name as one glob word of the filter language: metacharacters escaped, and what would
/// end the word (spaces, parentheses) matched by `?`.
fn glob_word(name: &str) -> String {
    glob::Pattern::escape(name)
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn add(g: &mut Group, e: &SockEntry) {
    g.count += 1;
    if let Some(idle) = e.idle_ms() {
        g.idle_min_ms = Some(g.idle_min_ms.map_or(idle, |m| m.min(idle)));
        g.idle_max_ms = Some(g.idle_max_ms.map_or(idle, |m| m.max(idle)));
    }
    g.stale += usize::from(!e.stale.is_empty());
    g.keepalive_off += usize::from(e.keepalive == Some(Keepalive::Off));
}
