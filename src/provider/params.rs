//! OpenRouter's parameter rule: a parameter the serving endpoint does not support is dropped,
//! not forwarded and not an error.
//!
//! The parameters are OpenRouter's `supported_parameters` names ([`PARAMETERS`]). Each provider
//! kind knows the ones its API takes ([`ProviderKind::parameters`]); an endpoint's declared
//! `supported_parameters` replaces that list (a vLLM host that takes `top_k`, a model without
//! sampling controls). A field that is none of these names is not a parameter in this sense:
//! it keeps its pass-through to OpenAI-compatible hosts. `tools` and `tool_choice` are never
//! dropped: they are the request's substance, not a tuning, and an endpoint without them
//! refuses the request, which moves fallback on.
//!
//! ```
//! use modelgate::chat::ChatRequest;
//! use modelgate::provider::{keep_supported, ProviderKind};
//!
//! let mut req: ChatRequest = serde_json::from_str(
//!     r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":5,"temperature":0.2}"#,
//! ).unwrap();
//! keep_supported(&mut req, ProviderKind::OpenAi.parameters());
//! assert!(!req.extra.contains_key("top_k"));
//! assert_eq!(req.temperature, Some(0.2));
//! ```

use super::ProviderKind;
use crate::chat::{ChatRequest, ResponseFormat};

/// OpenRouter's parameter names, the vocabulary of `supported_parameters`.
pub const PARAMETERS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "top_a",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "max_tokens",
    "max_completion_tokens",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "prediction",
    "seed",
    "response_format",
    "structured_outputs",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "include_reasoning",
    "reasoning",
    "reasoning_effort",
    "web_search_options",
    "verbosity",
];

/// OpenAI's Chat Completions parameters (Azure's too).
const OPENAI: &[&str] = &[
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "max_completion_tokens",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "prediction",
    "seed",
    "response_format",
    "structured_outputs",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "include_reasoning",
    "reasoning",
    "reasoning_effort",
    "web_search_options",
    "verbosity",
];

/// What the Anthropic adapter translates.
const ANTHROPIC: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "response_format",
    "structured_outputs",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "include_reasoning",
    "reasoning",
    "reasoning_effort",
];

/// What the Gemini adapter translates.
const GEMINI: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "response_format",
    "structured_outputs",
    "stop",
    "tools",
    "tool_choice",
    "include_reasoning",
    "reasoning",
    "reasoning_effort",
];

/// What Vertex takes: Gemini's, and `parallel_tool_calls` for its Claude models.
const VERTEX: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "response_format",
    "structured_outputs",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "include_reasoning",
    "reasoning",
    "reasoning_effort",
];

impl ProviderKind {
    /// The parameters (OpenRouter's names) this kind's API takes: what an endpoint of this
    /// kind supports unless it declares its own `supported_parameters`.
    pub fn parameters(self) -> &'static [&'static str] {
        match self {
            ProviderKind::OpenAi | ProviderKind::Azure => OPENAI,
            // Converse words Anthropic's Messages: the same parameters.
            ProviderKind::Anthropic | ProviderKind::Bedrock => ANTHROPIC,
            ProviderKind::Gemini => GEMINI,
            // Vertex serves Gemini and Claude models: Gemini's parameters, and Claude's one more.
            ProviderKind::Vertex => VERTEX,
        }
    }
}

/// Drops from `req` every parameter not in `supported`, OpenRouter's parameter rule: typed
/// fields are cleared, extra members removed. Returns the names dropped.
///
/// The parameters are OpenRouter's names ([`PARAMETERS`]); a field that is none of them keeps
/// its pass-through. `tools` and `tool_choice` are never dropped: an endpoint without them
/// refuses the request, which moves fallback on.
pub fn keep_supported<S: AsRef<str>>(req: &mut ChatRequest, supported: &[S]) -> Vec<&'static str> {
    let has = |name: &str| supported.iter().any(|s| s.as_ref() == name);
    let mut dropped = Vec::new();
    for &name in PARAMETERS {
        if has(name) || matches!(name, "tools" | "tool_choice") {
            continue;
        }
        if clear(req, name) {
            dropped.push(name);
        }
    }
    dropped
}

/// Clears one parameter; whether it was set.
fn clear(req: &mut ChatRequest, name: &str) -> bool {
    fn take<T>(field: &mut Option<T>) -> bool {
        field.take().is_some()
    }
    match name {
        "temperature" => take(&mut req.temperature),
        "top_p" => take(&mut req.top_p),
        "frequency_penalty" => take(&mut req.frequency_penalty),
        "presence_penalty" => take(&mut req.presence_penalty),
        "max_tokens" => take(&mut req.max_tokens),
        "max_completion_tokens" => take(&mut req.max_completion_tokens),
        "logprobs" => take(&mut req.logprobs),
        "top_logprobs" => take(&mut req.top_logprobs),
        "seed" => take(&mut req.seed),
        "stop" => take(&mut req.stop),
        "parallel_tool_calls" => take(&mut req.parallel_tool_calls),
        "reasoning_effort" => take(&mut req.reasoning_effort),
        "include_reasoning" => take(&mut req.include_reasoning),
        "reasoning" => take(&mut req.reasoning) | take(&mut req.reasoning_effort),
        "response_format" => take(&mut req.response_format),
        // JSON schemas only: a JSON-mode request keeps its `response_format`.
        "structured_outputs" => {
            if matches!(req.response_format, Some(ResponseFormat::JsonSchema { .. })) {
                req.response_format = None;
                true
            } else {
                false
            }
        }
        other => req.extra.remove(other).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: serde_json::Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn openai_keeps_its_own_parameters_and_unknown_fields() {
        let mut req = request(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.1, "top_k": 4, "min_p": 0.1, "repetition_penalty": 1.1,
            "verbosity": "low", "store": true, "x_custom": 1
        }));
        let dropped = keep_supported(&mut req, ProviderKind::OpenAi.parameters());
        assert_eq!(dropped, ["top_k", "min_p", "repetition_penalty"]);
        assert_eq!(req.temperature, Some(0.1));
        for kept in ["verbosity", "store", "x_custom"] {
            assert!(req.extra.contains_key(kept), "{kept}");
        }
    }

    #[test]
    fn a_declared_list_widens_or_narrows() {
        let base = json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.1, "top_k": 4, "seed": 3, "reasoning": {"effort": "high"},
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto",
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}
        });
        let mut req = request(base.clone());
        keep_supported(&mut req, &["top_k", "temperature", "seed"]);
        assert_eq!(req.extra["top_k"], 4);
        assert!(req.reasoning.is_none() && req.response_format.is_none());
        assert!(
            req.tools.is_some() && req.tool_choice.is_some(),
            "never dropped"
        );

        let mut req = request(base);
        let dropped = keep_supported(&mut req, &["response_format"]);
        assert!(dropped.contains(&"structured_outputs"));
        assert!(req.response_format.is_none());
        assert!(req.temperature.is_none() && req.seed.is_none());
    }

    #[test]
    fn anthropic_and_gemini_drop_what_they_cannot_say() {
        let v = json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "logprobs": true, "top_logprobs": 2, "seed": 1, "logit_bias": {"1": 2},
            "top_k": 3
        });
        let mut req = request(v.clone());
        keep_supported(&mut req, ProviderKind::Anthropic.parameters());
        assert!(req.logprobs.is_none() && req.seed.is_none());
        assert!(!req.extra.contains_key("logit_bias"));
        assert_eq!(req.extra["top_k"], 3);
        let mut req = request(v);
        keep_supported(&mut req, ProviderKind::Gemini.parameters());
        assert_eq!(req.seed, Some(1));
        assert!(req.logprobs.is_none());
    }
}
