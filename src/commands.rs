//! Subcommands that act on sockets from scripts: `katop kill` and `katop keepalive`. Both
//! choose sockets with a filter, show or ask before acting, act on exactly those (by cookie),
//! and record every attempt in the audit log.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::actions::target::{summary, JsonReport};
use crate::actions::{log, Action, AuditLog, Killer, Method, Powers, Report, Scope, Target, Tuner};
use crate::cli::{Args, Choose};
use crate::collector::{Collector, Selection};
use crate::model::filter::Filter;
use crate::model::{ConnTable, Middlebox, Proto, SockEntry, SockState};

const USAGE: u8 = 2;

/// Why nothing is done under `--read-only`.
const READ_ONLY: &str = "read-only (--read-only or KATOP_READ_ONLY is set)";

/// Listening sockets, and unconnected UDP sockets (a UDP server's socket): acting on them
/// affects a whole service, so only with `--include-listen`.
pub fn is_listening(e: &SockEntry<'_>) -> bool {
    is_listening_state(e.sock.proto, e.sock.state)
}

pub fn is_listening_state(proto: Proto, state: SockState) -> bool {
    state == SockState::Listen || (proto == Proto::Udp && state == SockState::Close)
}

/// `katop kill` / `katop keepalive`: see `cli::Command` for the contract.
pub fn act(
    args: &Args,
    choose: &Choose,
    action: Action,
    method: Method,
    middleboxes: Vec<Middlebox>,
) -> ExitCode {
    let name = action.name();
    match act_inner(args, choose, action, method, middleboxes) {
        Ok(code) => code,
        Err(e) => {
            crate::say!("katop {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(action: Action, msg: &str) -> ExitCode {
    crate::say!("katop {}: {msg}", action.name());
    ExitCode::from(USAGE)
}

/// "Kill these 3 sockets?"
fn question(action: Action, n: usize) -> String {
    match action {
        Action::Kill => format!("Kill {}?", crate::text::these_sockets(n)),
        Action::Keepalive(c) => format!(
            "Turn keepalive on ({c}) for {}?",
            crate::text::these_sockets(n)
        ),
    }
}

fn act_inner(
    args: &Args,
    c: &Choose,
    action: Action,
    method: Method,
    middleboxes: Vec<Middlebox>,
) -> anyhow::Result<ExitCode> {
    let name = action.name();
    // Before anything is read: an operator who set it expects nothing to change, whatever
    // the filter matches.
    if args.read_only && !c.dry_run {
        return Ok(usage(
            action,
            &format!("refusing: {READ_ONLY}; nothing was done (--dry-run lists what matches)"),
        ));
    }
    let targets = match select(args, c, action, middleboxes)? {
        Ok(t) => t,
        Err(msg) => return Ok(usage(action, &msg)),
    };
    let mut out = io::stdout().lock();
    let scope = Scope::current();
    if scope != Scope::Everything {
        crate::say!("katop {name}: {scope}");
    }
    if targets.is_empty() {
        crate::say!(
            "katop {name}: no socket matches {:?}; nothing to do",
            c.filter
        );
        if c.json {
            writeln!(out, "[]")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let refusals = foreseen(&targets, action, method, &scope);
    if c.dry_run {
        print_dry_run(&mut out, &targets, action, &refusals, c.json)?;
        if args.read_only {
            crate::say!("katop {name}: {READ_ONLY}: a run without --dry-run would do nothing");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !c.yes {
        if !io::stdin().is_terminal() {
            return Ok(usage(
                action,
                "refusing to act without confirmation: stdin is not a terminal. Check the list \
                 with --dry-run, then pass --yes",
            ));
        }
        if !ask(action, &targets, &refusals)? {
            crate::say!("nothing done");
            return Ok(ExitCode::FAILURE);
        }
    }
    let Some(path) = args.kill_log.clone().or_else(log::default_path) else {
        anyhow::bail!(
            "nowhere to write the log (neither XDG_STATE_HOME nor HOME is set); pass \
             --kill-log PATH. Nothing was done"
        );
    };
    let mut audit = match AuditLog::open(&path, args.kill_log.is_some()) {
        Ok(a) => a,
        Err(e) => {
            return Ok(usage(
                action,
                &format!(
                    "cannot use the log {}: {e}; nothing was done (--kill-log PATH puts it \
                     elsewhere)",
                    path.display()
                ),
            ))
        }
    };
    let reports: Vec<Report> = match action {
        Action::Kill => Killer::new(method)?.kill_all(&targets),
        Action::Keepalive(change) => Tuner::new()?.apply_all(&targets, change),
    };
    let logged = audit.append(&reports);
    if c.json {
        let json: Vec<JsonReport> = reports.iter().map(Report::json).collect();
        crate::text::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else {
        for r in &reports {
            writeln!(out, "{}", r.line())?;
        }
    }
    out.flush()?;
    crate::say!(
        "katop {name}: {}; logged to {}",
        summary(&reports),
        path.display()
    );
    if let Err(e) = logged {
        crate::say!(
            "katop {name}: could not write the log {}: {e}; the results above are not recorded",
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

/// Why each target would be refused (whose socket it is, the model's guard, a missing
/// privilege), foreseen before acting.
fn foreseen(
    targets: &[Target],
    action: Action,
    method: Method,
    scope: &Scope,
) -> Vec<Option<String>> {
    let powers = Powers::current();
    targets
        .iter()
        .map(|t| t.foreseen_refusal(scope, &powers, action, method))
        .collect()
}

/// The list of targets, each with why it would be refused, and the count first:
/// `would kill 4 socket(s) (2 more would be refused):`.
fn listing(
    out: &mut impl Write,
    targets: &[Target],
    refusals: &[Option<String>],
    action: Action,
) -> io::Result<()> {
    let refused = refusals.iter().flatten().count();
    let more = if refused > 0 {
        format!(" ({refused} more would be refused)")
    } else {
        String::new()
    };
    writeln!(
        out,
        "would {} {} socket(s){more}:",
        action.name(),
        targets.len() - refused
    )?;
    for (t, why) in targets.iter().zip(refusals) {
        match why {
            Some(why) => writeln!(
                out,
                "  {}\n    would be refused: {}",
                t.describe(),
                crate::text::printable(why)
            )?,
            None => writeln!(out, "  {}", t.describe())?,
        }
    }
    Ok(())
}

/// `--dry-run`: what would be acted on, and what katop would refuse (and why).
fn print_dry_run(
    out: &mut impl Write,
    targets: &[Target],
    action: Action,
    refusals: &[Option<String>],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let at = SystemTime::now();
        let planned: Vec<JsonReport> = targets
            .iter()
            .zip(refusals)
            .map(|(t, why)| JsonReport {
                reason: why.as_deref(),
                ..JsonReport::planned(t, action, at)
            })
            .collect();
        crate::text::to_writer_pretty(&mut *out, &planned)?;
        writeln!(out)?;
    } else {
        listing(out, targets, refusals, action)?;
    }
    Ok(())
}

/// Asks on the terminal, after the list (with what would be refused); only an explicit yes
/// acts.
fn ask(action: Action, targets: &[Target], refusals: &[Option<String>]) -> io::Result<bool> {
    let mut list = Vec::new();
    listing(&mut list, targets, refusals, action)?;
    crate::say!("{}", String::from_utf8_lossy(&list).trim_end());
    eprint!("{} [y/N] ", question(action, targets.len()));
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The sockets the filter chooses, as targets; `Err(message)` for bad usage.
fn select(
    args: &Args,
    c: &Choose,
    action: Action,
    middleboxes: Vec<Middlebox>,
) -> anyhow::Result<Result<Vec<Target>, String>> {
    let filter = match Filter::parse(&c.filter) {
        Ok(f) => f,
        Err(e) => {
            return Ok(Err(format!("bad --filter: {e}\n{}", e.pointed(&c.filter))));
        }
    };
    if filter.matches_all() {
        return Ok(Err(
            "refusing an empty --filter: it would match every socket".into(),
        ));
    }
    // Killing works on TCP and UDP; keepalive is TCP's.
    let protos = match action {
        Action::Kill => vec![Proto::Tcp, Proto::Udp],
        Action::Keepalive(_) => vec![Proto::Tcp],
    };
    let mut collector = Collector::new(Selection {
        protos,
        ipv4: true,
        ipv6: true,
        netns: crate::netns_choice(args).0,
        bpf_from: crate::bpf_from(args),
    })?;
    let snap = collector.poll()?;
    let now = Instant::now();
    let mut table = ConnTable::new(args.stale_after);
    table.set_middleboxes(middleboxes);
    table.apply(snap, now);
    let matched: Vec<SockEntry> = table.entries().filter(|e| filter.matches(e, now)).collect();
    let listening: Vec<&SockEntry> = matched.iter().filter(|e| is_listening(e)).collect();
    if !c.include_listen && !listening.is_empty() {
        let mut lines = vec![format!(
            "the filter matches {} listening socket(s), which serve every client. Add \
             --include-listen to include them, or narrow the filter (e.g. add state!=listen):",
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
