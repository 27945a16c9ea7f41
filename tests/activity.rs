//! The activity APIs through the proxy, on the embedded store: `GET /v1/generations` (newest
//! first, filtered, paged by cursor) with the admin key seeing every key's records and a
//! client key its own; bad parameters are 400s naming them.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const APP: &str = "sk-client-secret-do-not-forward";
const OTHER: &str = "sk-mg-other-0123456789abcdef";
const ADMIN: &str = "sk-mg-admin-9876543210fedcba";

async fn gateway(fake: &FakeProvider) -> Gateway {
    let toml = standard_config(
        fake,
        &format!(
            r#"
admin_key_env = "TEST_ADMIN_KEY"

[[keys]]
name = "app"
key = "{APP}"

[[keys]]
name = "other"
key = "{OTHER}"
"#
        ),
    );
    Gateway::start_with_env(&toml, &[("TEST_ADMIN_KEY", ADMIN)]).await
}

async fn get(gw: &Gateway, path: &str, key: &str) -> Answer {
    let req = Request::get(gw.url(path))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client(), req).await
}

async fn chat_as(gw: &Gateway, key: &str, model: &str) -> Answer {
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(chat(model, false, false))))
        .unwrap();
    send(&client(), req).await
}

/// Every record a listing gives, page after page of `limit`.
async fn all(gw: &Gateway, key: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/generations?{query}&cursor={c}"),
            None => format!("/v1/generations?{query}"),
        };
        let a = get(gw, &path, key).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
        let body = a.json();
        out.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test]
async fn each_key_lists_its_own_records_and_the_admin_key_everyones() {
    let fake = FakeProvider::start(standard).await;
    let gw = gateway(&fake).await;
    let mut app_ids = Vec::new();
    for i in 0..7 {
        let model = if i % 3 == 0 {
            "fake/fail-500"
        } else {
            "vendor/fake-model"
        };
        app_ids.push(
            chat_as(&gw, APP, model).await.headers["x-generation-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    for _ in 0..3 {
        chat_as(&gw, OTHER, "vendor/fake-model").await;
    }
    // A client key: its own, newest first, in pages of 2, each once.
    let mine = all(&gw, APP, "limit=2").await;
    let ids: Vec<&str> = mine.iter().map(|g| g["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = app_ids.iter().map(String::as_str).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(ids, expected);
    assert!(mine.iter().all(|g| g["key_id"] == mine[0]["key_id"]));
    assert_eq!(mine[0]["tokens_prompt"], mine[0]["prompt_tokens"]);
    // Filters.
    let errors = all(&gw, APP, "status=error").await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    let ok = all(&gw, APP, "status=ok&model=vendor/fake-model&dialect=chat").await;
    assert_eq!(ok.len(), 4);
    assert!(all(&gw, APP, "since=2000000000").await.is_empty());
    // The provider that served: the failed requests had none.
    assert_eq!(
        all(&gw, APP, "since=2020-01-01T00:00:00Z&provider=fake")
            .await
            .len(),
        4
    );
    // The admin key: everyone's, or one key's.
    assert_eq!(all(&gw, ADMIN, "limit=500").await.len(), 10);
    let key = mine[0]["key_id"].as_str().unwrap();
    assert_eq!(all(&gw, ADMIN, &format!("key={key}")).await.len(), 7);
    // A client key may not ask for another key's.
    let a = get(&gw, "/v1/generations?key=someone", APP).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
    assert_eq!(a.json()["error"]["param"], "key");
    let a = get(&gw, "/v1/generations", "sk-wrong").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_them() {
    let fake = FakeProvider::start(standard).await;
    let gw = gateway(&fake).await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("status=fine", "status"),
        ("dialect=soap", "dialect"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("cursor=abc", "cursor"),
        ("colour=blue", "colour"),
    ] {
        let a = get(&gw, &format!("/v1/generations?{query}"), ADMIN).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}: {}", a.text());
        assert_eq!(a.json()["error"]["param"], json!(param), "{query}");
    }
}

#[tokio::test]
async fn activity_adds_up_hours_by_model_provider_and_key() {
    let fake = FakeProvider::start(standard).await;
    let gw = gateway(&fake).await;
    for i in 0..5 {
        let model = if i == 0 {
            "fake/fail-500"
        } else {
            "vendor/fake-model"
        };
        chat_as(&gw, APP, model).await;
    }
    for _ in 0..2 {
        chat_as(&gw, OTHER, "vendor/fake-model").await;
    }
    // The sum of some measure over rows (of any group).
    fn total(body: &Value, measure: &str, group: Option<&str>) -> u64 {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| group.is_none_or(|g| r["group"] == g))
            .map(|r| r[measure].as_u64().unwrap())
            .sum()
    }
    // A client key: its own hours (one, or two if the test straddles an hour).
    let a = get(&gw, "/v1/activity", APP).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let body = a.json();
    assert_eq!(body["bucket"], "1h");
    let rows = body["data"].as_array().unwrap();
    assert!((1..=2).contains(&rows.len()), "{body}");
    assert!(rows
        .iter()
        .all(|r| r["start"].as_str().unwrap().ends_with(":00:00Z") && r.get("group").is_none()));
    assert_eq!(total(&body, "requests", None), 5);
    assert_eq!(total(&body, "errors", None), 1);
    assert!(total(&body, "prompt_tokens", None) > 0);
    assert!(rows.iter().all(|r| r["cost"].as_f64().unwrap() > 0.0));
    assert!(rows
        .iter()
        .all(|r| r["latency_ms"]["p95"].as_u64().is_some()));
    // By model: the failed request's model, and the catalog's.
    let by_model = get(&gw, "/v1/activity?group_by=model&bucket=1d", APP)
        .await
        .json();
    assert_eq!(total(&by_model, "requests", Some("vendor/fake-model")), 4);
    assert_eq!(total(&by_model, "requests", None), 5);
    // The admin key: everyone, split by key; or by provider.
    let by_key = get(&gw, "/v1/activity?group_by=key", ADMIN).await.json();
    assert_eq!(total(&by_key, "requests", None), 7);
    let keys: std::collections::BTreeSet<&str> = by_key["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["group"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    let by_provider = get(&gw, "/v1/activity?group_by=provider", ADMIN)
        .await
        .json();
    assert_eq!(total(&by_provider, "requests", Some("fake")), 6);
    // Nothing before: empty.
    let past = get(&gw, "/v1/activity?since=1000000000&until=1000003600", APP)
        .await
        .json();
    assert_eq!(past["data"], json!([]));
    // Refusals.
    for (query, param, status) in [
        ("bucket=1w", "bucket", StatusCode::BAD_REQUEST),
        ("group_by=colour", "group_by", StatusCode::BAD_REQUEST),
        (
            "since=2000000000&until=1000000000",
            "since",
            StatusCode::BAD_REQUEST,
        ),
        (
            "since=1000000000&until=1100000000",
            "since",
            StatusCode::BAD_REQUEST,
        ),
        ("key=someone", "key", StatusCode::FORBIDDEN),
        ("limit=5", "limit", StatusCode::BAD_REQUEST),
    ] {
        let a = get(&gw, &format!("/v1/activity?{query}"), APP).await;
        assert_eq!(a.status, status, "{query}: {}", a.text());
        assert_eq!(a.json()["error"]["param"], json!(param), "{query}");
    }
}
