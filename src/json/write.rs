//! Writing JSON objects member by member: rewritten members as literal keys and values,
//! the others copied as the provider wrote them.

use super::{special_bytes, Member};

/// A key for [`ObjectWriter`], as the text `,"key":` (the comma is left out before the first
/// member), so that writing it is one copy. Made by [`key!`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key(pub(crate) &'static str);

/// The [`Key`] for a literal: `key!("id")`.
macro_rules! key {
    ($k:literal) => {
        $crate::json::Key(concat!(",\"", $k, "\":"))
    };
}
pub(crate) use key;

/// Writes JSON objects member by member into a byte buffer.
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    pub(crate) fn begin(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    /// Writes `key` and returns the buffer, for the caller to write its value.
    pub(crate) fn field(&mut self, key: Key) -> &mut Vec<u8> {
        let text = if std::mem::take(&mut self.first) {
            &key.0[1..]
        } else {
            key.0
        };
        self.out.extend_from_slice(text.as_bytes());
        self.out
    }

    /// A member copied as the provider wrote it; where it starts in the buffer.
    pub(crate) fn member(&mut self, member: &Member<'_>) -> usize {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        let at = self.out.len();
        self.out.extend_from_slice(member.text.as_bytes());
        at
    }

    pub(crate) fn str_field(&mut self, key: Key, value: &str) {
        write_str(self.field(key), value);
    }

    /// A member whose value is already JSON text (a pre-escaped string, `null`, a number).
    pub(crate) fn raw_field(&mut self, key: Key, raw: &str) {
        self.field(key).extend_from_slice(raw.as_bytes());
    }

    pub(crate) fn json_field<T: serde::Serialize + ?Sized>(&mut self, key: Key, value: &T) {
        // Serialising our own values into memory cannot fail.
        let _ = serde_json::to_writer(self.field(key), value);
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

/// `s` as a JSON string, written as serde_json writes it. A string with nothing to escape (no
/// `"`, `\\` or control character), the usual case, is copied in one piece.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        let _ = serde_json::to_writer(out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether `bytes` hold a `"`, a `\\` or a control character (what JSON escapes).
fn needs_escape(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        if special_bytes(u64::from_le_bytes(w.try_into().expect("eight bytes"))) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut bytes: Vec<char> = (0u8..0x80).map(char::from).collect();
        bytes.extend(['é', '\u{2028}', '😀', '\u{7f}']);
        for c in bytes {
            for at in 0..10 {
                let s: String = "abcdefghijk"
                    .chars()
                    .take(at)
                    .chain([c])
                    .chain("xyz".chars())
                    .collect();
                let mut out = b"[".to_vec();
                write_str(&mut out, &s);
                let mut theirs = b"[".to_vec();
                serde_json::to_writer(&mut theirs, &s).unwrap();
                assert_eq!(out, theirs, "{s:?}");
            }
        }
    }
}
