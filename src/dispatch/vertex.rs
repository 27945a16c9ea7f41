//! Vertex AI's access tokens, minted through the dispatcher's own client (its connection pool,
//! TLS and egress proxy): the service account's assertion sent to its `token_uri`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::Dispatch;
use crate::error::{ErrorSource, Retry};
use crate::provider::Provider;
use crate::Error;

/// The largest token answer read.
const MAX_TOKEN_ANSWER: usize = 64 << 10;

impl Dispatch {
    /// The `Authorization` value for a request to `provider` (a Vertex one): the cached token,
    /// or a new one. A token endpoint that is down or refuses the assertion is a 502 naming
    /// the provider, tried elsewhere (the endpoint cools down as any failing one).
    pub(crate) async fn vertex_token(
        &self,
        provider: &Arc<Provider>,
    ) -> Result<HeaderValue, Error> {
        let Some(vertex) = provider.vertex() else {
            return Err(Error::internal(
                "a token asked for a provider that is not Vertex",
            ));
        };
        vertex
            .tokens
            .bearer(|| async {
                let name = provider.name();
                let failed = |why: String| {
                    Error::bad_gateway(
                        format!("{name}: no access token from the service account's token endpoint: {why}"),
                        ErrorSource::Upstream,
                        Retry::Elsewhere,
                    )
                    .with_provider(provider.name_arc().clone())
                };
                let assertion = vertex.account.assertion(crate::facts::unix_now())?;
                let form = format!(
                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
                );
                let uri = vertex
                    .account
                    .token_uri()
                    .parse()
                    .map_err(|e| failed(format!("`token_uri` is not a URL ({e})")))?;
                let mut req = Request::new(Full::new(Bytes::from(form)));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = uri;
                req.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                let res = self
                    .send(req, provider.clone())
                    .await
                    .map_err(|e| failed(e.message().to_owned()))?;
                let status = res.status();
                let body = crate::body::collect_limited(
                    std::pin::pin!(res.into_body()),
                    MAX_TOKEN_ANSWER,
                )
                .await
                .map_err(|_| failed("its answer could not be read".into()))?;
                if status != StatusCode::OK {
                    // Google's `{"error": "invalid_grant", "error_description": …}`.
                    let said = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .map(|v| {
                            let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                            format!("{} {}", text("error"), text("error_description"))
                        })
                        .unwrap_or_default();
                    return Err(failed(format!(
                        "HTTP {}{}",
                        status.as_u16(),
                        if said.trim().is_empty() {
                            String::new()
                        } else {
                            format!(": {}", said.trim())
                        }
                    )));
                }
                serde_json::from_slice::<crate::provider::vertex::token::Granted>(&body)
                    .map_err(|e| failed(format!("its answer is not a token ({e})")))?
                    .bearer()
                    .map_err(failed)
            })
            .await
    }
}
