//! The OpenAI dialect: per-stream state that turns upstream chunks into the gateway's chunks.

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use http::StatusCode;

use crate::chat::{
    ChatChunk, ChatCompletion, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta, Usage,
    UsageField,
};
use crate::error::{ErrorSource, Retry};
use crate::facts::GenerationId;
use crate::json::{
    self as raw, key, write_str, ChoiceView, ChunkScratch, ChunkView, Member, Members, ObjectWriter,
};
use crate::sse::{self, SseEvent};
use crate::Error;

use super::StreamContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    Done,
    Failed,
}

#[derive(Debug, Default)]
struct ChoiceState {
    index: u32,
    role_sent: bool,
    /// Upstream tool-call indexes in order of first sight; the position is the dense index.
    tools: Vec<u32>,
}

/// The members of a chunk the hand-written chunk head (in `emit_delta_raw`) writes, named one
/// by one: a field added to `ChatChunk` or `ChunkChoice` fails to compile here until the head
/// writes it (or says why a text chunk never carries it).
const _: fn(ChatChunk, ChunkChoice) = |chunk, choice| {
    let ChatChunk {
        id: _,       // the gateway's
        object: _,   // `chat.completion.chunk`
        created: _,  // the stream's
        model: _,    // the public model
        provider: _, // the serving provider
        choices: _,  // one: the text's
        usage: _,    // absent: only the last chunk has it (OpenRouter's chunks)
        extra: _,    // none on a text chunk the gateway writes
    } = chunk;
    let ChunkChoice {
        index: _,                // 0
        delta: _,                // the text
        logprobs: _,             // `null`
        finish_reason: _,        // `null`
        native_finish_reason: _, // `null` until the last chunk
        extra: _,                // none
    } = choice;
};

/// Per-stream state for an OpenAI-dialect upstream. Pure: bytes in, bytes out.
///
/// - `id`, `model` and `provider` are the gateway's on every chunk;
/// - `role` goes out once per choice; tool-call `id`, `type` and `name` once per call, and the
///   tool-call `index` is dense from 0;
/// - the upstream usage is kept and goes out as the last chunk (`choices: []`) before `[DONE]`
///   (when [`StreamContext::include_usage`]); no other chunk has a `usage` member;
/// - `[DONE]` ends the stream; an upstream error event, a malformed event, a body failure or an
///   end without `[DONE]` becomes exactly one error event, and nothing follows it.
///
/// Most chunks of a stream differ from the one before only in their text: once one such chunk
/// is read in full, the ones with its shape are translated by swapping the strings (see
/// `Shape`), with the same output byte for byte.
#[derive(Debug)]
pub struct OpenAiStream {
    ctx: StreamContext,
    state: State,
    choices: Vec<ChoiceState>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    error: Option<Error>,
    scratch: Vec<u8>,
    /// What chunks are read into, reused.
    view: ChunkScratch,
    /// The last chunk read in full that later ones may be translated like.
    shape: Shape,
    /// Whether chunks may be translated like a shape (off only to test that it changes
    /// nothing).
    shapes: bool,
    json: Stamp,
    /// The bytes before and after choice 0's delta of a translated chunk (built once).
    delta_head: Vec<u8>,
    delta_tail: Vec<u8>,
    literal: Vec<u8>,
}

/// Why a chunk ends the stream.
enum Failure {
    /// The provider sent an error.
    Upstream(Error),
    /// The chunk is not what the dialect allows (why).
    Malformed(String),
}

/// A chunk read in full, kept to translate later chunks that differ from it only inside the
/// string values copied as they are (a delta's text, an `obfuscation` pad). Such a chunk reads
/// the same, member for member (a JSON string delimits itself), and a chunk is a shape only
/// when reading it changed no state of the stream (no role to send, no new choice, no finish
/// reason, usage, error or tool call) and its translation used none that could change. So its
/// translation is the shape's with those strings swapped, as the full path would write it.
#[derive(Debug, Default)]
struct Shape {
    /// The chunk's text (empty: no shape yet; a chunk is never empty).
    input: Vec<u8>,
    /// Its translation: the whole event.
    output: Vec<u8>,
    /// The copied strings: where each is in `input` and in `output`, in output order.
    holes: Vec<(Range<usize>, Range<usize>)>,
    /// The holes in input order (indexes into `holes`).
    by_input: Vec<usize>,
    /// While a chunk is read in full: whether it can still become the shape.
    recording: bool,
    /// Its holes so far (`holes` stays the shape's until it is replaced).
    pending: Vec<(Range<usize>, Range<usize>)>,
    /// Matching: where each hole's string is in the new chunk.
    found: Vec<Range<usize>>,
}

impl Shape {
    /// Translates `data` like the shape, if it has its shape.
    fn translate(&mut self, data: &str, out: &mut BytesMut) -> bool {
        if self.input.is_empty() {
            return false;
        }
        let d = data.as_bytes();
        self.found.clear();
        self.found.resize(self.holes.len(), 0..0);
        let (mut i, mut j) = (0, 0);
        for &h in &self.by_input {
            let hole = &self.holes[h].0;
            let fixed = &self.input[i..hole.start];
            if d.get(j..j + fixed.len()) != Some(fixed) {
                return false;
            }
            j += fixed.len();
            let Some(end) = raw::string_end(data, j) else {
                return false;
            };
            self.found[h] = j..end;
            (i, j) = (hole.end, end);
        }
        if d.get(j..) != Some(&self.input[i..]) {
            return false;
        }
        let mut k = 0;
        out.reserve((self.output.len() + d.len()).saturating_sub(self.input.len()));
        for ((_, hole), found) in self.holes.iter().zip(&self.found) {
            out.put_slice(&self.output[k..hole.start]);
            out.put_slice(&d[found.clone()]);
            k = hole.end;
        }
        out.put_slice(&self.output[k..]);
        true
    }

    /// A chunk is about to be read in full; it may become the shape if `eligible`.
    fn record(&mut self, eligible: bool) {
        self.recording = eligible;
        self.pending.clear();
    }

    /// The chunk being read changed some state: it cannot be a shape.
    fn ineligible(&mut self) {
        self.recording = false;
    }

    /// Member `m` was copied as it is, at `at` in the translation.
    fn copied(&mut self, m: &Member<'_>, at: usize) {
        if !self.recording {
            return;
        }
        if m.value().get().starts_with('"') {
            let (place, value_at) = m.place();
            let len = place.len() - value_at;
            let input = place.start + value_at..place.end;
            self.pending
                .push((input, at + value_at..at + value_at + len));
        }
    }

    /// The chunk `data`, translated as `output`, was read in full.
    fn recorded(&mut self, data: &str, output: &[u8]) {
        if !std::mem::take(&mut self.recording) {
            return;
        }
        self.input.clear();
        self.input.extend_from_slice(data.as_bytes());
        self.output.clear();
        self.output.extend_from_slice(output);
        std::mem::swap(&mut self.holes, &mut self.pending);
        self.by_input.clear();
        self.by_input.extend(0..self.holes.len());
        let holes = &self.holes;
        self.by_input.sort_unstable_by_key(|&h| holes[h].0.start);
    }
}

/// The stream's `id`, `model` and `provider`, JSON-quoted once for every chunk.
#[derive(Debug)]
struct Stamp {
    id: String,
    model: String,
    provider: String,
}

impl Stamp {
    fn new(ctx: &StreamContext) -> Self {
        let quote = |s: &str| {
            let mut v = Vec::with_capacity(s.len() + 2);
            write_str(&mut v, s);
            String::from_utf8(v).unwrap_or_default()
        };
        Stamp {
            id: quote(ctx.id.as_str()),
            model: quote(&ctx.model),
            provider: quote(&ctx.provider),
        }
    }
}

/// Tool-call identity once per call and a dense index from 0, whatever the provider sent.
fn fix_tool_calls(state: &mut ChoiceState, calls: &mut [ToolCallDelta], id: &GenerationId) {
    for (i, call) in calls.iter_mut().enumerate() {
        let upstream = call.index.unwrap_or(i as u32);
        let dense = match state.tools.iter().position(|&t| t == upstream) {
            Some(d) => {
                call.id = None;
                call.kind = None;
                if let Some(f) = &mut call.function {
                    f.name = None;
                }
                d
            }
            None => {
                state.tools.push(upstream);
                if call.kind.is_none() {
                    call.kind = Some("function".to_owned());
                }
                if call.id.is_none() {
                    call.id = Some(format!("call_{}_{}", id.as_str(), state.tools.len() - 1));
                }
                state.tools.len() - 1
            }
        };
        call.index = Some(dense as u32);
    }
}

impl OpenAiStream {
    /// A new stream for this request.
    pub fn new(ctx: StreamContext) -> Self {
        OpenAiStream {
            json: Stamp::new(&ctx),
            ctx,
            state: State::Streaming,
            choices: Vec::new(),
            usage: None,
            finish_reason: None,
            error: None,
            // Sized for a typical chunk, so that the first ones do not grow them step by step.
            scratch: Vec::with_capacity(512),
            view: ChunkScratch::with_capacity(8),
            shape: Shape::default(),
            shapes: true,
            delta_head: Vec::new(),
            delta_tail: Vec::new(),
            literal: Vec::new(),
        }
    }

    /// True once `[DONE]` or the error event has been written.
    pub fn is_finished(&self) -> bool {
        self.state != State::Streaming
    }

    /// The usage the provider reported, if any (what metering reads).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The last finish reason seen.
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    /// Replaces the usage reported so far (translated dialects report it their own way).
    pub(crate) fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(self.priced(usage));
    }

    /// `usage` with the gateway's `cost` when the stream is priced.
    fn priced(&self, usage: Usage) -> Usage {
        match self.ctx.pricing {
            Some(p) => p.price(usage),
            None => usage,
        }
    }

    /// The provider's name, for error messages.
    /// Whether reasoning goes to the client (it did not ask for it to be left out).
    pub(crate) fn shows_reasoning(&self) -> bool {
        !self.ctx.exclude_reasoning
    }

    pub(crate) fn provider(&self) -> &std::sync::Arc<str> {
        &self.ctx.provider
    }

    /// The provider's secrets, scrubbed out of errors.
    pub(crate) fn secrets(&self) -> &crate::error::Secrets {
        &self.ctx.secrets
    }

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// See [`Translator::read_every_chunk_in_full`](super::Translator::read_every_chunk_in_full).
    #[doc(hidden)]
    pub fn read_every_chunk_in_full(&mut self) {
        self.shapes = false;
    }

    /// Handles one upstream event, appending what the client should see to `out`.
    pub fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.is_finished() {
            return;
        }
        let data = ev.data.trim();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.finish_ok(out);
            return;
        }
        self.on_json(data, out);
    }

    pub(crate) fn malformed(
        &mut self,
        why: impl std::fmt::Display,
        data: &str,
        out: &mut BytesMut,
    ) {
        let err = Error::bad_gateway(
            format!(
                "{}: the provider sent a malformed stream event ({why})",
                self.ctx.provider
            ),
            ErrorSource::Upstream,
            Retry::Retryable,
        )
        .with_provider(self.ctx.provider.clone())
        .with_raw(Some(crate::error::scrub(data, &self.ctx.secrets)));
        self.fail(err, out);
    }

    /// A translated chunk whose only content is one string field of choice 0's delta
    /// (`content` or `reasoning_content`): written directly, the same JSON `on_json` would
    /// write for it, without building and re-reading JSON. Most translated events are these.
    pub(crate) fn emit_delta_str(
        &mut self,
        field: &'static str,
        value: &str,
        created: u64,
        out: &mut BytesMut,
    ) {
        self.with_literal(value, |this, text| {
            this.emit_delta_raw(field, text, created, out)
        });
    }

    /// Calls `f` with `value` as a JSON string literal, written in the stream's reused buffer.
    fn with_literal(&mut self, value: &str, f: impl FnOnce(&mut Self, &str)) {
        let mut literal = std::mem::take(&mut self.literal);
        literal.clear();
        write_str(&mut literal, value);
        if let Ok(text) = std::str::from_utf8(&literal) {
            f(self, text);
        }
        self.literal = literal;
    }

    /// A translated reasoning fragment of choice 0, written directly as
    /// `translate::reasoning` would have it written: `reasoning_content`, `reasoning` and one
    /// `reasoning.text` detail of `format` at `index`.
    pub(crate) fn emit_reasoning_str(
        &mut self,
        value: &str,
        format: &str,
        index: u32,
        created: u64,
        out: &mut BytesMut,
    ) {
        self.with_literal(value, |this, text| {
            this.emit_members(
                |out| {
                    for field in ["reasoning_content", "reasoning"] {
                        out.put_u8(b'"');
                        out.put_slice(field.as_bytes());
                        out.put_slice(b"\":");
                        out.put_slice(text.as_bytes());
                        out.put_u8(b',');
                    }
                    out.put_slice(b"\"reasoning_details\":[{\"type\":\"reasoning.text\",\"text\":");
                    out.put_slice(text.as_bytes());
                    out.put_slice(b",\"format\":\"");
                    out.put_slice(format.as_bytes());
                    out.put_slice(b"\",\"index\":");
                    out.put_slice(itoa::Buffer::new().format(index).as_bytes());
                    out.put_slice(b"}]");
                },
                created,
                out,
            );
        });
    }

    /// As [`emit_delta_str`](Self::emit_delta_str), with the value already a JSON string
    /// literal (quoted, escaped and validated by the caller).
    pub(crate) fn emit_delta_raw(
        &mut self,
        field: &'static str,
        literal: &str,
        created: u64,
        out: &mut BytesMut,
    ) {
        self.emit_members(
            |out| {
                out.put_u8(b'"');
                out.put_slice(field.as_bytes());
                out.put_slice(b"\":");
                out.put_slice(literal.as_bytes());
            },
            created,
            out,
        );
    }

    /// A chunk of choice 0 whose delta's members (after `role`, once) `members` writes.
    fn emit_members(
        &mut self,
        members: impl FnOnce(&mut BytesMut),
        created: u64,
        out: &mut BytesMut,
    ) {
        if self.is_finished() {
            return;
        }
        if self.ctx.created == 0 {
            self.ctx.created = created;
        }
        let pos = match self.choices.iter().position(|c| c.index == 0) {
            Some(p) => p,
            None => {
                self.choices.push(ChoiceState::default());
                self.choices.len() - 1
            }
        };
        if self.delta_head.is_empty() {
            // Everything up to choice 0's delta, and everything after it: fixed for the stream.
            // The members written here are those of `ChatChunk` and `ChunkChoice` (see
            // the constant that names them, at the top of this file).
            let mut h = Vec::with_capacity(160);
            h.extend_from_slice(b"data: {\"id\":");
            h.extend_from_slice(self.json.id.as_bytes());
            h.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            h.extend_from_slice(itoa::Buffer::new().format(self.ctx.created).as_bytes());
            h.extend_from_slice(b",\"model\":");
            h.extend_from_slice(self.json.model.as_bytes());
            h.extend_from_slice(b",\"provider\":");
            h.extend_from_slice(self.json.provider.as_bytes());
            h.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
            self.delta_head = h;
            let mut t = Vec::with_capacity(64);
            t.extend_from_slice(
                b"},\"logprobs\":null,\"finish_reason\":null,\"native_finish_reason\":null}]",
            );
            t.extend_from_slice(b"}\n\n");
            self.delta_tail = t;
        }
        out.reserve(self.delta_head.len() + self.delta_tail.len() + 96);
        out.put_slice(&self.delta_head);
        let state = &mut self.choices[pos];
        if !state.role_sent {
            state.role_sent = true;
            out.put_slice(b"\"role\":\"assistant\",");
        }
        members(out);
        out.put_slice(&self.delta_tail);
    }

    /// One upstream chunk: the fields the gateway owns are rewritten, the rest is copied as
    /// the provider wrote it (see `raw`).
    pub(crate) fn on_json(&mut self, data: &str, out: &mut BytesMut) {
        if self.shape.translate(data, out) {
            return;
        }
        let mut view = std::mem::take(&mut self.view);
        self.on_json_with(data, &mut view, out);
        self.view = view;
    }

    fn on_json_with(&mut self, data: &str, scratch: &mut ChunkScratch, out: &mut BytesMut) {
        let obj = match ChunkView::parse(data, scratch) {
            Ok(o) => o,
            Err(e) => return self.malformed(e, data, out),
        };
        // A chunk whose translation depends on its text alone may become the shape: one
        // choice already seen, and (checked below as it is written) no state it changes.
        self.shape.record(
            self.shapes
                && self.ctx.created != 0
                && !obj.has_line_breaks()
                && obj.choices().is_some_and(|c| c.len() == 1),
        );
        let Some(choices) = obj.choices().filter(|c| c.len() > 0) else {
            // The usage chunk (re-sent at the end when asked for), an error, or an
            // annotation-only chunk such as Azure's leading prompt-filter chunk: nothing else
            // in it is for the client.
            for m in obj.members().iter() {
                if let Err(failure) = self.read_member(&m, data) {
                    return self.fail_with(failure, data, out);
                }
            }
            return;
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(b"data: ");
        let mut failure = None;
        let mut w = ObjectWriter::begin(&mut buf);
        let mut wrote_model = false;
        let mut choices = Some(choices);
        for m in obj.members().iter() {
            match m.key().as_ref() {
                "id" => w.raw_field(key!("id"), &self.json.id),
                "object" => w.raw_field(key!("object"), "\"chat.completion.chunk\""),
                // An integer, always (typed clients declare it so): the upstream's when it is
                // one, else now.
                "created" => {
                    if self.ctx.created == 0 {
                        if let Ok(c) = m.value().get().parse::<u64>() {
                            self.ctx.created = c;
                        }
                    }
                    let created = self.created();
                    w.raw_field(key!("created"), itoa::Buffer::new().format(created))
                }
                "model" => {
                    w.raw_field(key!("model"), &self.json.model);
                    w.raw_field(key!("provider"), &self.json.provider);
                    wrote_model = true;
                }
                "provider" => {}
                "usage" | "error" => {
                    if m.value().get() != "null" {
                        self.shape.ineligible();
                    }
                    if let Err(e) = self.read_member(&m, data) {
                        failure = Some(e);
                        break;
                    }
                }
                // Only one (a repeated one is refused when read).
                "choices" => {
                    let Some(choices) = choices.take() else {
                        continue;
                    };
                    let list = w.field(key!("choices"));
                    list.push(b'[');
                    for (i, choice) in choices.enumerate() {
                        if i > 0 {
                            list.push(b',');
                        }
                        if let Err(e) = self.write_choice(&choice, i, list) {
                            failure = Some(Failure::Malformed(e));
                            break;
                        }
                    }
                    list.push(b']');
                    if failure.is_some() {
                        break;
                    }
                }
                _ => {
                    let at = w.member(&m);
                    self.shape.copied(&m, at);
                }
            }
        }
        if !wrote_model {
            w.raw_field(key!("model"), &self.json.model);
            w.raw_field(key!("provider"), &self.json.provider);
        }
        w.end();
        // A pretty-printed event (a multi-line `data:`) has line breaks between its tokens,
        // and copied members keep them; one would end the client's `data:` line. Outside
        // strings (which cannot hold a raw one) they are whitespace, so they become spaces.
        if obj.has_line_breaks() {
            for b in &mut buf[b"data: ".len()..] {
                if let b'\n' | b'\r' = *b {
                    *b = b' ';
                }
            }
        }
        buf.extend_from_slice(b"\n\n");
        match failure {
            None => {
                out.put_slice(&buf);
                self.shape.recorded(data, &buf);
            }
            Some(failure) => self.fail_with(failure, data, out),
        }
        self.scratch = buf;
    }

    /// Reads a member that is not written as it is: an upstream `error` ends the stream, a
    /// `usage` is kept (priced) for the end. Both are dropped from the chunk.
    fn read_member(&mut self, m: &Member<'_>, data: &str) -> Result<(), Failure> {
        match m.key().as_ref() {
            "error" if m.value().get() != "null" => {
                let status = serde_json::from_str::<serde_json::Value>(m.value().get())
                    .ok()
                    .and_then(|e| e.get("code").and_then(|c| c.as_u64()))
                    .and_then(|c| u16::try_from(c).ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                Err(Failure::Upstream(crate::provider::upstream_error(
                    status,
                    &http::HeaderMap::new(),
                    data.as_bytes(),
                    &self.ctx.provider,
                    &self.ctx.secrets,
                )))
            }
            "usage" if m.value().get() != "null" => {
                match serde_json::from_str::<Usage>(m.value().get()) {
                    Ok(u) => {
                        self.usage = Some(self.priced(u));
                        Ok(())
                    }
                    Err(e) => Err(Failure::Malformed(format!("usage: {e}"))),
                }
            }
            _ => Ok(()),
        }
    }

    fn fail_with(&mut self, failure: Failure, data: &str, out: &mut BytesMut) {
        match failure {
            Failure::Upstream(err) => self.fail(err, out),
            Failure::Malformed(why) => self.malformed(why, data, out),
        }
    }

    fn created(&mut self) -> u64 {
        if self.ctx.created == 0 {
            self.ctx.created = crate::facts::unix_now();
        }
        self.ctx.created
    }

    fn write_choice(
        &mut self,
        choice: &ChoiceView<'_>,
        position: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let index = match choice.members.get("index") {
            Some(r) => r
                .get()
                .parse::<u32>()
                .map_err(|_| format!("choice index `{}` is not a number", r.get()))?,
            None => position as u32,
        };
        let pos = match self.choices.iter().position(|c| c.index == index) {
            Some(p) => p,
            None => {
                self.shape.ineligible();
                self.choices.push(ChoiceState {
                    index,
                    ..Default::default()
                });
                self.choices.len() - 1
            }
        };
        let mut w = ObjectWriter::begin(out);
        w.raw_field(key!("index"), itoa::Buffer::new().format(u64::from(index)));
        self.write_delta(pos, choice.delta, w.field(key!("delta")))?;
        // The reason recorded is the first choice's (index 0), as the client's JSON reader
        // sees it: the last `finish_reason` of the object when it repeats. A chunk with any
        // reason is never a shape to copy.
        let mut reason = None;
        for m in choice.members.iter() {
            match m.key().as_ref() {
                "index" => {}
                "finish_reason" => {
                    let parsed = serde_json::from_str::<Option<String>>(m.value().get());
                    if let Ok(Some(_)) = parsed {
                        self.shape.ineligible();
                    }
                    reason = Some(parsed);
                    w.member(&m);
                }
                _ => {
                    let at = w.member(&m);
                    self.shape.copied(&m, at);
                }
            }
        }
        w.end();
        if let (0, Some(Ok(Some(reason)))) = (index, reason) {
            self.finish_reason = Some(reason);
        }
        Ok(())
    }

    fn write_delta(
        &mut self,
        pos: usize,
        delta: Option<Members<'_>>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let id = &self.ctx.id;
        let state = &mut self.choices[pos];
        let shape = &mut self.shape;
        let mut w = ObjectWriter::begin(out);
        if !state.role_sent {
            state.role_sent = true;
            shape.ineligible();
            match delta
                .and_then(|d| d.get("role"))
                .filter(|r| r.get() != "null")
            {
                Some(role) => w.raw_field(key!("role"), role.get()),
                None => w.raw_field(key!("role"), "\"assistant\""),
            }
        }
        for m in delta.iter().flat_map(|d| d.iter()) {
            match m.key().as_ref() {
                "role" => {}
                "tool_calls" if m.value().get() != "null" => {
                    let mut calls: Vec<ToolCallDelta> = serde_json::from_str(m.value().get())
                        .map_err(|e| format!("tool_calls: {e}"))?;
                    fix_tool_calls(state, &mut calls, id);
                    w.json_field(key!("tool_calls"), &calls);
                    shape.ineligible();
                }
                _ => {
                    let at = w.member(&m);
                    shape.copied(&m, at);
                }
            }
        }
        w.end();
        Ok(())
    }

    /// The upstream body ended. Without `[DONE]` that is an error, never a quiet end.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        if self.is_finished() {
            return;
        }
        let err = Error::bad_gateway(
            format!(
                "{}: the provider's stream ended before [DONE] (truncated answer)",
                self.ctx.provider
            ),
            ErrorSource::Transport,
            Retry::Retryable,
        )
        .with_provider(self.ctx.provider.clone());
        self.fail(err, out);
    }

    /// The upstream body failed (reset, idle timeout).
    pub fn on_error(&mut self, err: Error, out: &mut BytesMut) {
        if !self.is_finished() {
            self.fail(err, out);
        }
    }

    pub(crate) fn finish_ok(&mut self, out: &mut BytesMut) {
        if self.ctx.include_usage {
            if let Some(usage) = &self.usage {
                let chunk = ChatChunk {
                    id: self.ctx.id.as_str().to_owned(),
                    created: self.ctx.created,
                    model: self.ctx.model.to_string(),
                    provider: Some(self.ctx.provider.to_string()),
                    usage: UsageField::Present(usage.clone()),
                    ..Default::default()
                };
                sse::write_json_event(out, &chunk);
            }
        }
        out.put_slice(sse::DONE);
        self.state = State::Done;
    }

    pub(crate) fn fail(&mut self, err: Error, out: &mut BytesMut) {
        // Whatever made it (an upstream error event, a cut, a translator's complaint), nothing
        // of the provider's secrets goes on.
        let mut err = err.redact(&self.ctx.secrets);
        if err.provider().is_none() {
            err = err.with_provider(self.ctx.provider.clone());
        }
        let created = self.created();
        out.put_slice(&err.to_sse_chunk(self.ctx.id.as_str(), &self.ctx.model, created));
        self.error = Some(err);
        self.state = State::Failed;
    }

    /// Writes a whole (non-streamed) completion as a stream: for a provider that ignored
    /// `stream: true` and answered with JSON.
    pub fn replay_completion(&mut self, completion: ChatCompletion, out: &mut BytesMut) {
        self.ctx.created = completion.created;
        self.usage = completion.usage.clone().map(|u| self.priced(u));
        for choice in completion.choices {
            let msg = choice.message;
            let tool_calls = msg.tool_calls.map(|calls| {
                calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| ToolCallDelta {
                        index: Some(i as u32),
                        id: Some(c.id),
                        kind: Some(c.kind),
                        function: Some(FunctionCallDelta {
                            name: Some(c.function.name),
                            arguments: Some(c.function.arguments),
                        }),
                        extra: c.extra,
                    })
                    .collect()
            });
            let content = ChunkChoice {
                index: choice.index,
                delta: Delta {
                    role: Some(msg.role),
                    content: msg.content,
                    reasoning_content: msg.reasoning_content,
                    reasoning: msg.reasoning,
                    reasoning_details: msg.reasoning_details,
                    tool_calls,
                    extra: msg.extra,
                },
                ..Default::default()
            };
            let finish = ChunkChoice {
                index: choice.index,
                finish_reason: choice.finish_reason,
                native_finish_reason: choice.native_finish_reason,
                ..Default::default()
            };
            for c in [content, finish] {
                let chunk = ChatChunk {
                    created: completion.created,
                    choices: vec![c],
                    ..Default::default()
                };
                match serde_json::to_string(&chunk) {
                    Ok(json) => self.on_json(&json, out),
                    Err(e) => {
                        return self.fail(
                            Error::internal(format!("cannot serialise a chunk: {e}")),
                            out,
                        )
                    }
                }
            }
        }
        self.finish_ok(out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::facts::GenerationId;

    fn ctx(include_usage: bool) -> StreamContext {
        StreamContext {
            id: GenerationId::new(),
            model: Arc::from("public/model"),
            provider: Arc::from("prov"),
            include_usage,
            exclude_reasoning: false,
            created: 0,
            pricing: None,
            secrets: crate::error::Secrets::none(),
        }
    }

    fn run(s: &mut OpenAiStream, events: &[&str]) -> Vec<serde_json::Value> {
        let mut out = BytesMut::new();
        for e in events {
            s.on_event(
                &SseEvent {
                    data: (*e).to_owned(),
                    ..Default::default()
                },
                &mut out,
            );
        }
        s.on_end(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        text.split("\n\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let d = l.strip_prefix("data: ").unwrap();
                if d == "[DONE]" {
                    serde_json::Value::String("[DONE]".into())
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    /// The stream's output for `events`, with chunks translated like a shape or each read in
    /// full.
    fn translate(ctx: &StreamContext, events: &[String], shapes: bool) -> (Vec<u8>, usize) {
        let mut s = OpenAiStream::new(ctx.clone());
        if !shapes {
            s.read_every_chunk_in_full();
        }
        let mut out = BytesMut::new();
        let mut like_shape = 0;
        for e in events {
            let ready = !s.shape.input.is_empty();
            let before = s.shape.input.clone();
            s.on_event(
                &SseEvent {
                    data: e.clone(),
                    ..Default::default()
                },
                &mut out,
            );
            // Counted when the shape did not change: the chunk went the short way.
            like_shape += usize::from(ready && s.shape.input == before && !out.is_empty());
        }
        s.on_end(&mut out);
        (out.to_vec(), like_shape)
    }

    #[test]
    fn chunks_of_a_known_shape_are_translated_like_it_and_as_if_read_in_full() {
        let ctx = ctx(true);
        let chunk = |delta: &str, tail: &str| {
            format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":1767225600,"model":"m","system_fingerprint":"fp","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}]{tail}}}"#
            )
        };
        let events = vec![
            chunk(r#"{"role":"assistant","content":""}"#, ""),
            chunk(r#"{"content":"Hello"}"#, r#","obfuscation":"ab""#),
            chunk(
                r#"{"content":" w\"or\\ld é"}"#,
                r#","obfuscation":"abcdef""#,
            ),
            chunk(r#"{"content":""}"#, r#","obfuscation":"""#),
            // Not a string where the shape has one, a string cut short: the long way.
            chunk(r#"{"content":null}"#, r#","obfuscation":"x""#),
            chunk(r#"{"content":"a"}"#, r#","obfuscation":"x""#),
            chunk(r#"{"content":"b"}"#, r#","obfuscation":7"#),
            chunk(r#"{"content":"c"}"#, r#","obfuscation":"x""#),
            format!("{}\"x\"}}", &chunk(r#"{"content":"d"}"#, "")[..150]),
        ];
        let (full, none) = translate(&ctx, &events, false);
        let (short, some) = translate(&ctx, &events, true);
        assert_eq!(none, 0);
        assert!(some >= 3, "{some} chunks went the short way");
        assert_eq!(
            String::from_utf8(short).unwrap(),
            String::from_utf8(full).unwrap()
        );
    }

    proptest::proptest! {
        /// Streams that mostly repeat one shape with other strings (where the short way is
        /// taken), with other shapes, states and faults mixed in.
        #[test]
        fn translating_like_a_shape_changes_nothing(
            base in (0..4usize, 0..4usize, 0..4usize, 0..5usize),
            chunks in proptest::collection::vec(
                (0..6usize, (0..4usize, 0..4usize, 0..4usize, 0..5usize), 0..9usize, 0..9usize,
                 0..9usize, 0..3usize),
                1..16,
            ),
            include_usage in proptest::bool::ANY,
            created in proptest::prop_oneof![proptest::strategy::Just(0u64), proptest::strategy::Just(1_767_225_600)],
        ) {
            const STRINGS: [&str; 9] = [
                r#""""#, r#""a""#, r#""\"q\"""#, r#""\\n\n""#, r#""é✓""#, r#""\u00e9\uD83D\uDE00""#,
                r#""a long piece of text, long enough for eight-byte steps""#, "null", "12",
            ];
            let events: Vec<String> = chunks
                .iter()
                .map(|&(deviate, other, s1, s2, s3, finish)| {
                    // Mostly the base shape: only the strings change.
                    let (head, delta, index, tail) = if deviate == 0 { other } else { base };
                    // A string where the shape has one, mostly.
                    let pick = |i: usize| STRINGS[if deviate == 1 { i } else { i % 7 }];
                    let head = [
                        r#""id":"c","object":"chat.completion.chunk","created":1767225600,"model":"m""#.to_owned(),
                        format!(r#""id":"c","created":1767225600,"model":"m","system_fingerprint":{}"#, pick(s1)),
                        format!(r#""model":"m","service_tier":{}"#, pick(s1)),
                        format!(r#""id":"c","created":1767225600,"error":null,"x":{}"#, pick(s1)),
                    ][head]
                        .clone();
                    let delta = [
                        format!(r#"{{"content":{}}}"#, pick(s2)),
                        format!(r#"{{"role":"assistant","content":{}}}"#, pick(s2)),
                        format!(r#"{{"reasoning_content":{},"content":{}}}"#, pick(s2), pick(s3)),
                        r#"{"tool_calls":[{"index":0,"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]}"#.to_owned(),
                    ][delta]
                        .clone();
                    let finish = if deviate == 2 { [r#""stop""#, "null", "7"][finish] } else { "null" };
                    let choices = match index {
                        2 => "[]".to_owned(),
                        // A string before the delta (written after it).
                        3 => format!(
                            r#"[{{"index":0,"x":{},"delta":{delta},"finish_reason":{finish}}}]"#,
                            pick(s3)
                        ),
                        _ => format!(
                            r#"[{{"index":{index},"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]"#
                        ),
                    };
                    let tail = [
                        String::new(),
                        r#","usage":null"#.to_owned(),
                        format!(r#","obfuscation":{}"#, pick(s3)),
                        if deviate == 3 {
                            r#","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#.to_owned()
                        } else {
                            String::new()
                        },
                        format!(r#","obfuscation":{},"z":[1,{{"k":{}}}]"#, pick(s1), pick(s2)),
                    ][tail]
                        .clone();
                    let text = format!(r#"{{{head},"choices":{choices}{tail}}}"#);
                    // A chunk cut short (at a character boundary), now and then.
                    if deviate == 4 && s1 == 0 {
                        let cut = (0..=text.len() / 2).rev().find(|&i| text.is_char_boundary(i));
                        text[..cut.unwrap_or(0)].to_owned()
                    } else {
                        text
                    }
                })
                .collect();
            let ctx = StreamContext { include_usage, created, ..ctx(false) };
            let (full, _) = translate(&ctx, &events, false);
            let (short, _) = translate(&ctx, &events, true);
            proptest::prop_assert_eq!(
                String::from_utf8(short).unwrap(),
                String::from_utf8(full).unwrap()
            );
        }
    }

    #[test]
    fn pretty_printed_events_become_one_line_events() {
        // Multi-line `data:` (valid SSE) joins into JSON with newlines between its tokens.
        let event = "{\n \"id\" :\r\n \"x\",\n \"choices\": [ {\"index\":0,\n\
                     \"delta\": {\"content\" :\n\"a\\nb\"},\n \"logprobs\": {\"content\": [1,\n 2]},\n\
                     \"finish_reason\"\n:\nnull} ],\n \"x\": {\"y\":\r[]}\n}";
        let mut s = OpenAiStream::new(ctx(false));
        let mut out = BytesMut::new();
        s.on_event(
            &SseEvent {
                data: event.to_owned(),
                ..Default::default()
            },
            &mut out,
        );
        let text = std::str::from_utf8(&out).unwrap();
        let data = text
            .strip_suffix("\n\n")
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        assert!(!data.contains(['\n', '\r']), "{text:?}");
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["choices"][0]["delta"]["content"], "a\nb");
        assert_eq!(v["choices"][0]["logprobs"]["content"][1], 2);
        assert_eq!(v["x"]["y"], serde_json::json!([]));
    }

    #[test]
    fn role_and_tool_identity_once_and_dense_index() {
        let mut s = OpenAiStream::new(ctx(false));
        let out = run(
            &mut s,
            &[
                r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":3,"id":"c1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
                r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":3,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#,
                r#"{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":5,"id":"c2","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
                "[DONE]",
            ],
        );
        assert_eq!(out.len(), 4);
        assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(out[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert!(out[1]["choices"][0]["delta"].get("role").is_none());
        let second = &out[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(second["index"], 0);
        assert!(second.get("id").is_none() && second.get("type").is_none());
        assert!(second["function"].get("name").is_none());
        assert_eq!(out[2]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(
            out[2]["choices"][0]["delta"]["tool_calls"][0]["type"],
            "function"
        );
        assert_eq!(out[3], "[DONE]");
        assert_eq!(out[0]["model"], "public/model");
        assert_eq!(out[0]["provider"], "prov");
        assert!(out[0]["id"].as_str().unwrap().starts_with("gen-"));
        assert_eq!(s.finish_reason(), Some("tool_calls"));
    }

    #[test]
    fn created_is_always_an_integer() {
        let events = [
            r#"{"id":"x","created":1767225600,"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"id":"x","created":1767225E600,"choices":[{"index":0,"delta":{"content":"b"}}]}"#,
            "[DONE]",
        ];
        let mut s = OpenAiStream::new(ctx(false));
        let out = run(&mut s, &events);
        assert_eq!(out[0]["created"], 1767225600u64);
        assert_eq!(
            out[1]["created"], 1767225600u64,
            "the first chunk's time, not 1E606"
        );
        let mut s = OpenAiStream::new(ctx(false));
        let out = run(&mut s, &events[1..]);
        assert!(
            out[0]["created"].as_u64().unwrap() > 1_700_000_000,
            "now, when upstream's is not an integer"
        );
    }

    #[test]
    fn usage_honoured_both_ways() {
        let events = [
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#,
            r#"{"id":"x","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
            "[DONE]",
        ];
        let mut s = OpenAiStream::new(ctx(false));
        let out = run(&mut s, &events);
        assert_eq!(out.len(), 2);
        assert!(out[0].get("usage").is_none());
        assert_eq!(
            s.usage().unwrap().total_tokens,
            3,
            "usage is kept for metering"
        );
        let mut s = OpenAiStream::new(ctx(true));
        let out = run(&mut s, &events);
        assert_eq!(out.len(), 3);
        assert!(out[0]["usage"].is_null());
        assert_eq!(out[1]["choices"], serde_json::json!([]));
        assert_eq!(out[1]["usage"]["total_tokens"], 3);
    }

    #[test]
    fn the_finish_reason_kept_is_the_first_choices_as_the_client_reads_it() {
        let mut s = OpenAiStream::new(ctx(false));
        run(
            &mut s,
            &[
                r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
                r#"{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                r#"{"id":"x","choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#,
                "[DONE]",
            ],
        );
        assert_eq!(s.finish_reason(), Some("stop"), "choice 1 finished last");

        // A repeated key: the client's reader keeps the last one, `null` here.
        let mut s = OpenAiStream::new(ctx(false));
        run(
            &mut s,
            &[
                r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop","finish_reason":null}]}"#,
                "[DONE]",
            ],
        );
        assert_eq!(s.finish_reason(), None);
        let mut s = OpenAiStream::new(ctx(false));
        run(
            &mut s,
            &[
                r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null,"finish_reason":"length"}]}"#,
                "[DONE]",
            ],
        );
        assert_eq!(s.finish_reason(), Some("length"));
    }

    #[test]
    fn truncation_and_errors_end_with_one_error_event() {
        let mut s = OpenAiStream::new(ctx(true));
        let out = run(
            &mut s,
            &[r#"{"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}]}"#],
        );
        assert_eq!(out.len(), 2);
        assert!(out[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[DONE]"));

        let mut s = OpenAiStream::new(ctx(true));
        let out = run(
            &mut s,
            &[
                r#"{"error":{"message":"overloaded","type":"server_error","code":503}}"#,
                r#"{"id":"x","choices":[{"index":0,"delta":{"content":"late"}}]}"#,
                "[DONE]",
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["error"]["code"], 503);
        assert_eq!(out[0]["error"]["metadata"]["provider_name"], "prov");

        let mut s = OpenAiStream::new(ctx(true));
        let out = run(&mut s, &["{not json"]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["error"]["code"], 502);
    }

    #[test]
    fn azure_leading_empty_chunk_is_dropped() {
        let mut s = OpenAiStream::new(ctx(false));
        let out = run(
            &mut s,
            &[
                r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
                r#"{"id":"x","choices":[{"index":0,"delta":{"content":"ok"}}]}"#,
                "[DONE]",
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
    }
}
