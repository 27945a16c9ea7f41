//! A request's spans, made from its usage record: the server span, and a client span per
//! attempt, named and attributed as the OpenTelemetry GenAI semantic conventions say
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/>).

use std::borrow::Cow;
use std::str::FromStr;
use std::time::SystemTime;

use http::StatusCode;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use serde_json::json;
use tokio::time::Instant;

use super::RequestSpan;
use crate::chat::{Content, ContentPart, Message};
use crate::dialect::Dialect;
use crate::facts::{Attempt, AttemptOutcome, TraceContext};
use crate::provider::ProviderKind;
use crate::usage::{RecordDetail, UsageRecord};

/// The attribute names used (GenAI, HTTP and error conventions; the gateway's own under
/// `modelgate.`).
pub mod attr {
    #![allow(missing_docs)]
    pub const OPERATION: &str = "gen_ai.operation.name";
    pub const PROVIDER: &str = "gen_ai.provider.name";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const REQUEST_STREAM: &str = "gen_ai.request.stream";
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const RESPONSE_ID: &str = "gen_ai.response.id";
    pub const FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
    pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const CACHE_READ_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
    pub const CACHE_CREATION_TOKENS: &str = "gen_ai.usage.cache_creation.input_tokens";
    pub const REASONING_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
    pub const CONVERSATION: &str = "gen_ai.conversation.id";
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const URL_PATH: &str = "url.path";
    pub const KEY_NAME: &str = "modelgate.key.name";
    pub const DIALECT: &str = "modelgate.dialect";
    pub const COST: &str = "modelgate.cost_usd";
    pub const TTFT_MS: &str = "modelgate.time_to_first_token_ms";
    pub const GATEWAY_PROVIDER: &str = "modelgate.provider";
    pub const OUTCOME: &str = "modelgate.attempt.outcome";
    /// The status the client would have had from the attempt (a provider's 5xx is a 502).
    pub const ATTEMPT_STATUS: &str = "modelgate.attempt.status";
    pub const CANCELLED: &str = "modelgate.cancelled";
    pub const ESTIMATED: &str = "modelgate.usage.estimated";
}

/// `gen_ai.provider.name` of a provider kind (the conventions' well-known values).
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Vertex => "gcp.vertex_ai",
    }
}

fn operation(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Embeddings => "embeddings",
        _ => "chat",
    }
}

fn context(cx: &TraceContext) -> SpanContext {
    let state = cx
        .state
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceState::from_str(v).ok())
        .unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(cx.trace_id),
        SpanId::from_bytes(cx.span_id),
        TraceFlags::SAMPLED,
        false,
        state,
    )
}

#[allow(clippy::too_many_arguments)]
fn span(
    rs: &RequestSpan,
    cx: &TraceContext,
    parent: Option<[u8; 8]>,
    parent_is_remote: bool,
    kind: SpanKind,
    name: String,
    (start, end): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    status: Status,
) -> SpanData {
    SpanData {
        span_context: context(cx),
        parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: parent_is_remote,
        span_kind: kind,
        name: Cow::Owned(name),
        start_time: start,
        end_time: end.max(start),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: rs.telemetry.0.scope.clone(),
    }
}

fn error_status(message: Option<&str>) -> Status {
    Status::Error {
        description: Cow::Owned(message.unwrap_or_default().to_owned()),
    }
}

fn finish_reasons(reason: &str) -> Value {
    Value::Array(Array::String(vec![StringValue::from(reason.to_owned())]))
}

/// Tokens as an attribute value (saturating).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The server span and one client span per attempt sent.
pub(super) fn from_record(
    rs: &RequestSpan,
    record: &UsageRecord,
    detail: &RecordDetail<'_>,
    end: Instant,
) -> Vec<SpanData> {
    let op = operation(record.dialect);
    let served = detail
        .attempts
        .iter()
        .rev()
        .find(|a| a.outcome == AttemptOutcome::Served);
    let mut attrs = vec![
        KeyValue::new(attr::OPERATION, op),
        KeyValue::new(attr::REQUEST_MODEL, record.requested_model.clone()),
        KeyValue::new(attr::RESPONSE_ID, record.id.clone()),
        KeyValue::new(attr::REQUEST_STREAM, record.streamed),
        KeyValue::new(attr::HTTP_METHOD, rs.method.as_str().to_owned()),
        KeyValue::new(attr::URL_PATH, rs.path.to_string()),
        KeyValue::new(attr::DIALECT, record.dialect.as_str()),
        KeyValue::new(attr::INPUT_TOKENS, count(record.prompt_tokens)),
        KeyValue::new(attr::OUTPUT_TOKENS, count(record.completion_tokens)),
    ];
    usage_extras(record, &mut attrs);
    if let Some(a) = served {
        attrs.push(KeyValue::new(attr::PROVIDER, provider_name(a.kind)));
    }
    if let Some(p) = &record.provider {
        attrs.push(KeyValue::new(attr::GATEWAY_PROVIDER, p.clone()));
    }
    if let Some(m) = &record.upstream_model {
        attrs.push(KeyValue::new(attr::RESPONSE_MODEL, m.clone()));
    }
    if let Some(r) = &record.finish_reason {
        attrs.push(KeyValue::new(attr::FINISH_REASONS, finish_reasons(r)));
    }
    if let Some(s) = record.status {
        attrs.push(KeyValue::new(attr::HTTP_STATUS, i64::from(s)));
    }
    if let Some(name) = detail.key_name {
        attrs.push(KeyValue::new(attr::KEY_NAME, name.to_owned()));
    }
    if let Some(cost) = record.cost {
        attrs.push(KeyValue::new(attr::COST, cost));
    }
    if let Some(ttft) = record.time_to_first_token_ms {
        attrs.push(KeyValue::new(attr::TTFT_MS, count(ttft)));
        if record.streamed {
            attrs.push(KeyValue::new(
                attr::TIME_TO_FIRST_CHUNK,
                ttft as f64 / 1000.0,
            ));
        }
    }
    if let Some(s) = &record.session_id {
        attrs.push(KeyValue::new(attr::CONVERSATION, s.clone()));
    }
    if record.estimated {
        attrs.push(KeyValue::new(attr::ESTIMATED, true));
    }
    let status = if record.cancelled {
        attrs.push(KeyValue::new(attr::CANCELLED, true));
        attrs.push(KeyValue::new(attr::ERROR_TYPE, "cancelled"));
        Status::Unset
    } else if let Some(s) = record.status.filter(|s| *s >= 400) {
        attrs.push(KeyValue::new(attr::ERROR_TYPE, s.to_string()));
        if s >= 500 {
            error_status(record.error.as_deref())
        } else {
            Status::Unset
        }
    } else if record.error.is_some() {
        // A stream that failed after its 200.
        attrs.push(KeyValue::new(attr::ERROR_TYPE, "stream_error"));
        error_status(record.error.as_deref())
    } else {
        Status::Unset
    };
    if rs.telemetry.0.capture_content && record.dialect != Dialect::Embeddings {
        attrs.push(KeyValue::new(
            attr::INPUT_MESSAGES,
            input_messages(detail.messages),
        ));
        if let Some(text) = detail.output {
            let mut message = json!({
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
            });
            if let Some(r) = &record.finish_reason {
                message["finish_reason"] = json!(r);
            }
            attrs.push(KeyValue::new(
                attr::OUTPUT_MESSAGES,
                json!([message]).to_string(),
            ));
        }
    }
    let mut spans = Vec::with_capacity(1 + detail.attempts.len());
    spans.push(span(
        rs,
        &rs.server,
        rs.parent,
        rs.parent.is_some(),
        SpanKind::Server,
        format!("{op} {}", record.requested_model),
        (rs.wall, rs.wall(end)),
        attrs,
        status,
    ));
    for a in detail.attempts {
        if let Some(cx) = &a.span {
            spans.push(attempt(rs, record, a, cx, op, end));
        }
    }
    spans
}

/// Cache and reasoning counts, when there are any.
fn usage_extras(record: &UsageRecord, attrs: &mut Vec<KeyValue>) {
    for (name, n) in [
        (attr::CACHE_READ_TOKENS, record.cached_tokens),
        (attr::CACHE_CREATION_TOKENS, record.cache_write_tokens),
        (attr::REASONING_TOKENS, record.reasoning_tokens),
    ] {
        if n > 0 {
            attrs.push(KeyValue::new(name, count(n)));
        }
    }
}

/// The client span of one attempt. The one that served a stream lasts to the stream's end.
fn attempt(
    rs: &RequestSpan,
    record: &UsageRecord,
    a: &Attempt,
    cx: &TraceContext,
    op: &'static str,
    end: Instant,
) -> SpanData {
    let served = a.outcome == AttemptOutcome::Served;
    let mut attrs = vec![
        KeyValue::new(attr::OPERATION, op),
        KeyValue::new(attr::PROVIDER, provider_name(a.kind)),
        KeyValue::new(attr::REQUEST_MODEL, a.upstream_model.to_string()),
        KeyValue::new(attr::GATEWAY_PROVIDER, a.provider.to_string()),
        KeyValue::new(
            attr::OUTCOME,
            match a.outcome {
                AttemptOutcome::Served => "served",
                AttemptOutcome::Failed => "failed",
                AttemptOutcome::Skipped => "skipped",
                AttemptOutcome::Cancelled => "cancelled",
            },
        ),
    ];
    if let Some(s) = a.status {
        attrs.push(KeyValue::new(attr::ATTEMPT_STATUS, i64::from(s)));
    }
    let ended = if served && record.streamed {
        end
    } else {
        a.started + a.latency
    };
    let status = match a.outcome {
        AttemptOutcome::Served => {
            attrs.push(KeyValue::new(
                attr::RESPONSE_MODEL,
                a.upstream_model.to_string(),
            ));
            attrs.push(KeyValue::new(
                attr::INPUT_TOKENS,
                count(record.prompt_tokens),
            ));
            attrs.push(KeyValue::new(
                attr::OUTPUT_TOKENS,
                count(record.completion_tokens),
            ));
            usage_extras(record, &mut attrs);
            if let Some(r) = &record.finish_reason {
                attrs.push(KeyValue::new(attr::FINISH_REASONS, finish_reasons(r)));
            }
            if record.streamed && record.error.is_some() && !record.cancelled {
                attrs.push(KeyValue::new(attr::ERROR_TYPE, "stream_error"));
                error_status(record.error.as_deref())
            } else {
                Status::Unset
            }
        }
        AttemptOutcome::Failed => {
            let kind = a
                .status
                .map_or_else(|| "error".to_owned(), |s| s.to_string());
            attrs.push(KeyValue::new(attr::ERROR_TYPE, kind));
            error_status(a.error.as_deref())
        }
        AttemptOutcome::Cancelled | AttemptOutcome::Skipped => {
            attrs.push(KeyValue::new(attr::ERROR_TYPE, "cancelled"));
            Status::Unset
        }
    };
    span(
        rs,
        cx,
        Some(rs.server.span_id),
        false,
        SpanKind::Client,
        format!("{op} {}", a.upstream_model),
        (rs.wall(a.started), rs.wall(ended)),
        attrs,
        status,
    )
}

/// The server span of a request that was not metered: refused before the usage layer, or
/// left before it was reached (`status`: `None`).
pub(super) fn unmetered(rs: &RequestSpan, status: Option<StatusCode>, end: Instant) -> SpanData {
    let mut attrs = vec![
        KeyValue::new(attr::HTTP_METHOD, rs.method.as_str().to_owned()),
        KeyValue::new(attr::URL_PATH, rs.path.to_string()),
    ];
    let span_status = match status {
        Some(s) => {
            attrs.push(KeyValue::new(attr::HTTP_STATUS, i64::from(s.as_u16())));
            if s.as_u16() >= 400 {
                attrs.push(KeyValue::new(attr::ERROR_TYPE, s.as_u16().to_string()));
            }
            if s.is_server_error() {
                error_status(s.canonical_reason())
            } else {
                Status::Unset
            }
        }
        None => {
            attrs.push(KeyValue::new(attr::CANCELLED, true));
            attrs.push(KeyValue::new(attr::ERROR_TYPE, "cancelled"));
            Status::Unset
        }
    };
    span(
        rs,
        &rs.server,
        rs.parent,
        rs.parent.is_some(),
        SpanKind::Server,
        format!("{} {}", rs.method, rs.path),
        (rs.wall, rs.wall(end)),
        attrs,
        span_status,
    )
}

/// `gen_ai.input.messages`: the prompt as the conventions' JSON (role and parts).
fn input_messages(messages: &[Message]) -> String {
    let list: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let mut parts = Vec::new();
            match &m.content {
                Some(Content::Text(t)) => parts.push(json!({"type": "text", "content": t})),
                Some(Content::Parts(ps)) => {
                    for p in ps {
                        match p {
                            ContentPart::Text { text, .. } => {
                                parts.push(json!({"type": "text", "content": text}))
                            }
                            // Images, audio and files are not copied into a span.
                            _ => parts.push(json!({"type": "blob"})),
                        }
                    }
                }
                None => {}
            }
            for call in m.tool_calls.iter().flatten() {
                parts.push(json!({
                    "type": "tool_call",
                    "id": call.id,
                    "name": call.function.name,
                    "arguments": call.function.arguments,
                }));
            }
            let mut out = json!({"role": m.role, "parts": parts});
            if let Some(id) = &m.tool_call_id {
                out["parts"] = json!([{
                    "type": "tool_call_response",
                    "id": id,
                    "response": m.content.as_ref().map(|c| match c {
                        Content::Text(t) => t.clone(),
                        Content::Parts(_) => String::new(),
                    }),
                }]);
            }
            out
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}
