//! The bundled proxy: configuration, routes and the server loop behind `examples/proxy.rs`.
//!
//! Routes: `POST /v1/chat/completions` (auth, rate limits, then the gateway stack),
//! `GET /v1/models` (the catalog, OpenRouter-shaped), `GET /v1/key` (the calling key),
//! `/v1/keys[/{id}]` (key management with the admin key), `GET /v1/generation?id=` (one of
//! the calling key's records), `GET /metrics` (Prometheus text), `GET /health`. Everything else is a
//! 404 (or 405) in the envelope. Every answer carries `X-Generation-Id`.
//!
//! ```no_run
//! use modelgate::proxy::{serve, shutdown_signal, Config, Proxy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let env = |k: &str| std::env::var(k).ok();
//! let config = Config::embedded_default(&env);
//! let proxy = Proxy::from_config(&config, &env).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! serve(listener, proxy, shutdown_signal(), config.serve_options()?).await?;
//! # Ok(()) }
//! ```

mod config;
mod keys;
mod metrics;
mod models;
mod server;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_service::Service;

pub use self::config::{
    Config, ConfigError, ConfigKey, EndpointConfig, FallbackConfig, HedgeConfig, KeyConfig, Keys,
    ModelConfig, ProviderConfig, StateConfig, UsageConfig, DEFAULT_STATE_DIR, DEFAULT_USAGE_QUEUE,
    WELL_KNOWN,
};
pub use self::server::{default_max_connections, serve, ServeOptions, MAX_CONNECTIONS};
use crate::auth::{self, refusal, Auth, AuthLayer, FailedAttempts, ManagedKeyStore};
use crate::body::GatewayBody;
use crate::decode::{Decode, DecodeLayer, GENERATION_ID_NAME};
use crate::dispatch::{self, Dispatch};
use crate::error::BoxError;
use crate::fallback::{Fallback, FallbackBody};
use crate::future::BoxFuture;
use crate::model_rewrite::{Catalog, ModelRewrite, ModelRewriteLayer};
use crate::rate_limit::{self, RateLimit, RateLimitLayer};
use crate::route::GenerationId;
use crate::stream_normalize::{self, StreamNormalize, StreamNormalizeLayer};
use crate::usage::{
    replay_spill, JsonLinesSink, Meter, Recorder, SpendLedger, SpendStore, UsageLayer, UsageSink,
};
use crate::Error;

/// The gateway stack behind authentication and rate limits.
pub type GatewayStack = Decode<ModelRewrite<Meter<Fallback<StreamNormalize<Dispatch>>>>>;

/// What the proxy serves on `POST /v1/chat/completions`.
pub type ChatStack = Auth<RateLimit<GatewayStack>>;

/// The body of a [`GatewayStack`] answer.
pub type GatewayStackBody =
    GatewayBody<FallbackBody<stream_normalize::ResponseBody<dispatch::ResponseBody>>>;

/// The body of a chat answer.
pub type ChatBody = GatewayBody<GatewayBody<GatewayStackBody>>;

/// The response future of the [`ChatStack`]: auth and rate limits answer without boxing.
pub type ChatFuture = auth::ResponseFuture<
    rate_limit::ResponseFuture<
        BoxFuture<'static, Result<Response<GatewayStackBody>, Infallible>>,
        GatewayStackBody,
        Infallible,
    >,
    GatewayBody<GatewayStackBody>,
    Infallible,
>;

/// The body of every proxy answer.
pub type ProxyBody = GatewayBody<ChatBody>;

/// Failed key attempts a client address may make in a minute before it is held back (`429`)
/// for the rest of that minute.
pub const FAILED_ATTEMPTS_PER_MINUTE: u32 = 20;

/// The file under `[state] dir` holding the usage records a failing sink had not taken when
/// the proxy shut down; they are written at the next start.
pub const SPILL_FILE: &str = "usage-spill.jsonl";

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
    /// Authenticates `GET /v1/key` (inference keys).
    key_auth: AuthLayer,
    /// Authenticates `/v1/keys` (the admin key); `None` when management is off.
    admin_auth: Option<AuthLayer>,
    keys: Arc<dyn ManagedKeyStore>,
    catalog: Arc<Catalog>,
    recorder: Recorder,
    anonymous: bool,
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
        let chat = ServiceBuilder::new()
            .layer(key_auth.clone())
            .layer(state.rate_limits.max_body_bytes(max_body_bytes))
            .layer(DecodeLayer::new().max_body_bytes(max_body_bytes))
            .layer(ModelRewriteLayer::new(catalog.clone()))
            .layer(
                UsageLayer::new(recorder.clone())
                    .refuse_unaffordable(config.usage.refuse_unaffordable),
            )
            .layer(config.fallback.layer()?)
            .layer(StreamNormalizeLayer::new().keepalive_interval(config.keepalive_interval()))
            .service(dispatch);
        Ok(Proxy {
            chat,
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
            _alive: alive,
        })
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

impl<B> Service<Request<B>> for Proxy
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let full = req.uri().path();
        // OpenRouter's `/api/v1/…` and the bare `/…` forms are the same routes.
        let path = full
            .strip_prefix("/api")
            .filter(|p| p.starts_with("/v1/"))
            .unwrap_or(full);
        let method = req.method();
        let route = match path {
            "/v1/chat/completions" | "/chat/completions" => {
                if method == Method::POST {
                    // Assigned here, so a refusal by auth or rate limits carries it too.
                    req.extensions_mut().insert(GenerationId::new());
                    return ProxyFuture::Chat(self.chat.call(req));
                }
                Route::WrongMethod("POST")
            }
            "/v1/models" | "/models" => {
                if method == Method::GET || method == Method::HEAD {
                    // Rendered per request: it shows each endpoint's live health.
                    Route::Json(models::render(&self.catalog))
                } else {
                    Route::WrongMethod("GET")
                }
            }
            "/metrics" => {
                if method == Method::GET || method == Method::HEAD {
                    let text = match metrics::prometheus() {
                        Some(h) => metrics::render(h, self.recorder.stats()),
                        None => String::new(),
                    };
                    let mut res = Response::new(Full::new(Bytes::from(text)));
                    res.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    return ProxyFuture::ready(res);
                }
                Route::WrongMethod("GET")
            }
            "/health" | "/healthz" => {
                if method == Method::GET || method == Method::HEAD {
                    Route::Json(Bytes::from_static(b"{\"status\":\"ok\"}"))
                } else {
                    Route::WrongMethod("GET")
                }
            }
            "/v1/key" => {
                if method == Method::GET {
                    let auth = self.key_auth.clone();
                    let ledger = self.recorder.ledger().clone();
                    return ProxyFuture::other(async move {
                        match auth.authenticate(req.headers(), req.extensions()).await {
                            Ok(p) => match ledger.fetch(&p.id).await {
                                Ok(spend) => keys::key_info(&p, &spend),
                                Err(e) => e.to_error().into_response(),
                            },
                            Err(e) => refusal(&e),
                        }
                    });
                }
                Route::WrongMethod("GET")
            }
            "/v1/generation" => {
                if method == Method::GET {
                    let auth = self.key_auth.clone();
                    let recorder = self.recorder.clone();
                    return ProxyFuture::other(async move {
                        match auth.authenticate(req.headers(), req.extensions()).await {
                            Ok(p) => generation(&recorder, &p, req.uri().query()).await,
                            Err(e) => refusal(&e),
                        }
                    });
                }
                Route::WrongMethod("GET")
            }
            p if p == "/v1/keys" || p.starts_with("/v1/keys/") => {
                let Some(auth) = self.admin_auth.clone() else {
                    return ProxyFuture::ready(
                        Error::new(
                            StatusCode::NOT_FOUND,
                            "not_found_error",
                            "key management is off: set `admin_key_env` in the configuration",
                        )
                        .into_response(),
                    );
                };
                let rest = p["/v1/keys".len()..].to_owned();
                let store = self.keys.clone();
                return ProxyFuture::other(async move {
                    let principal = match auth.authenticate(req.headers(), req.extensions()).await {
                        Ok(p) => p,
                        Err(e) => return refusal(&e),
                    };
                    let (parts, body) = req.into_parts();
                    tracing::debug!(by = %principal.id, method = %parts.method, "key management");
                    match keys::manage(&*store, parts.method, &rest, body).await {
                        Ok(res) => res,
                        Err(e) => e.into_response(),
                    }
                });
            }
            _ => Route::NotFound,
        };
        let res = match route {
            Route::Json(bytes) => {
                let mut res = Response::new(Full::new(bytes));
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                res
            }
            Route::WrongMethod(allowed) => {
                let mut res = Error::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "invalid_request_error",
                    format!(
                        "{} is not allowed on {}; use {allowed}",
                        req.method(),
                        req.uri().path()
                    ),
                )
                .into_response();
                res.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(allowed));
                res
            }
            Route::NotFound => Error::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!("no route for {} {}", req.method(), req.uri().path()),
            )
            .into_response(),
        };
        ProxyFuture::ready(res)
    }
}

/// `GET /v1/generation?id=gen-…`: the record of one of the calling key's requests.
async fn generation(
    recorder: &Recorder,
    principal: &crate::auth::Principal,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let id = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .unwrap_or("");
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Error::invalid_request("give the generation id as `?id=gen-…`", Some("id".into()))
            .into_response();
    }
    let not_found = || {
        Error::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no generation `{id}` for this key"),
        )
        .into_response()
    };
    match recorder.generation(id).await {
        // Another key's record is as unknown as a missing one.
        Ok(Some(r)) if r.key_id.as_deref() == Some(principal.id.as_str()) => {
            let body = serde_json::json!({ "data": r }).to_string();
            let mut res = Response::new(Full::new(Bytes::from(body)));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        Ok(_) => not_found(),
        Err(e) => {
            tracing::error!(error = %e, "generation lookup failed");
            Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the usage store cannot be read right now",
            )
            .into_response()
        }
    }
}

enum Route {
    Json(Bytes),
    WrongMethod(&'static str),
    NotFound,
}

/// The response future of [`Proxy`].
pub enum ProxyFuture {
    /// The chat stack.
    Chat(ChatFuture),
    /// A route the proxy answers itself, asynchronously.
    Other(BoxFuture<'static, Response<Full<Bytes>>>),
    /// A route the proxy answered at once.
    Ready(Option<Response<Full<Bytes>>>),
}

impl std::fmt::Debug for ProxyFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyFuture::Chat(_) => "ProxyFuture::Chat",
            ProxyFuture::Other(_) => "ProxyFuture::Other",
            ProxyFuture::Ready(_) => "ProxyFuture::Ready",
        })
    }
}

impl ProxyFuture {
    fn other(fut: impl Future<Output = Response<Full<Bytes>>> + Send + 'static) -> Self {
        ProxyFuture::Other(Box::pin(fut))
    }

    fn ready(res: Response<Full<Bytes>>) -> Self {
        ProxyFuture::Ready(Some(res))
    }
}

/// The proxy's own answers carry a generation id too.
fn own(mut res: Response<Full<Bytes>>) -> Response<ProxyBody> {
    if let Ok(v) = HeaderValue::from_str(GenerationId::new().as_str()) {
        res.headers_mut().insert(GENERATION_ID_NAME, v);
    }
    res.map(GatewayBody::full)
}

impl Future for ProxyFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            ProxyFuture::Chat(fut) => Pin::new(fut)
                .poll(cx)
                .map(|r| r.map(|res| res.map(GatewayBody::inner))),
            ProxyFuture::Other(fut) => fut.as_mut().poll(cx).map(|res| Ok(own(res))),
            ProxyFuture::Ready(res) => Poll::Ready(Ok(own(res
                .take()
                .expect("ProxyFuture polled after completion")))),
        }
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
