//! The recursive-descent parser and its error messages.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Deepest nesting of parentheses and negations a filter may have: far more than anyone
/// writes, and far less than would overflow the stack of the recursive parser.
pub const MAX_DEPTH: u32 = 256;

pub(super) struct Parser<'a> {
    pub(super) tokens: Vec<Token>,
    pub(super) pos: usize,
    pub(super) text: &'a str,
    /// Parentheses and negations open at this point.
    pub(super) depth: u32,
}

impl Parser<'_> {
    pub(super) fn err_at(&self, at: usize, message: String) -> FilterError {
        let at = at.min(self.text.len());
        FilterError {
            column: self.text[..at].chars().count() + 1,
            message,
        }
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token { tok: Tok::Word { key, op: None, .. }, .. }) if key == w)
    }

    pub(super) fn or(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.and()?];
        while self.peek_word("or") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.unary()?];
        loop {
            if self.peek_word("and") {
                self.pos += 1;
            } else if self.pos >= self.tokens.len()
                || self.peek_word("or")
                || matches!(self.tokens[self.pos].tok, Tok::Close)
            {
                break;
            }
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let Some(t) = self.tokens.get(self.pos).cloned() else {
            return Err(self.err_at(self.text.len(), "expected a term after this".into()));
        };
        self.pos += 1;
        let nests = match &t.tok {
            Tok::Not | Tok::Open => true,
            Tok::Word { key, op: None, .. } => key == "not",
            _ => false,
        };
        if nests {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.err_at(
                    t.at,
                    format!("nested more than {MAX_DEPTH} levels deep (parentheses and negations)"),
                ));
            }
        }
        let parsed = self.nested(t);
        if nests {
            self.depth -= 1;
        }
        parsed
    }

    /// What `unary` reads after its first token `t`.
    fn nested(&mut self, t: Token) -> Result<Expr, FilterError> {
        match t.tok {
            Tok::Not => Ok(Expr::Not(Box::new(self.unary()?))),
            Tok::Word {
                ref key, op: None, ..
            } if key == "not" => Ok(Expr::Not(Box::new(self.unary()?))),
            Tok::Open => {
                let inner = self.or()?;
                match self.tokens.get(self.pos) {
                    Some(Token {
                        tok: Tok::Close, ..
                    }) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err(self.err_at(t.at, "this '(' is never closed".into())),
                }
            }
            Tok::Close => Err(self.err_at(t.at, "unexpected ')'".into())),
            Tok::Word { key, op, value } => self.term(&key, t.at, op, value),
        }
    }

    #[allow(clippy::too_many_lines)] // one arm per key: the language in one place
    fn term(
        &self,
        key: &str,
        at: usize,
        op: Option<(Op, usize)>,
        value: Option<(String, usize)>,
    ) -> Result<Expr, FilterError> {
        let Some((op, op_at)) = op else {
            return self.bare(key, at).map(Expr::Term);
        };
        let op_text = &self.text[at..op_at
            + if matches!(op, Op::Eq | Op::Lt | Op::Gt) {
                1
            } else {
                2
            }];
        let Some((value, v_at)) = value else {
            let what = expected_value(key);
            return Err(self.err_at(
                op_at + 1,
                format!("expected {what} after '{}'", op_text.trim_end()),
            ));
        };
        let eq_only = |term: Term| {
            if matches!(op, Op::Eq) {
                Ok(Expr::Term(term))
            } else if op == Op::Ne {
                Err(self.err_at(op_at, format!("use !{key}:{value} to negate")))
            } else {
                Err(self.err_at(
                    op_at,
                    format!("'{key}' takes ':' (e.g. {key}:{})", example(key)),
                ))
            }
        };
        let bad = |what: &str| {
            self.err_at(
                v_at,
                format!(
                    "expected {what} after '{}', found '{value}'",
                    op_text.trim_end()
                ),
            )
        };
        let v = value.to_ascii_lowercase();
        match key {
            "state" => {
                let t = if v == "connected" {
                    Term::Connected
                } else {
                    Term::State(parse_states(&v).ok_or_else(|| bad(&expected_value("state")))?)
                };
                negatable(op, t).ok_or_else(|| self.err_at(op_at, "state takes ':' or '!='".into()))
            }
            "proto" => {
                let p = match v.as_str() {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "unix" => Proto::Unix,
                    _ => return Err(bad("tcp, udp or unix")),
                };
                eq_only(Term::Proto(p))
            }
            "family" => {
                let f = match v.as_str() {
                    "inet" | "4" | "ipv4" => Family::Inet,
                    "inet6" | "6" | "ipv6" => Family::Inet6,
                    "unix" => Family::Unix,
                    _ => return Err(bad("inet, inet6 or unix")),
                };
                eq_only(Term::Family(f))
            }
            "src" | "dst" => {
                let pat = crate::model::addr::parse(&value)
                    .ok_or_else(|| bad("an address, CIDR, :port, [v6]:port or unix path"))?;
                let t = Term::Addr {
                    remote: key == "dst",
                    pat,
                };
                negatable(op, t)
                    .ok_or_else(|| self.err_at(op_at, format!("{key} takes ':' or '!='")))
            }
            "sport" | "dport" | "port" | "uid" | "pid" | "probes" | "retrans" | "recvq"
            | "sendq" | "ka_cnt" => {
                let n: u64 = value.parse().map_err(|_| bad("a number"))?;
                let num = match key {
                    "sport" => Num::Sport,
                    "dport" => Num::Dport,
                    "port" => Num::Port,
                    "uid" => Num::Uid,
                    "pid" => Num::Pid,
                    "probes" => Num::Probes,
                    "retrans" => Num::Retrans,
                    "recvq" => Num::RecvQ,
                    "ka_cnt" => Num::KaCnt,
                    _ => Num::SendQ,
                };
                Ok(Expr::Term(Term::Cmp(num, op, n)))
            }
            "idle" | "age" | "rtt" | "ka_idle" | "ka_intvl" | "user_timeout" | "detect" => {
                let ms = parse_ms(&v).map_err(|_| bad("a duration like 10m"))?;
                // ':' on a duration reads as "at least".
                let op = if op == Op::Eq && op_text.ends_with(':') {
                    Op::Ge
                } else {
                    op
                };
                let (num, n) = match key {
                    "idle" => (Num::IdleMs, ms),
                    "age" => (Num::AgeMs, ms),
                    "ka_idle" => (Num::KaIdleMs, ms),
                    "ka_intvl" => (Num::KaIntvlMs, ms),
                    "user_timeout" => (Num::UserTimeoutMs, ms),
                    "detect" => (Num::DetectMs, ms),
                    _ => (Num::RttUs, ms * 1000),
                };
                Ok(Expr::Term(Term::Cmp(num, op, n)))
            }
            "service" => {
                if !services::is_known(&v) {
                    return Err(self.err_at(
                        v_at,
                        format!(
                            "unknown service '{value}' (see assets/services.tsv; or use port:N)"
                        ),
                    ));
                }
                eq_only(Term::Service(v))
            }
            "netns" => negatable(op, Term::Netns(value.clone()))
                .ok_or_else(|| self.err_at(op_at, "netns takes ':' or '!='".into())),
            "container" => {
                let pat = glob::Pattern::new(&value).map_err(|e| {
                    self.err_at(v_at, format!("'{value}' is not a glob pattern: {}", e.msg))
                })?;
                negatable(op, Term::Container(pat))
                    .ok_or_else(|| self.err_at(op_at, "container takes ':' or '!='".into()))
            }
            "proc" => {
                if let Ok(pid) = value.parse::<u64>() {
                    return Ok(Expr::Term(Term::Cmp(Num::Pid, op, pid)));
                }
                let t = Term::ProcName(v);
                negatable(op, t).ok_or_else(|| self.err_at(op_at, "proc takes ':' or '!='".into()))
            }
            "comm" => {
                // The whole name, as `pgrep -x` and `ps -C` take it; a glob is allowed.
                let pat = glob::Pattern::new(&value).map_err(|e| {
                    self.err_at(v_at, format!("'{value}' is not a glob pattern: {}", e.msg))
                })?;
                negatable(op, Term::Comm(pat))
                    .ok_or_else(|| self.err_at(op_at, "comm takes ':' or '!='".into()))
            }
            "owner" => {
                let kind = match v.as_str() {
                    "process" => OwnerIs::Process,
                    "none" => OwnerIs::None,
                    "unknown" => OwnerIs::Unknown,
                    _ => return Err(bad("process, none or unknown")),
                };
                negatable(op, Term::Owner(kind))
                    .ok_or_else(|| self.err_at(op_at, "owner takes ':' or '!='".into()))
            }
            "keepalive" => {
                let k = match v.as_str() {
                    "on" | "yes" | "true" => Keepalive::On,
                    "off" | "no" | "false" => Keepalive::Off,
                    "unknown" => Keepalive::Unknown,
                    _ => return Err(bad("on, off or unknown")),
                };
                negatable(op, Term::Keepalive(k))
                    .ok_or_else(|| self.err_at(op_at, "keepalive takes ':' or '!='".into()))
            }
            "ka_source" => {
                use crate::model::keepalive::Source;
                let src = match v.as_str() {
                    "socket" => Source::Socket,
                    "sysctl-default" | "sysctl" | "default" => Source::SysctlDefault,
                    _ => return Err(bad("socket or sysctl-default")),
                };
                negatable(op, Term::KaSource(src))
                    .ok_or_else(|| self.err_at(op_at, "ka_source takes ':' or '!='".into()))
            }
            "timer" => {
                let k = match v.as_str() {
                    "none" | "off" => None,
                    "keepalive" => Some(TimerKind::Keepalive),
                    "retransmit" | "on" => Some(TimerKind::Retransmit),
                    "timewait" => Some(TimerKind::Timewait),
                    "probe0" | "persist" => Some(TimerKind::Probe0),
                    "delack" => Some(TimerKind::Delack),
                    _ => {
                        return Err(bad(
                            "keepalive, retransmit, timewait, probe0, delack or none",
                        ))
                    }
                };
                negatable(op, Term::Timer(k))
                    .ok_or_else(|| self.err_at(op_at, "timer takes ':' or '!='".into()))
            }
            "stale" => {
                let r = StaleReason::from_name(&v).ok_or_else(|| bad(&reason_list()))?;
                negatable(op, Term::Stale(Some(r)))
                    .ok_or_else(|| self.err_at(op_at, "stale takes ':' or '!='".into()))
            }
            _ => Err(self.unknown(key, at)),
        }
    }

    fn bare(&self, key: &str, at: usize) -> Result<Term, FilterError> {
        match key {
            "stale" => Ok(Term::Stale(None)),
            "keepalive" => Ok(Term::Keepalive(Keepalive::On)),
            "connected" => Ok(Term::Connected),
            "tcp" => Ok(Term::Proto(Proto::Tcp)),
            "udp" => Ok(Term::Proto(Proto::Udp)),
            "unix" => Ok(Term::Proto(Proto::Unix)),
            "and" | "or" => Err(self.err_at(at, format!("expected a term before '{key}'"))),
            _ => {
                // State words alone, as `ss state close-wait` takes them (the stale reason of
                // the same name is `stale:close-wait`).
                if let Some(states) = parse_states(key) {
                    return Ok(Term::State(states));
                }
                if let Some(r) = StaleReason::from_name(key) {
                    return Ok(Term::Stale(Some(r)));
                }
                if KEYS.contains(&key) {
                    let what = expected_value(key);
                    return Err(self.err_at(
                        at + key.len(),
                        format!(
                            "expected ':' and {what} after '{key}' (e.g. {key}:{})",
                            example(key)
                        ),
                    ));
                }
                Err(self.unknown(key, at))
            }
        }
    }

    fn unknown(&self, key: &str, at: usize) -> FilterError {
        self.err_at(
            at,
            format!(
                "unknown term '{key}': expected one of {}, a state (established, close-wait, …), stale, or a stale reason",
                KEYS.join(", ")
            ),
        )
    }
}

pub(super) const KEYS: [&str; 31] = [
    "state",
    "proto",
    "family",
    "src",
    "dst",
    "sport",
    "dport",
    "port",
    "service",
    "proc",
    "comm",
    "owner",
    "netns",
    "container",
    "pid",
    "uid",
    "idle",
    "age",
    "rtt",
    "keepalive",
    "timer",
    "probes",
    "retrans",
    "recvq",
    "sendq",
    "ka_idle",
    "ka_intvl",
    "ka_cnt",
    "ka_source",
    "user_timeout",
    "detect",
];

/// A set-membership term under ':' (is) or '!=' (is not); other operators do not apply.
pub(super) fn negatable(op: Op, t: Term) -> Option<Expr> {
    match op {
        Op::Eq => Some(Expr::Term(t)),
        Op::Ne => Some(Expr::Not(Box::new(Expr::Term(t)))),
        _ => None,
    }
}

pub(super) fn expected_value(key: &str) -> String {
    match key {
        "idle" | "age" | "rtt" | "ka_idle" | "ka_intvl" | "user_timeout" | "detect" => {
            "a duration like 10m".into()
        }
        "ka_source" => "socket or sysctl-default".into(),
        "state" => "a state like established, close-wait, time-wait, listen or connected".into(),
        "src" | "dst" => "an address like 10.0.0.0/8, :22 or [::1]:5432".into(),
        "service" => "a service name like postgres".into(),
        "proc" => "a process name or pid".into(),
        "comm" => "a whole process name (a glob) like postgres".into(),
        "owner" => "process, none or unknown".into(),
        "netns" => "a namespace: host, a name or an inode".into(),
        "container" => "a container glob like podman:web-*".into(),
        "keepalive" => "on, off or unknown".into(),
        "stale" => reason_list(),
        "proto" => "tcp, udp or unix".into(),
        _ => "a number".into(),
    }
}

pub(super) fn example(key: &str) -> &'static str {
    match key {
        "idle" | "age" | "ka_idle" | "detect" => "10m",
        "ka_intvl" | "user_timeout" => "30s",
        "ka_source" => "socket",
        "rtt" => "100ms",
        "state" => "established",
        "src" | "dst" => "10.0.0.0/8",
        "service" => "postgres",
        "proc" | "comm" => "java",
        "owner" => "none",
        "netns" => "host",
        "container" => "docker:*",
        "keepalive" => "off",
        "stale" => "idle",
        "proto" => "tcp",
        "timer" => "keepalive",
        "family" => "inet6",
        _ => "5432",
    }
}

pub(super) fn reason_list() -> String {
    let names: Vec<&str> = StaleReason::ALL.iter().map(|r| r.name()).collect();
    format!("a stale reason ({})", names.join(", "))
}

/// A state name as `ss` and katop write them: `established` or `estab`, `syn-sent`,
/// `syn-recv`, `fin-wait-1` or `fin-wait1`, `fin-wait-2`, `time-wait`, `close` or `closed`,
/// `close-wait`, `last-ack`, `listen` or `listening`, `closing`, `unconn`; `_` and `-` alike,
/// any case. `ss`'s `synchronized` (every state after the handshake) is a set.
pub(super) fn parse_states(v: &str) -> Option<Vec<SockState>> {
    let norm = v.replace('_', "-").to_ascii_lowercase();
    let one = match norm.as_str() {
        "estab" => SockState::Established,
        "unconn" | "closed" => SockState::Close,
        "syn-recv" => SockState::SynRecv,
        "fin-wait-1" => SockState::FinWait1,
        "fin-wait-2" => SockState::FinWait2,
        "listening" => SockState::Listen,
        "synchronized" => {
            return Some(
                SockState::ALL
                    .into_iter()
                    .filter(|s| {
                        !matches!(s, SockState::SynSent | SockState::Listen | SockState::Close)
                    })
                    .collect(),
            )
        }
        _ => {
            return SockState::ALL
                .into_iter()
                .find(|s| {
                    s.name(Proto::Tcp)
                        .replace('_', "-")
                        .eq_ignore_ascii_case(&norm)
                })
                .map(|s| vec![s])
        }
    };
    Some(vec![one])
}
