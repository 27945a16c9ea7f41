//! `GET /v1/key` and the key management API (`/v1/keys[/{id}]`, admin key only).

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Map, Value};

use super::config::{parse_limit_reset, parse_rfc3339};
use crate::auth::{now_unix, KeyPatch, KeyRecord, LimitReset, ManagedKeyStore, NewKey, Principal};
use crate::error::BoxError;
use crate::usage::KeySpend;
use crate::Error;

/// Largest management request body.
const MAX_BODY: usize = 64 << 10;

fn time_text(t: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

/// A key as the API shows it: no plaintext, no digest.
pub(crate) fn key_json(r: &KeyRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "label": r.label,
        "source": r.source,
        "disabled": r.disabled,
        "created_at": if r.created_at > 0 { time_text(r.created_at) } else { Value::Null },
        "expires_at": r.expires_at.map_or(Value::Null, time_text),
        "limit": r.limit,
        "limit_reset": r.limit_reset,
        "requests_per_minute": r.rate_limits.requests_per_minute,
        "requests_per_day": r.rate_limits.requests_per_day,
        "tokens_per_minute": r.rate_limits.tokens_per_minute,
        "models": r.models,
    })
}

fn ok(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(v.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// `GET /v1/key`: the calling key, with its spend (USD) in all and in the current UTC day,
/// week and month.
pub(crate) fn key_info(p: &Principal, spend: &KeySpend) -> Response<Full<Bytes>> {
    let now = now_unix();
    let in_window = spend.spent(p.limit_reset, now);
    ok(
        StatusCode::OK,
        &json!({"data": {
            "name": p.name,
            "label": p.label,
            "limit": p.limit,
            "limit_reset": p.limit_reset,
            "usage": spend.total,
            "usage_daily": spend.spent(Some(LimitReset::Daily), now),
            "usage_weekly": spend.spent(Some(LimitReset::Weekly), now),
            "usage_monthly": spend.spent(Some(LimitReset::Monthly), now),
            "limit_remaining": p.limit.map(|l| (l - in_window).max(0.0)),
            "expires_at": p.expires_at.map_or(Value::Null, time_text),
            "rate_limit": {
                "requests_per_minute": p.rate_limits.requests_per_minute,
                "requests_per_day": p.rate_limits.requests_per_day,
                "tokens_per_minute": p.rate_limits.tokens_per_minute,
            },
            "models": p.models,
        }}),
    )
}

/// Reads a JSON object body (at most 64 KiB).
async fn read_object<B>(body: B) -> Result<Map<String, Value>, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(Error::payload_too_large(MAX_BODY));
            }
            return Err(Error::from_request_body(e));
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::invalid_request(
            "the body must be a JSON object",
            None,
        )),
        Err(e) => Err(Error::invalid_request(
            format!("the body is not valid JSON: {e}"),
            None,
        )),
    }
}

fn bad(field: &str, what: &str) -> Error {
    Error::invalid_request(format!("`{field}` must be {what}"), Some(field.to_owned()))
}

/// `null` → `Some(None)`; a value → `Some(Some(v))`.
fn nullable<T>(
    field: &str,
    v: &Value,
    what: &str,
    f: impl FnOnce(&Value) -> Option<T>,
) -> Result<Option<T>, Error> {
    if v.is_null() {
        return Ok(None);
    }
    f(v).map(Some).ok_or_else(|| bad(field, what))
}

fn rate(field: &str, v: &Value) -> Result<Option<u32>, Error> {
    nullable(
        field,
        v,
        "a whole number from 1 to 4294967295, or null",
        |v| {
            v.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
        },
    )
}

/// The fields of a create or update request; `allow` names those this route accepts.
fn parse_fields(body: &Map<String, Value>, allow: &[&str]) -> Result<KeyPatch, Error> {
    let mut p = KeyPatch::default();
    for (k, v) in body {
        if !allow.contains(&k.as_str()) {
            return Err(Error::invalid_request(
                format!("unknown field `{k}`; expected one of: {}", allow.join(", ")),
                Some(k.clone()),
            ));
        }
        match k.as_str() {
            "name" => p.name = Some(v.as_str().ok_or_else(|| bad(k, "a string"))?.to_owned()),
            "disabled" => p.disabled = Some(v.as_bool().ok_or_else(|| bad(k, "true or false"))?),
            "limit" => {
                p.limit = Some(nullable(
                    k,
                    v,
                    "a non-negative number of USD, or null",
                    |v| v.as_f64().filter(|l| l.is_finite() && *l >= 0.0),
                )?)
            }
            "limit_reset" => {
                p.limit_reset = Some(match v {
                    Value::Null => None,
                    Value::String(s) => parse_limit_reset(s)
                        .map_err(|m| Error::invalid_request(m, Some("limit_reset".into())))?,
                    _ => return Err(bad(k, "daily, weekly, monthly or none")),
                })
            }
            "expires_at" => {
                p.expires_at = Some(match v {
                    Value::Null => None,
                    Value::Number(n) => Some(
                        n.as_i64()
                            .ok_or_else(|| bad(k, "RFC 3339 text or Unix seconds"))?,
                    ),
                    Value::String(s) => Some(
                        parse_rfc3339(s)
                            .map_err(|m| Error::invalid_request(m, Some("expires_at".into())))?,
                    ),
                    _ => return Err(bad(k, "RFC 3339 text or Unix seconds")),
                })
            }
            "requests_per_minute" => p.requests_per_minute = Some(rate(k, v)?),
            "requests_per_day" => p.requests_per_day = Some(rate(k, v)?),
            "tokens_per_minute" => p.tokens_per_minute = Some(rate(k, v)?),
            "models" => {
                p.models = Some(nullable(k, v, "a list of model ids, or null", |v| {
                    v.as_array()?
                        .iter()
                        .map(|m| m.as_str().map(str::to_owned))
                        .collect()
                })?)
            }
            _ => unreachable!("checked against `allow`"),
        }
    }
    Ok(p)
}

const CREATE_FIELDS: &[&str] = &[
    "name",
    "limit",
    "limit_reset",
    "expires_at",
    "requests_per_minute",
    "requests_per_day",
    "tokens_per_minute",
    "models",
];

const UPDATE_FIELDS: &[&str] = &[
    "name",
    "disabled",
    "limit",
    "limit_reset",
    "expires_at",
    "requests_per_minute",
    "requests_per_day",
    "tokens_per_minute",
    "models",
];

/// `/v1/keys[/{id}]` after the admin key was checked. `rest` is what follows `/v1/keys`.
pub(crate) async fn manage<B>(
    store: &dyn ManagedKeyStore,
    method: Method,
    rest: &str,
    body: B,
) -> Result<Response<Full<Bytes>>, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let id = rest.strip_prefix('/').filter(|id| !id.is_empty());
    let allow = match id {
        None => "GET, POST",
        Some(_) => "GET, PATCH, DELETE",
    };
    match (id, &method) {
        (None, &Method::GET) => {
            let keys = store.list().await.map_err(|e| e.to_error())?;
            let data: Vec<Value> = keys.iter().map(|p| key_json(p)).collect();
            Ok(ok(StatusCode::OK, &json!({ "data": data })))
        }
        (None, &Method::POST) => {
            let body = read_object(body).await?;
            let fields = parse_fields(&body, CREATE_FIELDS)?;
            let name = fields
                .name
                .clone()
                .ok_or_else(|| Error::invalid_request("`name` is required", Some("name".into())))?;
            if let Some(Some(t)) = fields.expires_at {
                if t <= now_unix() {
                    return Err(Error::invalid_request(
                        "`expires_at` is in the past",
                        Some("expires_at".into()),
                    ));
                }
            }
            let new = NewKey {
                name,
                limit: fields.limit.flatten(),
                limit_reset: fields.limit_reset.flatten(),
                expires_at: fields.expires_at.flatten(),
                rate_limits: crate::auth::RateLimits {
                    requests_per_minute: fields.requests_per_minute.flatten(),
                    requests_per_day: fields.requests_per_day.flatten(),
                    tokens_per_minute: fields.tokens_per_minute.flatten(),
                },
                models: fields.models.flatten(),
            };
            let (p, key) = store.create(new).await.map_err(|e| e.to_error())?;
            tracing::info!(key_id = %p.id, name = %p.name, "key created");
            Ok(ok(
                StatusCode::CREATED,
                &json!({ "data": key_json(&p), "key": key }),
            ))
        }
        (Some(id), &Method::GET) => {
            let p = store.get(id.to_owned()).await.map_err(|e| e.to_error())?;
            Ok(ok(StatusCode::OK, &json!({ "data": key_json(&p) })))
        }
        (Some(id), &Method::PATCH) => {
            let body = read_object(body).await?;
            let patch = parse_fields(&body, UPDATE_FIELDS)?;
            let p = store
                .update(id.to_owned(), patch)
                .await
                .map_err(|e| e.to_error())?;
            tracing::info!(key_id = %p.id, disabled = p.disabled, "key updated");
            Ok(ok(StatusCode::OK, &json!({ "data": key_json(&p) })))
        }
        (Some(id), &Method::DELETE) => {
            store
                .delete(id.to_owned())
                .await
                .map_err(|e| e.to_error())?;
            tracing::info!(key_id = %id, "key deleted");
            Ok(ok(
                StatusCode::OK,
                &json!({ "data": { "id": id, "deleted": true } }),
            ))
        }
        _ => {
            let mut res = Error::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                format!("{method} is not allowed here; use {allow}"),
            )
            .into_response();
            res.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            Ok(res)
        }
    }
}
