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
use std::time::Instant;

use crate::model::duration::parse_ms;
use crate::model::{
    services, Family, Keepalive, Proto, SockEntry, SockState, StaleReason, TimerKind,
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
        // The message quotes what was typed: no control character of it reaches a terminal.
        let message = crate::text::printable(&self.message);
        write!(f, "error at {}: {message}", self.column)
    }
}

impl std::error::Error for FilterError {}

impl FilterError {
    /// The expression with a caret under the error, for terminals (its unsafe characters
    /// replaced one for one, so the caret stays under the column).
    pub fn pointed(&self, source: &str) -> String {
        format!(
            "  {}\n  {}^",
            crate::text::printable(source),
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

/// `owner:process`, `owner:none` (no process holds it), `owner:unknown` (katop cannot see).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerIs {
    Process,
    None,
    Unknown,
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
    /// `comm:GLOB`: the whole process name.
    Comm(glob::Pattern),
    Owner(OwnerIs),
    /// `netns:host`, `netns:INODE`, `netns:NAME` (a glob on the namespace's name).
    Netns(String),
    /// `container:GLOB` on the container's label.
    Container(glob::Pattern),
    Keepalive(Keepalive),
    KaSource(crate::model::keepalive::Source),
    Timer(Option<TimerKind>),
    Stale(Option<StaleReason>),
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

    /// Whether the expression asks about stale reasons: a hunt for stale sockets, where
    /// rows that just closed are noise.
    pub fn mentions_stale(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::Term(Term::Stale(_)) => true,
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

mod eval;
mod lex;
mod parse;
use crate::model::addr::AddrPat;
use eval::eval;
use lex::{lex, Tok, Token};
use parse::Parser;
pub use parse::MAX_DEPTH;

#[cfg(test)]
mod tests;
