//! What Anthropic answers: a message (as an OpenAI completion), its stop reasons, its usage
//! counts and its error types, as the gateway reads them (the stream translator in
//! `stream_normalize` uses the same tables).

use http::StatusCode;
use serde_json::{json, Value};

use crate::chat::{
    CacheCreationTokenDetails, ChatCompletion, Choice, FunctionCall, PromptTokensDetails,
    ReasoningDetail, ResponseMessage, ToolCall, Usage,
};

/// OpenAI finish reason for an Anthropic stop reason.
pub(crate) fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        // Bedrock's Converse adds its guardrails' and filters' stops.
        "refusal" | "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic usage counters (the stream overwrites them as they come).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    /// `cache_creation`'s breakdown of `cache_write` by lifetime (5 minutes, 1 hour), when
    /// Anthropic sent one.
    cache_write_by_ttl: Option<(u64, u64)>,
}

impl Counts {
    pub(crate) fn update(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(by_ttl) = u.get("cache_creation").filter(|c| c.is_object()) {
            let get = |k: &str| by_ttl.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.cache_write_by_ttl = Some((
                get("ephemeral_5m_input_tokens"),
                get("ephemeral_1h_input_tokens"),
            ));
        }
        if let Some(v) = get("input_tokens") {
            self.input = v;
        }
        if let Some(v) = get("output_tokens") {
            self.output = v;
        }
        if let Some(v) = get("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = get("cache_creation_input_tokens") {
            self.cache_write = v;
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        // Saturating: the counts are the provider's, whatever it sent.
        let prompt = self
            .input
            .saturating_add(self.cache_write)
            .saturating_add(self.cache_read);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output,
            total_tokens: prompt.saturating_add(self.output),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(self.cache_read),
                cache_write_tokens: Some(self.cache_write),
                cache_creation_token_details: self
                    .cache_write_by_ttl
                    .filter(|_| self.cache_write > 0)
                    .map(|(five_minutes, one_hour)| {
                        Box::new(CacheCreationTokenDetails {
                            ephemeral_5m_input_tokens: Some(five_minutes),
                            ephemeral_1h_input_tokens: Some(one_hour),
                            ..Default::default()
                        })
                    }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The status an Anthropic in-stream error type would have had as an HTTP answer.
pub(crate) fn error_status(kind: &str) -> StatusCode {
    match kind {
        "invalid_request_error" => StatusCode::BAD_REQUEST,
        "authentication_error" => StatusCode::UNAUTHORIZED,
        "billing_error" => StatusCode::PAYMENT_REQUIRED,
        "permission_error" => StatusCode::FORBIDDEN,
        "not_found_error" => StatusCode::NOT_FOUND,
        "request_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "rate_limit_error" => StatusCode::TOO_MANY_REQUESTS,
        "timeout_error" => StatusCode::GATEWAY_TIMEOUT,
        "overloaded_error" => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A non-streamed Anthropic message as an OpenAI completion (identity not yet stamped).
pub(crate) fn completion(v: &Value) -> Result<ChatCompletion, String> {
    if v.get("type").and_then(Value::as_str) != Some("message") {
        return Err("the answer is not an Anthropic message".into());
    }
    let blocks = v["content"]
        .as_array()
        .ok_or("the message has no `content` array")?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking = Vec::new();
    let mut details = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        let index = details.len() as u32;
        match b["type"].as_str().unwrap_or_default() {
            "text" => text.push_str(b["text"].as_str().unwrap_or_default()),
            "thinking" => {
                let t = b["thinking"].as_str().unwrap_or_default();
                reasoning.push_str(t);
                details.push(ReasoningDetail::text(
                    ReasoningDetail::ANTHROPIC,
                    index,
                    Some(t.to_owned()),
                    b["signature"].as_str().map(str::to_owned),
                ));
                thinking.push(b.clone());
            }
            "redacted_thinking" => {
                details.push(ReasoningDetail::encrypted(
                    ReasoningDetail::ANTHROPIC,
                    index,
                    b["data"].as_str().unwrap_or_default().to_owned(),
                ));
                thinking.push(b.clone());
            }
            "tool_use" => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(ToolCall {
                    id: b["id"].as_str().unwrap_or_default().to_owned(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: b["name"].as_str().unwrap_or_default().to_owned(),
                        arguments: serde_json::to_string(&input).unwrap_or_else(|_| "{}".into()),
                    },
                    extra: Default::default(),
                });
            }
            _ => {}
        }
    }
    if let (Some(first), false) = (calls.first_mut(), thinking.is_empty()) {
        first.extra.insert(
            "extra_content".into(),
            json!({"anthropic": {"thinking": thinking}}),
        );
    }
    let native = v["stop_reason"].as_str().unwrap_or("end_turn").to_owned();
    let mut counts = Counts::default();
    counts.update(&v["usage"]);
    Ok(ChatCompletion {
        id: format!("chatcmpl-{}", v["id"].as_str().unwrap_or_default()),
        object: "chat.completion".into(),
        created: crate::chat::unix_now(),
        model: v["model"].as_str().unwrap_or_default().to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                reasoning_content: (!reasoning.is_empty()).then(|| reasoning.clone()),
                reasoning: (!reasoning.is_empty()).then_some(reasoning),
                reasoning_details: (!details.is_empty()).then_some(details),
                tool_calls: (!calls.is_empty()).then_some(calls),
                extra: Default::default(),
            },
            finish_reason: Some(finish_reason(&native).to_owned()),
            native_finish_reason: Some(native),
            logprobs: None,
            extra: Default::default(),
        }],
        usage: Some(counts.usage()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_counts_saturate_instead_of_overflowing() {
        let mut counts = Counts::default();
        counts.update(&serde_json::json!({"input_tokens": u64::MAX,
            "cache_read_input_tokens": 5, "cache_creation_input_tokens": 7,
            "output_tokens": u64::MAX}));
        let usage = counts.usage();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (u64::MAX, u64::MAX, u64::MAX)
        );
    }
}
