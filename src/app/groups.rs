//! The groups view's rows.

use std::collections::HashMap;
use std::time::Instant;

use crate::model::filter::Filter;
use crate::model::{ConnTable, Proto, SockState};

/// Sockets grouped by (process, service or remote port).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The container the group's processes run in, when there is one.
    pub container: Option<String>,
    pub process: String,
    pub pid: Option<u32>,
    pub peer: String,
    /// A filter that selects this group's sockets.
    pub filter: String,
    pub count: usize,
    pub idle_min_ms: Option<u32>,
    pub idle_max_ms: Option<u32>,
    pub stale: usize,
    pub keepalive_off: usize,
}

/// Groups of the filtered sockets by (process, service or remote port), most sockets first.
pub fn groups(table: &ConnTable, filter: &Filter, now: Instant) -> Vec<Group> {
    let mut map: HashMap<(Option<String>, Option<u32>, String), Group> = HashMap::new();
    for e in table.entries().filter(|e| {
        e.sock.proto == Proto::Tcp
            && e.sock.state != SockState::Listen
            && e.sock.state != SockState::TimeWait
    }) {
        if !filter.matches(&e, now) {
            continue;
        }
        let proc = e.sock.owner.process();
        let pid = proc.map(|p| p.pid);
        // The service, else the server's port: the lower of the two (the other is ephemeral).
        let (peer, peer_filter) = match (e.service(), e.sock.local.port(), e.sock.remote.port()) {
            (Some(s), _, _) => (s.to_string(), format!("service:{s}")),
            (None, Some(l), Some(r)) if r <= l => (format!("→ :{r}"), format!("dport:{r}")),
            (None, Some(l), Some(_)) => (format!("serves :{l}"), format!("sport:{l}")),
            _ => ("?".into(), String::new()),
        };
        let container = e.container().map(str::to_string);
        let key = (container.clone(), pid, peer.clone());
        let g = map.entry(key).or_insert_with(|| Group {
            process: proc.map_or_else(|| "-".into(), |p| format!("{}[{}]", p.name, p.pid)),
            pid,
            filter: {
                let mut f = match pid {
                    Some(pid) => format!("pid:{pid} {peer_filter}"),
                    None => format!("{peer_filter} state!=listen"),
                };
                if let Some(c) = &container {
                    f = format!("container:{} {f}", glob::Pattern::escape(c));
                }
                f.trim().to_string()
            },
            container,
            peer,
            count: 0,
            idle_min_ms: None,
            idle_max_ms: None,
            stale: 0,
            keepalive_off: 0,
        });
        g.count += 1;
        if let Some(idle) = e.idle_ms() {
            g.idle_min_ms = Some(g.idle_min_ms.map_or(idle, |m| m.min(idle)));
            g.idle_max_ms = Some(g.idle_max_ms.map_or(idle, |m| m.max(idle)));
        }
        g.stale += usize::from(!e.stale.is_empty());
        g.keepalive_off += usize::from(e.keepalive == Some(crate::model::Keepalive::Off));
    }
    let mut out: Vec<Group> = map.into_values().collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.process.cmp(&b.process))
            .then_with(|| a.peer.cmp(&b.peer))
    });
    out
}
