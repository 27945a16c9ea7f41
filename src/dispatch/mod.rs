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
//! routing layer is missing. The client's own headers are never forwarded.
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
//! ```

mod body;
mod connect;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

pub use self::body::ResponseBody;
use self::connect::{classify, TimeoutConnector};
use crate::chat::ChatRequest;
use crate::error::{ErrorSource, Retry};
use crate::provider::Provider;
use crate::route::Target;
use crate::Error;

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

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
    /// A dispatcher for these providers (their connect timeouts are applied per host).
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a Arc<Provider>>) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
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
        let upstream = match provider.build_request(body, target) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let timeouts = provider.timeouts();
        let sent = self.client.request(upstream);
        Box::pin(async move {
            let res = match tokio::time::timeout(timeouts.first_byte, sent).await {
                Ok(Ok(res)) => res,
                Ok(Err(e)) => return Err(classify(&e, &provider)),
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
        })
    }
}
