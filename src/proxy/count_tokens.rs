//! `POST /v1/messages/count_tokens`: how many input tokens a Messages request would take.
//!
//! The model is resolved as for `/v1/messages`. When one of its endpoints is of the
//! `anthropic` kind, the request goes to that endpoint's own `count_tokens` (its body as it
//! came, `model` rewritten, the gateway's fields removed) and its answer is passed on; a
//! refusal (a 4xx) is passed on in the envelope. Otherwise, or when that endpoint cannot be
//! reached, the answer is the local estimate: a quarter of the bytes of the system prompt,
//! the messages' text, the tool calls' inputs and the tools' schemas, plus 1,600 tokens an
//! image (Anthropic's count for a full-size one). Nothing is billed or recorded.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Response, Uri};
use http_body_util::Full;

use crate::dialect::messages::{parse, FORWARDED};
use crate::dispatch::Dispatch;
use crate::model_rewrite::Catalog;
use crate::provider::ProviderKind;
use crate::Error;

/// The largest `count_tokens` answer read from a provider.
const MAX_ANSWER: usize = 64 << 10;

/// Answers a `count_tokens` request whose body is `bytes`; see the [module docs](self).
pub(crate) async fn count_tokens(
    catalog: &Catalog,
    dispatch: &Dispatch,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Result<Response<Full<Bytes>>, Error> {
    let translated = parse(&bytes)?.into_chat()?;
    let estimate = translated.input_tokens;
    let plan = catalog.plan(&translated.chat, tokio::time::Instant::now())?;
    let anthropic = plan
        .targets
        .iter()
        .find(|t| t.provider.kind() == ProviderKind::Anthropic);
    if let Some(target) = anthropic {
        let forwarded: Vec<_> = FORWARDED
            .iter()
            .filter_map(|h| Some((h.clone(), headers.get(h)?.clone())))
            .collect();
        let provider = target.provider.clone();
        let uri: Uri = format!("{}/count_tokens", provider.chat_uri())
            .parse()
            .map_err(|e| Error::internal(format!("cannot build the count_tokens URL: {e}")))?;
        let req = provider.build_native_request(
            uri,
            &bytes,
            &forwarded,
            &target.upstream_model,
            false,
        )?;
        match dispatch.send(req, provider.clone()).await {
            Ok(res) => {
                let (parts, body) = res.into_parts();
                let read = crate::body::collect_limited(std::pin::pin!(body), MAX_ANSWER).await;
                match read {
                    Ok(body) if parts.status.is_success() => return Ok(json(body)),
                    Ok(body) if parts.status.is_client_error() => {
                        return Err(crate::provider::upstream_error(
                            parts.status,
                            &parts.headers,
                            &body,
                            provider.name_arc(),
                            provider.secrets(),
                        ))
                    }
                    _ => tracing::debug!(
                        provider = provider.name(),
                        status = parts.status.as_u16(),
                        "count_tokens failed upstream; answering the local estimate"
                    ),
                }
            }
            Err(e) => tracing::debug!(
                provider = provider.name(),
                error = %e,
                "count_tokens failed upstream; answering the local estimate"
            ),
        }
    }
    Ok(json(Bytes::from(format!(
        "{{\"input_tokens\":{estimate}}}"
    ))))
}

fn json(body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}
