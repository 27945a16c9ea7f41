//! [`Dispatch`]: sends the typed request of one attempt to its [`Target`]'s provider.
//!
//! One pooled hyper-util client serves every provider: HTTP/1.1 and HTTP/2 (ALPN), rustls with
//! the webpki roots, keep-alive pool. Per provider: a connect timeout, a time-to-first-byte
//! timeout (request sent → response headers) and an idle timeout on the response body (longest
//! silence between two pieces). Transport faults become [`Error`]s that say whether a retry is
//! safe: a refused or timed-out connect never reached the provider ([`Retry::Safe`]); a reset
//! or a first-byte timeout after sending may have ([`Retry::Retryable`]).
//!
//! Reads [`Target`] from the request extensions; without one it fails with a 500 that says the
//! routing layer is missing. The client's own headers are never forwarded, except a dialect's
//! own (`anthropic-version`, `anthropic-beta`) with a request kept in it ([`NativeRequest`]),
//! sent as it came to a provider of that dialect. A [`TraceContext`] in the extensions (the
//! attempt's span, when the request is traced) goes to the provider as `traceparent` and
//! `tracestate`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use modelgate::dispatch::Dispatch;
//! use modelgate::provider::{Provider, ProviderKind};
//!
//! let openai = Arc::new(
//!     Provider::builder("openai", ProviderKind::OpenAi, "https://api.openai.com/v1")
//!         .api_key(std::env::var("OPENAI_API_KEY").ok())
//!         .build()
//!         .unwrap(),
//! );
//! let dispatch = Dispatch::new([&openai]);
//!
//! // A private certificate authority, through an egress proxy:
//! # fn private_roots() -> rustls::RootCertStore { rustls::RootCertStore::empty() }
//! let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
//!     rustls::crypto::ring::default_provider(),
//! ))
//! .with_safe_default_protocol_versions()
//! .unwrap()
//! .with_root_certificates(private_roots())
//! .with_no_client_auth();
//! let dispatch = Dispatch::builder()
//!     .tls_config(tls)
//!     .egress_proxy("http://proxy.internal:3128".parse().unwrap())
//!     .build([&openai]);
//! ```

mod body;
mod connect;
pub mod middle_out;
mod vertex;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service;

pub use self::body::ResponseBody;
use self::connect::{classify, TimeoutConnector};
use crate::chat::ChatRequest;
use crate::embeddings::Embeddings;
use crate::error::{ErrorSource, Retry};
use crate::facts::{NativeRequest, Target, TraceContext};
use crate::provider::Provider;
use crate::Error;

type HttpsConnector = hyper_rustls::HttpsConnector<Egress>;

/// Sends one attempt to its provider. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Dispatch {
    // One `Arc` to clone instead of the client's many (the stack is cloned per request).
    client: Arc<Client<TimeoutConnector<HttpsConnector>, Full<Bytes>>>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch").finish_non_exhaustive()
    }
}

impl Dispatch {
    /// A dispatcher for these providers (their connect timeouts are applied per host), on the
    /// defaults of [`DispatchBuilder`].
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a Arc<Provider>>) -> Self {
        Self::builder().build(providers)
    }

    /// A dispatcher with the embedder's TLS configuration, TCP connector or egress proxy.
    pub fn builder() -> DispatchBuilder {
        DispatchBuilder::default()
    }
}

/// Builds a [`Dispatch`] whose connections are made the embedder's way: a TLS configuration of
/// its own (a private certificate authority, client certificates), a TCP connector of its own
/// (a local address to bind), an HTTP `CONNECT` proxy for egress. Defaults: rustls with the
/// webpki roots, HTTP/1.1 and HTTP/2 by ALPN, TCP keep-alive and no Nagle, no proxy.
#[derive(Default)]
pub struct DispatchBuilder {
    tls: Option<rustls::ClientConfig>,
    http: Option<HttpConnector>,
    proxy: Option<(http::Uri, Option<http::HeaderValue>)>,
}

impl std::fmt::Debug for DispatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchBuilder")
            .field("tls", &self.tls.is_some())
            .field("http", &self.http.is_some())
            .field(
                "proxy",
                &self
                    .proxy
                    .as_ref()
                    .map(|(uri, _)| crate::error::redact_url(&uri.to_string())),
            )
            .finish()
    }
}

impl DispatchBuilder {
    /// The TLS configuration of connections to providers (its ALPN protocols are set to
    /// HTTP/2 and HTTP/1.1).
    pub fn tls_config(mut self, tls: rustls::ClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TCP connector under TLS (it must allow `https` URIs: `enforce_http(false)`).
    pub fn http_connector(mut self, http: HttpConnector) -> Self {
        self.http = Some(http);
        self
    }

    /// Every connection goes through this HTTP proxy, tunnelled with `CONNECT` (TLS to the
    /// provider stays end to end).
    pub fn egress_proxy(mut self, proxy: http::Uri) -> Self {
        self.proxy = Some((proxy, None));
        self
    }

    /// As [`egress_proxy`](Self::egress_proxy), with a `Proxy-Authorization` value.
    pub fn egress_proxy_with_auth(mut self, proxy: http::Uri, auth: http::HeaderValue) -> Self {
        self.proxy = Some((proxy, Some(auth)));
        self
    }

    /// The dispatcher for these providers.
    pub fn build<'a>(self, providers: impl IntoIterator<Item = &'a Arc<Provider>>) -> Dispatch {
        let http = self.http.unwrap_or_else(|| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_keepalive(Some(std::time::Duration::from_secs(60)));
            http
        });
        let egress = match self.proxy {
            None => Egress::Direct(http),
            Some((uri, auth)) => {
                let tunnel = Tunnel::new(uri, http);
                Egress::Tunnel(match auth {
                    Some(a) => tunnel.with_auth(a),
                    None => tunnel,
                })
            }
        };
        let tls = self.tls.unwrap_or_else(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth()
        });
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(egress);
        let connector = TimeoutConnector::new(https, providers);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Dispatch {
            client: Arc::new(client),
        }
    }
}

/// The TCP connection to a provider: direct, or tunnelled through an egress proxy.
#[derive(Clone)]
enum Egress {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

impl Service<http::Uri> for Egress {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = crate::error::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Egress::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Egress::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        match self {
            Egress::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Egress::Tunnel(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}

impl Service<Request<ChatRequest>> for Dispatch {
    type Response = Response<ResponseBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ChatRequest>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let Some(target) = parts.extensions.get::<Target>() else {
            return Box::pin(std::future::ready(Err(Error::internal(
                "no routing target on the request: put ModelRewriteLayer (or insert a Target) before Dispatch",
            ))));
        };
        let provider = target.provider.clone();
        let native = parts.extensions.get::<NativeRequest>();
        let embeddings = parts.extensions.get::<Embeddings>();
        let stream = body.is_stream();
        let native = native.map(|n| (n, n.native_uri(&provider, &target.upstream_model, stream)));
        let built = match (embeddings, native) {
            (Some(e), _) => provider.build_embeddings_request(
                e,
                &target.upstream_model,
                target.supported_parameters.as_deref(),
            ),
            (None, Some((native, Some(uri)))) => provider.build_native_request(
                uri,
                &native.body,
                &native.headers,
                &target.upstream_model,
                stream,
            ),
            // Said in an API this provider's cannot carry: refused here, tried elsewhere.
            (
                None,
                Some((
                    NativeRequest {
                        untranslatable: Some(e),
                        ..
                    },
                    None,
                )),
            ) => Err(e
                .clone()
                .with_retry(Retry::Elsewhere)
                .with_provider(provider.name_arc().clone())),
            _ => {
                let mut body = body;
                if let Some(context) = target.context_length.filter(|_| middle_out::asked(&body)) {
                    let n = middle_out::fit(&mut body, context);
                    if n > 0 {
                        tracing::debug!(
                            provider = provider.name(),
                            dropped = n,
                            context,
                            "middle-out: messages dropped to fit the context"
                        );
                    }
                }
                let dropped = match &target.supported_parameters {
                    Some(list) => crate::provider::keep_supported(&mut body, list),
                    None => {
                        crate::provider::keep_supported(&mut body, provider.kind().parameters())
                    }
                };
                if !dropped.is_empty() {
                    tracing::debug!(
                        provider = provider.name(),
                        ?dropped,
                        "parameters the endpoint does not support dropped"
                    );
                }
                provider.build_request(body, &target.upstream_model, target.max_output_tokens)
            }
        };
        let mut upstream = match built {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if let Some(trace) = parts.extensions.get::<TraceContext>() {
            // The provider continues the trace (unsigned by SigV4, which signs what it lists).
            trace.inject(upstream.headers_mut());
        }
        if provider.vertex().is_some() {
            // The request waits for the service account's access token.
            let this = self.clone();
            return Box::pin(async move {
                let bearer = this.vertex_token(&provider).await?;
                upstream
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, bearer);
                this.send(upstream, provider).await
            });
        }
        Box::pin(self.send(upstream, provider))
    }
}

impl Dispatch {
    /// Sends a request built for `provider` with its first-byte timeout; the body is read
    /// with its idle timeout.
    pub(crate) fn send(
        &self,
        upstream: Request<Full<Bytes>>,
        provider: Arc<Provider>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + 'static {
        let timeouts = provider.timeouts();
        let sent = self.client.request(upstream);
        async move {
            let res = match tokio::time::timeout(timeouts.first_byte, sent).await {
                Ok(Ok(res)) => res,
                Ok(Err(e)) => return Err(classify(e, &provider)),
                Err(_) => {
                    return Err(Error::gateway_timeout(
                        format!(
                            "{}: no response within the first-byte timeout of {} ms",
                            provider.name(),
                            timeouts.first_byte.as_millis()
                        ),
                        ErrorSource::Transport,
                        Retry::Retryable,
                    )
                    .with_provider(provider.name_arc().clone()))
                }
            };
            Ok(res.map(|b| ResponseBody::new(b, timeouts.idle, provider.name_arc().clone())))
        }
    }
}
