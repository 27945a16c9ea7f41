//! OpenAI Chat Completions request to Gemini `generateContent` request.
//!
//! - `system` and `developer` messages become `systemInstruction`; `user` and `assistant` turns
//!   become `user` and `model` contents, consecutive turns of one role merged;
//! - assistant `tool_calls` become whole `functionCall` parts (`arguments` parsed; the
//!   `extra_content.google.thought_signature` the gateway handed out goes back as
//!   `thoughtSignature`); `tool` results become `functionResponse` parts named after the call
//!   they answer (Gemini has no call ids: the name is found from the earlier assistant
//!   `tool_calls`), a string result wrapped as `{"output": …}`;
//! - images must be `data:` URIs (`inlineData`); an http(s) image URL is a 400, since the gateway
//!   does not fetch URLs;
//! - `generationConfig`: temperature, topP, maxOutputTokens, stopSequences, candidateCount (`n`),
//!   seed, penalties, `responseMimeType` + `responseJsonSchema`, `thinkingConfig` from
//!   `reasoning_effort` / `reasoning` (thoughts included, so they stream as
//!   `reasoning_content`); tool schemas go as `parametersJsonSchema` (full JSON Schema).
//! - `logprobs` is refused with a 400 (the translated answer would not carry them); through
//!   [`Dispatch`](crate::dispatch::Dispatch) the parameter rule has dropped it already.

mod answer;
pub(crate) mod embeddings;

pub(crate) use self::answer::{call_id, completion, finish_reason, usage};

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::anthropic::parse_data_uri;
use super::{invalid as bad, named_tool, stop_sequences, tool_arguments};
use crate::chat::{
    ChatRequest, Content, ContentPart, Message, ReasoningDetail, ResponseFormat, Role, ToolChoice,
};
use crate::Error;

/// Builds the `generateContent` body.
pub(crate) fn request(req: &ChatRequest, default_max: Option<u32>) -> Result<Value, Error> {
    if req.logprobs == Some(true) || req.top_logprobs.is_some() {
        return Err(bad(
            "logprobs",
            "`logprobs` is not supported through the Gemini adapter",
        ));
    }
    let mut body = Map::new();
    let (system, contents) = contents(&req.messages)?;
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    body.insert("contents".into(), Value::Array(contents));

    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        let decls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), Value::String(t.function.name.clone()));
                if let Some(desc) = &t.function.description {
                    d.insert("description".into(), Value::String(desc.clone()));
                }
                if let Some(p) = &t.function.parameters {
                    d.insert("parametersJsonSchema".into(), p.clone());
                }
                Value::Object(d)
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Mode(m) => match m.as_str() {
                "auto" => json!({"mode": "AUTO"}),
                "required" => json!({"mode": "ANY"}),
                "none" => json!({"mode": "NONE"}),
                other => {
                    return Err(bad(
                        "tool_choice",
                        format!(
                            "unknown `tool_choice` `{other}` (none, auto, required or a function)"
                        ),
                    ))
                }
            },
            ToolChoice::Named(v) => {
                json!({"mode": "ANY", "allowedFunctionNames": [named_tool(v)?]})
            }
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }

    let mut gen = Map::new();
    if let Some(t) = req.temperature {
        gen.insert("temperature".into(), Value::from(t));
    }
    if let Some(p) = req.top_p {
        gen.insert("topP".into(), Value::from(p));
    }
    if let Some(k) = req.extra.get("top_k") {
        gen.insert("topK".into(), k.clone());
    }
    if let Some(m) = req.max_completion_tokens.or(req.max_tokens).or(default_max) {
        gen.insert("maxOutputTokens".into(), Value::from(m));
    }
    if let Some(list) = stop_sequences(req) {
        gen.insert("stopSequences".into(), json!(list));
    }
    if let Some(n) = req.n {
        gen.insert("candidateCount".into(), Value::from(n));
    }
    if let Some(s) = req.seed {
        gen.insert("seed".into(), Value::from(s));
    }
    if let Some(p) = req.presence_penalty {
        gen.insert("presencePenalty".into(), Value::from(p));
    }
    if let Some(p) = req.frequency_penalty {
        gen.insert("frequencyPenalty".into(), Value::from(p));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            gen.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema.get("schema").cloned().ok_or_else(|| {
                bad(
                    "response_format.json_schema.schema",
                    "`json_schema.schema` is missing",
                )
            })?;
            gen.insert("responseMimeType".into(), json!("application/json"));
            gen.insert("responseJsonSchema".into(), schema);
        }
        _ => {}
    }
    if let Some(thinking) = thinking_config(req)? {
        gen.insert("thinkingConfig".into(), thinking);
    }
    if !gen.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gen));
    }
    for key in ["safetySettings", "cachedContent", "labels"] {
        if let Some(v) = req.extra.get(key) {
            body.insert(key.to_owned(), v.clone());
        }
    }
    Ok(Value::Object(body))
}

fn thinking_config(req: &ChatRequest) -> Result<Option<Value>, Error> {
    let ask = req.reasoning_ask();
    let budget = match ask.enabled {
        None => return Ok(None),
        Some(false) => return Ok(Some(json!({"thinkingBudget": 0}))),
        Some(true) => match (ask.budget, ask.effort.unwrap_or("medium")) {
            (Some(b), _) => b,
            (None, "minimal" | "low") => 1024,
            (None, "medium") => 8192,
            (None, "high" | "xhigh" | "max") => 24576,
            (None, other) => {
                return Err(bad(
                    "reasoning_effort",
                    format!(
                        "unknown `reasoning_effort` `{other}` (none, minimal, low, medium, high)"
                    ),
                ))
            }
        },
    };
    Ok(Some(
        json!({"thinkingBudget": budget, "includeThoughts": !ask.exclude}),
    ))
}

fn contents(list: &[Message]) -> Result<(Vec<Value>, Vec<Value>), Error> {
    // Gemini answers name their calls, not id them: map each call id to its function name.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in list {
        for c in m.tool_calls.as_deref().unwrap_or_default() {
            names.insert(&c.id, &c.function.name);
        }
    }
    let mut system = Vec::new();
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let (role, parts) = match m.role {
            Role::System | Role::Developer => {
                system.extend(parts(m.content.as_ref(), &at("content"), true)?);
                continue;
            }
            Role::User => ("user", parts(m.content.as_ref(), &at("content"), false)?),
            Role::Assistant => ("model", model_parts(m, i)?),
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    bad(&at("tool_call_id"), "a `tool` message needs `tool_call_id`")
                })?;
                let name = names
                    .get(id)
                    .copied()
                    .or(m.name.as_deref())
                    .ok_or_else(|| {
                        bad(
                            &at("tool_call_id"),
                            format!("no earlier assistant tool call has the id `{id}`"),
                        )
                    })?;
                let text = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(ps)) => ps
                        .iter()
                        .filter_map(|p| match p {
                            ContentPart::Text { text, .. } => Some(text.as_str()),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(""),
                };
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"output": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            Role::Function => {
                return Err(bad(
                    &at("role"),
                    "the deprecated `function` role is not supported; use `tool`",
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((r, prev)) if *r == role => prev.extend(parts),
            _ => out.push((role, parts)),
        }
    }
    let contents = out
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, contents))
}

fn parts(content: Option<&Content>, at: &str, text_only: bool) -> Result<Vec<Value>, Error> {
    let list = match content {
        None => return Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => return Ok(Vec::new()),
        Some(Content::Text(t)) => return Ok(vec![json!({"text": t})]),
        Some(Content::Parts(list)) => list,
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, p) in list.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let part = match p {
            ContentPart::Text { text, .. } => json!({"text": text}),
            _ if text_only => return Err(bad(&here, "system messages can hold text parts only")),
            ContentPart::ImageUrl { image_url, .. } => match parse_data_uri(&image_url.url) {
                Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                None => {
                    return Err(bad(
                        &format!("{here}.image_url.url"),
                        "Gemini models take images as base64 data: URIs; this gateway does not fetch image URLs",
                    ))
                }
            },
            ContentPart::InputAudio { input_audio, .. } => json!({"inlineData": {
                "mimeType": format!("audio/{}", input_audio.format),
                "data": input_audio.data,
            }}),
            ContentPart::File { file, .. } => match file.file_data.as_deref().and_then(parse_data_uri) {
                Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                None => {
                    return Err(bad(
                        &format!("{here}.file"),
                        "Gemini models take files as inline base64 `file_data` data: URIs only",
                    ))
                }
            },
            ContentPart::Refusal { refusal, .. } => json!({"text": refusal}),
            ContentPart::Other(_) => {
                return Err(bad(&here, "this content part type is not supported by Gemini models"))
            }
        };
        out.push(part);
    }
    Ok(out)
}

fn model_parts(m: &Message, i: usize) -> Result<Vec<Value>, Error> {
    let mut out = parts(m.content.as_ref(), &format!("messages[{i}].content"), false)?;
    // OpenRouter's form of the thought signatures: encrypted details, one per call in order.
    let mut signatures = super::reasoning_details(m, ReasoningDetail::GEMINI)
        .into_iter()
        .filter(|d| d.kind == "reasoning.encrypted")
        .filter_map(|d| d.data);
    for (j, call) in m
        .tool_calls
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let args = tool_arguments(call, i, j)?;
        let mut part = json!({"functionCall": {"name": call.function.name, "args": args}});
        if let Some(sig) = call
            .extra
            .get("extra_content")
            .and_then(|e| e.get("google"))
            .and_then(|g| g.get("thought_signature"))
        {
            part["thoughtSignature"] = sig.clone();
        } else if let Some(sig) = signatures.next() {
            part["thoughtSignature"] = Value::String(sig);
        }
        out.push(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn openrouter_encrypted_details_become_thought_signatures() {
        let r = req(r#"{"model":"m","messages":[
            {"role":"user","content":"weather and time?"},
            {"role":"assistant","content":null,
             "reasoning_details":[
               {"type":"reasoning.text","text":"two calls","format":"google-gemini-v1","index":0},
               {"type":"reasoning.encrypted","data":"SIG1","format":"google-gemini-v1","index":1},
               {"type":"reasoning.encrypted","data":"NOT-OURS","format":"anthropic-claude-v1","index":2}],
             "tool_calls":[
               {"id":"c1","type":"function","function":{"name":"w","arguments":"{}"}},
               {"id":"c2","type":"function","function":{"name":"t","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"tool","tool_call_id":"c2","content":"noon"}]}"#);
        let body = request(&r, None).unwrap();
        let parts = &body["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], "SIG1");
        assert!(parts[1].get("thoughtSignature").is_none(), "{parts}");
    }

    #[test]
    fn translates_a_tool_round_trip_with_signatures() {
        let r = req(r#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"weather and time in Lyon?"},
                {"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/"}}]},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\"}"},
                 "extra_content":{"google":{"thought_signature":"SIG"}}},
                {"id":"call_b","type":"function","function":{"name":"get_local_time","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_a","content":"sunny"},
            {"role":"tool","tool_call_id":"call_b","content":"{\"time\":\"12:00\"}"}
        ],"tools":[{"type":"function","function":{"name":"get_weather","description":"w","parameters":{"type":"object"}}}],
        "tool_choice":{"type":"function","function":{"name":"get_weather"}},
        "temperature":0.5,"top_p":0.8,"max_tokens":100,"stop":["x"],"n":2,
        "response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"}}},
        "reasoning_effort":"low"}"#);
        let b = request(&r, None).unwrap();
        assert_eq!(
            b["systemInstruction"],
            json!({"parts":[{"text":"be brief"}]})
        );
        let c = b["contents"].as_array().unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            json!({"role":"user","parts":[{"text":"weather and time in Lyon?"},{"inlineData":{"mimeType":"image/jpeg","data":"/9j/"}}]})
        );
        assert_eq!(
            c[1],
            json!({"role":"model","parts":[
                {"functionCall":{"name":"get_weather","args":{"city":"Lyon"}},"thoughtSignature":"SIG"},
                {"functionCall":{"name":"get_local_time","args":{}}}]})
        );
        assert_eq!(
            c[2],
            json!({"role":"user","parts":[
                {"functionResponse":{"name":"get_weather","response":{"output":"sunny"}}},
                {"functionResponse":{"name":"get_local_time","response":{"time":"12:00"}}}]})
        );
        assert_eq!(
            b["tools"],
            json!([{"functionDeclarations":[{"name":"get_weather","description":"w","parametersJsonSchema":{"type":"object"}}]}])
        );
        assert_eq!(
            b["toolConfig"],
            json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}})
        );
        assert_eq!(
            b["generationConfig"],
            json!({"temperature":0.5,"topP":0.8,"maxOutputTokens":100,"stopSequences":["x"],"candidateCount":2,
                   "responseMimeType":"application/json","responseJsonSchema":{"type":"object"},
                   "thinkingConfig":{"thinkingBudget":1024,"includeThoughts":true}})
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/cat.png"}}]}]}"#,
        );
        assert_eq!(
            request(&r, None).unwrap_err().param(),
            Some("messages[0].content[0].image_url.url")
        );
        let r = req(
            r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"nope","content":"x"}]}"#,
        );
        assert_eq!(
            request(&r, None).unwrap_err().param(),
            Some("messages[0].tool_call_id")
        );
        let r = req(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#);
        assert_eq!(request(&r, None).unwrap_err().param(), Some("logprobs"));
    }
}
