//! The OpenAI dialect: per-stream state that turns upstream chunks into the gateway's chunks.

use bytes::{BufMut, BytesMut};
use http::StatusCode;

use crate::chat::{
    ChatChunk, ChatCompletion, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta, Usage,
    UsageField,
};
use crate::error::{ErrorSource, Retry};
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

/// Per-stream state for an OpenAI-dialect upstream. Pure: bytes in, bytes out.
///
/// - `id`, `model` and `provider` are the gateway's on every chunk;
/// - `role` goes out once per choice; tool-call `id`, `type` and `name` once per call, and the
///   tool-call `index` is dense from 0;
/// - the upstream usage is kept; with the client's `include_usage` it goes out as the last
///   chunk (`choices: []`) before `[DONE]`, otherwise it is not sent;
/// - `[DONE]` ends the stream; an upstream error event, a malformed event, a body failure or an
///   end without `[DONE]` becomes exactly one error event, and nothing follows it.
#[derive(Debug)]
pub struct OpenAiStream {
    ctx: StreamContext,
    state: State,
    choices: Vec<ChoiceState>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    error: Option<Error>,
}

impl OpenAiStream {
    /// A new stream for this request.
    pub fn new(ctx: StreamContext) -> Self {
        OpenAiStream {
            ctx,
            state: State::Streaming,
            choices: Vec::new(),
            usage: None,
            finish_reason: None,
            error: None,
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

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
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
        let chunk: ChatChunk = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                let err = Error::bad_gateway(
                    format!(
                        "{}: the provider sent a malformed stream event ({e})",
                        self.ctx.provider
                    ),
                    ErrorSource::Upstream,
                    Retry::Retryable,
                )
                .with_provider(self.ctx.provider.clone())
                .with_raw(Some(crate::error::scrub(data, None)));
                self.fail(err, out);
                return;
            }
        };
        if chunk.extra.contains_key("error") {
            let status = chunk.extra["error"]
                .get("code")
                .and_then(|c| c.as_u64())
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            let err = Error::from_upstream(
                status,
                &http::HeaderMap::new(),
                data.as_bytes(),
                &self.ctx.provider,
                None,
            );
            self.fail(err, out);
            return;
        }
        self.on_chunk(chunk, out);
    }

    fn on_chunk(&mut self, mut chunk: ChatChunk, out: &mut BytesMut) {
        if let UsageField::Present(u) = std::mem::take(&mut chunk.usage) {
            self.usage = Some(u);
        }
        if chunk.choices.is_empty() {
            // The usage chunk (re-sent at the end when asked for) or an annotation-only chunk
            // such as Azure's leading prompt-filter chunk: nothing a client can use.
            return;
        }
        if self.ctx.created == 0 {
            self.ctx.created = chunk.created;
        }
        chunk.id.clear();
        chunk.id.push_str(self.ctx.id.as_str());
        chunk.model.clear();
        chunk.model.push_str(&self.ctx.model);
        chunk.provider = Some(self.ctx.provider.to_string());
        chunk.object.clear();
        chunk.object.push_str("chat.completion.chunk");
        chunk.usage = if self.ctx.include_usage {
            UsageField::Null
        } else {
            UsageField::Absent
        };
        for choice in &mut chunk.choices {
            self.fix_choice(choice);
        }
        sse::write_json_event(out, &chunk);
    }

    fn fix_choice(&mut self, choice: &mut ChunkChoice) {
        let pos = match self.choices.iter().position(|c| c.index == choice.index) {
            Some(p) => p,
            None => {
                self.choices.push(ChoiceState {
                    index: choice.index,
                    ..Default::default()
                });
                self.choices.len() - 1
            }
        };
        let state = &mut self.choices[pos];
        let delta = &mut choice.delta;
        if state.role_sent {
            delta.role = None;
        } else {
            state.role_sent = true;
            if delta.role.is_none() {
                delta.role = Some("assistant".to_owned());
            }
        }
        if let Some(calls) = &mut delta.tool_calls {
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
                            call.id = Some(format!(
                                "call_{}_{}",
                                self.ctx.id.as_str(),
                                state.tools.len() - 1
                            ));
                        }
                        state.tools.len() - 1
                    }
                };
                call.index = Some(dense as u32);
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
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

    fn finish_ok(&mut self, out: &mut BytesMut) {
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

    fn fail(&mut self, err: Error, out: &mut BytesMut) {
        out.put_slice(&err.to_sse_event());
        self.error = Some(err);
        self.state = State::Failed;
    }

    /// Writes a whole (non-streamed) completion as a stream: for a provider that ignored
    /// `stream: true` and answered with JSON.
    pub fn replay_completion(&mut self, completion: ChatCompletion, out: &mut BytesMut) {
        self.ctx.created = completion.created;
        self.usage = completion.usage.clone();
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
                self.on_chunk(chunk, out);
            }
        }
        self.finish_ok(out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::route::GenerationId;

    fn ctx(include_usage: bool) -> StreamContext {
        StreamContext {
            id: GenerationId::new(),
            model: Arc::from("public/model"),
            provider: Arc::from("prov"),
            include_usage,
            created: 0,
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
