//! Bedrock ConverseStream answers in the OpenAI shape: each Converse event is re-worded as the
//! Anthropic event it stands for and handed to an [`AnthropicStream`], which writes the
//! chunks (see `provider::bedrock` for why the two APIs map one to one).
//!
//! - `messageStart` is `message_start`; `contentBlockStart` with a `toolUse` is a `tool_use`
//!   block's start; a delta for a block not yet started starts it (Converse starts text and
//!   reasoning blocks with their first delta): a `text` block, a `thinking` block for
//!   `reasoningContent.text` and `.signature`, a `redacted_thinking` block for
//!   `.redactedContent`;
//! - text deltas are written as Anthropic's own `text_delta` events, so they take the
//!   Anthropic translator's fast path; `toolUse.input` fragments are `input_json_delta`s;
//! - `messageStop` holds the stop reason until `metadata` brings the usage (cache reads and
//!   writes included); then `message_delta` and `message_stop` end the answer. A stream that
//!   ends after `messageStop` without `metadata` ends without usage (metering estimates it);
//!   one that ends before `messageStop` is cut;
//! - an exception frame (`throttlingException`, `modelStreamErrorException`, …) is the one
//!   error event, with the status it stands for.

use std::collections::HashMap;

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::anthropic::AnthropicStream;
use super::StreamContext;
use crate::chat::Usage;
use crate::provider::bedrock;
use crate::sse::SseEvent;
use crate::Error;

/// The kinds of Anthropic block a Converse block is started as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Other,
}

/// `{"contentBlockIndex":N,"delta":{"text":"…"}}`, the bulk of a stream, borrowed.
#[derive(Deserialize)]
struct TextDelta<'a> {
    #[serde(rename = "contentBlockIndex")]
    index: u64,
    #[serde(borrow)]
    delta: TextBody<'a>,
}

#[derive(Deserialize)]
struct TextBody<'a> {
    #[serde(borrow)]
    text: &'a RawValue,
}

/// Per-stream state for a Bedrock upstream: ConverseStream events in, OpenAI chunks out.
#[derive(Debug)]
pub struct BedrockStream {
    inner: AnthropicStream,
    open: HashMap<u64, Block>,
    stop_reason: Option<String>,
    ended: bool,
}

impl BedrockStream {
    /// A new stream for this request.
    pub fn new(ctx: StreamContext) -> Self {
        BedrockStream {
            inner: AnthropicStream::new(ctx),
            open: HashMap::new(),
            stop_reason: None,
            ended: false,
        }
    }

    /// The Anthropic translator underneath.
    pub(super) fn inner(&mut self) -> &mut AnthropicStream {
        &mut self.inner
    }

    /// True once `[DONE]` or the error event has been written.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<&Usage> {
        self.inner.usage()
    }

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.inner.error()
    }

    /// The last finish reason seen (OpenAI's names).
    pub fn finish_reason(&self) -> Option<&str> {
        self.inner.finish_reason()
    }

    /// The upstream body ended: after `messageStop` the answer is complete (without usage if
    /// `metadata` never came); before it, it was cut.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        if self.stop_reason.is_some() && !self.ended {
            self.end(&Value::Null, out);
        }
        self.inner.on_end(out);
    }

    /// The upstream body failed.
    pub fn on_error(&mut self, err: Error, out: &mut BytesMut) {
        self.inner.on_error(err, out);
    }

    /// Handles one upstream event.
    pub fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.is_finished() {
            return;
        }
        let name = ev.event.as_deref().unwrap_or_default();
        let data = ev.data.trim();
        if name == "contentBlockDelta" {
            if let Ok(d) = serde_json::from_str::<TextDelta<'_>>(data) {
                self.open_block(d.index, Block::Text, out);
                let text = d.delta.text.get();
                self.anthropic(
                    format!(
                        r#"{{"type":"content_block_delta","index":{},"delta":{{"type":"text_delta","text":{text}}}}}"#,
                        d.index
                    ),
                    out,
                );
                return;
            }
        }
        if name.ends_with("Exception") || name.ends_with("Error") {
            let err = crate::provider::upstream_error(
                bedrock::exception_status(name),
                &http::HeaderMap::new(),
                data.as_bytes(),
                self.inner.stage.provider(),
                self.inner.stage.secrets(),
            );
            self.inner.stage.fail(err, out);
            return;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return self.inner.stage.malformed(e, data, out),
        };
        let index = v["contentBlockIndex"].as_u64().unwrap_or(0);
        match name {
            "messageStart" => self.anthropic_value(
                json!({"type": "message_start", "message": {"id": "", "model": "", "usage": {}}}),
                out,
            ),
            "contentBlockStart" => {
                if let Some(tool) = v["start"].get("toolUse") {
                    self.open.insert(index, Block::Other);
                    self.anthropic_value(
                        json!({"type": "content_block_start", "index": index, "content_block": {
                            "type": "tool_use", "id": tool["toolUseId"], "name": tool["name"], "input": {}
                        }}),
                        out,
                    );
                }
            }
            "contentBlockDelta" => {
                let delta = &v["delta"];
                if let Some(input) = delta["toolUse"].get("input") {
                    self.anthropic_value(
                        json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": input}}),
                        out,
                    );
                } else if let Some(r) = delta.get("reasoningContent") {
                    if let Some(data) = r.get("redactedContent") {
                        self.open.insert(index, Block::Other);
                        self.anthropic_value(
                            json!({"type": "content_block_start", "index": index,
                                   "content_block": {"type": "redacted_thinking", "data": data}}),
                            out,
                        );
                        return;
                    }
                    self.open_block(index, Block::Thinking, out);
                    if let Some(t) = r.get("text") {
                        self.anthropic_value(
                            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "thinking_delta", "thinking": t}}),
                            out,
                        );
                    }
                    if let Some(s) = r.get("signature") {
                        self.anthropic_value(
                            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "signature_delta", "signature": s}}),
                            out,
                        );
                    }
                }
            }
            // A block is closed once, and only one that was started.
            "contentBlockStop" if self.open.remove(&index).is_some() => {
                self.anthropic_value(json!({"type": "content_block_stop", "index": index}), out);
            }
            "messageStop" => {
                self.stop_reason = Some(v["stopReason"].as_str().unwrap_or("end_turn").to_owned());
            }
            "metadata" => self.end(&v["usage"], out),
            // Guardrail traces and event types added later.
            _ => {}
        }
    }

    /// Starts block `index` as `kind` unless it is open already.
    fn open_block(&mut self, index: u64, kind: Block, out: &mut BytesMut) {
        if self.open.contains_key(&index) {
            return;
        }
        self.open.insert(index, kind);
        let block = match kind {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        self.anthropic_value(
            json!({"type": "content_block_start", "index": index, "content_block": block}),
            out,
        );
    }

    /// The answer's end: the stop reason (`end_turn` when `messageStop` never said) with the
    /// Converse `usage`.
    fn end(&mut self, usage: &Value, out: &mut BytesMut) {
        self.ended = true;
        let stop = self
            .stop_reason
            .clone()
            .unwrap_or_else(|| "end_turn".into());
        self.anthropic_value(
            json!({"type": "message_delta", "delta": {"stop_reason": stop},
                   "usage": bedrock::usage(usage)}),
            out,
        );
        self.anthropic(r#"{"type":"message_stop"}"#.to_owned(), out);
    }

    fn anthropic_value(&mut self, v: Value, out: &mut BytesMut) {
        self.anthropic(v.to_string(), out);
    }

    /// Hands the Anthropic event `data` to the Anthropic translator.
    fn anthropic(&mut self, data: String, out: &mut BytesMut) {
        let ev = SseEvent {
            data,
            ..Default::default()
        };
        self.inner.on_event(&ev, out);
    }
}
