//! The namespace's TCP keepalive and retry settings from `/proc/sys`.

use std::path::Path;

use crate::model::KernelSettings;

const IPV4: &str = "/proc/sys/net/ipv4";
const CONNTRACK_ESTABLISHED: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";

/// Reads the settings; a value that cannot be read is `None` (e.g. conntrack not loaded).
pub fn read() -> KernelSettings {
    read_from(Path::new(IPV4), Path::new(CONNTRACK_ESTABLISHED))
}

fn read_from(ipv4: &Path, conntrack: &Path) -> KernelSettings {
    let num = |p: &Path| std::fs::read_to_string(p).ok()?.trim().parse::<u32>().ok();
    KernelSettings {
        keepalive_time_s: num(&ipv4.join("tcp_keepalive_time")),
        keepalive_intvl_s: num(&ipv4.join("tcp_keepalive_intvl")),
        keepalive_probes: num(&ipv4.join("tcp_keepalive_probes")),
        retries2: num(&ipv4.join("tcp_retries2")),
        rto_max_ms: num(&ipv4.join("tcp_rto_max_ms")),
        conntrack_established_s: num(conntrack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_live_values_and_tolerates_missing_files() {
        let live = read();
        // Every Linux with TCP has these.
        assert!(live.keepalive_time_s.is_some());
        assert!(live.keepalive_intvl_s.is_some());
        assert!(live.keepalive_probes.is_some());
        let none = read_from(Path::new("/nonexistent"), Path::new("/nonexistent"));
        assert_eq!(none, KernelSettings::default());
        assert_eq!(none.dead_peer_after_s(), None);
    }
}
