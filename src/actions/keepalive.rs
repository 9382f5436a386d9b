//! Turning keepalive on (or changing its timers) on a live connection: `setsockopt` on a
//! duplicate of the owner's fd, read back, and confirmed by the kernel's armed timer.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rustix::net::sockopt;
use serde::Serialize;

use super::reach::{self, Diags};
use super::scope::Scope;
use super::target::{Action, Outcome, Report, Target};
use crate::collector::sockopts;
use crate::error::CollectError;
use crate::model::duration::parse_ms;
use crate::model::TimerKind;

/// The kernel's limits (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`, `MAX_TCP_KEEPCNT`).
const MAX_IDLE_S: u32 = 32_767;
const MAX_INTVL_S: u32 = 32_767;
const MAX_CNT: u32 = 127;

/// Keepalive on, with these timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Change {
    pub idle_s: u32,
    pub intvl_s: u32,
    pub cnt: u32,
}

impl Default for Change {
    /// A dead peer noticed within 110 s, and a probe well inside common middlebox timeouts.
    fn default() -> Self {
        Change {
            idle_s: 60,
            intvl_s: 10,
            cnt: 5,
        }
    }
}

impl Change {
    /// Checks each value against the kernel's limits.
    pub fn new(idle_s: u32, intvl_s: u32, cnt: u32) -> Result<Change, String> {
        let check = |name: &str, v: u32, max: u32, unit: &str| {
            if v == 0 || v > max {
                Err(format!(
                    "{name} must be from 1 to {max}{unit} (the kernel's limit), not {v}"
                ))
            } else {
                Ok(v)
            }
        };
        Ok(Change {
            idle_s: check("idle", idle_s, MAX_IDLE_S, " seconds")?,
            intvl_s: check("intvl", intvl_s, MAX_INTVL_S, " seconds")?,
            cnt: check("cnt", cnt, MAX_CNT, "")?,
        })
    }

    /// How long a dead peer goes unnoticed on an idle connection with these settings.
    pub fn detect_s(self) -> u32 {
        self.idle_s + self.intvl_s * self.cnt
    }
}

impl fmt::Display for Change {
    /// `idle=60s intvl=10s cnt=5`: the form `FromStr` reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "idle={}s intvl={}s cnt={}",
            self.idle_s, self.intvl_s, self.cnt
        )
    }
}

impl FromStr for Change {
    type Err = String;

    /// `idle=60s intvl=10s cnt=5`, any order, each optional (defaults: the [`Default`]), each
    /// at most once. Errors quote what was typed.
    fn from_str(text: &str) -> Result<Self, String> {
        let default = Change::default();
        let mut set: [Option<u32>; 3] = [None; 3];
        for word in text.split_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("'{word}': expected idle=DUR, intvl=DUR or cnt=N"))?;
            let (slot, n) = match key {
                "idle" => (0, seconds(key, value, MAX_IDLE_S)?),
                "intvl" => (1, seconds(key, value, MAX_INTVL_S)?),
                "cnt" => {
                    let n = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_CNT).contains(n))
                        .ok_or_else(|| {
                            format!("cnt must be a count from 1 to {MAX_CNT}, not '{value}'")
                        })?;
                    (2, n)
                }
                _ => {
                    return Err(format!(
                        "unknown setting '{key}': expected idle, intvl or cnt"
                    ))
                }
            };
            if set[slot].replace(n).is_some() {
                return Err(format!("{key} is given twice"));
            }
        }
        Change::new(
            set[0].unwrap_or(default.idle_s),
            set[1].unwrap_or(default.intvl_s),
            set[2].unwrap_or(default.cnt),
        )
    }
}

/// A keepalive timer's value as typed (`60s`, `5m`): whole seconds, as the kernel counts
/// them, from 1 to `max`.
fn seconds(name: &str, text: &str, max: u32) -> Result<u32, String> {
    let ms = parse_ms(text).map_err(|_| format!("'{text}' is not a duration like 60s"))?;
    let limit = crate::model::duration::format_secs(max.into());
    if ms % 1000 != 0 || ms == 0 {
        return Err(format!(
            "{name} counts whole seconds (1s to {limit}), not '{text}'"
        ));
    }
    u32::try_from(ms / 1000)
        .ok()
        .filter(|&s| s <= max)
        .ok_or_else(|| format!("{name} must be at most {limit} (the kernel's limit), not '{text}'"))
}

/// Changes keepalive settings on sockets in any network namespace.
pub struct Tuner {
    diags: Diags,
    scope: Scope,
}

impl Tuner {
    pub fn new() -> Result<Self, CollectError> {
        Ok(Tuner {
            diags: Diags::new()?,
            scope: Scope::current(),
        })
    }

    pub fn apply_all(&mut self, targets: &[Target], change: Change) -> Vec<Report> {
        targets
            .iter()
            .map(|t| Report {
                outcome: self.apply(t, change),
                target: t.clone(),
                action: Action::Keepalive(change),
                at: SystemTime::now(),
            })
            .collect()
    }

    pub fn apply(&mut self, t: &Target, c: Change) -> Outcome {
        let id = match reach::id(t, &self.scope) {
            Ok(id) => id,
            Err(o) => return o,
        };
        if id.proto != crate::model::Proto::Tcp {
            return Outcome::Refused("keepalive is a TCP option".into());
        }
        let diag = match self.diags.get(t.netns) {
            Ok(d) => d,
            Err(o) => return o,
        };
        let dup = match reach::owner_fd(diag, t, &id, t.netns) {
            Ok(dup) => dup,
            Err(o) => return o,
        };
        let Some(before) = sockopts::read(&dup) else {
            return Outcome::Failed("cannot read the socket's options".into());
        };
        // Timers first, then SO_KEEPALIVE: enabling arms the timer with the new idle time.
        let set = sockopt::set_tcp_keepidle(&dup, Duration::from_secs(c.idle_s.into()))
            .and_then(|()| sockopt::set_tcp_keepintvl(&dup, Duration::from_secs(c.intvl_s.into())))
            .and_then(|()| sockopt::set_tcp_keepcnt(&dup, c.cnt))
            .and_then(|()| sockopt::set_socket_keepalive(&dup, true));
        if let Err(e) = set {
            return Outcome::Failed(format!("setsockopt failed: {e}"));
        }
        let Some(after) = sockopts::read(&dup) else {
            return Outcome::Failed("set, but the options cannot be read back".into());
        };
        drop(dup);
        // The kernel's own view: a keepalive timer (or, with data in flight, another timer).
        let timer_armed = match reach::lookup(diag, &id, t.netns) {
            Ok(s) => s.timer.is_some_and(|t| t.kind == TimerKind::Keepalive),
            Err(o) => return o,
        };
        Outcome::Changed {
            before,
            after,
            timer_armed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_check_limits_and_print_back() {
        let c: Change = "idle=2m cnt=3".parse().unwrap();
        assert_eq!(
            c,
            Change {
                idle_s: 120,
                intvl_s: 10,
                cnt: 3
            }
        );
        assert_eq!(c.to_string().parse::<Change>().unwrap(), c);
        assert_eq!(c.detect_s(), 150);
        // Errors say the limits in words and quote what was typed, not a clamped number.
        let err = |text: &str| text.parse::<Change>().unwrap_err();
        assert_eq!(
            err("idle=0s"),
            "idle counts whole seconds (1s to 9h6m7s), not '0s'"
        );
        assert_eq!(
            err("idle=500ms"),
            "idle counts whole seconds (1s to 9h6m7s), not '500ms'"
        );
        assert_eq!(
            err("idle=99999999h"),
            "idle must be at most 9h6m7s (the kernel's limit), not '99999999h'"
        );
        assert_eq!(
            err("cnt=200"),
            "cnt must be a count from 1 to 127, not '200'"
        );
        assert_eq!(
            err("cnt=1 cnt=300"),
            "cnt must be a count from 1 to 127, not '300'"
        );
        assert_eq!(err("cnt=1 cnt=3"), "cnt is given twice");
        assert_eq!(
            Change::new(0, 10, 5).unwrap_err(),
            "idle must be from 1 to 32767 seconds (the kernel's limit), not 0"
        );
        assert!("idle 60"
            .parse::<Change>()
            .unwrap_err()
            .contains("expected idle=DUR"));
        assert!("wait=1s"
            .parse::<Change>()
            .unwrap_err()
            .contains("unknown setting"));
    }
}
