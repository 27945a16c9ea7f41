//! JSON read and written without a full parse, for the stream splice: the hot path that turns
//! each upstream chunk of a Chat Completions stream (and each non-streamed answer of an
//! OpenAI-compatible provider) into the gateway's.
//!
//! The gateway rewrites a few members of a provider's JSON (`id`, `model`, `provider`, the
//! usage's `cost`) and must pass every other member through exactly as the provider wrote it,
//! unknown ones included. A typed round trip through serde would read and rewrite every
//! member of every chunk; here a [`Scanner`] validates the text in one pass and records where
//! each member is ([`RawObject`], [`ChunkView`]), and an [`ObjectWriter`] writes the rewritten
//! members and copies the others byte for byte.
//!
//! Everything else in the crate reads and writes JSON with serde (derived types, borrowed
//! fields, `RawValue`). This module stays only because streams pay for it per chunk. Its
//! rules, held by its tests and the fuzz targets:
//! - it accepts exactly the texts serde_json accepts, and reads the same values;
//! - whatever it writes is what serde_json would write for the same values;
//! - where it mirrors one of the crate's types member by member (the chunk head of
//!   `stream_normalize::openai`, [`plain_usage`]), the type is destructured or built without
//!   `..`, so a field added to it fails to compile until this code handles it.

mod write;

pub(crate) use self::write::{key, write_str, Key, ObjectWriter};

use std::borrow::Cow;
use std::fmt;

use crate::chat::Usage;

/// The text of one JSON value, validated, without the whitespace around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
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

/// One member of an object as the provider wrote it: `"key": value`, from the key's opening
/// quote to the end of the value. A member that is kept is copied in one piece, escapes and
/// all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member<'a> {
    text: &'a str,
    /// Where `text` starts in the scanned text.
    at: usize,
    /// The key's length, quotes included.
    key_len: usize,
    /// Where the value starts in `text`.
    value_at: usize,
    /// The key has escapes (rare): it is compared decoded.
    escaped: bool,
}

impl<'a> Member<'a> {
    /// The key, decoded.
    #[inline]
    pub(crate) fn key(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(decode_key(&self.text[..self.key_len]))
        } else {
            Cow::Borrowed(&self.text[1..self.key_len - 1])
        }
    }

    /// Whether the key (decoded) is `key`.
    #[inline(always)]
    pub(crate) fn is(&self, key: &str) -> bool {
        key_is(&self.text[..self.key_len], self.escaped, key)
    }

    /// The value.
    pub(crate) fn value(&self) -> Raw<'a> {
        Raw(&self.text[self.value_at..])
    }

    /// Where the member is in the scanned text, and where its value starts in it.
    pub(crate) fn place(&self) -> (std::ops::Range<usize>, usize) {
        (self.at..self.at + self.text.len(), self.value_at)
    }
}

/// Whether a key as written (quotes included) is `key` once decoded. Inlined, so that the
/// comparison with a literal is a few instructions.
#[inline(always)]
fn key_is(quoted: &str, escaped: bool, key: &str) -> bool {
    if escaped {
        decode_key(quoted) == key
    } else {
        quoted.len() == key.len() + 2 && &quoted[1..quoted.len() - 1] == key
    }
}

/// Whether a key with escapes decodes (an unpaired surrogate does not).
#[cold]
#[inline(never)]
fn key_decodes(quoted: &str) -> bool {
    serde_json::from_str::<String>(quoted).is_ok()
}

/// A key with escapes (rare), decoded. They were checked when it was scanned.
#[cold]
#[inline(never)]
fn decode_key(quoted: &str) -> String {
    serde_json::from_str(quoted).unwrap_or_default()
}

/// Where a [`Member`] is in the text that was scanned: no borrow, so the lists of them are
/// kept and reused from one text to the next.
#[derive(Debug, Clone, Copy)]
struct Span {
    at: usize,
    end: usize,
    key_len: usize,
    value_at: usize,
    escaped: bool,
}

/// Some members of one object of a scanned text, in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Members<'a> {
    text: &'a str,
    spans: &'a [Span],
}

impl<'a> Members<'a> {
    pub(crate) fn iter(self) -> impl Iterator<Item = Member<'a>> {
        self.spans.iter().map(move |s| Member {
            text: &self.text[s.at..s.end],
            at: s.at,
            key_len: s.key_len,
            value_at: s.value_at,
            escaped: s.escaped,
        })
    }

    #[inline]
    pub(crate) fn get(self, key: &str) -> Option<Raw<'a>> {
        self.iter().find(|m| m.is(key)).map(|m| m.value())
    }
}

/// A JSON object as its members, in order.
#[derive(Debug)]
pub(crate) struct RawObject<'a> {
    text: &'a str,
    spans: Vec<Span>,
}

impl<'a> RawObject<'a> {
    /// Splits `text`, which must be one JSON object, validating all of it.
    pub(crate) fn parse(text: &'a str) -> Result<Self, JsonError> {
        let mut spans = Vec::with_capacity(8);
        Scanner::new(text).document(|sc| sc.members(&mut spans))?;
        Ok(RawObject { text, spans })
    }

    pub(crate) fn members(&self) -> Members<'_> {
        Members {
            text: self.text,
            spans: &self.spans,
        }
    }
}

/// The lists a [`ChunkView`] is read into, kept by a stream from one chunk to the next so
/// that reading one allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct ChunkScratch {
    top: Vec<Span>,
    /// Every choice's members but `delta`, choice after choice.
    choice_members: Vec<Span>,
    /// Every choice's `delta` members, choice after choice.
    delta_members: Vec<Span>,
    choices: Vec<ChoiceSpans>,
}

impl ChunkScratch {
    /// Lists with room for `members` members at each level and one choice.
    pub(crate) fn with_capacity(members: usize) -> Self {
        ChunkScratch {
            top: Vec::with_capacity(members),
            choice_members: Vec::with_capacity(members),
            delta_members: Vec::with_capacity(members),
            choices: Vec::with_capacity(1),
        }
    }

    /// One choice: its members but `delta` and the members of its `delta` are kept apart.
    fn choice(&mut self, sc: &mut Scanner<'_>) -> Scan<()> {
        let from = self.choice_members.len();
        let mut delta = None;
        sc.object(|sc, head| {
            if head.is("delta") {
                let from = self.delta_members.len();
                delta = sc
                    .nullable(|sc| sc.members(&mut self.delta_members))?
                    .map(|()| from..self.delta_members.len());
            } else {
                let span = sc.value_span(head)?;
                self.choice_members.push(span);
            }
            Ok(())
        })?;
        self.choices.push(ChoiceSpans {
            members: from..self.choice_members.len(),
            delta,
        });
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ChoiceSpans {
    members: std::ops::Range<usize>,
    /// `None`: no `delta`, or `null`.
    delta: Option<std::ops::Range<usize>>,
}

/// A stream chunk read in one pass: top-level members raw, and `choices` read further, with
/// each choice's `delta` split into members too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkView<'a> {
    text: &'a str,
    scratch: &'a ChunkScratch,
    /// The chunk has a `choices` array (maybe empty).
    has_choices: bool,
    /// Some whitespace in the text is a line break.
    line_breaks: bool,
}

/// One choice of a [`ChunkView`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChoiceView<'a> {
    /// Its members but `delta`.
    pub(crate) members: Members<'a>,
    /// The `delta`, split into members (`None`: absent or null).
    pub(crate) delta: Option<Members<'a>>,
}

impl<'a> ChunkView<'a> {
    /// Splits `text`, which must be one JSON object, validating all of it, into `scratch`.
    pub(crate) fn parse(text: &'a str, scratch: &'a mut ChunkScratch) -> Result<Self, JsonError> {
        scratch.top.clear();
        scratch.choice_members.clear();
        scratch.delta_members.clear();
        scratch.choices.clear();
        let (mut has_choices, mut seen) = (false, false);
        let mut sc = Scanner::new(text);
        sc.document(|sc| {
            sc.object(|sc, head| {
                if !head.is("choices") {
                    let span = sc.value_span(head)?;
                    scratch.top.push(span);
                    return Ok(());
                }
                // Which of two a client would read is anyone's guess: neither.
                if std::mem::replace(&mut seen, true) {
                    return sc.err("a repeated `choices`");
                }
                let at = sc.i;
                if sc
                    .nullable(|sc| sc.array(|sc| scratch.choice(sc)))?
                    .is_some()
                {
                    has_choices = true;
                    scratch.top.push(sc.span(head, at));
                }
                Ok(())
            })
        })?;
        Ok(ChunkView {
            text,
            scratch,
            has_choices,
            line_breaks: sc.line_breaks,
        })
    }

    /// The top-level members, `choices` included (when it is not `null`).
    pub(crate) fn members(&self) -> Members<'a> {
        Members {
            text: self.text,
            spans: &self.scratch.top,
        }
    }

    /// Whether some whitespace between its tokens is a line break (a pretty-printed text):
    /// its members, copied, would hold one.
    pub(crate) fn has_line_breaks(&self) -> bool {
        self.line_breaks
    }

    /// The choices, when the chunk has a `choices` array.
    pub(crate) fn choices(&self) -> Option<impl ExactSizeIterator<Item = ChoiceView<'a>> + '_> {
        let (text, s) = (self.text, self.scratch);
        self.has_choices.then(|| {
            s.choices.iter().map(move |c| ChoiceView {
                members: Members {
                    text,
                    spans: &s.choice_members[c.members.clone()],
                },
                delta: c.delta.clone().map(|d| Members {
                    text,
                    spans: &s.delta_members[d],
                }),
            })
        })
    }
}

/// A non-streamed answer: `text`, one JSON object, split into its members (all of it
/// validated), and, read in the same pass, the value of the member named `item_key` of the
/// first element of the first member named `array_key`, when that member is an array whose
/// first element is an object that has one. Of that object's members named `item_key`, the
/// last, as most JSON readers (JavaScript's, Python's, so the SDKs') keep the last; members
/// of objects nested deeper are not looked at.
pub(crate) fn parse_answer<'a>(
    text: &'a str,
    array_key: &str,
    item_key: &str,
) -> Result<(RawObject<'a>, Option<Raw<'a>>), JsonError> {
    let mut spans = Vec::with_capacity(8);
    let (mut found, mut seen) = (None, false);
    Scanner::new(text).document(|sc| {
        sc.object(|sc, head| {
            let at = sc.i;
            if !seen && head.is(array_key) {
                seen = true;
                sc.value_noting_first_item_member(item_key, &mut found)?;
            } else {
                sc.value()?;
            }
            spans.push(sc.span(head, at));
            Ok(())
        })
    })?;
    Ok((RawObject { text, spans }, found))
}

/// A JSON string's text (validated, quotes included) decoded; `None` for `null` or any other
/// value. Without escapes, the text between the quotes is the string.
pub(crate) fn string_value(raw: Raw<'_>) -> Option<String> {
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Some(inner.to_owned()),
        _ => serde_json::from_str::<Option<String>>(text).ok().flatten(),
    }
}

/// A usage object read without serde when it holds only the three plain counts
/// (`prompt_tokens`, `completion_tokens`, `total_tokens`, each at most once and an integer
/// from 0 to `u64::MAX` written without a fraction or an exponent), as many OpenAI-compatible
/// servers send it. `None` for anything else, which the caller reads with serde: whatever
/// this reads, serde reads the same.
pub(crate) fn plain_usage(text: &str) -> Option<Usage> {
    let mut counts = [0u64; 3];
    let mut seen = [false; 3];
    Scanner::new(text)
        .document(|sc| {
            sc.object_with(false, |sc, head| {
                let i = match head.quoted {
                    "\"prompt_tokens\"" => 0,
                    "\"completion_tokens\"" => 1,
                    "\"total_tokens\"" => 2,
                    _ => return sc.err("not a plain count"),
                };
                if std::mem::replace(&mut seen[i], true) {
                    return sc.err("a repeated count");
                }
                counts[i] = sc.plain_u64()?;
                Ok(())
            })
        })
        .ok()?;
    let [prompt_tokens, completion_tokens, total_tokens] = counts;
    // Every field named (no `..`): a field added to `Usage` must be decided on here.
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens,
        prompt_tokens_details: None,
        completion_tokens_details: None,
        cost: None,
        extra: crate::chat::Extra::new(),
    })
}

/// The end of the JSON string literal that starts at `at` in `text` (validated), if one does.
pub(crate) fn string_end(text: &str, at: usize) -> Option<usize> {
    let mut sc = Scanner::new(text);
    sc.i = at;
    if sc.peek() != Some(b'"') {
        return None;
    }
    sc.string().ok()?;
    Some(sc.i)
}

/// A member's key as the scanner found it, before its value is read.
#[derive(Clone, Copy)]
struct Head<'a> {
    /// The key, quotes included.
    quoted: &'a str,
    /// Where the key starts in the text.
    at: usize,
    escaped: bool,
}

impl Head<'_> {
    #[inline(always)]
    fn is(&self, key: &str) -> bool {
        key_is(self.quoted, self.escaped, key)
    }
}

/// Nesting deeper than this is refused (serde_json's limit too), so a hostile text cannot
/// exhaust the stack.
const MAX_DEPTH: u32 = 128;

/// A validating JSON reader over a `str` (so UTF-8 is already known good). It accepts what
/// RFC 8259 accepts, as serde_json does when it skips a value: strings without raw control
/// characters and with valid escapes (a `\u` escape needs four hex digits, as in serde_json's
/// skipping, unpaired surrogates included), numbers of the JSON grammar, `true`, `false`,
/// `null`, nested up to [`MAX_DEPTH`].
pub(crate) struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
    /// A line break was seen between tokens.
    line_breaks: bool,
}

pub(crate) type Scan<T> = Result<T, JsonError>;

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner {
            text,
            b: text.as_bytes(),
            i: 0,
            depth: 0,
            line_breaks: false,
        }
    }

    pub(crate) fn err<T>(&self, what: &'static str) -> Scan<T> {
        Err(JsonError { what, at: self.i })
    }

    /// One value read by `f`, with nothing but whitespace around it.
    pub(crate) fn document<T>(&mut self, f: impl FnOnce(&mut Self) -> Scan<T>) -> Scan<T> {
        self.ws();
        let v = f(self)?;
        self.ws();
        if self.i != self.b.len() {
            return self.err("trailing characters");
        }
        Ok(v)
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(c @ (b' ' | b'\n' | b'\r' | b'\t')) = self.peek() {
            self.line_breaks |= c == b'\n' || c == b'\r';
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

    /// An object; `member` is called at each member with its key and must read the value.
    fn object(&mut self, member: impl FnMut(&mut Self, Head<'a>) -> Scan<()>) -> Scan<()> {
        self.object_with(true, member)
    }

    /// An object whose keys nobody reads: their escapes are checked, not decoded.
    fn skip_object(&mut self) -> Scan<()> {
        self.object_with(false, |sc, _| sc.value())
    }

    fn object_with(
        &mut self,
        keys: bool,
        mut member: impl FnMut(&mut Self, Head<'a>) -> Scan<()>,
    ) -> Scan<()> {
        self.items(
            [b'{', b'}'],
            "expected a JSON object",
            "expected `,` or `}`",
            |sc| {
                if sc.peek() != Some(b'"') {
                    return sc.err("expected a string key");
                }
                let at = sc.i;
                let escaped = sc.string()?;
                let quoted = &sc.text[at..sc.i];
                // A key that is read must decode (an unpaired surrogate does not).
                if keys && escaped && !key_decodes(quoted) {
                    return sc.err("invalid escape in a key");
                }
                sc.ws();
                sc.eat(b':', "expected `:`")?;
                sc.ws();
                member(
                    sc,
                    Head {
                        quoted,
                        at,
                        escaped,
                    },
                )
            },
        )
    }

    /// The span of the member that starts with `head` and whose value, which starts at
    /// `value_at`, was just read.
    fn span(&self, head: Head<'a>, value_at: usize) -> Span {
        Span {
            at: head.at,
            end: self.i,
            key_len: head.quoted.len(),
            value_at: value_at - head.at,
            escaped: head.escaped,
        }
    }

    /// The value of the member that starts with `head`, read; the member's span.
    fn value_span(&mut self, head: Head<'a>) -> Scan<Span> {
        let at = self.i;
        self.value()?;
        Ok(self.span(head, at))
    }

    /// An object, its members' spans pushed onto `spans`.
    fn members(&mut self, spans: &mut Vec<Span>) -> Scan<()> {
        self.object(|sc, head| {
            spans.push(sc.value_span(head)?);
            Ok(())
        })
    }

    /// An array; `element` is called at each element and must read it.
    pub(crate) fn array(&mut self, element: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
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

    /// A value; when it is an array whose first element is an object, the value of that
    /// object's last member named `key` goes into `found`.
    fn value_noting_first_item_member(
        &mut self,
        key: &str,
        found: &mut Option<Raw<'a>>,
    ) -> Scan<()> {
        if self.peek() != Some(b'[') {
            return self.value();
        }
        let mut first = true;
        self.array(|sc| {
            if !std::mem::take(&mut first) || sc.peek() != Some(b'{') {
                return sc.value();
            }
            sc.object_with(false, |sc, head| {
                let at = sc.i;
                sc.value()?;
                if head.is(key) {
                    *found = Some(Raw(&sc.text[at..sc.i]));
                }
                Ok(())
            })
        })
    }

    /// A JSON integer from 0 to `u64::MAX` without a fraction or an exponent; any other value
    /// is an error.
    fn plain_u64(&mut self) -> Scan<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            n = match n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(c - b'0')))
            {
                Some(n) => n,
                None => return self.err("not a u64"),
            };
            self.i += 1;
        }
        let digits = self.i - start;
        let leading_zero = digits > 1 && self.b[start] == b'0';
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return self.err("not a plain integer");
        }
        Ok(n)
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
pub(super) fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash
}

/// A JSON object's text with its `model` set to `model` (first, when it had none) and the
/// members named in `drop` left out; every other member is copied as it was written.
pub(crate) fn with_model(body: &[u8], model: &str, drop: &[&str]) -> Result<Vec<u8>, JsonError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonError {
        what: "not UTF-8 text",
        at: e.valid_up_to(),
    })?;
    let obj = RawObject::parse(text)?;
    let mut out = Vec::with_capacity(body.len() + model.len());
    let mut w = ObjectWriter::begin(&mut out);
    let has_model = obj.members().get("model").is_some();
    if !has_model {
        w.str_field(key!("model"), model);
    }
    let mut wrote = false;
    for m in obj.members().iter() {
        if m.is("model") {
            if !std::mem::replace(&mut wrote, true) {
                w.str_field(key!("model"), model);
            }
        } else if !drop.iter().any(|d| m.is(d)) {
            w.member(&m);
        }
    }
    w.end();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_keeps_order_escapes_and_raw_values() {
        let text = r#"{"id":"x","we\"ird":1.50,"nested":{"a":[1, 2]},"model":"m"}"#;
        let obj = RawObject::parse(text).unwrap();
        let members: Vec<Member<'_>> = obj.members().iter().collect();
        assert!(matches!(members[1].key(), Cow::Owned(_)));
        let mut out = Vec::new();
        let mut w = ObjectWriter::begin(&mut out);
        for m in &members {
            match m.key().as_ref() {
                "id" => w.str_field(key!("id"), "gen-1"),
                _ => {
                    w.member(m);
                }
            }
        }
        w.raw_field(key!("n"), "1");
        w.end();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"gen-1","we\"ird":1.50,"nested":{"a":[1, 2]},"model":"m","n":1}"#
        );
        // The first member, written by key or copied, has no comma before it.
        for first_copied in [false, true] {
            let mut out = Vec::new();
            let mut w = ObjectWriter::begin(&mut out);
            if first_copied {
                w.member(&members[3]);
            }
            w.str_field(key!("id"), "x");
            w.member(&members[3]);
            w.end();
            let expected = if first_copied {
                r#"{"model":"m","id":"x","model":"m"}"#
            } else {
                r#"{"id":"x","model":"m"}"#
            };
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        }
        assert!(RawObject::parse("[1]").is_err());
    }

    /// serde_json's verdict on `text` as one JSON document, skipping every value.
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
        let members: Vec<Member<'_>> = obj.members().iter().collect();
        let got: Vec<(String, &str, &str)> = members
            .iter()
            .map(|m| (m.key().into_owned(), m.value().get(), m.text))
            .collect();
        assert_eq!(
            got,
            [
                ("id".into(), "\"x\"", r#""id" : "x""#),
                ("n".into(), "-1.5e3", r#""n":-1.5e3"#),
                (
                    "ab".into(),
                    r#"[1, {"c":null}]"#,
                    r#""a\u0062":[1, {"c":null}]"#
                ),
                ("s".into(), r#""q\"\\""#, r#""s":"q\"\\""#)
            ]
        );
        assert!(matches!(members[0].key(), Cow::Borrowed(_)));
        assert!(matches!(members[2].key(), Cow::Owned(_)));
        // Keys compare decoded, and whole.
        assert!(members[2].is("ab") && !members[2].is("a\\u0062"));
        let obj = obj.members();
        assert_eq!(obj.get("ab").unwrap().get(), r#"[1, {"c":null}]"#);
        assert!(obj.get("i").is_none() && obj.get("idx").is_none() && obj.get("").is_none());
        // Nested keys are not read, so one with an unpaired surrogate passes (as with serde_json);
        // a top-level one must decode.
        assert!(RawObject::parse(r#"{"a":{"\uD800":1}}"#).is_ok());
        assert!(RawObject::parse(r#"{"\uD800":1}"#).is_err());
    }

    #[test]
    fn chunk_views_split_choices_and_deltas() {
        let mut scratch = ChunkScratch::default();
        let text = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null},{"index":1,"delta":null},{"delta":{}}],"x":1}"#;
        let v = ChunkView::parse(text, &mut scratch).unwrap();
        assert!(
            v.members()
                .get("choices")
                .unwrap()
                .get()
                .starts_with(r#"[{"index":0,"#),
            "kept in place, read into `choices` too"
        );
        let choices: Vec<ChoiceView<'_>> = v.choices().unwrap().collect();
        assert_eq!(choices.len(), 3);
        let delta = choices[0].delta.unwrap();
        assert_eq!(delta.get("content").unwrap().get(), "\"hi\"");
        assert_eq!(delta.iter().count(), 1);
        assert_eq!(choices[0].members.get("logprobs").unwrap().get(), "null");
        assert!(choices[0].members.get("delta").is_none());
        assert!(choices[1].delta.is_none());
        assert_eq!(choices[1].members.get("index").unwrap().get(), "1");
        assert_eq!(choices[2].delta.unwrap().iter().count(), 0);
        assert_eq!(choices[2].members.iter().count(), 0);
        assert_eq!(v.members().get("x").unwrap().get(), "1");
        // The scratch is reused: a second chunk sees only its own members.
        let v = ChunkView::parse(r#"{"choices":[],"usage":{}}"#, &mut scratch).unwrap();
        assert_eq!(v.choices().unwrap().count(), 0);
        assert_eq!(v.members().iter().count(), 2);
        // `choices: null` is no choices and no member; a choice that is not an object, a
        // delta that is not one, or a second `choices` is an error.
        let v = ChunkView::parse(r#"{"choices":null,"usage":{}}"#, &mut scratch).unwrap();
        assert!(v.choices().is_none() && v.members().get("choices").is_none());
        assert_eq!(v.members().iter().count(), 1);
        for bad in [
            r#"{"choices":[1]}"#,
            r#"{"choices":{}}"#,
            r#"{"choices":[{"delta":"x"}]}"#,
            r#"{"choices":[{"delta":{"a":01}}]}"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":null,"choices":[]}"#,
        ] {
            assert!(ChunkView::parse(bad, &mut scratch).is_err(), "{bad}");
        }
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

    #[test]
    fn an_answer_is_split_and_its_first_choices_finish_reason_read_in_one_pass() {
        let reason = |text: &str| -> Option<String> {
            let (obj, found) = parse_answer(text, "choices", "finish_reason").unwrap();
            // The members are those a plain split gives.
            let plain = RawObject::parse(text).unwrap();
            let spans = |o: &RawObject<'_>| {
                o.members()
                    .iter()
                    .map(|m| (m.place(), m.key().into_owned()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(spans(&obj), spans(&plain), "{text}");
            found.map(|r| r.get().to_owned())
        };
        let choice = r#"{"id":"x","choices":[{"index":0,"finish_reason":"stop"}],"usage":null}"#;
        assert_eq!(reason(choice), Some(r#""stop""#.to_owned()));
        // A nested member of that name is not the choice's own; the last of its own counts.
        let nested = r#"{"choices":[{"message":{"finish_reason":"a"},"finish_reason":null,
            "finish_reason" : "length"},{"finish_reason":"b"}]}"#;
        assert_eq!(reason(nested), Some(r#""length""#.to_owned()));
        // Only the first element, only an object, only the first `choices`.
        assert_eq!(reason(r#"{"choices":[{},{"finish_reason":"b"}]}"#), None);
        assert_eq!(reason(r#"{"choices":[1,{"finish_reason":"b"}]}"#), None);
        assert_eq!(reason(r#"{"choices":{"finish_reason":"b"}}"#), None);
        assert_eq!(
            reason(r#"{"choices":[],"choices":[{"finish_reason":"b"}]}"#),
            None
        );
        assert_eq!(reason(r#"{"finish_reason":"b","choices":[]}"#), None);
        // An escaped key is compared decoded.
        let escaped = r#"{"ch\u006fices":[{"finish_\u0072eason":"x"}]}"#;
        assert_eq!(reason(escaped), Some(r#""x""#.to_owned()));
        // Still validated: a bad value deep in the first choice fails the whole answer.
        assert!(parse_answer(r#"{"choices":[{"a":[tru]}]}"#, "choices", "x").is_err());
        // A key that does not decode inside a choice is skipped, as in any nested object.
        assert_eq!(
            reason(r#"{"choices":[{"\uD800":1,"finish_reason":"stop"}]}"#),
            Some(r#""stop""#.to_owned())
        );
    }

    #[test]
    fn a_string_value_is_decoded_and_anything_else_is_none() {
        let value = |text: &str| string_value(Raw(text));
        assert_eq!(value(r#""stop""#).as_deref(), Some("stop"));
        assert_eq!(value(r#""""#).as_deref(), Some(""));
        assert_eq!(value(r#""a\"b\u00e9""#).as_deref(), Some("a\"bé"));
        assert_eq!(value("null"), None);
        assert_eq!(value("12"), None);
        assert_eq!(value(r#"{"a":"b"}"#), None);
    }

    #[test]
    fn plain_counts_are_read_without_serde_and_anything_else_is_left_to_it() {
        let plain =
            r#"{"prompt_tokens":14,"completion_tokens":0, "total_tokens" : 18446744073709551615}"#;
        let u = plain_usage(plain).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (14, 0, u64::MAX)
        );
        assert_eq!(Some(u), serde_json::from_str(plain).ok());
        assert_eq!(plain_usage("{}"), Some(Usage::default()));
        for other in [
            r#"{"prompt_tokens":18446744073709551616}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":1.0}"#,
            r#"{"prompt_tokens":1e2}"#,
            r#"{"prompt_tokens":01}"#,
            r#"{"prompt_tokens":null}"#,
            r#"{"prompt_tokens":"1"}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_\u0074okens":1}"#,
            r#"{"prompt_tokens":1,"cost":0.5}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1}}"#,
            r#"[]"#,
        ] {
            assert_eq!(plain_usage(other), None, "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_scanner_agrees_with_serde_json_on_any_text(
            parts in proptest::collection::vec(
                proptest::sample::select(
                    &[
                        "{", "}", "[", "]", ":", ",", "\"", "\"k\"", "\\", "\\u00e9", "\\uD800",
                        "\\n", "0", "12", "-", ".", "e", "+", "true", "null", " ", "\n", "\u{1}",
                        "é", "abcdefghij",
                    ][..],
                ),
                0..40,
            ),
        ) {
            let text = parts.concat();
            proptest::prop_assert!(agrees(&text).is_ok(), "{}", agrees(&text).unwrap_err());
            // And wrapped as a member's value, where most of the grammar is reached.
            let wrapped = format!("{{\"k\":{text}}}");
            proptest::prop_assert!(agrees(&wrapped).is_ok(), "{}", agrees(&wrapped).unwrap_err());
        }

        #[test]
        fn whatever_counts_are_read_without_serde_serde_reads_the_same(
            members in proptest::collection::vec(
                (
                    proptest::sample::select(
                        &["prompt_tokens", "completion_tokens", "total_tokens",
                          "prompt_\\u0074okens", "cost", "x"][..],
                    ),
                    proptest::sample::select(
                        &["0", "7", "00", "-3", "1.5", "2e3", "18446744073709551615",
                          "18446744073709551616", "99999999999999999999999", "null", "\"4\"",
                          "true", "{}", "[1]"][..],
                    ),
                ),
                0..5,
            ),
            spaced in proptest::bool::ANY,
        ) {
            let sep = if spaced { " , " } else { "," };
            let body = members
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect::<Vec<_>>()
                .join(sep);
            let text = format!("{{{body}}}");
            if let Some(ours) = plain_usage(&text) {
                let theirs = serde_json::from_str::<Usage>(&text);
                proptest::prop_assert!(theirs.is_ok(), "{text}: {theirs:?}");
                proptest::prop_assert_eq!(ours, theirs.unwrap(), "{}", text);
            }
        }
    }
}
