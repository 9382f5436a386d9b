//! `ss` habits that clap alone cannot take: `-o` (ss: show timers) in a flag cluster where katop's
//! `-o` wants columns (`-tanoi`, `-tnpo`), and ss's filter words after the options (`state
//! established`, `exclude listening`).

use std::ffi::OsString;

use clap::ValueEnum;

use crate::columns::Column;

/// Letters of ss's that katop takes as flags too, so they may stand before `o` in a cluster.
const FLAGS: &str = "tuxlanpei46r";

/// The command line with ss's `-o` removed where it cannot be katop's `-o COLS`: what follows
/// it (the rest of its cluster, or the next argument) is not a list of columns. katop always
/// shows timers, so ss's `-o` changes nothing.
pub fn without_ss_timer_flag(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(text) = arg.to_str() else {
            out.push(arg.clone());
            continue;
        };
        if text == "--" {
            out.extend(args[i - 1..].iter().cloned());
            break;
        }
        let Some(cluster) = text.strip_prefix('-').filter(|c| !c.starts_with('-')) else {
            out.push(arg.clone());
            continue;
        };
        let Some(at) = cluster.find('o') else {
            out.push(arg.clone());
            continue;
        };
        let (before, rest) = (&cluster[..at], &cluster[at + 1..]);
        if !before.chars().all(|c| FLAGS.contains(c)) {
            out.push(arg.clone());
            continue;
        }
        let value = if rest.is_empty() {
            args.get(i).and_then(|a| a.to_str())
        } else {
            Some(rest)
        };
        if value.is_some_and(columns) {
            out.push(arg.clone());
            continue;
        }
        // ss's -o: dropped, the rest of the cluster kept as flags.
        let kept = format!("{before}{rest}");
        if !kept.is_empty() {
            out.push(format!("-{kept}").into());
        }
    }
    out
}

/// Whether `text` is a comma-separated list of katop's columns.
fn columns(text: &str) -> bool {
    !text.starts_with('-')
        && text
            .split(',')
            .all(|c| Column::from_str(c.trim(), true).is_ok())
}

/// ss's filter words as katop's filter: `state X` is the state word `X`, `exclude X` is `!X`;
/// anything else is taken as katop's filter language as it stands.
pub fn filter_words(words: &[String]) -> String {
    let mut out = Vec::new();
    let mut words = words.iter().map(String::as_str);
    while let Some(w) = words.next() {
        match w {
            "state" => out.extend(words.next().map(str::to_string)),
            "exclude" => out.extend(words.next().map(|s| format!("!{s}"))),
            other => out.push(other.to_string()),
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> String {
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        let out: Vec<String> = without_ss_timer_flag(&args)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        out.join(" ")
    }

    #[test]
    fn ss_timer_flag_goes_where_it_cannot_be_columns() {
        assert_eq!(run("katop --once -tanoi"), "katop --once -tani");
        assert_eq!(run("katop --once -tnpo"), "katop --once -tnp");
        assert_eq!(run("katop --once -o"), "katop --once");
        assert_eq!(run("katop --once -o -t"), "katop --once -t");
        // katop's own -o COLS stays.
        assert_eq!(
            run("katop --once -o state,idle"),
            "katop --once -o state,idle"
        );
        assert_eq!(
            run("katop --once -ostate,idle"),
            "katop --once -ostate,idle"
        );
        assert_eq!(run("katop --once -to idle"), "katop --once -to idle");
        // Not a flag cluster of ss's: untouched.
        assert_eq!(run("katop -f port:1 -- -o"), "katop -f port:1 -- -o");
    }

    #[test]
    fn ss_filter_words_become_katops() {
        let w = |s: &str| filter_words(&s.split(' ').map(String::from).collect::<Vec<_>>());
        assert_eq!(w("state established"), "established");
        assert_eq!(
            w("state established exclude close-wait"),
            "established !close-wait"
        );
        assert_eq!(w("dport:5432"), "dport:5432");
    }
}
