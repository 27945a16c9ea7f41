//! A Responses request read into the core's [`ChatRequest`].
//!
//! - `instructions` becomes a leading system message; `input` (a string, or a list of items)
//!   becomes the conversation: `message` items (roles `user`, `assistant`, `system`,
//!   `developer`; parts `input_text`, `output_text`, `input_image` by URL or data URI,
//!   `input_file` with data), `function_call` items as an assistant's tool calls (consecutive
//!   ones in one message), `function_call_output` items as `tool` messages, `custom_tool_call`
//!   and its output likewise; a `reasoning` item carries back, in its `encrypted_content`, what
//!   the provider needs on the next turn (Anthropic's thinking, Gemini's thought signature),
//!   set on the tool call that follows it;
//! - `tools`: `function` tools as they are (`strict` kept); a `namespace`'s functions flattened
//!   into the list; a `custom` tool (free-form input, as Codex's `apply_patch`) as a function
//!   of one string, `input`, whose calls come back as `custom_tool_call` items; hosted tools
//!   (`web_search`, `file_search`, `code_interpreter`, `image_generation`, `computer_use`,
//!   `local_shell`, `mcp`) run only at OpenAI and are left out, said in the log;
//! - `tool_choice`, `parallel_tool_calls`, `text.format` (`json_schema`, `json_object`),
//!   `reasoning.effort`, `max_output_tokens`, `temperature`, `top_p`, `user` (or
//!   `safety_identifier`), `prompt_cache_key` keep their meaning; `store`, `metadata`,
//!   `include`, `reasoning.summary`, `truncation` and `service_tier` are read or dropped;
//! - the gateway is stateless: `previous_response_id`, `conversation` and `background: true`
//!   are refused with a `400` that says why.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chat::{
    ChatRequest, Content, ContentPart, Extra, FileRef, FunctionCall, FunctionDef, ImageUrl,
    Message, ResponseFormat, Role, StreamOptions, Tool, ToolCall, ToolChoice,
};
use crate::Error;

/// The prefix of the `encrypted_content` the gateway writes: what it carries is the
/// `extra_content` of the turn's first tool call, as JSON.
pub(crate) const CARRIED: &str = "mg1:";

/// Hosted tools: run by OpenAI itself, not by any provider the request may be translated for.
const HOSTED: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use",
    "computer_use_preview",
    "local_shell",
    "mcp",
];

/// A Responses API request, as a client sends it: the fields the gateway reads.
#[derive(Debug, Deserialize)]
#[non_exhaustive]
pub struct ResponsesRequest {
    /// The model id the client asked for.
    pub model: String,
    /// The conversation: a string or a list of items.
    #[serde(default)]
    pub input: Option<Value>,
    /// Instructions: a leading system message.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// Which tool the model must (or must not) call.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Whether several tool calls may come in one turn.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `format` and `verbosity`.
    #[serde(default)]
    pub text: Option<Value>,
    /// `effort` and `summary`.
    #[serde(default)]
    pub reasoning: Option<Value>,
    /// Bound on generated tokens.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// End-user identifier.
    #[serde(default)]
    pub user: Option<String>,
    /// End-user identifier, the newer name.
    #[serde(default)]
    pub safety_identifier: Option<String>,
    /// The provider's prompt cache key.
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    /// What the answer should include (`reasoning.encrypted_content`).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Stream the answer.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Refused: the gateway keeps no responses.
    #[serde(default)]
    pub previous_response_id: Option<Value>,
    /// Refused: the gateway keeps no conversations.
    #[serde(default)]
    pub conversation: Option<Value>,
    /// Refused when true: the gateway answers in the request.
    #[serde(default)]
    pub background: Option<bool>,
    /// OpenRouter: models to fall back to, in order. Never forwarded.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// OpenRouter: provider preferences. Never forwarded.
    #[serde(default)]
    pub provider: Option<Value>,
}

/// A Responses request read for the core.
#[derive(Debug)]
pub(crate) struct Translated {
    pub chat: ChatRequest,
    /// What the answer is written with.
    pub shape: Shape,
}

/// What the answer needs of the request.
#[derive(Debug, Clone, Default)]
#[doc(hidden)]
pub struct Shape {
    /// The client asked for `reasoning.encrypted_content`.
    pub(crate) encrypted_reasoning: bool,
    /// Tools declared `custom`: their calls are `custom_tool_call` items.
    pub(crate) custom_tools: HashSet<String>,
    /// Request fields the answer repeats.
    pub(crate) echo: Echo,
}

impl Shape {
    /// A shape with these custom tools, and encrypted reasoning when asked. For fuzzing.
    pub fn new(encrypted_reasoning: bool, custom_tools: &[&str]) -> Self {
        Shape {
            encrypted_reasoning,
            custom_tools: custom_tools.iter().map(|t| (*t).to_owned()).collect(),
            echo: Echo::default(),
        }
    }
}

/// Request fields the `response` object repeats.
#[derive(Debug, Clone, Default)]
pub(crate) struct Echo {
    pub instructions: Option<String>,
    pub parallel_tool_calls: Option<bool>,
    pub tool_choice: Option<Value>,
    pub tools: Vec<Value>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
}

fn invalid(param: &str, message: String) -> Error {
    Error::invalid_request(message, Some(param.to_owned()))
}

/// Parses a Responses request body; the error names the field that is wrong.
pub(crate) fn parse(bytes: &[u8]) -> Result<ResponsesRequest, Error> {
    let req: ResponsesRequest = crate::dialect::edge::parse_body(bytes, |r: &ResponsesRequest| {
        (&r.model, r.models.as_deref())
    })?;
    let stateless = "this gateway is stateless: it keeps no responses or conversations";
    if req
        .previous_response_id
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(invalid(
            "previous_response_id",
            format!("`previous_response_id` is not supported: {stateless}; send the whole conversation in `input`"),
        ));
    }
    if req.conversation.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "conversation",
            format!("`conversation` is not supported: {stateless}; send the whole conversation in `input`"),
        ));
    }
    if req.background == Some(true) {
        return Err(invalid(
            "background",
            format!("`background: true` is not supported: {stateless}; ask without it (streaming, if the answer is long)"),
        ));
    }
    Ok(req)
}

fn str_field<'a>(v: &'a Value, field: &str, at: &str) -> Result<&'a str, Error> {
    v.get(field).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            &format!("{at}.{field}"),
            format!("`{at}.{field}` must be a string"),
        )
    })
}

/// Reads the items into messages.
#[derive(Default)]
struct Reader {
    messages: Vec<Message>,
    /// What the last `reasoning` item carried, for the next tool call.
    carried: Option<Value>,
}

impl Reader {
    fn item(&mut self, item: &Value, at: &str) -> Result<(), Error> {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => self.message(item, at),
            "function_call" => {
                let arguments = str_field(item, "arguments", at)?.to_owned();
                self.call(item, at, arguments)
            }
            "custom_tool_call" => {
                let input = str_field(item, "input", at)?;
                let arguments = serde_json::json!({ "input": input }).to_string();
                self.call(item, at, arguments)
            }
            "function_call_output" | "custom_tool_call_output" => {
                let id = str_field(item, "call_id", at)?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => {
                        return Err(invalid(
                            &format!("{at}.output"),
                            format!("`{at}.output` must be a string or a list of parts"),
                        ))
                    }
                };
                let mut msg = Message::text(Role::Tool, output);
                msg.tool_call_id = Some(id.to_owned());
                self.messages.push(msg);
                Ok(())
            }
            "reasoning" => {
                self.carried = item
                    .get("encrypted_content")
                    .and_then(Value::as_str)
                    .and_then(|c| c.strip_prefix(CARRIED))
                    .and_then(|c| serde_json::from_str(c).ok());
                Ok(())
            }
            // An item only OpenAI keeps (a reference to a stored one, a hosted tool's call):
            // nothing to say to another provider.
            "item_reference"
            | "web_search_call"
            | "file_search_call"
            | "computer_call"
            | "computer_call_output"
            | "code_interpreter_call"
            | "image_generation_call"
            | "local_shell_call"
            | "local_shell_call_output"
            | "mcp_call"
            | "mcp_list_tools" => Ok(()),
            other => Err(invalid(
                &format!("{at}.type"),
                format!("`{at}.type`: unknown item type `{other}`"),
            )),
        }
    }

    fn call(&mut self, item: &Value, at: &str, arguments: String) -> Result<(), Error> {
        let call_id = str_field(item, "call_id", at)?;
        let name = str_field(item, "name", at)?;
        let mut extra = Extra::new();
        if let Some(carried) = self.carried.take() {
            extra.insert("extra_content".into(), carried);
        }
        let call = ToolCall {
            id: call_id.to_owned(),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: name.to_owned(),
                arguments,
            },
            extra,
        };
        // Consecutive calls are one assistant turn.
        match self.messages.last_mut() {
            Some(m) if m.role == Role::Assistant && m.tool_calls.is_some() => {
                m.tool_calls.get_or_insert_with(Vec::new).push(call);
            }
            Some(m) if m.role == Role::Assistant && m.tool_calls.is_none() => {
                m.tool_calls = Some(vec![call]);
            }
            _ => {
                let mut msg = Message::text(Role::Assistant, String::new());
                msg.content = None;
                msg.tool_calls = Some(vec![call]);
                self.messages.push(msg);
            }
        }
        Ok(())
    }

    fn message(&mut self, item: &Value, at: &str) -> Result<(), Error> {
        let role = match str_field(item, "role", at)? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            "developer" => Role::Developer,
            other => {
                return Err(invalid(
                    &format!("{at}.role"),
                    format!("`{at}.role` must be `user`, `assistant`, `system` or `developer`, not `{other}`"),
                ))
            }
        };
        let content = match item.get("content") {
            Some(Value::String(s)) => Content::Text(s.clone()),
            Some(Value::Array(parts)) => {
                let mut out = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    out.push(part(p, &format!("{at}.content[{j}]"))?);
                }
                match out.as_mut_slice() {
                    [ContentPart::Text { text, .. }] => Content::Text(std::mem::take(text)),
                    _ if role != Role::User => Content::Text(
                        out.iter()
                            .filter_map(|p| match p {
                                ContentPart::Text { text, .. } => Some(text.as_str()),
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                            .join(""),
                    ),
                    _ => Content::Parts(out),
                }
            }
            _ => {
                return Err(invalid(
                    &format!("{at}.content"),
                    format!("`{at}.content` must be a string or a list of content parts"),
                ))
            }
        };
        let mut msg = Message::text(role, String::new());
        msg.content = Some(content);
        self.messages.push(msg);
        Ok(())
    }
}

/// A content part of a message item.
fn part(p: &Value, at: &str) -> Result<ContentPart, Error> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
    Ok(match kind {
        "input_text" | "output_text" | "text" | "summary_text" => ContentPart::Text {
            text: str_field(p, "text", at)?.to_owned(),
            extra: Extra::new(),
        },
        "refusal" => ContentPart::Text {
            text: str_field(p, "refusal", at)?.to_owned(),
            extra: Extra::new(),
        },
        "input_image" => {
            let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                return Err(invalid(
                    &format!("{at}.image_url"),
                    format!("`{at}`: only images by URL or data URI are supported (no `file_id`: the gateway keeps no files)"),
                ));
            };
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: url.to_owned(),
                    detail: p.get("detail").and_then(Value::as_str).map(str::to_owned),
                    extra: Extra::new(),
                },
                extra: Extra::new(),
            }
        }
        "input_file" => {
            let Some(data) = p.get("file_data").and_then(Value::as_str) else {
                return Err(invalid(
                    &format!("{at}.file_data"),
                    format!("`{at}`: only files given as `file_data` are supported (the gateway keeps no files)"),
                ));
            };
            ContentPart::File {
                file: FileRef {
                    file_data: Some(data.to_owned()),
                    file_id: None,
                    filename: p.get("filename").and_then(Value::as_str).map(str::to_owned),
                    extra: Extra::new(),
                },
                extra: Extra::new(),
            }
        }
        other => {
            return Err(invalid(
                &format!("{at}.type"),
                format!("`{at}.type`: unknown content part `{other}`"),
            ))
        }
    })
}

/// A function tool of the core.
fn function(
    name: &str,
    description: Option<&str>,
    parameters: Option<Value>,
    strict: Option<bool>,
) -> Tool {
    Tool {
        kind: "function".to_owned(),
        function: FunctionDef {
            name: name.to_owned(),
            description: description.map(str::to_owned),
            parameters,
            strict,
            extra: Extra::new(),
        },
        extra: Extra::new(),
    }
}

/// The tools in the core's terms (hosted ones left out), and the names of the custom ones.
fn tools(
    list: &[Value],
    out: &mut Vec<Tool>,
    custom: &mut HashSet<String>,
    at: &str,
) -> Result<(), Error> {
    for (i, t) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
        let description = t.get("description").and_then(Value::as_str);
        match kind {
            "function" => out.push(function(
                str_field(t, "name", &at)?,
                description,
                t.get("parameters").cloned(),
                t.get("strict").and_then(Value::as_bool),
            )),
            "custom" => {
                let name = str_field(t, "name", &at)?;
                custom.insert(name.to_owned());
                let schema = serde_json::json!({
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": "The tool's input, as free-form text."}},
                    "required": ["input"],
                    "additionalProperties": false
                });
                out.push(function(name, description, Some(schema), None));
            }
            "namespace" => {
                let inner = t.get("tools").and_then(Value::as_array).ok_or_else(|| {
                    invalid(
                        &format!("{at}.tools"),
                        format!("`{at}.tools` must be a list"),
                    )
                })?;
                tools(inner, out, custom, &format!("{at}.tools"))?;
            }
            hosted if HOSTED.contains(&hosted) || hosted.starts_with("web_search") => {
                tracing::debug!(
                    tool = hosted,
                    "a hosted tool is left out: only OpenAI runs it"
                );
            }
            other => {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!("`{at}.type`: unknown tool type `{other}`"),
                ))
            }
        }
    }
    Ok(())
}

impl ResponsesRequest {
    /// The request in the core's terms, with what its answer is written with.
    pub(crate) fn into_chat(self) -> Result<Translated, Error> {
        let mut r = Reader::default();
        if let Some(i) = self.instructions.as_deref().filter(|i| !i.is_empty()) {
            r.messages.push(Message::text(Role::System, i));
        }
        match &self.input {
            Some(Value::String(s)) => r.messages.push(Message::text(Role::User, s.clone())),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    r.item(item, &format!("input[{i}]"))?;
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(invalid(
                    "input",
                    "`input` must be a string or a list of items".into(),
                ))
            }
        }
        let mut shape = Shape {
            encrypted_reasoning: self
                .include
                .iter()
                .flatten()
                .any(|i| i == "reasoning.encrypted_content"),
            ..Shape::default()
        };
        let mut chat = ChatRequest {
            model: self.model,
            stream: self.stream,
            max_completion_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            parallel_tool_calls: self.parallel_tool_calls,
            user: self.user.or(self.safety_identifier),
            reasoning_effort: self
                .reasoning
                .as_ref()
                .and_then(|r| r.get("effort"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            models: self.models,
            provider: self.provider,
            ..ChatRequest::default()
        };
        if chat.is_stream() {
            chat.stream_options = Some(StreamOptions {
                include_usage: Some(true),
                extra: Extra::new(),
            });
        }
        if let Some(key) = self.prompt_cache_key {
            chat.extra
                .insert("prompt_cache_key".into(), Value::String(key));
        }
        if let Some(list) = &self.tools {
            let mut defs = Vec::new();
            tools(list, &mut defs, &mut shape.custom_tools, "tools")?;
            if !defs.is_empty() {
                chat.tools = Some(Arc::new(defs));
            }
        }
        if let Some(choice) = &self.tool_choice {
            chat.tool_choice = match choice {
                Value::String(mode) => Some(ToolChoice::Mode(mode.clone())),
                Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                    Some("function" | "custom") => {
                        let name = str_field(choice, "name", "tool_choice")?;
                        Some(ToolChoice::Named(
                            serde_json::json!({"type": "function", "function": {"name": name}}),
                        ))
                    }
                    // `allowed_tools` and hosted-tool choices: the model picks.
                    _ => Some(ToolChoice::Mode("auto".into())),
                },
                _ => {
                    return Err(invalid(
                        "tool_choice",
                        "`tool_choice` must be a string or an object".into(),
                    ))
                }
            };
            if chat.tools.is_none() {
                chat.tool_choice = None;
            }
        }
        if let Some(format) = self.text.as_ref().and_then(|t| t.get("format")) {
            chat.response_format = match format.get("type").and_then(Value::as_str) {
                Some("json_schema") => {
                    let mut schema = Map::new();
                    for k in ["name", "schema", "strict", "description"] {
                        if let Some(v) = format.get(k) {
                            schema.insert(k.into(), v.clone());
                        }
                    }
                    schema
                        .entry("name")
                        .or_insert_with(|| Value::String("output".into()));
                    Some(ResponseFormat::JsonSchema {
                        json_schema: Value::Object(schema),
                    })
                }
                Some("json_object") => Some(ResponseFormat::JsonObject),
                _ => None,
            };
        }
        shape.echo = Echo {
            instructions: self.instructions,
            parallel_tool_calls: self.parallel_tool_calls,
            tool_choice: self.tool_choice,
            tools: self.tools.unwrap_or_default(),
            temperature: self.temperature,
            top_p: self.top_p,
            max_output_tokens: self.max_output_tokens,
        };
        chat.messages = Arc::new(r.messages);
        chat.validate()?;
        Ok(Translated { chat, shape })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Translated {
        parse(json.as_bytes()).unwrap().into_chat().unwrap()
    }

    #[test]
    fn a_codex_turn_reads_into_the_core_request() {
        let t = read(
            r#"{"model":"m","instructions":"Be Codex.","stream":true,"store":false,
            "input":[
              {"type":"message","role":"developer","content":[{"type":"input_text","text":"env"}]},
              {"type":"message","role":"user","content":[{"type":"input_text","text":"list files"},
                 {"type":"input_image","image_url":"data:image/png;base64,AAAA"}]},
              {"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"mg1:{\"anthropic\":{\"thinking\":[]}}"},
              {"type":"function_call","call_id":"call_1","name":"shell","arguments":"{\"command\":[\"ls\"]}"},
              {"type":"function_call","call_id":"call_2","name":"shell","arguments":"{}"},
              {"type":"function_call_output","call_id":"call_1","output":"a.txt"},
              {"type":"custom_tool_call","call_id":"call_3","name":"apply_patch","input":"*** Begin Patch"},
              {"type":"custom_tool_call_output","call_id":"call_3","output":"done"},
              {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Done."}]}],
            "tools":[{"type":"function","name":"shell","parameters":{"type":"object"},"strict":false},
                     {"type":"custom","name":"apply_patch","description":"patch"},
                     {"type":"web_search"},
                     {"type":"namespace","name":"mcp","tools":[{"type":"function","name":"mcp__x","parameters":{}}]}],
            "tool_choice":"auto","parallel_tool_calls":true,
            "reasoning":{"effort":"high","summary":"auto"},"include":["reasoning.encrypted_content"],
            "prompt_cache_key":"k1","text":{"format":{"type":"json_schema","name":"o","schema":{"type":"object"},"strict":true}},
            "models":["b"]}"#,
        );
        let c = &t.chat;
        let m = &c.messages;
        assert_eq!(m[0].content, Some(Content::Text("Be Codex.".into())));
        assert_eq!(m[1].role, Role::Developer);
        assert!(matches!(&m[2].content, Some(Content::Parts(p)) if p.len() == 2));
        let calls = m[3].tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0].extra["extra_content"],
            serde_json::json!({"anthropic":{"thinking":[]}})
        );
        assert!(calls[1].extra.is_empty());
        assert_eq!(m[4].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(
            m[5].tool_calls.as_ref().unwrap()[0].function.arguments,
            r#"{"input":"*** Begin Patch"}"#
        );
        assert_eq!(m[6].role, Role::Tool);
        assert_eq!(m[7].content, Some(Content::Text("Done.".into())));
        let names: Vec<_> = c
            .tools
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.function.name.clone())
            .collect();
        assert_eq!(names, ["shell", "apply_patch", "mcp__x"]);
        assert!(t.shape.custom_tools.contains("apply_patch"));
        assert!(t.shape.encrypted_reasoning);
        assert_eq!(c.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(c.extra["prompt_cache_key"], "k1");
        assert!(
            matches!(&c.response_format, Some(ResponseFormat::JsonSchema { json_schema }) if json_schema["name"] == "o")
        );
        assert!(c.wants_stream_usage());
        let out = serde_json::to_string(c).unwrap();
        assert!(
            !out.contains("models") && !out.contains("store") && !out.contains("\"include\""),
            "{out}"
        );
    }

    #[test]
    fn state_is_refused_by_name() {
        for (body, param) in [
            (
                r#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#,
                "previous_response_id",
            ),
            (
                r#"{"model":"m","input":"x","conversation":"conv_1"}"#,
                "conversation",
            ),
            (
                r#"{"model":"m","input":"x","background":true}"#,
                "background",
            ),
            (r#"{"model":"m","input":5}"#, "input"),
            (
                r#"{"model":"m","input":[{"type":"message","role":"bot","content":"x"}]}"#,
                "input[0].role",
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call_output","output":"x"}]}"#,
                "input[0].call_id",
            ),
            (
                r#"{"model":"m","input":"x","tools":[{"type":"teleport"}]}"#,
                "tools[0].type",
            ),
        ] {
            let err = parse(body.as_bytes())
                .and_then(ResponsesRequest::into_chat)
                .unwrap_err();
            assert_eq!(err.status(), 400, "{body}");
            assert_eq!(err.param(), Some(param), "{body}: {}", err.message());
        }
        let err = parse(br#"{"model":"m","input":"x","previous_response_id":"r"}"#).unwrap_err();
        assert!(err.message().contains("stateless"), "{}", err.message());
    }
}
