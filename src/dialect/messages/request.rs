//! A Messages request read into the core's [`ChatRequest`], for providers of other kinds.
//!
//! - `system` (a string or text blocks) and `role: "system"` messages become system
//!   messages; Claude Code's per-request `x-anthropic-billing-header` block is dropped (it
//!   changes every request and defeats the provider's prompt cache);
//! - `text`, `image` (base64 or URL) and `document` blocks (a base64 PDF, or plain text)
//!   become content parts; `tool_result` blocks become `tool` messages (their text, `Error: `
//!   before it when `is_error`; their images follow in a user message); `tool_use` blocks
//!   become tool calls; `thinking` and `redacted_thinking` blocks of earlier turns are
//!   dropped (their signatures mean something only to Anthropic);
//! - `tools` become functions (`input_schema` the parameters, `strict` kept); `tool_choice`
//!   `auto`, `any`, `tool` and `none` become `auto`, `required`, the named function and `none`
//!   (`disable_parallel_tool_use` turns off parallel calls);
//! - `thinking: {type: "enabled", budget_tokens}` becomes `reasoning_effort` (under 4,096
//!   `low`, under 16,384 `medium`, else `high`); `adaptive` and `disabled` leave the provider's
//!   default;
//! - `output_config.format` of type `json_schema` becomes structured output;
//!   `metadata.user_id` becomes `user`; `stop_sequences`, `temperature`, `top_p` and
//!   `max_tokens` keep their meaning; the upstream is always asked for the final usage of a
//!   stream;
//! - `cache_control`, `context_management` and the other fields only Anthropic understands
//!   are dropped. What cannot be said to another provider at all (a server tool such as
//!   `web_search`, a document by URL, a block type this reader does not know) is kept as the
//!   reason such an attempt is refused; an `anthropic` endpoint still serves the request.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chat::{
    ChatRequest, Content, ContentPart, Extra, FileRef, FunctionCall, FunctionDef, ImageUrl,
    Message, ResponseFormat, Role, Stop, StreamOptions, Tool, ToolCall, ToolChoice,
};
use crate::Error;

/// The prefix of the system block Claude Code adds to every request.
const BILLING_HEADER: &str = "x-anthropic-billing-header";

/// Tokens an image is counted as by the local estimate (a 1,092 × 1,092 image, Anthropic's
/// largest before it scales one down, is about 1,600).
const IMAGE_TOKENS: u64 = 1_600;

/// A Messages API request, as a client sends it: the fields the gateway reads. Every other
/// field stays in the body that goes to an `anthropic` endpoint as it came.
#[derive(Debug, Deserialize)]
#[non_exhaustive]
pub struct MessagesRequest {
    /// The model id the client asked for.
    pub model: String,
    /// The conversation.
    pub messages: Vec<InputMessage>,
    /// Instructions: a string or text blocks.
    #[serde(default)]
    pub system: Option<Value>,
    /// Bound on generated tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    /// Stream the answer.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Sampling temperature (0 to 1).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// Which tool the model must (or must not) call.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Extended thinking.
    #[serde(default)]
    pub thinking: Option<Value>,
    /// `user_id`.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Output format and effort.
    #[serde(default)]
    pub output_config: Option<Value>,
    /// OpenRouter: models to fall back to, in order. Never forwarded.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// OpenRouter: provider preferences. Never forwarded.
    #[serde(default)]
    pub provider: Option<Value>,
}

/// One message of a Messages conversation.
#[derive(Debug, Deserialize)]
#[non_exhaustive]
pub struct InputMessage {
    /// `user`, `assistant` (or `system`, as Claude Code sends it).
    pub role: String,
    /// A string or content blocks.
    pub content: Value,
}

/// A Messages request read for the core.
#[derive(Debug)]
pub(crate) struct Translated {
    /// The core's request.
    pub chat: ChatRequest,
    /// Why a provider of another kind cannot serve the request, when it cannot.
    pub untranslatable: Option<Error>,
    /// The local estimate of the prompt's tokens.
    pub input_tokens: u64,
}

/// Parses a Messages request body; the error names the field that is wrong.
pub(crate) fn parse(bytes: &[u8]) -> Result<MessagesRequest, Error> {
    let req: MessagesRequest = crate::dialect::edge::parse_body(bytes, |r: &MessagesRequest| {
        (&r.model, r.models.as_deref())
    })?;
    if req.messages.is_empty() {
        return Err(invalid(
            "messages",
            "`messages` must contain at least one message".into(),
        ));
    }
    Ok(req)
}

fn invalid(param: &str, message: String) -> Error {
    Error::invalid_request(message, Some(param.to_owned()))
}

/// What cannot be said to a provider of another kind: a 400 naming the field.
fn untranslatable(param: &str, what: &str) -> Error {
    invalid(
        param,
        format!("{what} is served only by an `anthropic` endpoint, and this model's are of another kind"),
    )
}

/// Reads the conversation while counting what the local estimate needs.
#[derive(Default)]
struct Reader {
    messages: Vec<Message>,
    untranslatable: Option<Error>,
    chars: u64,
    images: u64,
}

impl Reader {
    fn cannot(&mut self, param: &str, what: &str) {
        if self.untranslatable.is_none() {
            self.untranslatable = Some(untranslatable(param, what));
        }
    }

    fn text(&mut self, text: &str) {
        self.chars += text.len() as u64;
    }

    fn system(&mut self, system: &Value, at: &str) -> Result<(), Error> {
        let text = match system {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.iter().enumerate() {
                    let Some(t) = b.get("text").and_then(Value::as_str) else {
                        return Err(invalid(
                            &format!("{at}[{i}]"),
                            format!("`{at}[{i}]` must be a text block"),
                        ));
                    };
                    if !t.starts_with(BILLING_HEADER) {
                        texts.push(t);
                    }
                }
                texts.join("\n\n")
            }
            Value::Null => return Ok(()),
            _ => {
                return Err(invalid(
                    at,
                    format!("`{at}` must be a string or a list of text blocks"),
                ))
            }
        };
        if !text.is_empty() {
            self.text(&text);
            self.messages.push(Message::text(Role::System, text));
        }
        Ok(())
    }

    fn message(&mut self, i: usize, m: &InputMessage) -> Result<(), Error> {
        let at = format!("messages[{i}]");
        match m.role.as_str() {
            "user" => self.user(&m.content, &at),
            "assistant" => self.assistant(&m.content, &at),
            "system" => self.system(&m.content, &format!("{at}.content")),
            other => Err(invalid(
                &format!("{at}.role"),
                format!("`{at}.role` must be `user` or `assistant`, not `{other}`"),
            )),
        }
    }

    fn user(&mut self, content: &Value, at: &str) -> Result<(), Error> {
        let blocks = match content {
            Value::String(s) => {
                self.text(s);
                self.messages.push(Message::text(Role::User, s.clone()));
                return Ok(());
            }
            Value::Array(blocks) => blocks,
            _ => return Err(bad_content(at)),
        };
        let mut parts = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("{at}.content[{j}]");
            match block_type(b, &at)? {
                "tool_result" => {
                    let images = self.tool_result(b, &at)?;
                    parts.extend(images);
                }
                _ => {
                    if let Some(p) = self.part(b, &at)? {
                        parts.push(p);
                    }
                }
            }
        }
        if !parts.is_empty() {
            let mut msg = Message::text(Role::User, String::new());
            msg.content = Some(content_of(parts));
            self.messages.push(msg);
        }
        Ok(())
    }

    /// A tool result as a `tool` message; its images, for a user message after it.
    fn tool_result(&mut self, b: &Value, at: &str) -> Result<Vec<ContentPart>, Error> {
        let Some(id) = b.get("tool_use_id").and_then(Value::as_str) else {
            return Err(invalid(
                &format!("{at}.tool_use_id"),
                format!("`{at}.tool_use_id` must be a string"),
            ));
        };
        let mut text = String::new();
        let mut images = Vec::new();
        match b.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => text.push_str(s),
            Some(Value::Array(items)) => {
                for (k, item) in items.iter().enumerate() {
                    let at = format!("{at}.content[{k}]");
                    match self.part(item, &at)? {
                        Some(ContentPart::Text { text: t, .. }) => {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(&t);
                        }
                        Some(p) => images.push(p),
                        None => {}
                    }
                }
            }
            Some(_) => return Err(bad_content(&format!("{at}.content"))),
        }
        if b.get("is_error").and_then(Value::as_bool) == Some(true) {
            text.insert_str(0, "Error: ");
        }
        self.text(&text);
        let mut msg = Message::text(Role::Tool, text);
        msg.tool_call_id = Some(id.to_owned());
        self.messages.push(msg);
        Ok(images)
    }

    /// A user content block as a content part (`None`: nothing to send).
    fn part(&mut self, b: &Value, at: &str) -> Result<Option<ContentPart>, Error> {
        Ok(Some(match block_type(b, at)? {
            "text" => {
                let text = str_field(b, "text", at)?;
                self.text(text);
                ContentPart::Text {
                    text: text.to_owned(),
                    extra: Extra::new(),
                }
            }
            "image" => {
                self.images += 1;
                let url = match source(b, at)? {
                    Source::Base64 { media_type, data } => {
                        format!("data:{media_type};base64,{data}")
                    }
                    Source::Url(url) => url.to_owned(),
                    Source::Text(_) => return Err(bad_source(at)),
                };
                ContentPart::ImageUrl {
                    image_url: ImageUrl {
                        url,
                        detail: None,
                        extra: Extra::new(),
                    },
                    extra: Extra::new(),
                }
            }
            "document" => match source(b, at)? {
                Source::Base64 { media_type, data } => {
                    self.chars += data.len() as u64 / 2;
                    ContentPart::File {
                        file: FileRef {
                            file_data: Some(format!("data:{media_type};base64,{data}")),
                            file_id: None,
                            filename: b
                                .get("title")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .or_else(|| Some("document.pdf".to_owned())),
                            extra: Extra::new(),
                        },
                        extra: Extra::new(),
                    }
                }
                Source::Text(text) => {
                    self.text(text);
                    ContentPart::Text {
                        text: text.to_owned(),
                        extra: Extra::new(),
                    }
                }
                Source::Url(_) => {
                    self.cannot(&format!("{at}.source"), "a document by URL");
                    return Ok(None);
                }
            },
            // Earlier turns' reasoning means something only to Anthropic.
            "thinking" | "redacted_thinking" => return Ok(None),
            other => {
                self.cannot(&format!("{at}.type"), &format!("a `{other}` block"));
                return Ok(None);
            }
        }))
    }

    fn assistant(&mut self, content: &Value, at: &str) -> Result<(), Error> {
        let blocks = match content {
            Value::String(s) => {
                self.text(s);
                self.messages
                    .push(Message::text(Role::Assistant, s.clone()));
                return Ok(());
            }
            Value::Array(blocks) => blocks,
            _ => return Err(bad_content(at)),
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("{at}.content[{j}]");
            match block_type(b, &at)? {
                "text" => text.push_str(str_field(b, "text", &at)?),
                "tool_use" => {
                    let id = str_field(b, "id", &at)?;
                    let name = str_field(b, "name", &at)?;
                    let input = b.get("input").cloned().unwrap_or(Value::Object(Map::new()));
                    let arguments = input.to_string();
                    self.text(&arguments);
                    calls.push(ToolCall {
                        id: id.to_owned(),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: name.to_owned(),
                            arguments,
                        },
                        extra: Extra::new(),
                    });
                }
                "thinking" | "redacted_thinking" => {}
                other => self.cannot(&format!("{at}.type"), &format!("a `{other}` block")),
            }
        }
        self.text(&text);
        let mut msg = Message::text(Role::Assistant, text);
        if !calls.is_empty() {
            if msg.content.as_ref().is_some_and(|c| match c {
                Content::Text(t) => t.is_empty(),
                Content::Parts(p) => p.is_empty(),
            }) {
                msg.content = None;
            }
            msg.tool_calls = Some(calls);
        }
        self.messages.push(msg);
        Ok(())
    }
}

/// A single text part is sent as a string (what every provider accepts).
fn content_of(mut parts: Vec<ContentPart>) -> Content {
    if parts.len() == 1 {
        if let ContentPart::Text { text, .. } = &mut parts[0] {
            return Content::Text(std::mem::take(text));
        }
    }
    Content::Parts(parts)
}

fn bad_content(at: &str) -> Error {
    invalid(
        &format!("{at}.content"),
        format!("`{at}.content` must be a string or a list of content blocks"),
    )
}

fn block_type<'a>(b: &'a Value, at: &str) -> Result<&'a str, Error> {
    b.get("type").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            &format!("{at}.type"),
            format!("`{at}` must be a content block with a `type`"),
        )
    })
}

fn str_field<'a>(b: &'a Value, field: &str, at: &str) -> Result<&'a str, Error> {
    b.get(field).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            &format!("{at}.{field}"),
            format!("`{at}.{field}` must be a string"),
        )
    })
}

enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url(&'a str),
    Text(&'a str),
}

fn bad_source(at: &str) -> Error {
    invalid(
        &format!("{at}.source"),
        format!("`{at}.source` must be a `base64`, `url` or `text` source"),
    )
}

fn source<'a>(b: &'a Value, at: &str) -> Result<Source<'a>, Error> {
    let s = b.get("source").ok_or_else(|| bad_source(at))?;
    let field = |f: &str| {
        s.get(f)
            .and_then(Value::as_str)
            .ok_or_else(|| bad_source(at))
    };
    match s.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(Source::Base64 {
            media_type: field("media_type")?,
            data: field("data")?,
        }),
        Some("url") => Ok(Source::Url(field("url")?)),
        Some("text") => Ok(Source::Text(field("data")?)),
        _ => Err(bad_source(at)),
    }
}

/// `thinking.budget_tokens` as an OpenAI reasoning effort.
fn effort(thinking: Option<&Value>) -> Option<String> {
    let t = thinking?;
    if t.get("type").and_then(Value::as_str) != Some("enabled") {
        return None;
    }
    let budget = t.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
    Some(
        match budget {
            0..4_096 => "low",
            4_096..16_384 => "medium",
            _ => "high",
        }
        .to_owned(),
    )
}

impl MessagesRequest {
    /// The request in the core's terms, with what another kind of provider cannot be told and
    /// the local estimate of the prompt's tokens.
    pub(crate) fn into_chat(self) -> Result<Translated, Error> {
        let mut r = Reader::default();
        if let Some(system) = &self.system {
            r.system(system, "system")?;
        }
        for (i, m) in self.messages.iter().enumerate() {
            r.message(i, m)?;
        }
        let mut chat = ChatRequest {
            model: self.model,
            stream: self.stream,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self
                .stop_sequences
                .filter(|s| !s.is_empty())
                .map(Stop::Many),
            reasoning_effort: effort(self.thinking.as_ref()),
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
        chat.user = self
            .metadata
            .as_ref()
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(tools) = &self.tools {
            let mut defs = Vec::with_capacity(tools.len());
            for (i, t) in tools.iter().enumerate() {
                let at = format!("tools[{i}]");
                match t.get("type").and_then(Value::as_str) {
                    None | Some("custom") => {}
                    Some(other) => {
                        r.cannot(&format!("{at}.type"), &format!("the `{other}` tool"));
                        continue;
                    }
                }
                let name = str_field(t, "name", &at)?;
                let parameters = t.get("input_schema").cloned();
                r.chars += parameters
                    .as_ref()
                    .map_or(0, |p| p.to_string().len() as u64);
                defs.push(Tool {
                    kind: "function".to_owned(),
                    function: FunctionDef {
                        name: name.to_owned(),
                        description: t
                            .get("description")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        parameters,
                        strict: t.get("strict").and_then(Value::as_bool),
                        extra: Extra::new(),
                    },
                    extra: Extra::new(),
                });
            }
            if !defs.is_empty() {
                chat.tools = Some(Arc::new(defs));
            }
        }
        if let Some(choice) = &self.tool_choice {
            let (mode, parallel) = tool_choice(choice)?;
            chat.tool_choice = mode;
            chat.parallel_tool_calls = parallel;
            if chat.tools.is_none() {
                chat.tool_choice = None;
            }
        }
        if let Some(format) = self
            .output_config
            .as_ref()
            .and_then(|o| o.get("format"))
            .filter(|f| f.get("type").and_then(Value::as_str) == Some("json_schema"))
        {
            let schema = format.get("schema").cloned().unwrap_or(Value::Null);
            chat.response_format = Some(ResponseFormat::JsonSchema {
                json_schema: serde_json::json!({"name": "output", "schema": schema, "strict": true}),
            });
        }
        chat.messages = Arc::new(r.messages);
        if r.untranslatable.is_none() {
            // Nothing to send (a conversation of empty turns, say): the client hears it here.
            chat.validate()?;
        }
        let input_tokens = r.chars.div_ceil(4) + r.images * IMAGE_TOKENS;
        Ok(Translated {
            chat,
            untranslatable: r.untranslatable,
            input_tokens,
        })
    }
}

/// `tool_choice` in OpenAI's terms, with `parallel_tool_calls`.
fn tool_choice(choice: &Value) -> Result<(Option<ToolChoice>, Option<bool>), Error> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    let mode = |m: &str| Some(ToolChoice::Mode(m.to_owned()));
    let picked = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => mode("auto"),
        Some("any") => mode("required"),
        Some("none") => mode("none"),
        Some("tool") => {
            let name = str_field(choice, "name", "tool_choice")?;
            Some(ToolChoice::Named(
                serde_json::json!({"type": "function", "function": {"name": name}}),
            ))
        }
        _ => {
            return Err(invalid(
                "tool_choice.type",
                "`tool_choice.type` must be `auto`, `any`, `tool` or `none`".into(),
            ))
        }
    };
    Ok((picked, parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Translated {
        parse(json.as_bytes()).unwrap().into_chat().unwrap()
    }

    #[test]
    fn a_claude_code_turn_reads_into_the_core_request() {
        let t = read(
            r#"{"model":"m","max_tokens":32000,"stream":true,
            "system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=1;"},
                      {"type":"text","text":"You are helpful.","cache_control":{"type":"ephemeral"}}],
            "messages":[
              {"role":"user","content":[{"type":"text","text":"hi"}]},
              {"role":"system","content":[{"type":"text","text":"reminder"}]},
              {"role":"assistant","content":[
                 {"type":"thinking","thinking":"hmm","signature":"sig"},
                 {"type":"text","text":"Let me look."},
                 {"type":"tool_use","id":"toolu_1","name":"Read","input":{"path":"a"}}]},
              {"role":"user","content":[
                 {"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"A"},
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]},
                 {"type":"tool_result","tool_use_id":"toolu_2","content":"boom","is_error":true},
                 {"type":"text","text":"go on"}]}],
            "tools":[{"name":"Read","description":"reads","input_schema":{"type":"object"},"strict":true,"defer_loading":true}],
            "tool_choice":{"type":"any","disable_parallel_tool_use":true},
            "thinking":{"type":"enabled","budget_tokens":8000},
            "metadata":{"user_id":"u1"},"stop_sequences":["END"],
            "context_management":{"edits":[]},"models":["b"]}"#,
        );
        assert!(t.untranslatable.is_none());
        let c = &t.chat;
        let m = &c.messages;
        assert_eq!(m[0].role, Role::System);
        assert_eq!(m[0].content, Some(Content::Text("You are helpful.".into())));
        assert_eq!(m[1].content, Some(Content::Text("hi".into())));
        assert_eq!(m[2].role, Role::System);
        assert_eq!(m[3].role, Role::Assistant);
        assert_eq!(m[3].content, Some(Content::Text("Let me look.".into())));
        let calls = m[3].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].id, "toolu_1");
        assert_eq!(calls[0].function.arguments, r#"{"path":"a"}"#);
        assert_eq!(m[4].role, Role::Tool);
        assert_eq!(m[4].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(m[4].content, Some(Content::Text("A".into())));
        assert_eq!(m[5].content, Some(Content::Text("Error: boom".into())));
        let Some(Content::Parts(parts)) = &m[6].content else {
            panic!("{:?}", m[6])
        };
        assert!(
            matches!(&parts[0], ContentPart::ImageUrl { image_url, .. } if image_url.url == "data:image/png;base64,AAAA")
        );
        assert!(matches!(&parts[1], ContentPart::Text { text, .. } if text == "go on"));
        let tools = c.tools.as_ref().unwrap();
        assert_eq!(tools[0].function.strict, Some(true));
        assert_eq!(
            tools[0].function.parameters,
            Some(serde_json::json!({"type":"object"}))
        );
        assert_eq!(c.tool_choice, Some(ToolChoice::Mode("required".into())));
        assert_eq!(c.parallel_tool_calls, Some(false));
        assert_eq!(c.reasoning_effort.as_deref(), Some("medium"));
        assert_eq!(c.user.as_deref(), Some("u1"));
        assert_eq!(c.stop, Some(Stop::Many(vec!["END".into()])));
        assert!(c.wants_stream_usage());
        assert_eq!(c.models.as_deref(), Some(&["b".to_owned()][..]));
        assert!(t.input_tokens > IMAGE_TOKENS);
        c.validate().unwrap();
        let out = serde_json::to_string(c).unwrap();
        for gone in [
            "context_management",
            "cache_control",
            "billing",
            "defer_loading",
            "models",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
    }

    #[test]
    fn what_only_anthropic_serves_is_kept_as_the_reason() {
        let t = read(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
            "tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        );
        let e = t.untranslatable.unwrap();
        assert_eq!(e.param(), Some("tools[0].type"));
        assert!(e.message().contains("web_search"), "{}", e.message());
        let t = read(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]}"#,
        );
        assert!(t.untranslatable.is_some());
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param) in [
            (
                r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[]}]}"#,
                "messages",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"bot","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#,
                "messages[0].content[0].tool_use_id",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"maybe"}}"#,
                "tool_choice.type",
            ),
        ] {
            let err = parse(body.as_bytes())
                .and_then(MessagesRequest::into_chat)
                .unwrap_err();
            assert_eq!(err.status(), 400, "{body}");
            assert_eq!(err.param(), Some(param), "{body}: {}", err.message());
        }
        let err = parse(br#"{"model":"m","messages":"x"}"#).unwrap_err();
        assert_eq!(err.param(), Some("messages"));
        let err = parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}]} trailing"#);
        assert!(err.unwrap_err().message().contains("trailing"));
    }
}
