//! Command-line arguments (clap derive, each with a KATOP_* environment twin).
//! Doc comments here are the user's --help text: no Markdown.
#![allow(clippy::doc_markdown)]

pub mod ss;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::actions::Method;
use crate::model::Middlebox;

use crate::columns::Column;
use crate::model::duration::parse_ms;
use crate::model::StaleReason;

fn duration(text: &str) -> Result<Duration, String> {
    parse_ms(text).map(Duration::from_millis)
}

/// The shortest poll interval: below it polling spins the CPU to no one's benefit.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn interval(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "'{text}' is too short: the poll interval is at least 100ms"
        ));
    }
    Ok(d)
}

fn after_help() -> String {
    let reasons: Vec<String> = StaleReason::ALL
        .iter()
        .map(|r| format!("  {:<15} {}", r.name(), r.explain()))
        .collect();
    format!(
        "\
Filter expressions (--filter):
  state:established idle>10m service:postgres    idle postgres connections
  dport:5432 !keepalive                          no keepalive towards port 5432
  proc:java probes>0                             java's peers that stopped answering probes
  stale                                          anything flagged below
  src:10.0.0.0/8 or dst:[::1]                    by address, CIDR or :port
  ka_idle>1h ka_source:socket                    keepalive set to wait over an hour
  established detect>1h                          a dead peer goes unnoticed for 1h+
  close-wait comm:gunicorn                       a worker pool's CLOSE_WAIT leaks
Terms: state proto family src dst sport dport port service proc comm owner pid uid idle
age rtt keepalive timer probes retrans recvq sendq ka_idle ka_intvl ka_cnt ka_source
user_timeout detect netns container stale, each stale reason, and state words alone
(established, close-wait, listen…, as ss takes them); and (implicit), or, not/!,
parentheses. Durations: 500ms 30s 10m 2h 1d. detect compares never (keepalive off) as
longer than any duration.

Stale reasons:
{}

ss habits: -t -u -x -4 -6 -l -a -n -p -e -i mean what they mean to ss; -o, -s, -r, -f
differ (ss's timers, summary, resolving and family): katop's timers are columns, its -o picks
columns, -s sorts, -r reverses, -f filters. State words work alone: katop --once -f established.

Examples:
  katop --once                          every socket, as a table
  katop --once -t --filter stale        stale TCP connections
  katop --json --filter 'service:postgres idle>1h' | jq .
  katop kill --filter 'service:postgres idle>2h' --dry-run
",
        reasons.join("\n")
    )
}

/// Every socket on this host, with the keepalive insight ss and netstat lack.
///
/// Reads TCP, UDP and Unix sockets through netlink sock_diag, joins them with their
/// processes from /proc, and flags stale connections: idle ones, ones with keepalive off,
/// peers that stopped answering keepalive probes, CLOSE_WAIT leaks.
#[derive(Debug, Clone, Parser)]
#[allow(clippy::struct_excessive_bools)] // flags, as ss has them
#[command(name = "katop", version, after_help = after_help())]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print one poll and exit (the table, or JSON with --json/--jsonl).
    #[arg(long)]
    pub once: bool,

    /// Print one JSON array of sockets and exit (implies --once).
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,

    /// Print one JSON object per socket per line and exit (implies --once); with --interval,
    /// print them every interval until interrupted (for log shippers).
    #[arg(long)]
    pub jsonl: bool,

    /// Show the connections as they were at TIME, from katop record's store (the dashboard,
    /// --once, --json or --jsonl): RFC 3339 (2026-12-06T03:00:00Z, 03:00:00+01:00; no offset is
    /// UTC), a local clock time (03:00, 03:00:10: the last one passed), or an age (10m ago).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,

    /// The store --at reads: default /var/lib/katop as root, else $XDG_STATE_HOME/katop.
    #[arg(long, value_name = "DIR", env = "KATOP_STORE")]
    pub store: Option<std::path::PathBuf>,

    /// Only sockets matching this expression (see below).
    #[arg(short, long, env = "KATOP_FILTER", value_name = "EXPR")]
    pub filter: Option<String>,

    /// Table columns, comma-separated.
    #[arg(
        short = 'o',
        long = "columns",
        value_name = "COLS",
        value_delimiter = ',',
        env = "KATOP_COLUMNS"
    )]
    pub columns: Option<Vec<Column>>,

    /// Sort by this column (any name -o takes): numbers largest first, text A to Z.
    #[arg(
        short,
        long,
        value_name = "COL",
        env = "KATOP_SORT",
        hide_possible_values = true
    )]
    pub sort: Option<Column>,

    /// Reverse the sort order.
    #[arg(short, long)]
    pub reverse: bool,

    /// An ESTABLISHED connection idle this long, or a CLOSE_WAIT this old, is stale.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration, env = "KATOP_STALE_AFTER", global = true)]
    pub stale_after: Duration,

    /// Time between polls in the dashboard (+ and - change it there); with --jsonl, stream.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = interval, env = "KATOP_INTERVAL")]
    pub interval: Duration,

    /// Listening sockets only (TCP LISTEN, unconnected UDP and Unix), as ss -l.
    #[arg(short = 'l', long)]
    pub listening: bool,

    /// All sockets, listening ones too: katop's default (accepted for ss habits).
    #[arg(short = 'a', long, conflicts_with = "listening")]
    pub all: bool,

    /// Numeric addresses and ports: katop never resolves names (accepted for ss habits).
    #[arg(short = 'n', long)]
    pub numeric: bool,

    /// Owning processes: katop always shows them (accepted for ss habits).
    #[arg(short = 'p', long)]
    pub processes: bool,

    /// Also the socket's uid, inode and cookie in the table, as ss -e.
    #[arg(short = 'e', long)]
    pub extended: bool,

    /// Also the armed timer, RTT and byte counters in the table, as ss -i.
    #[arg(short = 'i', long)]
    pub info: bool,

    /// IPv4 sockets only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 sockets only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Network namespaces to read: all, host, a name (ip netns, container), a pid (its
    /// namespace) or an inode; repeatable or comma-separated. Default: all when katop may enter
    /// them (root, or CAP_SYS_ADMIN and CAP_SYS_PTRACE), else its own.
    #[arg(
        long,
        value_name = "NS",
        value_delimiter = ',',
        env = "KATOP_NETNS",
        global = true
    )]
    pub netns: Vec<String>,

    /// Read fd tables and keepalive options from /proc and getsockopt, and TCP sockets from
    /// sock_diag, never with the BPF readers (which katop otherwise loads where it can, at 10k
    /// sockets and more: one pass over every process's fds instead of a syscall or more per
    /// fd, and one over the TCP sockets instead of a netlink dump).
    #[arg(long, env = "KATOP_NO_BPF", value_parser = clap::builder::FalseyValueParser::new(), global = true)]
    pub no_bpf: bool,

    /// TCP sockets.
    #[arg(short, long)]
    pub tcp: bool,

    /// UDP sockets.
    #[arg(short, long)]
    pub udp: bool,

    /// Unix sockets.
    #[arg(short = 'x', long)]
    pub unix: bool,

    /// What sits between this host and its peers and forgets idle connections: a load
    /// balancer's or NAT's idle timeout, for every peer or for some ([DEST=]TIMEOUT, DEST an
    /// address, CIDR or :port; TIMEOUT a duration or aws-nlb, aws-nat-gateway, azure-lb,
    /// gcp-cloud-nat, gcp-lb). Repeatable. Connections silent longer, with no keepalive
    /// probing sooner, are flagged at-risk. Also [middleboxes] in the config file.
    #[arg(
        long = "middlebox-timeout",
        value_name = "[DEST=]TIMEOUT",
        value_parser = |s: &str| Middlebox::parse(None, s),
        env = "KATOP_MIDDLEBOX_TIMEOUT",
        value_delimiter = ',',
        global = true
    )]
    pub middlebox_timeout: Vec<Middlebox>,

    /// The config file [default: $XDG_CONFIG_HOME/katop/config.toml, else
    /// ~/.config/katop/config.toml].
    #[arg(long, value_name = "PATH", env = "KATOP_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Nothing is killed or changed: the dashboard's k, K and Space leave the footer and help
    /// (pressed anyway, they say why), and katop kill and katop keepalive refuse (exit 2;
    /// --dry-run still lists).
    #[arg(long, env = "KATOP_READ_ONLY", value_parser = clap::builder::FalseyValueParser::new(), global = true)]
    pub read_only: bool,

    /// Append every kill and keepalive change (dashboard, kill, keepalive; the exporter changes
    /// nothing) here, one JSON line each [default: $XDG_STATE_HOME/katop/kills.jsonl, else
    /// ~/.local/state/katop/kills.jsonl].
    #[arg(long, value_name = "PATH", env = "KATOP_KILL_LOG", global = true)]
    pub kill_log: Option<PathBuf>,

    /// ss's filter words after the options: `state established`, `exclude listening`; other
    /// words are taken as --filter's language (all of them and --filter must match).
    #[arg(value_name = "SS-FILTER")]
    pub words: Vec<String>,

    /// The config file's middleboxes (set by `config::apply`, not a flag).
    #[arg(skip)]
    pub declared: Vec<Middlebox>,

    /// The config file's presets: (key, name, filter).
    #[arg(skip)]
    pub presets: Vec<(char, String, String)>,

    /// --jsonl with --interval given: stream until interrupted.
    #[arg(skip)]
    pub stream: bool,
}

impl Args {
    /// The --filter expression with what -l adds.
    pub fn filter_text(&self) -> String {
        let typed = self.filter.as_deref().unwrap_or("").trim();
        let words = ss::filter_words(&self.words);
        let user = match (typed.is_empty(), words.is_empty()) {
            (_, true) => typed.to_string(),
            (true, false) => words,
            (false, false) => format!("({typed}) ({words})"),
        };
        let user = user.as_str();
        if !self.listening {
            return user.to_string();
        }
        let listening = "(listen or (!tcp unconn))";
        if user.is_empty() {
            listening.into()
        } else {
            format!("{listening} ({user})")
        }
    }

    /// The table's columns: -o's (else the default), with what -e and -i add.
    pub fn table_columns(&self, namespaces: usize, containers: bool) -> Vec<Column> {
        self.with_e_and_i(
            self.columns.clone().unwrap_or_else(|| {
                crate::columns::for_table(&Column::DEFAULT, namespaces, containers)
            }),
        )
    }

    /// The dashboard's columns: -o's (else all it has), with what -e and -i add.
    pub fn dashboard_columns(&self) -> Vec<Column> {
        self.with_e_and_i(
            self.columns
                .clone()
                .unwrap_or_else(|| Column::DASHBOARD.to_vec()),
        )
    }

    fn with_e_and_i(&self, mut columns: Vec<Column>) -> Vec<Column> {
        let mut add = |more: &[Column]| {
            for c in more {
                if !columns.contains(c) {
                    columns.push(*c);
                }
            }
        };
        if self.info {
            add(&[
                Column::Timer,
                Column::Rtt,
                Column::BytesIn,
                Column::BytesOut,
            ]);
        }
        if self.extended {
            add(&[Column::Uid, Column::Inode, Column::Cookie]);
        }
        columns
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Kill the TCP/UDP sockets a filter matches (SOCK_DESTROY, as ss -K), exactly those.
    ///
    /// Lists what matches, asks for confirmation on a terminal (or takes --yes), kills each
    /// socket by its id and cookie (a newer socket on the same ports is never touched),
    /// re-reads the kernel to confirm, and appends every attempt to the kill log.
    /// Exit status: 0 when every matched socket is gone (killed, or closed meanwhile), 1 when
    /// some could not be killed, 2 on bad usage.
    #[command(after_help = "\
Examples:
  katop kill --filter 'service:postgres idle>2h' --dry-run
  katop kill --filter 'state:close-wait proc:java' --yes --json
  sudo katop kill --filter 'dport:5432 probes>3'")]
    Kill(KillArgs),

    /// Turn keepalive on (or change its timers) on live TCP connections a filter matches.
    ///
    /// Sets SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT with setsockopt on a
    /// duplicate of the owner's fd (pidfd_getfd; needs ptrace rights over the owner), reads
    /// them back, checks the kernel now reports a keepalive timer, and logs every attempt in
    /// the same log as kills. The application keeps using its socket as before.
    /// Exit status as katop kill.
    #[command(after_help = "\
Examples:
  katop keepalive --filter 'service:postgres keepalive:off' --dry-run
  katop keepalive --filter 'stale:at-risk' --idle 60s --intvl 10s --cnt 5 --yes")]
    Keepalive(KeepaliveArgs),

    /// Serve Prometheus metrics of every socket, aggregated: stale connections, CLOSE_WAIT
    /// leaks, keepalive off, idle pools, dead-peer countdowns, by process, service and
    /// container.
    ///
    /// Polls in the background every --interval and answers each scrape from the latest poll
    /// (the Prometheus text format, or OpenMetrics when Accept asks for it). Read-only: it
    /// never kills or changes anything.
    #[command(after_help = "\
Examples:
  katop exporter                                  # http://HOST:9899/metrics
  katop exporter --listen 127.0.0.1:9899 --interval 30s
  katop exporter --listen none --textfile /var/lib/node_exporter/textfile/katop.prom")]
    Exporter(ExporterArgs),

    /// Every connection's life as events, one per line: opened, state, closed (with why it
    /// ended: closed, reset-received, reset-sent, keepalive-timeout, retransmit-timeout,
    /// killed, unknown).
    ///
    /// --follow streams them as they happen until interrupted. Why a connection ended comes
    /// from the kernel's tracepoints when katop runs as root (cause_source "tracepoint"), else
    /// it is inferred from the last poll that saw it ("inferred", shown with ~).
    #[command(after_help = "\
Examples:
  katop history --follow
  katop history --follow --json --filter 'service:postgres' >> /var/log/katop-events.ndjson")]
    History(HistoryArgs),

    /// Record every connection's events into a store, until SIGTERM or SIGINT (exit 0):
    /// what katop history reads back.
    ///
    /// Polls every --interval, and appends each poll's events (opened, state, closed with
    /// why) to append-only, checksummed, compressed segments; drops the oldest past --retain
    /// or --max-size; survives a crash (a torn tail is skipped) and a full disk (the oldest
    /// data goes, the recorder goes on). One recorder per store.
    #[command(after_help = "\
Examples:
  sudo katop record
  katop record --store /var/lib/katop --interval 10s --retain 7d --max-size 1GiB")]
    Record(RecordArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff): katop man | man -l -; katop man kill prints katop-kill(1);
    /// --dir DIR writes every page there (katop.1, katop-kill.1, …).
    Man {
        /// A subcommand's page.
        #[arg(value_name = "SUBCOMMAND")]
        page: Option<String>,
        /// Write every page into this directory instead.
        #[arg(long, value_name = "DIR", conflicts_with = "page")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExporterArgs {
    /// Where to serve /metrics: [ADDR]:PORT (:9899 is every address), or none.
    #[arg(long, value_name = "[ADDR]:PORT", default_value = ":9899", value_parser = crate::exporter::parse_listen, env = "KATOP_EXPORTER_LISTEN")]
    pub listen: crate::exporter::Listen,

    /// Also write the metrics to this file every interval, atomically (temp file + rename),
    /// for node_exporter's textfile collector.
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,

    /// Time between polls; each scrape is answered from the latest.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = interval)]
    pub interval: Duration,

    /// At most this many label sets per metric; the rest are folded into process="other".
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_groups: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Stream events as they happen, until interrupted.
    #[arg(long)]
    pub follow: bool,

    /// Only connections matching this expression (the --filter language).
    #[arg(short, long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// One JSON object per event per line (NDJSON).
    #[arg(long)]
    pub json: bool,

    /// Time between polls while following.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = interval)]
    pub interval: Duration,

    /// The store to read (katop record's): default /var/lib/katop as root, else
    /// $XDG_STATE_HOME/katop.
    #[arg(
        long,
        value_name = "DIR",
        env = "KATOP_STORE",
        conflicts_with = "follow"
    )]
    pub store: Option<std::path::PathBuf>,

    /// Events from this time on: RFC 3339 (2026-12-06T03:00:00Z), a local clock time (03:00,
    /// the last one passed) or an age (2h ago).
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    pub since: Option<String>,

    /// Events up to this time (same forms as --since).
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Where to keep the history: default /var/lib/katop as root, else
    /// $XDG_STATE_HOME/katop (made private, 0700).
    #[arg(long, value_name = "DIR", env = "KATOP_STORE")]
    pub store: Option<std::path::PathBuf>,

    /// Time between polls.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = interval, env = "KATOP_RECORD_INTERVAL")]
    pub interval: Duration,

    /// Keep this much history; older data is dropped whole segments at a time.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = duration, env = "KATOP_RETAIN")]
    pub retain: Duration,

    /// Keep the store under this size (1GiB, 500MB, …); the oldest data goes first.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = size, env = "KATOP_MAX_SIZE")]
    pub max_size: u64,

    /// Also serve the exporter's /metrics from the same polls: [ADDR]:PORT (:9899 is every
    /// address), or none.
    #[arg(long, value_name = "[ADDR]:PORT", default_value = "none", value_parser = crate::exporter::parse_listen, env = "KATOP_RECORD_LISTEN")]
    pub listen: crate::exporter::Listen,

    /// Also write the exporter's metrics to this file every poll, atomically, for
    /// node_exporter's textfile collector.
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,

    /// The exporter's label sets per metric, at most (the rest are folded into
    /// process="other").
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_groups: usize,
}

fn size(text: &str) -> Result<u64, String> {
    let bytes = text
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("'{text}' is not a size like 1GiB or 500MB: {e}"))?;
    if bytes == 0 {
        return Err("a store of size 0 would keep nothing".into());
    }
    Ok(bytes)
}

/// Which sockets an action takes, and how the operator consents.
#[derive(Debug, Clone, clap::Args)]
#[allow(clippy::struct_excessive_bools)] // flags
pub struct Choose {
    /// Which sockets (the --filter language; required, and never taken from KATOP_FILTER).
    #[arg(short, long, value_name = "EXPR")]
    pub filter: String,

    /// List what would be done, do nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(short, long)]
    pub yes: bool,

    /// Print the per-socket results as a JSON array (the log's objects).
    #[arg(long)]
    pub json: bool,

    /// Also act on listening sockets (and unconnected UDP sockets) the filter matches.
    #[arg(long)]
    pub include_listen: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub choose: Choose,

    /// How to kill: SOCK_DESTROY, falling back to shutdown(2) on the owner's fd where the
    /// kernel lacks it (auto); or only one of them.
    #[arg(long, value_enum, default_value_t, value_name = "HOW")]
    pub mechanism: Method,
}

#[derive(Debug, Clone, clap::Args)]
pub struct KeepaliveArgs {
    #[command(flatten)]
    pub choose: Choose,

    /// TCP_KEEPIDLE: silence before the first probe (1s..9h6m7s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub idle: Duration,

    /// TCP_KEEPINTVL: time between probes.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub intvl: Duration,

    /// TCP_KEEPCNT: unanswered probes before the kernel drops the connection (1..127).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub cnt: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_durations_and_columns() {
        let a = Args::try_parse_from([
            "katop",
            "--once",
            "--stale-after",
            "10m",
            "-o",
            "state,remote,idle",
        ])
        .unwrap();
        assert_eq!(a.stale_after, Duration::from_secs(600));
        assert_eq!(
            a.columns,
            Some(vec![Column::State, Column::Remote, Column::Idle])
        );
        let e = Args::try_parse_from(["katop", "--stale-after", "10x"]).unwrap_err();
        assert!(e.to_string().contains("'10x' is not a duration"), "{e}");
        assert!(Args::try_parse_from(["katop", "--json", "--jsonl"]).is_err());
    }
}
