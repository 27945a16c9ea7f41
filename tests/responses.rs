//! The OpenAI Responses dialect through the proxy, translated for every provider kind:
//! answers, streams in the Responses grammar, tools, reasoning carried between turns, the
//! stateless refusals, errors, a cut stream, and the usage records.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";

fn config(oai: &FakeProvider, anth: &FakeProvider) -> String {
    format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[[providers]]
name = "oai"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"
first_byte_timeout_ms = 1500
idle_timeout_ms = 1500

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[models]]
id = "openai/gpt"
[[models.endpoints]]
provider = "oai"
model = "text"
prompt_price = 3.0
completion_price = 15.0

[[models]]
id = "openai/tool"
[[models.endpoints]]
provider = "oai"
model = "tool"
prompt_price = 3.0
completion_price = 15.0

[[models]]
id = "openai/cut"
[[models.endpoints]]
provider = "oai"
model = "cut"
prompt_price = 3.0
completion_price = 15.0

[[models]]
id = "anthropic/thinking"
[[models.endpoints]]
provider = "anth"
model = "claude-thinking"
prompt_price = 3.0
completion_price = 15.0
"#,
        oai.base_url(),
        anth.base_url()
    )
}

struct Setup {
    oai: FakeProvider,
    _anth: FakeProvider,
    gw: Gateway,
    c: HttpClient,
}

async fn setup() -> Setup {
    let oai = FakeProvider::start(standard).await;
    let anth = FakeProvider::start(standard_anthropic).await;
    let gw = Gateway::start(&config(&oai, &anth)).await;
    Setup {
        oai,
        _anth: anth,
        gw,
        c: client(),
    }
}

async fn post_responses(s: &Setup, path: &str, body: &Value) -> Answer {
    let req = Request::post(s.gw.url(path))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send(&s.c, req).await
}

fn events(a: &Answer) -> Vec<Value> {
    modelgate::dialect::responses::check_event_sequence(&a.body)
        .unwrap_or_else(|e| panic!("{e}\n{}", a.text()));
    modelgate::sse::decode_chunks([a.body.as_ref()])
        .into_iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
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

const TIDES: &str = "Tides come mostly from the Moon's pull on the oceans.";

#[tokio::test]
async fn an_answer_is_a_response_object() {
    let s = setup().await;
    let body = json!({"model": "openai/gpt", "instructions": "Be brief.", "input": "Why tides?",
        "store": true, "metadata": {"k": "v"}, "models": ["openai/tool"], "provider": {"sort": "price"}});
    let a = post_responses(&s, "/v1/responses", &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["id"], a.headers["x-generation-id"].to_str().unwrap());
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "openai/gpt");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], TIDES);
    assert_eq!(v["usage"]["input_tokens"], 18);
    assert_eq!(v["usage"]["output_tokens"], 11);
    assert_eq!(v["usage"]["total_tokens"], 29);
    assert!(v["usage"]["cost"].as_f64().unwrap() > 0.0);
    let up = s.oai.last().body;
    assert_eq!(
        up["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        up["messages"][1],
        json!({"role": "user", "content": "Why tides?"})
    );
    for gone in [
        "store",
        "metadata",
        "instructions",
        "input",
        "models",
        "provider",
    ] {
        assert!(up.get(gone).is_none(), "{gone} went upstream: {up}");
    }
    let r = generation(&s, &a).await;
    assert_eq!(r["dialect"], "responses");
    assert_eq!(r["prompt_tokens"], 18);
}

#[tokio::test]
async fn a_stream_follows_the_responses_grammar() {
    let s = setup().await;
    let body = json!({"model": "openai/gpt", "input": "Why tides?", "stream": true});
    let a = post_responses(&s, "/v1/responses", &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let ev = events(&a);
    assert_eq!(ev[0]["type"], "response.created");
    assert_eq!(ev[1]["type"], "response.in_progress");
    let text: String = ev
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, TIDES);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], TIDES);
    assert_eq!(last["response"]["usage"]["total_tokens"], 29);
    assert!(!a.text().contains("[DONE]"));
    assert_eq!(
        s.oai.last().body["stream_options"]["include_usage"],
        true,
        "the upstream is always asked for usage"
    );
}

#[tokio::test]
async fn tools_both_ways() {
    let s = setup().await;
    let body = json!({"model": "openai/tool", "input": "Weather in Lyon?", "stream": true,
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true},
                  {"type": "web_search"}]});
    let a = post_responses(&s, "/v1/responses", &body).await;
    let ev = events(&a);
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.output_item.done" && e["item"]["type"] == "function_call")
        .expect("a function call");
    assert_eq!(done["item"]["name"], "get_weather");
    let args: Value = serde_json::from_str(done["item"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Lyon");
    let up = s.oai.last().body;
    assert_eq!(
        up["tools"].as_array().unwrap().len(),
        1,
        "the hosted tool is left out: {up}"
    );
    assert_eq!(up["tools"][0]["function"]["strict"], true);
    // The call's output goes back as a tool message.
    let call_id = done["item"]["call_id"].as_str().unwrap();
    let body = json!({"model": "openai/gpt", "input": [
        {"role": "user", "content": "Weather in Lyon?"},
        done["item"].clone(),
        {"type": "function_call_output", "call_id": call_id, "output": "21 C"}]});
    let a = post_responses(&s, "/v1/responses", &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let m = &s.oai.last().body["messages"];
    assert_eq!(m[1]["tool_calls"][0]["id"], call_id);
    assert_eq!(
        m[2],
        json!({"role": "tool", "content": "21 C", "tool_call_id": call_id})
    );
}

#[tokio::test]
async fn reasoning_from_claude_is_summarised() {
    let s = setup().await;
    let body = json!({"model": "anthropic/thinking", "input": "17*24?", "stream": true,
        "include": ["reasoning.encrypted_content"]});
    let a = post_responses(&s, "/v1/responses", &body).await;
    let ev = events(&a);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    let out = &last["response"]["output"];
    assert_eq!(out[0]["type"], "reasoning");
    assert!(out[0]["summary"][0]["text"]
        .as_str()
        .unwrap()
        .contains("408"));
    assert_eq!(out[1]["content"][0]["text"], "17 × 24 = 408.");
}

#[tokio::test]
async fn the_gateway_is_stateless_and_says_so() {
    let s = setup().await;
    for (field, value) in [
        ("previous_response_id", json!("resp_1")),
        ("conversation", json!("conv_1")),
        ("background", json!(true)),
    ] {
        let mut body = json!({"model": "openai/gpt", "input": "hi"});
        body[field] = value;
        let a = post_responses(&s, "/v1/responses", &body).await;
        assert_eq!(a.status, 400, "{field}");
        let e = &a.json()["error"];
        assert_eq!(e["param"], field);
        assert!(e["message"].as_str().unwrap().contains("stateless"), "{e}");
    }
    let req = Request::get(s.gw.url("/v1/responses/resp_123"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(&s.c, req).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stateless"));
    assert_eq!(s.oai.count(), 0);
}

#[tokio::test]
async fn errors_are_in_openais_envelope() {
    let s = setup().await;
    let a = post_responses(
        &s,
        "/v1/responses",
        &json!({"model": "nope/none", "input": "hi"}),
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["type"], "not_found_error");
    let req = Request::post(s.gw.url("/v1/responses"))
        .body(Full::new(Bytes::from(
            json!({"model": "openai/gpt", "input": "hi"}).to_string(),
        )))
        .unwrap();
    let a = send(&s.c, req).await;
    assert_eq!(a.status, 401);
    assert!(a.json()["error"]["message"].is_string());
    let a = post_responses(&s, "/v1/responses", &json!({"model": "openai/gpt", "input": [{"type": "message", "role": "user", "content": 5}]})).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["param"], "input[0].content");
}

#[tokio::test]
async fn a_cut_stream_is_one_failed_event_and_recorded() {
    let s = setup().await;
    let a = post_responses(
        &s,
        "/v1/responses",
        &json!({"model": "openai/cut", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(a.status, 200);
    let ev = events(&a);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert!(last["response"]["error"]["message"].is_string());
    let r = generation(&s, &a).await;
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    assert_eq!(r["dialect"], "responses");
}

#[tokio::test]
async fn every_route_form_serves() {
    let s = setup().await;
    for path in ["/v1/responses", "/responses", "/api/v1/responses"] {
        let a = post_responses(&s, path, &json!({"model": "openai/gpt", "input": "hi"})).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
    }
}

async fn native_setup() -> (FakeProvider, Gateway) {
    let fake = FakeProvider::start(standard_openai_responses).await;
    let gw = Gateway::start(&format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[[providers]]
name = "oair"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"
responses = true

[[models]]
id = "openai/gpt-5"
[[models.endpoints]]
provider = "oair"
model = "gpt-5"
prompt_price = 1.25
completion_price = 10.0

[[models]]
id = "openai/gpt-5-cut"
[[models.endpoints]]
provider = "oair"
model = "gpt-5-cut"
prompt_price = 1.25
completion_price = 10.0
"#,
        fake.base_url()
    ))
    .await;
    (fake, gw)
}

#[tokio::test]
async fn a_responses_endpoint_is_served_natively() {
    let (fake, gw) = native_setup().await;
    let c = client();
    let post = |body: Value| {
        Request::post(gw.url("/v1/responses"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    let body = json!({"model": "openai/gpt-5", "input": "hi", "store": false, "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"], "x_future_field": {"a": 1}, "models": [], "provider": {"sort": "price"}});
    let a = send(&c, post(body.clone())).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["model"], "openai/gpt-5");
    assert_eq!(v["id"], "resp_up1", "the provider's answer, as it came");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hi there");
    // Upstream: the body as it came, model rewritten, the gateway's fields removed.
    let up = fake.last();
    assert_eq!(up.path, "/v1/responses");
    let mut sent = body.clone();
    sent["model"] = json!("gpt-5");
    sent.as_object_mut().unwrap().remove("models");
    sent.as_object_mut().unwrap().remove("provider");
    assert_eq!(up.body, sent);
    gw.flush().await;
    let id = a.headers["x-generation-id"].to_str().unwrap();
    let req = Request::get(gw.url(&format!("/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&c, req).await.json()["data"].clone();
    assert_eq!(
        (r["prompt_tokens"].as_u64(), r["cached_tokens"].as_u64()),
        (Some(20), Some(8))
    );
    assert_eq!(r["completion_tokens"], 6);
    assert_eq!(r["dialect"], "responses");

    // Streamed: the provider's events, model rewritten in the response objects.
    let mut body = body;
    body["stream"] = json!(true);
    let a = send(&c, post(body)).await;
    let ev = events(&a);
    assert_eq!(ev[0]["response"]["model"], "openai/gpt-5");
    assert_eq!(ev.last().unwrap()["type"], "response.completed");
    assert_eq!(ev.last().unwrap()["response"]["usage"]["total_tokens"], 26);
    assert!(!a.text().contains("gpt-5-2025-08-07"));

    // A cut: one response.failed, numbered after the provider's last event, and recorded.
    let a = send(
        &c,
        post(json!({"model": "openai/gpt-5-cut", "input": "hi", "stream": true})),
    )
    .await;
    let ev = events(&a);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["sequence_number"], 5);
    gw.flush().await;
    let id = a.headers["x-generation-id"].to_str().unwrap();
    let req = Request::get(gw.url(&format!("/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&c, req).await.json()["data"].clone();
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
}
