//! Facts that travel between layers as request extensions: the generation id, the route plan
//! and the target of one attempt.

use std::fmt;
use std::sync::Arc;

use crate::provider::Provider;

/// The id of one client request: `gen-<unix seconds>-<20 random characters>`.
///
/// It is the completion's `id` and the `X-Generation-Id` header. Inserted by the decode step
/// when absent; every later layer reads it from the request extensions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GenerationId(Arc<str>);

impl GenerationId {
    /// A fresh random id.
    pub fn new() -> Self {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut id = String::with_capacity(40);
        id.push_str("gen-");
        id.push_str(&secs.to_string());
        id.push('-');
        for _ in 0..20 {
            id.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
        }
        GenerationId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for GenerationId {
    fn default() -> Self {
        GenerationId::new()
    }
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Prices of one endpoint, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    /// USD per million input tokens.
    pub prompt_per_million: f64,
    /// USD per million output tokens.
    pub completion_per_million: f64,
}

/// One place a request can be sent: a configured provider and the model name it knows.
#[derive(Clone)]
pub struct Target {
    /// The configured provider.
    pub provider: Arc<Provider>,
    /// The model name sent upstream.
    pub upstream_model: Arc<str>,
    /// The public model id reported to the client.
    pub public_model: Arc<str>,
    /// The endpoint's prices; `None` for a `<provider>/<model>` pass-through (cost unknown).
    pub pricing: Option<Pricing>,
    /// The endpoint's output bound from the catalog (`max_output_tokens`); the Anthropic
    /// adapter sends it as `max_tokens` when the client gave none.
    pub max_output_tokens: Option<u32>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider.name())
            .field("upstream_model", &self.upstream_model)
            .field("public_model", &self.public_model)
            .field("pricing", &self.pricing)
            .field("max_output_tokens", &self.max_output_tokens)
            .finish()
    }
}

/// The ordered targets a request may be served by. Inserted by
/// [`ModelRewriteLayer`](crate::model_rewrite::ModelRewriteLayer).
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// The public model id the request resolved to.
    pub model: Arc<str>,
    /// Targets, best first.
    pub targets: Vec<Target>,
}
