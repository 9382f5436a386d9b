//! Text that comes from the kernel or from other users (process names, command lines, Unix
//! socket paths, error messages quoting them) made safe for every output: a terminal never
//! receives a control character or an invisible character that reorders or hides text, and
//! JSON stays valid and round-trips while carrying none of them raw.

use std::borrow::Cow;
use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

/// Control characters (C0, DEL, C1) and the invisible format characters that reorder or hide
/// text: bidi marks, embeddings, overrides and isolates, zero-width characters, line and
/// paragraph separators, the byte-order mark.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `s` with every unsafe character replaced by `?`; borrowed when there is none (the usual
/// case, so rendering 100k cells allocates nothing extra).
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_unsafe) {
        Cow::Owned(
            s.chars()
                .map(|c| if is_unsafe(c) { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// [`printable`] for text of several lines: its line breaks kept, every other unsafe
/// character replaced.
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    if s.chars().any(|c| c != '\n' && is_unsafe(c)) {
        Cow::Owned(
            s.chars()
                .map(|c| if c != '\n' && is_unsafe(c) { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// `eprintln!` for katop's messages, which quote what users typed and what other users named
/// (paths, namespaces, processes): no control character of them reaches the terminal.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::text::printable_lines(&format!($($arg)*)))
    };
}

/// `this socket` or `these 12 sockets`, for the questions before acting.
pub fn these_sockets(n: usize) -> String {
    if n == 1 {
        "this socket".into()
    } else {
        format!("these {n} sockets")
    }
}

/// [`printable`] for an owned string.
pub fn printable_owned(s: String) -> String {
    match printable(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(clean) => clean,
    }
}

/// A `serde_json` formatter that writes unsafe characters as `\uXXXX` escapes (`serde_json`
/// escapes only C0 itself): the value read back is the same string.
pub struct SafeJson<F>(F);

impl<F: Formatter> Formatter for SafeJson<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Printable ASCII, the usual case (addresses, states, most names), goes out whole.
        if fragment.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_unsafe(c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Compact JSON with unsafe characters escaped.
pub fn to_writer<W: io::Write, T: Serialize + ?Sized>(w: W, value: &T) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(w, SafeJson(CompactFormatter));
    value.serialize(&mut ser)
}

/// Indented JSON with unsafe characters escaped.
pub fn to_writer_pretty<W: io::Write, T: Serialize + ?Sized>(
    w: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(w, SafeJson(PrettyFormatter::new()));
    value.serialize(&mut ser)
}

/// [`to_writer`] into a string.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::new();
    to_writer(&mut out, value)?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_get_no_controls_and_no_invisible_reordering() {
        assert_eq!(printable("a\x1b[2Jb"), "a?[2Jb");
        assert_eq!(printable("evil\u{202E}gnp.exe"), "evil?gnp.exe");
        assert_eq!(printable("zero\u{200B}width"), "zero?width");
        assert_eq!(printable("c1\u{0085}\u{009B}31m"), "c1??31m");
        assert!(matches!(printable("postgres: idle"), Cow::Borrowed(_)));
        assert_eq!(printable("日本語 ok"), "日本語 ok");
        assert_eq!(printable_lines("a\x1b]0;x\x07\nb"), "a?]0;x?\nb");
    }

    #[test]
    fn json_escapes_them_and_round_trips() {
        let name = "x\u{0085}y\u{009B}z\u{202E}w\u{7f}\u{1}\"\\";
        let text = to_string(&serde_json::json!({ "process": name })).unwrap();
        assert!(!text.chars().any(is_unsafe), "{text:?}");
        assert!(
            text.contains("\\u0085") && text.contains("\\u202e"),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["process"], name);
        let mut pretty = Vec::new();
        to_writer_pretty(&mut pretty, &vec![name]).unwrap();
        let back: Vec<String> = serde_json::from_slice(&pretty).unwrap();
        assert_eq!(back, vec![name.to_string()]);
    }

    proptest::proptest! {
        #[test]
        fn any_string_goes_out_safe_and_reads_back(name in "\\PC*|[ -~]*|.*") {
            let text = to_string(&serde_json::json!({ "process": name })).unwrap();
            proptest::prop_assert!(!text.chars().any(is_unsafe), "{text:?}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(back["process"].as_str(), Some(name.as_str()));
        }
    }
}
