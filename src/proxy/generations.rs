//! `GET /v1/generations`: the records, newest first, a page at a time. The admin key sees
//! every key's and may filter by `key`; a client key sees its own only.
//!
//! Parameters: `key` (admin only), `model`, `provider`, `status` (`ok`, `error`,
//! `cancelled`), `dialect` (`chat`, `messages`, `responses`, `embeddings`), `since` and
//! `until` (RFC 3339 or Unix seconds; `since` inclusive, `until` exclusive), `limit` (default
//! 50, at most 500) and `cursor` (the `next_cursor` of the page before). Any other parameter,
//! or a value that does not parse, is a 400 naming it.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::generation::Data;
use crate::usage::query::{cursor_id, GenerationQuery, StatusFilter, MAX_LIMIT};
use crate::usage::Recorder;
use crate::{Dialect, Error};

/// Who is asking.
pub(crate) enum Viewer {
    /// The admin key: every key's records.
    Admin,
    /// A client key (its id): its own.
    Key(String),
}

#[derive(Serialize)]
struct Page<'a> {
    data: Vec<Data<'a>>,
    next_cursor: Option<String>,
}

/// Answers `GET /v1/generations` for `viewer`.
pub(crate) async fn list(
    recorder: &Recorder,
    viewer: Viewer,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let q = match parse(query.unwrap_or(""), &viewer) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    match recorder.generations(q).await {
        Ok(Some(page)) => json(&Page {
            data: page.records.iter().map(Data::of).collect(),
            next_cursor: page.next,
        }),
        other => store_failure(other.map(|_| ()), "no usage store here can list records"),
    }
}

/// The JSON answer of a listing.
pub(super) fn json(body: &impl Serialize) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The answer when the stores did not give one: a 404 saying `unable` when none can, a 503
/// when reading failed.
pub(super) fn store_failure(
    result: Result<(), crate::usage::SinkError>,
    unable: &str,
) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => Error::new(StatusCode::NOT_FOUND, "not_found_error", unable).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading the usage store failed");
            Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the usage store cannot be read right now",
            )
            .into_response()
        }
    }
}

impl Viewer {
    /// The `key` parameter as this viewer may give it: the admin key any key, a client key
    /// its own (another is a 403 naming `key`).
    pub(super) fn key_param(&self, value: String) -> Result<Option<String>, Error> {
        match self {
            Viewer::Admin => Ok(Some(value)),
            Viewer::Key(id) if *id == value => Ok(Some(value)),
            Viewer::Key(_) => Err(Error::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "a client key sees its own activity and records only: `key` needs the admin key",
            )
            .with_param(Some("key".into()))),
        }
    }

    /// The key a query is scoped to before any `key` parameter: a client key's own.
    pub(super) fn scope(&self) -> Option<String> {
        match self {
            Viewer::Admin => None,
            Viewer::Key(id) => Some(id.clone()),
        }
    }
}

pub(super) fn bad(param: &str, message: String) -> Error {
    Error::invalid_request(message, Some(param.to_owned()))
}

/// A time as RFC 3339 or Unix seconds.
pub(crate) fn time_param(param: &str, value: &str) -> Result<i64, Error> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            bad(
                param,
                format!("`{param}` must be an RFC 3339 time or Unix seconds, not `{value}`"),
            )
        })
}

fn parse(query: &str, viewer: &Viewer) -> Result<GenerationQuery, Error> {
    let mut q = GenerationQuery {
        limit: 50,
        key: viewer.scope(),
        ..Default::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "key" => q.key = viewer.key_param(value)?,
            "model" => q.model = Some(value),
            "provider" => q.provider = Some(value),
            "status" => {
                q.status = Some(StatusFilter::parse(&value).ok_or_else(|| {
                    bad("status", format!("`status` is `ok`, `error` or `cancelled`, not `{value}`"))
                })?)
            }
            "dialect" => {
                q.dialect = Some(
                    serde_json::from_value::<Dialect>(value.clone().into()).map_err(|_| {
                        bad(
                            "dialect",
                            format!("`dialect` is `chat`, `messages`, `responses` or `embeddings`, not `{value}`"),
                        )
                    })?,
                )
            }
            "since" => q.since = Some(time_param("since", &value)?),
            "until" => q.until = Some(time_param("until", &value)?),
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad("limit", format!("`limit` is a number from 1 to {MAX_LIMIT}, not `{value}`"))
                    })?
            }
            "cursor" => {
                q.before = Some(cursor_id(&value).ok_or_else(|| {
                    bad("cursor", "`cursor` is not a cursor this gateway gave".into())
                })?)
            }
            other => {
                return Err(bad(
                    other,
                    format!("unknown parameter `{other}` (key, model, provider, status, dialect, since, until, limit, cursor)"),
                ))
            }
        }
    }
    Ok(q)
}
