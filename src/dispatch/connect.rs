use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tower_service::Service;

use crate::error::{BoxError, ErrorSource, Retry};
use crate::provider::Provider;
use crate::Error;

/// Wraps a connector with a connect timeout chosen by the URI's host and port, so one pooled
/// client can honour each provider's own connect timeout.
#[derive(Clone)]
pub(crate) struct TimeoutConnector<C> {
    inner: C,
    by_authority: Arc<HashMap<String, Duration>>,
    default: Duration,
}

/// The connect timeout ran out.
#[derive(Debug)]
pub(crate) struct ConnectTimeout;

impl std::fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timeout")
    }
}

impl std::error::Error for ConnectTimeout {}

impl<C> TimeoutConnector<C> {
    pub(crate) fn new<'a>(
        inner: C,
        providers: impl IntoIterator<Item = &'a Arc<Provider>>,
    ) -> Self {
        let mut by_authority: HashMap<String, Duration> = HashMap::new();
        for p in providers {
            let key = authority_key(p.chat_uri());
            let t = p.timeouts().connect;
            by_authority
                .entry(key)
                .and_modify(|d| *d = (*d).min(t))
                .or_insert(t);
        }
        TimeoutConnector {
            inner,
            by_authority: Arc::new(by_authority),
            default: crate::provider::Timeouts::default().connect,
        }
    }
}

fn authority_key(uri: &Uri) -> String {
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    format!("{}:{}", uri.host().unwrap_or(""), port)
}

impl<C> Service<Uri> for TimeoutConnector<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self
            .by_authority
            .get(&authority_key(&uri))
            .copied()
            .unwrap_or(self.default);
        let fut = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimeout) as BoxError),
            }
        })
    }
}

/// Turns a client error into a typed [`Error`]: where it happened and whether a retry is safe.
pub(crate) fn classify(err: hyper_util::client::legacy::Error, provider: &Provider) -> Error {
    let name = provider.name();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    let mut timed_out = false;
    let mut refused = false;
    let mut tls = false;
    let mut detail = String::new();
    while let Some(c) = cause {
        if c.is::<ConnectTimeout>() {
            timed_out = true;
        } else if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                refused = true;
            }
        } else if c.is::<rustls::Error>() {
            tls = true;
        }
        detail = c.to_string();
        cause = c.source();
    }
    let detail = crate::error::scrub(&detail, provider.secrets());
    let e = if err.is_connect() {
        if timed_out {
            Error::gateway_timeout(
                format!(
                    "{name}: connect timeout ({} ms)",
                    provider.timeouts().connect.as_millis()
                ),
                ErrorSource::Connect,
                Retry::Safe,
            )
        } else if refused {
            Error::bad_gateway(
                format!("{name}: connection refused"),
                ErrorSource::Connect,
                Retry::Safe,
            )
        } else if tls {
            Error::bad_gateway(
                format!("{name}: TLS handshake failed: {detail}"),
                ErrorSource::Connect,
                Retry::Safe,
            )
        } else {
            Error::bad_gateway(
                format!("{name}: cannot connect: {detail}"),
                ErrorSource::Connect,
                Retry::Safe,
            )
        }
    } else if tls {
        Error::bad_gateway(
            format!("{name}: TLS failure: {detail}"),
            ErrorSource::Connect,
            Retry::Safe,
        )
    } else {
        Error::bad_gateway(
            format!("{name}: the connection failed before a response: {detail}"),
            ErrorSource::Transport,
            Retry::Retryable,
        )
    };
    e.with_provider(provider.name_arc().clone()).with_cause(err)
}
