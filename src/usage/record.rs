//! One generation record per client request.

use serde::{Deserialize, Serialize};

use crate::dialect::Dialect;
use crate::facts::{Attempt, AttemptOutcome};

/// One client request, as metered: what it asked, who served it, what it used and cost, and
/// every attempt the fallback layer made. Keyed by the generation id (`gen-…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The generation id.
    pub id: String,
    /// When the request arrived, Unix seconds.
    pub created_at: i64,
    /// The calling key's id (`anonymous` on an unauthenticated gateway; `None` without auth).
    pub key_id: Option<String>,
    /// The model id the client sent.
    pub requested_model: String,
    /// The public model that served (or was to serve).
    pub model: String,
    /// The configured provider that served; `None` when none did.
    pub provider: Option<String>,
    /// The model name sent upstream by the attempt that served.
    pub upstream_model: Option<String>,
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cached_tokens: u64,
    /// Output tokens spent reasoning.
    pub reasoning_tokens: u64,
    /// Cost in USD at the serving endpoint's prices; `None` when they are unknown (a
    /// `<provider>/<model>` pass-through).
    pub cost: Option<f64>,
    /// True when the provider never reported usage and the tokens are the gateway's count.
    pub estimated: bool,
    /// Whether the client asked for a stream.
    pub streamed: bool,
    /// The status the client got (200 for a stream, even one that failed later); `None` when
    /// the client went away before any answer.
    pub status: Option<u16>,
    /// What went wrong, when something did (an error answer, or a stream's error event).
    pub error: Option<String>,
    /// The first choice's finish reason.
    pub finish_reason: Option<String>,
    /// The client went away before the answer was complete.
    pub cancelled: bool,
    /// From arrival to the end of the answer (or the client leaving), in milliseconds.
    pub latency_ms: u64,
    /// From arrival to the first token: a stream's first event, or the whole answer.
    pub time_to_first_token_ms: Option<u64>,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The `HTTP-Referer` header (app attribution; its first 512 characters, as the next two).
    pub referer: Option<String>,
    /// The `X-OpenRouter-Title` header, or the older `X-Title` (app attribution).
    pub title: Option<String>,
    /// The request's `user` field.
    pub user: Option<String>,
    /// Input tokens written to the prompt cache (a stored record from before this field
    /// reads as one with 0 here).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// The API the client spoke (a stored record from before this field reads as `chat`).
    /// New fields go last: the stored form is positional.
    #[serde(default)]
    pub dialect: Dialect,
    /// The `X-OpenRouter-Categories` header (app attribution: `cli-agent,cloud-agent`, …).
    #[serde(default)]
    pub categories: Option<String>,
    /// The session the request belongs to (`session_id` in the body, or `x-session-id`).
    #[serde(default)]
    pub session_id: Option<String>,
}

/// One attempt of the fallback layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The configured provider.
    pub provider: String,
    /// The public model id of the target.
    pub model: String,
    /// The model name sent upstream.
    pub upstream_model: String,
    /// `served`, `failed`, `skipped` or `cancelled`.
    pub outcome: String,
    /// The status of the attempt, when it got one.
    pub status: Option<u16>,
    /// From the attempt's start to its answer or failure, in milliseconds.
    pub latency_ms: u64,
    /// What went wrong.
    pub error: Option<String>,
}

impl From<&Attempt> for AttemptRecord {
    fn from(a: &Attempt) -> Self {
        AttemptRecord {
            provider: a.provider.to_string(),
            model: a.model.to_string(),
            upstream_model: a.upstream_model.to_string(),
            outcome: match a.outcome {
                AttemptOutcome::Served => "served",
                AttemptOutcome::Failed => "failed",
                AttemptOutcome::Skipped => "skipped",
                AttemptOutcome::Cancelled => "cancelled",
            }
            .to_owned(),
            status: a.status,
            latency_ms: millis(a.latency),
            error: a.error.clone(),
        }
    }
}

/// Whole milliseconds, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
