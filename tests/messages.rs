//! The Anthropic Messages dialect through the proxy: the native path to an `anthropic`
//! endpoint, the translated path to an OpenAI-kind one, errors in Anthropic's envelope,
//! fallback before the first byte, a cut stream, `count_tokens`, and the usage records.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";

fn config(anth: &FakeProvider, oai: &FakeProvider) -> String {
    format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"
requests_per_minute = 3

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{anth}"
api_key = "{PROVIDER_KEY}"
first_byte_timeout_ms = 1500
idle_timeout_ms = 1500

[[providers]]
name = "oai"
kind = "openai"
base_url = "{oai}"
api_key = "{PROVIDER_KEY}"
first_byte_timeout_ms = 1500
idle_timeout_ms = 1500

[[models]]
id = "anthropic/claude"
[[models.endpoints]]
provider = "anth"
model = "claude-text"
prompt_price = 3.0
completion_price = 15.0

[[models]]
id = "openai/gpt"
[[models.endpoints]]
provider = "oai"
model = "text"
prompt_price = 3.0
completion_price = 15.0

[[models]]
id = "busy/claude"
[[models.endpoints]]
provider = "anth"
model = "claude-busy"
prompt_price = 3.0
completion_price = 15.0
[[models.endpoints]]
provider = "oai"
model = "text"
prompt_price = 30.0
completion_price = 150.0

[aliases]
claude = "anthropic/claude"
"#,
        anth = anth.base_url(),
        oai = oai.base_url(),
    )
}

struct Setup {
    anth: FakeProvider,
    oai: FakeProvider,
    gw: Gateway,
    c: HttpClient,
}

async fn setup() -> Setup {
    let anth = FakeProvider::start(standard_anthropic).await;
    let oai = FakeProvider::start(standard).await;
    let gw = Gateway::start(&config(&anth, &oai)).await;
    Setup {
        anth,
        oai,
        gw,
        c: client(),
    }
}

fn messages(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
                   {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "2+2?", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
            {"role": "system", "content": "a reminder"}
        ],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": "u-1"},
        "models": ["openai/gpt"],
        "provider": {"sort": "price"}
    })
}

async fn post_messages(s: &Setup, path: &str, body: &Value, extra: &[(&str, &str)]) -> Answer {
    let mut req = Request::post(s.gw.url(path))
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,context-1m-2025-08-07",
        );
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    send(
        &s.c,
        req.body(Full::new(Bytes::from(body.to_string()))).unwrap(),
    )
    .await
}

/// The events of a Messages stream, checked against Anthropic's grammar.
fn events(a: &Answer) -> Vec<(String, Value)> {
    modelgate::dialect::messages::check_event_sequence(&a.body)
        .unwrap_or_else(|e| panic!("{e}\n{}", a.text()));
    modelgate::sse::decode_chunks([a.body.as_ref()])
        .into_iter()
        .map(|e| (e.event.unwrap(), serde_json::from_str(&e.data).unwrap()))
        .collect()
}

async fn generation(s: &Setup, a: &Answer) -> Value {
    s.gw.flush().await;
    let id = a.headers["x-generation-id"].to_str().unwrap();
    let req = Request::get(s.gw.url(&format!("/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&s.c, req).await.json()["data"].clone()
}

#[tokio::test]
async fn native_answers_pass_untouched_but_for_the_model() {
    let s = setup().await;
    let a = post_messages(
        &s,
        "/v1/messages?beta=true",
        &messages("claude", false),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.headers["x-generation-id"]
        .to_str()
        .unwrap()
        .starts_with("gen-"));
    let v = a.json();
    let mut expected: Value = serde_json::from_str(ANTHROPIC_MESSAGE).unwrap();
    expected["model"] = json!("anthropic/claude");
    assert_eq!(
        v, expected,
        "everything but the model as the provider sent it"
    );

    // The body went upstream as it came: only `model` rewritten, our fields removed.
    let up = s.anth.last();
    let mut sent = messages("claude", false);
    sent["model"] = json!("claude-text");
    sent.as_object_mut().unwrap().remove("models");
    sent.as_object_mut().unwrap().remove("provider");
    assert_eq!(up.body, sent);
    assert_eq!(up.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        up.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
    );
    assert_eq!(up.headers["x-api-key"], PROVIDER_KEY);
    assert_eq!(up.path, "/v1/messages");

    // Metered from the provider's own counts: 20 + 100 written + 300 read.
    let r = generation(&s, &a).await;
    assert_eq!(r["dialect"], "messages");
    assert_eq!(r["prompt_tokens"], 420);
    assert_eq!(r["cached_tokens"], 300);
    assert_eq!(r["cache_write_tokens"], 100);
    assert_eq!(r["completion_tokens"], 5);
    assert_eq!(r["provider"], "anth");
    assert!(r["cost"].as_f64().unwrap() > 0.0);
    assert_eq!(s.oai.count(), 0);
}

#[tokio::test]
async fn native_streams_keep_signatures_and_are_metered() {
    let s = setup().await;
    let mut body = messages("anthropic/claude", true);
    body["models"] = json!([]);
    // The thinking fixture, through the same endpoint name.
    let anth = FakeProvider::start(|r| {
        let mut r = r.clone();
        r.body["model"] = json!("claude-thinking");
        standard_anthropic(&r)
    })
    .await;
    let gw = Gateway::start(&config(&anth, &s.oai)).await;
    let a = send(
        &s.c,
        Request::post(gw.url("/v1/messages"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let ev = events(&a);
    assert_eq!(ev[0].1["message"]["model"], "anthropic/claude");
    let fixture = String::from_utf8(fixture("anthropic/anthropic_thinking.sse").to_vec()).unwrap();
    // Every event after message_start, byte for byte.
    let rest = &fixture[fixture.find("event: content_block_start").unwrap()..];
    assert!(a.text().ends_with(rest), "{}", a.text());
    assert!(a
        .text()
        .contains("EqQBCkYIBRgCKkCz0fakesignatureOnlyForFixtures0Qm9vYmF6cXV4cXV1eA=="));
    gw.flush().await;
    let id = a.headers["x-generation-id"].to_str().unwrap();
    let req = Request::get(gw.url(&format!("/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&s.c, req).await.json()["data"].clone();
    assert_eq!(
        (r["prompt_tokens"].as_u64(), r["completion_tokens"].as_u64()),
        (Some(31), Some(61))
    );
    assert_eq!(r["finish_reason"], "stop");
    assert_eq!(r["error"], Value::Null);
}

#[tokio::test]
async fn translated_answers_speak_anthropic() {
    let s = setup().await;
    let a = post_messages(&s, "/v1/messages", &messages("openai/gpt", false), &[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "openai/gpt");
    assert_eq!(v["id"], a.headers["x-generation-id"].to_str().unwrap());
    assert_eq!(
        v["content"],
        json!([{"type":"text","text":"Tides come mostly from the Moon's pull on the oceans."}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 18);
    assert_eq!(v["usage"]["output_tokens"], 11);
    // What went upstream: the core's request, without Anthropic's own fields.
    let up = s.oai.last().body;
    assert_eq!(up["model"], "text");
    assert_eq!(
        up["messages"][0],
        json!({"role":"system","content":"Be brief."})
    );
    assert_eq!(up["messages"][1], json!({"role":"user","content":"2+2?"}));
    assert_eq!(up["user"], "u-1");
    for gone in [
        "context_management",
        "thinking",
        "output_config",
        "metadata",
        "system",
        "models",
        "provider",
    ] {
        assert!(up.get(gone).is_none(), "{gone} went upstream: {up}");
    }
    assert!(!up.to_string().contains("billing-header"));
    let r = generation(&s, &a).await;
    assert_eq!(r["dialect"], "messages");
    assert_eq!(r["provider"], "oai");
}

#[tokio::test]
async fn translated_streams_follow_anthropics_grammar() {
    let s = setup().await;
    let a = post_messages(&s, "/v1/messages", &messages("openai/gpt", true), &[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let ev = events(&a);
    let start = &ev[0].1["message"];
    assert_eq!(start["model"], "openai/gpt");
    assert!(
        start["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "an estimate, not 0"
    );
    let text: String = ev
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert!(!text.is_empty());
    let (name, delta) = &ev[ev.len() - 2];
    assert_eq!(name, "message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(!a.text().contains("[DONE]"));

    // Tools both ways: the tool fixture's call comes back as a tool_use block.
    let mut body = messages("openai/gpt", true);
    body["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let fake = FakeProvider::start(|r| {
        let mut r = r.clone();
        r.body["model"] = json!("tool");
        standard(&r)
    })
    .await;
    let gw = Gateway::start(&config(&s.anth, &fake)).await;
    let a = send(
        &s.c,
        Request::post(gw.url("/v1/messages"))
            .header("x-api-key", KEY)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await;
    let ev = events(&a);
    let tool = ev
        .iter()
        .find(|(n, v)| n == "content_block_start" && v["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool.1["content_block"]["name"], "get_weather");
    let args: String = ev
        .iter()
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args["city"], "Lyon");
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        fake.last().body["tools"][0]["function"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn errors_are_in_anthropics_envelope() {
    let s = setup().await;
    let check = |a: &Answer, status: u16, kind: &str| {
        assert_eq!(a.status.as_u16(), status, "{}", a.text());
        let v = a.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(a.headers.contains_key("x-generation-id"));
    };
    // The gateway's own: a missing key, a bad body, an unknown model, a wrong method.
    let body = messages("claude", false).to_string();
    let req = Request::post(s.gw.url("/v1/messages"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    check(&send(&s.c, req).await, 401, "authentication_error");
    let a = post_messages(
        &s,
        "/v1/messages",
        &json!({"model": "claude", "messages": "hi"}),
        &[],
    )
    .await;
    check(&a, 400, "invalid_request_error");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages"));
    check(
        &post_messages(&s, "/v1/messages", &messages("nope/none", false), &[]).await,
        404,
        "not_found_error",
    );
    let req = Request::get(s.gw.url("/v1/messages"))
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::new()))
        .unwrap();
    check(&send(&s.c, req).await, 405, "invalid_request_error");
    // Upstream's, passed on: an invalid request, and an overload keeps its 529.
    let mut body = messages("anthropic/claude", false);
    body["models"] = json!([]);
    let fake = FakeProvider::start(|r| {
        let mut r = r.clone();
        let m = if r.body["max_tokens"] == 1 {
            "claude-400"
        } else {
            "claude-529"
        };
        r.body["model"] = json!(m);
        standard_anthropic(&r)
    })
    .await;
    let gw = Gateway::start(&config(&fake, &s.oai)).await;
    let send_to = |body: Value| {
        Request::post(gw.url("/v1/messages"))
            .header("x-api-key", KEY)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    body["max_tokens"] = json!(1);
    let a = send(&s.c, send_to(body.clone())).await;
    check(&a, 400, "invalid_request_error");
    assert!(a.text().contains("max_tokens: Field required"));
    body["max_tokens"] = json!(1024);
    check(&send(&s.c, send_to(body)).await, 529, "overloaded_error");
    // The rate limit (3 a minute) in the envelope, with Retry-After.
    let mut a = post_messages(&s, "/v1/messages", &messages("openai/gpt", false), &[]).await;
    for _ in 0..3 {
        if a.status == 429 {
            break;
        }
        a = post_messages(&s, "/v1/messages", &messages("openai/gpt", false), &[]).await;
    }
    check(&a, 429, "rate_limit_error");
    assert!(a.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_stream_failing_before_its_first_block_falls_back() {
    let s = setup().await;
    let mut body = messages("busy/claude", true);
    body["models"] = json!([]);
    let a = post_messages(&s, "/v1/messages", &body, &[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let ev = events(&a);
    assert_eq!(ev[0].1["message"]["model"], "busy/claude");
    assert!(!a.text().contains("overloaded"), "{}", a.text());
    assert_eq!(s.anth.count(), 1);
    assert_eq!(s.oai.count(), 1, "the OpenAI endpoint served, translated");
    let r = generation(&s, &a).await;
    assert_eq!(r["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(r["provider"], "oai");
}

#[tokio::test]
async fn a_cut_native_stream_is_one_error_event_and_recorded() {
    let s = setup().await;
    let fake = FakeProvider::start(|r| {
        let mut r = r.clone();
        r.body["model"] = json!("claude-cut");
        standard_anthropic(&r)
    })
    .await;
    let gw = Gateway::start(&config(&fake, &s.oai)).await;
    let mut body = messages("anthropic/claude", true);
    body["models"] = json!([]);
    let a = send(
        &s.c,
        Request::post(gw.url("/v1/messages"))
            .header("x-api-key", KEY)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    let ev = events(&a);
    let (last, v) = ev.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(v["type"], "error");
    assert_eq!(a.text().matches("event: error").count(), 1);
    gw.flush().await;
    let id = a.headers["x-generation-id"].to_str().unwrap();
    let req = Request::get(gw.url(&format!("/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&s.c, req).await.json()["data"].clone();
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    // The usage message_start reported.
    assert_eq!(
        (r["prompt_tokens"].as_u64(), r["cached_tokens"].as_u64()),
        (Some(2071), Some(2048)),
        "{r}"
    );
}

#[tokio::test]
async fn what_only_anthropic_can_serve_is_refused_elsewhere_by_name() {
    let s = setup().await;
    let mut body = messages("openai/gpt", false);
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    let a = post_messages(&s, "/v1/messages", &body, &[]).await;
    assert_eq!(a.status, 400, "{}", a.text());
    let v = a.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web_search"),
        "{v}"
    );
    assert_eq!(s.oai.count(), 0);
    // The same request to Claude goes through, untouched.
    body["model"] = json!("claude");
    body["models"] = json!([]);
    let a = post_messages(&s, "/v1/messages", &body, &[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        s.anth.last().body["tools"][0]["type"],
        "web_search_20250305"
    );
}

#[tokio::test]
async fn count_tokens_is_forwarded_or_estimated_and_never_limited() {
    let s = setup().await;
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "hello there"}]});
    // More than the key's 3 requests a minute: count_tokens is not counted.
    for _ in 0..5 {
        let a = post_messages(&s, "/v1/messages/count_tokens", &body, &[]).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json(), json!({"input_tokens": 1234}));
    }
    let up = s.anth.last();
    assert_eq!(up.path, "/v1/messages/count_tokens");
    assert_eq!(up.body["model"], "claude-text");
    // Another kind: the local estimate (a quarter of the text's bytes).
    let body =
        json!({"model": "openai/gpt", "messages": [{"role": "user", "content": "x".repeat(400)}]});
    let a = post_messages(&s, "/v1/messages/count_tokens", &body, &[]).await;
    assert_eq!(a.json(), json!({"input_tokens": 100}));
    assert_eq!(s.oai.count(), 0);
    // Still authenticated, in the envelope.
    let req = Request::post(s.gw.url("/v1/messages/count_tokens"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let a = send(&s.c, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"]["type"], "authentication_error");
    // Never recorded or billed: the chat endpoint still has all 3 of its requests.
    for _ in 0..3 {
        let a = post_messages(&s, "/v1/messages", &messages("openai/gpt", false), &[]).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
}

#[tokio::test]
async fn every_route_form_serves() {
    let s = setup().await;
    for path in ["/v1/messages", "/messages", "/api/v1/messages?beta=true"] {
        let a = post_messages(&s, path, &messages("openai/gpt", false), &[]).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
    }
}

#[tokio::test]
async fn a_gemini_stream_is_translated_too() {
    let gemini =
        FakeProvider::start(|_| Script::sse(events_of(&fixture("gemini/gemini_text.sse")))).await;
    let gw = Gateway::start(&format!(
        r#"
[[providers]]
name = "gem"
kind = "gemini"
base_url = "{}"
api_key = "k"
"#,
        gemini.base_url()
    ))
    .await;
    let body = json!({"model": "gem/gemini-2.5-flash", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let a = send(
        &client(),
        Request::post(gw.url("/v1/messages"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let ev = events(&a);
    let text: String = ev
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert!(!text.is_empty(), "{}", a.text());
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "end_turn");
    assert!(gemini.last().path.contains("streamGenerateContent"));
}
