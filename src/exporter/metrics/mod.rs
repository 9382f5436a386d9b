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

mod ends;
mod fold;

pub use ends::EndCounts;

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
        // The well-known service, else the server's port (the lower of the two ends). A dead
        // connection's peer is not known between the exporter's polls (port 0): no service,
        // rather than a client's port as one.
        let service = e.service().map_or_else(
            || match (e.sock.local.port(), e.sock.remote.port()) {
                (_, Some(0)) => String::new(),
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
    /// Connections that would never notice a silent peer.
    detect_never: i64,
}

/// What the exporter knows about its own polling.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollStatus {
    pub duration: Duration,
    pub errors_total: u64,
    pub at: Option<SystemTime>,
}

/// The exporter's metrics, render after render: which label sets each metric shows is
/// remembered ([`fold::Shown`]), so labels stay stable while their series last.
#[derive(Debug, Default)]
pub struct Metrics {
    shown: fold::Shown,
    /// Connection ends by cause, since the start.
    pub ends: EndCounts,
}

impl Metrics {
    /// The metrics of one poll, as an `OpenMetrics` text without its `# EOF`: [`finish`] adds
    /// the exporter's own metrics and the end, so a failed poll can be answered with the last
    /// good data and current self-metrics.
    pub fn render(&mut self, table: &ConnTable, now: Instant, max_groups: usize) -> String {
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
        let mut groups: Vec<(Group, Tally)> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let sockets = fold_namespaces(sockets, max_groups);
        let mut reg = Registry::default();
        encode_sockets(&mut reg, &sockets);
        let folded = encode_groups(&mut reg, &groups, &mut self.shown, max_groups);
        encode_status(&mut reg, folded, table.unread_namespaces);
        self.ends.encode(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &reg)
            .expect("writing to a String cannot fail");
        text
    }
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
        match e.detect(now).map(|c| c.detect) {
            Some(Detect::InMs(ms)) => {
                t.detect_ms = Some(
                    t.detect_ms
                        .map_or((ms, ms), |(lo, hi)| (lo.min(ms), hi.max(ms))),
                );
            }
            Some(Detect::Never) => t.detect_never += 1,
            _ => {}
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

type FloatGauge = Gauge<f64, AtomicU64>;

fn encode_sockets(reg: &mut Registry, sockets: &HashMap<SockLabels, i64>) {
    let socks = Family::<SockLabels, Gauge>::default();
    reg.register(
        "katop_sockets",
        "Sockets by network namespace, protocol and state",
        socks.clone(),
    );
    for (l, n) in sockets {
        socks.get_or_create(l).set(*n);
    }
}

/// Of `series`, those `shown` keeps for `metric`, each set; the rest folded into one series
/// with `other`'s labels, its value `fold` of theirs. Returns how many were folded.
fn folded<K, V>(
    (shown, metric, max): (&mut fold::Shown, &str, usize),
    series: Vec<(K, V)>,
    rank: impl Fn(&V) -> f64,
    fold: impl Fn(V, V) -> V,
    mut set: impl FnMut(&K, V),
    other: impl FnOnce(V) -> K,
) -> usize
where
    K: std::fmt::Debug + Clone + std::hash::Hash + Eq,
    V: Copy,
{
    let ranked: Vec<(K, f64)> = series.iter().map(|(k, v)| (k.clone(), rank(v))).collect();
    let kept = shown.keep(metric, &ranked, max);
    let mut rest: Option<V> = None;
    let mut n = 0;
    for (k, v) in series {
        if kept.contains(&k) {
            set(&k, v);
        } else {
            n += 1;
            rest = Some(rest.map_or(v, |r| fold(r, v)));
        }
    }
    if let Some(v) = rest {
        set(&other(v), v);
    }
    n
}

/// The per-group metrics, each within `max` label sets ranked by its own value; returns the
/// most label sets any one of them folded.
#[allow(clippy::too_many_lines)] // one registration per metric, in the order they are served
fn encode_groups(
    reg: &mut Registry,
    groups: &[(Group, Tally)],
    shown: &mut fold::Shown,
    max: usize,
) -> usize {
    let sum = |a: i64, b: i64| a + b;
    let each = |f: fn(&Tally) -> i64| -> Vec<(Group, i64)> {
        groups.iter().map(|(g, t)| (g.clone(), f(t))).collect()
    };
    let mut most = 0;
    let conns = Family::<Group, Gauge>::default();
    reg.register(
        "katop_connections",
        "ESTABLISHED TCP connections by process, service and container",
        conns.clone(),
    );
    most = most.max(folded(
        (&mut *shown, "katop_connections", max),
        each(|t| t.connections),
        |v| *v as f64,
        sum,
        |g, v| {
            conns.get_or_create(g).set(v);
        },
        |_| Group::other(),
    ));
    let ka_off = Family::<Group, Gauge>::default();
    reg.register(
        "katop_keepalive_off_connections",
        "ESTABLISHED TCP connections with keepalive off: a dead peer is never noticed",
        ka_off.clone(),
    );
    most = most.max(folded(
        (&mut *shown, "katop_keepalive_off_connections", max),
        each(|t| t.keepalive_off),
        |v| *v as f64,
        sum,
        |g, v| {
            ka_off.get_or_create(g).set(v);
        },
        |_| Group::other(),
    ));
    let stale = Family::<StaleLabels, Gauge>::default();
    reg.register(
        "katop_stale_connections",
        "TCP connections flagged stale, by reason (as --filter stale)",
        stale.clone(),
    );
    for reason in crate::model::StaleReason::ALL.map(crate::model::StaleReason::name) {
        let series: Vec<(Group, i64)> = groups
            .iter()
            .filter_map(|(g, t)| Some((g.clone(), *t.stale.get(reason)?)))
            .collect();
        let key = |g: &Group| StaleLabels {
            reason: reason.into(),
            group: g.clone(),
        };
        most = most.max(folded(
            (
                &mut *shown,
                &format!("katop_stale_connections/{reason}"),
                max,
            ),
            series,
            |v| *v as f64,
            sum,
            |g, v| {
                stale.get_or_create(&key(g)).set(v);
            },
            |_| Group::other(),
        ));
    }
    let idle = Family::<IdleLabels, Gauge>::default();
    reg.register(
        "katop_idle_connections",
        "ESTABLISHED TCP connections idle (no data either way) longer than idle_over",
        idle.clone(),
    );
    most = most.max(folded(
        (&mut *shown, "katop_idle_connections", max),
        groups
            .iter()
            .map(|(g, t)| (g.clone(), t.idle_over))
            .collect(),
        |v| v[0] as f64,
        |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]],
        |g, v| {
            for (i, (name, _)) in IDLE_OVER.iter().enumerate() {
                idle.get_or_create(&IdleLabels {
                    group: g.clone(),
                    idle_over: (*name).into(),
                })
                .set(v[i]);
            }
        },
        |_| Group::other(),
    ));
    let close_wait = Family::<Group, FloatGauge>::default();
    reg.register(
        "katop_close_wait_oldest_seconds",
        "Age of the oldest CLOSE_WAIT connection: the peer closed, the application never did",
        close_wait.clone(),
    );
    most = most.max(folded(
        (&mut *shown, "katop_close_wait_oldest_seconds", max),
        groups
            .iter()
            .filter_map(|(g, t)| Some((g.clone(), t.close_wait_oldest_ms?)))
            .collect(),
        |ms| *ms as f64,
        u64::max,
        |g, ms| {
            close_wait.get_or_create(g).set(ms as f64 / 1000.0);
        },
        |_| Group::other(),
    ));
    let detect = Family::<DetectLabels, FloatGauge>::default();
    reg.register(
        "katop_dead_peer_detect_seconds",
        "Shortest and longest time until the kernel would notice a silent peer, over the group's connections that would notice at all (katop_dead_peer_never_connections counts the others)",
        detect.clone(),
    );
    most = most.max(folded(
        (&mut *shown, "katop_dead_peer_detect_seconds", max),
        groups
            .iter()
            .filter_map(|(g, t)| Some((g.clone(), t.detect_ms?)))
            .collect(),
        |(_, hi)| *hi as f64,
        |(lo, hi), (lo2, hi2)| (lo.min(lo2), hi.max(hi2)),
        |g, (lo, hi)| {
            for (stat, ms) in [("min", lo), ("max", hi)] {
                detect
                    .get_or_create(&DetectLabels {
                        group: g.clone(),
                        stat: stat.into(),
                    })
                    .set(ms as f64 / 1000.0);
            }
        },
        |_| Group::other(),
    ));
    let never = Family::<Group, Gauge>::default();
    reg.register(
        "katop_dead_peer_never_connections",
        "ESTABLISHED TCP connections that would never notice a silent peer (keepalive off, nothing in flight)",
        never.clone(),
    );
    most.max(folded(
        (&mut *shown, "katop_dead_peer_never_connections", max),
        groups
            .iter()
            .filter(|(_, t)| t.detect_never > 0)
            .map(|(g, t)| (g.clone(), t.detect_never))
            .collect(),
        |v| *v as f64,
        sum,
        |g, v| {
            never.get_or_create(g).set(v);
        },
        |_| Group::other(),
    ))
}

fn encode_status(reg: &mut Registry, folded: usize, unread_namespaces: usize) {
    let truncated_g: Gauge = Gauge::default();
    truncated_g.set(folded as i64);
    reg.register(
        "katop_groups_truncated",
        "Label sets one metric folded into process=\"other\" to stay within --max-groups (the most any metric folded)",
        truncated_g,
    );
    let unread: Gauge = Gauge::default();
    unread.set(unread_namespaces as i64);
    reg.register(
        "katop_netns_unread",
        "Network namespaces asked for whose sockets the latest poll could not read (katop's warnings say why)",
        unread,
    );
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
mod tests;
