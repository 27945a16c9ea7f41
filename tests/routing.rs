//! Routing through the proxy: provider preferences, variants, `models` lists, fail-over,
//! retries and cool-down, against two fake providers (`a`, cheap, and `b`, dear) and a dead
//! one.

mod support;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use support::*;

/// `a` and `b` share a handler: the upstream model name picks the behaviour (the standard
/// ones, plus `fail-429-long`: a 429 asking for 60 s, and `cut-at-once`: a 200 stream that
/// breaks before its first event).
fn handler(r: &Received) -> Script {
    match r.body["model"].as_str().unwrap_or("") {
        "fail-429-long" => Script::json(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        )
        .header("retry-after", "60"),
        "late" => {
            // Headers at once, then nothing for 5 s: a provider stuck before its first token.
            let mut script = if r.body["stream"].as_bool().unwrap_or(false) {
                Script::sse(events_of(&fixture("openai/openai_text.sse")))
            } else {
                Script::json(200, completion_json("late"))
            };
            script.body.insert(0, Piece::Pause(std::time::Duration::from_secs(5)));
            script
        }
        "cut-at-once" => Script::sse(vec![Piece::Pause(std::time::Duration::from_millis(5)), Piece::Cut]),
        "error-at-once" => Script::sse(vec![Piece::Data(Bytes::from_static(
            b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
        ))]),
        _ => standard(r),
    }
}

struct Setup {
    a: FakeProvider,
    b: FakeProvider,
    gw: Gateway,
    client: HttpClient,
}

/// Providers `a`, `b` and `dead` (a closed port); `extra` is appended (models, sections).
async fn setup(top: &str, extra: &str) -> Setup {
    let a = FakeProvider::start(handler).await;
    let b = FakeProvider::start(handler).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let toml = format!(
        r#"
{top}
[[providers]]
name = "a"
kind = "openai"
base_url = "{}"
first_byte_timeout_ms = 1500
idle_timeout_ms = 1500

[[providers]]
name = "b"
kind = "openai"
base_url = "{}"
first_byte_timeout_ms = 1500
idle_timeout_ms = 1500

[[providers]]
name = "dead"
kind = "openai"
base_url = "http://{dead}/v1"
connect_timeout_ms = 500

[[models]]
id = "v/m"
[[models.endpoints]]
provider = "a"
model = "text"
prompt_price = 1.0
completion_price = 1.0
supported_parameters = ["tools", "temperature"]
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
supported_parameters = ["temperature"]

{extra}
"#,
        a.base_url(),
        b.base_url()
    );
    let gw = Gateway::start(&toml).await;
    Setup {
        a,
        b,
        gw,
        client: client(),
    }
}

impl Setup {
    async fn chat(&self, body: Value) -> Answer {
        let mut v = json!({"messages": [{"role": "user", "content": "Why are there tides?"}]});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        post(
            &self.client,
            &self.gw.url("/v1/chat/completions"),
            v.to_string(),
        )
        .await
    }

    async fn models(&self) -> Value {
        let req = http::Request::get(self.gw.url("/v1/models"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        send(&self.client, req).await.json()
    }
}

fn endpoint<'a>(models: &'a Value, id: &str, provider: &str) -> &'a Value {
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| {
            m["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["provider_name"] == provider)
        })
        .unwrap_or_else(|| panic!("no endpoint {provider} of {id}: {models}"))
}

#[tokio::test]
async fn preferences_pick_the_provider() {
    let s = setup("", "").await;
    let served = |a: &Answer| a.json()["provider"].as_str().unwrap().to_owned();
    let a = s
        .chat(json!({"model": "v/m", "provider": {"order": ["b", "a"]}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(served(&a), "b");
    assert_eq!(a.json()["model"], "v/m");
    let a = s.chat(json!({"model": "v/m:floor"})).await;
    assert_eq!(
        (served(&a), a.json()["model"].clone()),
        ("a".into(), json!("v/m:floor"))
    );
    let a = s
        .chat(json!({"model": "v/m", "provider": {"ignore": ["a"]}}))
        .await;
    assert_eq!(served(&a), "b");
    let a = s
        .chat(json!({"model": "v/m", "provider": {"max_price": {"prompt": 2}, "sort": "price"}}))
        .await;
    assert_eq!(served(&a), "a");
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let a = s
        .chat(json!({"model": "v/m", "tools": tools,
                     "provider": {"require_parameters": true, "order": ["b"]}}))
        .await;
    assert_eq!(served(&a), "a", "b does not declare tools");
    assert_eq!(s.b.count(), 2);
}

#[tokio::test]
async fn an_empty_plan_is_explained() {
    let s = setup("", "").await;
    let a = s
        .chat(json!({"model": "v/m", "provider": {"only": ["b"], "max_price": {"completion": 2}}}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let j = a.json();
    let m = j["error"]["message"].as_str().unwrap();
    assert!(m.contains("a/text (not in provider.only)"), "{m}");
    assert!(
        m.contains("b/text (completion price 3 above provider.max_price.completion 2)"),
        "{m}"
    );
    assert_eq!(j["error"]["param"], "provider");
    let a = s
        .chat(json!({"model": "v/m", "provider": {"sort": "cheapest"}}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["param"], "provider.sort");
    assert_eq!(s.a.count() + s.b.count(), 0);
}

#[tokio::test]
async fn a_models_list_falls_back_to_the_next_model() {
    let s = setup("", "").await;
    // `a/fail-400` is refused by the provider for the request itself: the next model serves.
    let a = s
        .chat(json!({"model": "a/fail-400", "models": ["b/text"], "stream": true}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let chunks = a.chunks();
    assert_eq!(chunks[0]["model"], "b/text");
    assert_eq!(chunks[0]["provider"], "b");
    // Without a list, the same error is the answer.
    let a = s.chat(json!({"model": "a/fail-400"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.headers.get("x-should-retry").is_none());
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_once_it_cools_down() {
    let s = setup(
        "",
        r#"
[fallback]
failures_to_cool = 2
retries_per_target = 0

[[models]]
id = "v/d"
[[models.endpoints]]
provider = "dead"
model = "text"
prompt_price = 0.1
completion_price = 0.1
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
"#,
    )
    .await;
    for _ in 0..4 {
        let a = s
            .chat(json!({"model": "v/d", "provider": {"sort": "price"}}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.json()["provider"], "b");
    }
    let m = s.models().await;
    let dead = endpoint(&m, "v/d", "dead");
    assert_eq!(dead["status"], "cooling", "{dead}");
    assert_eq!(dead["uptime"], 0.0);
    let b = endpoint(&m, "v/d", "b");
    assert_eq!(b["status"], "ok");
    assert_eq!(b["uptime"], 100.0);
    assert!(b["latency_ms"].is_u64());
    assert!(b["throughput"].is_number(), "{b}");
}

#[tokio::test]
async fn a_429_with_retry_after_cools_that_endpoint_instead_of_hammering_it() {
    let s = setup(
        "",
        r#"
[[models]]
id = "v/rl"
[[models.endpoints]]
provider = "a"
model = "fail-429-long"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
"#,
    )
    .await;
    for stream in [false, true, false] {
        let a = s
            .chat(json!({"model": "v/rl", "stream": stream, "provider": {"sort": "price"}}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    assert_eq!(s.a.count(), 1, "asked to wait 60 s: not called again");
    assert_eq!(s.b.count(), 3);
}

#[tokio::test]
async fn every_endpoint_cooling_is_a_503_with_retry_after_and_failures_say_do_not_retry() {
    let s = setup(
        "",
        r#"
[fallback]
retries_per_target = 0

[[models]]
id = "v/down"
[[models.endpoints]]
provider = "a"
model = "fail-429-long"
[[models.endpoints]]
provider = "b"
model = "fail-500"
"#,
    )
    .await;
    let a = s.chat(json!({"model": "v/down"})).await;
    assert_eq!(a.headers["x-should-retry"], "false", "{}", a.text());
    assert!(a.status == StatusCode::BAD_GATEWAY || a.status == StatusCode::TOO_MANY_REQUESTS);
    // b keeps failing: after enough failures in a row both cool; a cools from the 429 already.
    for _ in 0..6 {
        s.chat(json!({"model": "v/down", "provider": {"order": ["b"]}}))
            .await;
    }
    let a = s.chat(json!({"model": "v/down"})).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cooling down"));
}

#[tokio::test]
async fn a_stream_that_breaks_before_its_first_event_fails_over_unnoticed() {
    for model in ["cut-at-once", "error-at-once"] {
        let s = setup(
            "keepalive_interval_ms = 1",
            &format!(
                r#"
[[models]]
id = "v/s"
[[models.endpoints]]
provider = "a"
model = "{model}"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
"#
            ),
        )
        .await;
        let a = s
            .chat(json!({"model": "v/s", "stream": true, "provider": {"sort": "price"}}))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        let chunks = a.chunks();
        assert!(
            chunks.iter().all(|c| c.get("error").is_none()),
            "{}",
            a.text()
        );
        assert!(chunks.iter().all(|c| c["provider"] == "b"));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(!text.is_empty());
        assert_eq!((s.a.count(), s.b.count()), (1, 1), "{model}");
    }
}

#[tokio::test]
async fn a_stream_cut_after_bytes_is_never_retried() {
    let s = setup(
        "",
        r#"
[[models]]
id = "v/cut"
[[models.endpoints]]
provider = "a"
model = "cut"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
"#,
    )
    .await;
    let a = s
        .chat(json!({"model": "v/cut", "stream": true, "provider": {"sort": "price"}}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let events = a.events();
    assert!(
        events.last().unwrap().starts_with("{\"error\""),
        "{events:?}"
    );
    assert!(events.len() >= 2, "content went out before the cut");
    assert_eq!((s.a.count(), s.b.count()), (1, 0));
}

#[tokio::test]
async fn an_unusable_200_is_asked_once_per_target_then_fails_over() {
    let s = setup(
        "",
        r#"
[[models]]
id = "v/garbage"
[[models.endpoints]]
provider = "a"
model = "garbage"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0

[[models]]
id = "v/only-garbage"
[[models.endpoints]]
provider = "a"
model = "garbage"
prompt_price = 1.0
completion_price = 1.0
"#,
    )
    .await;
    let a = s
        .chat(json!({"model": "v/garbage", "provider": {"sort": "price"}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!((s.a.count(), s.b.count()), (1, 1));
    // Alone, it is not asked again (it answered, and may have billed): the 502 at once.
    let a = s.chat(json!({"model": "v/only-garbage"})).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert_eq!((s.a.count(), s.b.count()), (2, 1));
}

#[tokio::test]
async fn a_provider_out_of_requests_is_skipped() {
    let s = setup("", "").await;
    let toml = format!(
        r#"
[[providers]]
name = "a"
kind = "openai"
base_url = "{}"
requests_per_minute = 2

[[providers]]
name = "b"
kind = "openai"
base_url = "{}"

[[models]]
id = "v/m"
[[models.endpoints]]
provider = "a"
model = "text"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
"#,
        s.a.base_url(),
        s.b.base_url()
    );
    let gw = Gateway::start(&toml).await;
    let mut served = Vec::new();
    for _ in 0..4 {
        let body = json!({"model": "v/m", "provider": {"sort": "price"},
                          "messages": [{"role": "user", "content": "hi"}]});
        let a = post(&s.client, &gw.url("/v1/chat/completions"), body.to_string()).await;
        served.push(a.json()["provider"].as_str().unwrap().to_owned());
    }
    assert_eq!(served, ["a", "a", "b", "b"]);
}

#[tokio::test]
async fn a_retry_after_over_the_longest_wait_is_passed_to_the_client() {
    // `fail-429` asks for 2 s: over a max wait of 1 s the gateway does not wait; the client
    // gets the 429 and its Retry-After.
    let s = setup("", "[fallback]\nmax_retry_wait_ms = 1000\n").await;
    let a = s.chat(json!({"model": "a/fail-429"})).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "2");
    assert_eq!(s.a.count(), 1);
}

#[tokio::test]
async fn an_anthropic_overload_right_after_message_start_fails_over_unnoticed() {
    let s = setup("", "").await;
    // Anthropic's pattern under load: a 200, `message_start`, then an `overloaded_error` event.
    let anthropic = FakeProvider::start(|_r: &Received| {
        let mut pieces = events_of(&fixture("anthropic/anthropic_error.sse"));
        pieces.truncate(1);
        pieces.push(Piece::Data(Bytes::from_static(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        )));
        Script::sse(pieces)
    })
    .await;
    let toml = format!(
        r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://{}"
api_key = "sk-ant-test"

[[providers]]
name = "b"
kind = "openai"
base_url = "{}"

[[models]]
id = "v/m"
[[models.endpoints]]
provider = "claude"
model = "claude-x"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
"#,
        anthropic.addr,
        s.b.base_url()
    );
    let gw = Gateway::start(&toml).await;
    let body = json!({"model": "v/m", "stream": true, "provider": {"sort": "price"},
                      "messages": [{"role": "user", "content": "hi"}]});
    let a = post(&s.client, &gw.url("/v1/chat/completions"), body.to_string()).await;
    assert_eq!(a.status, StatusCode::OK);
    let chunks = a.chunks();
    assert!(chunks.iter().all(|c| c["provider"] == "b"), "{}", a.text());
    assert_eq!(
        chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["role"] == "assistant")
            .count(),
        1,
        "one role chunk: the failed attempt sent none"
    );
    assert_eq!((anthropic.count(), s.b.count()), (1, 1));
}

#[tokio::test]
async fn a_model_with_hedging_races_a_stuck_provider() {
    let s = setup(
        "",
        r#"
[[models]]
id = "v/h"
hedge = 50
[[models.endpoints]]
provider = "a"
model = "late"
prompt_price = 1.0
completion_price = 1.0
[[models.endpoints]]
provider = "b"
model = "text"
prompt_price = 3.0
completion_price = 3.0
"#,
    )
    .await;
    for stream in [false, true] {
        let t0 = std::time::Instant::now();
        let a = s
            .chat(json!({"model": "v/h", "stream": stream, "provider": {"sort": "price"}}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(4),
            "the hedge answered"
        );
        if stream {
            let chunks = a.chunks();
            assert!(chunks.iter().all(|c| c["provider"] == "b"));
        } else {
            assert_eq!(a.json()["provider"], "b");
        }
    }
    assert_eq!((s.a.count(), s.b.count()), (2, 2));
    // Bad hedge settings are refused at start-up.
    let bad = modelgate::proxy::Config::from_toml(
        "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[[models]]\nid = \"m\"\nhedge = \"p99\"\n[[models.endpoints]]\nprovider = \"a\"\nmodel = \"x\"",
    )
    .unwrap()
    .catalog(&|_: &str| None)
    .unwrap_err();
    assert!(bad.0.contains("p95"), "{}", bad.0);
}
