//! Where a request may go: the route plan and each of its targets.

use std::fmt;
use std::sync::Arc;

use super::Pricing;
use crate::health::EndpointHealth;
use crate::provider::Provider;

/// Put in the request extensions (the usage layer does) to have stream normalisation write
/// `usage.cost`, from the serving target's prices, into the answer and the stream's usage chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct PriceAnswers;

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
    /// The endpoint's live health (shared by every request to it).
    pub health: Arc<EndpointHealth>,
    /// Whether a slow answer from this target is hedged (the model's setting).
    pub hedge: Option<Hedge>,
    /// The parameters the endpoint declares it supports; `None`: those of its provider's
    /// kind. [`Dispatch`](crate::dispatch::Dispatch) drops the others.
    pub supported_parameters: Option<Arc<[String]>>,
    /// The endpoint's context length (the model's, unless the endpoint has its own): what
    /// OpenRouter's `middle-out` transform fits a long conversation into.
    pub context_length: Option<u64>,
}

/// When the fallback layer starts the next target alongside a slow one (a model's setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hedge {
    /// After this long without a first token.
    After(std::time::Duration),
    /// After the endpoint's measured 95th percentile time to first token (no hedge until it
    /// has been measured).
    MeasuredP95,
}

impl Target {
    /// Whether `other` is a copy of this target (the same endpoint, shared state and
    /// settings), told without comparing strings.
    pub(crate) fn same_as(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.provider, &other.provider)
            && Arc::ptr_eq(&self.health, &other.health)
            && Arc::ptr_eq(&self.upstream_model, &other.upstream_model)
            && Arc::ptr_eq(&self.public_model, &other.public_model)
            && self.pricing == other.pricing
            && self.max_output_tokens == other.max_output_tokens
            && self.hedge == other.hedge
            && self.context_length == other.context_length
            && match (&self.supported_parameters, &other.supported_parameters) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }

    /// A target with no prices, no output bound and a health of its own.
    pub fn new(
        provider: Arc<Provider>,
        upstream_model: impl Into<Arc<str>>,
        public_model: impl Into<Arc<str>>,
    ) -> Self {
        Target {
            provider,
            upstream_model: upstream_model.into(),
            public_model: public_model.into(),
            pricing: None,
            max_output_tokens: None,
            health: Arc::default(),
            hedge: None,
            supported_parameters: None,
            context_length: None,
        }
    }

    /// Whether this is the same endpoint as `other` (same provider and upstream model).
    pub fn same_endpoint(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.health, &other.health)
            || (self.provider.name() == other.provider.name()
                && self.upstream_model == other.upstream_model)
    }
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
/// [`ModelRewriteLayer`](crate::model_rewrite::ModelRewriteLayer), walked by
/// [`FallbackLayer`](crate::fallback::FallbackLayer).
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// The public model id the request resolved to.
    pub model: Arc<str>,
    /// Targets, best first; a `models: [...]` fallback list adds each model's targets after
    /// the first model's (their `public_model` tells them apart).
    pub targets: Vec<Target>,
}
