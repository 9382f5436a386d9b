//! katop: every socket on the host from netlink `sock_diag`, with keepalive insight.
//!
//! Layers, data flowing one way: [`collector`] (the only code that talks to the kernel) →
//! [`model::Snapshot`] → [`model::ConnTable`] → views ([`output`], [`columns`]).

pub mod actions;
pub mod app;
pub mod cli;
pub mod collector;
pub mod columns;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod exporter;
pub mod files;
pub mod history;
pub mod man;
pub mod model;
pub mod output;
pub mod privilege;
pub mod store;
pub mod text;
pub mod tui;
pub mod ui;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use cli::Args;
use collector::{Collector, Selection};
use columns::Column;
use model::filter::Filter;
use model::{ConnTable, Proto, SockEntry};

/// Exit code for bad usage (bad filter, missing mode), as clap uses.
const USAGE: u8 = 2;

/// Parses the command line, reads the config file under it, and runs.
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // Namespaces any user can make cost descriptors: all the hard limit allows, shared out
    // (collector::fds).
    collector::fds::raise();
    let command_line: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Args::command().get_matches_from(cli::ss::without_ss_timer_flag(&command_line));
    let mut args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    // Completions and the man page come from the definition alone.
    if !matches!(
        args.command,
        Some(cli::Command::Completions { .. } | cli::Command::Man { .. })
    ) {
        let config = match config::load(args.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                // The file's own text is quoted back: no escape sequence of it reaches the
                // terminal.
                let lines: Vec<_> = e.lines().map(text::printable).collect();
                crate::say!("katop: bad config: {}", lines.join("\n"));
                return ExitCode::from(USAGE);
            }
        };
        config::apply(&mut args, &matches, &config);
        install_services(&config.services);
    }
    args.stream = args.jsonl
        && matches.value_source("interval") == Some(clap::parser::ValueSource::CommandLine);
    // A typo in --netns is not "no connections": every word must name a namespace. What runs
    // on (the dashboard, the exporter, a stream) says so and takes the namespace once it
    // appears: a unit started before its container must not fail.
    if !matches!(
        args.command,
        Some(cli::Command::Completions { .. } | cli::Command::Man { .. })
    ) {
        let which = netns_choice(&args).0;
        if let Err(e) = collector::namespaces::check(&which, collector::current_netns()) {
            let runs_on = args.stream
                || matches!(args.command, Some(cli::Command::Exporter(_)))
                || (args.command.is_none() && !(args.once || args.json || args.jsonl));
            let later = if runs_on {
                "; read once it appears"
            } else {
                ""
            };
            crate::say!("katop: {e}{later}");
            if !runs_on {
                return ExitCode::from(USAGE);
            }
        }
    }
    let code = run(&args);
    // The tracefs instance goes with katop, whichever thread held it.
    collector::ends::stop_all();
    code
}

/// Port names: katop's, the system's (`/etc/services`, below the ephemeral range) and the
/// config file's.
fn install_services(configured: &[(u16, String)]) {
    // The first port the kernel hands out to clients: nothing at or above it is a service.
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let system = std::fs::read_to_string("/etc/services")
        .map(|t| model::services::parse_etc_services(&t, below))
        .unwrap_or_default();
    model::services::install(&system, configured);
}

/// Runs katop with resolved arguments (the config file applied).
pub fn run(args: &Args) -> ExitCode {
    let middleboxes = middleboxes(args);
    match &args.command {
        Some(cli::Command::Kill(k)) => {
            let action = actions::Action::Kill;
            return commands::act(args, &k.choose, action, k.mechanism, middleboxes);
        }
        Some(cli::Command::Exporter(e)) => return exporter::run(args, e, middleboxes),
        Some(cli::Command::History(h)) => return history::run(args, h),
        Some(cli::Command::Record(r)) => return history::record::run(args, r),
        Some(cli::Command::Completions { shell }) => {
            let mut cmd = <Args as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "katop", &mut io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(cli::Command::Man { page, dir }) => return man::run(page.as_deref(), dir.as_deref()),
        Some(cli::Command::Keepalive(k)) => {
            let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
            let change = match actions::Change::new(secs(k.idle), secs(k.intvl), k.cnt) {
                Ok(c) => c,
                Err(e) => {
                    crate::say!("katop keepalive: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            let action = actions::Action::Keepalive(change);
            let method = actions::Method::default();
            return commands::act(args, &k.choose, action, method, middleboxes);
        }
        None => {}
    }
    let source = args.filter_text();
    let filter = match Filter::parse(&source) {
        Ok(f) => f,
        Err(e) => {
            crate::say!("katop: bad --filter: {e}\n{}", e.pointed(&source));
            return ExitCode::from(USAGE);
        }
    };
    if args.at.is_some() && args.stream {
        crate::say!("katop: --at shows one past moment, not a stream: drop --interval");
        return ExitCode::from(USAGE);
    }
    if let Some(Err(e)) = args
        .at
        .as_deref()
        .map(|at| store::when::parse_time(Some(at)))
    {
        crate::say!("katop: --at: {e}");
        return ExitCode::from(USAGE);
    }
    if !(args.once || args.json || args.jsonl) {
        if !io::stdout().is_terminal() {
            crate::say!(
                "katop: the dashboard needs a terminal; use --once, --json or --jsonl when piping"
            );
            return ExitCode::from(USAGE);
        }
        return match dashboard::run(args, filter, selection(args), middleboxes) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                crate::say!("katop: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match once(args, &filter, middleboxes) {
        Ok(()) => ExitCode::SUCCESS,
        // `katop --once | head` closes the pipe early: not an error.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::say!("katop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// When to read fd tables with the BPF reader (`--no-bpf`: never).
pub(crate) fn bpf_from(args: &Args) -> Option<usize> {
    (!args.no_bpf).then_some(collector::BPF_FROM_SOCKETS)
}

/// Which sockets the protocol and family flags ask for (none given: all).
pub fn selection(args: &Args) -> Selection {
    let mut protos = Vec::new();
    for (on, p) in [
        (args.tcp, Proto::Tcp),
        (args.udp, Proto::Udp),
        (args.unix, Proto::Unix),
    ] {
        if on {
            protos.push(p);
        }
    }
    if protos.is_empty() {
        protos = if args.ipv4 || args.ipv6 {
            vec![Proto::Tcp, Proto::Udp]
        } else {
            Selection::default().protos
        };
    }
    Selection {
        protos,
        ipv4: !args.ipv6,
        ipv6: !args.ipv4,
        netns: netns_choice(args).0,
        bpf_from: bpf_from(args),
    }
}

/// Which namespaces `--netns` asks for, and when the default had to be katop's own, why.
pub fn netns_choice(args: &Args) -> (collector::namespaces::Which, Option<&'static str>) {
    use collector::namespaces::Which;
    let asked: Vec<&str> = args.netns.iter().map(String::as_str).collect();
    match asked.as_slice() {
        [] if may_enter_namespaces() => (Which::All, None),
        [] => (
            Which::Own,
            Some(
                "showing katop's own network namespace only: reading every namespace and \
                 container needs root (or CAP_SYS_ADMIN and CAP_SYS_PTRACE); --netns all to try",
            ),
        ),
        l if l.contains(&"all") => (Which::All, None),
        l => (
            Which::Some(l.iter().map(|s| (*s).to_string()).collect()),
            None,
        ),
    }
}

/// Whether katop may enter other network namespaces (`setns` needs `CAP_SYS_ADMIN`, reading
/// other processes' namespace links `CAP_SYS_PTRACE`).
fn may_enter_namespaces() -> bool {
    use rustix::thread::CapabilitySet;
    rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(CapabilitySet::SYS_ADMIN | CapabilitySet::SYS_PTRACE)
    })
}

/// Sorted, filtered rows of the table.
pub fn rows<'a>(
    table: &'a ConnTable,
    filter: &Filter,
    sort: Option<Column>,
    reverse: bool,
    now: Instant,
) -> Vec<SockEntry<'a>> {
    let mut rows: Vec<SockEntry> = table.entries().filter(|e| filter.matches(e, now)).collect();
    if let Some(col) = sort {
        rows.sort_by_cached_key(|e| col.sort_key(e, now));
    }
    if reverse {
        rows.reverse();
    }
    rows
}

/// The declared middleboxes: the config file's, then `--middlebox-timeout`'s.
pub fn middleboxes(args: &Args) -> Vec<model::Middlebox> {
    let mut all = args.declared.clone();
    all.extend(args.middlebox_timeout.iter().cloned());
    all
}

fn once(args: &Args, filter: &Filter, middleboxes: Vec<model::Middlebox>) -> anyhow::Result<()> {
    if let Some(note) = netns_choice(args).1 {
        crate::say!("katop: {note}");
    }
    let mut collector = Collector::new(selection(args))?;
    let mut table = ConnTable::new(args.stale_after);
    table.set_middleboxes(middleboxes);
    if args.stream {
        return stream(args, filter, &mut collector, &mut table);
    }
    let snap = match &args.at {
        Some(at) => past(args, at)?,
        None => collector.poll()?,
    };
    // Its caches (owners, options, namespaces) serve later polls only: their room goes to the
    // table and the output.
    drop(collector);
    let now = Instant::now();
    table.apply(snap, now);
    for w in &table.warnings {
        crate::say!("katop: {w}");
    }
    let rows = rows(&table, filter, args.sort, args.reverse, now);
    let stdout = io::stdout();
    let width = stdout
        .is_terminal()
        .then(|| {
            crossterm::terminal::size()
                .ok()
                .map(|(w, _)| usize::from(w))
        })
        .flatten();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let stamp = output::Stamp::of(&table);
    if args.json {
        output::write_json(&mut out, &rows, &table, &stamp)?;
    } else if args.jsonl {
        output::write_jsonl(&mut out, &rows, &table, &stamp)?;
    } else {
        let containers = rows.iter().any(|e| e.container().is_some());
        let columns = args.table_columns(table.ctx.namespaces.len(), containers);
        output::write_table(&mut out, &rows, &columns, width, now)?;
        writeln!(
            out,
            "\n{}",
            output::fill(&output::settings_line(table.settings()), width)
        )?;
        if let Some(legend) = output::estimate_legend(&rows, &columns, now) {
            writeln!(out, "{}", output::fill(legend, width))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The snapshot the store holds for `--at`.
fn past(args: &Args, at: &str) -> anyhow::Result<model::Snapshot> {
    let when = store::when::parse_time(Some(at))
        .map_err(anyhow::Error::msg)?
        .unwrap_or_else(std::time::SystemTime::now);
    let dir = store::dir_or_default(args.store.as_deref())?;
    let mut snap = store::read::snapshot_at(&dir, when)?;
    store::snapshot::narrow(&mut snap, &netns_choice(args).0);
    Ok(snap)
}

/// `--jsonl --interval DUR`: every interval, one object per socket, each poll flushed whole;
/// SIGINT, SIGTERM, SIGHUP (the terminal or ssh session went away) and SIGQUIT end it between
/// polls, so no line is ever cut.
fn stream(
    args: &Args,
    filter: &Filter,
    collector: &mut Collector,
    table: &mut ConnTable,
) -> anyhow::Result<()> {
    // Dead connections' causes, from the tracepoints where katop may (else inferred).
    let _ = collector.watch_ends();
    let mut warned = Vec::new();
    until_signal(args.interval, || {
        // Only each socket's history is kept between polls.
        let spare = table.retire(model::Keep::History);
        let snap = collector.poll_into(spare)?;
        let now = Instant::now();
        table.apply(snap, now);
        say_new_warnings(&table.warnings, &mut warned);
        let rows = rows(table, filter, args.sort, args.reverse, now);
        let stamp = output::Stamp::of(table);
        let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
        output::write_jsonl(&mut out, &rows, table, &stamp)?;
        out.flush()?;
        Ok(())
    })
}

/// A warning is said when it starts, not every poll.
pub fn say_new_warnings(warnings: &[String], warned: &mut Vec<String>) {
    for w in warnings {
        if !warned.contains(w) {
            crate::say!("katop: {w}");
        }
    }
    *warned = warnings.to_vec();
}

/// Runs `each` now and every `interval` until SIGINT, SIGTERM, SIGHUP (the terminal or ssh
/// session went away) or SIGQUIT, which end it between runs: no output line is ever cut.
pub fn until_signal(
    interval: std::time::Duration,
    mut each: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                _ = hup.recv() => return Ok(()),
                _ = quit.recv() => return Ok(()),
            }
            each()?;
        }
    })
}
