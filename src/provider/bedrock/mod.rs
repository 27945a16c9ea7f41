//! Amazon Bedrock's Converse API: OpenAI Chat Completions to `Converse` / `ConverseStream`
//! and back, and the request's SigV4 signature.
//!
//! Converse says what Anthropic's Messages API says in other words, so the request is first
//! built by the Anthropic translation (which merges turns, places tool results, checks tool
//! arguments and reads images and documents) and then re-worded block by block:
//!
//! | Messages | Converse |
//! |---|---|
//! | `text` (with `cache_control`) | `text` (followed by a `cachePoint`) |
//! | `image` (base64) | `image {format, source.bytes}`; a URL is a 400 (Bedrock fetches none) |
//! | `document` (base64) | `document {format, name, source.bytes}` |
//! | `tool_use` / `tool_result` (`is_error`) | `toolUse` / `toolResult` (`status: "error"`) |
//! | `thinking` + `signature`, `redacted_thinking` | `reasoningContent.reasoningText`, `reasoningContent.redactedContent` |
//! | `system` | `system` |
//! | `tools`, `tool_choice` | `toolConfig.tools[].toolSpec`, `toolConfig.toolChoice` (`auto`, `any`, `tool`) |
//! | `max_tokens`, `temperature`, `top_p`, `stop_sequences` | `inferenceConfig` |
//! | `thinking`, `top_k`, `output_config`, … | `additionalModelRequestFields` (the model's own) |
//!
//! `maxTokens` is sent only when the client, the endpoint (`max_output_tokens`) or the
//! thinking budget bounds the answer: each Bedrock model has its own limit and default.
//! Answers come back the same way: a Converse message is read as the Anthropic message it
//! words, and `stream_normalize` turns ConverseStream's events into Anthropic's. Stop reasons
//! are Anthropic's, plus `guardrail_intervened` and `content_filtered` (`content_filter`).

pub(crate) mod embeddings;
mod sign;

/// The media type of ConverseStream's answers.
pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

use serde_json::{json, Map, Value};

pub use self::sign::AwsCredentials;
pub(crate) use self::sign::Signer;
use super::anthropic;
use super::invalid as bad;
use crate::chat::{ChatCompletion, ChatRequest};
use crate::Error;

/// The Converse body for `req`. `max_output_tokens`: the endpoint's bound on the answer.
pub(crate) fn request(req: &ChatRequest, max_output_tokens: Option<u32>) -> Result<Value, Error> {
    let asked = req.max_completion_tokens.or(req.max_tokens);
    let a = anthropic::request(
        req,
        "",
        max_output_tokens.unwrap_or(anthropic::DEFAULT_MAX_TOKENS),
    )?;
    let bounded = asked.is_some() || max_output_tokens.is_some() || a.get("thinking").is_some();
    converse(a, bounded)
}

/// Re-words an Anthropic Messages body as a Converse body (see the [module docs](self)).
fn converse(a: Value, bounded: bool) -> Result<Value, Error> {
    let Value::Object(mut a) = a else {
        return Err(Error::internal(
            "the Anthropic translation is not an object",
        ));
    };
    let mut body = Map::new();
    let mut messages = Vec::new();
    for (i, m) in take_array(&mut a, "messages").into_iter().enumerate() {
        let role = m["role"].clone();
        let mut content = Vec::new();
        for (j, block) in blocks(&m["content"]).into_iter().enumerate() {
            push_block(&mut content, block, &format!("messages[{i}].content[{j}]"))?;
        }
        messages.push(json!({"role": role, "content": content}));
    }
    body.insert("messages".into(), Value::Array(messages));
    let system = take_array(&mut a, "system");
    if !system.is_empty() {
        let mut out = Vec::new();
        for (i, block) in system.into_iter().enumerate() {
            push_block(&mut out, block, &format!("system[{i}]"))?;
        }
        body.insert("system".into(), Value::Array(out));
    }

    let mut inference = Map::new();
    if bounded {
        if let Some(max) = a.remove("max_tokens") {
            inference.insert("maxTokens".into(), max);
        }
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("stop_sequences", "stopSequences"),
    ] {
        if let Some(v) = a.remove(from) {
            inference.insert(to.into(), v);
        }
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }

    let tools = take_array(&mut a, "tools");
    if !tools.is_empty() {
        let mut specs = Vec::new();
        for t in tools {
            let mut spec = Map::new();
            spec.insert("name".into(), t["name"].clone());
            if let Some(d) = t.get("description") {
                spec.insert("description".into(), d.clone());
            }
            spec.insert("inputSchema".into(), json!({"json": t["input_schema"]}));
            specs.push(json!({ "toolSpec": spec }));
            if t.get("cache_control").is_some() {
                specs.push(cache_point());
            }
        }
        let mut config = Map::new();
        config.insert("tools".into(), Value::Array(specs));
        let choice = a.remove("tool_choice");
        match choice.as_ref().and_then(|c| c["type"].as_str()) {
            Some("any") => {
                config.insert("toolChoice".into(), json!({"any": {}}));
            }
            Some("tool") => {
                let name = choice.as_ref().map_or(Value::Null, |c| c["name"].clone());
                config.insert("toolChoice".into(), json!({"tool": {"name": name}}));
            }
            // `auto` is Converse's default; it has no `none`: the tools stay (the history may
            // hold their calls, which need them) and the model chooses.
            _ => {}
        }
        body.insert("toolConfig".into(), Value::Object(config));
    }

    // What only the model understands goes in `additionalModelRequestFields`.
    let mut additional = Map::new();
    for key in ["thinking", "top_k", "output_config", "anthropic_beta"] {
        if let Some(v) = a.remove(key) {
            additional.insert(key.into(), v);
        }
    }
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }
    Ok(Value::Object(body))
}

fn take_array(a: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match a.remove(key) {
        Some(Value::Array(v)) => v,
        _ => Vec::new(),
    }
}

/// A block list, or a string as one text block.
fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::Array(v) => v.clone(),
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        _ => Vec::new(),
    }
}

fn cache_point() -> Value {
    json!({"cachePoint": {"type": "default"}})
}

/// Appends the Converse form of one Messages block (and its cache point) to `out`.
fn push_block(out: &mut Vec<Value>, b: Value, at: &str) -> Result<(), Error> {
    let cached = b.get("cache_control").is_some();
    let block = match b["type"].as_str().unwrap_or_default() {
        "text" => json!({"text": b["text"]}),
        "image" => {
            let (format, bytes) = base64_source(&b, at, "an image")?;
            let format = format.strip_prefix("image/").unwrap_or(format);
            json!({"image": {"format": format, "source": {"bytes": bytes}}})
        }
        "document" => {
            let (media, bytes) = base64_source(&b, at, "a document")?;
            let format = document_format(media).ok_or_else(|| {
                bad(
                    at,
                    format!("Bedrock takes no documents of type `{media}` (pdf, csv, doc, docx, xls, xlsx, html, txt, md)"),
                )
            })?;
            let name = b["title"].as_str().unwrap_or("document");
            json!({"document": {"format": format, "name": name, "source": {"bytes": bytes}}})
        }
        "tool_use" => json!({"toolUse": {
            "toolUseId": b["id"], "name": b["name"], "input": b.get("input").cloned().unwrap_or_else(|| json!({}))
        }}),
        "tool_result" => {
            let mut content = Vec::new();
            for (k, inner) in blocks(&b["content"]).into_iter().enumerate() {
                push_block(&mut content, inner, &format!("{at}.content[{k}]"))?;
            }
            content.retain(|c| c.get("cachePoint").is_none());
            let mut r = json!({"toolUseId": b["tool_use_id"], "content": content});
            if b["is_error"] == true {
                r["status"] = json!("error");
            }
            json!({ "toolResult": r })
        }
        "thinking" => json!({"reasoningContent": {"reasoningText": {
            "text": b["thinking"], "signature": b["signature"]
        }}}),
        "redacted_thinking" => json!({"reasoningContent": {"redactedContent": b["data"]}}),
        other => {
            return Err(bad(
                at,
                format!("a `{other}` block cannot be sent to Bedrock"),
            ))
        }
    };
    out.push(block);
    if cached {
        out.push(cache_point());
    }
    Ok(())
}

/// The media type and base64 data of an image or document block.
fn base64_source<'a>(b: &'a Value, at: &str, what: &str) -> Result<(&'a str, &'a Value), Error> {
    let source = &b["source"];
    if source["type"] != "base64" {
        return Err(bad(
            at,
            format!(
                "{what} must be sent as data (a `data:` URI) to Bedrock, which fetches no URLs"
            ),
        ));
    }
    Ok((
        source["media_type"].as_str().unwrap_or_default(),
        &source["data"],
    ))
}

fn document_format(media: &str) -> Option<&'static str> {
    Some(match media {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        _ => return None,
    })
}

/// Converse usage as Anthropic's (`inputTokens` counts what the cache did not serve, as
/// Anthropic's `input_tokens` does).
pub(crate) fn usage(u: &Value) -> Value {
    let mut out = Map::new();
    for (from, to) in [
        ("inputTokens", "input_tokens"),
        ("outputTokens", "output_tokens"),
        ("cacheReadInputTokens", "cache_read_input_tokens"),
        ("cacheWriteInputTokens", "cache_creation_input_tokens"),
    ] {
        if let Some(v) = u.get(from).filter(|v| v.is_u64()) {
            out.insert(to.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// A Converse content block as the Anthropic block it words (`None` for one the gateway does
/// not read: guardrail traces, citations).
pub(crate) fn anthropic_block(b: &Value) -> Option<Value> {
    if let Some(t) = b.get("text") {
        return Some(json!({"type": "text", "text": t}));
    }
    if let Some(t) = b.get("toolUse") {
        return Some(
            json!({"type": "tool_use", "id": t["toolUseId"], "name": t["name"], "input": t["input"]}),
        );
    }
    let r = b.get("reasoningContent")?;
    if let Some(t) = r.get("reasoningText") {
        return Some(
            json!({"type": "thinking", "thinking": t["text"], "signature": t["signature"]}),
        );
    }
    r.get("redactedContent")
        .map(|d| json!({"type": "redacted_thinking", "data": d}))
}

/// A non-streamed Converse answer as an OpenAI completion (identity not yet stamped).
pub(crate) fn completion(v: &Value) -> Result<ChatCompletion, String> {
    let content = v["output"]["message"]["content"]
        .as_array()
        .ok_or("the answer has no `output.message.content` array")?;
    let message = json!({
        "type": "message",
        "id": "",
        "model": "",
        "content": content.iter().filter_map(anthropic_block).collect::<Vec<_>>(),
        "stop_reason": v["stopReason"].as_str().unwrap_or("end_turn"),
        "usage": usage(&v["usage"]),
    });
    anthropic::completion(&message)
}

/// The status a ConverseStream exception stands for.
pub(crate) fn exception_status(exception: &str) -> http::StatusCode {
    use http::StatusCode as S;
    match exception {
        "throttlingException" | "ThrottlingException" => S::TOO_MANY_REQUESTS,
        "validationException" | "ValidationException" => S::BAD_REQUEST,
        "serviceUnavailableException" | "ServiceUnavailableException" => S::SERVICE_UNAVAILABLE,
        "modelTimeoutException" | "ModelTimeoutException" => S::GATEWAY_TIMEOUT,
        "internalServerException" | "InternalServerException" => S::INTERNAL_SERVER_ERROR,
        _ => S::BAD_GATEWAY,
    }
}

/// The Converse method's path for `model` (an id, an inference profile id or an ARN, every
/// reserved character percent-encoded as the AWS SDKs send it).
pub(crate) fn path(model: &str, stream: bool) -> String {
    let method = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("/model/{}/{method}", encode(model))
}

/// The `InvokeModel` path for `model` (embeddings, Claude's own Messages), or
/// `InvokeModelWithResponseStream`'s.
pub(crate) fn invoke_path(model: &str, stream: bool) -> String {
    let method = if stream {
        "invoke-with-response-stream"
    } else {
        "invoke"
    };
    format!("/model/{}/{method}", encode(model))
}

/// Whether `model` is one of Anthropic's Claude models on Bedrock (an id or an inference
/// profile id), which take Anthropic's Messages body through `InvokeModel`.
pub(crate) fn is_claude(model: &str) -> bool {
    model.contains("anthropic.claude")
}

/// The `anthropic_version` Bedrock takes for Claude's own Messages body.
pub(crate) const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Every reserved character encoded, `:` and `/` included, as the AWS SDKs send model ids.
fn encode(model: &str) -> String {
    super::percent_encode(model, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_conversation_with_tools_images_and_thinking_is_worded_for_converse() {
        let req = chat(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0", "filename": "a.pdf"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}
                ], "reasoning_details": [
                    {"type": "reasoning.text", "text": "hmm", "signature": "sig", "format": "anthropic-claude-v1", "index": 0}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks.", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "temperature": 0.5,
            "stop": ["END"],
            "max_tokens": 300,
            "top_k": 5
        }));
        let body = request(&req, None).unwrap();
        assert_eq!(body["system"], json!([{"text": "Be brief."}]));
        let user = &body["messages"][0];
        assert_eq!(user["role"], "user");
        assert_eq!(user["content"][0], json!({"text": "What is this?"}));
        assert_eq!(
            user["content"][1],
            json!({"image": {"format": "png", "source": {"bytes": "iVBOR"}}})
        );
        assert_eq!(user["content"][2]["document"]["format"], "pdf");
        let assistant = &body["messages"][1]["content"];
        assert_eq!(
            assistant[0],
            json!({"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}})
        );
        assert_eq!(
            assistant[1],
            json!({"toolUse": {"toolUseId": "call_1", "name": "look", "input": {"q": 1}}})
        );
        assert_eq!(
            body["messages"][2]["content"][0],
            json!({"toolResult": {"toolUseId": "call_1", "content": [{"text": "a cat"}]}})
        );
        assert_eq!(
            body["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "look", "description": "Looks.", "inputSchema": {"json": {"type": "object"}}}}],
                   "toolChoice": {"any": {}}})
        );
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 300, "temperature": 0.5, "stopSequences": ["END"]})
        );
        assert_eq!(body["additionalModelRequestFields"], json!({"top_k": 5}));
        assert!(body.get("model").is_none() && body.get("stream").is_none());
    }

    #[test]
    fn max_tokens_only_when_something_bounds_the_answer() {
        let plain = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        assert!(request(&plain, None)
            .unwrap()
            .get("inferenceConfig")
            .is_none());
        assert_eq!(
            request(&plain, Some(1000)).unwrap()["inferenceConfig"]["maxTokens"],
            1000
        );
        let thinking = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "reasoning": {"max_tokens": 2000}}),
        );
        let body = request(&thinking, None).unwrap();
        assert_eq!(
            body["additionalModelRequestFields"]["thinking"],
            json!({"type": "enabled", "budget_tokens": 2000})
        );
        assert!(body["inferenceConfig"]["maxTokens"].as_u64().unwrap() > 2000);
    }

    #[test]
    fn an_image_url_is_a_400_naming_the_block() {
        let req = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
            ]}]}),
        );
        let e = request(&req, None).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.param(), Some("messages[0].content[0]"));
    }

    #[test]
    fn an_answer_is_read_as_the_anthropic_message_it_words() {
        let v = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "Sum.", "signature": "sig"}}},
                {"text": "4"},
                {"toolUse": {"toolUseId": "t1", "name": "calc", "input": {"a": 1}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7}
        });
        let c = completion(&v).unwrap();
        let m = &c.choices[0].message;
        assert_eq!(m.content.as_deref(), Some("4"));
        assert_eq!(m.reasoning.as_deref(), Some("Sum."));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].id, "t1");
        assert_eq!(calls[0].function.arguments, r#"{"a":1}"#);
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (117, 5));
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(100));
        let filtered = completion(
            &json!({"output": {"message": {"content": []}}, "stopReason": "guardrail_intervened"}),
        )
        .unwrap();
        assert_eq!(
            filtered.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
    }

    #[test]
    fn model_ids_profiles_and_arns_are_one_encoded_segment() {
        assert_eq!(
            path("us.anthropic.claude-sonnet-4-5-20250929-v1:0", true),
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
        );
        assert_eq!(
            path("arn:aws:bedrock:us-east-1:1:inference-profile/x", false),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse"
        );
    }
}
