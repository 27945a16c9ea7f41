//! An `anthropic` endpoint's answer to a request kept in Anthropic's dialect
//! ([`NativeRequest`](crate::facts::NativeRequest)), passed on as the provider wrote it.
//!
//! - every event goes out with its `event:` line and its data byte for byte, except
//!   `message_start`, whose `message.model` becomes the public model id;
//! - usage is read from `message_start` and `message_delta` (Anthropic's counts, cache reads
//!   and writes by lifetime included), the stop reason from `message_delta`;
//! - `message_start` is held until the next event that is not a `ping`: when the provider
//!   fails right after it (an `overloaded_error`), nothing has reached the client, and the
//!   failure goes out as the core's error event, which the fallback layer acts on;
//! - `message_stop` ends the stream; an end without it, a cut, or the provider's own `error`
//!   event after the first block is one `event: error`, and the record says why;
//! - from Bedrock (`InvokeModelWithResponseStream`), each event comes base64-encoded in an
//!   event-stream `chunk` frame (`{"bytes": …}`) and is unwrapped first; an exception frame
//!   is the error.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::StreamContext;
use crate::chat::Usage;
use crate::error::{ErrorSource, Retry};
use crate::provider::anthropic::{error_status, finish_reason, Counts};
use crate::sse::SseEvent;
use crate::Error;

/// Per-stream state for a native Anthropic answer: its events passed on, its usage read (the
/// rules are in the `stream_normalize` module source, `native.rs`).
#[derive(Debug)]
pub struct NativeStream {
    ctx: StreamContext,
    /// `message_start`, written out but held back until the next event.
    held: Option<BytesMut>,
    /// Something reached the client.
    sent: bool,
    counts: Counts,
    usage: Option<Usage>,
    finish: Option<&'static str>,
    error: Option<Error>,
    finished: bool,
    /// Events come in Bedrock's `chunk` frames.
    bedrock: bool,
}

impl NativeStream {
    /// A stream for this request.
    pub fn new(ctx: StreamContext) -> Self {
        NativeStream {
            ctx,
            held: None,
            sent: false,
            counts: Counts::default(),
            usage: None,
            finish: None,
            error: None,
            finished: false,
            bedrock: false,
        }
    }

    /// The events come wrapped in Bedrock's `chunk` frames.
    pub fn bedrock_chunks(mut self) -> Self {
        self.bedrock = true;
        self
    }

    /// A Bedrock frame: its Anthropic event unwrapped and handled, or its exception.
    fn on_bedrock_frame(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        use base64::Engine as _;
        let name = ev.event.as_deref().unwrap_or_default();
        if name.ends_with("Exception") {
            let err = crate::provider::upstream_error(
                crate::provider::bedrock::exception_status(name),
                &http::HeaderMap::new(),
                ev.data.as_bytes(),
                &self.ctx.provider,
                &self.ctx.secrets,
            );
            return self.fail(err, out);
        }
        if name != "chunk" {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Chunk {
            bytes: String,
        }
        let inner = serde_json::from_str::<Chunk>(&ev.data)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c.bytes)
                    .map_err(|e| e.to_string())
            })
            .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()));
        match inner {
            Ok(data) => self.on_anthropic_event(
                &SseEvent {
                    data,
                    ..Default::default()
                },
                out,
            ),
            Err(why) => self.malformed(&why, out),
        }
    }

    /// True once `message_stop` or the error event has been written.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The stop reason (OpenAI's names).
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish
    }

    fn count(&mut self, usage: &Value) {
        if usage.is_object() {
            self.counts.update(usage);
            self.usage = Some(self.counts.usage());
        }
    }

    fn pass(&mut self, name: &str, data: &str, out: &mut BytesMut) {
        if let Some(held) = self.held.take() {
            out.put_slice(&held);
        }
        write_event(name, data, out);
        self.sent = true;
    }

    /// Handles one upstream event.
    pub fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.bedrock {
            self.on_bedrock_frame(ev, out);
        } else {
            self.on_anthropic_event(ev, out);
        }
    }

    fn on_anthropic_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        let data = ev.data.trim();
        if data.is_empty() {
            return;
        }
        let name = match ev.event.as_deref() {
            Some(name) => name,
            None => type_of(data).unwrap_or_default(),
        };
        match name {
            "content_block_delta" | "content_block_start" | "content_block_stop" => {
                self.pass(name, data, out)
            }
            "ping" if self.held.is_some() => {}
            "message_start" => {
                let mut v: Value = match serde_json::from_str(data) {
                    Ok(v) => v,
                    Err(e) => return self.malformed(&e.to_string(), out),
                };
                self.count(&v["message"]["usage"]);
                if let Some(model) = v.get_mut("message").and_then(|m| m.get_mut("model")) {
                    *model = Value::String(self.ctx.model.to_string());
                }
                let mut held = BytesMut::new();
                write_event(name, &v.to_string(), &mut held);
                self.held = Some(held);
            }
            "message_delta" => {
                match serde_json::from_str::<Value>(data) {
                    Ok(v) => {
                        self.count(&v["usage"]);
                        if let Some(r) = v["delta"]["stop_reason"].as_str() {
                            self.finish = Some(finish_reason(r));
                        }
                    }
                    Err(e) => return self.malformed(&e.to_string(), out),
                }
                self.pass(name, data, out);
            }
            "message_stop" => {
                self.pass(name, data, out);
                self.finished = true;
            }
            "error" => {
                let v: Value = serde_json::from_str(data).unwrap_or_default();
                let kind = v["error"]["type"].as_str().unwrap_or("api_error");
                let message = v["error"]["message"]
                    .as_str()
                    .unwrap_or("the provider failed");
                let err = Error::new(error_status(kind), kind.to_owned(), message)
                    .with_provider(self.ctx.provider.clone())
                    .with_retry(Retry::Elsewhere);
                if self.sent {
                    write_event(name, data, out);
                    self.error = Some(err);
                    self.finished = true;
                } else {
                    self.fail(err, out);
                }
            }
            _ => self.pass(name, data, out),
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

    /// Ends the stream with one error event: the core's (which fallback reads) while nothing
    /// has reached the client, Anthropic's after.
    fn fail(&mut self, err: Error, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        let err = err
            .with_provider(self.ctx.provider.clone())
            .redact(&self.ctx.secrets);
        if self.sent {
            out.put_slice(&crate::dialect::messages::error_event(&err));
        } else {
            self.held = None;
            out.put_slice(&err.to_sse_event());
        }
        self.error = Some(err);
        self.finished = true;
    }

    /// The upstream body ended: without `message_stop` that is a truncated answer.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        let err = Error::bad_gateway(
            format!(
                "{}: the stream ended before `message_stop`",
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

/// A non-streamed native answer: the provider's message with the public `model` (every
/// other member as the provider wrote it), its usage and its stop reason (OpenAI's name). An
/// `error` object is that error; what is not a message is a 502.
pub(crate) fn render(
    bytes: &[u8],
    ctx: &StreamContext,
) -> Result<(Bytes, Option<Usage>, Option<&'static str>), Error> {
    let garbage = |why: String| super::unusable_answer(ctx, bytes, why);
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| garbage(format!("the provider answered with malformed JSON ({e})")))?;
    match v.get("type").and_then(Value::as_str) {
        Some("message") => {}
        Some("error") => return Err(super::error_in_answer(ctx, bytes)),
        _ => return Err(garbage("the answer is not an Anthropic message".into())),
    }
    let usage = v.get("usage").filter(|u| u.is_object()).map(|u| {
        let mut counts = Counts::default();
        counts.update(u);
        counts.usage()
    });
    let finish = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason);
    let json = crate::json::with_model(bytes, &ctx.model, &[])
        .map_err(|e| garbage(format!("the provider answered with malformed JSON ({e})")))?;
    Ok((Bytes::from(json), usage, finish))
}

/// The `type` of an event's data, when it starts with it (Anthropic and OpenAI write it first).
pub(super) fn type_of(data: &str) -> Option<&str> {
    let rest = data.strip_prefix(r#"{"type":""#)?;
    Some(&rest[..rest.find('"')?])
}

/// An event with its `event:` line, its data on `data:` lines.
pub(super) fn write_event(name: &str, data: &str, out: &mut BytesMut) {
    out.reserve(name.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\n");
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(b"\n");
    }
    out.put_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::GenerationId;

    fn run(events: &str) -> (String, NativeStream) {
        let mut s = NativeStream::new(StreamContext::new(
            GenerationId::new(),
            "pub/claude",
            "anth",
        ));
        let mut out = BytesMut::new();
        for ev in crate::sse::decode_chunks([events.as_bytes()]) {
            s.on_event(&ev, &mut out);
        }
        s.on_end(&mut out);
        (String::from_utf8(out.to_vec()).unwrap(), s)
    }

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"cache_creation_input_tokens\":3,\"cache_creation\":{\"ephemeral_5m_input_tokens\":1,\"ephemeral_1h_input_tokens\":2},\"output_tokens\":1}}}\n\n";

    #[test]
    fn events_pass_byte_for_byte_and_usage_is_read() {
        let body = format!(
            "{START}event: ping\ndata: {{\"type\": \"ping\"}}\n\n\
             event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}}}\n\n\
             event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAh+/=\"}}}}\n\n\
             event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"tool_use\"}},\"usage\":{{\"output_tokens\":42}}}}\n\n\
             event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        );
        let (out, s) = run(&body);
        assert!(out.contains("\"model\":\"pub/claude\""), "{out}");
        assert!(out.contains("\"signature\":\"EqQBCgIYAh+/=\""));
        assert!(
            !out.contains("ping"),
            "a ping while message_start is held is dropped"
        );
        crate::dialect::messages::check_event_sequence(out.as_bytes()).unwrap();
        let u = s.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (18, 42));
        let d = u.prompt_tokens_details.as_ref().unwrap();
        assert_eq!((d.cached_tokens, d.cache_write_tokens), (Some(5), Some(3)));
        assert_eq!(s.finish_reason(), Some("tool_calls"));
        assert!(s.error().is_none());
    }

    #[test]
    fn a_failure_before_the_first_block_is_the_cores_error_event() {
        let body = format!("{START}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n");
        let (out, s) = run(&body);
        assert!(out.starts_with("data: {\"error\""), "{out}");
        assert!(!out.contains("message_start"));
        assert_eq!(s.error().unwrap().status(), 529);
    }

    #[test]
    fn a_cut_after_the_first_block_is_one_anthropic_error() {
        let body = format!(
            "{START}event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
        );
        let (out, s) = run(&body);
        assert!(out.starts_with("event: message_start"), "{out}");
        assert!(
            out.ends_with("\n\n") && out.matches("event: error").count() == 1,
            "{out}"
        );
        assert!(s.error().unwrap().message().contains("message_stop"));
    }
}
