//! The proxy in front of fake Anthropic, Gemini and Azure providers speaking their own wire
//! formats: URLs, auth headers, translated requests, answers and streams, errors.

mod support;

use http::StatusCode;
use serde_json::{json, Value};
use support::*;

fn config(fake: &FakeProvider, kind: &str, extra_provider: &str) -> String {
    let base = format!("http://{}", fake.addr);
    format!(
        r#"
[[providers]]
name = "up"
kind = "{kind}"
base_url = "{base}"
api_key = "{PROVIDER_KEY}"
first_byte_timeout_ms = 1500
idle_timeout_ms = 1500
{extra_provider}

[[models]]
id = "vendor/m"
[[models.endpoints]]
provider = "up"
model = "up-model"
prompt_price = 1.0
completion_price = 2.0
max_output_tokens = 777
"#
    )
}

const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x","content":[
  {"type":"thinking","thinking":"Let me look.","signature":"SIG=="},
  {"type":"text","text":"Checking."},
  {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Lyon"}}],
  "stop_reason":"tool_use","stop_sequence":null,
  "usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":20,"output_tokens":7}}"#;

fn anthropic(r: &Received) -> Script {
    let stream = r.body["stream"].as_bool().unwrap_or(false);
    let last = r.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    let says = |t: &str| last["content"].to_string().contains(t);
    if says("overloaded") {
        return Script::json(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
    }
    if says("cut") && stream {
        let mut pieces = events_of(&fixture("anthropic/anthropic_text.sse"));
        pieces.truncate(4);
        pieces.push(Piece::Cut);
        return Script::sse(pieces);
    }
    if says("cache me") && stream {
        // A stream that read 2,048 prompt tokens from the cache and wrote 100 to it.
        let text = String::from_utf8(fixture("anthropic/anthropic_text.sse").to_vec())
            .unwrap()
            .replace(
                r#""cache_creation_input_tokens":0"#,
                r#""cache_creation_input_tokens":100"#,
            );
        return Script::sse(events_of(text.as_bytes()));
    }
    if says("for an hour") {
        // 10 input tokens, 20 read from the cache, 500 written to it (200 of them for an hour).
        let by_ttl =
            r#""cache_creation":{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":200}"#;
        if !stream {
            return Script::json(
                200,
                ANTHROPIC_MESSAGE.replace(
                    r#""cache_creation_input_tokens":5"#,
                    &format!(r#""cache_creation_input_tokens":500,{by_ttl}"#),
                ),
            );
        }
        let text = String::from_utf8(fixture("anthropic/anthropic_text.sse").to_vec())
            .unwrap()
            .replace(
                r#""cache_creation_input_tokens":0,"cache_read_input_tokens":2048"#,
                &format!(
                    r#""cache_creation_input_tokens":500,"cache_read_input_tokens":20,{by_ttl}"#
                ),
            );
        return Script::sse(events_of(text.as_bytes()));
    }
    if says("midway") && stream {
        return Script::sse(events_of(&fixture("anthropic/anthropic_error.sse")));
    }
    if stream {
        return Script::sse(events_of(&fixture("anthropic/anthropic_tool.sse")));
    }
    Script::json(200, ANTHROPIC_MESSAGE)
}

#[tokio::test]
async fn anthropic_non_streaming_round_trip_with_thinking_signature() {
    let fake = FakeProvider::start(anthropic).await;
    let gw = Gateway::start(&config(&fake, "anthropic", "")).await;
    let c = client();
    let body = r#"{"model":"vendor/m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"weather in Lyon?"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],"temperature":1.5}"#;
    let a = post(&c, &gw.url("/v1/chat/completions"), body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let up = fake.last();
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.headers["x-api-key"], PROVIDER_KEY);
    assert_eq!(up.headers["anthropic-version"], "2023-06-01");
    assert!(up.headers.get("authorization").is_none());
    assert_eq!(up.body["model"], "up-model");
    assert_eq!(
        up.body["max_tokens"], 777,
        "the endpoint's max_output_tokens"
    );
    assert_eq!(up.body["temperature"], 1.0);
    assert_eq!(
        up.body["system"],
        json!([{"type":"text","text":"be brief"}])
    );

    let j = a.json();
    assert_eq!(j["id"], a.headers["x-generation-id"].to_str().unwrap());
    assert_eq!(j["model"], "vendor/m");
    assert_eq!(j["provider"], "up");
    assert_eq!(j["object"], "chat.completion");
    let choice = &j["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["native_finish_reason"], "tool_use");
    let msg = &choice["message"];
    assert_eq!(msg["content"], "Checking.");
    assert_eq!(msg["reasoning_content"], "Let me look.");
    let call = &msg["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Lyon"}"#);
    assert_eq!(
        j["usage"],
        json!({"prompt_tokens":35,"completion_tokens":7,"total_tokens":42,
               "prompt_tokens_details":{"cached_tokens":20,"cache_write_tokens":5},
               // 35 × $1/M + 7 × $2/M, at the endpoint's prices.
               "cost": 0.000049})
    );

    // The next turn sends the assistant message back as the client got it: the thinking block
    // (with its signature) goes upstream before the tool_use.
    let next = json!({"model":"vendor/m","messages":[
        {"role":"user","content":"weather in Lyon?"},
        msg,
        {"role":"tool","tool_call_id":"toolu_1","content":"sunny"}]});
    let a = post(&c, &gw.url("/v1/chat/completions"), next.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let up = fake.last();
    assert_eq!(
        up.body["messages"][1]["content"],
        json!([{"type":"thinking","thinking":"Let me look.","signature":"SIG=="},
               {"type":"text","text":"Checking."},
               {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Lyon"}}])
    );
    assert_eq!(
        up.body["messages"][2],
        json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"}]})
    );
}

#[tokio::test]
async fn prompt_cache_reads_and_writes_are_charged_at_their_own_prices() {
    const KEY: &str = "sk-cache-test-key-0123456789";
    let fake = FakeProvider::start(anthropic).await;
    let toml = config(&fake, "anthropic", "").replace(
        "completion_price = 2.0",
        "completion_price = 2.0\ncache_read_price = 0.1\ncache_write_price = 1.25",
    ) + &format!("\n[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n");
    let gw = Gateway::start(&toml).await;
    let c = client();
    let call = |method: http::Method, path: &str, body: String| {
        let req = http::Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        send(&c, req)
    };
    let record = |id: String| {
        call(
            http::Method::GET,
            &format!("/v1/generation?id={id}"),
            String::new(),
        )
    };

    // Not streamed: 10 input tokens, 20 read from the cache, 5 written to it, 7 output.
    let body = r#"{"model":"vendor/m","messages":[{"role":"user","content":"hi"}]}"#;
    let a = call(http::Method::POST, "/v1/chat/completions", body.into()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let cost = a.json()["usage"]["cost"].as_f64().unwrap();
    let want = (10.0 * 1.0 + 20.0 * 0.1 + 5.0 * 1.25 + 7.0 * 2.0) / 1e6;
    assert!((cost - want).abs() < 1e-18, "{cost} against {want}");
    gw.flush().await;
    let id = a.headers["x-generation-id"].to_str().unwrap().to_owned();
    let r = record(id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let d = &r.json()["data"];
    assert_eq!(
        (
            &d["prompt_tokens"],
            &d["cached_tokens"],
            &d["cache_write_tokens"]
        ),
        (&json!(35), &json!(20), &json!(5))
    );
    assert_eq!(
        d["cost"].as_f64(),
        Some(cost),
        "the record's cost is the answer's"
    );

    // Streamed: 23 input tokens, 2,048 read, 100 written, 14 output.
    let body = r#"{"model":"vendor/m","stream":true,"stream_options":{"include_usage":true},
        "messages":[{"role":"user","content":"cache me"}]}"#;
    let s = call(http::Method::POST, "/v1/chat/completions", body.into()).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text());
    let usage = s.chunks().last().unwrap()["usage"].clone();
    assert_eq!(
        usage["prompt_tokens_details"],
        json!({"cached_tokens":2048,"cache_write_tokens":100})
    );
    let cost = usage["cost"].as_f64().unwrap();
    let want = (23.0 * 1.0 + 2048.0 * 0.1 + 100.0 * 1.25 + 14.0 * 2.0) / 1e6;
    assert!((cost - want).abs() < 1e-18, "{cost} against {want}");
    gw.flush().await;
    let id = s.headers["x-generation-id"].to_str().unwrap().to_owned();
    let d = record(id).await.json()["data"].clone();
    assert_eq!(
        (&d["cached_tokens"], &d["cache_write_tokens"]),
        (&json!(2048), &json!(100))
    );
    assert_eq!(d["cost"].as_f64(), Some(cost));

    // The key's spend is the sum; the model list shows the cache prices per token.
    let k = call(http::Method::GET, "/v1/key", String::new())
        .await
        .json();
    let spent = k["data"]["usage"].as_f64().unwrap();
    assert!((spent - (32.25 + 380.8) / 1e6).abs() < 1e-15, "{spent}");
    let m = call(http::Method::GET, "/v1/models", String::new())
        .await
        .json();
    let model = &m["data"][0];
    for pricing in [&model["pricing"], &model["endpoints"][0]["pricing"]] {
        assert_eq!(pricing["input_cache_read"], "0.0000001", "{pricing}");
        assert_eq!(pricing["input_cache_write"], "0.00000125", "{pricing}");
    }
    let metrics = call(http::Method::GET, "/metrics", String::new())
        .await
        .text();
    let written: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("modelgate_tokens_total{")
                && l.contains(r#"kind="cache_write""#)
                && l.contains(r#"model="vendor/m""#)
                // Not another test's failed request (`provider="none"`): the process shares one
                // recorder.
                && l.contains(r#"provider="up""#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no cache_write tokens in\n{metrics}"));
    assert!(written >= 105.0, "{written}");
}

#[tokio::test]
async fn one_hour_prompt_cache_writes_are_charged_at_their_own_price() {
    const KEY: &str = "sk-cache-test-key-0123456789";
    let fake = FakeProvider::start(anthropic).await;
    let prices = "completion_price = 2.0\ncache_read_price = 0.1\ncache_write_price = 1.25";
    let keyed = |toml: String| toml + &format!("\n[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n");
    let c = client();
    let call = |method: http::Method, url: String, body: String| {
        let req = http::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        send(&c, req)
    };
    let post = |url: String, body: String| call(http::Method::POST, url, body);
    let get = |url: String| call(http::Method::GET, url, String::new());
    let ask = |stream: bool| {
        format!(
            r#"{{"model":"vendor/m","stream":{stream},"stream_options":{{"include_usage":true}},
                "messages":[{{"role":"user","content":"cache this for an hour"}}]}}"#
        )
    };
    let usage_of = |a: &Answer, stream: bool| {
        if stream {
            a.chunks().last().unwrap()["usage"].clone()
        } else {
            a.json()["usage"].clone()
        }
    };
    let details = json!({"cached_tokens":20,"cache_write_tokens":500,
        "cache_creation_token_details":{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":200}});

    // With a one-hour price: 20 read, 300 five-minute writes, 200 one-hour writes.
    let gw = Gateway::start(&keyed(config(&fake, "anthropic", "").replace(
        "completion_price = 2.0",
        &format!("{prices}\ncache_write_1h_price = 2.0"),
    )))
    .await;
    // (The stream's fixture has 23 input tokens and 14 output; the message 10 and 7.)
    for (stream, input, output) in [(false, 10.0, 7.0), (true, 23.0, 14.0)] {
        let a = post(gw.url("/v1/chat/completions"), ask(stream)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let usage = usage_of(&a, stream);
        assert_eq!(usage["prompt_tokens"], input + 520.0, "{usage}");
        assert_eq!(usage["prompt_tokens_details"], details);
        let cost = usage["cost"].as_f64().unwrap();
        let want = (input * 1.0 + 20.0 * 0.1 + 300.0 * 1.25 + 200.0 * 2.0 + output * 2.0) / 1e6;
        assert!((cost - want).abs() < 1e-18, "{cost} against {want}");
        gw.flush().await;
        let id = a.headers["x-generation-id"].to_str().unwrap();
        let r = get(gw.url(&format!("/v1/generation?id={id}"))).await;
        let d = &r.json()["data"];
        assert_eq!(d["cache_write_tokens"], 500, "{d}");
        assert_eq!(
            d["cost"].as_f64(),
            Some(cost),
            "the record's cost is the answer's"
        );
    }
    let m = get(gw.url("/v1/models")).await.json();
    assert_eq!(m["data"][0]["pricing"]["input_cache_write_1h"], "0.000002");

    // Without one, every write is at the write price, as before.
    let gw = Gateway::start(&keyed(
        config(&fake, "anthropic", "").replace("completion_price = 2.0", prices),
    ))
    .await;
    let a = post(gw.url("/v1/chat/completions"), ask(false)).await;
    let cost = usage_of(&a, false)["cost"].as_f64().unwrap();
    let want = (10.0 * 1.0 + 20.0 * 0.1 + 500.0 * 1.25 + 7.0 * 2.0) / 1e6;
    assert!((cost - want).abs() < 1e-18, "{cost} against {want}");
    let m = get(gw.url("/v1/models")).await.json();
    assert!(m["data"][0]["pricing"]
        .get("input_cache_write_1h")
        .is_none());
}

#[tokio::test]
async fn anthropic_stream_through_the_proxy() {
    let fake = FakeProvider::start(anthropic).await;
    let gw = Gateway::start(&config(&fake, "anthropic", "")).await;
    let c = client();
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/m", true, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(fake.last().body["stream"], true);
    let chunks = a.chunks();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls.last().unwrap()["index"], 1);
    assert_eq!(calls.last().unwrap()["function"]["arguments"], "{}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], serde_json::json!([]));
    assert!(
        last["usage"]["total_tokens"].is_u64(),
        "every stream ends with the usage chunk: {last}"
    );
    assert_eq!(a.events().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn anthropic_errors_before_and_after_the_first_byte() {
    let fake = FakeProvider::start(anthropic).await;
    // No retries: six 529s in a row would cool the only endpoint (and wait out real backoffs).
    let no_retries = "[fallback]\nretries_per_target = 0\n";
    let gw = Gateway::start(&config(&fake, "anthropic", no_retries)).await;
    let c = client();
    let body = |text: &str, stream: bool| {
        json!({"model":"vendor/m","stream":stream,"messages":[{"role":"user","content":text}]})
            .to_string()
    };
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        body("overloaded", false),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "529 becomes 503");
    assert_eq!(a.json()["error"]["type"], "overloaded_error");
    assert_eq!(a.json()["error"]["metadata"]["provider_name"], "up");

    let a = post(&c, &gw.url("/v1/chat/completions"), body("midway", true)).await;
    assert_eq!(a.status, StatusCode::OK);
    let events = a.events();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "overloaded_error");
    assert_eq!(events.iter().filter(|e| e.contains("\"error\"")).count(), 1);
    assert!(!events.iter().any(|e| e == "[DONE]"));

    let a = post(&c, &gw.url("/v1/chat/completions"), body("cut", true)).await;
    let events = a.events();
    assert!(
        events.last().unwrap().contains("\"error\""),
        "a cut is an error: {events:?}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));

    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        r#"{"model":"vendor/m","n":2,"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["param"], "n");
}

fn gemini(r: &Received) -> Script {
    if r.body["contents"][0]["parts"][0]["text"] == "quota" {
        return Script::json(
            429,
            r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#,
        );
    }
    if r.path.contains(":streamGenerateContent") {
        let mut s = Script::sse(events_of(&fixture("gemini/gemini_tool.sse")));
        if r.body["contents"][0]["parts"][0]["text"] == "text" {
            s = Script::sse(events_of(&fixture("gemini/gemini_text.sse")));
        }
        return s;
    }
    Script::json(
        200,
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hmm","thought":true},{"text":"It is sunny."}]},"finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"thoughtsTokenCount":3,"cachedContentTokenCount":2,"totalTokenCount":16},
            "modelVersion":"gemini-x","responseId":"r1"}"#,
    )
}

#[tokio::test]
async fn gemini_answers_streams_and_tool_round_trip() {
    let fake = FakeProvider::start(gemini).await;
    let gw = Gateway::start(&config(&fake, "gemini", "")).await;
    let c = client();
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/m", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let up = fake.last();
    assert_eq!(up.path, "/v1beta/models/up-model:generateContent");
    assert_eq!(up.headers["x-goog-api-key"], PROVIDER_KEY);
    assert_eq!(up.body["generationConfig"]["maxOutputTokens"], 777);
    let j = a.json();
    assert_eq!(j["choices"][0]["message"]["content"], "It is sunny.");
    assert_eq!(j["choices"][0]["message"]["reasoning_content"], "Hmm");
    assert_eq!(j["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        j["usage"],
        json!({"prompt_tokens":9,"completion_tokens":7,"total_tokens":16,
               "prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":3},
               // 9 × $1/M + 7 × $2/M, at the endpoint's prices.
               "cost": 0.000023})
    );

    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/m", true, true),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        fake.last().path,
        "/v1beta/models/up-model:streamGenerateContent?alt=sse"
    );
    let chunks = a.chunks();
    let calls: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0]["extra_content"]["google"]["thought_signature"],
        "CiQBcsjafakeSignatureBytesForFixtureOnlyAAAAAAAAAAAAAA=="
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_owned));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 181);
    assert_eq!(
        a.events().last().unwrap(),
        "[DONE]",
        "Gemini's end of body after a finish"
    );

    // Next turn: results map back to the function names, the signature goes back.
    let assistant = json!({"role":"assistant","content":null,"tool_calls":[
        {"id":calls[0]["id"],"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\"}"},"extra_content":calls[0]["extra_content"]},
        {"id":calls[1]["id"],"type":"function","function":{"name":"get_local_time","arguments":"{}"}}]});
    let next = json!({"model":"vendor/m","messages":[{"role":"user","content":"weather and time?"}, assistant,
        {"role":"tool","tool_call_id":calls[0]["id"],"content":"sunny"},
        {"role":"tool","tool_call_id":calls[1]["id"],"content":"noon"}]});
    let a = post(&c, &gw.url("/v1/chat/completions"), next.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let up = fake.last();
    assert_eq!(
        up.body["contents"][1]["parts"][0]["thoughtSignature"],
        "CiQBcsjafakeSignatureBytesForFixtureOnlyAAAAAAAAAAAAAA=="
    );
    assert_eq!(
        up.body["contents"][2],
        json!({"role":"user","parts":[
            {"functionResponse":{"name":"get_weather","response":{"output":"sunny"}}},
            {"functionResponse":{"name":"get_local_time","response":{"output":"noon"}}}]})
    );

    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        r#"{"model":"vendor/m","messages":[{"role":"user","content":"quota"}]}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        a.headers["retry-after"], "37",
        "RetryInfo becomes Retry-After"
    );
}

#[tokio::test]
async fn azure_deployment_and_v1_urls() {
    let fake = FakeProvider::start(standard).await;
    let c = client();
    let gw = Gateway::start(&config(&fake, "azure", r#"api_version = "2024-10-21""#)).await;
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/m", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let up = fake.last();
    assert_eq!(
        up.path,
        "/openai/deployments/up-model/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(up.headers["api-key"], PROVIDER_KEY);
    assert!(up.headers.get("authorization").is_none());

    let gw = Gateway::start(&config(&fake, "azure", "")).await;
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/m", true, true),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(fake.last().path, "/openai/v1/chat/completions");
    assert_eq!(fake.last().body["model"], "up-model");
}

#[tokio::test]
async fn a_model_in_the_url_path_is_never_a_dot_segment_or_a_separator() {
    let fake = FakeProvider::start(standard).await;
    let c = client();
    for (kind, extra) in [("azure", r#"api_version = "2024-10-21""#), ("gemini", "")] {
        let gw = Gateway::start(&config(&fake, kind, extra)).await;
        for model in ["..", ".", "../../x", "a/b", "a\\b"] {
            let body = chat(&format!("up/{model}"), false, false);
            let a = post(&c, &gw.url("/v1/chat/completions"), body).await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{kind} `{model}`: {}",
                a.text()
            );
            assert_eq!(a.json()["error"]["param"], "model");
        }
        // `...` is an ordinary name.
        let a = post(
            &c,
            &gw.url("/v1/chat/completions"),
            chat("up/...", false, false),
        )
        .await;
        assert_ne!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    }
    let paths: Vec<String> = fake
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(!paths.is_empty());
    for p in &paths {
        assert!(
            p.contains("/...") && !p.contains("/../") && !p.contains("%2F"),
            "{p}"
        );
    }
    // A catalog endpoint so named is a start-up error.
    let toml = config(&fake, "azure", r#"api_version = "2024-10-21""#)
        .replace(r#"model = "up-model""#, r#"model = "..""#);
    let err = modelgate::proxy::Proxy::from_config(
        &modelgate::proxy::Config::from_toml(&toml).unwrap(),
        &|_: &str| None,
    )
    .await
    .unwrap_err();
    assert!(err.0.contains("cannot be a segment"), "{err}");
}
