//! `GET /v1/activity`: totals per hour or day, optionally split by model, provider or key:
//! requests, errors, prompt, completion and cached tokens, cost, and the time to first token
//! and total latency (p50, p95). The admin key sees every key's and may pick one with `key`;
//! a client key sees its own.
//!
//! Parameters: `bucket` (`1h`, the default, or `1d`), `group_by` (`model`, `provider`,
//! `key`), `since` and `until` (RFC 3339 or Unix seconds; default: the last day for `1h`, the
//! last 30 days for `1d`; at most 31 days of hours or 366 of days), `key` (admin only).

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde::Serialize;

use super::generations::{bad, json, store_failure, time_param, Viewer};
use super::keys::rfc3339;
use crate::usage::activity::{summarize, ActivityQuery, ActivityRow, Bucket, GroupBy};
use crate::usage::Recorder;
use crate::Error;

#[derive(Serialize)]
struct Answer<'a> {
    bucket: &'static str,
    group_by: Option<&'static str>,
    since: String,
    until: String,
    data: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct Row<'a> {
    start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cost: f64,
    ttft_ms: Percentiles,
    latency_ms: Percentiles,
}

#[derive(Serialize)]
struct Percentiles {
    p50: Option<u64>,
    p95: Option<u64>,
}

impl<'a> Row<'a> {
    fn of(r: &'a ActivityRow) -> Self {
        let t = &r.totals;
        let pct = |h: &crate::usage::activity::Histogram| Percentiles {
            p50: h.percentile(50.0),
            p95: h.percentile(95.0),
        };
        Row {
            start: rfc3339(r.start).unwrap_or_default(),
            group: r.group.as_deref(),
            requests: t.requests,
            errors: t.errors,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            cached_tokens: t.cached_tokens,
            cost: t.cost,
            ttft_ms: pct(&t.ttft),
            latency_ms: pct(&t.latency),
        }
    }
}

/// Answers `GET /v1/activity` for `viewer`.
pub(crate) async fn activity(
    recorder: &Recorder,
    viewer: Viewer,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let q = match parse(
        query.unwrap_or(""),
        &viewer,
        crate::facts::unix_now() as i64,
    ) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    match recorder.activity(q.since, q.until).await {
        Ok(Some(slots)) => {
            let rows = summarize(&q, slots);
            json(&Answer {
                bucket: match q.bucket {
                    Bucket::Hour => "1h",
                    Bucket::Day => "1d",
                },
                group_by: q.group_by.map(|g| match g {
                    GroupBy::Model => "model",
                    GroupBy::Provider => "provider",
                    GroupBy::Key => "key",
                }),
                since: rfc3339(q.since).unwrap_or_default(),
                until: rfc3339(q.until).unwrap_or_default(),
                data: rows.iter().map(Row::of).collect(),
            })
        }
        other => store_failure(other.map(|_| ()), "no usage store here keeps activity"),
    }
}

fn parse(query: &str, viewer: &Viewer, now: i64) -> Result<ActivityQuery, Error> {
    let (mut since, mut until, mut bucket, mut group_by) = (None, None, Bucket::Hour, None);
    let mut key = viewer.scope();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "bucket" => {
                bucket = match value.as_str() {
                    "1h" => Bucket::Hour,
                    "1d" => Bucket::Day,
                    _ => {
                        return Err(bad(
                            "bucket",
                            format!("`bucket` is `1h` or `1d`, not `{value}`"),
                        ))
                    }
                }
            }
            "group_by" => {
                group_by = Some(match value.as_str() {
                    "model" => GroupBy::Model,
                    "provider" => GroupBy::Provider,
                    "key" => GroupBy::Key,
                    _ => {
                        return Err(bad(
                            "group_by",
                            format!("`group_by` is `model`, `provider` or `key`, not `{value}`"),
                        ))
                    }
                })
            }
            "since" => since = Some(time_param("since", &value)?),
            "until" => until = Some(time_param("until", &value)?),
            "key" => key = viewer.key_param(value)?,
            other => {
                return Err(bad(
                    other,
                    format!("unknown parameter `{other}` (bucket, group_by, since, until, key)"),
                ))
            }
        }
    }
    let until = until.unwrap_or(now);
    let (default_span, max_span) = match bucket {
        Bucket::Hour => (86_400, 31 * 86_400),
        Bucket::Day => (30 * 86_400, 366 * 86_400),
    };
    let since = since.unwrap_or(until - default_span);
    if since >= until {
        return Err(bad("since", "`since` must be before `until`".into()));
    }
    if until - since > max_span {
        return Err(bad(
            "since",
            format!(
                "at most {} days of {} buckets at a time",
                max_span / 86_400,
                if bucket == Bucket::Hour { "1h" } else { "1d" }
            ),
        ));
    }
    Ok(ActivityQuery {
        key,
        since,
        until,
        bucket,
        group_by,
    })
}
