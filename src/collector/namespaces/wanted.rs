//! Which namespaces `--netns` asks for, and the names katop gives namespaces (the NETNS
//! column's): the same words select them.

use std::sync::Arc;

use super::super::containers::{self, Names};
use super::super::netns::{self, Found};
use crate::model::NetnsId;

/// Which network namespaces to read (`--netns`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Which {
    /// katop's own only.
    #[default]
    Own,
    /// Every namespace on the host.
    All,
    /// These: `host`, `self`, a name as katop shows it (`podman:web`, `netns:4026532451`, an
    /// `ip netns` name), a pid (its namespace) or an inode.
    Some(Vec<String>),
}

/// A namespace's name, best first: `host`, the container it belongs to, its `ip netns` or
/// bind-mount name, the systemd unit of its processes, else `netns:<inode>`; and its container.
pub fn name_of(names: &mut Names, f: &Found, host: bool) -> (Arc<str>, Option<Arc<str>>) {
    let container = f.pids.iter().find_map(|&p| names.of_pid(p));
    let unit = || {
        f.pids
            .iter()
            .find_map(|&p| containers::cgroup_of(p))
            .and_then(|c| containers::systemd_unit(&c).map(|u| format!("systemd:{u}")))
    };
    let name: Arc<str> = if host {
        "host".into()
    } else if let Some(c) = &container {
        Arc::clone(c)
    } else if let Some(n) = f.mount_name.clone().or_else(unit) {
        n.into()
    } else {
        format!("netns:{}", f.id.0).into()
    };
    (name, container)
}

/// The words of a `--netns` list, resolved for one discovery: inodes (given, or of the pids
/// given) and names.
pub struct Wanted {
    all: bool,
    host: bool,
    own: bool,
    inodes: Vec<u64>,
    names: Vec<String>,
}

impl Wanted {
    pub fn of(which: &Which) -> Wanted {
        let mut w = Wanted {
            all: false,
            host: false,
            own: false,
            inodes: Vec::new(),
            names: Vec::new(),
        };
        match which {
            Which::Own => w.own = true,
            Which::All => w.all = true,
            Which::Some(words) => {
                for word in words {
                    w.add(word);
                }
            }
        }
        w
    }

    fn add(&mut self, word: &str) {
        match word {
            "all" => self.all = true,
            "host" => self.host = true,
            "self" => self.own = true,
            _ => match word.parse::<u64>() {
                Ok(n) => {
                    self.inodes.push(n);
                    // A pid too (pids are at most 2^22): its namespace now.
                    if let Ok(pid) = u32::try_from(n) {
                        if let Ok(st) = rustix::fs::stat(format!("/proc/{pid}/ns/net")) {
                            self.inodes.push(st.st_ino);
                        }
                    }
                }
                Err(_) => self.names.push(word.to_string()),
            },
        }
    }

    /// Whether anything but numbers and `host`/`self`/`all` was asked for: names must be
    /// worked out to match.
    pub fn by_name(&self) -> bool {
        !self.names.is_empty()
    }

    /// Whether namespace `id` (`own` katop's, `host` the host's), of name `name`, is asked for.
    pub fn matches(&self, id: NetnsId, own: bool, host: bool, name: Option<&str>) -> bool {
        self.all
            || (self.own && own)
            || (self.host && host)
            || self.inodes.contains(&id.ino())
            || name.is_some_and(|n| self.names.iter().any(|w| w == n))
    }

    /// Whether a found namespace is asked for (its mount name counts as a name too).
    pub fn wants(&self, f: &Found, own: bool, host: bool, name: impl FnOnce() -> Arc<str>) -> bool {
        self.matches(f.id, own, host, f.mount_name.as_deref())
            || (self.by_name() && self.matches(f.id, own, host, Some(&name())))
    }
}

/// Checks a `--netns` list against the namespaces there are now: every word must select one.
/// The error names those there are.
pub fn check(which: &Which, own: NetnsId) -> Result<(), String> {
    let Which::Some(words) = which else {
        return Ok(());
    };
    let host = rustix::fs::stat("/proc/1/ns/net")
        .ok()
        .and_then(|st| NetnsId::from_ino(st.st_ino))
        .unwrap_or(own);
    let found = netns::discover();
    let mut labels = Names::default();
    let named: Vec<(&Found, Arc<str>)> = found
        .iter()
        .map(|f| (f, name_of(&mut labels, f, f.id == host).0))
        .collect();
    let unknown: Vec<&String> = words
        .iter()
        .filter(|word| {
            let w = Wanted::of(&Which::Some(vec![(*word).clone()]));
            !named
                .iter()
                .any(|(f, name)| w.wants(f, f.id == own, f.id == host, || Arc::clone(name)))
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let mut there: Vec<String> = named.iter().map(|(_, n)| n.to_string()).collect();
    there.extend(found.iter().filter_map(|f| f.mount_name.clone()));
    there.sort();
    there.dedup();
    let total = there.len();
    there.truncate(20);
    let more = if total > there.len() {
        format!(", and {} more", total - there.len())
    } else {
        String::new()
    };
    let quoted: Vec<String> = unknown.iter().map(|w| format!("'{w}'")).collect();
    Err(format!(
        "--netns: no network namespace is {} (there are: {}{more}; or give a pid, an inode, \
         host, self or all)",
        quoted.join(", "),
        there.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_inodes_or_pids_and_never_truncated() {
        let me = std::process::id();
        let own = rustix::fs::stat("/proc/self/ns/net").unwrap().st_ino;
        let own = NetnsId::from_ino(own).unwrap();
        let w = Wanted::of(&Which::Some(vec![me.to_string()]));
        assert!(
            w.matches(own, false, false, None),
            "a pid selects its namespace"
        );
        // 2^32 + this pid is an inode no namespace has, not this pid.
        let big = (1u64 << 32) + u64::from(me);
        let w = Wanted::of(&Which::Some(vec![big.to_string()]));
        assert!(!w.matches(own, false, false, None));
        // Nor the namespace numbered as its low 32 bits: no namespace has this number.
        assert!(!w.matches(NetnsId(me), false, false, None));
    }

    #[test]
    fn names_select_by_what_katop_shows() {
        let w = Wanted::of(&Which::Some(vec!["podman:web".into(), "host".into()]));
        assert!(w.matches(NetnsId(5), false, false, Some("podman:web")));
        assert!(!w.matches(NetnsId(5), false, false, Some("web")));
        assert!(w.matches(NetnsId(6), false, true, None));
        assert!(Wanted::of(&Which::All).matches(NetnsId(7), false, false, None));
        assert!(Wanted::of(&Which::Own).matches(NetnsId(8), true, false, None));
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_names_there_are() {
        let own = crate::collector::current_netns();
        let e = check(&Which::Some(vec!["no-such-namespace".into()]), own).unwrap_err();
        assert!(e.contains("'no-such-namespace'"), "{e}");
        assert!(e.contains("there are: "), "{e}");
        assert!(check(&Which::Some(vec!["self".into()]), own).is_ok());
        assert!(check(&Which::Some(vec![own.0.to_string()]), own).is_ok());
    }
}
