//! Splicing JSON objects without a full parse: the fields the gateway rewrites are replaced,
//! every other field is copied byte for byte from the provider's text. This keeps unknown
//! fields exact and costs a fraction of a typed round trip on the hot path.

use std::borrow::Cow;
use std::fmt;

/// The text of one JSON value, validated, without the whitespace around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// `null`, for entries whose content lives elsewhere in a view.
    const NULL: Raw<'static> = Raw("null");

    pub(crate) fn get(&self) -> &'a str {
        self.0
    }
}

/// Where and why a text is not the JSON a view expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    what: &'static str,
    at: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for JsonError {}

type Entries<'a> = Vec<(Cow<'a, str>, Raw<'a>)>;

/// A JSON object as its keys and the raw text of their values, in order.
#[derive(Debug, Default)]
pub(crate) struct RawObject<'a> {
    pub(crate) entries: Entries<'a>,
}

impl<'a> RawObject<'a> {
    /// Splits `text`, which must be one JSON object, validating all of it.
    pub(crate) fn parse(text: &'a str) -> Result<Self, JsonError> {
        Scanner::new(text).document(Self::scan)
    }

    fn scan(sc: &mut Scanner<'a>) -> Result<Self, JsonError> {
        let mut entries = Vec::with_capacity(8);
        sc.object(|sc, k| {
            entries.push((k, sc.raw_value()?));
            Ok(())
        })?;
        Ok(RawObject { entries })
    }

    pub(crate) fn get(&self, key: &str) -> Option<Raw<'a>> {
        find(&self.entries, key)
    }
}

/// A stream chunk read in one pass: top-level fields raw, except `choices`, whose objects are
/// read with their `delta` split into raw fields too.
#[derive(Debug, Default)]
pub(crate) struct ChunkView<'a> {
    pub(crate) entries: Entries<'a>,
    /// `Some` when the chunk has a `choices` array; the entry for it stays in `entries`.
    pub(crate) choices: Option<Vec<ChoiceView<'a>>>,
}

/// One choice of a [`ChunkView`].
#[derive(Debug, Default)]
pub(crate) struct ChoiceView<'a> {
    pub(crate) entries: Entries<'a>,
    /// The `delta`, split into fields (`None`: absent or null).
    pub(crate) delta: Option<RawObject<'a>>,
}

impl<'a> ChunkView<'a> {
    /// Splits `text`, which must be one JSON object, validating all of it.
    pub(crate) fn parse(text: &'a str) -> Result<Self, JsonError> {
        Scanner::new(text).document(|sc| {
            let mut view = ChunkView {
                entries: Vec::with_capacity(8),
                choices: None,
            };
            sc.object(|sc, k| {
                if k == "choices" {
                    if let Some(choices) = sc.nullable(|sc| {
                        let mut list = Vec::with_capacity(1);
                        sc.array(|sc| {
                            list.push(ChoiceView::scan(sc)?);
                            Ok(())
                        })?;
                        Ok(list)
                    })? {
                        view.choices = Some(choices);
                        view.entries.push((k, Raw::NULL));
                    }
                } else {
                    view.entries.push((k, sc.raw_value()?));
                }
                Ok(())
            })?;
            Ok(view)
        })
    }

    pub(crate) fn get(&self, key: &str) -> Option<Raw<'a>> {
        find(&self.entries, key)
    }
}

impl<'a> ChoiceView<'a> {
    fn scan(sc: &mut Scanner<'a>) -> Result<Self, JsonError> {
        let mut view = ChoiceView {
            entries: Vec::with_capacity(4),
            delta: None,
        };
        sc.object(|sc, k| {
            if k == "delta" {
                view.delta = sc.nullable(RawObject::scan)?;
            } else {
                view.entries.push((k, sc.raw_value()?));
            }
            Ok(())
        })?;
        Ok(view)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Raw<'a>> {
        find(&self.entries, key)
    }
}

fn find<'a>(entries: &Entries<'a>, key: &str) -> Option<Raw<'a>> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Nesting deeper than this is refused (serde_json's limit too), so a hostile text cannot
/// exhaust the stack.
const MAX_DEPTH: u32 = 128;

/// A validating JSON reader over a `str` (so UTF-8 is already known good). It accepts what
/// RFC 8259 accepts, as serde_json does when it skips a value: strings without raw control
/// characters and with valid escapes (a `\u` escape needs four hex digits, as in serde_json's
/// skipping, unpaired surrogates included), numbers of the JSON grammar, `true`, `false`,
/// `null`, nested up to [`MAX_DEPTH`].
struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

type Scan<T> = Result<T, JsonError>;

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            text,
            b: text.as_bytes(),
            i: 0,
            depth: 0,
        }
    }

    fn err<T>(&self, what: &'static str) -> Scan<T> {
        Err(JsonError { what, at: self.i })
    }

    /// One value read by `f`, with nothing but whitespace around it.
    fn document<T>(mut self, f: impl FnOnce(&mut Self) -> Scan<T>) -> Scan<T> {
        self.ws();
        let v = f(&mut self)?;
        self.ws();
        if self.i != self.b.len() {
            return self.err("trailing characters");
        }
        Ok(v)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8, what: &'static str) -> Scan<()> {
        if self.peek() != Some(c) {
            return self.err(what);
        }
        self.i += 1;
        Ok(())
    }

    fn enter(&mut self) -> Scan<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        Ok(())
    }

    /// An object; `member` is called at each value with its key (unescaped) and must read it.
    fn object(&mut self, member: impl FnMut(&mut Self, Cow<'a, str>) -> Scan<()>) -> Scan<()> {
        self.object_with(true, member)
    }

    /// An object whose keys nobody reads: they are checked, not unescaped.
    fn skip_object(&mut self) -> Scan<()> {
        self.object_with(false, |sc, _| sc.value())
    }

    fn object_with(
        &mut self,
        keys: bool,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Scan<()>,
    ) -> Scan<()> {
        self.items(
            [b'{', b'}'],
            "expected a JSON object",
            "expected `,` or `}`",
            |sc| {
                if sc.peek() != Some(b'"') {
                    return sc.err("expected a string key");
                }
                let start = sc.i;
                let escaped = sc.string()?;
                let key = if !keys {
                    Cow::Borrowed("")
                } else if escaped {
                    match serde_json::from_str::<String>(&sc.text[start..sc.i]) {
                        Ok(k) => Cow::Owned(k),
                        Err(_) => return sc.err("invalid escape in a key"),
                    }
                } else {
                    Cow::Borrowed(&sc.text[start + 1..sc.i - 1])
                };
                sc.ws();
                sc.eat(b':', "expected `:`")?;
                sc.ws();
                member(sc, key)
            },
        )
    }

    /// An array; `element` is called at each element and must read it.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.items(
            [b'[', b']'],
            "expected a JSON array",
            "expected `,` or `]`",
            element,
        )
    }

    /// `open`, then items read by `item` and separated by commas, then `close`.
    fn items(
        &mut self,
        [open, close]: [u8; 2],
        not_open: &'static str,
        no_separator: &'static str,
        mut item: impl FnMut(&mut Self) -> Scan<()>,
    ) -> Scan<()> {
        self.eat(open, not_open)?;
        self.enter()?;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(c) if c == close => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return self.err(no_separator),
            }
        }
    }

    /// `null` as `None`, anything else read by `f`.
    fn nullable<T>(&mut self, f: impl FnOnce(&mut Self) -> Scan<T>) -> Scan<Option<T>> {
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            return Ok(None);
        }
        f(self).map(Some)
    }

    /// Any value, as its text.
    fn raw_value(&mut self) -> Scan<Raw<'a>> {
        let start = self.i;
        self.value()?;
        Ok(Raw(&self.text[start..self.i]))
    }

    fn value(&mut self) -> Scan<()> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.skip_object(),
            Some(b'[') => self.array(Self::value),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => self.err("expected a value"),
            None => self.err("EOF while parsing a value"),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Scan<()> {
        if !self.b[self.i..].starts_with(word) {
            return self.err("expected a value");
        }
        self.i += word.len();
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Scan<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return self.err("invalid number");
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        Ok(())
    }

    /// A string, from its opening quote to past its closing one; whether it has escapes.
    fn string(&mut self) -> Scan<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            // Eight bytes at a time, straight to the first one that needs a look.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
                let found = special_bytes(word);
                if found != 0 {
                    self.i += (found.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(0..=0x1f) => return self.err("control character in a string"),
                Some(_) => self.i += 1,
                None => return self.err("EOF while parsing a string"),
            }
        }
    }

    fn escape(&mut self) -> Scan<()> {
        match self.b.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
            Some(b'u') => {
                let hex = self.b.get(self.i + 2..self.i + 6);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return self.err("invalid \\u escape");
                }
                self.i += 6;
            }
            _ => return self.err("invalid escape"),
        }
        Ok(())
    }
}

/// The bytes of `word` (eight, little-endian) that are `"`, `\` or a control character (below
/// 0x20), as their high bits; zero when there is none. The usual bit tricks: a borrow can mark
/// a byte above a true match, never below, so the lowest mark is the first such byte.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash
}

/// Writes JSON objects field by field into a byte buffer.
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    pub(crate) fn begin(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    // The `Cow` variant is the point: a borrowed key had no escapes and is copied as it is.
    #[allow(clippy::ptr_arg)]
    pub(crate) fn key(&mut self, key: &Cow<'_, str>) -> &mut Vec<u8> {
        self.sep();
        match key {
            // Borrowed from the provider's text: it had no escapes, so it is valid as it is.
            Cow::Borrowed(k) => {
                self.out.push(b'"');
                self.out.extend_from_slice(k.as_bytes());
                self.out.push(b'"');
            }
            Cow::Owned(k) => write_str(self.out, k),
        }
        self.out.push(b':');
        self.out
    }

    #[allow(clippy::ptr_arg)]
    pub(crate) fn raw(&mut self, key: &Cow<'_, str>, value: &Raw<'_>) {
        self.key(key).extend_from_slice(value.get().as_bytes());
    }

    pub(crate) fn str_field(&mut self, key: &'static str, value: &str) {
        self.key(&Cow::Borrowed(key));
        write_str(self.out, value);
    }

    /// A field whose value is already JSON text (a pre-escaped string, `null`, a number).
    pub(crate) fn raw_field(&mut self, key: &'static str, raw: &str) {
        self.key(&Cow::Borrowed(key))
            .extend_from_slice(raw.as_bytes());
    }

    pub(crate) fn json_field<T: serde::Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) {
        let out = self.key(&Cow::Borrowed(key));
        // Serialising our own values into memory cannot fail.
        let _ = serde_json::to_writer(out, value);
    }

    fn sep(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(b',');
        }
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_keeps_order_escapes_and_raw_values() {
        let text = r#"{"id":"x","we\"ird":1.50,"nested":{"a":[1, 2]},"model":"m"}"#;
        let obj = RawObject::parse(text).unwrap();
        assert!(matches!(obj.entries[1].0, Cow::Owned(_)));
        let mut out = Vec::new();
        let mut w = ObjectWriter::begin(&mut out);
        for (k, v) in &obj.entries {
            match k.as_ref() {
                "id" => w.str_field("id", "gen-1"),
                _ => w.raw(k, v),
            }
        }
        w.end();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"gen-1","we\"ird":1.50,"nested":{"a":[1, 2]},"model":"m"}"#
        );
        assert!(RawObject::parse("[1]").is_err());
    }

    /// serde_json's verdict on `text` as one JSON document, skipping every value (what the
    /// serde-based views did before the scanner).
    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
            && text
                .trim_start_matches([' ', '\n', '\r', '\t'])
                .starts_with('{')
    }

    /// The scanner against serde_json on one text. The scanner is stricter in two places only:
    /// nesting past `MAX_DEPTH` and top-level keys whose escapes do not decode (an unpaired
    /// surrogate), which it must read.
    fn agrees(text: &str) -> Result<(), String> {
        let ours = RawObject::parse(text);
        let theirs = serde_accepts(text);
        match (&ours, theirs) {
            (Ok(_), true) | (Err(_), false) => Ok(()),
            (Err(e), true)
                if e.what == "nested too deeply" || e.what == "invalid escape in a key" =>
            {
                Ok(())
            }
            _ => Err(format!(
                "{text:?}: scanner {ours:?}, serde_json accepts: {theirs}"
            )),
        }
    }

    #[test]
    fn the_scanner_accepts_what_serde_json_accepts() {
        let values = [
            "0",
            "-0",
            "1",
            "-1",
            "10",
            "1.5",
            "-1.5e10",
            "1E+2",
            "1e-2",
            "0.0",
            "123456789012345678901234567890",
            "1e999",
            "true",
            "false",
            "null",
            r#""""#,
            r#""a""#,
            r#""é✓""#,
            r#""\"\\\/\b\f\n\r\t""#,
            r#""\u00e9\uD83D\uDE00""#,
            r#""\uD800""#,
            "[]",
            "{}",
            "[1,2,[3,{}]]",
            r#"{"a":{"b":[null]}}"#,
            " [ 1 , 2 ] ",
            "\t{\n\"a\"\r:\n1}",
            // Refused:
            "",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "--1",
            "0x10",
            "NaN",
            "Infinity",
            "tru",
            "nul",
            "nullx",
            "True",
            r#""abc"#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u12G4""#,
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{,}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            "[",
            "]",
            "{",
            "'a'",
        ];
        for v in values {
            for text in [
                format!("{{\"k\":{v}}}"),
                format!("{{\"k\":{v},\"z\":1}}"),
                v.to_owned(),
            ] {
                agrees(&text).unwrap();
            }
        }
        for text in [
            "",
            " ",
            "{}",
            " {} ",
            "{} x",
            "{}{}",
            "[]",
            r#"{"a":1}"#,
            r#"{"a\"b":1,"a\"b":2}"#,
            r#"{"\uD800":1}"#,
            r#"{"a":{"\uD800":1}}"#,
            r#"{"a":1"#,
            r#"{"a" : 1 , "b" : [ ] }"#,
            "{\"a\":1}\n",
        ] {
            agrees(text).unwrap();
        }
        // Every ASCII byte inside a string, on the byte-at-a-time path (short) and the
        // eight-at-a-time one (long).
        for byte in 0..0x80u8 {
            for pad in ["", "0123456789abcdef"] {
                let text = format!("{{\"k\":\"{pad}{}{pad}\"}}", byte as char);
                agrees(&text).unwrap();
            }
        }
    }

    #[test]
    fn values_come_back_as_written_and_keys_unescaped() {
        let text = r#"{ "id" : "x" , "n":-1.5e3,"a\u0062":[1, {"c":null}] ,"s":"q\"\\"}"#;
        let obj = RawObject::parse(text).unwrap();
        let got: Vec<(&str, &str)> = obj
            .entries
            .iter()
            .map(|(k, v)| (k.as_ref(), v.get()))
            .collect();
        assert_eq!(
            got,
            [
                ("id", "\"x\""),
                ("n", "-1.5e3"),
                ("ab", r#"[1, {"c":null}]"#),
                ("s", r#""q\"\\""#)
            ]
        );
        assert!(matches!(obj.entries[0].0, Cow::Borrowed(_)));
        assert!(matches!(obj.entries[2].0, Cow::Owned(_)));
        // Nested keys are not read, so one with an unpaired surrogate passes (as with serde_json);
        // a top-level one must decode.
        assert!(RawObject::parse(r#"{"a":{"\uD800":1}}"#).is_ok());
        assert!(RawObject::parse(r#"{"\uD800":1}"#).is_err());
    }

    #[test]
    fn chunk_views_split_choices_and_deltas() {
        let text = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null},{"index":1,"delta":null}],"x":1}"#;
        let v = ChunkView::parse(text).unwrap();
        assert_eq!(
            v.get("choices"),
            Some(Raw::NULL),
            "kept in place, content in `choices`"
        );
        let choices = v.choices.as_deref().unwrap();
        assert_eq!(choices.len(), 2);
        assert_eq!(
            choices[0]
                .delta
                .as_ref()
                .unwrap()
                .get("content")
                .unwrap()
                .get(),
            "\"hi\""
        );
        assert_eq!(choices[0].get("logprobs").unwrap().get(), "null");
        assert!(choices[1].delta.is_none());
        assert_eq!(v.get("x").unwrap().get(), "1");
        // `choices: null` is no choices and no entry; a choice that is not an object, or a
        // delta that is not one, is an error.
        let v = ChunkView::parse(r#"{"choices":null,"usage":{}}"#).unwrap();
        assert!(v.choices.is_none() && v.get("choices").is_none());
        assert!(ChunkView::parse(r#"{"choices":[1]}"#).is_err());
        assert!(ChunkView::parse(r#"{"choices":{}}"#).is_err());
        assert!(ChunkView::parse(r#"{"choices":[{"delta":"x"}]}"#).is_err());
        assert!(ChunkView::parse(r#"{"choices":[{"delta":{"a":01}}]}"#).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{{\"k\":{}{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(RawObject::parse(&deep(MAX_DEPTH as usize)).is_ok());
        let err = RawObject::parse(&deep(MAX_DEPTH as usize + 1)).unwrap_err();
        assert_eq!(err.what, "nested too deeply");
        // Far past the limit: an error, not a stack overflow.
        assert!(RawObject::parse(&"[".repeat(1_000_000)).is_err());
        assert!(RawObject::parse(&format!("{{\"k\":{}", "[".repeat(1_000_000))).is_err());
    }

    #[test]
    fn the_eight_byte_test_finds_the_first_special_byte() {
        let first = |word: [u8; 8]| match special_bytes(u64::from_le_bytes(word)) {
            0 => None,
            found => Some(found.trailing_zeros() / 8),
        };
        let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        for pos in 0..8 {
            for byte in 0..=255u8 {
                let mut word = *b"abcdefgh";
                word[pos] = byte;
                let expected = special(byte).then_some(pos as u32);
                assert_eq!(first(word), expected, "byte {byte:#x} at {pos}");
                // Whatever comes after it (borrows run upwards), the first one is found.
                for after in [0u8, b'"', b'\\', 0x1f, 0x20, 0x21, 0x80, 0xff] {
                    for later in pos + 1..8 {
                        let mut w = word;
                        w[later] = after;
                        let expected = if special(byte) {
                            Some(pos as u32)
                        } else {
                            special(after).then_some(later as u32)
                        };
                        assert_eq!(
                            first(w),
                            expected,
                            "{byte:#x} at {pos}, {after:#x} at {later}"
                        );
                    }
                }
            }
        }
        // High bytes (UTF-8) are plain text.
        assert_eq!(first(*b"\xc3\xa9\xe2\x9c\x93\xff\x80 "), None);
    }

    proptest::proptest! {
        #[test]
        fn the_scanner_agrees_with_serde_json_on_any_text(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("{"), proptest::strategy::Just("}"),
                    proptest::strategy::Just("["), proptest::strategy::Just("]"),
                    proptest::strategy::Just(":"), proptest::strategy::Just(","),
                    proptest::strategy::Just("\""), proptest::strategy::Just("\"k\""),
                    proptest::strategy::Just("\\"), proptest::strategy::Just("\\u00e9"),
                    proptest::strategy::Just("\\uD800"), proptest::strategy::Just("\\n"),
                    proptest::strategy::Just("0"), proptest::strategy::Just("12"),
                    proptest::strategy::Just("-"), proptest::strategy::Just("."),
                    proptest::strategy::Just("e"), proptest::strategy::Just("+"),
                    proptest::strategy::Just("true"), proptest::strategy::Just("null"),
                    proptest::strategy::Just(" "), proptest::strategy::Just("\n"),
                    proptest::strategy::Just("\u{1}"), proptest::strategy::Just("é"),
                    proptest::strategy::Just("abcdefghij"),
                ],
                0..40,
            ),
        ) {
            let text = parts.concat();
            proptest::prop_assert!(agrees(&text).is_ok(), "{}", agrees(&text).unwrap_err());
            // And wrapped as a member's value, where most of the grammar is reached.
            let wrapped = format!("{{\"k\":{text}}}");
            proptest::prop_assert!(agrees(&wrapped).is_ok(), "{}", agrees(&wrapped).unwrap_err());
        }
    }
}
