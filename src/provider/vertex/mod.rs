//! Google Vertex AI: a project's models in one region (or `global`), reached with OAuth tokens
//! minted from a service account (`token.rs`).
//!
//! - Gemini models go to `…/publishers/google/models/{model}:generateContent` (and
//!   `:streamGenerateContent?alt=sse`), in Gemini's own translation;
//! - Claude models (names that start with `claude`) go to
//!   `…/publishers/anthropic/models/{model}:rawPredict` (and `:streamRawPredict`), in
//!   Anthropic's translation with `anthropic_version: "vertex-2023-10-16"` in the body and no
//!   `model`;
//! - embeddings go to `…/publishers/google/models/{model}:predict`, one instance per text,
//!   `dimensions` as `outputDimensionality`; the answer counts each text's tokens.

pub(crate) mod token;

use serde_json::{json, Value};

pub use self::token::ServiceAccount;
use self::token::TokenCache;
use crate::embeddings::Embeddings;
use crate::Error;

/// The `anthropic_version` Vertex takes for Claude models.
pub(crate) const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// A Vertex provider's project, region and credentials.
#[derive(Debug)]
pub(crate) struct Vertex {
    project: String,
    region: String,
    pub(crate) account: ServiceAccount,
    pub(crate) tokens: TokenCache,
}

impl Vertex {
    pub(crate) fn new(project: String, region: String, account: ServiceAccount) -> Self {
        Vertex {
            project,
            region,
            account,
            tokens: TokenCache::default(),
        }
    }

    /// The default base URL of a region's endpoint.
    pub(crate) fn default_base(region: &str) -> String {
        if region == "global" {
            "https://aiplatform.googleapis.com".into()
        } else {
            format!("https://{region}-aiplatform.googleapis.com")
        }
    }

    /// The path of `method` on `model` (a path segment already checked), published by
    /// Anthropic for Claude models and Google for the others.
    pub(crate) fn path(&self, model: &str, method: &str) -> String {
        let publisher = if is_claude(model) {
            "anthropic"
        } else {
            "google"
        };
        format!(
            "/v1/projects/{}/locations/{}/publishers/{publisher}/models/{}:{method}",
            super::path_segment(&self.project),
            super::path_segment(&self.region),
            super::path_segment(model),
        )
    }
}

/// Whether Vertex serves `model` through Anthropic's API.
pub(crate) fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

/// An Anthropic Messages body as Vertex's `rawPredict` takes it: no `model` (it is in the
/// path), `anthropic_version` set.
pub(crate) fn claude_body(mut body: Value) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.remove("model");
        obj.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
    }
    body
}

/// The `predict` body for embeddings.
pub(crate) fn embeddings_request(e: &Embeddings) -> Result<Value, Error> {
    let Some(texts) = e.input().texts() else {
        return Err(super::invalid(
            "input",
            "token ids cannot be embedded by a Vertex model: send the input as text",
        ));
    };
    let instances: Vec<Value> = texts.iter().map(|t| json!({ "content": t })).collect();
    let mut body = json!({ "instances": instances });
    if let Some(d) = e.request.dimensions {
        body["parameters"] = json!({ "outputDimensionality": d });
    }
    Ok(body)
}

/// The vectors of a `predict` answer and the tokens it counted.
pub(crate) fn embeddings_vectors(bytes: &[u8]) -> Result<(Vec<Vec<f32>>, Option<u64>), String> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the provider's embeddings answer is malformed ({e})"))?;
    let predictions = v["predictions"]
        .as_array()
        .ok_or("the provider's embeddings answer has no `predictions`")?;
    let mut tokens = 0;
    let mut vectors = Vec::with_capacity(predictions.len());
    for p in predictions {
        let e = &p["embeddings"];
        let values = e["values"]
            .as_array()
            .and_then(|vs| vs.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
            .ok_or("a prediction holds no `embeddings.values`")?;
        tokens += e["statistics"]["token_count"].as_f64().unwrap_or(0.0) as u64;
        vectors.push(values);
    }
    Ok((vectors, (tokens > 0).then_some(tokens)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::EmbeddingsRequest;

    #[test]
    fn claude_goes_to_anthropic_and_the_rest_to_google() {
        assert!(is_claude("claude-sonnet-4-5@20250929"));
        assert!(!is_claude("gemini-2.5-flash"));
        let body = claude_body(json!({"model": "claude-x", "max_tokens": 5, "messages": []}));
        assert_eq!(
            body,
            json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": []})
        );
    }

    #[test]
    fn embeddings_are_one_instance_per_text() {
        let e = Embeddings::new(
            serde_json::from_str::<EmbeddingsRequest>(
                r#"{"model":"m","input":["a","b"],"dimensions":8}"#,
            )
            .unwrap(),
        )
        .1;
        assert_eq!(
            embeddings_request(&e).unwrap(),
            json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 8}})
        );
        let answer = br#"{"predictions":[{"embeddings":{"values":[0.5],"statistics":{"token_count":2,"truncated":false}}},{"embeddings":{"values":[1],"statistics":{"token_count":1}}}]}"#;
        assert_eq!(
            embeddings_vectors(answer).unwrap(),
            (vec![vec![0.5], vec![1.0]], Some(3))
        );
    }
}
