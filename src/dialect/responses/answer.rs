//! The core's answer written as a Responses API `response` object.
//!
//! - `output`: a `reasoning` item (the reasoning text as its summary; with
//!   `include: ["reasoning.encrypted_content"]`, an `encrypted_content` carrying what the
//!   provider needs back on the next turn, see `request.rs`), a `message` with one
//!   `output_text` part, then a `function_call` per tool call (`custom_tool_call` for a tool
//!   declared `custom`, its `input` the call's one string);
//! - `status`: `completed`, or `incomplete` with `incomplete_details.reason` `max_output_tokens`
//!   (finish reason `length`) or `content_filter`;
//! - `usage`: `input_tokens` (with `cached_tokens`), `output_tokens` (with `reasoning_tokens`),
//!   `total_tokens`, and the gateway's `cost` when it priced the answer.

use serde::Serialize;
use serde_json::Value;

use super::request::{Echo, Shape, CARRIED};
use crate::chat::{ChatCompletion, Usage};

/// A `response` object.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResponseOut {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub status: &'static str,
    pub error: Option<ErrorOut>,
    pub incomplete_details: Option<Incomplete>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub model: String,
    pub output: Vec<Item>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub store: bool,
    pub temperature: Option<f64>,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_p: Option<f64>,
    pub truncation: &'static str,
    pub usage: Option<UsageOut>,
    pub metadata: serde_json::Map<String, Value>,
}

/// `error` of a failed response.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorOut {
    pub code: String,
    pub message: String,
}

/// `incomplete_details`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Incomplete {
    pub reason: &'static str,
}

/// An output item.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Item {
    Reasoning {
        id: String,
        summary: Vec<Summary>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<String>,
    },
    Message {
        id: String,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: &'static str,
    },
    CustomToolCall {
        id: String,
        call_id: String,
        name: String,
        input: String,
        status: &'static str,
    },
}

/// A reasoning summary part.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "summary_text")]
pub(crate) struct Summary {
    pub text: String,
}

/// An `output_text` content part.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "output_text")]
pub(crate) struct OutputText {
    pub text: String,
    pub annotations: [(); 0],
}

/// `usage` of a response.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UsageOut {
    pub input_tokens: u64,
    pub input_tokens_details: InputDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputDetails,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct InputDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OutputDetails {
    pub reasoning_tokens: u64,
}

impl UsageOut {
    pub(crate) fn of(u: &Usage) -> Self {
        UsageOut {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputDetails {
                cached_tokens: u
                    .prompt_tokens_details
                    .as_ref()
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0),
            },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputDetails {
                reasoning_tokens: u
                    .completion_tokens_details
                    .as_ref()
                    .and_then(|d| d.reasoning_tokens)
                    .unwrap_or(0),
            },
            total_tokens: u.total_tokens,
            cost: u.cost,
        }
    }
}

/// The status and incomplete reason for a finish reason.
pub(crate) fn status(finish: Option<&str>) -> (&'static str, Option<Incomplete>) {
    match finish {
        Some("length") => (
            "incomplete",
            Some(Incomplete {
                reason: "max_output_tokens",
            }),
        ),
        Some("content_filter") => (
            "incomplete",
            Some(Incomplete {
                reason: "content_filter",
            }),
        ),
        _ => ("completed", None),
    }
}

/// An item id: a prefix and the response's own id's unique part, with the item's place.
pub(crate) fn item_id(prefix: &str, response: &str, n: usize) -> String {
    format!("{prefix}_{}_{n}", response.trim_start_matches("gen-"))
}

/// The `encrypted_content` carrying a tool call's `extra_content`.
pub(crate) fn carried(extra_content: &Value) -> String {
    format!("{CARRIED}{extra_content}")
}

/// A tool call as its output item.
pub(crate) fn call_item(
    shape: &Shape,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
) -> Item {
    if shape.custom_tools.contains(&name) {
        let input = serde_json::from_str::<Value>(&arguments)
            .ok()
            .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or(arguments);
        return Item::CustomToolCall {
            id,
            call_id,
            name,
            input,
            status: "completed",
        };
    }
    Item::FunctionCall {
        id,
        call_id,
        name,
        arguments,
        status: "completed",
    }
}

/// An in-progress `response` (no output yet) for the request `echo`.
pub(crate) fn skeleton(id: &str, model: &str, created_at: u64, echo: &Echo) -> ResponseOut {
    ResponseOut {
        id: id.to_owned(),
        object: "response",
        created_at,
        status: "in_progress",
        error: None,
        incomplete_details: None,
        instructions: echo.instructions.clone(),
        max_output_tokens: echo.max_output_tokens,
        model: model.to_owned(),
        output: Vec::new(),
        parallel_tool_calls: echo.parallel_tool_calls.unwrap_or(true),
        previous_response_id: None,
        store: false,
        temperature: echo.temperature,
        tool_choice: echo
            .tool_choice
            .clone()
            .unwrap_or_else(|| Value::String("auto".into())),
        tools: echo.tools.clone(),
        top_p: echo.top_p,
        truncation: "disabled",
        usage: None,
        metadata: serde_json::Map::new(),
    }
}

/// The core's completion as a `response`, stamped with the gateway's `id`.
pub(crate) fn response(c: ChatCompletion, id: &str, shape: &Shape) -> ResponseOut {
    let mut out = skeleton(id, &c.model, c.created, &shape.echo);
    out.usage = c.usage.as_ref().map(UsageOut::of);
    let mut finish = None;
    if let Some(choice) = c.choices.into_iter().next() {
        finish = choice.finish_reason;
        let m = choice.message;
        let calls = m.tool_calls.unwrap_or_default();
        let encrypted = shape
            .encrypted_reasoning
            .then(|| calls.first().and_then(|c| c.extra.get("extra_content")))
            .flatten()
            .map(carried);
        let reasoning = m.reasoning_content.or_else(|| {
            m.extra
                .get("reasoning")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let reasoning = reasoning.filter(|t| !t.is_empty());
        if reasoning.is_some() || encrypted.is_some() {
            out.output.push(Item::Reasoning {
                id: item_id("rs", id, out.output.len()),
                summary: reasoning
                    .map(|text| vec![Summary { text }])
                    .unwrap_or_default(),
                encrypted_content: encrypted,
            });
        }
        if let Some(text) = m.content.filter(|t| !t.is_empty()) {
            out.output.push(Item::Message {
                id: item_id("msg", id, out.output.len()),
                status: "completed",
                role: "assistant",
                content: vec![OutputText {
                    text,
                    annotations: [],
                }],
            });
        }
        for call in calls {
            let item = call_item(
                shape,
                item_id("fc", id, out.output.len()),
                call.id,
                call.function.name,
                call.function.arguments,
            );
            out.output.push(item);
        }
    }
    let (status, incomplete) = status(finish.as_deref());
    out.status = status;
    out.incomplete_details = incomplete;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_becomes_a_response() {
        let c: ChatCompletion = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion","created":7,"model":"pub/m","choices":[{"index":0,
            "message":{"role":"assistant","content":"Looking.","reasoning_content":"think",
              "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"},
                             "extra_content":{"anthropic":{"thinking":[{"type":"thinking","signature":"s"}]}}},
                            {"id":"call_2","type":"function","function":{"name":"apply_patch","arguments":"{\"input\":\"*** Begin\"}"}}]},
            "finish_reason":"length"}],
            "usage":{"prompt_tokens":100,"completion_tokens":7,"total_tokens":107,"cost":0.5,
              "prompt_tokens_details":{"cached_tokens":60},"completion_tokens_details":{"reasoning_tokens":3}}}"#,
        )
        .unwrap();
        let shape = Shape {
            encrypted_reasoning: true,
            custom_tools: ["apply_patch".to_owned()].into(),
            ..Shape::default()
        };
        let out = serde_json::to_value(response(c, "gen-1", &shape)).unwrap();
        assert_eq!(out["id"], "gen-1");
        assert_eq!(out["object"], "response");
        assert_eq!(out["model"], "pub/m");
        assert_eq!(out["status"], "incomplete");
        assert_eq!(out["incomplete_details"]["reason"], "max_output_tokens");
        let o = &out["output"];
        assert_eq!(o[0]["type"], "reasoning");
        assert_eq!(
            o[0]["summary"][0],
            serde_json::json!({"type":"summary_text","text":"think"})
        );
        assert!(o[0]["encrypted_content"]
            .as_str()
            .unwrap()
            .starts_with("mg1:{\"anthropic\""));
        assert_eq!(o[1]["content"][0]["text"], "Looking.");
        assert_eq!(o[2]["type"], "function_call");
        assert_eq!(o[2]["call_id"], "call_1");
        assert_eq!(o[3]["type"], "custom_tool_call");
        assert_eq!(o[3]["input"], "*** Begin");
        assert_eq!(out["usage"]["input_tokens_details"]["cached_tokens"], 60);
        assert_eq!(out["usage"]["output_tokens_details"]["reasoning_tokens"], 3);
        assert_eq!(out["usage"]["cost"], 0.5);
    }
}
