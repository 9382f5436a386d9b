//! Splitting the text into tokens: words with their operator and value, parentheses, `!`.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Byte offset.
    pub(super) at: usize,
    pub(super) text: String,
}

pub(super) fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
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
