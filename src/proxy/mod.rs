//! The bundled proxy (feature `proxy`): configuration, an axum router, and the server loop
//! behind `examples/proxy.rs`.
//!
//! Routes ([`Proxy::routes`]): `POST /v1/chat/completions` (auth, rate limits, then the gateway
//! stack), `POST /v1/messages` (the same, behind Anthropic's edge, [`MessagesLayer`]),
//! `POST /v1/messages/count_tokens` (auth only), `POST /v1/responses` (behind the Responses
//! edge, [`ResponsesLayer`]; stateless, so `GET /v1/responses/{id}` is a 404),
//! `POST /v1/embeddings` (behind the embeddings edge, [`EmbeddingsLayer`]), `GET /v1/models`
//! (the catalog, OpenRouter-shaped), `GET /v1/key` (the calling key), `/v1/keys[/{id}]` (key
//! management with the admin key), `GET /v1/generation?id=` (one of the calling key's
//! records), `GET /v1/generations` and `GET /v1/activity` (records and hourly totals: a client
//! key's own, everyone's for the admin key), `GET /metrics` (Prometheus text), `GET /health`.
//! Everything else is a 404 (or 405) in the envelope. Every answer carries `X-Generation-Id`.
//! Around them ([`Proxy::with_server_layers`]), tower-http's layers: the access log, sensitive
//! headers,
//! panics answered as `500`s, and CORS.
//!
//! ```no_run
//! use modelgate::proxy::{serve, shutdown_signal, Config, Proxy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let env = |k: &str| std::env::var(k).ok();
//! let config = Config::embedded_default(&env);
//! let proxy = Proxy::from_config(&config, &env).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! serve(listener, proxy.router(), shutdown_signal(), config.serve_options()?).await?;
//! # Ok(()) }
//! ```

mod activity;
mod config;
mod count_tokens;
mod generation;
mod generations;
mod keys;
mod metrics;
mod models;
mod router;
mod server;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use tower::ServiceBuilder;

pub use self::config::{
    Config, ConfigError, ConfigKey, EndpointConfig, FallbackConfig, HedgeConfig, KeyConfig, Keys,
    ModelConfig, ProviderConfig, StateConfig, UsageConfig, DEFAULT_STATE_DIR, DEFAULT_USAGE_QUEUE,
    WELL_KNOWN,
};
pub use self::server::{default_max_connections, serve, ServeOptions, MAX_CONNECTIONS};
use crate::auth::{Auth, AuthLayer, FailedAttempts, ManagedKeyStore};
use crate::body::GatewayBody;
use crate::decode::{Decode, DecodeLayer};
use crate::dialect::embeddings::{EmbeddingsEdge, EmbeddingsLayer};
use crate::dialect::messages::{Messages, MessagesBody, MessagesLayer};
use crate::dialect::responses::{Responses, ResponsesLayer};
use crate::dispatch::{self, Dispatch};
use crate::fallback::{Fallback, FallbackBody};
use crate::model_rewrite::{Catalog, ModelRewrite, ModelRewriteLayer};
use crate::rate_limit::{RateLimit, RateLimitLayer};
use crate::stream_normalize::{self, StreamNormalize, StreamNormalizeLayer};
use crate::usage::{
    replay_spill, JsonLinesSink, Meter, Recorder, SpendLedger, SpendStore, UsageLayer, UsageSink,
};

/// The typed core every dialect's edge calls: routing, metering, fallback, normalising and
/// dispatch.
pub type CoreStack = ModelRewrite<Meter<Fallback<StreamNormalize<Dispatch>>>>;

/// The gateway stack behind authentication and rate limits.
pub type GatewayStack = Decode<CoreStack>;

/// What the proxy serves on `POST /v1/chat/completions`.
pub type ChatStack = Auth<RateLimit<GatewayStack>>;

/// What the proxy serves on `POST /v1/messages`.
pub type MessagesStack = Auth<RateLimit<Messages<CoreStack>>>;

/// What the proxy serves on `POST /v1/responses`.
pub type ResponsesStack = Auth<RateLimit<Responses<CoreStack>>>;

/// What the proxy serves on `POST /v1/embeddings`.
pub type EmbeddingsStack = Auth<RateLimit<EmbeddingsEdge<CoreStack>>>;

/// The body of a [`GatewayStack`] answer.
pub type GatewayStackBody =
    GatewayBody<FallbackBody<stream_normalize::ResponseBody<dispatch::ResponseBody>>>;

/// The body of a chat answer.
pub type ChatBody = GatewayBody<GatewayBody<GatewayStackBody>>;

/// The body of a Messages answer.
pub type MessagesStackBody = GatewayBody<
    GatewayBody<MessagesBody<FallbackBody<stream_normalize::ResponseBody<dispatch::ResponseBody>>>>,
>;

/// Failed key attempts a client address may make in a minute before it is held back (`429`)
/// for the rest of that minute.
pub const FAILED_ATTEMPTS_PER_MINUTE: u32 = 20;

/// The file under `[state] dir` holding the usage records a failing sink had not taken when
/// the proxy shut down; they are written at the next start.
pub const SPILL_FILE: &str = "usage-spill.jsonl";

/// The trace exporter of `[telemetry]`.
#[cfg(feature = "otel")]
fn telemetry(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<crate::telemetry::Telemetry>, ConfigError> {
    let Some(t) = &config.telemetry else {
        return Ok(None);
    };
    let mut builder =
        crate::telemetry::Telemetry::builder(&t.otlp_endpoint).capture_content(t.capture_content);
    for (name, value) in t.headers(env)? {
        builder = builder.header(name, value);
    }
    if let Some(name) = &t.service_name {
        builder = builder.service_name(name);
    }
    if let Some(ratio) = t.sample_ratio {
        builder = builder.sample_ratio(ratio);
    }
    if let Some(n) = t.queue_capacity {
        builder = builder.queue_capacity(n);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| ConfigError(format!("[telemetry] {e}")))
}

/// Where keys, rate limits and spend live: this process, or a shared Redis.
struct SharedState {
    keys: Arc<dyn ManagedKeyStore>,
    rate_limits: RateLimitLayer,
    spend: Spend,
    management: bool,
    anonymous: bool,
}

/// Where the credit check reads spend.
enum Spend {
    /// The embedded store's spend, loaded into memory once the spill file is written back.
    Embedded(crate::state::StateDb),
    /// A store that is read live (Redis).
    #[cfg(feature = "redis")]
    Shared(Arc<dyn SpendStore>),
}

/// The state of `[state] redis_url`: connects (an unreachable Redis is an error) and adds
/// the Redis usage sink to `sinks`.
#[cfg(feature = "redis")]
async fn redis_state(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    retention_days: Option<u32>,
    sinks: &mut Vec<Arc<dyn UsageSink>>,
) -> Result<SharedState, ConfigError> {
    let Some(options) = config.redis_options()? else {
        return Err(ConfigError("[state] redis_url is not set".into()));
    };
    let redis = crate::redis::RedisState::connect(options)
        .await
        .map_err(|e| ConfigError(e.0))?;
    let mut configured = crate::auth::LocalKeyStore::in_memory();
    let management = config.add_configured_keys(&mut configured, env)?;
    let keys = redis
        .key_store(configured)
        .await
        .map_err(|e| ConfigError(e.0))?;
    let anonymous = !management && !keys.has_inference_keys();
    config.check_anonymous(anonymous)?;
    let usage =
        Arc::new(redis.usage(retention_days.map(|d| Duration::from_secs(u64::from(d) * 86_400))));
    sinks.push(usage.clone());
    Ok(SharedState {
        keys,
        rate_limits: RateLimitLayer::new(Arc::new(redis.rate_limits())),
        spend: Spend::Shared(usage),
        management,
        anonymous,
    })
}

#[cfg(not(feature = "redis"))]
async fn redis_state(
    _config: &Config,
    _env: &dyn Fn(&str) -> Option<String>,
    _retention_days: Option<u32>,
    _sinks: &mut Vec<Arc<dyn UsageSink>>,
) -> Result<SharedState, ConfigError> {
    Err(ConfigError(
        "`[state] redis_url` needs the `redis` cargo feature: build with `--features redis` (or remove redis_url to use the embedded store)".into(),
    ))
}

/// The proxy's service: routes in front of the gateway stack. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    chat: ChatStack,
    messages: MessagesStack,
    responses: ResponsesStack,
    embeddings: EmbeddingsStack,
    /// Sends `count_tokens` to an `anthropic` endpoint.
    dispatch: Dispatch,
    max_body_bytes: usize,
    /// `total_credits` of `GET /v1/credits`.
    credits: f64,
    /// Authenticates `GET /v1/key` (inference keys).
    key_auth: AuthLayer,
    /// Authenticates `/v1/keys` (the admin key); `None` when management is off.
    admin_auth: Option<AuthLayer>,
    keys: Arc<dyn ManagedKeyStore>,
    catalog: Arc<Catalog>,
    recorder: Recorder,
    anonymous: bool,
    /// One access-log line per request.
    access_log: bool,
    /// CORS for browser apps, when origins are configured.
    cors: Option<tower_http::cors::CorsLayer>,
    /// Traces requests, when `[telemetry]` is configured.
    #[cfg(feature = "otel")]
    telemetry: Option<crate::telemetry::Telemetry>,
    /// Ends the metrics upkeep task when the last clone goes.
    _alive: Arc<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("catalog", &self.catalog)
            .field("anonymous", &self.anonymous)
            .field("management", &self.admin_auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the proxy from a configuration; provider and admin keys are read through `env`.
    /// Opens the state store (`[state] dir`, or the Redis of `[state] redis_url`, which must
    /// answer) and starts the usage writer (so it must be called inside a Tokio runtime).
    pub async fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        #[cfg(not(feature = "otel"))]
        if config.telemetry.is_some() {
            return Err(ConfigError(
                "[telemetry] needs the `otel` feature, which this build does not have".into(),
            ));
        }
        let catalog = Arc::new(config.catalog(env)?);
        let retention = match config.usage.retention_days {
            None => Some(30),
            Some(0) => None,
            days => days,
        };
        let mut sinks: Vec<Arc<dyn UsageSink>> = Vec::new();
        let state = match config.redis_url() {
            None => {
                let keys = config.keys(env)?;
                sinks.push(Arc::new(keys.db.clone().with_record_retention(retention)));
                SharedState {
                    keys: Arc::new(keys.store),
                    rate_limits: RateLimitLayer::in_memory(),
                    // Read once the spill is written back (below), so its spend counts.
                    spend: Spend::Embedded(keys.db),
                    management: keys.management,
                    anonymous: keys.anonymous,
                }
            }
            Some(_) => redis_state(config, env, retention, &mut sinks).await?,
        };
        let store = state.keys;
        let dispatch = Dispatch::new(catalog.providers());
        let alive = Arc::new(());
        if let Some(handle) = metrics::prometheus() {
            // Histogram samples are folded in at each scrape, and every few seconds without
            // one, so memory stays flat when nobody scrapes.
            let alive = Arc::downgrade(&alive);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                while alive.strong_count() > 0 {
                    tick.tick().await;
                    handle.run_upkeep();
                }
            });
        }
        if let Some(path) = &config.usage.jsonl_path {
            sinks
                .push(Arc::new(JsonLinesSink::open(path).map_err(|e| {
                    ConfigError(format!("[usage] jsonl_path: {e}"))
                })?));
        }
        // Records a failing sink had not taken at the last shutdown.
        let spill = config.state_dir().join(SPILL_FILE);
        replay_spill(&spill, &sinks)
            .await
            .map_err(|e| ConfigError(e.0))?;
        let spend: Arc<dyn SpendStore> = match state.spend {
            Spend::Embedded(db) => Arc::new(SpendLedger::with(
                db.load_spend().map_err(|e| ConfigError(e.0))?,
            )),
            #[cfg(feature = "redis")]
            Spend::Shared(store) => store,
        };
        let recorder = Recorder::start_with_linger(
            sinks,
            spend,
            config.usage.queue_capacity.unwrap_or(DEFAULT_USAGE_QUEUE),
            config
                .usage
                .linger_ms
                .map_or(crate::usage::DEFAULT_LINGER, Duration::from_millis),
        )
        .map_err(|e| ConfigError(e.0))?
        .max_wait(Duration::from_millis(
            config.usage.max_queue_wait_ms.unwrap_or(5_000),
        ))
        .spill_to(spill);
        // Every route that takes a key counts its failures per address, together.
        let failures = Arc::new(FailedAttempts::new(
            FAILED_ATTEMPTS_PER_MINUTE,
            Duration::from_secs(60),
        ));
        let key_auth = AuthLayer::new(store.clone())
            .allow_anonymous(state.anonymous)
            .hold_back_failures(failures.clone());
        let max_body_bytes = config
            .max_body_bytes
            .unwrap_or(crate::decode::DEFAULT_MAX_BODY_BYTES);
        let core = ServiceBuilder::new()
            .layer(
                ModelRewriteLayer::new(catalog.clone()).sticky_sessions(
                    config
                        .session_idle_secs
                        .map(Duration::from_secs)
                        .or(Some(crate::model_rewrite::DEFAULT_SESSION_IDLE)),
                ),
            )
            .layer(
                UsageLayer::new(recorder.clone())
                    .refuse_unaffordable(config.usage.refuse_unaffordable),
            )
            .layer(config.fallback.layer()?)
            .layer(
                StreamNormalizeLayer::new()
                    .keepalive_interval(config.keepalive_interval())
                    .stream_usage(config.stream_usage),
            )
            .service(dispatch.clone());
        let rate_limits = state.rate_limits.max_body_bytes(max_body_bytes);
        let chat = ServiceBuilder::new()
            .layer(key_auth.clone())
            .layer(rate_limits.clone())
            .layer(DecodeLayer::new().max_body_bytes(max_body_bytes))
            .service(core.clone());
        let messages = ServiceBuilder::new()
            .layer(key_auth.clone())
            .layer(rate_limits.clone())
            .layer(MessagesLayer::new().max_body_bytes(max_body_bytes))
            .service(core.clone());
        let responses = ServiceBuilder::new()
            .layer(key_auth.clone())
            .layer(rate_limits.clone())
            .layer(ResponsesLayer::new().max_body_bytes(max_body_bytes))
            .service(core.clone());
        let embeddings = ServiceBuilder::new()
            .layer(key_auth.clone())
            .layer(rate_limits)
            .layer(EmbeddingsLayer::new().max_body_bytes(max_body_bytes))
            .service(core);
        Ok(Proxy {
            chat,
            messages,
            responses,
            embeddings,
            dispatch,
            max_body_bytes,
            credits: config.credits.unwrap_or(0.0),
            key_auth,
            admin_auth: state.management.then(|| {
                AuthLayer::new(store.clone())
                    .management()
                    .hold_back_failures(failures)
            }),
            keys: store,
            catalog,
            recorder,
            anonymous: state.anonymous,
            access_log: config.access_log.unwrap_or(true),
            cors: router::cors(&config.cors_allow_origins).map_err(ConfigError)?,
            #[cfg(feature = "otel")]
            telemetry: telemetry(config, env)?,
            _alive: alive,
        })
    }

    /// The trace exporter, when `[telemetry]` is configured: [`flush`] it after [`serve`]
    /// returns, so the last spans are sent.
    ///
    /// [`flush`]: crate::telemetry::Telemetry::flush
    #[cfg(feature = "otel")]
    pub fn telemetry(&self) -> Option<&crate::telemetry::Telemetry> {
        self.telemetry.as_ref()
    }

    /// The catalog the proxy serves.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Whether the proxy runs without keys (every request let through; loopback only).
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// The usage recorder: [`Recorder::close`] it after [`serve`] returns, so every record is
    /// written (or spilled to `[state] dir`, for the next start) before the process exits.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Whether the key management API is on (an admin key is configured).
    pub fn has_management(&self) -> bool {
        self.admin_auth.is_some()
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
