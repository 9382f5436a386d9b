//! Well-known server ports → service names, from `assets/services.tsv`.

use std::sync::OnceLock;

use crate::model::Endpoint;

const TABLE: &str = include_str!("../../assets/services.tsv");

/// Sorted by port: looked up twice per socket per poll, a binary search over a few dozen
/// entries beats hashing.
fn table() -> &'static [(u16, &'static str)] {
    static SORTED: OnceLock<Vec<(u16, &'static str)>> = OnceLock::new();
    SORTED.get_or_init(|| {
        let mut v: Vec<(u16, &'static str)> = TABLE
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (port, name) = l.split_once('\t')?;
                Some((port.trim().parse().ok()?, name.trim()))
            })
            .collect();
        v.sort_unstable();
        v
    })
}

/// A service as 2 bytes (kept per socket): its position in the table plus one; 0 is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceId(u16);

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
