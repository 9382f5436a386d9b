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
        hz: hz(),
    }
}

/// `CONFIG_HZ` from `/proc/config.gz` (read once: it is the running kernel's), if present.
fn hz() -> Option<u32> {
    static HZ: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        use std::io::Read;
        let file = std::fs::File::open("/proc/config.gz").ok()?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .take(4 << 20)
            .read_to_string(&mut text)
            .ok()?;
        config_hz(&text)
    })
}

fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&hz| hz > 0)
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
        assert_eq!(
            none,
            KernelSettings {
                hz: hz(),
                ..KernelSettings::default()
            }
        );
        assert_eq!(
            config_hz("# x\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(config_hz("CONFIG_HZ_PERIODIC=y\n"), None);
        assert_eq!(none.dead_peer_after_s(), None);
    }
}
