//! Usage metering through the proxy: cost in answers, generation records, credit limits,
//! restart, cancelled streams, and a reconciliation of 1,000 mixed requests.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";
const OTHER: &str = "sk-other-client-key-0123456789";

/// 18 prompt tokens at $3/M and 11 completion tokens at $15/M (the fake's usage).
const COST: f64 = (18.0 * 3.0 + 11.0 * 15.0) / 1e6;

fn keys(limit: Option<f64>) -> String {
    let limit = limit.map_or(String::new(), |l| format!("limit = {l}\n"));
    format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"
{limit}
[[keys]]
name = "other"
key = "{OTHER}"
"#
    )
}

async fn get(c: &HttpClient, url: &str, key: &str) -> Answer {
    let req = Request::get(url)
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(c, req).await
}

fn id_of(a: &Answer) -> String {
    a.headers["x-generation-id"].to_str().unwrap().to_owned()
}

async fn record(gw: &Gateway, c: &HttpClient, id: &str, key: &str) -> Answer {
    get(c, &gw.url(&format!("/v1/generation?id={id}")), key).await
}

#[tokio::test]
async fn cost_reaches_the_answer_the_stream_and_the_generation_record() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, &keys(None)).await;
    let c = client();

    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["usage"]["cost"].as_f64(), Some(COST));
    assert_eq!(a.json()["usage"]["total_tokens"], 29);

    let s = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", true, true),
    )
    .await;
    let chunks = s.chunks();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], serde_json::json!([]));
    assert_eq!(last["usage"]["cost"].as_f64(), Some(COST));

    // The records, to the key that made them.
    let r = record(&gw, &c, &id_of(&a), KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let d = &r.json()["data"];
    assert_eq!(d["id"], id_of(&a));
    assert_eq!(d["key_id"], "cfg_app");
    assert_eq!(d["model"], "vendor/fake-model");
    assert_eq!(d["provider"], "fake");
    assert_eq!(d["upstream_model"], "text");
    assert_eq!(
        (d["prompt_tokens"].as_u64(), d["completion_tokens"].as_u64()),
        (Some(18), Some(11))
    );
    assert_eq!(d["cost"].as_f64(), Some(COST));
    assert_eq!(d["streamed"], false);
    assert_eq!(d["finish_reason"], "stop");
    assert_eq!(d["cancelled"], false);
    assert_eq!(d["attempts"][0]["outcome"], "served");
    let r = record(&gw, &c, &id_of(&s), KEY).await;
    let d = &r.json()["data"];
    assert_eq!(d["streamed"], true);
    assert_eq!(d["cost"].as_f64(), Some(COST));
    assert!(d["time_to_first_token_ms"].is_u64());

    // Another key, an unknown id, a missing id.
    assert_eq!(
        record(&gw, &c, &id_of(&a), OTHER).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        record(&gw, &c, "gen-nope", KEY).await.status,
        StatusCode::NOT_FOUND
    );
    let bad = get(&c, &gw.url("/v1/generation"), KEY).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["param"], "id");
    assert_eq!(
        get(
            &c,
            &gw.url("/v1/generation?id=x"),
            "sk-unknown-key-000000000"
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );

    // The key's spend.
    let k = get(&c, &gw.url("/v1/key"), KEY).await.json();
    let spent = k["data"]["usage"].as_f64().unwrap();
    assert!((spent - 2.0 * COST).abs() < 1e-15, "{spent}");
    assert_eq!(k["data"]["limit_remaining"], serde_json::Value::Null);

    // A pass-through has no prices: no cost, and the record says so.
    let p = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("fake/text", false, false),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.json()["usage"].get("cost").is_none());
    let d = record(&gw, &c, &id_of(&p), KEY).await.json();
    assert_eq!(d["data"]["cost"], serde_json::Value::Null);
    assert_eq!(d["data"]["prompt_tokens"], 18);
}

#[tokio::test]
async fn a_spent_limit_is_a_402_and_spend_survives_a_restart() {
    let fake = FakeProvider::start(standard).await;
    let dir = tempfile::tempdir().unwrap();
    // Three answers fit under the limit (the third starts below it); the fourth does not.
    let extra = format!(
        "{}\n[state]\ndir = {:?}\n",
        keys(Some(3.0 * COST - 1e-9)),
        dir.path().display().to_string()
    );
    let c = client();
    let mut gw = Gateway::in_front_of(&fake, &extra).await;
    let url = gw.url("/v1/chat/completions");
    let mut first = None;
    for i in 0..3 {
        let a = post(&c, &url, chat("vendor/fake-model", false, false)).await;
        assert_eq!(a.status, StatusCode::OK, "request {i}: {}", a.text());
        first.get_or_insert_with(|| id_of(&a));
    }
    let refused = post(&c, &url, chat("vendor/fake-model", false, false)).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        refused.text()
    );
    assert_eq!(refused.json()["error"]["code"], 402);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("credit limit"));
    assert_eq!(
        fake.count(),
        3,
        "the refused request never reached the provider"
    );
    // The other key is not affected.
    let other = Request::post(&url)
        .header("authorization", format!("Bearer {OTHER}"))
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    assert_eq!(send(&c, other).await.status, StatusCode::OK);
    gw.shutdown().await.unwrap().unwrap();

    // Restarted on the same state directory (once the first writer has written everything
    // and let go of it): the spend is still there.
    let gw = Gateway::in_front_of(&fake, &extra).await;
    let url = gw.url("/v1/chat/completions");
    let again = post(&c, &url, chat("vendor/fake-model", false, false)).await;
    assert_eq!(
        again.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        again.text()
    );
    let k = get(&c, &gw.url("/v1/key"), KEY).await.json();
    assert!((k["data"]["usage"].as_f64().unwrap() - 3.0 * COST).abs() < 1e-15);
    assert_eq!(k["data"]["limit_remaining"].as_f64(), Some(0.0));
    // And so are the records.
    let id = first.unwrap();
    let r = record(&gw, &c, &id, KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["data"]["cost"].as_f64(), Some(COST));
}

#[tokio::test]
async fn spend_written_back_from_the_spill_file_counts_against_the_limit() {
    let fake = FakeProvider::start(standard).await;
    let c = client();
    // A record as the proxy writes it, from a first gateway.
    let gw = Gateway::in_front_of(&fake, &keys(Some(0.5))).await;
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let mut spent = record(&gw, &c, &id_of(&a), KEY).await.json()["data"].clone();
    drop(gw);

    // A state directory whose last run spilled a record that spent the whole limit.
    let dir = tempfile::tempdir().unwrap();
    spent["id"] = "gen-1796212800-spilledspilledspill".into();
    spent["cost"] = 0.6.into();
    // The API writes the time as text; a record keeps Unix seconds.
    spent["created_at"] = 1_796_212_800.into();
    std::fs::write(
        dir.path().join(modelgate::proxy::SPILL_FILE),
        format!("{spent}\n"),
    )
    .unwrap();
    let extra = format!(
        "{}\n[state]\ndir = {:?}\n",
        keys(Some(0.5)),
        dir.path().display().to_string()
    );
    let gw = Gateway::in_front_of(&fake, &extra).await;
    let k = get(&c, &gw.url("/v1/key"), KEY).await.json();
    assert_eq!(k["data"]["usage"].as_f64(), Some(0.6), "{k}");
    let refused = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        refused.text()
    );
    assert!(!dir.path().join(modelgate::proxy::SPILL_FILE).exists());
}

/// Sends a streaming request and drops the response after its first frame.
async fn leave_after_first_frame(c: &HttpClient, url: &str, model: &str) -> String {
    let req = Request::post(url)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(chat(model, true, true))))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let id = res.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = res.into_body();
    loop {
        let frame = body.frame().await.unwrap().unwrap();
        if frame.data_ref().is_some_and(|d| d.starts_with(b"data: ")) {
            break;
        }
    }
    id
}

/// The record of `id`, waiting (bounded) for a stream's end to reach it.
async fn wait_record(gw: &Gateway, c: &HttpClient, id: &str) -> serde_json::Value {
    for _ in 0..200 {
        let r = record(gw, c, id, KEY).await;
        if r.status == StatusCode::OK {
            return r.json()["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no record for {id}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_still_gets_a_record() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, &keys(None)).await;
    let c = client();
    let id = leave_after_first_frame(&c, &gw.url("/v1/chat/completions"), "fake/slow").await;
    let d = wait_record(&gw, &c, &id).await;
    assert_eq!(d["cancelled"], true);
    assert_eq!(d["streamed"], true);
    assert_eq!(d["status"], 200);
    // The provider never got to its usage chunk: the gateway's count, marked as such.
    assert_eq!(d["estimated"], true);
    assert!(d["completion_tokens"].as_u64().unwrap() >= 1);
    assert!(d["prompt_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(d["provider"], "fake");
}

#[tokio::test]
async fn records_go_to_the_json_lines_file_too() {
    let fake = FakeProvider::start(standard).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.jsonl");
    let extra = format!(
        "{}\n[usage]\njsonl_path = {:?}\n",
        keys(None),
        path.display().to_string()
    );
    let gw = Gateway::in_front_of(&fake, &extra).await;
    let c = client();
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("smart", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // A lookup flushes the queue.
    assert_eq!(
        record(&gw, &c, &id_of(&a), KEY).await.status,
        StatusCode::OK
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], id_of(&a));
    assert_eq!(lines[0]["cost"].as_f64(), Some(COST));
}

/// 1,000 mixed requests: streaming or not, fallbacks, upstream failures, clients that leave.
/// Every request has exactly one record, and the recorded tokens equal what the provider
/// reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_requests_reconcile_exactly() {
    let fake = FakeProvider::start(standard).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.jsonl");
    let extra = format!(
        r#"{}
[usage]
jsonl_path = {:?}

[fallback]
retries_per_target = 0

[[models]]
id = "vendor/flaky"
[[models.endpoints]]
provider = "fake"
model = "fail-503"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "fake"
model = "text"
prompt_price = 3.0
completion_price = 15.0
"#,
        keys(None),
        path.display().to_string()
    );
    let gw = Gateway::in_front_of(&fake, &extra).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Json,
        Stream,
        Fallback,
        Failure,
        Leave,
    }
    let kinds = [
        Kind::Json,
        Kind::Stream,
        Kind::Fallback,
        Kind::Failure,
        Kind::Leave,
    ];
    let mut expected: HashMap<String, Kind> = HashMap::new();
    for batch in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let kind = kinds[(batch * 50 + i) % kinds.len()];
            let c = c.clone();
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let id = match kind {
                    Kind::Leave => leave_after_first_frame(&c, &url, "fake/slow").await,
                    _ => {
                        let body = match kind {
                            Kind::Json => chat("vendor/fake-model", false, false),
                            Kind::Stream => chat("vendor/fake-model", true, false),
                            Kind::Fallback => chat("vendor/flaky", i % 2 == 0, true),
                            _ => chat("fake/fail-400", i % 2 == 0, false),
                        };
                        let a = post(&c, &url, body).await;
                        let want = if kind == Kind::Failure { 400 } else { 200 };
                        assert_eq!(a.status.as_u16(), want, "{kind:?}: {}", a.text());
                        id_of(&a)
                    }
                };
                (id, kind)
            }));
        }
        for t in tasks {
            let (id, kind) = t.await.unwrap();
            assert!(
                expected.insert(id, kind).is_none(),
                "generation ids are unique"
            );
        }
    }

    // Flush (a lookup does), then wait (bounded) for the last streams the clients left.
    let mut lines = Vec::new();
    for _ in 0..300 {
        let any = expected.keys().next().unwrap().clone();
        let _ = record(&gw, &c, &any, KEY).await;
        lines = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if lines.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 1_000, "one record per request");
    let mut seen = HashMap::new();
    let (mut reported, mut recorded) = (0u64, 0u64);
    for r in &lines {
        let id = r["id"].as_str().unwrap().to_owned();
        let kind = expected[&id];
        assert!(
            seen.insert(id, ()).is_none(),
            "exactly one record per request"
        );
        let tokens =
            r["prompt_tokens"].as_u64().unwrap() + r["completion_tokens"].as_u64().unwrap();
        match kind {
            Kind::Json | Kind::Stream | Kind::Fallback => {
                // The fake reports 18 + 11 tokens for every answer it completes.
                reported += 29;
                recorded += tokens;
                assert_eq!(r["estimated"], false);
                assert_eq!(r["cancelled"], false);
                assert_eq!(r["cost"].as_f64(), Some(COST), "{r}");
            }
            Kind::Failure => {
                assert_eq!(tokens, 0);
                assert_eq!(r["status"], 400);
                assert_eq!(r["cost"], serde_json::Value::Null, "a pass-through");
            }
            Kind::Leave => {
                assert_eq!(r["cancelled"], true, "{r}");
                assert_eq!(r["estimated"], true, "{r}");
            }
        }
        if kind == Kind::Fallback {
            // Balancing may try either endpoint first; the failing one cools down after a
            // few failures and is then skipped. Whatever the order, the last attempt served.
            let attempts = r["attempts"].as_array().unwrap();
            let (last, before) = attempts.split_last().unwrap();
            assert_eq!(last["outcome"], "served", "{r}");
            for a in before {
                assert!(a["outcome"] == "failed" || a["outcome"] == "skipped", "{r}");
                assert_eq!(a["upstream_model"], "fail-503");
            }
            assert_eq!(r["upstream_model"], "text");
        }
    }
    assert_eq!(recorded, reported);
    // The key's spend is the sum of the records' costs.
    let total: f64 = lines.iter().filter_map(|r| r["cost"].as_f64()).sum();
    let k = get(&c, &gw.url("/v1/key"), KEY).await.json();
    let spent = k["data"]["usage"].as_f64().unwrap();
    assert!((spent - total).abs() < 1e-9, "{spent} vs {total}");
}

/// The value of the first sample of `metric` whose labels include every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_tokens_cost_and_the_queue() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, &keys(None)).await;
    let c = client();
    for stream in [false, true, false] {
        let a = post(
            &c,
            &gw.url("/v1/chat/completions"),
            chat("vendor/fake-model", stream, false),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let failed = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("fake/fail-500", false, false),
    )
    .await;
    assert_eq!(failed.status.as_u16(), 502);
    // A lookup flushes the queue, so the written count is final.
    let _ = record(&gw, &c, &id_of(&failed), KEY).await;

    let m = get(&c, &gw.url("/metrics"), KEY).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = m.text();
    let model = r#"model="vendor/fake-model""#;
    let at_least = |metric: &str, labels: &[&str], n: f64| {
        let v = sample(&text, metric, labels)
            .unwrap_or_else(|| panic!("no {metric} {labels:?} in\n{text}"));
        assert!(v >= n, "{metric} {labels:?} = {v} < {n}");
    };
    at_least(
        "modelgate_requests_total",
        &[model, r#"provider="fake""#, r#"status="200""#],
        3.0,
    );
    at_least(
        "modelgate_requests_total",
        &[r#"model="passthrough""#, r#"status="502""#],
        1.0,
    );
    at_least("modelgate_tokens_total", &[model, r#"kind="prompt""#], 54.0);
    at_least(
        "modelgate_tokens_total",
        &[model, r#"kind="completion""#],
        33.0,
    );
    at_least("modelgate_cost_usd_total", &[model], 3.0 * COST - 1e-12);
    at_least("modelgate_request_duration_seconds_count", &[model], 3.0);
    at_least("modelgate_time_to_first_token_seconds_count", &[model], 3.0);
    at_least("modelgate_overhead_seconds_count", &[], 4.0);
    at_least(
        "modelgate_upstream_attempts_total",
        &[r#"outcome="served""#],
        3.0,
    );
    at_least(
        "modelgate_upstream_attempts_total",
        &[r#"outcome="failed""#],
        1.0,
    );
    at_least("modelgate_usage_records_written_total", &[], 4.0);
    at_least("modelgate_usage_queue_capacity", &[], 16_384.0);
    assert!(sample(&text, "modelgate_requests_in_flight", &[]).is_some());
    assert!(sample(&text, "modelgate_usage_queue_depth", &[]).is_some());
    assert!(
        !text.contains(KEY) && !text.contains(PROVIDER_KEY),
        "no key in metrics"
    );
}
