//! Well-known server ports → service names: katop's own list (`assets/services.tsv`, the
//! names its presets and filters use), the system's `/etc/services` below the ephemeral
//! range, and the config file's `[services]`, which win.

use std::sync::OnceLock;

use crate::model::Endpoint;

const TABLE: &str = include_str!("../../assets/services.tsv");

static SORTED: OnceLock<Vec<(u16, &'static str)>> = OnceLock::new();

/// The ports the config file's `[services]` names: they win over what a listener's process
/// says too.
static CONFIGURED: OnceLock<Vec<u16>> = OnceLock::new();

/// Server processes that say what they serve whatever their port: (process name, service).
const SERVERS: [(&str, &str); 11] = [
    ("postgres", "postgres"),
    ("postmaster", "postgres"),
    ("pgbouncer", "pgbouncer"),
    ("mysqld", "mysql"),
    ("mariadbd", "mysql"),
    ("redis-server", "redis"),
    ("valkey-server", "redis"),
    ("mongod", "mongodb"),
    ("mongos", "mongodb"),
    ("memcached", "memcached"),
    ("cassandra", "cassandra"),
];

fn builtin() -> Vec<(u16, &'static str)> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (port, name) = l.split_once('\t')?;
            Some((port.trim().parse().ok()?, name.trim()))
        })
        .collect()
}

/// Sorted by port: looked up twice per socket per poll, a binary search beats hashing.
fn table() -> &'static [(u16, &'static str)] {
    SORTED.get_or_init(|| {
        let mut v = builtin();
        v.sort_unstable();
        v
    })
}

/// Adds the system's names (`system`, below katop's own) and the configured ones
/// (`configured`, above every other) to the table. Once, before the first lookup: a later
/// call changes nothing and returns false.
pub fn install(system: &[(u16, String)], configured: &[(u16, String)]) -> bool {
    let mut by_port: std::collections::BTreeMap<u16, &'static str> =
        std::collections::BTreeMap::new();
    // Names live as long as the process; leaked once, a few kilobytes.
    let leak = |s: &String| -> &'static str { Box::leak(s.clone().into_boxed_str()) };
    for (port, name) in system {
        by_port.entry(*port).or_insert_with(|| leak(name));
    }
    for (port, name) in builtin() {
        by_port.insert(port, name);
    }
    for (port, name) in configured {
        by_port.insert(*port, leak(name));
    }
    let _ = CONFIGURED.set(configured.iter().map(|(p, _)| *p).collect());
    SORTED.set(by_port.into_iter().collect()).is_ok()
}

/// `/etc/services` as (port, name), TCP and UDP, ports below `below` (an ephemeral client
/// port is no service, whatever the file registers on it).
pub fn parse_etc_services(text: &str, below: u16) -> Vec<(u16, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?;
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let (port, proto) = f.next()?.split_once('/')?;
            let port: u16 = port.parse().ok()?;
            (matches!(proto, "tcp" | "udp") && port > 0 && port < below && name.len() <= 32)
                .then(|| (port, name.to_string()))
        })
        .collect()
}

/// A service as 2 bytes (kept per socket): its position in the table plus one; 0 is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceId(u16);

impl ServiceId {
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

impl ServiceId {
    pub fn name(self) -> Option<&'static str> {
        let i = usize::from(self.0.checked_sub(1)?);
        table().get(i).map(|&(_, n)| n)
    }
}

/// The service of a port, if well known (`ServiceId::name` is `None` if not).
pub fn by_port(port: u16) -> ServiceId {
    let t = table();
    t.binary_search_by_key(&port, |&(p, _)| p)
        .ok()
        .and_then(|i| u16::try_from(i + 1).ok())
        .map_or(ServiceId(0), ServiceId)
}

/// Whether the config file's `[services]` names `port`.
pub fn is_configured(port: u16) -> bool {
    CONFIGURED.get().is_some_and(|c| c.contains(&port))
}

/// The service a server process provides, by its name (`comm`), on whatever port it listens.
pub fn by_process(comm: &str) -> ServiceId {
    let Some(&(_, service)) = SERVERS.iter().find(|(p, _)| *p == comm) else {
        return ServiceId(0);
    };
    table()
        .iter()
        .position(|&(_, n)| n == service)
        .and_then(|i| u16::try_from(i + 1).ok())
        .map_or(ServiceId(0), ServiceId)
}

/// Whether `name` is a service in the table (for filter validation).
pub fn is_known(name: &str) -> bool {
    table().iter().any(|&(_, n)| n.eq_ignore_ascii_case(name))
}

/// The service a connection talks: the well-known port of either end; when both are, the
/// lower port (an ephemeral client port can collide with a registered one, a server port
/// rarely is high).
pub fn of(local: &Endpoint, remote: &Endpoint) -> ServiceId {
    let (a, b) = match (
        local.port().filter(|&p| p != 0),
        remote.port().filter(|&p| p != 0),
    ) {
        (Some(a), Some(b)) => (a.min(b), Some(a.max(b))),
        (Some(a), None) | (None, Some(a)) => (a, None),
        (None, None) => return ServiceId(0),
    };
    match by_port(a) {
        ServiceId(0) => b.map_or(ServiceId(0), by_port),
        found => found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::Inet(s.parse().unwrap())
    }

    #[test]
    fn names_the_issue_ports() {
        for (port, name) in [
            (5432, "postgres"),
            (3306, "mysql"),
            (6379, "redis"),
            (27017, "mongodb"),
            (11211, "memcached"),
            (9042, "cassandra"),
            (1521, "oracle"),
            (5672, "amqp"),
            (9092, "kafka"),
            (2181, "zookeeper"),
            (80, "http"),
            (443, "https"),
            (22, "ssh"),
        ] {
            assert_eq!(by_port(port).name(), Some(name), "port {port}");
        }
        assert_eq!(by_port(1).name(), None);
        assert!(is_known("Postgres"));
        assert_eq!(by_process("pgbouncer").name(), Some("pgbouncer"));
        assert_eq!(by_process("mariadbd").name(), Some("mysql"));
        assert_eq!(by_process("redis-server").name(), Some("redis"));
        assert_eq!(by_process("python3").name(), None);
    }

    #[test]
    fn etc_services_lines_below_the_ephemeral_range() {
        let text = "# comment\nssh\t\t22/tcp\t\t\t\t# SSH\nhttp-alt 8080/tcp webcache\n\
                    x11 6000/tcp\nfar 60000/udp\nbad line\nsctp-thing 9/sctp\n";
        assert_eq!(
            parse_etc_services(text, 32768),
            [
                (22, "ssh".into()),
                (8080, "http-alt".into()),
                (6000, "x11".into())
            ]
        );
    }

    #[test]
    fn client_and_server_sides_both_name_the_service() {
        assert_eq!(
            of(&ep("10.0.0.1:45012"), &ep("10.0.0.2:5432")).name(),
            Some("postgres")
        );
        assert_eq!(
            of(&ep("10.0.0.2:5432"), &ep("10.0.0.1:45012")).name(),
            Some("postgres")
        );
        // 27017 is registered, but the lower port is the server's.
        assert_eq!(
            of(&ep("10.0.0.2:6379"), &ep("10.0.0.1:27017")).name(),
            Some("redis")
        );
        assert_eq!(
            of(&ep("10.0.0.2:40000"), &ep("10.0.0.1:40001")).name(),
            None
        );
    }
}
