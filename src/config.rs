//! The config file: `$XDG_CONFIG_HOME/katop/config.toml` (default `~/.config/katop/config.toml`),
//! or `--config PATH`. Every section is optional:
//!
//! ```toml
//! [ui]                               # defaults for what flags and KATOP_* set
//! columns = ["state", "local", "remote", "process", "idle", "keepalive", "detect", "stale"]
//! sort = "idle"
//! reverse = false
//! interval = "2s"
//! stale_after = "10m"
//!
//! [ui.presets]                       # number keys in the dashboard (1-5 ship with katop)
//! 6 = "comm:java idle>10m"
//! 7 = { name = "pool leaks", filter = "close-wait comm:gunicorn" }
//!
//! [services]                         # port names (over katop's and /etc/services)
//! 2222 = "ssh"
//!
//! [middleboxes]
//! aws-nlb = "350s"                  # in front of every peer
//! office-vpn = "10.8.0.0/16=600s"   # in front of these peers only
//! pg-proxy = ":5432=aws-nlb"        # a known timeout by name
//! ```
//! Precedence: katop's defaults < this file < `KATOP_*` variables < flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ValueEnum;
use serde::Deserialize;

use crate::cli::Args;
use crate::columns::Column;
use crate::model::Middlebox;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    middleboxes: BTreeMap<String, String>,
    #[serde(default)]
    ui: Ui,
    #[serde(default)]
    services: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ui {
    columns: Option<Vec<String>>,
    sort: Option<String>,
    reverse: Option<bool>,
    interval: Option<String>,
    stale_after: Option<String>,
    #[serde(default)]
    presets: BTreeMap<String, PresetSpec>,
}

/// A preset: its filter alone (named by it), or a name and a filter.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PresetSpec {
    Filter(String),
    Named { name: String, filter: String },
}

/// What the config file says, checked.
#[derive(Debug, Default)]
pub struct Config {
    pub middleboxes: Vec<Middlebox>,
    pub columns: Option<Vec<Column>>,
    pub sort: Option<Column>,
    pub reverse: Option<bool>,
    pub interval: Option<Duration>,
    pub stale_after: Option<Duration>,
    /// (key, name, filter), the filter checked.
    pub presets: Vec<(char, String, String)>,
    pub services: Vec<(u16, String)>,
}

/// Reads the config file: `explicit` (`--config`), else the default path. A missing file is
/// fine unless it was named; a broken one is an error that says where.
pub fn load(explicit: Option<&Path>) -> Result<Config, String> {
    let Some(path) = explicit.map(Path::to_path_buf).or_else(default_path) else {
        return Ok(Config::default());
    };
    // Opened as the user could (a privileged copy of katop reads nothing its user may not).
    let text = match crate::files::read_named(&path, MAX_CONFIG_BYTES) {
        Ok(t) => t,
        Err(e) if explicit.is_some() => return Err(format!("cannot read {}: {e}", path.display())),
        Err(crate::files::FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Config::default())
        }
        // Not asked for by name (e.g. sudo -u someone with HOME still root's): said, not fatal.
        Err(e) => {
            crate::say!("katop: ignoring the config file {}: {e}", path.display());
            return Ok(Config::default());
        }
    };
    parse_config(&text).map_err(|e| {
        if crate::privilege::Privilege::current().is_gained() {
            // Never a quote of the file: whatever was opened, its text stays unshown.
            format!(
                "{}: not a valid katop config{}; its text is not shown because katop runs with \
                 privileges its user lacks (run a copy without them to see the details)",
                path.display(),
                error_line(&text).map_or_else(String::new, |l| format!(" (line {l})"))
            )
        } else {
            format!("{}: {e}", path.display())
        }
    })
}

/// The line of a TOML syntax error, if the text has one.
fn error_line(text: &str) -> Option<usize> {
    let e = toml::from_str::<File>(text).err()?;
    let at = e.span()?.start;
    Some(text[..at.min(text.len())].matches('\n').count() + 1)
}

/// Fills what the command line and environment left at katop's defaults with the config
/// file's values (`matches` tells which were given).
pub fn apply(args: &mut Args, matches: &clap::ArgMatches, config: &Config) {
    let defaulted = |id: &str| {
        matches!(
            matches.value_source(id),
            None | Some(ValueSource::DefaultValue)
        )
    };
    if defaulted("interval") {
        if let Some(d) = config.interval {
            args.interval = d;
        }
    }
    if defaulted("stale_after") {
        if let Some(d) = config.stale_after {
            args.stale_after = d;
        }
    }
    if defaulted("sort") && args.sort.is_none() {
        args.sort = config.sort;
    }
    if defaulted("reverse") {
        args.reverse = config.reverse.unwrap_or(args.reverse);
    }
    if defaulted("columns") && args.columns.is_none() {
        args.columns.clone_from(&config.columns);
    }
    args.declared.clone_from(&config.middleboxes);
    args.presets.clone_from(&config.presets);
}

/// Parses and checks a config text.
pub fn parse_config(text: &str) -> Result<Config, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let middleboxes = file
        .middleboxes
        .iter()
        .map(|(name, spec)| {
            Middlebox::parse(Some(name), spec).map_err(|e| format!("[middleboxes] {name}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let ui = file.ui;
    let column = |name: &str, key: &str| {
        Column::from_str(name, true).map_err(|_| {
            let names: Vec<String> = Column::value_variants()
                .iter()
                .filter_map(|c| c.to_possible_value().map(|v| v.get_name().to_string()))
                .collect();
            format!(
                "[ui] {key}: '{name}' is not a column ({})",
                names.join(", ")
            )
        })
    };
    let duration = |text: &Option<String>, key: &str| -> Result<Option<Duration>, String> {
        text.as_deref()
            .map(|t| {
                crate::model::duration::parse_ms(t)
                    .map(Duration::from_millis)
                    .map_err(|e| format!("[ui] {key}: {e}"))
            })
            .transpose()
    };
    if ui.columns.as_ref().is_some_and(Vec::is_empty) {
        return Err("[ui] columns: name at least one column".into());
    }
    let interval = duration(&ui.interval, "interval")?;
    if interval.is_some_and(|d| d < crate::cli::MIN_INTERVAL) {
        return Err("[ui] interval: the poll interval is at least 100ms".into());
    }
    let mut presets = Vec::new();
    for (key, spec) in &ui.presets {
        let k = match key.chars().collect::<Vec<_>>().as_slice() {
            [c @ '0'..='9'] => *c,
            _ => {
                return Err(format!(
                    "[ui.presets] '{key}': a preset's key is a digit, 0 to 9"
                ))
            }
        };
        let (name, filter) = match spec {
            PresetSpec::Filter(f) => (f.clone(), f.clone()),
            PresetSpec::Named { name, filter } => (name.clone(), filter.clone()),
        };
        crate::model::filter::Filter::parse(&filter)
            .map_err(|e| format!("[ui.presets] {key}: bad filter: {e}"))?;
        presets.push((k, name, filter));
    }
    let mut services = Vec::new();
    for (port, name) in &file.services {
        let p: u16 = port
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("[services] '{port}' is not a port (1 to 65535)"))?;
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "[services] {port}: '{name}' is not a service name (letters, digits, - _ .)"
            ));
        }
        services.push((p, name.clone()));
    }
    Ok(Config {
        middleboxes,
        columns: ui
            .columns
            .as_ref()
            .map(|v| v.iter().map(|c| column(c, "columns")).collect())
            .transpose()?,
        sort: ui.sort.as_deref().map(|c| column(c, "sort")).transpose()?,
        reverse: ui.reverse,
        interval,
        stale_after: duration(&ui.stale_after, "stale_after")?,
        presets,
        services,
    })
}

/// An XDG base directory: `$var` when absolute (as the spec requires), else `$HOME/fallback`.
pub fn xdg_base(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(fallback))
        })
}

/// Where the config file is looked for when `--config` is not given.
pub fn default_path() -> Option<PathBuf> {
    Some(xdg_base("XDG_CONFIG_HOME", ".config")?.join("katop/config.toml"))
}

/// A config file is small text: more than this is not one (the config file's limit).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Middlebox>, String> {
        parse_config(text).map(|c| c.middleboxes)
    }

    fn middleboxes(path: Option<&Path>) -> Result<Vec<Middlebox>, String> {
        load(path).map(|c| c.middleboxes)
    }

    #[test]
    fn the_ui_section_presets_and_services() {
        let c = parse_config(
            "[ui]\ncolumns = [\"state\", \"remote\", \"idle\"]\nsort = \"detect\"\ninterval = \"2s\"\n\
             stale_after = \"10m\"\n[ui.presets]\n6 = \"comm:java\"\n7 = { name = \"leaks\", filter = \"close-wait\" }\n\
             [services]\n2222 = \"ssh\"\n",
        )
        .unwrap();
        assert_eq!(
            c.columns,
            Some(vec![Column::State, Column::Remote, Column::Idle])
        );
        assert_eq!(c.sort, Some(Column::Detect));
        assert_eq!(c.interval, Some(Duration::from_secs(2)));
        assert_eq!(c.stale_after, Some(Duration::from_secs(600)));
        assert_eq!(
            c.presets,
            [
                ('6', "comm:java".into(), "comm:java".into()),
                ('7', "leaks".into(), "close-wait".into())
            ]
        );
        assert_eq!(c.services, [(2222, "ssh".into())]);
        for (bad, says) in [
            ("[ui]\ncolumns = [\"nope\"]", "'nope' is not a column"),
            ("[ui]\ncolumns = []", "at least one column"),
            ("[ui]\ninterval = \"0s\"", "at least 100ms"),
            ("[ui.presets]\nx = \"idle\"", "a digit"),
            ("[ui.presets]\n6 = \"idle>\"", "bad filter"),
            ("[services]\n70000 = \"x\"", "not a port"),
            ("[services]\n22 = \"a b\"", "not a service name"),
            ("[ui]\ncolour = true", "unknown field"),
        ] {
            let e = parse_config(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn names_middleboxes_and_says_what_is_wrong() {
        let m = parse(
            "[middleboxes]\naws-nlb = \"350s\"\noffice-vpn = \"10.8.0.0/16=600s\"\npg = \":5432=azure-lb\"\n",
        )
        .unwrap();
        let got: Vec<(&str, u32)> = m.iter().map(|m| (m.name.as_str(), m.timeout_s)).collect();
        assert_eq!(got, [("aws-nlb", 350), ("office-vpn", 600), ("pg", 240)]);
        let e = parse("[middleboxes]\nlb = \"soon\"\n").unwrap_err();
        assert!(
            e.contains("[middleboxes] lb:") && e.contains("not a duration")
                || e.contains("neither a duration"),
            "{e}"
        );
        let e = parse("[middlebox]\nlb = \"1s\"\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn only_small_regular_files_are_read() {
        for (path, why) in [
            ("/dev/zero", "not a regular file"),
            ("/dev/urandom", "not a regular file"),
            ("/", "not a regular file"),
        ] {
            let e = middleboxes(Some(Path::new(path))).unwrap_err();
            assert!(e.contains(why), "{path}: {e}");
        }
        let big = std::env::temp_dir().join(format!("katop-big-{}.toml", std::process::id()));
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let e = middleboxes(Some(&big)).unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let _ = std::fs::remove_file(big);
    }

    #[test]
    fn a_missing_default_file_is_fine_a_missing_named_one_is_not() {
        let missing = Path::new("/nonexistent/katop.toml");
        let e = middleboxes(Some(missing)).unwrap_err();
        assert!(e.contains("/nonexistent/katop.toml"), "{e}");
    }
}
