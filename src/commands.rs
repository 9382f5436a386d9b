//! Subcommands that act on sockets from scripts: `katop kill`.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::actions::target::{summary, JsonReport};
use crate::actions::{log, AuditLog, Killer, Target};
use crate::cli::{Args, KillArgs};
use crate::collector::{Collector, Selection};
use crate::model::filter::Filter;
use crate::model::{ConnTable, Proto, SockEntry, SockState};

const USAGE: u8 = 2;

/// Listening sockets, and unconnected UDP sockets (a UDP server's socket): killing them takes
/// a service down, so only with `--include-listen`.
pub fn is_listening(e: &SockEntry<'_>) -> bool {
    is_listening_state(e.sock.proto, e.sock.state)
}

pub fn is_listening_state(proto: Proto, state: SockState) -> bool {
    state == SockState::Listen || (proto == Proto::Udp && state == SockState::Close)
}

/// `katop kill`: see `cli::Command::Kill` for the contract.
pub fn kill(args: &Args, k: &KillArgs) -> ExitCode {
    match kill_inner(args, k) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("katop kill: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("katop kill: {msg}");
    ExitCode::from(USAGE)
}

fn kill_inner(args: &Args, k: &KillArgs) -> anyhow::Result<ExitCode> {
    let targets = match select(args, k)? {
        Ok(t) => t,
        Err(msg) => return Ok(usage(&msg)),
    };
    let mut out = io::stdout().lock();
    if targets.is_empty() {
        eprintln!(
            "katop kill: no TCP or UDP socket matches {:?}; nothing to do",
            k.filter
        );
        if k.json {
            writeln!(out, "[]")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if k.dry_run {
        if k.json {
            let at = SystemTime::now();
            let planned: Vec<JsonReport> =
                targets.iter().map(|t| JsonReport::planned(t, at)).collect();
            serde_json::to_writer_pretty(&mut out, &planned)?;
            writeln!(out)?;
        } else {
            writeln!(out, "would kill {} socket(s):", targets.len())?;
            for t in &targets {
                writeln!(out, "  {}", t.describe())?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !k.yes {
        if !io::stdin().is_terminal() {
            return Ok(usage(
                "refusing to kill without confirmation: stdin is not a terminal. Check the list \
                 with --dry-run, then pass --yes",
            ));
        }
        if !ask(&targets)? {
            eprintln!("nothing killed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let Some(path) = args.kill_log.clone().or_else(log::default_path) else {
        anyhow::bail!(
            "nowhere to write the kill log (neither XDG_STATE_HOME nor HOME is set); pass \
             --kill-log PATH. Nothing was killed"
        );
    };
    let mut audit = AuditLog::open(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the kill log {}: {e}; nothing was killed (--kill-log PATH puts it \
             elsewhere)",
            path.display()
        )
    })?;
    let mut killer = Killer::new(k.mechanism)?;
    let reports = killer.kill_all(&targets);
    let logged = audit.append(&reports);
    if k.json {
        let json: Vec<JsonReport> = reports.iter().map(|r| r.json()).collect();
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else {
        for r in &reports {
            writeln!(out, "{}", r.line())?;
        }
    }
    out.flush()?;
    eprintln!(
        "katop kill: {}; logged to {}",
        summary(&reports),
        path.display()
    );
    if let Err(e) = logged {
        eprintln!(
            "katop kill: could not write the kill log {}: {e}; the results above are not recorded",
            path.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(if reports.iter().all(|r| r.outcome.is_success()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Asks on the terminal; only an explicit yes kills.
fn ask(targets: &[Target]) -> io::Result<bool> {
    eprintln!("about to kill {} socket(s):", targets.len());
    for t in targets {
        eprintln!("  {}", t.describe());
    }
    eprint!("Kill these {} socket(s)? [y/N] ", targets.len());
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The sockets the filter chooses, as targets; `Err(message)` for bad usage.
fn select(args: &Args, k: &KillArgs) -> anyhow::Result<Result<Vec<Target>, String>> {
    let filter = match Filter::parse(&k.filter) {
        Ok(f) => f,
        Err(e) => {
            return Ok(Err(format!("bad --filter: {e}\n{}", e.pointed(&k.filter))));
        }
    };
    if filter.matches_all() {
        return Ok(Err(
            "refusing an empty --filter: it would match every socket".into(),
        ));
    }
    let mut collector = Collector::new(Selection {
        protos: vec![Proto::Tcp, Proto::Udp],
        ipv4: true,
        ipv6: true,
    })?;
    let snap = collector.poll()?;
    let now = Instant::now();
    let mut table = ConnTable::new(args.stale_after);
    table.apply(snap, now);
    let matched: Vec<SockEntry> = table.entries().filter(|e| filter.matches(e, now)).collect();
    let listening: Vec<&SockEntry> = matched.iter().filter(|e| is_listening(e)).collect();
    if !k.include_listen && !listening.is_empty() {
        let mut lines = vec![format!(
            "the filter matches {} listening socket(s); killing them stops a service. Add \
             --include-listen to kill them too, or narrow the filter (e.g. add state!=listen):",
            listening.len()
        )];
        lines.extend(
            listening
                .iter()
                .take(10)
                .map(|e| format!("  {}", Target::of(e).describe())),
        );
        return Ok(Err(lines.join("\n")));
    }
    Ok(Ok(matched.iter().map(Target::of).collect()))
}
