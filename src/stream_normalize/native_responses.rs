//! An `openai` (or `azure`) endpoint's Responses API answer to a request kept in that API
//! ([`NativeRequest`](crate::facts::NativeRequest)), passed on as the provider wrote it.
//!
//! - every event goes out with its `event:` line and its data byte for byte, except those
//!   that carry the `response` object (`response.created`, `.in_progress`, `.completed`,
//!   `.incomplete`, `.failed`), whose `model` becomes the public model id;
//! - usage is read from the terminal event's `response.usage`;
//! - `response.created` and `response.in_progress` are held until the first other event: when
//!   the provider fails before it, nothing has reached the client, and the failure goes out as
//!   the core's error event, which the fallback layer acts on;
//! - `response.completed` and `response.incomplete` end the stream; an end without them, a
//!   cut, or the provider's `error` event after the first item becomes one `response.failed`
//!   (numbered after the provider's last event), and the record says why.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::StreamContext;
use crate::chat::{CompletionTokensDetails, PromptTokensDetails, Usage};
use crate::error::{ErrorSource, Retry};
use crate::sse::SseEvent;
use crate::Error;

/// Per-stream state for a native Responses answer; see the module source.
#[derive(Debug)]
pub struct NativeResponsesStream {
    ctx: StreamContext,
    held: Option<BytesMut>,
    sent: bool,
    /// The last `response` object seen, for a `response.failed` of the gateway's own.
    response: Option<Value>,
    last_sequence: Option<u64>,
    usage: Option<Usage>,
    finish: Option<&'static str>,
    error: Option<Error>,
    finished: bool,
}

/// A Responses `usage` object in the core's terms.
pub(crate) fn usage(u: &Value) -> Option<Usage> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let input = n(u.get("input_tokens")?);
    let output = n(&u["output_tokens"]);
    Some(Usage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: u["total_tokens"].as_u64().unwrap_or(input + output),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(n(&u["input_tokens_details"]["cached_tokens"])),
            ..Default::default()
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: Some(n(&u["output_tokens_details"]["reasoning_tokens"])),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The finish reason (OpenAI's chat names) of a final `response` object.
fn finish_of(response: &Value) -> &'static str {
    match response["status"].as_str() {
        Some("incomplete") => match response["incomplete_details"]["reason"].as_str() {
            Some("content_filter") => "content_filter",
            _ => "length",
        },
        _ => {
            let called = response["output"]
                .as_array()
                .is_some_and(|o| o.iter().any(|i| i["type"] == "function_call"));
            if called {
                "tool_calls"
            } else {
                "stop"
            }
        }
    }
}

impl NativeResponsesStream {
    /// A stream for this request.
    pub fn new(ctx: StreamContext) -> Self {
        NativeResponsesStream {
            ctx,
            held: None,
            sent: false,
            response: None,
            last_sequence: None,
            usage: None,
            finish: None,
            error: None,
            finished: false,
        }
    }

    /// True once a terminal event has been written.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The usage reported, if any.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The finish reason (OpenAI's chat names).
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish
    }

    fn write(&mut self, name: &str, data: &str, out: &mut BytesMut) {
        if let Some(held) = self.held.take() {
            out.put_slice(&held);
        }
        super::native::write_event(name, data, out);
        self.sent = true;
    }

    /// Handles one upstream event.
    pub fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        let data = ev.data.trim();
        if data.is_empty() {
            return;
        }
        let name = match ev.event.as_deref() {
            Some(name) => name.to_owned(),
            None => super::native::type_of(data).unwrap_or_default().to_owned(),
        };
        if let Some(n) = sequence_of(data) {
            self.last_sequence = Some(n);
        }
        match name.as_str() {
            "response.created"
            | "response.in_progress"
            | "response.queued"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                let mut v: Value = match serde_json::from_str(data) {
                    Ok(v) => v,
                    Err(e) => return self.malformed(&e.to_string(), out),
                };
                if let Some(model) = v.get_mut("response").and_then(|r| r.get_mut("model")) {
                    *model = Value::String(self.ctx.model.to_string());
                }
                let response = v.get("response").cloned();
                let text = v.to_string();
                match name.as_str() {
                    "response.completed" | "response.incomplete" | "response.failed" => {
                        if let Some(r) = &response {
                            self.usage = usage(&r["usage"]);
                            self.finish = Some(finish_of(r));
                        }
                        if name == "response.failed" {
                            let message = response
                                .as_ref()
                                .and_then(|r| r["error"]["message"].as_str())
                                .unwrap_or("the provider failed the response");
                            self.error = Some(
                                Error::bad_gateway(
                                    format!("{}: {message}", self.ctx.provider),
                                    ErrorSource::Upstream,
                                    Retry::Elsewhere,
                                )
                                .with_provider(self.ctx.provider.clone()),
                            );
                        }
                        self.write(&name, &text, out);
                        self.finished = true;
                    }
                    _ => {
                        // Held until the first item (or passed on, after it).
                        if self.sent {
                            self.write(&name, &text, out);
                        } else {
                            let held = self.held.get_or_insert_with(BytesMut::new);
                            super::native::write_event(&name, &text, held);
                        }
                    }
                }
                if response.is_some() {
                    self.response = response;
                }
            }
            "error" => {
                let v: Value = serde_json::from_str(data).unwrap_or_default();
                let message = v["message"]
                    .as_str()
                    .or_else(|| v["error"]["message"].as_str())
                    .unwrap_or("the provider failed");
                let err = Error::bad_gateway(
                    format!("{}: {message}", self.ctx.provider),
                    ErrorSource::Upstream,
                    Retry::Elsewhere,
                );
                self.fail(err, out);
            }
            _ => self.write(&name, data, out),
        }
    }

    fn malformed(&mut self, why: &str, out: &mut BytesMut) {
        let err = Error::bad_gateway(
            format!(
                "{}: the provider sent a malformed event ({why})",
                self.ctx.provider
            ),
            ErrorSource::Upstream,
            Retry::Elsewhere,
        );
        self.fail(err, out);
    }

    /// Ends the stream: the core's error event while nothing has reached the client (which
    /// fallback reads), a `response.failed` after.
    fn fail(&mut self, err: Error, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        let err = err
            .with_provider(self.ctx.provider.clone())
            .redact(&self.ctx.secrets);
        if self.sent {
            let mut response = self.response.take().unwrap_or_else(|| {
                serde_json::json!({"id": self.ctx.id.as_str(), "object": "response", "output": []})
            });
            response["status"] = Value::String("failed".into());
            response["model"] = Value::String(self.ctx.model.to_string());
            response["error"] =
                serde_json::json!({"code": "server_error", "message": err.message()});
            let n = self.last_sequence.map_or(0, |n| n + 1);
            let event = serde_json::json!({"type": "response.failed", "sequence_number": n, "response": response});
            super::native::write_event("response.failed", &event.to_string(), out);
        } else {
            self.held = None;
            out.put_slice(&err.to_sse_event());
        }
        self.error = Some(err);
        self.finished = true;
    }

    /// The upstream body ended: without a terminal event that is a truncated answer.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        let err = Error::bad_gateway(
            format!(
                "{}: the stream ended before `response.completed`",
                self.ctx.provider
            ),
            ErrorSource::Upstream,
            Retry::Elsewhere,
        );
        self.fail(err, out);
    }

    /// The upstream body failed.
    pub fn on_error(&mut self, err: Error, out: &mut BytesMut) {
        self.fail(err, out);
    }
}

/// The `sequence_number` of an event, read without parsing the rest.
fn sequence_of(data: &str) -> Option<u64> {
    let at = data.find("\"sequence_number\":")? + "\"sequence_number\":".len();
    let digits: &str = data[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// A non-streamed native Responses answer: the provider's `response` with the public
/// `model`, its usage and finish reason. An `error` object is that error; what is not a
/// response is a 502.
pub(crate) fn render(
    bytes: &[u8],
    ctx: &StreamContext,
) -> Result<(Bytes, Option<Usage>, Option<&'static str>), Error> {
    let garbage = |why: String| super::unusable_answer(ctx, bytes, why);
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| garbage(format!("the provider answered with malformed JSON ({e})")))?;
    if v.get("error").is_some_and(Value::is_object) {
        return Err(super::error_in_answer(ctx, bytes));
    }
    if v.get("object").and_then(Value::as_str) != Some("response") {
        return Err(garbage("the answer is not a Responses `response`".into()));
    }
    let json = crate::json::with_model(bytes, &ctx.model, &[])
        .map_err(|e| garbage(format!("the provider answered with malformed JSON ({e})")))?;
    Ok((Bytes::from(json), usage(&v["usage"]), Some(finish_of(&v))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::GenerationId;

    fn run(events: &str) -> (String, NativeResponsesStream) {
        let mut s =
            NativeResponsesStream::new(StreamContext::new(GenerationId::new(), "pub/gpt", "oai"));
        let mut out = BytesMut::new();
        for ev in crate::sse::decode_chunks([events.as_bytes()]) {
            s.on_event(&ev, &mut out);
        }
        s.on_end(&mut out);
        (String::from_utf8(out.to_vec()).unwrap(), s)
    }

    const CREATED: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-5\",\"output\":[]}}\n\n";

    #[test]
    fn events_pass_and_usage_is_read() {
        let body = format!(
            "{CREATED}event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{{\"type\":\"message\",\"id\":\"msg_1\"}}}}\n\n\
             event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-5\",\"output\":[],\"usage\":{{\"input_tokens\":10,\"input_tokens_details\":{{\"cached_tokens\":4}},\"output_tokens\":3,\"output_tokens_details\":{{\"reasoning_tokens\":1}},\"total_tokens\":13}}}}}}\n\n"
        );
        let (out, s) = run(&body);
        assert!(out.contains("\"model\":\"pub/gpt\""), "{out}");
        assert!(!out.contains("gpt-5"));
        assert!(out.contains("\"output_index\":0,\"item\":{\"type\":\"message\",\"id\":\"msg_1\"}"));
        let u = s.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (10, 3));
        assert_eq!(s.finish_reason(), Some("stop"));
        assert!(s.error().is_none());
    }

    #[test]
    fn a_failure_before_the_first_item_is_the_cores_error_and_after_it_a_failed_event() {
        let (out, s) = run(&format!("{CREATED}event: error\ndata: {{\"type\":\"error\",\"sequence_number\":1,\"message\":\"overloaded\"}}\n\n"));
        assert!(out.starts_with("data: {\"error\""), "{out}");
        assert!(s.error().is_some());
        let (out, s) = run(&format!("{CREATED}event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{{}}}}\n\n"));
        assert!(
            out.ends_with("\n\n") && out.contains("response.failed"),
            "{out}"
        );
        assert!(out.contains("\"sequence_number\":2"), "{out}");
        assert!(s.error().unwrap().message().contains("response.completed"));
    }
}
