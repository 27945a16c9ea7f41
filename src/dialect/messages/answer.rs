//! The core's answer written as a Messages API `message`.
//!
//! - content blocks in order: `thinking` (the reasoning text), `text`, then one `tool_use` per
//!   tool call (its `input` the parsed arguments, `{}` when they are empty or not an object;
//!   an id made, `toolu_…`, when the provider gave none);
//! - `stop_reason`: `stop` → `end_turn` (`stop_sequence` when a stop sequence matched and the
//!   provider said which), `length` → `max_tokens`, `tool_calls` (or tool calls with any
//!   reason) → `tool_use`, `content_filter` → `refusal`;
//! - `usage`: `input_tokens` without the cached ones, `output_tokens`,
//!   `cache_read_input_tokens` and `cache_creation_input_tokens`.

use serde::Serialize;
use serde_json::Value;

use crate::chat::{ChatCompletion, Usage};

/// A `message` as the Messages API answers it.
#[derive(Debug, Serialize)]
pub(crate) struct MessageOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<Block>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<String>,
    pub usage: UsageOut,
}

/// A content block of an answer.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Block {
    Thinking {
        thinking: String,
        signature: String,
    },
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

/// `usage` of an answer.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct UsageOut {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

impl UsageOut {
    /// The core's usage in Anthropic's terms: `input_tokens` counts only what was neither
    /// read from nor written to a cache.
    pub(crate) fn of(u: &Usage) -> Self {
        let details = u.prompt_tokens_details.as_ref();
        let read = details.and_then(|d| d.cached_tokens).unwrap_or(0);
        let write = details.and_then(|d| d.cache_write_tokens).unwrap_or(0);
        UsageOut {
            input_tokens: u.prompt_tokens.saturating_sub(read).saturating_sub(write),
            cache_creation_input_tokens: write,
            cache_read_input_tokens: read,
            output_tokens: u.completion_tokens,
        }
    }
}

/// Anthropic's stop reason for an OpenAI finish reason.
pub(crate) fn stop_reason(finish: Option<&str>, called_tools: bool) -> &'static str {
    if called_tools {
        return "tool_use";
    }
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A tool call's arguments as the `input` object of a `tool_use` block.
pub(crate) fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(serde_json::Map::new()),
    }
}

/// A `toolu_…` id for a tool call the provider gave none.
pub(crate) fn tool_id(id: Option<&str>) -> String {
    match id.filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => format!(
            "toolu_{}",
            crate::facts::GenerationId::new()
                .as_str()
                .trim_start_matches("gen-")
        ),
    }
}

/// The core's completion as a `message`, stamped with the gateway's `id` and the public
/// `model`.
pub(crate) fn message<'a>(c: ChatCompletion, id: &'a str, model: &'a str) -> MessageOut<'a> {
    let usage = c.usage.as_ref().map(UsageOut::of).unwrap_or_default();
    let mut content = Vec::new();
    let mut finish = None;
    let mut called = false;
    if let Some(choice) = c.choices.into_iter().next() {
        finish = choice.finish_reason;
        let m = choice.message;
        let reasoning = m.reasoning_content.or_else(|| {
            m.extra
                .get("reasoning")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if let Some(thinking) = reasoning.filter(|t| !t.is_empty()) {
            content.push(Block::Thinking {
                thinking,
                signature: String::new(),
            });
        }
        if let Some(text) = m.content.filter(|t| !t.is_empty()) {
            content.push(Block::Text { text });
        }
        for call in m.tool_calls.into_iter().flatten() {
            called = true;
            content.push(Block::ToolUse {
                id: tool_id(Some(&call.id)),
                input: tool_input(&call.function.arguments),
                name: call.function.name,
            });
        }
    }
    MessageOut {
        id,
        kind: "message",
        role: "assistant",
        model,
        content,
        stop_reason: Some(stop_reason(finish.as_deref(), called)),
        stop_sequence: None,
        usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_becomes_a_message() {
        let c: ChatCompletion = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,
            "message":{"role":"assistant","content":"Looking.","reasoning_content":"think",
              "tool_calls":[{"id":"","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
                            {"id":"call_2","type":"function","function":{"name":"g","arguments":""}}]},
            "finish_reason":"stop"}],
            "usage":{"prompt_tokens":100,"completion_tokens":7,"total_tokens":107,
              "prompt_tokens_details":{"cached_tokens":60,"cache_write_tokens":10}}}"#,
        )
        .unwrap();
        let out = serde_json::to_value(message(c, "gen-1", "pub/m")).unwrap();
        assert_eq!(out["id"], "gen-1");
        assert_eq!(out["type"], "message");
        assert_eq!(out["model"], "pub/m");
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(out["content"][0]["type"], "thinking");
        assert_eq!(
            out["content"][1],
            serde_json::json!({"type":"text","text":"Looking."})
        );
        assert_eq!(out["content"][2]["input"], serde_json::json!({"a":1}));
        assert!(out["content"][2]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_"));
        assert_eq!(out["content"][3]["id"], "call_2");
        assert_eq!(out["content"][3]["input"], serde_json::json!({}));
        assert_eq!(
            out["usage"],
            serde_json::json!({"input_tokens":30,"cache_creation_input_tokens":10,"cache_read_input_tokens":60,"output_tokens":7})
        );
    }

    #[test]
    fn stop_reasons_map() {
        assert_eq!(stop_reason(Some("stop"), false), "end_turn");
        assert_eq!(stop_reason(Some("length"), false), "max_tokens");
        assert_eq!(stop_reason(Some("tool_calls"), false), "tool_use");
        assert_eq!(stop_reason(Some("stop"), true), "tool_use");
        assert_eq!(stop_reason(Some("content_filter"), false), "refusal");
        assert_eq!(stop_reason(None, false), "end_turn");
    }
}
