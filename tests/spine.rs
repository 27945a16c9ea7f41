//! The whole stack (the proxy) against a fake OpenAI-compatible provider on 127.0.0.1:0.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn non_streaming_answer_is_stamped_and_passes_unknown_fields_both_ways() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    let body = r#"{"model":"vendor/fake-model","messages":[{"role":"user","content":"hi"}],"top_k":5,"x_custom":{"a":[1,2]},"temperature":0.2}"#;
    let a = post(&c, &gw.url("/v1/chat/completions"), body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let j = a.json();
    let id = a.headers["x-generation-id"].to_str().unwrap();
    assert!(id.starts_with("gen-"));
    assert_eq!(j["id"], id, "id and X-Generation-Id are one id");
    // A whole answer goes out with its length, not chunked.
    assert_eq!(
        a.headers["content-length"].to_str().unwrap(),
        a.body.len().to_string()
    );
    assert!(!a.headers.contains_key("transfer-encoding"));
    assert_eq!(j["model"], "vendor/fake-model", "model is the public id");
    assert_eq!(j["provider"], "fake");
    assert_eq!(
        j["choices"][0]["message"]["content"],
        "Tides come mostly from the Moon's pull on the oceans."
    );
    assert_eq!(j["usage"]["total_tokens"], 29);
    assert_eq!(
        j["x_vendor_extra"]["region"], "eu",
        "provider extras reach the client"
    );
    assert_eq!(j["system_fingerprint"], "fp_7c1d2a9e40");
    assert_eq!(
        j["choices"][0]["message"]["annotations"],
        serde_json::json!([])
    );

    let up = fake.last();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.body["model"], "text", "the upstream model name is sent");
    assert!(
        up.body.get("top_k").is_none(),
        "a parameter OpenAI does not take is dropped"
    );
    assert_eq!(
        up.body["x_custom"]["a"],
        serde_json::json!([1, 2]),
        "client extras reach the provider"
    );
    assert_eq!(up.body["temperature"], 0.2);
    assert_eq!(
        up.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str(),
        "the provider key, not the client's"
    );
    assert_eq!(up.headers["x-team"], "blue", "configured extra headers");
    for (name, value) in &up.headers {
        assert!(
            !value.to_str().unwrap_or("").contains("sk-client-secret"),
            "client credential leaked in {name}"
        );
    }
}

#[tokio::test]
async fn alias_and_pass_through_resolve() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("smart", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["model"], "vendor/fake-model");
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("fake/some/upstream-model", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["model"], "fake/some/upstream-model");
    assert_eq!(fake.last().body["model"], "some/upstream-model");
}

#[tokio::test]
async fn streams_end_with_usage_unless_configured_and_always_ask_upstream() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let only_asked = Gateway::in_front_of(&fake, r#"stream_usage = "requested""#).await;
    let c = client();

    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", true, true),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let id = a.headers["x-generation-id"].to_str().unwrap().to_owned();
    let chunks = a.chunks();
    assert_eq!(chunks.len(), 7, "6 content/finish chunks + the usage chunk");
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1, "role once");
    for c in &chunks {
        assert_eq!(c["id"], id.as_str());
        assert_eq!(c["model"], "vendor/fake-model");
        assert_eq!(c["provider"], "fake");
    }
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        "Tides come mostly from the Moon's pull on the oceans."
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], serde_json::json!([]));
    assert_eq!(last["usage"]["total_tokens"], 29);
    assert!(chunks[0]["usage"].is_null());
    assert_eq!(fake.last().body["stream_options"]["include_usage"], true);

    // Not asked: the usage chunk anyway, as OpenRouter sends it.
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", true, false),
    )
    .await;
    let chunks = a.chunks();
    assert_eq!(chunks.len(), 7);
    assert_eq!(chunks[6]["usage"]["total_tokens"], 29);
    assert!(
        chunks[6]["usage"]["cost"].as_f64().unwrap() > 0.0,
        "with its cost"
    );

    let a = post(
        &c,
        &only_asked.url("/v1/chat/completions"),
        chat("vendor/fake-model", true, false),
    )
    .await;
    let ev = a.events();
    assert_eq!(ev.len(), 7, "no usage chunk when the client did not ask");
    assert!(ev.iter().all(|e| !e.contains("\"usage\"")), "{ev:?}");
    assert_eq!(
        fake.last().body["stream_options"]["include_usage"],
        true,
        "upstream is asked anyway"
    );
}

#[tokio::test]
async fn tool_call_stream_keeps_identity_once() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("fake/tool", true, true),
    )
    .await;
    let chunks = a.chunks();
    let mut args = String::new();
    let mut ids = 0;
    for c in &chunks {
        if let Some(calls) = c["choices"][0]["delta"]["tool_calls"].as_array() {
            for call in calls {
                assert_eq!(call["index"], 0);
                if call.get("id").is_some() {
                    ids += 1;
                    assert_eq!(call["function"]["name"], "get_weather");
                }
                args.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    assert_eq!(ids, 1);
    assert_eq!(args, r#"{"city":"Lyon","unit":"celsius"}"#);
    assert_eq!(
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect::<Vec<_>>(),
        ["tool_calls"]
    );
}

/// Replaces the per-request generation id so two answers can be compared.
fn normalise_ids(text: &str, id: &str) -> String {
    text.replace(id, "GEN")
}

#[tokio::test]
async fn stream_split_at_every_byte_boundary_gives_identical_output() {
    let fixture = fixture("openai/openai_text.sse");
    let len = fixture.len();
    let split = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let s2 = split.clone();
    let fake = FakeProvider::start(move |_r| {
        let at = *s2.lock().unwrap();
        let f = support::fixture("openai/openai_text.sse");
        if at == usize::MAX {
            // One byte per frame.
            return Script::sse(
                f.iter()
                    .map(|b| Piece::Data(Bytes::copy_from_slice(&[*b])))
                    .collect(),
            );
        }
        Script::sse(vec![
            Piece::Data(f.slice(..at)),
            Piece::Pause(Duration::from_millis(1)),
            Piece::Data(f.slice(at..)),
        ])
    })
    .await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let body = chat("vendor/fake-model", true, true);
    let reference = {
        *split.lock().unwrap() = 0;
        let a = post(&c, &url, body.clone()).await;
        normalise_ids(&a.text(), a.headers["x-generation-id"].to_str().unwrap())
    };
    assert!(reference.ends_with("data: [DONE]\n\n"));
    let mut cases: Vec<usize> = (1..len).collect();
    cases.push(usize::MAX);
    for at in cases {
        *split.lock().unwrap() = at;
        let a = post(&c, &url, body.clone()).await;
        let got = normalise_ids(&a.text(), a.headers["x-generation-id"].to_str().unwrap());
        assert_eq!(got, reference, "split at {at}");
    }
}

#[tokio::test]
async fn provider_errors_keep_their_status_and_are_scrubbed() {
    let fake = FakeProvider::start(standard).await;
    // One attempt each, and no cool-down to speak of: every case reaches the provider.
    let gw = Gateway::in_front_of(
        &fake,
        "[fallback]\nretries_per_target = 0\nmax_cooldown_ms = 0\n",
    )
    .await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for (model, status, kind) in [
        ("fake/fail-400", 400, "invalid_request_error"),
        ("fake/fail-401", 502, "invalid_request_error"),
        ("fake/fail-429", 429, "requests"),
        ("fake/fail-500", 502, "server_error"),
        ("fake/fail-503", 503, "server_error"),
        ("fake/fail-529", 503, "overloaded_error"),
    ] {
        for stream in [false, true] {
            let a = post(&c, &url, chat(model, stream, true)).await;
            assert_eq!(
                a.status.as_u16(),
                status,
                "{model} stream={stream}: {}",
                a.text()
            );
            assert_eq!(
                a.headers["content-type"], "application/json",
                "before the first byte: a JSON answer"
            );
            let j = a.json();
            assert_eq!(j["error"]["type"], kind, "{model}");
            assert_eq!(j["error"]["metadata"]["provider_name"], "fake");
            assert!(j["error"]["metadata"]["raw"].is_string());
            assert!(
                !a.text().contains(PROVIDER_KEY),
                "the provider key leaked: {}",
                a.text()
            );
            assert!(a.headers.contains_key("x-generation-id"));
        }
    }
    let a = post(&c, &url, chat("fake/fail-429", false, false)).await;
    assert_eq!(a.headers["retry-after"], "2");
    assert_eq!(a.json()["error"]["code"], 429);
    assert_eq!(a.json()["error"]["metadata"]["code"], "rate_limit_exceeded");
    let a = post(&c, &url, chat("fake/fail-400", false, false)).await;
    assert_eq!(a.json()["error"]["param"], "messages");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length"));
}

#[tokio::test]
async fn malformed_provider_json_is_502() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("fake/garbage", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
}

#[tokio::test]
async fn refused_connection_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // No retries: six refusals in a row would cool the endpoint (and wait out real backoffs).
    let gw = Gateway::start(&format!(
        "[fallback]\nretries_per_target = 0\n\n[[providers]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n"
    ))
    .await;
    for stream in [false, true] {
        let a = post(
            &client(),
            &gw.url("/v1/chat/completions"),
            chat("dead/m", stream, false),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
        let j = a.json();
        assert!(
            j["error"]["message"]
                .as_str()
                .unwrap()
                .contains("connection refused"),
            "{j}"
        );
        assert_eq!(j["error"]["metadata"]["provider_name"], "dead");
    }
}

#[tokio::test]
async fn first_byte_timeout_is_504() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("fake/hang", true, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.json()["error"]["type"], "timeout_error");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("first-byte timeout"));
}

#[tokio::test]
async fn faults_after_the_200_become_exactly_one_error_event() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    for (model, needle) in [
        ("fake/cut", "failed"),
        ("fake/no-done", "ended before [DONE]"),
        ("fake/in-stream-error", "while processing your request"),
        ("fake/stall", "idle timeout"),
    ] {
        let a = post(&c, &gw.url("/v1/chat/completions"), chat(model, true, true)).await;
        assert_eq!(a.status, StatusCode::OK, "{model}");
        let ev = a.events();
        let last: serde_json::Value = serde_json::from_str(ev.last().unwrap()).unwrap();
        assert!(
            last["error"]["message"].as_str().unwrap().contains(needle),
            "{model}: {last}"
        );
        assert_eq!(
            ev.iter().filter(|e| e.contains("\"error\"")).count(),
            1,
            "{model}: exactly one error event"
        );
        assert!(
            !ev.iter().any(|e| e == "[DONE]"),
            "{model}: never a quiet [DONE]"
        );
        assert!(
            ev.len() >= 2,
            "{model}: content sent before the fault is kept"
        );
    }
}

#[tokio::test]
async fn json_answer_to_a_stream_request_is_replayed_as_a_stream() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("fake/json-for-stream", true, true),
    )
    .await;
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let ev = a.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let first: serde_json::Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(first["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap()
        .starts_with("Tides"));
    let usage: serde_json::Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 29);
}

#[tokio::test]
async fn bad_input_gets_the_envelope_with_the_right_status_and_message() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "max_body_bytes = 4096").await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let big = format!(
        r#"{{"model":"smart","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid request body"),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#.into(),
            400,
            "missing field `model`",
        ),
        (
            r#"{"model":"smart"}"#.into(),
            400,
            "missing field `messages`",
        ),
        (
            r#"{"model":"smart","messages":"hi"}"#.into(),
            400,
            "`messages`",
        ),
        (
            r#"{"model":"smart","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#
                .into(),
            400,
            "`temperature`",
        ),
        (
            r#"{"model":"smart","messages":[{"role":"wizard","content":"x"}]}"#.into(),
            400,
            "`messages[0].role`",
        ),
        (
            r#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#.into(),
            404,
            "`no-such-model` is not served",
        ),
        (
            r#"{"model":"ghost/m","messages":[{"role":"user","content":"x"}]}"#.into(),
            404,
            "`ghost/m`",
        ),
        (big, 413, "larger than the limit of 4096 bytes"),
    ];
    for (body, status, needle) in cases {
        let a = post(&c, &url, body.clone()).await;
        assert_eq!(a.status.as_u16(), status, "{body:.80}: {}", a.text());
        let j = a.json();
        assert_eq!(j["error"]["code"], status);
        assert!(
            j["error"]["message"].as_str().unwrap().contains(needle),
            "{body:.80}: {j}"
        );
        assert!(a.headers.contains_key("x-generation-id"));
    }
    assert_eq!(fake.count(), 0, "no bad request reached the provider");

    let a = send(
        &c,
        Request::get(gw.url("/v1/chat/completions"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    let a = send(
        &c,
        Request::get(gw.url("/nope"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn models_and_health() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    let a = send(
        &c,
        Request::get(gw.url("/v1/models"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let j = a.json();
    let m = &j["data"][0];
    assert_eq!(m["id"], "vendor/fake-model");
    assert_eq!(m["context_length"], 8192);
    assert_eq!(m["pricing"]["prompt"], "0.000003");
    assert_eq!(m["pricing"]["completion"], "0.000015");
    assert_eq!(m["endpoints"][0]["provider_name"], "fake");
    let a = send(
        &c,
        Request::get(gw.url("/health"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_all_complete() {
    let fake = FakeProvider::start(standard).await;
    // A thousand streams on a loaded 2-core machine can take longer than the 1.5 s first-byte
    // timeout the fault tests use; this test is about completion, not timeouts.
    let toml = standard_config(&fake, "")
        .replace(
            "first_byte_timeout_ms = 1500",
            "first_byte_timeout_ms = 60000",
        )
        .replace("idle_timeout_ms = 1500", "idle_timeout_ms = 60000");
    let gw = Gateway::start(&toml).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let body = chat("vendor/fake-model", true, true);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (c, url, body) = (c.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move { post(&c, &url, body).await }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        let ev = a.events();
        assert_eq!(ev.last().unwrap(), "[DONE]");
        assert_eq!(ev.len(), 8);
        ids.insert(a.headers["x-generation-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1000, "every request has its own generation id");
}

#[tokio::test]
async fn shutdown_lets_in_flight_streams_finish_and_stops_accepting() {
    let fake = FakeProvider::start(standard).await;
    let mut gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let in_flight = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, chat("fake/slow", true, false)).await }
    });
    while fake.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let served = gw.shutdown();
    let a = in_flight.await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.events().last().unwrap(),
        "[DONE]",
        "the in-flight stream finished"
    );
    // The client's connection, idle again, is closed at once: no waiting out the grace.
    tokio::time::timeout(Duration::from_secs(2), served)
        .await
        .expect("serve returns once nothing is in flight")
        .unwrap()
        .unwrap();
    let refused = client()
        .request(
            Request::post(url)
                .body(Full::new(Bytes::from(chat("smart", false, false))))
                .unwrap(),
        )
        .await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

/// An embedder's "no timeout" is `Duration::MAX`: the stack must take it as "never", not
/// overflow the clock on every request.
#[tokio::test]
async fn timeouts_and_keepalives_of_the_maximum_duration_mean_never() {
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use modelgate::chat::ChatRequest;
    use modelgate::dispatch::Dispatch;
    use modelgate::facts::Target;
    use modelgate::provider::{Provider, ProviderKind, Timeouts};
    use modelgate::stream_normalize::StreamNormalizeLayer;
    use tower::{Layer, ServiceExt};

    let fake = FakeProvider::start(standard).await;
    let provider = Arc::new(
        Provider::builder("fake", ProviderKind::OpenAi, fake.base_url())
            .api_key(Some(PROVIDER_KEY.into()))
            .timeouts(Timeouts {
                connect: Duration::MAX,
                first_byte: Duration::MAX,
                idle: Duration::MAX,
            })
            .build()
            .unwrap(),
    );
    let svc = StreamNormalizeLayer::new()
        .keepalive_interval(Some(Duration::MAX))
        .layer(Dispatch::new([&provider]));
    for stream in [false, true] {
        let mut req = Request::new(
            serde_json::from_value::<ChatRequest>(serde_json::json!({
                "model": "m", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]
            }))
            .unwrap(),
        );
        req.extensions_mut()
            .insert(Target::new(provider.clone(), "up-model", "m"));
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        if stream {
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        } else {
            assert!(text.contains("\"choices\""), "{text}");
        }
    }
}

/// `0` for a provider's timeouts is "none", as `deadline_ms = 0` is no deadline; before, it
/// timed every request out at once.
#[tokio::test]
async fn zero_timeouts_in_the_config_mean_none() {
    let fake = FakeProvider::start(standard).await;
    let toml = standard_config(&fake, "")
        .replace(
            "first_byte_timeout_ms = 1500",
            "first_byte_timeout_ms = 0\nconnect_timeout_ms = 0",
        )
        .replace("idle_timeout_ms = 1500", "idle_timeout_ms = 0");
    let gw = Gateway::start(&toml).await;
    let c = client();
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // A stream with pauses between its events: no idle timeout cuts it.
    let s = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("fake/slow", true, false),
    )
    .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text());
    assert_eq!(
        s.events().last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        s.text()
    );
}
