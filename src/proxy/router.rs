//! The proxy's routes, on an axum [`Router`], and the server's cross-cutting layers from
//! tower-http: the access log, sensitive headers, panics as `500`s and CORS.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::response::Response;
use axum::routing::{any, get, post, post_service, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode, Uri};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use super::{activity, generation, generations, keys, metrics, models, ui, Proxy};
use crate::auth::{refusal, Principal};
use crate::decode::GENERATION_ID_NAME;
use crate::dialect::Dialect;
use crate::facts::GenerationId;
use crate::model_rewrite::Catalog;
use crate::Error;

/// What a route of the proxy answers with when it answers itself.
type Own = Response<Full<Bytes>>;

impl Proxy {
    /// The proxy as the bundled binary serves it: [`routes`](Self::routes) with the server's
    /// layers ([`with_server_layers`](Self::with_server_layers)).
    pub fn router(&self) -> Router {
        self.with_server_layers(self.routes())
    }

    /// The telemetry layer of the inference routes, when traces are configured.
    #[cfg(feature = "otel")]
    fn traced(&self) -> Option<crate::telemetry::TelemetryLayer> {
        self.telemetry
            .clone()
            .map(crate::telemetry::TelemetryLayer::new)
    }

    #[cfg(not(feature = "otel"))]
    fn traced(&self) -> Option<tower::layer::util::Identity> {
        None
    }

    /// The routes alone, for an embedder to mount or to add its own to:
    /// `POST /v1/chat/completions` (the gateway stack), `POST /v1/messages` and
    /// `/v1/messages/count_tokens` (Anthropic's API), `POST /v1/responses` (OpenAI's Responses
    /// API, stateless: `GET /v1/responses/{id}` is a 404), `GET /v1/models`, `GET /v1/key`,
    /// `GET /v1/generation?id=`, `/v1/keys[/{id}]` (key management with the admin key),
    /// `GET /metrics`, `GET /health`. Each `/v1/…` route answers at `/api/v1/…` too
    /// (OpenRouter's form), chat, messages, responses and models also without `/v1`. Anything else is a
    /// `404`, a wrong method a `405` with `Allow`, both in the error envelope (Anthropic's on
    /// the messages routes).
    pub fn routes(&self) -> Router {
        let chat = ServiceBuilder::new()
            // Assigned here, so a refusal by auth or rate limits carries it too.
            .map_request(|mut req: Request| {
                req.extensions_mut().insert(GenerationId::new());
                req
            })
            .option_layer(self.traced())
            .service(self.chat.clone());
        let chat = post_service(chat).fallback(wrong_method("POST"));
        let messages = ServiceBuilder::new()
            .map_request(|mut req: Request| {
                let ext = req.extensions_mut();
                ext.insert(GenerationId::new());
                ext.insert(Dialect::Messages);
                req
            })
            .option_layer(self.traced())
            .service(self.messages.clone());
        let messages = post_service(messages).fallback(wrong_method_in(Dialect::Messages, "POST"));
        let responses = ServiceBuilder::new()
            .map_request(|mut req: Request| {
                let ext = req.extensions_mut();
                ext.insert(GenerationId::new());
                ext.insert(Dialect::Responses);
                req
            })
            .option_layer(self.traced())
            .service(self.responses.clone());
        let responses = post_service(responses).fallback(wrong_method("POST"));
        let embeddings = ServiceBuilder::new()
            .map_request(|mut req: Request| {
                let ext = req.extensions_mut();
                ext.insert(GenerationId::new());
                ext.insert(Dialect::Embeddings);
                req
            })
            .option_layer(self.traced())
            .service(self.embeddings.clone());
        let embeddings = post_service(embeddings).fallback(wrong_method("POST"));
        // Nothing is kept, so nothing can be fetched.
        let stored = get(|| async {
            Error::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "this gateway is stateless: it keeps no responses, so none can be fetched; the answer to a request is in its own response",
            )
            .into_response()
        })
        .fallback(wrong_method("GET"));
        let count_tokens = {
            let proxy = self.clone();
            post(move |req: Request| {
                let proxy = proxy.clone();
                async move { proxy.count_tokens(req).await }
            })
            .fallback(wrong_method_in(Dialect::Messages, "POST"))
        };
        // Rendered per request: they show each endpoint's live health.
        let listing = |answer: fn(&Catalog, &models::ModelQuery) -> Bytes| {
            let catalog = self.catalog.clone();
            get(move |uri: Uri| {
                let catalog = catalog.clone();
                async move {
                    match models::ModelQuery::of(&uri) {
                        Ok(q) => json(answer(&catalog, &q)),
                        Err(e) => e.into_response(),
                    }
                }
            })
            .fallback(wrong_method("GET"))
        };
        let models = listing(models::render);
        let count = listing(models::count);
        let catalog = self.catalog.clone();
        let endpoints = get(move |Path((author, slug)): Path<(String, String)>| {
            let catalog = catalog.clone();
            async move {
                let id = format!("{author}/{slug}");
                match models::endpoints(&catalog, &id) {
                    Some(body) => json(body),
                    None => Error::unknown_model(&id).into_response(),
                }
            }
        })
        .fallback(wrong_method("GET"));
        let catalog = self.catalog.clone();
        let providers = get(move || {
            let catalog = catalog.clone();
            async move { json(models::providers(&catalog)) }
        })
        .fallback(wrong_method("GET"));
        let recorder = self.recorder.clone();
        let scrape = get(move || {
            let stats = recorder.stats();
            async move {
                let text = match metrics::prometheus() {
                    Some(h) => metrics::render(h, stats),
                    None => String::new(),
                };
                let mut res = Response::new(Full::new(Bytes::from(text)));
                res.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
        })
        .fallback(wrong_method("GET"));
        let health = get(|| async { json(Bytes::from_static(b"{\"status\":\"ok\"}")) })
            .fallback(wrong_method("GET"));
        let key = {
            let proxy = self.clone();
            get(move |req: Request| {
                let proxy = proxy.clone();
                async move { proxy.key_info(req).await }
            })
        }
        .fallback(wrong_method("GET"));
        let (auth, recorder) = (self.key_auth.clone(), self.recorder.clone());
        let generation = get(move |req: Request| async move {
            match auth.authenticate(req.headers(), req.extensions()).await {
                Ok(p) => generation::generation(&recorder, &p, req.uri().query()).await,
                Err(e) => refusal(&e),
            }
        })
        .fallback(wrong_method("GET"));
        let generations = {
            let proxy = self.clone();
            get(move |req: Request| {
                let proxy = proxy.clone();
                async move { proxy.generations(req).await }
            })
            .fallback(wrong_method("GET"))
        };
        let activity = {
            let proxy = self.clone();
            get(move |req: Request| {
                let proxy = proxy.clone();
                async move { proxy.activity(req).await }
            })
            .fallback(wrong_method("GET"))
        };
        let manage = |rest: Option<String>| self.management(rest);
        let v1 = Router::new()
            .route("/v1/chat/completions", chat.clone())
            .route("/v1/messages", messages.clone())
            .route("/v1/messages/count_tokens", count_tokens.clone())
            .route("/v1/responses", responses.clone())
            .route("/v1/responses/{*id}", stored.clone())
            .route("/v1/embeddings", embeddings.clone())
            .route("/v1/models", models.clone())
            .route("/v1/models/count", count)
            .route("/v1/models/{author}/{slug}/endpoints", endpoints)
            .route("/v1/providers", providers)
            .route("/v1/key", key.clone())
            .route("/v1/auth/key", key)
            .route("/v1/generation", generation)
            .route("/v1/generations", generations)
            .route("/v1/activity", activity)
            .route("/v1/keys", manage(None))
            .route(
                "/v1/credits",
                get({
                    let proxy = self.clone();
                    move |req: Request| async move { proxy.credits(req).await }
                })
                .fallback(wrong_method("GET")),
            )
            .route(
                "/v1/keys/{*id}",
                any({
                    let proxy = self.clone();
                    move |Path(id): Path<String>, req: Request| async move {
                        proxy.manage(Some(id), req).await
                    }
                }),
            );
        let mut app = Router::new()
            .merge(v1.clone())
            .nest("/api", v1)
            .route("/chat/completions", chat)
            .route("/messages", messages)
            .route("/messages/count_tokens", count_tokens)
            .route("/responses", responses)
            .route("/responses/{*id}", stored)
            .route("/embeddings", embeddings)
            .route("/models", models)
            .route("/metrics", scrape)
            .route("/health", health.clone())
            .route("/healthz", health);
        for (path, page) in ui::routes() {
            app = app.route(path, page);
        }
        app.fallback(|req: Request| async move {
            own(Error::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!("no route for {} {}", req.method(), req.uri().path()),
            )
            .into_response())
        })
    }

    /// `POST /v1/messages/count_tokens`: authenticated, never rate limited or billed.
    async fn count_tokens(&self, req: Request) -> Own {
        let refuse = |e: &Error| Dialect::Messages.error_response(e);
        if let Err(e) = self
            .key_auth
            .authenticate(req.headers(), req.extensions())
            .await
        {
            return refuse(&e);
        }
        let (parts, body) = req.into_parts();
        let limit = self.max_body_bytes;
        let bytes = match crate::body::collect_limited(std::pin::pin!(body), limit).await {
            Ok(b) => b,
            Err(crate::body::CollectError::TooLarge) => {
                return refuse(&Error::payload_too_large(limit))
            }
            Err(crate::body::CollectError::Body(e)) => return refuse(&Error::from_request_body(e)),
        };
        let counted =
            super::count_tokens::count_tokens(&self.catalog, &self.dispatch, &parts.headers, bytes)
                .await;
        counted.unwrap_or_else(|e| refuse(&e))
    }

    /// `/v1/keys`: the management API, or a 404 when it is off.
    fn management(&self, id: Option<String>) -> MethodRouter {
        let proxy = self.clone();
        any(move |req: Request| {
            let proxy = proxy.clone();
            let id = id.clone();
            async move { proxy.manage(id, req).await }
        })
    }

    /// `GET /v1/key`: the calling key, a client key or the admin key.
    async fn key_info(&self, req: Request) -> Own {
        let (principal, admin) = match self.caller(req.headers(), req.extensions()).await {
            Ok(found) => found,
            Err(e) => return refusal(&e),
        };
        match self.recorder.ledger().fetch(&principal.id).await {
            Ok(spend) => keys::key_info(&principal, &spend, admin),
            Err(e) => e.to_error().into_response(),
        }
    }

    /// Who calls: a client key, or the admin key (a valid key of the other role), with
    /// whether it is the admin key.
    async fn caller(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<(Principal, bool), Error> {
        match self.key_auth.authenticate(headers, extensions).await {
            Ok(p) => Ok((p, false)),
            Err(e) if e.status() == StatusCode::FORBIDDEN => match &self.admin_auth {
                Some(admin) => admin
                    .authenticate(headers, extensions)
                    .await
                    .map(|p| (p, true)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/generations`: a client key lists its own records, the admin key every key's.
    async fn generations(&self, req: Request) -> Own {
        match self.viewer(req.headers(), req.extensions()).await {
            Ok(viewer) => generations::list(&self.recorder, viewer, req.uri().query()).await,
            Err(refused) => refused,
        }
    }

    /// `GET /v1/activity`: a client key's own totals, or (admin key) everyone's.
    async fn activity(&self, req: Request) -> Own {
        match self.viewer(req.headers(), req.extensions()).await {
            Ok(viewer) => activity::activity(&self.recorder, viewer, req.uri().query()).await,
            Err(refused) => refused,
        }
    }

    /// Who asks, as the activity routes see it; the refusal otherwise.
    async fn viewer(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<generations::Viewer, Own> {
        match self.caller(headers, extensions).await {
            Ok((_, true)) => Ok(generations::Viewer::Admin),
            Ok((p, false)) => Ok(generations::Viewer::Key(p.id.clone())),
            Err(e) => Err(refusal(&e)),
        }
    }

    /// `GET /v1/credits` (admin key): the configured credits and what every key spent.
    async fn credits(&self, req: Request) -> Own {
        let Some(auth) = &self.admin_auth else {
            return Error::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "credits need the admin key: set `admin_key_env` in the configuration",
            )
            .into_response();
        };
        if let Err(e) = auth.authenticate(req.headers(), req.extensions()).await {
            return refusal(&e);
        }
        match keys::credits(&*self.keys, &**self.recorder.ledger(), self.credits).await {
            Ok(res) => res,
            Err(e) => e.into_response(),
        }
    }

    async fn manage(&self, id: Option<String>, req: Request) -> Own {
        let Some(auth) = &self.admin_auth else {
            return Error::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "key management is off: set `admin_key_env` in the configuration",
            )
            .into_response();
        };
        let principal = match auth.authenticate(req.headers(), req.extensions()).await {
            Ok(p) => p,
            Err(e) => return refusal(&e),
        };
        let (parts, body) = req.into_parts();
        tracing::debug!(by = %principal.id, method = %parts.method, "key management");
        let rest = id.map(|id| format!("/{id}")).unwrap_or_default();
        let ledger = self.recorder.ledger();
        let query = parts.uri.query();
        match keys::manage(
            &*self.keys,
            &**ledger,
            parts.method.clone(),
            &rest,
            query,
            body,
        )
        .await
        {
            Ok(res) => res,
            Err(e) => e.into_response(),
        }
    }

    /// The server's cross-cutting layers around `routes`: panics answered as `500`s in the
    /// envelope, credentials marked sensitive (never in a log line), the access log (one line
    /// per request, `access_log`), CORS (`cors_allow_origins`), and a generation id on every
    /// answer.
    pub fn with_server_layers(&self, routes: Router) -> Router {
        let mut app = routes
            .layer(CatchPanicLayer::custom(panic_answer))
            .layer(axum::middleware::map_response(with_generation_id));
        if self.access_log {
            app = app.layer(access_log());
        }
        if let Some(cors) = &self.cors {
            app = app.layer(cors.clone());
        }
        app.layer(SetSensitiveRequestHeadersLayer::new(SENSITIVE))
    }
}

/// Request headers that carry credentials: marked sensitive, so no log or `Debug` shows them.
const SENSITIVE: [HeaderName; 6] = [
    AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
];

/// tower-http's trace layer as the access log sets it up.
type AccessLog = TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&Request) -> tracing::Span,
    (),
    fn(&Response, Duration, &tracing::Span),
    (),
    (),
    (),
>;

/// The access log: a line per request, at `info` under the `modelgate::access` target, when
/// its answer's head goes out (a stream's, then): method, path, status, latency, generation
/// id and the key's name (never the key).
fn access_log() -> AccessLog {
    fn span(req: &Request) -> tracing::Span {
        tracing::info_span!(
            target: "modelgate::access",
            "request",
            method = %req.method(),
            path = %req.uri().path(),
        )
    }
    fn line(res: &Response, latency: Duration, span: &tracing::Span) {
        let id = res
            .headers()
            .get(GENERATION_ID_NAME)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let key = res
            .extensions()
            .get::<Principal>()
            .map_or("-", |p| p.name.as_str());
        tracing::info!(
            target: "modelgate::access",
            parent: span,
            status = res.status().as_u16(),
            latency_ms = %format_args!("{:.3}", latency.as_secs_f64() * 1000.0),
            generation_id = id,
            key,
            "answered"
        );
    }
    TraceLayer::new_for_http()
        .make_span_with(span as fn(&Request) -> tracing::Span)
        .on_request(())
        .on_response(line as fn(&Response, Duration, &tracing::Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// CORS for the origins of `cors_allow_origins` (`"*"`: any): the methods and request headers
/// the API uses, and the answer headers a browser app reads (generation id, rate limits).
pub(super) fn cors(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .map_err(|_| format!("`cors_allow_origins`: `{o}` is not a valid origin"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    let expose: Vec<HeaderName> = [GENERATION_ID_NAME, http::header::RETRY_AFTER]
        .into_iter()
        .chain(crate::rate_limit::header_names())
        .collect();
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::list(expose))
            .max_age(Duration::from_secs(600)),
    ))
}

/// A panic while answering: a `500` in the envelope (the connection and the proxy go on).
fn panic_answer(_: Box<dyn std::any::Any + Send + 'static>) -> Own {
    tracing::error!("a request panicked; answered 500");
    Error::internal("the gateway failed while answering this request").into_response()
}

/// Every answer carries a generation id: the gateway stack's own, or a new one.
async fn with_generation_id(mut res: Response) -> Response {
    if !res.headers().contains_key(GENERATION_ID_NAME) {
        if let Ok(v) = HeaderValue::from_str(GenerationId::new().as_str()) {
            res.headers_mut().insert(GENERATION_ID_NAME, v);
        }
    }
    res
}

/// A route's method router answers a wrong method with a `405` in the envelope and `Allow`.
fn wrong_method(allowed: &'static str) -> impl Fn(Request) -> std::future::Ready<Own> + Clone {
    wrong_method_in(Dialect::Chat, allowed)
}

/// [`wrong_method`] in a dialect's envelope.
fn wrong_method_in(
    dialect: Dialect,
    allowed: &'static str,
) -> impl Fn(Request) -> std::future::Ready<Own> + Clone {
    move |req: Request| {
        let err = Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!(
                "{} is not allowed on {}; use {allowed}",
                req.method(),
                req.uri().path()
            ),
        );
        let mut res = dialect.error_response(&err);
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        std::future::ready(res)
    }
}

fn json(bytes: Bytes) -> Own {
    let mut res = Response::new(Full::new(bytes));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn own(res: Own) -> Response<Body> {
    res.map(Body::new)
}
