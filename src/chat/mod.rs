//! The typed chat model: the OpenAI Chat Completions request, response and stream chunk.
//!
//! Every struct keeps the fields it does not know in an `extra` map (`#[serde(flatten)]`), so a
//! client's `top_k` or `x_custom` reaches the provider and a provider's extra response fields
//! reach the client, untouched. Known fields are typed so layers can read and rewrite them.
//!
//! ```
//! use modelgate::chat::{ChatRequest, Content};
//!
//! let req: ChatRequest = serde_json::from_str(
//!     r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"top_k":5}"#,
//! ).unwrap();
//! assert_eq!(req.model, "gpt-4o-mini");
//! assert!(matches!(req.messages[0].content, Some(Content::Text(ref t)) if t == "hi"));
//! assert_eq!(req.extra["top_k"], 5);
//! // Unknown fields are written back out.
//! assert!(serde_json::to_string(&req).unwrap().contains(r#""top_k":5"#));
//! ```

mod request;
mod response;

pub use request::{
    ChatRequest, Content, ContentPart, FileRef, FunctionCall, FunctionDef, ImageUrl, InputAudio,
    Message, Plugin, Reasoning, ReasoningAsk, ResponseFormat, Role, Stop, StreamOptions, Tool,
    ToolCall, ToolChoice, MAX_MODEL_ID_BYTES,
};
pub use response::{
    CacheCreationTokenDetails, ChatChunk, ChatCompletion, Choice, ChunkChoice,
    CompletionTokensDetails, Delta, FunctionCallDelta, PromptTokensDetails, ReasoningDetail,
    ResponseMessage, ToolCallDelta, Usage, UsageField,
};

/// Fields a struct does not know, kept in order and forwarded untouched.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Now, in seconds since the Unix epoch (0 if the clock is before it): the `created` of the
/// answers and chunks the gateway writes.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
