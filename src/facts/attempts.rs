//! The record of every attempt the fallback layer made for a request.

use std::sync::{Arc, Mutex};

use super::{lock, Pricing, TraceContext};
use crate::provider::ProviderKind;

/// How one attempt of the fallback layer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// It served the answer.
    Served,
    /// It failed (an error status, a transport fault, a stream that broke before its first
    /// token).
    Failed,
    /// It was not tried: cooling down, or its provider's request limit was spent.
    Skipped,
    /// The client went away while it was in flight (before a stream's first event).
    Cancelled,
}

/// One attempt at one target, as recorded by the fallback layer.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The configured provider.
    pub provider: Arc<str>,
    /// The public model id of the target.
    pub model: Arc<str>,
    /// The model name sent upstream.
    pub upstream_model: Arc<str>,
    /// The provider's kind (the API it speaks).
    pub kind: ProviderKind,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The status the client would have seen for this attempt (200 when it served; none when
    /// skipped or cut before any status).
    pub status: Option<u16>,
    /// When it started (or was skipped).
    pub started: tokio::time::Instant,
    /// From the attempt's start to its answer (or failure).
    pub latency: std::time::Duration,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The target's prices (`None`: a pass-through, cost unknown); metering prices the
    /// attempt that served with them.
    pub pricing: Option<Pricing>,
    /// The attempt's own span, when the request is traced (a [`TraceContext`] was in its
    /// extensions): what its provider was sent as `traceparent`.
    pub span: Option<TraceContext>,
}

/// Every attempt of one client request, in order. Shared: the fallback layer appends, the
/// layers outside it (metering) read after the answer. Put one in the request extensions to
/// receive the attempts; the fallback layer inserts one when absent and also puts it in the
/// response extensions.
#[derive(Debug, Clone, Default)]
pub struct Attempts(Arc<Mutex<Vec<Attempt>>>);

impl Attempts {
    /// An empty record.
    pub fn new() -> Self {
        Attempts::default()
    }

    /// Appends one attempt.
    pub fn push(&self, attempt: Attempt) {
        lock(&self.0).push(attempt);
    }

    /// A copy of the attempts so far.
    pub fn to_vec(&self) -> Vec<Attempt> {
        lock(&self.0).clone()
    }

    /// How many attempts were recorded.
    pub fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
