//! The config file: `$XDG_CONFIG_HOME/katop/config.toml` (default `~/.config/katop/config.toml`),
//! or `--config PATH`. Today it names middleboxes:
//!
//! ```toml
//! [middleboxes]
//! aws-nlb = "350s"                  # in front of every peer
//! office-vpn = "10.8.0.0/16=600s"   # in front of these peers only
//! pg-proxy = ":5432=aws-nlb"        # a known timeout by name
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::Middlebox;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    middleboxes: BTreeMap<String, String>,
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

/// The middleboxes the config file declares. A missing file is fine unless it was named
/// explicitly; a broken one is an error that says where.
pub fn middleboxes(explicit: Option<&Path>) -> Result<Vec<Middlebox>, String> {
    let Some(path) = explicit.map(Path::to_path_buf).or_else(default_path) else {
        return Ok(Vec::new());
    };
    let text = match read_small(&path) {
        Ok(t) => t,
        Err(e) if explicit.is_some() => return Err(format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        // Not asked for by name (e.g. sudo -u someone with HOME still root's): said, not fatal.
        Err(e) => {
            eprintln!("katop: ignoring the config file {}: {e}", path.display());
            return Ok(Vec::new());
        }
    };
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A config file is small text: more than this is not one.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a regular file of at most [`MAX_CONFIG_BYTES`]. Opened without blocking (a FIFO
/// with no writer would otherwise hang the open), and anything but a regular file (a FIFO,
/// `/dev/urandom`, `/dev/zero`, a directory) is refused before a byte is read.
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a config is a TOML file)",
        ));
    }
    let mut text = String::new();
    let read = file
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::new(e.kind(), format!("not UTF-8 text ({e})")))?;
    if read as u64 > MAX_CONFIG_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "larger than 1 MiB: not a katop config",
        ));
    }
    Ok(text)
}

/// The middleboxes a config text declares.
pub fn parse(text: &str) -> Result<Vec<Middlebox>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    file.middleboxes
        .iter()
        .map(|(name, spec)| {
            Middlebox::parse(Some(name), spec).map_err(|e| format!("[middleboxes] {name}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
