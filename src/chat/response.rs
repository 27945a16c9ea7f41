use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{Extra, ToolCall};

/// A non-streaming Chat Completions answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// The completion id (the gateway's `gen-…` id once normalised).
    #[serde(default)]
    pub id: String,
    /// `chat.completion`.
    #[serde(default = "completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered (the public id once normalised).
    #[serde(default)]
    pub model: String,
    /// The configured provider that served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The choices.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The provider's configuration fingerprint; `null` when it gave none.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The choice's index.
    #[serde(default)]
    pub index: u32,
    /// The assistant's message.
    #[serde(default)]
    pub message: ResponseMessage,
    /// Why generation stopped: `stop`, `length`, `tool_calls`, `content_filter`.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// The provider's own finish reason (`null` when unknown).
    #[serde(default)]
    pub native_finish_reason: Option<String>,
    /// Log probabilities.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The assistant message of a [`Choice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// `assistant`.
    #[serde(default = "assistant")]
    pub role: String,
    /// The text, or null when only tools were called.
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text (non-standard `reasoning_content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Reasoning text, as OpenRouter names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// The reasoning in OpenRouter's structured form: texts with their signatures, encrypted
    /// (redacted) reasoning. Sent back on an assistant message, it becomes the provider's own
    /// form again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_details: Option<Vec<ReasoningDetail>>,
    /// Tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Every other field (`refusal`, `annotations`, …), forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for ResponseMessage {
    fn default() -> Self {
        ResponseMessage {
            role: assistant(),
            content: None,
            reasoning_content: None,
            reasoning: None,
            reasoning_details: None,
            tool_calls: None,
            extra: Extra::new(),
        }
    }
}

fn assistant() -> String {
    "assistant".to_owned()
}

/// One chunk of a streamed answer (`chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// The completion id, the same on every chunk.
    #[serde(default)]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The configured provider that served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The choices' deltas; empty on the final usage chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage: absent, `null`, or the totals on the final chunk.
    #[serde(default, skip_serializing_if = "UsageField::is_absent")]
    pub usage: UsageField,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for ChatChunk {
    fn default() -> Self {
        ChatChunk {
            id: String::new(),
            object: chunk_object(),
            created: 0,
            model: String::new(),
            provider: None,
            choices: Vec::new(),
            usage: UsageField::Absent,
            extra: Extra::new(),
        }
    }
}

/// The `usage` key of a chunk, which may be absent, `null` or an object.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum UsageField {
    /// No `usage` key.
    #[default]
    Absent,
    /// `"usage": null`.
    Null,
    /// `"usage": {…}`.
    Present(Usage),
}

impl UsageField {
    /// True when the key is absent.
    pub fn is_absent(&self) -> bool {
        matches!(self, UsageField::Absent)
    }
}

impl Serialize for UsageField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UsageField::Present(u) => u.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for UsageField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<Usage>::deserialize(d)? {
            Some(u) => UsageField::Present(u),
            None => UsageField::Null,
        })
    }
}

/// One choice of a [`ChatChunk`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The choice's index.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Log probabilities.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Set on the chunk that ends the choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// The provider's own finish reason (`null` until the choice ends, and when unknown).
    #[serde(default)]
    pub native_finish_reason: Option<String>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The delta of a [`ChunkChoice`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, on the first delta only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A text fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A reasoning fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// A reasoning fragment, as OpenRouter names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Fragments of the structured reasoning; a client joins those of one `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_details: Option<Vec<ReasoningDetail>>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Every other field (`refusal`, …), forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One of OpenRouter's `reasoning_details`: `reasoning.text` (with its `signature`, once
/// complete), `reasoning.encrypted` (`data`), or `reasoning.summary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasoningDetail {
    /// `reasoning.text`, `reasoning.encrypted` or `reasoning.summary`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The reasoning text (or a fragment of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The provider's signature over the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Encrypted reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A summary of the reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Whose form it is: `anthropic-claude-v1`, `google-gemini-v1`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Its position in the message's reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Every other field (`id`, …), forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ReasoningDetail {
    /// Anthropic's form.
    pub const ANTHROPIC: &'static str = "anthropic-claude-v1";
    /// Gemini's form.
    pub const GEMINI: &'static str = "google-gemini-v1";

    /// A `reasoning.text` of this `format` at `index`.
    pub fn text(format: &str, index: u32, text: Option<String>, signature: Option<String>) -> Self {
        ReasoningDetail {
            kind: "reasoning.text".into(),
            text,
            signature,
            format: Some(format.into()),
            index: Some(index),
            ..Default::default()
        }
    }

    /// A `reasoning.encrypted` of this `format` at `index`.
    pub fn encrypted(format: &str, index: u32, data: String) -> Self {
        ReasoningDetail {
            kind: "reasoning.encrypted".into(),
            data: Some(data),
            format: Some(format.into()),
            index: Some(index),
            ..Default::default()
        }
    }
}

/// A fragment of a tool call in a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Dense, 0-based position of the call within the choice.
    #[serde(default)]
    pub index: Option<u32>,
    /// The call's id, on its first fragment only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on the first fragment only.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (first fragment) and argument fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The function's name, on the first fragment only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An argument fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Token usage of one answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub completion_tokens: u64,
    /// The sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Details of the prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Details of the completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// Cost in USD, when the gateway knows the prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// The tokens written to the prompt cache by how long they stay there (Anthropic's
    /// `cache_creation`, under the name LiteLLM gives it): a one-hour write costs more than a
    /// five-minute one. Boxed: rare, and a usage is moved often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_token_details: Option<Box<CacheCreationTokenDetails>>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `prompt_tokens_details.cache_creation_token_details`: prompt-cache writes by lifetime.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheCreationTokenDetails {
    /// Tokens written to the cache for five minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_5m_input_tokens: Option<u64>,
    /// Tokens written to the cache for an hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_1h_input_tokens: Option<u64>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Reasoning tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_usage_absent_null_present() {
        let c: ChatChunk = serde_json::from_str(r#"{"id":"a","choices":[]}"#).unwrap();
        assert_eq!(c.usage, UsageField::Absent);
        assert!(!serde_json::to_string(&c).unwrap().contains("usage"));
        let c: ChatChunk = serde_json::from_str(r#"{"id":"a","choices":[],"usage":null}"#).unwrap();
        assert_eq!(c.usage, UsageField::Null);
        assert!(serde_json::to_string(&c)
            .unwrap()
            .contains(r#""usage":null"#));
        let c: ChatChunk =
            serde_json::from_str(r#"{"id":"a","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#)
                .unwrap();
        assert!(matches!(
            c.usage,
            UsageField::Present(Usage {
                total_tokens: 7,
                ..
            })
        ));
    }

    #[test]
    fn provider_extra_fields_survive() {
        let json = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop","x_provider":1}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0}},"x_vendor":{"a":1}}"#;
        let c: ChatCompletion = serde_json::from_str(json).unwrap();
        let back: Value = serde_json::to_value(&c).unwrap();
        let mut orig: Value = serde_json::from_str(json).unwrap();
        // Written on every answer, `null` when unknown.
        orig["choices"][0]["native_finish_reason"] = Value::Null;
        assert_eq!(back, orig);
    }
}
