//! # modelgate
//!
//! An LLM gateway as composable [Tower](https://docs.rs/tower) layers: one OpenAI-compatible
//! API (and Anthropic's Messages and OpenAI's Responses APIs) in front of many model
//! providers. Stack the layers inside your own axum or hyper
//! service, or run the bundled proxy (`examples/proxy.rs`).
//!
//! ## The onion
//!
//! ```text
//! client ─▶ AuthLayer ─▶ RateLimitLayer ─▶ (decode) ─▶ ModelRewriteLayer ─▶ UsageLayer ─▶ FallbackLayer
//!                                                                         per attempt │
//!                                             provider ◀─ Dispatch ◀─ StreamNormalizeLayer ◀─┘
//! ```
//!
//! - [`auth`]: the caller's key (by SHA-256 digest) → [`auth::Principal`]; 401 / 403 answers.
//! - [`rate_limit`]: per-key requests and tokens per minute / day; 429 with `Retry-After`.
//! - [`decode`]: `Request<B>` → `Request<ChatRequest>` (size-limited, field-naming 400s), and
//!   the one place typed errors become envelope responses; every answer has `X-Generation-Id`.
//!   [`dialect`] holds the edges of the other APIs in its place ([`MessagesLayer`]: Anthropic
//!   Messages; [`ResponsesLayer`]: OpenAI Responses; each translated, or passed natively to a
//!   provider that speaks it).
//! - [`model_rewrite`]: `model`, `models[]`, `provider{…}` and variants against the catalog →
//!   [`RoutePlan`] (and the first [`Target`], for stacks without fallback).
//! - [`usage`]: credit limits (402), cost from the serving endpoint's prices, one
//!   [`usage::UsageRecord`] per request through a bounded queue to [`usage::UsageSink`]s;
//!   [`usage::metrics`]: the Prometheus metrics it emits.
//! - [`fallback`]: walks the plan: fail-over, budgeted retries with backoff, cool-down of failing
//!   endpoints ([`health`]), a stream failing before its first event moved on unnoticed.
//! - [`stream_normalize`]: the provider's answer → the OpenAI shape, streams included.
//! - [`dispatch`]: the typed request → the provider's HTTP request, on one pooled client.
//! - `telemetry` (feature `otel`): outermost, `TelemetryLayer` continues or starts the request's
//!   trace and exports its spans (one per request, one per attempt) over OTLP.
//!
//! Data flows in two lanes: the payload as the typed body, facts (generation id, plan, target)
//! as request extensions ([`facts`]).
//!
//! ## Words
//!
//! - **Endpoint**: one provider serving one catalog model under its own name, at its own prices.
//! - **Plan** ([`RoutePlan`]): the endpoints a request may be served by, in the order they are
//!   tried, as the routing layer made it from `model`, `models` and `provider`.
//! - **Target** ([`Target`]): one entry of the plan: the provider, the upstream model name, the
//!   prices, the endpoint's health.
//! - **Attempt** ([`facts::Attempt`]): one try at one target: what the fallback layer sends, and
//!   records with its outcome.
//! - **Slot** ([`facts::UsageSlot`]): where the final usage of an answer is reported, once, to
//!   the layers that asked (metering, the token rate limit), however the answer ended.
//! - **Generation id** ([`GenerationId`]): `gen-…`, one per client request: the answer's `id`,
//!   the `X-Generation-Id` header and the usage record's key.
//! - **Dialect** ([`Dialect`]): the API a client speaks (Chat Completions, Anthropic Messages,
//!   OpenAI Responses); its edge translates to and from the core's typed request, and its
//!   envelope carries every error. A request kept in a provider's own API
//!   ([`facts::NativeRequest`]) goes untranslated to a provider that speaks it.
//!
//! ## Features
//!
//! - `proxy` (default): the bundled proxy (the `proxy` module): TOML config, the embedded state store, an
//!   axum router with tower-http's layers, the Prometheus exporter, the server loop. Without it
//!   (`default-features = false`) the layers build on their core dependencies alone.
//! - `redis`: the fleet store (`redis`), on top of `proxy`.
//! - `otel` (default): OpenTelemetry traces over OTLP (the `telemetry` module; the proxy's
//!   `[telemetry]` section).
//!
//! ```
//! use std::sync::Arc;
//! use modelgate::{Catalog, DecodeLayer, Dispatch, ModelRewriteLayer, StreamNormalizeLayer};
//! use modelgate::provider::{Provider, ProviderKind};
//! use tower::ServiceBuilder;
//!
//! let ollama = Arc::new(
//!     Provider::builder("ollama", ProviderKind::OpenAi, "http://127.0.0.1:11434/v1").build().unwrap(),
//! );
//! let mut catalog = Catalog::new();
//! catalog.add_provider(ollama.clone()).unwrap();
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let gateway = ServiceBuilder::new()
//!     .layer(DecodeLayer::new())
//!     .layer(ModelRewriteLayer::new(Arc::new(catalog)))
//!     .layer(StreamNormalizeLayer::new())
//!     .service(Dispatch::new([&ollama]));
//! // `gateway` is a `Service<http::Request<B>>` with `Error = Infallible`: serve it with
//! // hyper, or mount it in axum with `Router::route_service`.
//! # let _ = gateway;
//! # });
//! ```
//!
//! ## With hyper alone
//!
//! ```no_run
//! use std::sync::Arc;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use hyper_util::service::TowerToHyperService;
//! use modelgate::{Catalog, DecodeLayer, Dispatch, ModelRewriteLayer, StreamNormalizeLayer};
//! use modelgate::provider::{Provider, ProviderKind};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let openai = Arc::new(
//!     Provider::builder("openai", ProviderKind::OpenAi, "https://api.openai.com/v1")
//!         .api_key(std::env::var("OPENAI_API_KEY").ok())
//!         .build()?,
//! );
//! let mut catalog = Catalog::new();
//! catalog.add_provider(openai.clone())?;
//! let gateway = ServiceBuilder::new()
//!     .layer(DecodeLayer::new())
//!     .layer(ModelRewriteLayer::new(Arc::new(catalog)))
//!     .layer(StreamNormalizeLayer::new())
//!     .service(Dispatch::new([&openai]));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let svc = TowerToHyperService::new(gateway.clone());
//!     tokio::spawn(async move {
//!         let _ = auto::Builder::new(TokioExecutor::new())
//!             .serve_connection(TokioIo::new(tcp), svc)
//!             .await;
//!     });
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub, rust_2018_idioms)]

pub mod auth;
pub mod body;
pub mod chat;
pub mod decode;
pub mod dialect;
pub mod dispatch;
pub mod embeddings;
pub mod error;
pub mod facts;
pub mod fallback;
pub mod future;
pub mod health;
pub(crate) mod json;
pub mod model_rewrite;
pub mod provider;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sse;
#[cfg(feature = "proxy")]
pub mod state;
pub mod stream_normalize;
#[cfg(feature = "otel")]
pub mod telemetry;
pub mod usage;

/// A `HashMap` with foldhash's fast hasher (seeded per process): the maps the request path
/// reads on every request, where SipHash cost more than the lookups' own work.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use crate::auth::AuthLayer;
pub use crate::chat::ChatRequest;
pub use crate::decode::DecodeLayer;
pub use crate::dialect::messages::MessagesLayer;
pub use crate::dialect::responses::ResponsesLayer;
pub use crate::dialect::Dialect;
pub use crate::dispatch::Dispatch;
pub use crate::error::Error;
pub use crate::facts::{GenerationId, RoutePlan, Target};
pub use crate::fallback::FallbackLayer;
pub use crate::model_rewrite::{Catalog, ModelRewriteLayer};
pub use crate::rate_limit::RateLimitLayer;
pub use crate::stream_normalize::StreamNormalizeLayer;
pub use crate::usage::UsageLayer;
