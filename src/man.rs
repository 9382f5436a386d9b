//! The man pages, from the command line's own definition (`clap_mangen`) with what a man page
//! has beyond `--help`: the dashboard's keys, the environment, exit status, files and ports,
//! and the filter language and examples kept as laid out (not reflowed into prose). One page
//! per subcommand too (`katop-kill(1)`, …), which the package installs.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Args;

/// `katop man [SUBCOMMAND] [--dir DIR]`.
pub fn run(page: Option<&str>, dir: Option<&Path>) -> ExitCode {
    let result = match (page, dir) {
        (_, Some(dir)) => write_all(dir),
        (Some(name), None) => {
            let Some(text) = sub_page(name) else {
                crate::say!(
                    "katop man: no subcommand '{name}' (there are: {})",
                    subcommands().join(", ")
                );
                return ExitCode::from(2);
            };
            io::stdout().write_all(&text)
        }
        (None, None) => io::stdout().write_all(&main_page()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `katop man | head`: the reader had enough.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            crate::say!("katop man: {e}");
            ExitCode::FAILURE
        }
    }
}

fn subcommands() -> Vec<String> {
    Args::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// Every page into `dir`, written as every file katop writes is.
fn write_all(dir: &Path) -> io::Result<()> {
    let dir = crate::files::Dir::existing(dir).map_err(io::Error::other)?;
    let put = |name: String, text: Vec<u8>| {
        dir.replace(name.as_ref(), &text, 0o644)
            .map_err(io::Error::other)
    };
    put("katop.1".into(), main_page())?;
    for name in subcommands() {
        let text = sub_page(&name).expect("a listed subcommand");
        put(format!("katop-{name}.1"), text)?;
    }
    Ok(())
}

/// Text for roff: backslashes and hyphens escaped, no line taken for a request.
fn escape(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A section of text kept as laid out.
fn verbatim(out: &mut Vec<u8>, title: &str, text: &str) {
    let _ = writeln!(
        out,
        ".SH \"{title}\"\n.nf\n{}\n.fi",
        escape(text.trim_end())
    );
}

/// Tagged paragraphs: a term, then what it means.
fn tagged(out: &mut Vec<u8>, title: &str, items: &[(String, String)]) {
    let _ = writeln!(out, ".SH \"{title}\"");
    for (term, what) in items {
        let _ = writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(term), escape(what));
    }
}

const EXIT_STATUS: [(&str, &str); 3] = [
    ("0", "Success: the dashboard quit, the table or JSON was printed, every socket chosen for katop kill or katop keepalive was acted on (or was already gone), or nothing matched."),
    ("1", "Failure: a poll of the kernel failed, or some sockets were refused or could not be acted on, or the kill log could not be written."),
    ("2", "Bad usage: an unknown option, a bad filter or duration, a config file katop will not read, a --netns word that names no namespace, a path katop will not write, --read-only with an acting subcommand."),
];

fn main_page() -> Vec<u8> {
    let cmd = Args::command();
    let after = cmd
        .get_after_help()
        .map(ToString::to_string)
        .unwrap_or_default();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    let _ = man.render_subcommands_section(&mut out);
    verbatim(&mut out, "FILTERS, STALE REASONS AND EXAMPLES", &after);
    let _ = writeln!(out, ".SH \"DASHBOARD KEYS\"");
    let mut group = "";
    for (g, keys, what) in crate::ui::help::key_table() {
        if g != group && !g.is_empty() {
            let _ = writeln!(out, ".SS \"{}\"", escape(g));
        }
        group = g;
        let _ = writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(keys), escape(what));
    }
    let mut env: Vec<(String, String)> = cmd
        .get_arguments()
        .chain(cmd.get_subcommands().flat_map(clap::Command::get_arguments))
        .filter_map(|a| {
            let var = a.get_env()?.to_string_lossy().into_owned();
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            Some((var, format!("As --{}: {help}", a.get_long()?)))
        })
        .collect();
    env.sort();
    env.dedup_by(|a, b| a.0 == b.0);
    env.extend([
        (
            "NO_COLOR".into(),
            "Set and not empty: the dashboard draws without colour.".into(),
        ),
        (
            "XDG_CONFIG_HOME, HOME".into(),
            "Where the config file is looked for.".into(),
        ),
        (
            "XDG_STATE_HOME".into(),
            "Where the kill log goes by default.".into(),
        ),
    ]);
    tagged(&mut out, "ENVIRONMENT", &env);
    let status: Vec<(String, String)> = EXIT_STATUS
        .iter()
        .map(|(c, w)| ((*c).to_string(), (*w).to_string()))
        .collect();
    tagged(&mut out, "EXIT STATUS", &status);
    tagged(
        &mut out,
        "FILES",
        &[
            ("$XDG_CONFIG_HOME/katop/config.toml".into(), "The config file (default ~/.config/katop/config.toml; --config, KATOP_CONFIG): [ui] defaults, [ui.presets], [services], [middleboxes].".into()),
            ("$XDG_STATE_HOME/katop/kills.jsonl".into(), "The kill log: one JSON line per kill or keepalive change (default ~/.local/state/katop/kills.jsonl; --kill-log, KATOP_KILL_LOG). Its directory is made private (0700), the file 0600.".into()),
            ("/var/lib/katop, $XDG_STATE_HOME/katop".into(), "The store katop record writes and katop history reads (as root, else the user's; --store, KATOP_STORE): segments events-*.kz, a lock file; private (0700, files 0600).".into()),
            ("/proc/config.gz".into(), "CONFIG_HZ, for the timer wheel's rounding in dead-peer countdowns (250 assumed without it).".into()),
            ("/usr/share/katop/prometheus/katop-alerts.yml".into(), "Alert rules for the exporter's metrics; the Grafana dashboard and the Kubernetes manifest beside it.".into()),
        ],
    );
    tagged(
        &mut out,
        "PORTS",
        &[(
            "9899/tcp".into(),
            "katop exporter serves /metrics here by default (--listen, KATOP_EXPORTER_LISTEN; none serves nothing).".into(),
        )],
    );
    let _ = writeln!(
        out,
        ".SH \"SEE ALSO\"\n{}, \\fBss\\fR(8), \\fBtcp\\fR(7), \\fBsocket\\fR(7)",
        subcommands()
            .iter()
            .map(|s| format!("\\fBkatop\\-{s}\\fR(1)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = man.render_version_section(&mut out);
    out
}

fn sub_page(name: &str) -> Option<Vec<u8>> {
    let cmd = Args::command();
    let sub = cmd.find_subcommand(name)?.clone();
    let after = sub.get_after_help().map(ToString::to_string);
    // (A page's name lives as long as the page: a few bytes, once per run of katop man.)
    let page_name: &'static str = Box::leak(format!("katop-{name}").into_boxed_str());
    let sub = sub.name(page_name).version(env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(sub);
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    if let Some(after) = after {
        verbatim(
            &mut out,
            "EXAMPLES",
            after.trim_start_matches("Examples:\n"),
        );
    }
    let status: Vec<(String, String)> = EXIT_STATUS
        .iter()
        .map(|(c, w)| ((*c).to_string(), (*w).to_string()))
        .collect();
    tagged(&mut out, "EXIT STATUS", &status);
    let _ = writeln!(out, ".SH \"SEE ALSO\"\n\\fBkatop\\fR(1)");
    Some(out)
}
