//! One event of a connection's life, as `katop history` prints it: an NDJSON object (a
//! contract: names as documented in the README's "History"), or a line for people.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::ends::join::Ended;
use crate::model::{Endpoint, Owner, RawSock, SockEntry};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Opened,
    State,
    /// Its stale reasons changed (`gained`, `lost`).
    Stale,
    Closed,
    /// Destroyed by `SOCK_DESTROY` (`katop kill`, `ss -K`); its `closed` follows.
    Killed,
    /// Its keepalive options changed (`keepalive` has them now).
    Keepalive,
}

/// A connection's keepalive options, as `keepalive` events tell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keepalive {
    pub on: bool,
    pub idle_s: u16,
    pub intvl_s: u16,
    pub cnt: u8,
    pub user_timeout_ms: u32,
}

impl Keepalive {
    pub fn of(o: &crate::model::SockOpts) -> Keepalive {
        Keepalive {
            on: o.keepalive,
            idle_s: o.idle_s,
            intvl_s: o.intvl_s,
            cnt: o.cnt,
            user_timeout_ms: o.user_timeout_ms,
        }
    }
}

/// One event, ready to print. Absent values are `null`, never guessed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub event: Kind,
    pub host: String,
    pub cookie: Option<u64>,
    pub proto: String,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub netns_name: Option<String>,
    pub container: Option<String>,
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// The state it is in (`opened`, `state`), or was last seen in (`closed`).
    pub state: Option<String>,
    /// `closed`: why, where that was learned (`tracepoint`, `inferred`), and the kernel's
    /// details where traced.
    /// `stale`: its stale reasons now, and those gained and lost since the poll before.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stale: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gained: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lost: Option<Vec<String>>,
    /// `keepalive`: the options now.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keepalive: Option<Keepalive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_reason: Option<String>,
    /// `closed`: from when katop first saw it (so at least this long, for one open before katop
    /// watched) to its end; null when no poll saw it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "present"
    )]
    pub lifetime_s: Option<Option<f64>>,
    /// `closed`: as of the last poll that saw it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "present"
    )]
    pub bytes_sent: Option<Option<u64>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "present"
    )]
    pub bytes_received: Option<Option<u64>>,
}

/// A field that is present (maybe `null`) as `Some`; an absent one is `None` (its default).
#[allow(clippy::option_option)] // absent, null and a value are three things here
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn endpoint(ep: &Endpoint) -> Option<String> {
    match ep {
        Endpoint::Inet(a) if a.port() == 0 && a.ip().is_unspecified() => None,
        Endpoint::Inet(_) => Some(ep.to_string()),
        _ => None,
    }
}

fn owner(sock: &RawSock) -> (Option<u32>, Option<String>) {
    match &sock.owner {
        Owner::Process { process, .. } => (Some(process.pid), Some(process.name.to_string())),
        _ => (None, None),
    }
}

impl Event {
    /// An event with only its time, kind, host and protocol; every other field absent.
    pub(crate) fn bare(kind: Kind, at: SystemTime, host: &str, proto: &str) -> Event {
        Event {
            time: crate::actions::log::rfc3339(at),
            event: kind,
            host: host.into(),
            cookie: None,
            proto: proto.into(),
            local: None,
            remote: None,
            netns_name: None,
            container: None,
            pid: None,
            process: None,
            state: None,
            stale: None,
            gained: None,
            lost: None,
            keepalive: None,
            cause: None,
            cause_source: None,
            errno: None,
            reset_reason: None,
            lifetime_s: None,
            bytes_sent: None,
            bytes_received: None,
        }
    }

    /// An event about a socket the table lists now.
    pub fn of(kind: Kind, e: &SockEntry, at: SystemTime, host: &str) -> Event {
        let s = e.sock;
        let (pid, process) = owner(s);
        Event {
            cookie: Some(s.cookie.0),
            local: endpoint(&s.local),
            remote: endpoint(&s.remote),
            netns_name: e.netns_name().map(Into::into),
            container: e.container().map(Into::into),
            pid,
            process,
            state: Some(s.state.name(s.proto).into()),
            ..Event::bare(kind, at, host, s.proto.name())
        }
    }

    /// The end of a connection no poll saw: only its two ends, as the tracepoints gave them.
    fn unseen(end: &Ended, host: &str) -> Event {
        Event {
            cookie: end.cookie,
            local: end.tuple.map(|t| t.local_addr().to_string()),
            remote: end.tuple.map(|t| t.remote_addr().to_string()),
            ..Event::bare(Kind::Closed, end.at, host, "tcp")
        }
    }

    /// A connection's end; `e` is its last poll's view, when a poll saw it.
    pub fn closed(end: &Ended, e: Option<&SockEntry>, host: &str) -> Event {
        let mut ev = match e {
            Some(e) => Event::of(Kind::Closed, e, end.at, host),
            None => Event::unseen(end, host),
        };
        ev.cookie = end.cookie;
        ev.cause = Some(end.cause.name().into());
        ev.cause_source = Some(end.source.name().into());
        ev.errno = end.errno;
        ev.reset_reason = end.reset_reason.as_deref().map(Into::into);
        ev.lifetime_s = Some(
            end.first_seen
                .and_then(|f| end.at.duration_since(f).ok())
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
        );
        ev.bytes_sent = Some(end.bytes.sent());
        ev.bytes_received = Some(end.bytes.received());
        ev
    }

    /// A line for people: time, event, state or cause, the two ends, the process. Names from
    /// other users are made printable.
    pub fn line(&self) -> String {
        use crate::text::printable;
        let what = match (self.event, self.cause.as_deref()) {
            (Kind::Closed, Some(cause)) => match self.cause_source.as_deref() {
                Some("inferred") => format!("~{cause}"),
                _ => cause.to_string(),
            },
            _ => self.state.as_deref().unwrap_or("?").to_string(),
        };
        let event = match self.event {
            Kind::Opened => "opened",
            Kind::State => "state",
            Kind::Stale => "stale",
            Kind::Closed => "closed",
            Kind::Killed => "killed",
            Kind::Keepalive => "keepalive",
        };
        let what = match (self.event, self.keepalive) {
            (Kind::Keepalive, Some(k)) if k.on => format!(
                "on {}s/{}s/{}{}",
                k.idle_s,
                k.intvl_s,
                k.cnt,
                if k.user_timeout_ms > 0 {
                    format!(" ut={}ms", k.user_timeout_ms)
                } else {
                    String::new()
                }
            ),
            (Kind::Keepalive, Some(_)) => "off".into(),
            _ => what,
        };
        let what = match (self.event, &self.gained, &self.lost) {
            (Kind::Stale, gained, lost) => {
                let signed = |reasons: &Option<Vec<String>>, sign: &str| {
                    reasons
                        .iter()
                        .flatten()
                        .map(|r| format!("{sign}{r}"))
                        .collect::<Vec<_>>()
                };
                let mut all = signed(gained, "+");
                all.extend(signed(lost, "-"));
                all.join(",")
            }
            _ => what,
        };
        let process = match (&self.process, self.pid) {
            (Some(name), Some(pid)) => format!("{}[{pid}]", printable(name)),
            _ => "-".into(),
        };
        let lifetime = match self.lifetime_s {
            Some(Some(s)) => format!(
                " after {}",
                crate::model::duration::format_ms_short((s * 1000.0) as u64)
            ),
            _ => String::new(),
        };
        // Every field may come from a store someone else wrote: none reaches the terminal raw.
        let what = printable(&what);
        format!(
            "{} {event:<6} {what:<18} {} → {} {process}{}{lifetime}",
            printable(&self.time),
            printable(self.local.as_deref().unwrap_or("*")),
            printable(self.remote.as_deref().unwrap_or("*")),
            self.netns_name
                .as_deref()
                .filter(|n| *n != "host")
                .map(|n| format!(" in {}", printable(n)))
                .unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_event_prints_nothing_a_terminal_would_obey() {
        let line = r#"{"time":"2026-12-06T03:00:00.000Z\u001b]0;OWNED\u0007","event":"closed","host":"h","cookie":1,"proto":"tcp","local":"\u001b[2J1.2.3.4:5","remote":"5.6.7.8:9","netns_name":null,"container":null,"pid":null,"process":null,"state":"\u001b[31mESTABLISHED","cause":"closed\u001b[2J","cause_source":"tracepoint"}"#;
        let ev: Event = serde_json::from_str(line).unwrap();
        let text = ev.line();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
    }
}
