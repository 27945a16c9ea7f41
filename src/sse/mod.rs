//! Server-sent events: an incremental decoder for upstream streams and the writer for ours.
//!
//! [`SseDecoder`] follows the WHATWG event-stream rules and gives the same events however the
//! bytes are split: lines end in CR, LF or CRLF (a CR/LF pair split across two reads counts
//! once), `:` lines are comments, one space after the colon is dropped, several `data:` lines
//! join with `\n`, a blank line dispatches, a leading BOM is skipped, and bytes are decoded as
//! UTF-8 only after the line is complete (so a character split across reads survives). One
//! departure from the browser algorithm: [`SseDecoder::finish`] dispatches a last event that
//! had no blank line after it, because Gemini and some proxies end streams that way.
//!
//! Memory is bounded whatever the upstream sends: a line longer than the line limit is cut
//! there, and an event whose `data:` lines together pass the event limit is not kept: the
//! decoder stops there and says so ([`SseDecoder::too_large`]), and its reader ends the stream
//! with an error. The limits are [`DEFAULT_MAX_LINE_BYTES`] and [`DEFAULT_MAX_EVENT_BYTES`]
//! unless set with [`SseDecoder::with_limits`].
//!
//! ```
//! use modelgate::sse::SseDecoder;
//!
//! let mut d = SseDecoder::new();
//! d.feed(b"data: {\"a\":1}\r");
//! d.feed(b"\n\r\n: comment\ndata: x\ndata: y");
//! d.finish();
//! let events: Vec<_> = std::iter::from_fn(|| d.next_event()).collect();
//! assert_eq!(events[0].data, "{\"a\":1}");
//! assert_eq!(events[1].data, "x\ny");
//! ```

pub mod event_stream;

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// One decoded event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, if any.
    pub event: Option<String>,
    /// The joined `data:` lines.
    pub data: String,
    /// The last event id seen, if any.
    pub id: Option<String>,
    /// A `retry:` value in milliseconds, if this event carried one.
    pub retry: Option<u64>,
}

/// Incremental SSE decoder. Feed it bytes as they arrive; take events with
/// [`next_event`](SseDecoder::next_event); call [`finish`](SseDecoder::finish) at the end.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    bom_seen: usize,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    ready: VecDeque<SseEvent>,
    max_line: usize,
    max_event: usize,
    /// Set when an event passed `max_event`: nothing more is decoded.
    too_large: bool,
    /// A handled event's data buffer, cleared, for the next event (see
    /// [`recycle`](SseDecoder::recycle)).
    spare: String,
}

/// The largest data buffer [`SseDecoder::recycle`] keeps: one huge event does not pin its
/// memory for the rest of the stream.
const MAX_SPARE_BYTES: usize = 64 << 10;

/// Longest line kept by default (a line past it is cut there): 16 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// Largest event (its `data:` lines joined) by default: 16 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 << 20;

impl SseDecoder {
    /// A decoder with the default limits.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that cuts lines longer than `max_line_bytes`, with the default event limit.
    pub fn with_max_line_bytes(max_line_bytes: usize) -> Self {
        Self::with_limits(max_line_bytes, DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that cuts lines longer than `max_line_bytes` and stops at an event larger
    /// than `max_event_bytes` (see [`too_large`](Self::too_large)).
    pub fn with_limits(max_line_bytes: usize, max_event_bytes: usize) -> Self {
        SseDecoder {
            max_line: max_line_bytes.max(1),
            max_event: max_event_bytes.max(1),
            ..Default::default()
        }
    }

    /// The event limit when an event went past it: the decoder then decodes nothing more
    /// (events complete before it are still given), and the stream should end as an error.
    pub fn too_large(&self) -> Option<usize> {
        self.too_large.then_some(self.max_event)
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.too_large {
            return;
        }
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        while !self.started {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            if b == BOM[self.bom_seen] {
                self.bom_seen += 1;
                bytes = rest;
                if self.bom_seen == BOM.len() {
                    self.started = true;
                }
            } else {
                // Not a BOM after all: what was held back is ordinary line content.
                self.line.extend_from_slice(&BOM[..self.bom_seen]);
                self.started = true;
            }
        }
        if bytes.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some((&b'\n', rest)) = bytes.split_first() {
                bytes = rest;
            }
        }
        while let Some(pos) = memchr::memchr2(b'\r', b'\n', bytes) {
            if self.too_large {
                return;
            }
            let is_cr = bytes[pos] == b'\r';
            if self.line.is_empty() {
                self.process_line(&bytes[..pos]);
            } else {
                self.push_line_bytes(&bytes[..pos]);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line);
                self.line = line;
                self.line.clear();
            }
            bytes = &bytes[pos + 1..];
            if is_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_bytes(bytes);
    }

    /// Ends the stream: a pending line is processed and a pending event without a blank line
    /// after it is dispatched.
    pub fn finish(&mut self) {
        if self.too_large {
            return;
        }
        if !self.started {
            self.line
                .extend_from_slice(&b"\xEF\xBB\xBF"[..self.bom_seen]);
            self.started = true;
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line);
        }
        self.after_cr = false;
        self.dispatch();
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Gives back an event that has been handled: its data buffer is kept for the next event,
    /// which then needs no allocation.
    pub fn recycle(&mut self, ev: SseEvent) {
        let mut data = ev.data;
        if data.capacity() <= MAX_SPARE_BYTES && data.capacity() > self.spare.capacity() {
            data.clear();
            self.spare = data;
        }
    }

    /// True when a line or an event is buffered but not complete.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        let room = self.max_line.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn process_line(&mut self, line: &[u8]) {
        let line = &line[..line.len().min(self.max_line)];
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                // Valid UTF-8 is the rule; the lossy path only runs for the exception.
                let text = match std::str::from_utf8(value) {
                    Ok(text) => std::borrow::Cow::Borrowed(text),
                    Err(_) => String::from_utf8_lossy(value),
                };
                if self.data.len() + usize::from(self.has_data) + text.len() > self.max_event {
                    // Not kept: the event is over its limit, and so is the stream.
                    self.too_large = true;
                    self.data = String::new();
                    self.has_data = false;
                    self.line = Vec::new();
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                self.data.push_str(&text);
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if !self.has_data {
            self.event = None;
            self.retry = None;
            return;
        }
        self.has_data = false;
        self.ready.push_back(SseEvent {
            event: self.event.take(),
            data: std::mem::replace(&mut self.data, std::mem::take(&mut self.spare)),
            id: self.id.clone(),
            retry: self.retry.take(),
        });
    }
}

/// Decodes a whole stream given in pieces (for tests and fuzzing).
pub fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<SseEvent> {
    decode_chunks_with(SseDecoder::new(), chunks).0
}

/// Decodes a whole stream given in pieces with `decoder` (its limits): the events, and
/// [`SseDecoder::too_large`] at the end (for tests and fuzzing).
pub fn decode_chunks_with<'a>(
    mut decoder: SseDecoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<SseEvent>, Option<usize>) {
    let mut out = Vec::new();
    for c in chunks {
        decoder.feed(c);
        out.extend(std::iter::from_fn(|| decoder.next_event()));
    }
    decoder.finish();
    out.extend(std::iter::from_fn(|| decoder.next_event()));
    (out, decoder.too_large())
}

/// Appends `data: <compact JSON>\n\n`.
pub fn write_json_event<T: Serialize + ?Sized>(out: &mut BytesMut, value: &T) {
    out.put_slice(b"data: ");
    let mut w = std::mem::take(out).writer();
    // Serialising our own types into memory cannot fail; compact JSON never holds a raw newline.
    let _ = serde_json::to_writer(&mut w, value);
    *out = w.into_inner();
    out.put_slice(b"\n\n");
}

/// The stream's end marker.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The keep-alive comment.
pub const KEEPALIVE: &[u8] = b": keepalive\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recycled_buffers_serve_the_next_events_and_change_nothing() {
        let stream = b"data: first\n\ndata: second, longer\n\ndata: x\ndata: y\n\n";
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(5) {
            d.feed(piece);
            while let Some(ev) = d.next_event() {
                got.push(ev.data.clone());
                let (ptr, cap) = (ev.data.as_ptr(), ev.data.capacity());
                d.recycle(ev);
                assert_eq!((d.spare.as_ptr(), d.spare.capacity()), (ptr, cap));
                assert!(d.spare.is_empty());
            }
        }
        assert_eq!(got, ["first", "second, longer", "x\ny"]);
        // A huge buffer is not kept.
        d.recycle(SseEvent {
            data: String::with_capacity(MAX_SPARE_BYTES + 1),
            ..Default::default()
        });
        assert!(d.spare.capacity() <= MAX_SPARE_BYTES);
        assert_eq!(decode_chunks([&stream[..]]).len(), 3);
    }

    fn one(bytes: &[u8]) -> Vec<SseEvent> {
        decode_chunks([bytes])
    }

    #[test]
    fn line_endings_and_fields() {
        let ev = one(b"event: a\r\ndata: 1\r\ndata:2\r\nid: 7\r\nretry: 30\r\n\r\n: c\rdata: z\r\rdata: last");
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].event.as_deref(), Some("a"));
        assert_eq!(ev[0].data, "1\n2");
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[0].retry, Some(30));
        assert_eq!(ev[1].data, "z");
        assert_eq!(ev[1].event, None);
        assert_eq!(ev[1].id.as_deref(), Some("7"));
        assert_eq!(ev[2].data, "last");
    }

    #[test]
    fn empty_read_between_cr_and_lf_is_not_a_blank_line() {
        let ev = decode_chunks([&b"data: a\r"[..], b"", b"\ndata: b\r\n\r\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "a\nb");
    }

    #[test]
    fn empty_data_and_no_data_events() {
        let ev = one(b"event: ping\n\ndata\n\ndata:\n\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "");
        assert_eq!(
            ev[0].event, None,
            "event name of a data-less event must not leak"
        );
    }

    #[test]
    fn bom_and_split_utf8() {
        let text = "\u{feff}data: héllo ✓\n\n".as_bytes();
        for i in 0..text.len() {
            let ev = decode_chunks([&text[..i], &text[i..]]);
            assert_eq!(ev.len(), 1, "split at {i}");
            assert_eq!(ev[0].data, "héllo ✓");
        }
    }

    #[test]
    fn an_event_over_its_limit_stops_the_decoder() {
        let mut d = SseDecoder::with_limits(64, 20);
        d.feed(b"data: small\n\ndata: 0123456789\n");
        assert_eq!(d.too_large(), None);
        d.feed(b"data: 0123456789\ndata: more\n\ndata: after\n\n");
        assert_eq!(d.next_event().unwrap().data, "small");
        assert_eq!(
            d.next_event(),
            None,
            "neither the big event nor any after it"
        );
        assert_eq!(d.too_large(), Some(20));
        d.finish();
        assert_eq!(d.next_event(), None);
        // Exactly at the limit is fine: "0123456789\n012345678" is 20 bytes.
        let mut d = SseDecoder::with_limits(64, 20);
        d.feed(b"data: 0123456789\ndata: 012345678\n\n");
        assert_eq!(d.next_event().unwrap().data.len(), 20);
        assert_eq!(d.too_large(), None);
    }

    #[test]
    fn line_limit_bounds_memory() {
        let mut d = SseDecoder::with_max_line_bytes(8);
        d.feed(b"data: 0123456789abcdef");
        d.feed(b"0123456789\n\n");
        assert_eq!(d.next_event().unwrap().data, "01");
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(&b"data: x"[..]), Just(&b"\r"[..]), Just(&b"\n"[..]), Just(&b"\r\n"[..]),
                    Just(&b": c"[..]), Just(&b"event: e"[..]), Just(&b"data:"[..]), Just(&b"\xEF\xBB\xBF"[..]),
                    Just("é".as_bytes()), Just(&b"id: 1"[..]), Just(&b"retry: 5"[..]),
                ],
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let input: Vec<u8> = parts.concat();
            let whole = one(&input);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&input[last..c]); last = c; }
            pieces.push(&input[last..]);
            prop_assert_eq!(decode_chunks(pieces.iter().copied()), whole);
            // With small limits: the same events and the same stop, however chunked.
            let small = |pieces: &[&[u8]]| {
                decode_chunks_with(SseDecoder::with_limits(8, 12), pieces.iter().copied())
            };
            let (events, stopped) = small(&pieces);
            prop_assert!(events.iter().all(|e| e.data.len() <= 12));
            prop_assert_eq!((events, stopped), small(&[&input[..]]));
        }
    }
}
