//! The filter language shared by `--filter` and the dashboard's filter bar.
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary (["and"] unary)*          terms side by side are and-ed
//! unary   := ("not" | "!") unary | "(" expr ")" | term
//! term    := word | key op value             op: ':' '=' '!=' '<' '<=' '>' '>='
//! ```
//! Examples: `state:established idle>10m service:postgres`, `dport:5432 !keepalive`,
//! `proc:java probes>0`, `stale`, `src:10.0.0.0/8 or dst:[::1]`. A value the model does not
//! have (no `tcp_info`, no owner) never matches a comparison.

use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use crate::model::duration::parse_ms;
use crate::model::{
    services, Endpoint, Family, Keepalive, Proto, SockEntry, SockState, StaleReason, TimerKind,
};

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
    source: String,
}

/// A bad expression: where (1-based column) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error at {}: {}", self.column, self.message)
    }
}

impl std::error::Error for FilterError {}

impl FilterError {
    /// The expression with a caret under the error, for terminals.
    pub fn pointed(&self, source: &str) -> String {
        format!(
            "  {source}\n  {}^",
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Term(Term),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn test(self, a: u64, b: u64) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Sport,
    Dport,
    Port,
    Uid,
    Pid,
    Probes,
    Retrans,
    RecvQ,
    SendQ,
    IdleMs,
    AgeMs,
    RttUs,
    KaIdleMs,
    KaIntvlMs,
    KaCnt,
    UserTimeoutMs,
    /// Dead-peer detection time; never counts as larger than any duration.
    DetectMs,
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    State(Vec<SockState>),
    Connected,
    Proto(Proto),
    Family(Family),
    Addr {
        remote: bool,
        pat: AddrPat,
    },
    Cmp(Num, Op, u64),
    Service(String),
    ProcName(String),
    /// `netns:host`, `netns:INODE`, `netns:NAME` (a glob on the namespace's name).
    Netns(String),
    /// `container:GLOB` on the container's label.
    Container(glob::Pattern),
    Keepalive(Keepalive),
    KaSource(crate::model::keepalive::Source),
    Timer(Option<TimerKind>),
    Stale(Option<StaleReason>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AddrPat {
    net: Option<(IpAddr, u8)>,
    port: Option<u16>,
    path: Option<String>,
}

impl Filter {
    /// Parses an expression; empty text matches everything.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            text,
            depth: 0,
        };
        let expr = if p.tokens.is_empty() {
            Expr::All
        } else {
            p.or()?
        };
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(p.err_at(t.at, format!("unexpected '{}'", t.text)));
        }
        Ok(Filter {
            expr,
            source: text.to_string(),
        })
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches_all(&self) -> bool {
        self.expr == Expr::All
    }

    /// Whether the expression asks about `TIME_WAIT` sockets (a state or timer term), so a
    /// view that summarises them should list them one by one.
    pub fn asks_for_time_wait(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::Term(Term::State(s)) => s.contains(&SockState::TimeWait),
                Expr::Term(Term::Timer(t)) => *t == Some(TimerKind::Timewait),
                Expr::And(v) | Expr::Or(v) => v.iter().any(walk),
                Expr::Not(x) => walk(x),
                _ => false,
            }
        }
        walk(&self.expr)
    }

    pub fn matches(&self, e: &SockEntry, now: Instant) -> bool {
        eval(&self.expr, e, now)
    }
}

fn eval(x: &Expr, e: &SockEntry, now: Instant) -> bool {
    match x {
        Expr::All => true,
        Expr::And(v) => v.iter().all(|x| eval(x, e, now)),
        Expr::Or(v) => v.iter().any(|x| eval(x, e, now)),
        Expr::Not(x) => !eval(x, e, now),
        Expr::Term(t) => term(t, e, now),
    }
}

fn term(t: &Term, e: &SockEntry, now: Instant) -> bool {
    let s = &e.sock;
    match t {
        Term::State(states) => states.contains(&s.state),
        Term::Connected => !matches!(s.state, SockState::Listen | SockState::Close),
        Term::Proto(p) => s.proto == *p,
        Term::Family(f) => s.family == *f,
        Term::Addr { remote, pat } => pat.matches(if *remote { &s.remote } else { &s.local }),
        Term::Cmp(Num::Port, op, v) => [s.local.port(), s.remote.port()]
            .into_iter()
            .flatten()
            .any(|p| op.test(u64::from(p), *v)),
        Term::Cmp(num, op, v) => number(*num, e, now).is_some_and(|n| op.test(n, *v)),
        Term::Service(name) => e
            .service()
            .is_some_and(|svc| svc.eq_ignore_ascii_case(name)),
        Term::ProcName(name) => s
            .owner
            .process()
            .is_some_and(|p| p.name.to_ascii_lowercase().contains(name.as_str())),
        Term::Netns(want) => netns_is(e, want),
        Term::Container(pat) => e.container().is_some_and(|c| pat.matches(c)),
        Term::Keepalive(k) => e.keepalive == Some(*k),
        Term::KaSource(src) => e.params().is_some_and(|p| p.source == *src),
        Term::Timer(kind) => s.timer.map(|t| t.kind) == *kind,
        Term::Stale(None) => !e.stale.is_empty(),
        Term::Stale(Some(r)) => e.stale.contains(*r),
    }
}

/// `netns:host`, `netns:INODE`, or a glob on the namespace's name (or its container's). With
/// one namespace read, every socket is in it: katop's own, taken as the host's.
fn netns_is(e: &SockEntry, want: &str) -> bool {
    let ns = e.ctx.namespace(e.sock.netns);
    if want == "host" {
        return ns.is_none_or(|n| n.host);
    }
    if let Ok(inode) = want.parse::<u64>() {
        return e.sock.netns.0 == inode;
    }
    let pat = glob::Pattern::new(want).ok();
    let hit = |name: &str| pat.as_ref().map_or(name == want, |p| p.matches(name));
    ns.is_some_and(|n| hit(&n.name) || n.container.as_deref().is_some_and(hit))
}

fn number(n: Num, e: &SockEntry, now: Instant) -> Option<u64> {
    let s = &e.sock;
    let info = s.tcp_info.as_ref();
    match n {
        Num::Sport => s.local.port().map(u64::from),
        Num::Dport => s.remote.port().map(u64::from),
        Num::Port => None, // handled in `term`: either end
        Num::Uid => s.uid.map(u64::from),
        Num::Pid => s.owner.process().map(|p| u64::from(p.pid)),
        Num::Probes => e.keepalive_probes().map(u64::from),
        Num::Retrans => info
            .and_then(super::tcp_info::TcpInfo::retransmits)
            .map(u64::from),
        Num::RecvQ => Some(u64::from(s.recv_q)),
        Num::SendQ => Some(u64::from(s.send_q)),
        Num::IdleMs => e.idle_ms().map(u64::from),
        Num::AgeMs => Some(e.age(now).as_millis() as u64),
        Num::RttUs => info.and_then(super::tcp_info::TcpInfo::rtt).map(u64::from),
        Num::KaIdleMs => e.params().map(|p| u64::from(p.idle_s) * 1000),
        Num::KaIntvlMs => e.params().map(|p| u64::from(p.intvl_s) * 1000),
        Num::KaCnt => e.params().map(|p| u64::from(p.cnt)),
        Num::UserTimeoutMs => e.params().map(|p| u64::from(p.user_timeout_ms)),
        Num::DetectMs => e.detect(now).map(|c| match c.detect {
            super::Detect::Never | super::Detect::ZeroWindow => u64::MAX,
            super::Detect::InMs(ms) => ms,
        }),
    }
}

impl AddrPat {
    pub fn matches(&self, ep: &Endpoint) -> bool {
        match ep {
            Endpoint::Inet(a) => {
                self.path.is_none()
                    && self.port.is_none_or(|p| p == a.port())
                    && self.net.is_none_or(|(net, len)| in_net(a.ip(), net, len))
            }
            Endpoint::Unix(Some(path)) => self
                .path
                .as_ref()
                .is_some_and(|want| path.contains(want.as_str())),
            _ => false,
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

// ---- lexing ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Not,
    /// `key`, or `key op value`.
    Word {
        key: String,
        op: Option<(Op, usize)>,
        value: Option<(String, usize)>,
    },
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Byte offset.
    at: usize,
    text: String,
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let column = |at: usize| text[..at].chars().count() + 1;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' => i += 1,
            b'(' | b')' => {
                i += 1;
                let tok = if c == b'(' { Tok::Open } else { Tok::Close };
                out.push(Token {
                    tok,
                    at: start,
                    text: (c as char).to_string(),
                });
            }
            b'!' => {
                i += 1;
                out.push(Token {
                    tok: Tok::Not,
                    at: start,
                    text: "!".into(),
                });
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-')
                {
                    i += 1;
                }
                let key = text[start..i].to_ascii_lowercase();
                let mut j = i;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                let op = match (b.get(j), b.get(j + 1)) {
                    (Some(b'!'), Some(b'=')) => Some((Op::Ne, 2)),
                    (Some(b'>'), Some(b'=')) => Some((Op::Ge, 2)),
                    (Some(b'<'), Some(b'=')) => Some((Op::Le, 2)),
                    (Some(b'='), Some(b'=')) => Some((Op::Eq, 2)),
                    (Some(b'>'), _) => Some((Op::Gt, 1)),
                    (Some(b'<'), _) => Some((Op::Lt, 1)),
                    (Some(b':' | b'='), _) => Some((Op::Eq, 1)),
                    _ => None,
                };
                let mut tok = Tok::Word {
                    key,
                    op: None,
                    value: None,
                };
                if let Some((op, len)) = op {
                    let op_at = j;
                    j += len;
                    while j < b.len() && b[j] == b' ' {
                        j += 1;
                    }
                    let v0 = j;
                    while j < b.len() && !matches!(b[j], b' ' | b'\t' | b'\n' | b'(' | b')') {
                        j += 1;
                    }
                    let value = (v0 < j).then(|| (text[v0..j].to_string(), v0));
                    if let Tok::Word {
                        op: o, value: v, ..
                    } = &mut tok
                    {
                        *o = Some((op, op_at));
                        *v = value;
                    }
                    i = j;
                }
                out.push(Token {
                    tok,
                    at: start,
                    text: text[start..i].to_string(),
                });
            }
            _ => {
                let ch = text[start..].chars().next().unwrap_or('?');
                return Err(FilterError {
                    column: column(start),
                    message: format!(
                        "unexpected '{ch}': expected a term like state:established, idle>10m or dport:5432"
                    ),
                });
            }
        }
    }
    Ok(out)
}

// ---- parsing ---------------------------------------------------------------------------------

/// Deepest nesting of parentheses and negations a filter may have: far more than anyone
/// writes, and far less than would overflow the stack of the recursive parser.
pub const MAX_DEPTH: u32 = 256;

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    text: &'a str,
    /// Parentheses and negations open at this point.
    depth: u32,
}

impl Parser<'_> {
    fn err_at(&self, at: usize, message: String) -> FilterError {
        let at = at.min(self.text.len());
        FilterError {
            column: self.text[..at].chars().count() + 1,
            message,
        }
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token { tok: Tok::Word { key, op: None, .. }, .. }) if key == w)
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
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
                let pat = parse_addr(&value)
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
                    _ => return Err(bad("keepalive, retransmit, timewait, probe0 or none")),
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
                "unknown term '{key}': expected one of {}, stale, or a stale reason",
                KEYS.join(", ")
            ),
        )
    }
}

const KEYS: [&str; 29] = [
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
fn negatable(op: Op, t: Term) -> Option<Expr> {
    match op {
        Op::Eq => Some(Expr::Term(t)),
        Op::Ne => Some(Expr::Not(Box::new(Expr::Term(t)))),
        _ => None,
    }
}

fn expected_value(key: &str) -> String {
    match key {
        "idle" | "age" | "rtt" | "ka_idle" | "ka_intvl" | "user_timeout" | "detect" => {
            "a duration like 10m".into()
        }
        "ka_source" => "socket or sysctl-default".into(),
        "state" => "a state like established, close-wait, time-wait, listen or connected".into(),
        "src" | "dst" => "an address like 10.0.0.0/8, :22 or [::1]:5432".into(),
        "service" => "a service name like postgres".into(),
        "proc" => "a process name or pid".into(),
        "netns" => "a namespace: host, a name or an inode".into(),
        "container" => "a container glob like podman:web-*".into(),
        "keepalive" => "on, off or unknown".into(),
        "stale" => reason_list(),
        "proto" => "tcp, udp or unix".into(),
        _ => "a number".into(),
    }
}

fn example(key: &str) -> &'static str {
    match key {
        "idle" | "age" | "ka_idle" | "detect" => "10m",
        "ka_intvl" | "user_timeout" => "30s",
        "ka_source" => "socket",
        "rtt" => "100ms",
        "state" => "established",
        "src" | "dst" => "10.0.0.0/8",
        "service" => "postgres",
        "proc" => "java",
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

fn reason_list() -> String {
    let names: Vec<&str> = StaleReason::ALL.iter().map(|r| r.name()).collect();
    format!("a stale reason ({})", names.join(", "))
}

fn parse_states(v: &str) -> Option<Vec<SockState>> {
    let norm = v.replace('_', "-");
    if norm == "unconn" {
        return Some(vec![SockState::Close]);
    }
    if norm == "syn-recv" {
        return Some(vec![SockState::SynRecv]);
    }
    SockState::ALL
        .into_iter()
        .find(|s| {
            s.name(Proto::Tcp)
                .replace('_', "-")
                .eq_ignore_ascii_case(&norm)
        })
        .map(|s| vec![s])
}

pub fn parse_addr(v: &str) -> Option<AddrPat> {
    let none = AddrPat {
        net: None,
        port: None,
        path: None,
    };
    if v.starts_with('/') || v.starts_with('@') {
        return Some(AddrPat {
            path: Some(v.to_string()),
            ..none
        });
    }
    if let Some(port) = v.strip_prefix(':') {
        return Some(AddrPat {
            port: Some(port.parse().ok()?),
            ..none
        });
    }
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (inside, port)
    } else if v.matches(':').count() == 1 {
        let (h, p) = v.split_once(':')?;
        (h, Some(p.parse().ok()?))
    } else {
        (v, None)
    };
    let (ip, len) = if let Some((ip, len)) = host.split_once('/') {
        (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?)
    } else {
        let ip = host.parse::<IpAddr>().ok()?;
        (ip, if ip.is_ipv4() { 32 } else { 128 })
    };
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return None;
    }
    Some(AddrPat {
        net: Some((ip, len)),
        port,
        path: None,
    })
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
