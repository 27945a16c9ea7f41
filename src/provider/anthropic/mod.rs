//! OpenAI Chat Completions request to Anthropic Messages request.
//!
//! - `system` and `developer` messages, wherever they are, are hoisted into `system` (text
//!   blocks, `cache_control` kept); consecutive turns of one role are merged, and the tool
//!   results of one batch go into a single `user` message, before any text;
//! - assistant `tool_calls` become `tool_use` blocks (`arguments` parsed: it must be a JSON
//!   object), preceded by the thinking blocks the gateway handed the client on the first tool
//!   call (`extra_content.anthropic.thinking`), so multi-turn tool use with thinking works;
//! - `image_url` data URIs become base64 sources, http(s) URLs URL sources; PDFs in `file`
//!   parts become documents;
//! - `temperature` is **clamped** to Anthropic's 0–1 (OpenAI's range is 0–2; a value above 1
//!   is sent as 1, not scaled); `max_tokens` is required, so the endpoint's
//!   `max_output_tokens` (or [`DEFAULT_MAX_TOKENS`]) fills in;
//! - `reasoning_effort` / `reasoning` become a thinking budget (OpenRouter's ratios of
//!   `max_tokens`: high 0.8, medium 0.5, low and minimal 0.2, at least 1024);
//! - structured output (`response_format` `json_schema`) and `strict` tools get a schema
//!   Anthropic accepts (`schema.rs`: unsupported keywords such as zod's integer bounds are
//!   described, not sent); `strict: true` is carried to the tool;
//! - `n > 1`, `logprobs` and `top_logprobs` are refused with a 400 (through
//!   [`Dispatch`](crate::dispatch::Dispatch) the parameter rule has dropped the last two
//!   already); `seed`, `presence_penalty` and `frequency_penalty` have no Anthropic equivalent
//!   and are dropped;
//! - OpenRouter's `reasoning_details` on an assistant message become thinking blocks again
//!   (signed texts, redacted data), when no `extra_content` carries them.

mod answer;
mod schema;

pub(crate) use self::answer::{completion, error_status, finish_reason, Counts};

use serde_json::{json, Map, Value};

use super::{invalid as bad, named_tool, stop_sequences, tool_arguments};
use crate::chat::{
    ChatRequest, Content, ContentPart, Message, ReasoningDetail, ResponseFormat, Role, ToolChoice,
};
use crate::Error;

/// `anthropic-version` sent with every request.
pub(crate) const VERSION: &str = "2023-06-01";

/// `max_tokens` when neither the client nor the catalog gives one.
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Smallest thinking budget Anthropic accepts.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Client fields with the same meaning in Anthropic's API, forwarded as they are. Every other
/// unknown field is OpenAI-specific and is not sent (Anthropic refuses unknown fields).
const PASSTHROUGH: &[&str] = &[
    "top_k",
    "thinking",
    "metadata",
    "output_config",
    "container",
    "mcp_servers",
    "context_management",
    "service_tier",
];

/// Builds the Messages API body.
pub(crate) fn request(req: &ChatRequest, model: &str, default_max: u32) -> Result<Value, Error> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad("n", "`n` > 1 is not supported by Anthropic models"));
    }
    if req.logprobs == Some(true) || req.top_logprobs.is_some() {
        return Err(bad(
            "logprobs",
            "`logprobs` is not supported by Anthropic models",
        ));
    }
    let mut body = Map::new();
    body.insert("model".into(), Value::String(model.to_owned()));
    let mut max_tokens = u64::from(
        req.max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(default_max),
    );

    // Reasoning: `reasoning_effort`, OpenRouter's `reasoning {effort, max_tokens, enabled}`.
    let ask = req.reasoning_ask();
    let budget = if ask.enabled != Some(true) {
        None
    } else if let Some(b) = ask.budget {
        Some(u64::from(b).max(MIN_THINKING_BUDGET))
    } else {
        let ratio = match ask.effort.unwrap_or("medium") {
            "minimal" | "low" => 0.2,
            "medium" => 0.5,
            "high" | "xhigh" | "max" => 0.8,
            other => {
                return Err(bad(
                    "reasoning_effort",
                    format!(
                        "unknown `reasoning_effort` `{other}` (none, minimal, low, medium, high)"
                    ),
                ))
            }
        };
        Some(((max_tokens as f64 * ratio) as u64).clamp(MIN_THINKING_BUDGET, 32_000))
    };
    if let Some(budget) = budget {
        if budget >= max_tokens {
            if req.max_completion_tokens.or(req.max_tokens).is_some() {
                return Err(bad(
                    "max_tokens",
                    format!(
                        "with reasoning on, `max_tokens` must exceed the thinking budget ({budget} tokens)"
                    ),
                ));
            }
            max_tokens = budget + u64::from(default_max);
        }
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    body.insert("max_tokens".into(), Value::from(max_tokens));

    let (system, messages) = messages(&req.messages)?;
    let mut system = system;
    if matches!(req.response_format, Some(ResponseFormat::JsonObject)) {
        // Anthropic has no JSON mode: ask for it in words.
        system.push(
            json!({"type": "text", "text": "Answer with one valid JSON object and nothing else."}),
        );
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(messages));

    if let Some(tools) = &req.tools {
        let list: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut tool = Map::new();
                tool.insert("name".into(), Value::String(t.function.name.clone()));
                if let Some(d) = &t.function.description {
                    tool.insert("description".into(), Value::String(d.clone()));
                }
                let schema = t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                if t.function.strict == Some(true) {
                    // Strict tool use holds the input to the schema: one the API accepts.
                    tool.insert("input_schema".into(), schema::strict(&schema));
                    tool.insert("strict".into(), Value::Bool(true));
                } else {
                    tool.insert("input_schema".into(), schema);
                }
                if let Some(c) = t.extra.get("cache_control") {
                    tool.insert("cache_control".into(), c.clone());
                }
                Value::Object(tool)
            })
            .collect();
        if !list.is_empty() {
            body.insert("tools".into(), Value::Array(list));
        }
    }
    let no_parallel = req.parallel_tool_calls == Some(false);
    let choice = match &req.tool_choice {
        None if no_parallel && req.tools.as_ref().is_some_and(|t| !t.is_empty()) => {
            Some(json!({"type": "auto"}))
        }
        None => None,
        Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => {
                return Err(bad(
                    "tool_choice",
                    format!("unknown `tool_choice` `{other}` (none, auto, required or a function)"),
                ))
            }
        }),
        Some(ToolChoice::Named(v)) => Some(json!({"type": "tool", "name": named_tool(v)?})),
    };
    if let Some(mut choice) = choice {
        let kind = choice["type"].as_str().unwrap_or("auto");
        if budget.is_some() && matches!(kind, "any" | "tool") {
            return Err(bad(
                "tool_choice",
                "Anthropic models cannot be forced to call a tool while reasoning; use `auto` or turn reasoning off",
            ));
        }
        if no_parallel && kind != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        body.insert("tool_choice".into(), choice);
    }
    if let Some(list) = stop_sequences(req) {
        body.insert("stop_sequences".into(), json!(list));
    }
    if budget.is_none() {
        // Anthropic refuses sampling changes while thinking.
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), Value::from(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), Value::from(p));
        }
    }
    if let Some(ResponseFormat::JsonSchema { json_schema }) = &req.response_format {
        let schema = json_schema.get("schema").cloned().ok_or_else(|| {
            bad(
                "response_format.json_schema.schema",
                "`json_schema.schema` is missing",
            )
        })?;
        body.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": schema::strict(&schema)}}),
        );
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.is_stream() {
        body.insert("stream".into(), Value::Bool(true));
    }
    for key in PASSTHROUGH {
        if let Some(v) = req.extra.get(*key) {
            body.insert((*key).to_owned(), v.clone());
        }
    }
    Ok(Value::Object(body))
}

/// Splits the conversation into `system` blocks and Anthropic messages.
fn messages(list: &[Message]) -> Result<(Vec<Value>, Vec<Value>), Error> {
    let mut system = Vec::new();
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        match m.role {
            Role::System | Role::Developer => {
                system.extend(text_blocks(m.content.as_ref(), &at("content"))?);
                continue;
            }
            Role::Function => {
                return Err(bad(
                    &at("role"),
                    "the deprecated `function` role is not supported; use `tool`",
                ))
            }
            _ => {}
        }
        let (role, blocks) = match m.role {
            Role::User => ("user", user_blocks(m.content.as_ref(), &at("content"))?),
            Role::Assistant => ("assistant", assistant_blocks(m, i)?),
            _ => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    bad(&at("tool_call_id"), "a `tool` message needs `tool_call_id`")
                })?;
                let content = match &m.content {
                    None => Value::String(String::new()),
                    Some(Content::Text(t)) => Value::String(t.clone()),
                    Some(Content::Parts(_)) => {
                        Value::Array(user_blocks(m.content.as_ref(), &at("content"))?)
                    }
                };
                let mut block =
                    json!({"type": "tool_result", "tool_use_id": id, "content": content});
                if let Some(e) = m.extra.get("is_error") {
                    block["is_error"] = e.clone();
                }
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((r, prev)) if *r == role => prev.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    let messages = out
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == "user" {
                // A batch of tool results comes before any text of the same turn.
                blocks
                    .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            }
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, messages))
}

fn text_blocks(content: Option<&Content>, at: &str) -> Result<Vec<Value>, Error> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![json!({"type": "text", "text": t})],
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Text { text, extra } => out.push(text_block(text, extra)),
                    _ => {
                        return Err(bad(
                            &format!("{at}[{j}]"),
                            "system messages can hold text parts only",
                        ))
                    }
                }
            }
            out
        }
    })
}

fn text_block(text: &str, extra: &crate::chat::Extra) -> Value {
    let mut b = json!({"type": "text", "text": text});
    if let Some(c) = extra.get("cache_control") {
        b["cache_control"] = c.clone();
    }
    b
}

fn user_blocks(content: Option<&Content>, at: &str) -> Result<Vec<Value>, Error> {
    let parts = match content {
        Some(Content::Parts(parts)) => parts,
        other => return text_blocks(other, at),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let block = match p {
            ContentPart::Text { text, extra } => text_block(text, extra),
            ContentPart::ImageUrl { image_url, extra } => {
                let source = match parse_data_uri(&image_url.url) {
                    Some((media_type, data)) => {
                        json!({"type": "base64", "media_type": media_type, "data": data})
                    }
                    None if image_url.url.starts_with("http://")
                        || image_url.url.starts_with("https://") =>
                    {
                        json!({"type": "url", "url": image_url.url})
                    }
                    None => {
                        return Err(bad(
                            &format!("{here}.image_url.url"),
                            "an image URL must be http(s) or a base64 data: URI",
                        ))
                    }
                };
                let mut b = json!({"type": "image", "source": source});
                if let Some(c) = extra.get("cache_control") {
                    b["cache_control"] = c.clone();
                }
                b
            }
            ContentPart::File { file, .. } => {
                match file.file_data.as_deref().and_then(parse_data_uri) {
                    Some((media_type, data)) => {
                        json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}})
                    }
                    None => return Err(bad(
                        &format!("{here}.file"),
                        "Anthropic models take files as inline base64 `file_data` data: URIs only",
                    )),
                }
            }
            ContentPart::InputAudio { .. } => {
                return Err(bad(&here, "Anthropic models do not accept audio input"))
            }
            ContentPart::Refusal { refusal, .. } => json!({"type": "text", "text": refusal}),
            ContentPart::Other(v) => Value::Object(v.clone()),
        };
        out.push(block);
    }
    Ok(out)
}

fn assistant_blocks(m: &Message, i: usize) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    let calls = m.tool_calls.as_deref().unwrap_or_default();
    // Thinking blocks the gateway carried to the client go back first, unchanged.
    let carried = calls
        .iter()
        .find_map(|c| c.extra.get("extra_content"))
        .or_else(|| m.extra.get("extra_content"))
        .and_then(|e| e.get("anthropic"))
        .and_then(|a| a.get("thinking"))
        .and_then(Value::as_array);
    if let Some(blocks) = carried {
        out.extend(blocks.iter().cloned());
    } else {
        // OpenRouter's form of the same blocks: signed texts and redacted (encrypted) ones.
        for d in super::reasoning_details(m, ReasoningDetail::ANTHROPIC) {
            match (d.kind.as_str(), d.signature, d.data) {
                ("reasoning.text", Some(signature), _) => out.push(json!({
                    "type": "thinking",
                    "thinking": d.text.unwrap_or_default(),
                    "signature": signature,
                })),
                ("reasoning.encrypted", _, Some(data)) => {
                    out.push(json!({"type": "redacted_thinking", "data": data}))
                }
                // Unsigned thinking cannot go back: Anthropic refuses it.
                _ => {}
            }
        }
    }
    match &m.content {
        Some(Content::Text(t)) if !t.is_empty() => out.push(json!({"type": "text", "text": t})),
        Some(Content::Parts(parts)) => {
            for p in parts {
                match p {
                    ContentPart::Text { text, extra } if !text.is_empty() => {
                        out.push(text_block(text, extra))
                    }
                    ContentPart::Refusal { refusal, .. } => {
                        out.push(json!({"type": "text", "text": refusal}))
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    for (j, call) in calls.iter().enumerate() {
        let input = tool_arguments(call, i, j)?;
        out.push(
            json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}),
        );
    }
    Ok(out)
}

/// `data:<media type>;base64,<data>` to its media type and data.
pub(crate) fn parse_data_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    let media_type = head.strip_suffix(";base64")?;
    if media_type.is_empty() {
        return None;
    }
    Some((media_type, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hoists_system_merges_turns_and_batches_tool_results() {
        let r = req(r#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":"weather?"},
            {"role":"developer","content":[{"type":"text","text":"cache me","cache_control":{"type":"ephemeral"}}]},
            {"role":"user","content":"and time?"},
            {"role":"assistant","content":"checking","tool_calls":[
                {"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\"}"}},
                {"id":"toolu_2","type":"function","function":{"name":"get_time","arguments":""}}]},
            {"role":"tool","tool_call_id":"toolu_1","content":"sunny"},
            {"role":"tool","tool_call_id":"toolu_2","content":[{"type":"text","text":"noon"}]},
            {"role":"user","content":"thanks"}
        ],"temperature":1.7,"top_p":0.9,"stop":"END","user":"u-1","max_completion_tokens":300}"#);
        let b = request(&r, "claude-x", 4096).unwrap();
        assert_eq!(b["model"], "claude-x");
        assert_eq!(b["max_tokens"], 300);
        assert_eq!(b["temperature"], 1.0, "clamped to Anthropic's range");
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["stop_sequences"], json!(["END"]));
        assert_eq!(b["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(
            b["system"],
            json!([{"type":"text","text":"be brief"},{"type":"text","text":"cache me","cache_control":{"type":"ephemeral"}}])
        );
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(
            msgs[0],
            json!({"role":"user","content":[{"type":"text","text":"weather?"},{"type":"text","text":"and time?"}]})
        );
        assert_eq!(
            msgs[1],
            json!({"role":"assistant","content":[
                {"type":"text","text":"checking"},
                {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Lyon"}},
                {"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}]})
        );
        assert_eq!(
            msgs[2],
            json!({"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"},
                {"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"noon"}]},
                {"type":"text","text":"thanks"}]})
        );
        assert!(b.get("stream").is_none());
    }

    #[test]
    fn zod_schemas_and_strict_tools_reach_anthropic_as_it_accepts_them() {
        let r = req(r#"{"model":"m","messages":[{"role":"user","content":"x"}],
            "tools":[{"type":"function","function":{"name":"f","strict":true,"parameters":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"n":{"type":"integer","minimum":-9007199254740991,"maximum":9007199254740991}},"required":["n"],"additionalProperties":false}}}],
            "response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"n":{"type":"integer","minimum":-9007199254740991}},"required":["n"]}}}}"#);
        let b = request(&r, "c", 1000).unwrap();
        let tool = &b["tools"][0];
        assert_eq!(tool["strict"], true);
        let out = b["output_config"]["format"]["schema"].to_string();
        for schema in [tool["input_schema"].to_string(), out] {
            assert!(!schema.contains("$schema"), "{schema}");
            assert!(!schema.contains("\"minimum\""), "{schema}");
            assert!(
                schema.contains("\"additionalProperties\":false"),
                "{schema}"
            );
        }
    }

    #[test]
    fn tools_choice_images_and_formats() {
        let r = req(
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":[
            {"type":"text","text":"what is this"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}},
            {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]}],
            "tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}},
                     {"type":"function","function":{"name":"g"}}],
            "tool_choice":"required","parallel_tool_calls":false,
            "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},
            "top_k":5,"store":true}"#,
        );
        let b = request(&r, "c", 1000).unwrap();
        assert_eq!(b["stream"], true);
        assert_eq!(b["max_tokens"], 1000);
        assert_eq!(b["top_k"], 5);
        assert!(b.get("store").is_none(), "OpenAI-only fields are not sent");
        assert_eq!(
            b["tool_choice"],
            json!({"type":"any","disable_parallel_tool_use":true})
        );
        assert_eq!(
            b["tools"][0],
            json!({"name":"f","description":"d","input_schema":{"type":"object","properties":{"a":{"type":"string"}}}})
        );
        assert_eq!(
            b["tools"][1],
            json!({"name":"g","input_schema":{"type":"object","properties":{}}})
        );
        let content = &b["messages"][0]["content"];
        assert_eq!(
            content[1],
            json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}})
        );
        assert_eq!(
            content[2],
            json!({"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}})
        );
        assert_eq!(
            b["output_config"],
            json!({"format":{"type":"json_schema","schema":{"type":"object","properties":{},"additionalProperties":false}}})
        );

        let named = req(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#,
        );
        assert_eq!(
            request(&named, "c", 10).unwrap()["tool_choice"],
            json!({"type":"tool","name":"f"})
        );
        let json_mode = req(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        );
        assert!(request(&json_mode, "c", 10).unwrap()["system"][0]["text"]
            .as_str()
            .unwrap()
            .contains("JSON"));
    }

    #[test]
    fn openrouter_reasoning_details_become_thinking_blocks_again() {
        // As a streamed answer hands them out: text fragments, then the signature.
        let r = req(r#"{"model":"m","messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"reasoning":"hmm, ok",
             "reasoning_details":[
               {"type":"reasoning.text","text":"hmm,","format":"anthropic-claude-v1","index":0},
               {"type":"reasoning.text","text":" ok","format":"anthropic-claude-v1","index":0},
               {"type":"reasoning.text","signature":"sig==","format":"anthropic-claude-v1","index":0},
               {"type":"reasoning.encrypted","data":"EmwK","format":"anthropic-claude-v1","index":1},
               {"type":"reasoning.text","text":"unsigned","format":"anthropic-claude-v1","index":2}],
             "tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"w","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"toolu_1","content":"sunny"}]}"#);
        let body = request(&r, "claude", 1024).unwrap();
        let blocks = &body["messages"][1]["content"];
        assert_eq!(
            blocks[0],
            json!({"type": "thinking", "thinking": "hmm, ok", "signature": "sig=="})
        );
        assert_eq!(
            blocks[1],
            json!({"type": "redacted_thinking", "data": "EmwK"})
        );
        assert_eq!(
            blocks[2]["type"], "tool_use",
            "the unsigned text is not sent: {blocks}"
        );
    }

    #[test]
    fn reasoning_becomes_a_thinking_budget() {
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"high","max_tokens":10000,"temperature":0.2}"#,
        );
        let b = request(&r, "c", 4096).unwrap();
        assert_eq!(
            b["thinking"],
            json!({"type":"enabled","budget_tokens":8000})
        );
        assert!(
            b.get("temperature").is_none(),
            "no sampling changes while thinking"
        );
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning":{"max_tokens":2000}}"#,
        );
        let b = request(&r, "c", 4096).unwrap();
        assert_eq!(b["thinking"]["budget_tokens"], 2000);
        assert_eq!(b["max_tokens"], 4096);
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"low","max_tokens":500}"#,
        );
        assert_eq!(
            request(&r, "c", 4096).unwrap_err().param(),
            Some("max_tokens")
        );
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"none"}"#,
        );
        assert!(request(&r, "c", 4096).unwrap().get("thinking").is_none());
    }

    #[test]
    fn thinking_blocks_come_back_before_tool_use() {
        let r = req(r#"{"model":"m","messages":[{"role":"user","content":"x"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"f","arguments":"{}"},
              "extra_content":{"anthropic":{"thinking":[{"type":"thinking","thinking":"hmm","signature":"sig=="}]}}}]},
            {"role":"tool","tool_call_id":"toolu_1","content":"ok"}]}"#);
        let b = request(&r, "c", 4096).unwrap();
        assert_eq!(
            b["messages"][1]["content"],
            json!([{"type":"thinking","thinking":"hmm","signature":"sig=="},{"type":"tool_use","id":"toolu_1","name":"f","input":{}}])
        );
    }

    #[test]
    fn unsupported_parameters_are_clear_400s() {
        for (body, param) in [
            (r#""n":2"#, "n"),
            (r#""logprobs":true"#, "logprobs"),
            (r#""reasoning_effort":"huge""#, "reasoning_effort"),
            (r#""tool_choice":"sometimes""#, "tool_choice"),
        ] {
            let r = req(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{body}}}"#
            ));
            let e = request(&r, "c", 4096).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(e.param(), Some(param), "{body}");
        }
        let r = req(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[1"}}]}]}"#,
        );
        assert_eq!(
            request(&r, "c", 1).unwrap_err().param(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}"#,
        );
        assert_eq!(
            request(&r, "c", 1).unwrap_err().param(),
            Some("messages[0].content[0]")
        );
    }
}
