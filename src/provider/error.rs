//! What a provider's error answer says: its envelope read (OpenAI's, Anthropic's, Gemini's, a
//! bare message), its status mapped for the client, its `Retry-After` and whether another
//! attempt may help.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, RETRY_AFTER};
use http::StatusCode;

use crate::error::{default_kind, is_retryable_status, scrub, ErrorSource, Retry, Secrets};
use crate::Error;

/// The error a provider's error answer becomes: status mapped for the client (see
/// [`client_status`]), message and `type` taken from the provider's envelope when it has
/// one, the body kept (scrubbed, truncated) as `metadata.raw`.
pub fn upstream_error(
    upstream_status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    provider: &Arc<str>,
    secrets: &Secrets,
) -> Error {
    let parsed = parse_upstream_error(body);
    // AWS names its error in a header (`ThrottlingException:http://…`); a model not ready
    // comes as a 429 but is a service unavailable for now.
    let aws = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split(':').next())
        .filter(|t| !t.is_empty());
    let upstream_status = match aws {
        Some("ModelNotReadyException") => StatusCode::SERVICE_UNAVAILABLE,
        _ => upstream_status,
    };
    let status = client_status(upstream_status);
    let kind: Cow<'static, str> = match (&parsed.kind, aws) {
        (Some(k), _) => Cow::Owned(k.clone()),
        (None, Some(t)) => Cow::Owned(snake_case(t)),
        (None, None) => Cow::Borrowed(default_kind(status)),
    };
    let message = match parsed.message {
        Some(m) if !m.is_empty() => format!("{provider}: {}", scrub(&m, secrets)),
        _ => format!("{provider} answered HTTP {}", upstream_status.as_u16()),
    };
    let not_retryable = parsed.quota_exhausted;
    let retry = if not_retryable {
        Retry::Never
    } else if is_retryable_status(upstream_status) {
        Retry::Retryable
    } else {
        Retry::Never
    };
    let raw = scrub(&String::from_utf8_lossy(body), secrets);
    Error::new(status, kind, message)
        .with_source(ErrorSource::Upstream)
        .with_retry(retry)
        .with_provider(provider.clone())
        .with_raw(Some(raw))
        .with_param(parsed.param)
        .with_code(parsed.code)
        .with_retry_after(retry_after_from(headers).or(parsed.retry_delay))
}

/// `ThrottlingException` as `throttling_exception`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The status a client sees for a provider's error status.
///
/// Client errors the provider found in the request pass through (400, 404, 409, 413, 422);
/// 429 stays 429; 529 (Anthropic "overloaded") and 503 become 503; 408 and 504 become 504
/// (an upstream timeout is never 408 on our surface); 401, 403 and every other status become
/// 502, since the provider refusing *the gateway's* credentials is not the client's fault.
pub fn client_status(upstream: StatusCode) -> StatusCode {
    match upstream.as_u16() {
        400 | 404 | 409 | 413 | 422 => upstream,
        429 => StatusCode::TOO_MANY_REQUESTS,
        503 | 529 => StatusCode::SERVICE_UNAVAILABLE,
        408 | 504 => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Reads `retry-after-ms`, then `retry-after` (seconds, fractional allowed, or an HTTP date).
pub fn retry_after_from(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
        return None;
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[derive(Default)]
struct ParsedUpstreamError {
    message: Option<String>,
    kind: Option<String>,
    param: Option<String>,
    code: Option<serde_json::Value>,
    quota_exhausted: bool,
    /// Gemini's `RetryInfo.retryDelay`.
    retry_delay: Option<Duration>,
}

/// Reads the common error envelopes: OpenAI `{"error":{message,type,param,code}}`, Anthropic
/// `{"type":"error","error":{type,message}}`, Gemini `{"error":{code,message,status}}` (also
/// inside a one-element array), and a bare `{"message": …}`.
fn parse_upstream_error(body: &[u8]) -> ParsedUpstreamError {
    let mut out = ParsedUpstreamError::default();
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return out;
    };
    if let serde_json::Value::Array(items) = &mut value {
        if items.is_empty() {
            return out;
        }
        value = items.swap_remove(0);
    }
    let err = match value.get("error") {
        Some(e @ serde_json::Value::Object(_)) => e,
        Some(serde_json::Value::String(s)) => {
            out.message = Some(s.clone());
            return out;
        }
        _ => &value,
    };
    let text = |k: &str| err.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    out.message = text("message");
    out.kind = text("type").or_else(|| text("status").map(|s| s.to_ascii_lowercase()));
    out.param = text("param");
    if let Some(code @ serde_json::Value::String(_)) = err.get("code") {
        out.code = Some(code.clone());
    }
    let code_str = err.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let details_code = err
        .get("details")
        .and_then(|d| d.get("error_code"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    out.quota_exhausted = matches!(
        code_str,
        "insufficient_quota" | "billing_hard_limit_reached"
    ) || out.kind.as_deref() == Some("insufficient_quota")
        || details_code == "enforced_spend_limit_reached";
    // Gemini: `details` holds typed entries; `RetryInfo` says how long to wait, and a per-day
    // `QuotaFailure` is not worth retrying today.
    for d in err
        .get("details")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
    {
        let kind = d.get("@type").and_then(|t| t.as_str()).unwrap_or("");
        if kind.ends_with("google.rpc.RetryInfo") {
            out.retry_delay = d
                .get("retryDelay")
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_suffix('s'))
                .and_then(|r| r.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .map(Duration::from_secs_f64);
        } else if kind.ends_with("google.rpc.QuotaFailure") {
            let per_day = d
                .get("violations")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|v| v.get("quotaId").and_then(|q| q.as_str()))
                .any(|q| q.contains("PerDay"));
            out.quota_exhausted |= per_day;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::retry_after_secs;
    use http::header::HeaderValue;

    #[test]
    fn retry_after_header_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2.5"));
        assert_eq!(retry_after_from(&h), Some(Duration::from_millis(2500)));
        h.insert("retry-after-ms", HeaderValue::from_static("120"));
        assert_eq!(retry_after_from(&h), Some(Duration::from_millis(120)));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after_from(&h), None);
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_from(&h), Some(Duration::ZERO));
    }

    #[test]
    fn status_mapping() {
        let m = |s: u16| client_status(StatusCode::from_u16(s).unwrap()).as_u16();
        assert_eq!(m(400), 400);
        assert_eq!(m(401), 502);
        assert_eq!(m(404), 404);
        assert_eq!(m(408), 504);
        assert_eq!(m(429), 429);
        assert_eq!(m(500), 502);
        assert_eq!(m(503), 503);
        assert_eq!(m(529), 503);
        assert_eq!(m(504), 504);
    }

    #[test]
    fn upstream_openai_envelope_is_read_and_scrubbed() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-proj-abcdefghijkl","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let provider: Arc<str> = Arc::from("openai");
        let e = upstream_error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            body,
            &provider,
            &Secrets::new(["sk-proj-abcdefghijkl".to_owned()]),
        );
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(e.kind(), "invalid_request_error");
        assert!(!e.message().contains("abcdefghijkl"), "{}", e.message());
        assert!(!e.raw().unwrap().contains("abcdefghijkl"));
        assert_eq!(e.retry(), Retry::Never);
        let json: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(json["error"]["metadata"]["provider_name"], "openai");
        assert_eq!(
            json["error"]["code"], 502,
            "the status, as OpenRouter sends it"
        );
        assert_eq!(json["error"]["metadata"]["code"], "invalid_api_key");
    }

    #[test]
    fn quota_429_is_not_retryable_but_rate_limit_is() {
        let provider: Arc<str> = Arc::from("p");
        let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let e = upstream_error(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            quota,
            &provider,
            &Secrets::none(),
        );
        assert_eq!(e.retry(), Retry::Never);
        let limited =
            br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
        let e = upstream_error(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            limited,
            &provider,
            &Secrets::none(),
        );
        assert_eq!(e.retry(), Retry::Retryable);
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn anthropic_and_gemini_error_bodies() {
        let p: Arc<str> = Arc::from("p");
        let up = |status: u16, body: &[u8]| {
            upstream_error(
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                body,
                &p,
                &Secrets::none(),
            )
        };
        let e = up(529, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.kind(), "overloaded_error");
        assert_eq!(e.retry(), Retry::Retryable);
        let e = up(429, br#"{"type":"error","error":{"type":"rate_limit_error","message":"spend","details":{"error_code":"enforced_spend_limit_reached"}}}"#);
        assert_eq!(e.retry(), Retry::Never, "spend limit: not retryable");
        let e = up(429, br#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37.2s"}]}}"#);
        assert_eq!(e.retry(), Retry::Retryable);
        assert_eq!(e.kind(), "resource_exhausted");
        assert_eq!(
            e.retry_after().map(retry_after_secs),
            Some(38),
            "RetryInfo, rounded up"
        );
        let e = up(429, br#"[{"error":{"code":429,"message":"daily","status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}]"#);
        assert_eq!(e.retry(), Retry::Never, "per-day quota: not retryable");
        let e = up(400, br#"{"error":{"message":"The response was filtered","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let json: serde_json::Value = serde_json::from_slice(&e.to_sse_event()[6..]).unwrap();
        assert_eq!(json["error"]["code"], 400);
        assert_eq!(
            json["error"]["metadata"]["code"], "content_filter",
            "Azure's code kept"
        );
        assert_eq!(json["error"]["param"], "prompt");
    }
}
