//! The exporter's metrics: one poll of the model, aggregated (never one series per socket) into
//! a `prometheus-client` registry and encoded. Groups are (process name, service, container);
//! at most `max_groups` of them get their own label sets, the rest are folded into
//! `process="other"` and counted in `katop_groups_truncated`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::model::{ConnTable, Detect, Keepalive, Owner, Proto, SockEntry, SockState};

/// Idle thresholds of `katop_idle_connections`.
const IDLE_OVER: [(&str, u64); 3] = [("5m", 300_000), ("30m", 1_800_000), ("2h", 7_200_000)];

/// A label value from names other users choose (process, namespace and container names): no
/// control or invisible reordering character reaches whoever reads `/metrics` in a terminal
/// (the exposition format escapes only `\\`, `"` and newline); each becomes `?`, as in the
/// table.
fn label(name: &str) -> String {
    crate::text::printable(name).into_owned()
}

/// Who a connection belongs to, for the metrics' labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Group {
    process: String,
    service: String,
    container: String,
}

impl Group {
    fn of(e: &SockEntry) -> Group {
        let process = match &e.sock.owner {
            Owner::Process { process, .. } => label(&process.name),
            Owner::None => "none".into(),
            Owner::Unknown => "unknown".into(),
        };
        // The well-known service, else the server's port (the lower of the two ends).
        let service = e.service().map_or_else(
            || match (e.sock.local.port(), e.sock.remote.port()) {
                (Some(l), Some(r)) => l.min(r).to_string(),
                _ => String::new(),
            },
            label,
        );
        Group {
            process,
            service,
            container: label(e.container().unwrap_or("")),
        }
    }

    fn other() -> Group {
        Group {
            process: "other".into(),
            service: String::new(),
            container: String::new(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SockLabels {
    netns: String,
    proto: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StaleLabels {
    reason: String,
    #[prometheus(flatten)]
    group: Group,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdleLabels {
    #[prometheus(flatten)]
    group: Group,
    idle_over: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectLabels {
    #[prometheus(flatten)]
    group: Group,
    /// `min` or `max` over the group's countdowns.
    stat: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// What one group's connections add up to.
#[derive(Debug, Default)]
struct Tally {
    connections: i64,
    keepalive_off: i64,
    stale: BTreeMap<&'static str, i64>,
    idle_over: [i64; 3],
    close_wait_oldest_ms: Option<u64>,
    detect_ms: Option<(u64, u64)>,
}

/// What the exporter knows about its own polling.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollStatus {
    pub duration: Duration,
    pub errors_total: u64,
    pub at: Option<SystemTime>,
}

/// The metrics of one poll, as an `OpenMetrics` text without its `# EOF`: [`finish`] adds
/// the exporter's own metrics and the end, so a failed poll can be answered with the last
/// good data and current self-metrics.
pub fn render(table: &ConnTable, now: Instant, max_groups: usize) -> String {
    let mut sockets: HashMap<SockLabels, i64> = HashMap::new();
    let mut groups: HashMap<Group, Tally> = HashMap::new();
    for e in table.entries() {
        let s = e.sock;
        *sockets
            .entry(SockLabels {
                netns: label(e.netns_name().unwrap_or("host")),
                proto: s.proto.name().into(),
                state: s.state.name(s.proto).into(),
            })
            .or_default() += 1;
        if s.proto != Proto::Tcp || matches!(s.state, SockState::Listen | SockState::TimeWait) {
            continue;
        }
        let t = groups.entry(Group::of(&e)).or_default();
        tally(t, &e, now);
    }
    // The biggest groups keep their labels; the rest fold into one.
    let mut ranked: Vec<(Group, Tally)> = groups.into_iter().collect();
    ranked.sort_by(|a, b| b.1.connections.cmp(&a.1.connections).then(a.0.cmp(&b.0)));
    let truncated = ranked.len().saturating_sub(max_groups);
    let mut kept: Vec<(Group, Tally)> = Vec::with_capacity(max_groups + 1);
    let mut other = Tally::default();
    for (i, (g, t)) in ranked.into_iter().enumerate() {
        if i < max_groups {
            kept.push((g, t));
        } else {
            merge(&mut other, t);
        }
    }
    if truncated > 0 {
        kept.push((Group::other(), other));
    }
    let sockets = fold_namespaces(sockets, max_groups);
    encode(&sockets, &kept, truncated, table.unread_namespaces)
}

/// `katop_sockets`' namespaces within `max_groups` label values: the host's always, named ones
/// (containers, `ip netns` names) by their socket count, and the rest, anonymous
/// (`netns:<inode>`) ones included, as `netns="other"`: namespaces that come and go make no
/// new series.
fn fold_namespaces(
    sockets: HashMap<SockLabels, i64>,
    max_groups: usize,
) -> HashMap<SockLabels, i64> {
    let mut totals: HashMap<&str, i64> = HashMap::new();
    for (l, n) in &sockets {
        *totals.entry(l.netns.as_str()).or_default() += n;
    }
    let mut named: Vec<(&str, i64)> = totals
        .into_iter()
        .filter(|(name, _)| *name != "host" && !name.starts_with("netns:"))
        .collect();
    named.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kept: std::collections::HashSet<String> = named
        .into_iter()
        .take(max_groups.saturating_sub(1))
        .map(|(name, _)| name.to_string())
        .chain(std::iter::once("host".to_string()))
        .collect();
    let mut folded: HashMap<SockLabels, i64> = HashMap::new();
    for (mut l, n) in sockets {
        if !kept.contains(&l.netns) {
            l.netns = "other".into();
        }
        *folded.entry(l).or_default() += n;
    }
    folded
}

fn tally(t: &mut Tally, e: &SockEntry, now: Instant) {
    let s = e.sock;
    if s.state == SockState::Established {
        t.connections += 1;
        t.keepalive_off += i64::from(e.keepalive == Some(Keepalive::Off));
        if let Some(idle) = e.idle_ms() {
            for (n, (_, over)) in IDLE_OVER.iter().enumerate() {
                t.idle_over[n] += i64::from(u64::from(idle) > *over);
            }
        }
        if let Some(Detect::InMs(ms)) = e.detect(now).map(|c| c.detect) {
            t.detect_ms = Some(
                t.detect_ms
                    .map_or((ms, ms), |(lo, hi)| (lo.min(ms), hi.max(ms))),
            );
        }
    }
    for r in e.stale.iter() {
        *t.stale.entry(r.name()).or_default() += 1;
    }
    if s.state == SockState::CloseWait {
        // At least as long as katop has watched it, or since the peer's last ACK.
        let watched = now.saturating_duration_since(e.state_since()).as_millis() as u64;
        let since_ack = s
            .tcp_info
            .and_then(|i| i.last_ack_recv())
            .map_or(0, u64::from);
        let age = watched.max(since_ack);
        t.close_wait_oldest_ms = Some(t.close_wait_oldest_ms.map_or(age, |o| o.max(age)));
    }
}

fn merge(into: &mut Tally, t: Tally) {
    into.connections += t.connections;
    into.keepalive_off += t.keepalive_off;
    for (r, n) in t.stale {
        *into.stale.entry(r).or_default() += n;
    }
    for i in 0..IDLE_OVER.len() {
        into.idle_over[i] += t.idle_over[i];
    }
    into.close_wait_oldest_ms = into.close_wait_oldest_ms.max(t.close_wait_oldest_ms);
    into.detect_ms = match (into.detect_ms, t.detect_ms) {
        (Some((lo, hi)), Some((lo2, hi2))) => Some((lo.min(lo2), hi.max(hi2))),
        (mine, theirs) => mine.or(theirs),
    };
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[allow(clippy::too_many_lines)] // one registration per metric, in the order they are served
fn encode(
    sockets: &HashMap<SockLabels, i64>,
    groups: &[(Group, Tally)],
    truncated: usize,
    unread_namespaces: usize,
) -> String {
    let mut reg = Registry::default();
    let socks = Family::<SockLabels, Gauge>::default();
    reg.register(
        "katop_sockets",
        "Sockets by network namespace, protocol and state",
        socks.clone(),
    );
    for (l, n) in sockets {
        socks.get_or_create(l).set(*n);
    }
    let conns = Family::<Group, Gauge>::default();
    reg.register(
        "katop_connections",
        "ESTABLISHED TCP connections by process, service and container",
        conns.clone(),
    );
    let ka_off = Family::<Group, Gauge>::default();
    reg.register(
        "katop_keepalive_off_connections",
        "ESTABLISHED TCP connections with keepalive off: a dead peer is never noticed",
        ka_off.clone(),
    );
    let stale = Family::<StaleLabels, Gauge>::default();
    reg.register(
        "katop_stale_connections",
        "TCP connections flagged stale, by reason (as --filter stale)",
        stale.clone(),
    );
    let idle = Family::<IdleLabels, Gauge>::default();
    reg.register(
        "katop_idle_connections",
        "ESTABLISHED TCP connections idle (no data either way) longer than idle_over",
        idle.clone(),
    );
    let close_wait = Family::<Group, FloatGauge>::default();
    reg.register(
        "katop_close_wait_oldest_seconds",
        "Age of the oldest CLOSE_WAIT connection: the peer closed, the application never did",
        close_wait.clone(),
    );
    let detect = Family::<DetectLabels, FloatGauge>::default();
    reg.register(
        "katop_dead_peer_detect_seconds",
        "Shortest and longest time until the kernel would notice a silent peer, over the group's connections that would notice at all",
        detect.clone(),
    );
    for (g, t) in groups {
        conns.get_or_create(g).set(t.connections);
        ka_off.get_or_create(g).set(t.keepalive_off);
        for (r, n) in &t.stale {
            stale
                .get_or_create(&StaleLabels {
                    reason: (*r).into(),
                    group: g.clone(),
                })
                .set(*n);
        }
        for (i, (name, _)) in IDLE_OVER.iter().enumerate() {
            idle.get_or_create(&IdleLabels {
                group: g.clone(),
                idle_over: (*name).into(),
            })
            .set(t.idle_over[i]);
        }
        if let Some(ms) = t.close_wait_oldest_ms {
            close_wait.get_or_create(g).set(ms as f64 / 1000.0);
        }
        if let Some((lo, hi)) = t.detect_ms {
            for (stat, ms) in [("min", lo), ("max", hi)] {
                detect
                    .get_or_create(&DetectLabels {
                        group: g.clone(),
                        stat: stat.into(),
                    })
                    .set(ms as f64 / 1000.0);
            }
        }
    }
    let truncated_g: Gauge = Gauge::default();
    truncated_g.set(truncated as i64);
    reg.register(
        "katop_groups_truncated",
        "Groups folded into process=\"other\" to keep label sets within --max-groups",
        truncated_g,
    );
    let unread: Gauge = Gauge::default();
    unread.set(unread_namespaces as i64);
    reg.register(
        "katop_netns_unread",
        "Network namespaces asked for whose sockets the latest poll could not read (katop's warnings say why)",
        unread,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode_registry(&mut text, &reg)
        .expect("writing to a String cannot fail");
    text
}

/// `data` (from [`render`]) followed by the exporter's own metrics and the `# EOF`.
pub fn finish(data: &str, status: PollStatus) -> String {
    let mut reg = Registry::default();
    let duration: FloatGauge = Gauge::default();
    duration.set(status.duration.as_secs_f64());
    reg.register(
        "katop_poll_duration_seconds",
        "How long the latest poll of the kernel took",
        duration,
    );
    let errors: Counter = Counter::default();
    errors.inc_by(status.errors_total);
    reg.register(
        "katop_poll_errors",
        "Polls of the kernel that failed",
        errors,
    );
    let last: FloatGauge = Gauge::default();
    last.set(
        status
            .at
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    reg.register(
        "katop_last_poll_timestamp_seconds",
        "When the latest successful poll finished, in seconds since the epoch",
        last,
    );
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
    reg.register("katop_build_info", "katop's version", build);
    let mut text = String::with_capacity(data.len() + 1024);
    text.push_str(data);
    prometheus_client::encoding::text::encode(&mut text, &reg)
        .expect("writing to a String cannot fail");
    text
}

/// The Prometheus text format (0.0.4) of an `OpenMetrics` exposition, as Prometheus and
/// promtool read it: counters are named with their `_total`, and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters: Vec<String> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::table::tests::{snapshot, sock, with_idle};
    use crate::model::{Cookie, SockState};

    fn table(n: u64) -> ConnTable {
        let socks = (0..n)
            .map(|i| {
                let mut s = with_idle(sock(SockState::Established), 3_600_000);
                s.cookie = Cookie(i + 1);
                if let Owner::Process { process, .. } = &mut s.owner {
                    let mut p = (**process).clone();
                    p.name = format!("app{}", i % 7).into();
                    *process = std::sync::Arc::new(p);
                }
                s
            })
            .collect();
        let mut t = ConnTable::new(Duration::from_secs(300));
        t.apply(snapshot(socks), Instant::now());
        t
    }

    #[test]
    fn groups_are_counted_and_capped() {
        let t = table(70);
        let text = finish(&render(&t, Instant::now(), 3), PollStatus::default());
        // 7 processes, 3 kept, 4 folded into "other".
        assert!(text.contains("katop_groups_truncated 4"), "{text}");
        assert!(
            text.contains(r#"katop_connections{process="other",service="",container=""} 40"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"katop_connections{process="app0",service="postgres",container=""} 10"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"katop_stale_connections{reason="no-keepalive",process="app0",service="postgres",container=""} 10"#), "{text}");
        assert!(text.contains(r#"idle_over="30m"} 10"#), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let prom = to_prometheus_text(&text);
        assert!(
            prom.contains("# TYPE katop_poll_errors_total counter"),
            "{prom}"
        );
        assert!(!prom.contains("# EOF"));
    }

    #[test]
    fn namespaces_past_max_groups_and_anonymous_ones_fold_into_other() {
        let mut sockets = HashMap::new();
        let mut add = |netns: &str, n: i64| {
            let l = SockLabels {
                netns: netns.into(),
                proto: "tcp".into(),
                state: "LISTEN".into(),
            };
            sockets.insert(l, n);
        };
        add("host", 1);
        add("podman:big", 50);
        add("podman:mid", 20);
        add("podman:small", 2);
        for i in 0..200 {
            add(&format!("netns:{}", 4_026_532_000_u64 + i), 1);
        }
        let folded = fold_namespaces(sockets, 3);
        let mut names: Vec<&str> = folded.keys().map(|l| l.netns.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["host", "other", "podman:big", "podman:mid"]);
        let other = folded.iter().find(|(l, _)| l.netns == "other").unwrap().1;
        assert_eq!(*other, 202, "the small one and the 200 anonymous ones");
    }
}
