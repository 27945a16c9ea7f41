//! Errors in Anthropic's envelope: `{"type":"error","error":{"type":…,"message":…}}`.

use bytes::{BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::Error;

/// Anthropic's status for `overloaded_error` (the gateway's own surface says 503).
const OVERLOADED: u16 = 529;

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// The status and Anthropic error type a client of the Messages API gets for `err`. An
/// upstream's `overloaded_error` keeps Anthropic's own 529.
pub(crate) fn status_and_type(err: &Error) -> (StatusCode, &'static str) {
    if err.kind() == "overloaded_error" {
        return (
            StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
        );
    }
    let status = err.status();
    (status, error_type(status))
}

/// Anthropic's error type for a status.
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        OVERLOADED => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The JSON body of `err` in Anthropic's envelope.
fn envelope<'a>(err: &'a Error, kind: &'static str) -> Envelope<'a> {
    Envelope {
        kind: "error",
        error: Body {
            kind,
            message: err.message(),
        },
    }
}

/// `err` as a Messages API error response: Anthropic's envelope, status and error type, and
/// the error's `Retry-After`.
pub(crate) fn error_response(err: &Error) -> Response<Full<Bytes>> {
    let (status, kind) = status_and_type(err);
    let body = serde_json::to_vec(&envelope(err, kind)).unwrap_or_default();
    let mut res = err.response_with(status, Bytes::from(body));
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    res
}

/// `err` as the `event: error` that ends a stream whose `200` has gone out.
pub(crate) fn error_event(err: &Error) -> Bytes {
    let (_, kind) = status_and_type(err);
    let mut buf = BytesMut::with_capacity(128 + err.message().len());
    buf.put_slice(b"event: error\ndata: ");
    let mut w = buf.writer();
    let _ = serde_json::to_writer(&mut w, &envelope(err, kind));
    let mut buf = w.into_inner();
    buf.put_slice(b"\n\n");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_status_has_anthropics_type() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "billing_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (405, "invalid_request_error"),
            (408, "timeout_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "api_error"),
            (504, "timeout_error"),
        ] {
            let err = Error::new(StatusCode::from_u16(status).unwrap(), "whatever", "why");
            let res = error_response(&err);
            assert_eq!(res.status().as_u16(), status);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"type":"error","error":{"type":kind,"message":"why"}}),
                "{status}"
            );
        }
    }

    #[test]
    fn an_upstream_overload_is_a_529_and_a_retry_after_is_kept() {
        let err = Error::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", "busy")
            .with_retry_after(Some(std::time::Duration::from_millis(1500)));
        let res = error_response(&err);
        assert_eq!(res.status().as_u16(), 529);
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "2");
        let ev = error_event(&err);
        assert_eq!(
            &ev[..],
            &b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n"[..]
        );
    }
}
