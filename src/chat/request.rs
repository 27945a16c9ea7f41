use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::Extra;

/// A Chat Completions request, as a client sends it.
///
/// `models`, `provider` and `route` are OpenRouter's routing controls: the gateway reads them
/// and never forwards them to a provider (they are not serialised).
///
/// The conversation and the tools, the large parts of a request (base64 images, long
/// histories, JSON schemas), are shared (`Arc`): the fallback layer clones the request for
/// each attempt without copying them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The model id the client asked for (a catalog id, an alias, or `<provider>/<model>`).
    pub model: String,
    /// The conversation.
    pub messages: Arc<Vec<Message>>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream options (`include_usage`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Deprecated bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Bound on generated tokens, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Number of choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Arc<Vec<Tool>>>,
    /// Which tool the model must (or must not) call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tool calls may come in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Output format: text, JSON mode or a JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Reasoning effort (`minimal`, `low`, `medium`, `high`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Best-effort determinism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many top log probabilities per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// OpenRouter: models to fall back to, in order. Never forwarded.
    #[serde(default, skip_serializing)]
    pub models: Option<Vec<String>>,
    /// OpenRouter: provider preferences (`order`, `only`, `ignore`, `sort`, …). Never forwarded.
    #[serde(default, skip_serializing)]
    pub provider: Option<Value>,
    /// OpenRouter: deprecated `route: "fallback"`. Never forwarded.
    #[serde(default, skip_serializing)]
    pub route: Option<String>,
    /// OpenRouter: reasoning settings, translated for each provider kind (OpenAI's
    /// `reasoning_effort`, Anthropic's thinking budget, Gemini's thinking config). Never
    /// forwarded as such.
    #[serde(default, skip_serializing)]
    pub reasoning: Option<Reasoning>,
    /// OpenRouter: the older switch for reasoning (`true`: on; `false`: left out of the
    /// answer). Never forwarded.
    #[serde(default, skip_serializing)]
    pub include_reasoning: Option<bool>,
    /// OpenRouter: `transforms` (`["middle-out"]`). Never forwarded.
    #[serde(default, skip_serializing)]
    pub transforms: Option<Vec<String>>,
    /// OpenRouter: `plugins` (`[{"id": "context-compression"}]`, …). Never forwarded.
    #[serde(default, skip_serializing)]
    pub plugins: Option<Vec<Plugin>>,
    /// OpenRouter: `usage: {"include": true}`, the older way to ask for usage; the gateway
    /// always reports it. Never forwarded.
    #[serde(default, skip_serializing)]
    pub usage: Option<Value>,
    /// OpenRouter: the session a request belongs to, for sticky routing. Never forwarded.
    #[serde(default, skip_serializing)]
    pub session_id: Option<String>,
    /// OpenRouter: debugging switches (`echo_upstream_body`). Never forwarded.
    #[serde(default, skip_serializing)]
    pub debug: Option<Value>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The longest `model` (and `models[]` entry) accepted, in bytes.
pub const MAX_MODEL_ID_BYTES: usize = 512;

impl ChatRequest {
    /// True when the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// What the request asks of the model's reasoning. `effort: "none"`,
    /// `reasoning.enabled: false` and `include_reasoning: false` without any other
    /// reasoning setting turn it off; an effort, a budget, `enabled: true` or
    /// `include_reasoning: true` turn it on. `reasoning.exclude` and `include_reasoning:
    /// false` leave it out of the answer.
    pub fn reasoning_ask(&self) -> ReasoningAsk<'_> {
        let r = self.reasoning.as_ref();
        let effort = self
            .reasoning_effort
            .as_deref()
            .or_else(|| r.and_then(|r| r.effort.as_deref()));
        let budget = r.and_then(|r| r.max_tokens);
        let mut enabled = r.and_then(|r| r.enabled);
        if effort == Some("none") {
            enabled = Some(false);
        } else if effort.is_some() || budget.is_some() {
            enabled = enabled.or(Some(true));
        }
        let mut exclude = r.and_then(|r| r.exclude).unwrap_or(false);
        match self.include_reasoning {
            Some(true) => enabled = enabled.or(Some(true)),
            // The older switch only hides the reasoning a model does anyway.
            Some(false) => exclude = true,
            None => {}
        }
        ReasoningAsk {
            enabled,
            effort: effort.filter(|e| *e != "none"),
            budget,
            exclude,
        }
    }

    /// True when the client asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.is_stream()
            && self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false)
    }

    /// Checks what the types alone cannot: a non-empty `model` and `messages`, model ids of
    /// at most [`MAX_MODEL_ID_BYTES`], a `tool_call_id` on tool messages, `n` at least 1. The
    /// error names the field.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad =
            |msg: String, param: &str| Err(crate::Error::invalid_request(msg, Some(param.into())));
        if self.model.trim().is_empty() {
            return bad("`model` must be a non-empty string".into(), "model");
        }
        // No model id is that long; one that is would be copied into every record.
        if self.model.len() > MAX_MODEL_ID_BYTES {
            return bad(
                format!("`model` must be at most {MAX_MODEL_ID_BYTES} bytes long"),
                "model",
            );
        }
        for (i, m) in self.models.iter().flatten().enumerate() {
            if m.len() > MAX_MODEL_ID_BYTES {
                return bad(
                    format!("`models[{i}]` must be at most {MAX_MODEL_ID_BYTES} bytes long"),
                    &format!("models[{i}]"),
                );
            }
        }
        if self.messages.is_empty() {
            return bad(
                "`messages` must contain at least one message".into(),
                "messages",
            );
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                return bad(
                    format!("messages[{i}]: a `tool` message needs `tool_call_id`"),
                    &format!("messages[{i}].tool_call_id"),
                );
            }
            if m.role != Role::Assistant && m.content.is_none() {
                return bad(
                    format!("messages[{i}]: missing field `content`"),
                    &format!("messages[{i}].content"),
                );
            }
        }
        if self.n == Some(0) {
            return bad("`n` must be at least 1".into(), "n");
        }
        for (i, t) in self.transforms.iter().flatten().enumerate() {
            if t != "middle-out" {
                return bad(
                    format!("unknown transform `{t}` (this gateway offers `middle-out`)"),
                    &format!("transforms[{i}]"),
                );
            }
        }
        for (i, p) in self.plugins.iter().flatten().enumerate() {
            if p.enabled == Some(false) || p.id == "context-compression" {
                continue;
            }
            let what = match p.id.as_str() {
                "web" => "web search",
                "file-parser" => "PDF parsing",
                "response-healing" => "JSON repair",
                _ => "this plugin",
            };
            return bad(
                format!(
                    "the `{}` plugin ({what}) is not offered by this gateway; `context-compression` is",
                    p.id
                ),
                &format!("plugins[{i}].id"),
            );
        }
        Ok(())
    }
}

/// OpenRouter's `reasoning` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Reasoning {
    /// `none`, `minimal`, `low`, `medium`, `high`, `xhigh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// A budget of reasoning tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// `true`: reason at the provider's default effort; `false`: do not reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Reason, but leave the reasoning out of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<bool>,
    /// Every other field (`summary`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a request asks of the model's reasoning, from `reasoning_effort`, `reasoning` and
/// `include_reasoning` together: see [`ChatRequest::reasoning_ask`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasoningAsk<'a> {
    /// `Some(false)`: reasoning off; `Some(true)`: on; `None`: the model's default.
    pub enabled: Option<bool>,
    /// The effort asked for (`reasoning_effort` first, then `reasoning.effort`).
    pub effort: Option<&'a str>,
    /// The token budget asked for.
    pub budget: Option<u32>,
    /// Whether the reasoning is left out of the answer.
    pub exclude: bool,
}

impl ReasoningAsk<'_> {
    /// The effort to ask a provider that takes only an effort: the one asked for, else one
    /// read from the budget (up to 2048 tokens `low`, up to 8192 `medium`, more `high`), else
    /// `medium` when reasoning is turned on; `None` when it is off or nothing was asked.
    pub fn effective_effort(&self) -> Option<&str> {
        if self.enabled == Some(false) {
            return None;
        }
        if let Some(e) = self.effort {
            return Some(e);
        }
        match self.budget {
            Some(b) if b <= 2048 => Some("low"),
            Some(b) if b <= 8192 => Some("medium"),
            Some(_) => Some("high"),
            None => (self.enabled == Some(true)).then_some("medium"),
        }
    }
}

/// One of OpenRouter's `plugins`: its `id` and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    /// `context-compression`, `web`, `file-parser`, `response-healing`, …
    pub id: String,
    /// `enabled: false` turns the plugin off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The plugin's settings.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Add a final chunk with `choices: []` and the usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A message's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The newer name for `system`.
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
    /// A deprecated function result.
    Function,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text or content parts; may be null for an assistant message with tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls the assistant made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// An assistant refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Reasoning text of an earlier assistant turn (DeepSeek and others need it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Message {
    /// A message with text content.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            reasoning_content: None,
            extra: Extra::new(),
        }
    }
}

/// A message's content: a string or a list of parts.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text, images, audio and files.
    Parts(Vec<ContentPart>),
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Content::Text(t) => s.serialize_str(t),
            Content::Parts(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(64));
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(V)
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Other fields (`cache_control`, …), forwarded untouched.
        #[serde(flatten)]
        extra: Extra,
    },
    /// An image by URL or `data:` URI.
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
        /// Other fields, forwarded untouched.
        #[serde(flatten)]
        extra: Extra,
    },
    /// Base64 audio.
    InputAudio {
        /// The audio.
        input_audio: InputAudio,
        /// Other fields, forwarded untouched.
        #[serde(flatten)]
        extra: Extra,
    },
    /// A file, inline or by id.
    File {
        /// The file.
        file: FileRef,
        /// Other fields, forwarded untouched.
        #[serde(flatten)]
        extra: Extra,
    },
    /// An assistant refusal part.
    Refusal {
        /// The refusal text.
        refusal: String,
        /// Other fields, forwarded untouched.
        #[serde(flatten)]
        extra: Extra,
    },
    /// A part type this model does not know, forwarded untouched (it keeps its `type`).
    #[serde(untagged)]
    Other(Extra),
}

/// `image_url` of a content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// An http(s) URL or a `data:` URI.
    pub url: String,
    /// `auto`, `low` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `input_audio` of a content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputAudio {
    /// Base64 audio.
    pub data: String,
    /// `wav` or `mp3`.
    pub format: String,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `file` of a content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    /// Base64 file data (often a `data:` URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    /// An uploaded file's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// The file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A function definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its arguments as a JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Structured Outputs for the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tool call the assistant made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, echoed by the `tool` message that answers it.
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The call.
    pub function: FunctionCall,
    /// Other fields (`extra_content` with provider signatures, …), forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

fn function_kind() -> String {
    "function".to_owned()
}

/// A function call: its name and its arguments as a JSON **string**.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON string.
    pub arguments: String,
}

/// `tool_choice`: `none`, `auto`, `required`, or one named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"none"`, `"auto"` or `"required"`.
    Mode(String),
    /// `{"type":"function","function":{"name":…}}`.
    Named(Value),
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Plain text.
    Text,
    /// JSON mode.
    JsonObject,
    /// Structured Outputs.
    JsonSchema {
        /// `{name, schema, strict, description}`.
        json_schema: Value,
    },
    /// Another format, forwarded untouched.
    #[serde(untagged)]
    Other(Extra),
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_content_part_shape_round_trips() {
        let json = r#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"developer","content":"really"},
            {"role":"user","content":[
                {"type":"text","text":"look","cache_control":{"type":"ephemeral"}},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}},
                {"type":"input_audio","input_audio":{"data":"UklG","format":"wav"}},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}},
                {"type":"video_url","video_url":{"url":"https://x/v.mp4"}}
            ]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"},"extra_content":{"google":{"thought_signature":"sig"}}}]},
            {"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"42"}]}
        ],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"},"strict":true}}],
        "tool_choice":{"type":"function","function":{"name":"f"}},
        "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}},
        "stop":["a","b"],"x_custom":{"k":[1,2]}}"#;
        let req: ChatRequest = serde_json::from_str(json).unwrap();
        req.validate().unwrap();
        let Some(Content::Parts(parts)) = &req.messages[2].content else {
            panic!()
        };
        assert!(matches!(parts[0], ContentPart::Text { .. }));
        assert!(matches!(parts[1], ContentPart::ImageUrl { .. }));
        assert!(matches!(parts[2], ContentPart::InputAudio { .. }));
        assert!(matches!(parts[3], ContentPart::File { .. }));
        assert!(matches!(&parts[4], ContentPart::Other(m) if m["type"] == "video_url"));
        let back: Value = serde_json::to_value(&req).unwrap();
        let orig: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back["messages"][2], orig["messages"][2]);
        assert_eq!(
            back["messages"][3]["tool_calls"],
            orig["messages"][3]["tool_calls"]
        );
        assert_eq!(back["x_custom"], orig["x_custom"]);
        assert_eq!(back["tool_choice"], orig["tool_choice"]);
        assert_eq!(back["response_format"], orig["response_format"]);
    }

    #[test]
    fn routing_controls_are_read_but_not_forwarded() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"models":["a","b"],"provider":{"order":["p"]},"route":"fallback"}"#,
        )
        .unwrap();
        assert_eq!(
            req.models.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        let out = serde_json::to_string(&req).unwrap();
        assert!(
            !out.contains("models") && !out.contains("provider") && !out.contains("route"),
            "{out}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let req: ChatRequest = serde_json::from_str(r#"{"model":"","messages":[]}"#).unwrap();
        assert_eq!(req.validate().unwrap_err().param(), Some("model"));
        let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(req.validate().unwrap_err().param(), Some("messages"));
        let req: ChatRequest =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#)
                .unwrap();
        assert_eq!(
            req.validate().unwrap_err().param(),
            Some("messages[0].tool_call_id")
        );
    }
}
