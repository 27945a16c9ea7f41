//! The decode step: `Request<B>` to `Request<ChatRequest>`, and the edge of the typed stack.
//!
//! [`DecodeLayer`] reads the body up to a limit (default 32 MiB, room for base64 images),
//! parses it into a [`ChatRequest`] and calls the typed inner service. It is also where typed
//! errors become responses: every `Err(Error)` from the inner stack is answered with the
//! envelope and its real status, so the whole stack has `Error = Infallible` and drops into
//! axum or hyper as it is. Every answer carries `X-Generation-Id`.
//!
//! - body over the limit (by `content-length` or while reading): 413;
//! - bad JSON, a wrong type, a missing `model`/`messages`: 400 whose message and `param`
//!   name the field (`messages[0].content`);
//! - inserts [`GenerationId`] (unless present) before calling the inner service.
//!
//! ```
//! use modelgate::decode::DecodeLayer;
//!
//! let _default = DecodeLayer::new(); // 32 MiB
//! let _small = DecodeLayer::new().max_body_bytes(1 << 20);
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::CollectError;
use crate::body::GatewayBody;
use crate::chat::ChatRequest;
use crate::error::BoxError;
use crate::facts::GenerationId;
use crate::Error;

/// The default body limit: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;

/// The response header naming the request's generation id.
pub const GENERATION_ID_HEADER: &str = "x-generation-id";

/// [`GENERATION_ID_HEADER`] as a header name: inserting a `&str` name that is not a standard
/// header copies it into a new allocation each time; this one is shared.
pub(crate) const GENERATION_ID_NAME: HeaderName = HeaderName::from_static(GENERATION_ID_HEADER);

/// Builds [`Decode`]; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct DecodeLayer {
    max_body_bytes: usize,
}

impl Default for DecodeLayer {
    fn default() -> Self {
        DecodeLayer {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl DecodeLayer {
    /// A decode step with the default 32 MiB limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the body limit.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for DecodeLayer {
    type Service = Decode<S>;
    fn layer(&self, inner: S) -> Decode<S> {
        Decode {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// Decodes the body and answers typed errors; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Decode<S> {
    inner: S,
    max_body_bytes: usize,
}

impl<S, B, RB> Service<Request<B>> for Decode<S>
where
    S: Service<Request<ChatRequest>, Response = Response<RB>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<GatewayBody<RB>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is driven to readiness inside the future, once the body is read.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.max_body_bytes;
        let id = match req.extensions().get::<GenerationId>() {
            Some(id) => id.clone(),
            None => {
                let id = GenerationId::new();
                req.extensions_mut().insert(id.clone());
                id
            }
        };
        if let Err(e) = check_declared_length(&req, limit) {
            return Box::pin(std::future::ready(Ok(answer(Err(e), &id))));
        }
        let (parts, body) = req.into_parts();
        // The future is kept small (allocators serve small blocks from a per-thread cache; a
        // larger one costs several times more): no typed request is held across a wait, and the
        // head is held once, so one block and no nested future (a value moved into an inner
        // future is stored twice).
        Box::pin(async move {
            let mut inner = inner;
            let result = 'serve: {
                let bytes = match read_body(std::pin::pin!(body), limit).await {
                    Ok(bytes) => bytes,
                    Err(e) => break 'serve Err(e),
                };
                // Ready before the typed request exists.
                if let Err(e) = std::future::poll_fn(|cx| inner.poll_ready(cx)).await {
                    break 'serve Err(e);
                }
                let chat = match parse_chat_request(&bytes) {
                    Ok(chat) => chat,
                    Err(e) => break 'serve Err(e),
                };
                inner
                    .call(Request::from_parts(parts, chat))
                    .await
                    .map(|res| res.map(GatewayBody::inner))
            };
            Ok(answer(result, &id))
        })
    }
}

/// The response for `result`, errors in the envelope, with the generation id header.
fn answer<RB>(
    result: Result<Response<GatewayBody<RB>>, Error>,
    id: &GenerationId,
) -> Response<GatewayBody<RB>> {
    let mut res = result.unwrap_or_else(|e| {
        tracing::debug!(status = e.status().as_u16(), error = %e, "request failed");
        e.into_response().map(GatewayBody::full)
    });
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(GENERATION_ID_NAME, v);
    }
    res
}

/// A 413 when the request's `content-length` is over `limit`.
pub(crate) fn check_declared_length<B>(req: &Request<B>, limit: usize) -> Result<(), Error> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::payload_too_large(limit));
    }
    Ok(())
}

/// Reads a body up to `limit` bytes (413 beyond).
pub(crate) async fn read_body<B>(body: Pin<&mut B>, limit: usize) -> Result<Bytes, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match crate::body::collect_limited(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(CollectError::TooLarge) => Err(Error::payload_too_large(limit)),
        Err(CollectError::Body(e)) => Err(Error::from_request_body(e)),
    }
}

/// Reads and parses a request body into a typed request, keeping head and extensions.
pub async fn decode_request<B>(req: Request<B>, limit: usize) -> Result<Request<ChatRequest>, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    check_declared_length(&req, limit)?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(std::pin::pin!(body), limit).await?;
    let chat = parse_chat_request(&bytes)?;
    Ok(Request::from_parts(parts, chat))
}

/// Parses and validates a request body. Never panics, whatever the bytes; the error names the
/// field that is wrong.
pub fn parse_chat_request(bytes: &[u8]) -> Result<ChatRequest, Error> {
    // The common case parses once, without path tracking; only a failure is parsed again
    // with `serde_path_to_error` to name the field.
    // Validating UTF-8 once up front is cheaper than per string inside the parser.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(Error::invalid_request(
            "invalid request body: not UTF-8 text",
            None,
        ));
    };
    let chat: ChatRequest = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(first) => return Err(describe_parse_error(bytes, first)),
    };
    chat.validate()?;
    Ok(chat)
}

fn describe_parse_error(bytes: &[u8], first: serde_json::Error) -> Error {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let err = match serde_path_to_error::deserialize::<_, ChatRequest>(&mut de) {
        Ok(_) => return Error::invalid_request(format!("invalid request body: {first}"), None),
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    if path == "." || path == "?" || path.is_empty() {
        let field = missing_field(&inner.to_string());
        Error::invalid_request(format!("invalid request body: {inner}"), field)
    } else {
        Error::invalid_request(
            format!("invalid request body: `{path}`: {inner}"),
            Some(path),
        )
    }
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;
    use tower::{service_fn, ServiceExt};

    async fn call(body: &'static str, limit: usize) -> (StatusCode, serde_json::Value, bool) {
        let svc = DecodeLayer::new().max_body_bytes(limit).layer(service_fn(
            |req: Request<ChatRequest>| async move {
                Ok::<_, Error>(Response::new(Full::new(Bytes::from(req.into_body().model))))
            },
        ));
        let res = svc
            .oneshot(Request::new(Full::new(Bytes::from_static(body.as_bytes()))))
            .await
            .unwrap();
        let status = res.status();
        let has_id = res
            .headers()
            .get(GENERATION_ID_HEADER)
            .is_some_and(|v| v.to_str().unwrap().starts_with("gen-"));
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into(),
        ));
        (status, json, has_id)
    }

    #[tokio::test]
    async fn good_request_reaches_inner() {
        let (s, body, id) = call(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            1024,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, "m");
        assert!(id);
    }

    #[tokio::test]
    async fn bad_inputs_name_the_field() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("{", "EOF", None),
            ("", "EOF", None),
            ("[]", "invalid type", None),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                "missing field `model`",
                Some("model"),
            ),
            (
                r#"{"model":"m"}"#,
                "missing field `messages`",
                Some("messages"),
            ),
            (r#"{"model":5,"messages":[]}"#, "model", Some("model")),
            (
                r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
                "messages[0].role",
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
                "messages[0].content",
                Some("messages[0].content"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}]} trailing"#,
                "trailing",
                None,
            ),
            (
                r#"{"model":"m","messages":[]}"#,
                "at least one message",
                Some("messages"),
            ),
        ];
        let long = "m".repeat(crate::chat::MAX_MODEL_ID_BYTES + 1);
        // Leaked: `call` takes a text that lives as long as the body.
        let long_model: &'static str =
            format!(r#"{{"model":"{long}","messages":[{{"role":"user","content":"x"}}]}}"#).leak();
        let long_models: &'static str = format!(
            r#"{{"model":"m","models":["a","{long}"],"messages":[{{"role":"user","content":"x"}}]}}"#
        )
        .leak();
        let longs = [
            (long_model, "at most 512 bytes", Some("model")),
            (long_models, "at most 512 bytes", Some("models[1]")),
        ];
        for (body, needle, param) in cases.iter().chain(&longs) {
            let (s, json, id) = call(body, 1 << 20).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
            assert!(id);
            let msg = json["error"]["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{body}: {msg}");
            assert_eq!(json["error"]["param"].as_str(), *param, "{body}: {msg}");
            assert_eq!(json["error"]["type"], "invalid_request_error");
        }
    }

    /// An inner service that is ready only once the gate opens (or fails when it is shut),
    /// and panics when called before it said it was ready.
    #[derive(Clone, Default)]
    struct Gated {
        gate: Arc<std::sync::Mutex<Gate>>,
        ready: bool,
    }

    /// Open (`Some(Ok)`), shut (`Some(Err)`) or not yet (`None`, and who waits).
    type Gate = (Option<Result<(), ()>>, Option<std::task::Waker>);

    impl Gated {
        fn set(&self, open: Result<(), ()>) {
            let mut g = self.gate.lock().unwrap();
            g.0 = Some(open);
            if let Some(w) = g.1.take() {
                w.wake();
            }
        }
    }

    impl Service<Request<ChatRequest>> for Gated {
        type Response = Response<Full<Bytes>>;
        type Error = Error;
        type Future = std::future::Ready<Result<Self::Response, Error>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
            let mut g = self.gate.lock().unwrap();
            match g.0 {
                Some(Ok(())) => {
                    self.ready = true;
                    Poll::Ready(Ok(()))
                }
                Some(Err(())) => Poll::Ready(Err(Error::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "the inner service is shut",
                ))),
                None => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }

        fn call(&mut self, req: Request<ChatRequest>) -> Self::Future {
            assert!(
                std::mem::take(&mut self.ready),
                "called before it was ready"
            );
            std::future::ready(Ok(Response::new(Full::new(Bytes::from(
                req.into_body().model,
            )))))
        }
    }

    #[tokio::test]
    async fn the_inner_service_is_called_once_ready_and_its_refusal_is_answered() {
        for open in [Ok(()), Err(())] {
            let gated = Gated::default();
            let svc = DecodeLayer::new().layer(gated.clone());
            let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
            let answer = tokio::spawn(
                svc.oneshot(Request::new(Full::new(Bytes::from_static(body.as_bytes())))),
            );
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert!(
                !answer.is_finished(),
                "answered before the inner service was ready"
            );
            gated.set(open);
            let res = answer.await.unwrap().unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            match open {
                Ok(()) => {
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(&bytes[..], b"m");
                }
                Err(()) => {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(json["error"]["message"], "the inner service is shut");
                }
            }
        }
    }

    /// A request with every field the gateway types, and some it does not.
    const FULL: &str = r#"{"model":"m","messages":[{"role":"system","content":"Be \"brief\"\n"},
        {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url",
         "image_url":{"url":"data:x"}}],"name":"ann"},
        {"role":"assistant","tool_calls":[{"id":"c1","type":"function",
         "function":{"name":"f","arguments":"{}"}}],"refusal":"no"},
        {"role":"tool","tool_call_id":"c1","content":"42","x_part":[1,{"a":null}]},
        {"role":"developer","content":"d","reasoning_content":"r"},
        {"role":"function","content":"f","name":"g"}],
      "stream":true,"stream_options":{"include_usage":true},"temperature":0.7,
      "top_p":0.5,"n":2,"stop":["\n"],"tools":[{"type":"function","function":{"name":"f"}}],
      "tool_choice":"auto","parallel_tool_calls":false,"response_format":{"type":"json_object"},
      "reasoning_effort":"low","user":"u-1","seed":-5,"logprobs":true,"top_logprobs":3,
      "presence_penalty":-0.5,"frequency_penalty":1e-3,"models":["a","b"],
      "provider":{"sort":"price"},"route":"fallback","max_completion_tokens":4294967295,
      "max_tokens":0,"top_k":5,"x_custom":{"b":1,"a":[true,"\u00e9"]},"":null}"#;

    #[test]
    fn every_field_is_read_and_written_back_but_the_gateways_own() {
        let r = parse_chat_request(FULL.as_bytes()).unwrap();
        assert_eq!(
            r.models.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert_eq!(r.route.as_deref(), Some("fallback"));
        assert_eq!(r.extra["top_k"], 5);
        // What goes upstream: every field as it came, but `models`, `provider` and `route`.
        let mut sent: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        let mut came: serde_json::Value = serde_json::from_str(FULL).unwrap();
        for own in ["models", "provider", "route"] {
            assert!(sent.as_object_mut().unwrap().remove(own).is_none(), "{own}");
            came.as_object_mut().unwrap().remove(own);
        }
        assert_eq!(sent, came);
        // And read again, the same request.
        let again: ChatRequest = serde_json::from_value(sent).unwrap();
        assert_eq!((again.messages, again.extra), (r.messages, r.extra));
    }

    #[test]
    fn what_serde_refuses_is_a_400() {
        for (text, param) in [
            (r#"{"model":"m","model":"n","messages":[]}"#, None),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (r#"{"model":"m"}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages[0]"),
            ),
            (
                r#"{"model":"m","messages":[],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[],"max_tokens":-1}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[],"max_tokens":4294967296}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
                Some("messages[0].role"),
            ),
            (r#"{"model":"\ud800","messages":[]}"#, None),
            (r#"[]"#, None),
        ] {
            let e = parse_chat_request(text.as_bytes()).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{text}");
            if let Some(p) = param {
                assert!(e.message().contains(p), "{text}: {}", e.message());
            }
        }
        // An escaped key or value is read as any JSON reader reads it.
        let r = parse_chat_request(
            br#"{"mod\u0065l":"m\u00e9","messages":[{"role":"us\u0065r","content":"\ta"}]}"#,
        )
        .unwrap();
        assert_eq!(r.model, "mé");
    }

    #[tokio::test]
    async fn too_large_is_413() {
        let (s, json, _) = call(
            r#"{"model":"m","messages":[{"role":"user","content":"a long message"}]}"#,
            16,
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["error"]["code"], 413);
    }
}
