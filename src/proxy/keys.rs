//! `GET /v1/key` and the key management API (`/v1/keys[/{id}]`, admin key only).

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use serde_json::{Map, Value};

use super::config::{parse_limit_reset, parse_rfc3339};
use crate::auth::{now_unix, KeyPatch, KeyRecord, LimitReset, ManagedKeyStore, NewKey, Principal};
use crate::error::BoxError;
use crate::usage::{KeySpend, SpendStore};
use crate::Error;

/// Largest management request body.
const MAX_BODY: usize = 64 << 10;

/// Unix seconds as RFC 3339 text (`None` outside the calendar's range).
pub(crate) fn rfc3339(t: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// A key as the API shows it: OpenRouter's key object, addressed by `hash` (the key's id),
/// then the gateway's own fields. Never the plaintext or the digest.
#[derive(Serialize)]
struct KeyObject<'a> {
    hash: &'a str,
    name: &'a str,
    label: &'a str,
    disabled: bool,
    limit: Option<f64>,
    limit_remaining: Option<f64>,
    limit_reset: Option<LimitReset>,
    include_byok_in_limit: bool,
    usage: f64,
    usage_daily: f64,
    usage_weekly: f64,
    usage_monthly: f64,
    byok_usage: f64,
    byok_usage_daily: f64,
    byok_usage_weekly: f64,
    byok_usage_monthly: f64,
    created_at: String,
    updated_at: Option<()>,
    last_used_at: Option<()>,
    expires_at: Option<String>,
    creator_user_id: Option<()>,
    external_user: Option<()>,
    workspace_id: &'static str,
    // The gateway's own.
    id: &'a str,
    source: crate::auth::KeySource,
    requests_per_minute: Option<u32>,
    requests_per_day: Option<u32>,
    tokens_per_minute: Option<u32>,
    models: Option<&'a [String]>,
}

impl<'a> KeyObject<'a> {
    fn of(r: &'a KeyRecord, spend: &KeySpend) -> Self {
        let now = now_unix();
        let in_window = spend.spent(r.limit_reset, now);
        KeyObject {
            hash: &r.id,
            name: &r.name,
            label: &r.label,
            disabled: r.disabled,
            limit: r.limit,
            limit_remaining: r.limit.map(|l| (l - in_window).max(0.0)),
            limit_reset: r.limit_reset,
            include_byok_in_limit: false,
            usage: spend.total,
            usage_daily: spend.spent(Some(LimitReset::Daily), now),
            usage_weekly: spend.spent(Some(LimitReset::Weekly), now),
            usage_monthly: spend.spent(Some(LimitReset::Monthly), now),
            byok_usage: 0.0,
            byok_usage_daily: 0.0,
            byok_usage_weekly: 0.0,
            byok_usage_monthly: 0.0,
            created_at: rfc3339(r.created_at.max(0)).unwrap_or_default(),
            updated_at: None,
            last_used_at: None,
            expires_at: r.expires_at.and_then(rfc3339),
            creator_user_id: None,
            external_user: None,
            workspace_id: "default",
            id: &r.id,
            source: r.source,
            requests_per_minute: r.rate_limits.requests_per_minute,
            requests_per_day: r.rate_limits.requests_per_day,
            tokens_per_minute: r.rate_limits.tokens_per_minute,
            models: r.models.as_deref(),
        }
    }
}

fn ok(status: StatusCode, v: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

#[derive(Serialize)]
struct Data<T> {
    data: T,
}

/// `GET /v1/key`: the calling key in OpenRouter's shape, with its spend (USD) in all and in
/// the current UTC day, week and month, and its rate limits. The admin key is shown too, as
/// OpenRouter shows a provisioning key (`is_management_key`, `is_provisioning_key`).
pub(crate) fn key_info(p: &Principal, spend: &KeySpend, admin: bool) -> Response<Full<Bytes>> {
    /// OpenRouter's older single rate limit: the tightest of the key's.
    #[derive(Serialize)]
    struct RateLimit {
        requests: i64,
        interval: &'static str,
        note: &'static str,
        requests_per_minute: Option<u32>,
        requests_per_day: Option<u32>,
        tokens_per_minute: Option<u32>,
    }
    #[derive(Serialize)]
    struct FreeRequests {
        limit: u32,
        remaining: u32,
        used: u32,
    }
    #[derive(Serialize)]
    struct Current<'a> {
        #[serde(flatten)]
        key: KeyObject<'a>,
        is_free_tier: bool,
        is_management_key: bool,
        is_provisioning_key: bool,
        allowed_data_regions: [&'static str; 1],
        budgets: [(); 0],
        effective_budget: Option<()>,
        free_model_daily_requests: FreeRequests,
        organization_id: Option<()>,
        rate_limit: RateLimit,
    }
    let limits = p.rate_limits;
    let (requests, interval) = match (limits.requests_per_minute, limits.requests_per_day) {
        (Some(n), _) => (i64::from(n), "1m"),
        (None, Some(n)) => (i64::from(n), "1d"),
        // OpenRouter's "no limit".
        (None, None) => (-1, "10s"),
    };
    ok(
        StatusCode::OK,
        &Data {
            data: Current {
                key: KeyObject::of(p.record(), spend),
                is_free_tier: false,
                is_management_key: admin,
                is_provisioning_key: admin,
                allowed_data_regions: ["global"],
                budgets: [],
                effective_budget: None,
                free_model_daily_requests: FreeRequests {
                    limit: 0,
                    remaining: 0,
                    used: 0,
                },
                organization_id: None,
                rate_limit: RateLimit {
                    requests,
                    interval,
                    note: "the key's own limits: requests_per_minute, requests_per_day, tokens_per_minute",
                    requests_per_minute: limits.requests_per_minute,
                    requests_per_day: limits.requests_per_day,
                    tokens_per_minute: limits.tokens_per_minute,
                },
            },
        },
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
            // Keys here spend only the gateway's own provider keys: there is no BYOK usage
            // to include or leave out.
            "include_byok_in_limit" => {
                v.as_bool().ok_or_else(|| bad(k, "true or false"))?;
            }
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
    "include_byok_in_limit",
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
    "include_byok_in_limit",
    "disabled",
    "limit",
    "limit_reset",
    "expires_at",
    "requests_per_minute",
    "requests_per_day",
    "tokens_per_minute",
    "models",
];

/// `/v1/keys[/{id}]` after the admin key was checked. `rest` is what follows `/v1/keys`;
/// `query`, the list's (`include_disabled`, `offset`).
pub(crate) async fn manage<B>(
    store: &dyn ManagedKeyStore,
    ledger: &dyn SpendStore,
    method: Method,
    rest: &str,
    query: Option<&str>,
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
    let spend = |id: String| async move { ledger.fetch(&id).await.map_err(|e| e.to_error()) };
    match (id, &method) {
        (None, &Method::GET) => {
            let q = ListQuery::of(query)?;
            let keys = store.list().await.map_err(|e| e.to_error())?;
            let mut spent = Vec::with_capacity(keys.len());
            for k in &keys {
                spent.push(spend(k.id.clone()).await?);
            }
            let data: Vec<KeyObject<'_>> = keys
                .iter()
                .zip(&spent)
                .filter(|(k, _)| q.include_disabled || !k.disabled)
                .skip(q.offset)
                .map(|(k, s)| KeyObject::of(k, s))
                .collect();
            Ok(ok(StatusCode::OK, &Data { data }))
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
            #[derive(Serialize)]
            struct Created<'a> {
                data: KeyObject<'a>,
                key: &'a str,
            }
            Ok(ok(
                StatusCode::CREATED,
                &Created {
                    data: KeyObject::of(&p, &KeySpend::default()),
                    key: &key,
                },
            ))
        }
        (Some(id), &Method::GET) => {
            let p = store.get(id.to_owned()).await.map_err(|e| e.to_error())?;
            let s = spend(p.id.clone()).await?;
            Ok(ok(
                StatusCode::OK,
                &Data {
                    data: KeyObject::of(&p, &s),
                },
            ))
        }
        (Some(id), &Method::PATCH) => {
            let body = read_object(body).await?;
            let patch = parse_fields(&body, UPDATE_FIELDS)?;
            let p = store
                .update(id.to_owned(), patch)
                .await
                .map_err(|e| e.to_error())?;
            tracing::info!(key_id = %p.id, disabled = p.disabled, "key updated");
            let s = spend(p.id.clone()).await?;
            Ok(ok(
                StatusCode::OK,
                &Data {
                    data: KeyObject::of(&p, &s),
                },
            ))
        }
        (Some(id), &Method::DELETE) => {
            store
                .delete(id.to_owned())
                .await
                .map_err(|e| e.to_error())?;
            tracing::info!(key_id = %id, "key deleted");
            #[derive(Serialize)]
            struct Deleted<'a> {
                deleted: bool,
                data: DeletedKey<'a>,
            }
            #[derive(Serialize)]
            struct DeletedKey<'a> {
                id: &'a str,
                deleted: bool,
            }
            Ok(ok(
                StatusCode::OK,
                &Deleted {
                    deleted: true,
                    data: DeletedKey { id, deleted: true },
                },
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

/// The query of `GET /v1/keys`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ListQuery {
    /// List disabled keys too (OpenRouter lists only enabled ones unless asked).
    include_disabled: bool,
    /// Keys to skip.
    offset: usize,
}

impl ListQuery {
    fn of(query: Option<&str>) -> Result<Self, Error> {
        let uri: http::Uri = format!("/?{}", query.unwrap_or(""))
            .parse()
            .map_err(|_| Error::invalid_request("invalid query", None))?;
        axum::extract::Query::<ListQuery>::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| Error::invalid_request(format!("invalid query: {}", e.body_text()), None))
    }
}

/// `GET /v1/credits`: `total_credits` as configured, `total_usage` the spend of every key.
pub(crate) async fn credits(
    store: &dyn ManagedKeyStore,
    ledger: &dyn SpendStore,
    total_credits: f64,
) -> Result<Response<Full<Bytes>>, Error> {
    #[derive(Serialize)]
    struct Credits {
        total_credits: f64,
        total_usage: f64,
    }
    let mut total_usage = 0.0;
    for k in store.list().await.map_err(|e| e.to_error())? {
        total_usage += ledger.fetch(&k.id).await.map_err(|e| e.to_error())?.total;
    }
    Ok(ok(
        StatusCode::OK,
        &Data {
            data: Credits {
                total_credits,
                total_usage,
            },
        },
    ))
}
