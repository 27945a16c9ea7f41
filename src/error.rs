//! The one error type of the gateway, the OpenAI-compatible error envelope and the status mapping.
//!
//! Every failure inside the typed stack is an [`Error`]. It carries the HTTP status the client
//! will see, the envelope's `type` and message, *where* it came from ([`ErrorSource`]) and
//! *whether another attempt is safe* ([`Retry`]). Layers such as fallback decide on those two
//! facts, never on message text. [`Error::into_response`] is the single place that turns an
//! error into the JSON envelope:
//!
//! ```json
//! {"error": {"code": 429, "message": "…", "type": "rate_limit_exceeded", "param": null,
//!            "metadata": {"provider_name": "…", "raw": "…"}}}
//! ```
//!
//! `code` is always the HTTP status number, as OpenRouter sends it; a provider's own code
//! (`"context_length_exceeded"`) is `metadata.code`.
//!
//! [`Error::to_sse_event`] gives the same envelope as the one `data:` event that ends a stream
//! after the `200` has gone out.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// A boxed error, as used for opaque transport failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest upstream body excerpt kept in `metadata.raw`.
const RAW_LIMIT: usize = 2048;

/// Where an [`Error`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorSource {
    /// The client's request was unacceptable (bad JSON, unknown model, too large).
    Client,
    /// The gateway itself (configuration, an internal invariant).
    Gateway,
    /// Connecting to the provider failed: the request never left the gateway.
    Connect,
    /// The request was sent, then the connection failed or timed out before a full answer.
    Transport,
    /// The provider answered with an error status or an unusable body.
    Upstream,
}

/// Whether another attempt (at the same or another target) is safe after this error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// The provider never saw the request (connect refused, connect timeout, TLS failure):
    /// another attempt cannot double-bill.
    Safe,
    /// The provider saw the request and failed in a way worth retrying (429, 5xx, 529, a
    /// timeout waiting for the first byte). The failed attempt may still be billed.
    Retryable,
    /// The provider answered `200`, then the answer was unusable (not JSON, cut, an error
    /// inside it, a stream that failed before its first event). The provider may have billed
    /// it: another target may be tried, this one not again for this request.
    Elsewhere,
    /// Retrying cannot help (bad request, quota exhausted, unknown model).
    Never,
}

/// The gateway's error: what the client sees, where it came from, and whether a retry is safe.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    status: StatusCode,
    kind: Cow<'static, str>,
    message: String,
    param: Option<String>,
    code: Option<serde_json::Value>,
    source: ErrorSource,
    retry: Retry,
    retry_after: Option<Duration>,
    provider: Option<Arc<str>>,
    raw: Option<String>,
    should_retry: Option<bool>,
    /// What caused it, when another error did (a transport fault, a body that failed).
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error with this status, envelope `type` and message. Source `Gateway`, never retried.
    pub fn new(
        status: StatusCode,
        kind: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Error {
            inner: Box::new(Inner {
                status,
                kind: kind.into(),
                message: message.into(),
                param: None,
                code: None,
                source: ErrorSource::Gateway,
                retry: Retry::Never,
                retry_after: None,
                provider: None,
                raw: None,
                should_retry: None,
                cause: None,
            }),
        }
    }

    /// Sets what caused this error ([`source`](std::error::Error::source) returns it).
    pub fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        self.inner.cause = Some(Arc::from(cause.into()));
        self
    }

    /// 400: the request is invalid; `param` names the offending field when known.
    pub fn invalid_request(message: impl Into<String>, param: Option<String>) -> Self {
        Error::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
            .with_param(param)
            .with_source(ErrorSource::Client)
    }

    /// 404: no model of that id (not in the catalog, no alias, no `<provider>/…` pass-through).
    pub fn unknown_model(model: &str) -> Self {
        Error::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model `{model}` is not served by this gateway (not in the catalog, not an alias, and not `<provider>/<model>` for a configured provider)"),
        )
        .with_param(Some("model".into()))
        .with_source(ErrorSource::Client)
    }

    /// 413: the body is over the configured limit.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("request body is larger than the limit of {limit_bytes} bytes"),
        )
        .with_source(ErrorSource::Client)
    }

    /// Why a request body could not be read, as the client should hear it: the error a body
    /// wrapper of ours failed with (the `408` of an [`IdleTimeout`](crate::body::IdleTimeout)
    /// body, say), else a `400`.
    pub fn from_request_body(e: BoxError) -> Self {
        let e = match e.downcast::<Error>() {
            Ok(ours) => return *ours,
            Err(e) => e,
        };
        // Wrapped on the way (a router's body type boxes the error it carries).
        let mut cause = e.source();
        while let Some(c) = cause {
            if let Some(ours) = c.downcast_ref::<Error>() {
                return ours.clone();
            }
            cause = c.source();
        }
        Error::invalid_request(format!("cannot read the request body: {e}"), None).with_cause(e)
    }

    /// 500: an internal invariant does not hold (a layer is missing from the stack, …).
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// 502: the provider could not be reached or answered garbage.
    pub fn bad_gateway(message: impl Into<String>, source: ErrorSource, retry: Retry) -> Self {
        Error::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
            .with_source(source)
            .with_retry(retry)
    }

    /// 504: the provider did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>, source: ErrorSource, retry: Retry) -> Self {
        Error::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message)
            .with_source(source)
            .with_retry(retry)
    }

    /// The same error with `secrets` (and anything shaped like a key) scrubbed out of its
    /// message and raw excerpt: for an error that may carry text an upstream sent.
    pub fn redact(mut self, secrets: &Secrets) -> Self {
        self.inner.message = scrub(&self.inner.message, secrets);
        if let Some(raw) = self.inner.raw.take() {
            self.inner.raw = Some(scrub(&raw, secrets));
        }
        self
    }

    /// Sets the `param` (the offending field).
    pub fn with_param(mut self, param: Option<String>) -> Self {
        self.inner.param = param;
        self
    }

    /// Sets the provider's own `code`, when it gave one: the envelope's `metadata.code` (the
    /// envelope's `code` is always the HTTP status, as OpenRouter sends it).
    pub fn with_code(mut self, code: Option<serde_json::Value>) -> Self {
        self.inner.code = code;
        self
    }

    /// Sets where the error came from.
    pub fn with_source(mut self, source: ErrorSource) -> Self {
        self.inner.source = source;
        self
    }

    /// Sets whether another attempt is safe.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.inner.retry = retry;
        self
    }

    /// Sets the wait before a retry (sent as `Retry-After`, whole seconds, at least 1).
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.inner.retry_after = wait;
        self
    }

    /// Names the configured provider the error came from (`metadata.provider_name`).
    pub fn with_provider(mut self, provider: Arc<str>) -> Self {
        self.inner.provider = Some(provider);
        self
    }

    /// Sets `metadata.raw`, truncated to a bounded excerpt. Callers scrub secrets first.
    pub fn with_raw(mut self, raw: Option<String>) -> Self {
        self.inner.raw = raw.map(|mut r| {
            truncate_utf8(&mut r, RAW_LIMIT);
            r
        });
        self
    }

    /// Tells the client whether to retry (`x-should-retry`); the fallback layer sets `false`
    /// once it has itself retried or failed over.
    pub fn with_should_retry(mut self, should: Option<bool>) -> Self {
        self.inner.should_retry = should;
        self
    }

    /// The `x-should-retry` advice, if any.
    pub fn should_retry(&self) -> Option<bool> {
        self.inner.should_retry
    }

    /// Reads back the error event [`to_sse_event`](Self::to_sse_event) writes (`data:
    /// {"error":{…}}`), as an error of the same status, type, message and provider; whether a
    /// retry may help follows the status. `None` when the event is not an error event.
    pub fn from_sse_event(event: &[u8]) -> Option<Error> {
        #[derive(serde::Deserialize)]
        struct Env {
            error: Fields,
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            #[serde(default)]
            code: serde_json::Value,
            #[serde(default)]
            message: String,
            #[serde(default, rename = "type")]
            kind: Option<String>,
            #[serde(default)]
            metadata: Option<Meta>,
        }
        #[derive(serde::Deserialize)]
        struct Meta {
            #[serde(default)]
            provider_name: Option<String>,
            #[serde(default)]
            raw: Option<String>,
        }
        let json = event.strip_prefix(b"data:")?;
        let env: Env = serde_json::from_slice(json.trim_ascii()).ok()?;
        let e = env.error;
        let status = e
            .code
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        let kind = e.kind.unwrap_or_else(|| default_kind(status).to_owned());
        let retry = if is_retryable_status(status) {
            Retry::Retryable
        } else {
            Retry::Never
        };
        let mut err = Error::new(status, kind, e.message)
            .with_source(ErrorSource::Upstream)
            .with_retry(retry);
        if let Some(m) = e.metadata {
            if let Some(p) = m.provider_name {
                err = err.with_provider(Arc::from(p));
            }
            err = err.with_raw(m.raw);
        }
        Some(err)
    }

    /// The HTTP status the client sees.
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    /// The envelope's `type`.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The offending field, if known.
    pub fn param(&self) -> Option<&str> {
        self.inner.param.as_deref()
    }

    /// Where the error came from.
    pub fn source_kind(&self) -> ErrorSource {
        self.inner.source
    }

    /// Whether another attempt is safe.
    pub fn retry(&self) -> Retry {
        self.inner.retry
    }

    /// True when another attempt may succeed ([`Retry::Safe`] or [`Retry::Retryable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.inner.retry,
            Retry::Safe | Retry::Retryable | Retry::Elsewhere
        )
    }

    /// The wait the provider asked for before a retry, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The configured provider the error came from, if any.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// The scrubbed excerpt of the provider's body, if any.
    pub fn raw(&self) -> Option<&str> {
        self.inner.raw.as_deref()
    }

    /// The envelope as compact JSON bytes.
    pub fn to_json(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(256).writer();
        // Serialising plain strings and numbers into memory cannot fail.
        let _ = serde_json::to_writer(&mut buf, &self.envelope());
        buf.into_inner().freeze()
    }

    /// The envelope as the one SSE event that ends a stream: `data: {"error":{…}}\n\n`.
    pub fn to_sse_event(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_slice(b"data: ");
        let mut w = buf.writer();
        let _ = serde_json::to_writer(&mut w, &self.envelope());
        let mut buf = w.into_inner();
        buf.put_slice(b"\n\n");
        buf.freeze()
    }

    /// The envelope as OpenRouter's error chunk, the one event that ends a Chat Completions
    /// stream after its `200`: `data: {"error":{…},"id":…,"object":"chat.completion.chunk",
    /// "created":…,"model":…,"provider":…,"choices":[{"index":0,"delta":{"content":""},
    /// "finish_reason":"error"}]}`. `error` comes first, so a reader that only looks for
    /// [`to_sse_event`](Self::to_sse_event)'s prefix still knows it.
    pub fn to_sse_chunk(&self, id: &str, model: &str, created: u64) -> Bytes {
        #[derive(Serialize)]
        struct Chunk<'a> {
            error: Body<'a>,
            id: &'a str,
            object: &'static str,
            created: u64,
            model: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            provider: Option<&'a str>,
            choices: [Choice; 1],
        }
        #[derive(Serialize)]
        struct Choice {
            index: u32,
            delta: Delta,
            finish_reason: &'static str,
            native_finish_reason: Option<()>,
        }
        #[derive(Serialize)]
        struct Delta {
            content: &'static str,
        }
        let chunk = Chunk {
            error: self.envelope().error,
            id,
            object: "chat.completion.chunk",
            created,
            model,
            provider: self.inner.provider.as_deref(),
            choices: [Choice {
                index: 0,
                delta: Delta { content: "" },
                finish_reason: "error",
                native_finish_reason: None,
            }],
        };
        let mut buf = BytesMut::with_capacity(384);
        buf.put_slice(b"data: ");
        let mut w = buf.writer();
        let _ = serde_json::to_writer(&mut w, &chunk);
        let mut buf = w.into_inner();
        buf.put_slice(b"\n\n");
        buf.freeze()
    }

    /// The JSON error response: real status, `content-type: application/json`, `Retry-After`
    /// in whole seconds (at least 1) when a wait is known.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = self.to_json();
        self.response_with(self.inner.status, body)
    }

    /// A JSON response of this error's headers (`Retry-After`, `x-should-retry`) with another
    /// status and body: a dialect's own envelope.
    pub(crate) fn response_with(&self, status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(body));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(wait) = self.inner.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        }
        if let Some(should) = self.inner.should_retry {
            headers.insert(
                "x-should-retry",
                HeaderValue::from_static(if should { "true" } else { "false" }),
            );
        }
        res
    }

    fn envelope(&self) -> Envelope<'_> {
        let i = &*self.inner;
        let metadata = if i.provider.is_some() || i.raw.is_some() || i.code.is_some() {
            Some(Metadata {
                provider_name: i.provider.as_deref(),
                raw: i.raw.as_deref(),
                code: i.code.as_ref(),
            })
        } else {
            None
        };
        Envelope {
            error: Body {
                code: i.status.as_u16(),
                message: &i.message,
                kind: &i.kind,
                param: i.param.as_deref(),
                metadata,
            },
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("status", &self.inner.status)
            .field("type", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("source", &self.inner.source)
            .field("retry", &self.inner.retry)
            .field("provider", &self.inner.provider)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.inner.status.as_u16(),
            self.inner.kind,
            self.inner.message
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    /// The HTTP status, as OpenRouter sends it.
    code: u16,
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
    /// The provider's own `code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a serde_json::Value>,
}

/// Whether an error status is worth another attempt (the SDKs' rule: 408, 409, 429
/// and every 5xx, which includes 529).
pub fn is_retryable_status(upstream: StatusCode) -> bool {
    matches!(upstream.as_u16(), 408 | 409 | 429)
        || upstream.is_server_error()
        || upstream.as_u16() == 529
}

pub(crate) fn default_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "insufficient_credits",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_exceeded",
        503 => "service_unavailable",
        504 => "timeout_error",
        _ => "upstream_error",
    }
}

/// The `Retry-After` value for a wait: whole seconds, rounded up, never 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    secs.max(1)
}

/// What a provider must never see leave the gateway: its key, the values of its configured
/// headers, the credentials in its base URL. Text copied from an upstream answer (an error's
/// message, its raw body, an error event) is [scrubbed](scrub) of them wherever it goes: to the
/// client, the log, the records. Cheap to clone; its `Debug` shows how many, never what.
#[derive(Clone, Default)]
pub struct Secrets(Option<Arc<[Box<str>]>>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({})", self.values().len())
    }
}

impl Secrets {
    /// No secrets.
    pub fn none() -> Self {
        Secrets(None)
    }

    /// These values (empty ones are left out); the longest are redacted first, so a secret
    /// that holds another is not left half shown.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<Box<str>> = values
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(String::into_boxed_str)
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        if v.is_empty() {
            return Secrets(None);
        }
        Secrets(Some(v.into()))
    }

    fn values(&self) -> &[Box<str>] {
        self.0.as_deref().unwrap_or_default()
    }
}

/// `url` without its user and password (`redis://…@host:port`), for messages and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Removes secrets from text that may be shown to a client or logged: each of `secrets`
/// wherever it appears, and anything shaped like a common API key or bearer token.
pub fn scrub(text: &str, secrets: &Secrets) -> String {
    let mut s = text.to_owned();
    for secret in secrets.values() {
        if s.contains(&**secret) {
            s = s.replace(&**secret, "[REDACTED]");
        }
    }
    for prefix in ["sk-", "sk_", "AIza", "Bearer ", "bearer "] {
        s = redact_after(&s, prefix);
    }
    truncate_utf8(&mut s, RAW_LIMIT);
    s
}

fn redact_after(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(prefix) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + prefix.len()..];
        let token_len = after
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .map(|(i, _)| i)
            .unwrap_or(after.len());
        if token_len >= 8 {
            out.push_str(prefix);
            out.push_str("[REDACTED]");
        } else {
            out.push_str(&rest[pos..pos + prefix.len() + token_len]);
        }
        rest = &after[token_len..];
    }
    out.push_str(rest);
    out
}

fn truncate_utf8(s: &mut String, limit: usize) {
    if s.len() > limit {
        let mut cut = limit;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_ceiling_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(300)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(7)), 7);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn envelope_shape() {
        let e = Error::invalid_request(
            "messages[0].role: unknown variant",
            Some("messages[0].role".into()),
        );
        let json: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(json["error"]["code"], 400);
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["param"], "messages[0].role");
        assert!(json["error"].get("metadata").is_none());
        let sse = e.to_sse_event();
        assert!(sse.starts_with(b"data: {\"error\":"));
        assert!(sse.ends_with(b"}\n\n"));
    }

    #[test]
    fn configured_secrets_are_scrubbed_whatever_their_shape() {
        let secrets = Secrets::new([
            "hunter2-is-my-password".to_owned(),
            "x-internal-9f8e7d6c".to_owned(),
            String::new(),
        ]);
        let text = "echo: {\"headers\":{\"x-team-token\":\"x-internal-9f8e7d6c\",\"authorization\":\"Basic hunter2-is-my-password\"}}";
        let clean = scrub(text, &secrets);
        assert!(
            !clean.contains("9f8e7d6c") && !clean.contains("hunter2"),
            "{clean}"
        );
        assert_eq!(format!("{secrets:?}"), "Secrets(2)");
        let e = Error::bad_gateway(
            "hunter2-is-my-password",
            ErrorSource::Upstream,
            Retry::Never,
        )
        .with_raw(Some(text.to_owned()))
        .redact(&secrets);
        assert_eq!(e.message(), "[REDACTED]");
        assert!(!e.raw().unwrap().contains("9f8e7d6c"));
    }

    #[test]
    fn the_cause_is_the_source() {
        use std::error::Error as _;
        let io = std::io::Error::other("connection reset");
        let e = Error::bad_gateway(
            "up: reading failed",
            ErrorSource::Transport,
            Retry::Retryable,
        )
        .with_cause(io);
        assert_eq!(e.source().unwrap().to_string(), "connection reset");
        assert!(Error::internal("x").source().is_none());
        // A request body's failure, wrapped on the way, is the 400's cause.
        let wrapped: BoxError = Box::new(std::io::Error::other("peer went away"));
        let e = Error::from_request_body(wrapped);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.source().unwrap().to_string(), "peer went away");
    }

    #[test]
    fn scrub_keeps_short_words() {
        assert_eq!(scrub("ask-me", &Secrets::none()), "ask-me");
        assert_eq!(
            scrub("key sk-abcdefghijklmnop end", &Secrets::none()),
            "key sk-[REDACTED] end"
        );
        assert_eq!(
            scrub("Bearer abc.def-ghi_jkl", &Secrets::none()),
            "Bearer [REDACTED]"
        );
    }
}
