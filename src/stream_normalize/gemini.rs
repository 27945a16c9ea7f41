//! Gemini `generateContent` answers and `streamGenerateContent?alt=sse` streams in the OpenAI
//! shape.
//!
//! - each upstream event is a whole `GenerateContentResponse` holding only the new parts; the
//!   first one opens the stream with `{"role":"assistant","content":""}`;
//! - text parts become `content`, `thought: true` parts `reasoning_content`; each
//!   `functionCall` goes out whole in one delta (`arguments` the compact JSON of `args`) with a
//!   generated `call_<24 hex>` id, and its `thoughtSignature` as
//!   `extra_content.google.thought_signature` (Gemini's own OpenAI-compatible convention), which
//!   the request translator sends back;
//! - usage is a snapshot in every event (the last one wins): `prompt_tokens = promptTokenCount +
//!   toolUsePromptTokenCount`, `completion_tokens = candidatesTokenCount + thoughtsTokenCount`,
//!   `cached_tokens`, `reasoning_tokens`;
//! - finish reasons: `STOP` (to `tool_calls` when the turn called functions), `MAX_TOKENS` to
//!   `length`, the safety family to `content_filter`, the provider's value kept as
//!   `native_finish_reason`; a blocked prompt (`promptFeedback.blockReason`, no candidates) ends
//!   with `content_filter`;
//! - Gemini streams have no `[DONE]`: the end of the body after a finish reason is the normal
//!   end; an end before any finish reason is a truncated answer (one error event).

use bytes::BytesMut;
use serde_json::{json, Value};

use super::openai::OpenAiStream;
use super::translate::{self, emit, ChunkHead};
use super::StreamContext;
use crate::chat::{Delta, ReasoningDetail, Usage};
use crate::provider::gemini::{call_id, finish_reason, usage};
use crate::sse::SseEvent;
use crate::Error;

/// Candidates per answer the translator accepts (Gemini allows up to 8; a larger index is a
/// malformed event, not an allocation).
const MAX_CANDIDATES: u64 = 64;

/// Per-stream state for a Gemini upstream: `GenerateContentResponse` events in, OpenAI chunks
/// out (the rules are in the `stream_normalize` module source, `gemini.rs`).
#[derive(Debug)]
pub struct GeminiStream {
    pub(super) stage: OpenAiStream,
    head: ChunkHead,
    started: bool,
    /// Per candidate: tool calls sent so far.
    tools: Vec<u32>,
    /// Thought signatures given out as reasoning details so far.
    signatures: u32,
    finished: bool,
}

impl GeminiStream {
    /// A new stream for this request.
    pub fn new(ctx: StreamContext) -> Self {
        GeminiStream {
            stage: OpenAiStream::new(ctx),
            head: ChunkHead {
                created: translate::now_unix(),
                ..Default::default()
            },
            started: false,
            tools: Vec::new(),
            signatures: 0,
            finished: false,
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

    /// The upstream body ended: the normal end once a finish reason was seen.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        if self.finished && !self.is_finished() {
            self.stage.finish_ok(out);
        } else {
            self.stage.on_end(out);
        }
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
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return self.stage.malformed(e, data, out),
        };
        if v.get("error").is_some_and(Value::is_object) {
            let status = v["error"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| http::StatusCode::from_u16(c).ok())
                .unwrap_or(http::StatusCode::BAD_GATEWAY);
            let err = crate::provider::upstream_error(
                status,
                &http::HeaderMap::new(),
                data.as_bytes(),
                self.stage.provider(),
                self.stage.secrets(),
            );
            return self.stage.fail(err, out);
        }
        if let Some(id) = v["responseId"].as_str() {
            self.head.id = format!("chatcmpl-{id}");
        }
        if let Some(m) = v["modelVersion"].as_str() {
            self.head.model = m.to_owned();
        }
        if let Some(u) = usage(&v["usageMetadata"]) {
            self.stage.set_usage(u);
        }
        if !self.started {
            self.started = true;
            let role = Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Default::default()
            };
            emit(&mut self.stage, &self.head, 0, role, None, out);
        }
        let candidates = v["candidates"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if candidates.is_empty() {
            if let Some(reason) = v["promptFeedback"]["blockReason"].as_str() {
                emit(
                    &mut self.stage,
                    &self.head,
                    0,
                    Delta::default(),
                    Some(("content_filter", reason)),
                    out,
                );
                self.finished = true;
            }
            return;
        }
        for (pos, c) in candidates.iter().enumerate() {
            let index = c["index"].as_u64().unwrap_or(pos as u64);
            if index >= MAX_CANDIDATES {
                let why = format!("candidate index {index} is out of range");
                return self.stage.malformed(why, data, out);
            }
            let (index, slot) = (index as u32, index as usize);
            if self.tools.len() <= slot {
                self.tools.resize(slot + 1, 0);
            }
            for part in c["content"]["parts"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let delta = if let Some(call) = part.get("functionCall") {
                    let dense = self.tools[slot];
                    self.tools[slot] += 1;
                    let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                    let carried = part
                        .get("thoughtSignature")
                        .map(|s| json!({"google": {"thought_signature": s}}));
                    let signature = part["thoughtSignature"].as_str().map(str::to_owned);
                    if let Some(sig) = signature.filter(|_| self.stage.shows_reasoning()) {
                        // After the thoughts' text (detail 0), as in a whole answer.
                        self.signatures += 1;
                        let d = ReasoningDetail::encrypted(
                            ReasoningDetail::GEMINI,
                            self.signatures,
                            sig,
                        );
                        let delta = translate::reasoning_detail(d);
                        emit(&mut self.stage, &self.head, index, delta, None, out);
                    }
                    translate::tool_call(
                        dense,
                        Some(
                            call["id"]
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(call_id),
                        ),
                        Some(call["name"].as_str().unwrap_or_default().to_owned()),
                        serde_json::to_string(&args).unwrap_or_else(|_| "{}".into()),
                        carried,
                    )
                } else if let Some(text) = part["text"].as_str() {
                    if text.is_empty() {
                        continue;
                    }
                    if part["thought"].as_bool() == Some(true) {
                        if !self.stage.shows_reasoning() {
                            continue;
                        }
                        translate::reasoning(text.to_owned(), ReasoningDetail::GEMINI, 0)
                    } else {
                        translate::text(text.to_owned())
                    }
                } else {
                    continue;
                };
                emit(&mut self.stage, &self.head, index, delta, None, out);
            }
            if let Some(native) = c["finishReason"].as_str() {
                let reason = finish_reason(native, self.tools[slot] > 0);
                emit(
                    &mut self.stage,
                    &self.head,
                    index,
                    Delta::default(),
                    Some((reason, native)),
                    out,
                );
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_counts_saturate_instead_of_overflowing() {
        let u = usage(&serde_json::json!({"promptTokenCount": u64::MAX,
            "toolUsePromptTokenCount": 3, "candidatesTokenCount": u64::MAX,
            "thoughtsTokenCount": 9}))
        .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (u64::MAX, u64::MAX, u64::MAX)
        );
    }
}
