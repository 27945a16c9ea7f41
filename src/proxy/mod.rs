//! The bundled proxy: configuration, routes and the server loop behind `examples/proxy.rs`.
//!
//! Routes: `POST /v1/chat/completions` (the gateway stack), `GET /v1/models` (the catalog,
//! OpenRouter-shaped), `GET /health`. Everything else is a 404 (or 405) in the envelope.
//! Every answer carries `X-Generation-Id`.
//!
//! ```no_run
//! use modelgate::proxy::{serve, shutdown_signal, Config, Proxy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let env = |k: &str| std::env::var(k).ok();
//! let config = Config::embedded_default(&env);
//! let proxy = Proxy::from_config(&config, &env)?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! serve(listener, proxy, shutdown_signal(), config.shutdown_grace()).await?;
//! # Ok(()) }
//! ```

mod config;
mod models;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_service::Service;

pub use self::config::{
    Config, ConfigError, EndpointConfig, ModelConfig, ProviderConfig, WELL_KNOWN,
};
use crate::body::GatewayBody;
use crate::decode::{Decode, DecodeLayer, GENERATION_ID_HEADER};
use crate::dispatch::{self, Dispatch};
use crate::error::BoxError;
use crate::future::ResponseFuture;
use crate::model_rewrite::{Catalog, ModelRewrite, ModelRewriteLayer};
use crate::route::GenerationId;
use crate::stream_normalize::{self, StreamNormalize, StreamNormalizeLayer};
use crate::Error;

/// The gateway stack the proxy serves on `POST /v1/chat/completions`.
pub type GatewayStack = Decode<ModelRewrite<StreamNormalize<Dispatch>>>;

/// The body of every proxy answer.
pub type ProxyBody = GatewayBody<stream_normalize::ResponseBody<dispatch::ResponseBody>>;

/// The proxy's service: routes in front of the gateway stack. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    gateway: GatewayStack,
    catalog: Arc<Catalog>,
    models_json: Bytes,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the proxy from a configuration; keys are read through `env`.
    pub fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let catalog = Arc::new(config.catalog(env)?);
        let dispatch = Dispatch::new(catalog.providers());
        let gateway = ServiceBuilder::new()
            .layer(
                DecodeLayer::new().max_body_bytes(
                    config
                        .max_body_bytes
                        .unwrap_or(crate::decode::DEFAULT_MAX_BODY_BYTES),
                ),
            )
            .layer(ModelRewriteLayer::new(catalog.clone()))
            .layer(StreamNormalizeLayer::new().keepalive_interval(config.keepalive_interval()))
            .service(dispatch);
        let models_json = models::render(&catalog);
        Ok(Proxy {
            gateway,
            catalog,
            models_json,
        })
    }

    /// The catalog the proxy serves.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }
}

impl<B> Service<Request<B>> for Proxy
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ResponseFuture<
        <GatewayStack as Service<Request<B>>>::Future,
        Response<ProxyBody>,
        Infallible,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let method = req.method();
        let route = match path {
            "/v1/chat/completions" | "/api/v1/chat/completions" | "/chat/completions" => {
                if method == Method::POST {
                    return ResponseFuture::Inner {
                        future: self.gateway.call(req),
                    };
                }
                Route::WrongMethod("POST")
            }
            "/v1/models" | "/api/v1/models" | "/models" => {
                if method == Method::GET || method == Method::HEAD {
                    Route::Json(self.models_json.clone())
                } else {
                    Route::WrongMethod("GET")
                }
            }
            "/health" | "/healthz" => {
                if method == Method::GET || method == Method::HEAD {
                    Route::Json(Bytes::from_static(b"{\"status\":\"ok\"}"))
                } else {
                    Route::WrongMethod("GET")
                }
            }
            _ => Route::NotFound,
        };
        let mut res = match route {
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
        if let Ok(v) = HeaderValue::from_str(GenerationId::new().as_str()) {
            res.headers_mut().insert(GENERATION_ID_HEADER, v);
        }
        ResponseFuture::ready(Ok(res.map(GatewayBody::full)))
    }
}

enum Route {
    Json(Bytes),
    WrongMethod(&'static str),
    NotFound,
}

/// Serves `proxy` on `listener` (HTTP/1.1 and HTTP/2) until `shutdown` completes; then stops
/// accepting and lets in-flight requests, streams included, finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let conn = builder
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(proxy.clone()))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: waiting for in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    Ok(())
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
