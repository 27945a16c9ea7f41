//! Anthropic Messages answers and streams in the OpenAI shape.
//!
//! - `message_start` gives the upstream id and model; the stream opens with
//!   `{"role":"assistant","content":""}` at the first block (or the end);
//! - text deltas become `content`, thinking deltas `reasoning_content`; `input_json_delta`
//!   fragments are forwarded as `arguments` fragments (empty ones dropped, `"{}"` for a tool
//!   that got none), under a dense tool index (never Anthropic's block index);
//! - thinking blocks (text and signature) and redacted thinking are carried to the client on
//!   the first tool call as `extra_content.anthropic.thinking`, which the request translator
//!   accepts back, so multi-turn tool use with thinking works;
//! - usage: `prompt_tokens = input + cache_creation + cache_read`, `completion_tokens = output`
//!   (`message_delta` is cumulative and overwrites), `cached_tokens` and `cache_write_tokens`
//!   (with `cache_creation_token_details`, the writes by lifetime, when Anthropic sends them);
//! - stop reasons: `end_turn`, `stop_sequence`, `pause_turn` to `stop`; `max_tokens` and
//!   `model_context_window_exceeded` to `length`; `tool_use` to `tool_calls`; `refusal` to
//!   `content_filter`; the provider's value kept as `native_finish_reason`;
//! - `ping` and unknown events are ignored; `event: error` becomes the one error event.

use std::collections::HashMap;

use bytes::BytesMut;
use serde_json::{json, Value};

use super::openai::OpenAiStream;
use super::translate::{self, emit, ChunkHead};
use super::StreamContext;
use crate::chat::{Delta, ReasoningDetail, Usage};
use crate::provider::anthropic::{error_status, finish_reason, Counts};
use crate::sse::SseEvent;
use crate::Error;

/// The text literal of an event shaped exactly as Anthropic sends text,
/// `{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"…"}}`,
/// validated as a JSON string; `None` for anything else (the other paths take it).
fn raw_text_delta(data: &str) -> Option<&str> {
    let rest = data.strip_prefix(r#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let literal = rest[digits..]
        .strip_prefix(r#","delta":{"type":"text_delta","text":"#)?
        .strip_suffix("}}")?;
    if !literal.starts_with('"') {
        return None;
    }
    let raw: &serde_json::value::RawValue = serde_json::from_str(literal).ok()?;
    Some(raw.get())
}

/// `{"type":"content_block_delta","index":N,"delta":{"type":…,"text"|"thinking":…}}`, borrowed.
#[derive(serde::Deserialize)]
struct FastDelta<'a> {
    index: u64,
    #[serde(borrow)]
    delta: FastDeltaBody<'a>,
}

#[derive(serde::Deserialize)]
struct FastDeltaBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug)]
enum Block {
    Text,
    /// `detail`: its position among the turn's `reasoning_details`.
    Thinking {
        text: String,
        signature: String,
        detail: u32,
    },
    Tool {
        dense: u32,
        got_args: bool,
    },
    Other,
}

/// The most thinking text (and signatures) one turn keeps to hand back on its first tool
/// call: far above any thinking budget.
const MAX_KEPT_THINKING: usize = 16 << 20;

/// Per-stream state for an Anthropic upstream: Messages events in, OpenAI chunks out (the
/// rules are in the `stream_normalize` module source, `anthropic.rs`).
#[derive(Debug)]
pub struct AnthropicStream {
    pub(super) stage: OpenAiStream,
    head: ChunkHead,
    started: bool,
    blocks: HashMap<u64, Block>,
    tools: u32,
    /// Thinking blocks of this turn, handed to the client on the first tool call.
    thinking: Vec<Value>,
    /// The `reasoning_details` given out so far.
    details: u32,
    /// Bytes of thinking kept (in `thinking` and in open blocks): bounded by
    /// [`MAX_KEPT_THINKING`].
    kept: usize,
    counts: Counts,
    stop_reason: Option<String>,
}

impl AnthropicStream {
    /// A new stream for this request.
    pub fn new(ctx: StreamContext) -> Self {
        AnthropicStream {
            stage: OpenAiStream::new(ctx),
            head: ChunkHead {
                created: translate::now_unix(),
                ..Default::default()
            },
            started: false,
            blocks: HashMap::new(),
            tools: 0,
            thinking: Vec::new(),
            details: 0,
            kept: 0,
            counts: Counts::default(),
            stop_reason: None,
        }
    }

    /// Counts `bytes` more of thinking kept; past [`MAX_KEPT_THINKING`] the stream ends in an
    /// error (memory stays bounded whatever the upstream sends).
    fn keep(&mut self, bytes: usize, out: &mut BytesMut) {
        self.kept = self.kept.saturating_add(bytes);
        if self.kept > MAX_KEPT_THINKING && !self.is_finished() {
            let err = Error::bad_gateway(
                format!(
                    "{}: the provider's thinking passed the limit of {MAX_KEPT_THINKING} bytes a turn",
                    self.stage.provider()
                ),
                crate::error::ErrorSource::Upstream,
                crate::error::Retry::Never,
            );
            self.stage.fail(err, out);
        }
    }

    /// True once `[DONE]` or the error event has been written.
    pub fn is_finished(&self) -> bool {
        self.stage.is_finished()
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<&Usage> {
        self.stage.usage()
    }

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.stage.error()
    }

    /// The last finish reason seen (OpenAI's names).
    pub fn finish_reason(&self) -> Option<&str> {
        self.stage.finish_reason()
    }

    /// The upstream body ended: without `message_stop` that is a truncated answer.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        self.stage.on_end(out);
    }

    /// The upstream body failed.
    pub fn on_error(&mut self, err: Error, out: &mut BytesMut) {
        self.stage.on_error(err, out);
    }

    /// Handles one upstream event.
    pub fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.is_finished() {
            return;
        }
        let data = ev.data.trim();
        if data.is_empty() {
            return;
        }
        // The bulk of a stream: text and thinking deltas, read into borrowed fields and written
        // straight out. Anything else (or anything odd) takes the general path below.
        if let Some(literal) = raw_text_delta(data) {
            if literal != "\"\"" {
                self.start(out);
                self.stage
                    .emit_delta_raw("content", literal, self.head.created, out);
            }
            return;
        }
        if data.starts_with(r#"{"type":"content_block_delta""#) && self.on_fast_delta(data, out) {
            return;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return self.stage.malformed(e, data, out),
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let msg = &v["message"];
                self.head.id = format!("chatcmpl-{}", msg["id"].as_str().unwrap_or_default());
                self.head.model = msg["model"].as_str().unwrap_or_default().to_owned();
                self.counts.update(&msg["usage"]);
                // The role chunk waits for the first block: a stream that fails right after
                // `message_start` (Anthropic's overloaded_error) has sent nothing yet, so the
                // fallback layer can still move to another provider unnoticed.
            }
            "content_block_start" => {
                self.start(out);
                let index = v["index"].as_u64().unwrap_or(0);
                let block = &v["content_block"];
                let b = match block["type"].as_str().unwrap_or_default() {
                    "text" => {
                        if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            self.send(translate::text(t.to_owned()), out);
                        }
                        Block::Text
                    }
                    "thinking" => {
                        let text = block["thinking"].as_str().unwrap_or_default().to_owned();
                        let detail = self.next_detail();
                        if !text.is_empty() {
                            self.send_reasoning(
                                translate::reasoning(
                                    text.clone(),
                                    ReasoningDetail::ANTHROPIC,
                                    detail,
                                ),
                                out,
                            );
                        }
                        Block::Thinking {
                            text,
                            signature: block["signature"].as_str().unwrap_or_default().to_owned(),
                            detail,
                        }
                    }
                    "redacted_thinking" => {
                        self.thinking.push(block.clone());
                        self.keep(block.to_string().len(), out);
                        let detail = self.next_detail();
                        let data = block["data"].as_str().unwrap_or_default().to_owned();
                        self.send_reasoning(
                            translate::reasoning_detail(ReasoningDetail::encrypted(
                                ReasoningDetail::ANTHROPIC,
                                detail,
                                data,
                            )),
                            out,
                        );
                        Block::Other
                    }
                    "tool_use" => {
                        let dense = self.tools;
                        self.tools += 1;
                        let carried = (dense == 0 && !self.thinking.is_empty())
                            .then(|| json!({"anthropic": {"thinking": self.thinking}}));
                        let delta = translate::tool_call(
                            dense,
                            Some(block["id"].as_str().unwrap_or_default().to_owned()),
                            Some(block["name"].as_str().unwrap_or_default().to_owned()),
                            String::new(),
                            carried,
                        );
                        self.send(delta, out);
                        Block::Tool {
                            dense,
                            got_args: false,
                        }
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, b);
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let delta = &v["delta"];
                let piece = |k: &str| delta[k].as_str().unwrap_or_default().to_owned();
                match delta["type"].as_str().unwrap_or_default() {
                    "text_delta" => {
                        let t = piece("text");
                        if !t.is_empty() {
                            self.send(translate::text(t), out);
                        }
                    }
                    "thinking_delta" => {
                        let t = piece("thinking");
                        let mut at = None;
                        if let Some(Block::Thinking { text, detail, .. }) =
                            self.blocks.get_mut(&index)
                        {
                            text.push_str(&t);
                            at = Some(*detail);
                            self.keep(t.len(), out);
                        }
                        if !t.is_empty() {
                            let detail = match at {
                                Some(d) => d,
                                None => self.next_detail(),
                            };
                            self.send_reasoning(
                                translate::reasoning(t, ReasoningDetail::ANTHROPIC, detail),
                                out,
                            );
                        }
                    }
                    "signature_delta" => {
                        if let Some(Block::Thinking { signature, .. }) = self.blocks.get_mut(&index)
                        {
                            let s = piece("signature");
                            signature.push_str(&s);
                            self.keep(s.len(), out);
                        }
                    }
                    "input_json_delta" => {
                        let json = piece("partial_json");
                        if let Some(Block::Tool { dense, got_args }) = self.blocks.get_mut(&index) {
                            if !json.is_empty() {
                                *got_args = true;
                                let d = translate::tool_call(*dense, None, None, json, None);
                                self.send(d, out);
                            }
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = v["index"].as_u64().unwrap_or(0);
                match self.blocks.remove(&index) {
                    Some(Block::Tool {
                        dense,
                        got_args: false,
                    }) => {
                        let d = translate::tool_call(dense, None, None, "{}".to_owned(), None);
                        self.send(d, out);
                    }
                    Some(Block::Thinking {
                        text,
                        signature,
                        detail,
                    }) => {
                        if !signature.is_empty() {
                            // The signature ends the block's detail, as OpenRouter sends it.
                            let d = ReasoningDetail::text(
                                ReasoningDetail::ANTHROPIC,
                                detail,
                                None,
                                Some(signature.clone()),
                            );
                            self.send_reasoning(translate::reasoning_detail(d), out);
                        }
                        self.thinking.push(
                            json!({"type": "thinking", "thinking": text, "signature": signature}),
                        );
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(r.to_owned());
                }
                self.counts.update(&v["usage"]);
            }
            "message_stop" => {
                self.start(out);
                let native = self
                    .stop_reason
                    .clone()
                    .unwrap_or_else(|| "end_turn".into());
                let head = self.head.clone();
                emit(
                    &mut self.stage,
                    &head,
                    0,
                    Default::default(),
                    Some((finish_reason(&native), &native)),
                    out,
                );
                self.stage.set_usage(self.counts.usage());
                self.stage.finish_ok(out);
            }
            "error" => {
                let kind = v["error"]["type"].as_str().unwrap_or("api_error");
                let err = crate::provider::upstream_error(
                    error_status(kind),
                    &http::HeaderMap::new(),
                    data.as_bytes(),
                    self.stage.provider(),
                    self.stage.secrets(),
                );
                self.stage.fail(err, out);
            }
            // `ping` and event types added later.
            _ => {}
        }
    }

    /// A `content_block_delta` with text or thinking; `false` when it is another kind of delta
    /// or does not parse as one (the general path then handles it, errors included).
    fn on_fast_delta(&mut self, data: &str, out: &mut BytesMut) -> bool {
        let Ok(ev) = serde_json::from_str::<FastDelta<'_>>(data) else {
            return false;
        };
        match (&*ev.delta.kind, ev.delta.text, ev.delta.thinking) {
            ("text_delta", Some(t), _) => {
                if !t.is_empty() && !self.is_finished() {
                    self.start(out);
                    self.stage
                        .emit_delta_str("content", &t, self.head.created, out);
                }
            }
            ("thinking_delta", _, Some(t)) => {
                let Some(Block::Thinking { text, detail, .. }) = self.blocks.get_mut(&ev.index)
                else {
                    // Not in a thinking block: the general path decides.
                    return false;
                };
                text.push_str(&t);
                let detail = *detail;
                self.keep(t.len(), out);
                if !t.is_empty() && !self.is_finished() && self.stage.shows_reasoning() {
                    self.start(out);
                    self.stage.emit_reasoning_str(
                        &t,
                        ReasoningDetail::ANTHROPIC,
                        detail,
                        self.head.created,
                        out,
                    );
                }
            }
            _ => return false,
        }
        true
    }

    /// The index of the turn's next reasoning detail.
    fn next_detail(&mut self) -> u32 {
        self.details += 1;
        self.details - 1
    }

    /// Sends a reasoning delta, unless the client asked for the reasoning to be left out.
    fn send_reasoning(&mut self, delta: Delta, out: &mut BytesMut) {
        if self.stage.shows_reasoning() {
            self.send(delta, out);
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            let role = crate::chat::Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Default::default()
            };
            emit(&mut self.stage, &self.head, 0, role, None, out);
        }
    }

    fn send(&mut self, delta: crate::chat::Delta, out: &mut BytesMut) {
        if self.is_finished() {
            return;
        }
        self.start(out);
        emit(&mut self.stage, &self.head, 0, delta, None, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_text_delta_shape_takes_the_raw_path() {
        let ok = raw_text_delta;
        assert_eq!(
            ok(
                r#"{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":"a\"b\u00e9"}}"#
            ),
            Some(r#""a\"b\u00e9""#)
        );
        for other in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}} "#,
            r#"{"type":"content_block_delta","index":x,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\q"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a","b":"c"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"a"}}"#,
        ] {
            assert_eq!(ok(other), None, "{other}");
        }
    }

    fn ctx() -> StreamContext {
        StreamContext {
            id: crate::GenerationId::new(),
            model: "m".into(),
            provider: "p".into(),
            include_usage: true,
            exclude_reasoning: false,
            created: 0,
            pricing: None,
            secrets: crate::error::Secrets::none(),
        }
    }

    #[test]
    fn raw_and_general_paths_write_the_same_chunks() {
        let run = |events: &[&str]| {
            let mut s = AnthropicStream::new(ctx());
            let mut out = BytesMut::new();
            for e in events {
                let ev = SseEvent {
                    data: (*e).to_owned(),
                    ..Default::default()
                };
                s.on_event(&ev, &mut out);
            }
            let text = String::from_utf8(out.to_vec()).unwrap();
            text.split("\n\n")
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let mut v: Value = serde_json::from_str(&e["data: ".len()..]).unwrap();
                    // Neither is the path's: the id is new, the clock may tick in between.
                    v.as_object_mut().unwrap().remove("id");
                    v.as_object_mut().unwrap().remove("created");
                    v
                })
                .collect::<Vec<_>>()
        };
        let start = r#"{"type":"message_start","message":{"id":"msg_1","model":"c","usage":{"input_tokens":3,"output_tokens":0}}}"#;
        // The raw path (exact shape) and the general path (a key order it does not match).
        let raw = run(&[
            start,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"h\u00e9\n"}}"#,
        ]);
        let general = run(&[
            start,
            r#"{"index":0,"type":"content_block_delta","delta":{"text":"h\u00e9\n","type":"text_delta"}}"#,
        ]);
        assert_eq!(raw.len(), 2);
        assert_eq!(raw, general);
        assert_eq!(raw[1]["choices"][0]["delta"]["content"], "hé\n");
    }

    #[test]
    fn thinking_kept_for_the_tool_call_is_bounded() {
        let mut s = AnthropicStream::new(ctx());
        let mut out = BytesMut::new();
        let event = |data: String| SseEvent {
            data,
            ..Default::default()
        };
        s.on_event(&event(r#"{"type":"message_start","message":{"id":"msg_1","model":"c","usage":{"input_tokens":3,"output_tokens":0}}}"#.into()), &mut out);
        s.on_event(&event(r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#.into()), &mut out);
        let piece = "t".repeat(1 << 20);
        for _ in 0..=MAX_KEPT_THINKING >> 20 {
            let delta = format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"thinking_delta","thinking":"{piece}"}}}}"#
            );
            s.on_event(&event(delta), &mut out);
        }
        assert!(s.is_finished());
        let err = s.error().expect("the stream ended in an error");
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
        assert!(
            err.message().contains("thinking passed the limit"),
            "{}",
            err.message()
        );
        assert!(s.kept <= MAX_KEPT_THINKING + (1 << 20));
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.ends_with("}\n\n") && text.rsplit("\n\n").nth(1).unwrap().contains("\"error\"")
        );
    }
}
