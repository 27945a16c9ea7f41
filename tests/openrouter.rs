//! OpenRouter's request and answer rules through the whole proxy: the gateway's own fields
//! never reach a provider, parameters an endpoint does not take are dropped, what the gateway
//! does not offer is refused by name, the privacy filters, middle-out, the error chunk, the
//! reasoning switches and app attribution.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";

/// `strict` (as strict as OpenAI), `lenient` (a vLLM host that takes `top_k`) and an
/// Anthropic-kind endpoint, each behind public models.
async fn gateway(strict: &FakeProvider, lenient: &FakeProvider, anth: &FakeProvider) -> Gateway {
    let toml = format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[fallback]
retries_per_target = 0

[[providers]]
name = "openai"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "vllm"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[models]]
id = "openai/gpt"
context_length = 400
[[models.endpoints]]
provider = "openai"
model = "text"
prompt_price = 1.0
completion_price = 2.0

[[models]]
id = "openai/broken"
[[models.endpoints]]
provider = "openai"
model = "in-stream-error"

[[models]]
id = "meta/llama"
[[models.endpoints]]
provider = "vllm"
model = "text"
supported_parameters = ["temperature", "top_k", "max_tokens"]
data_collection = "deny"
zdr = true
quantization = "fp8"

[[models]]
id = "anthropic/thinking"
[[models.endpoints]]
provider = "anth"
model = "claude-thinking"
"#,
        strict.base_url(),
        lenient.base_url(),
        anth.base_url()
    );
    Gateway::start(&toml).await
}

async fn ask(gw: &Gateway, body: Value) -> Answer {
    post(
        &client(),
        &gw.url("/api/v1/chat/completions"),
        body.to_string(),
    )
    .await
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn openrouter_fields_never_reach_a_provider_and_unsupported_parameters_are_dropped() {
    let (strict, lenient, anth) = (
        FakeProvider::start(strict_openai).await,
        FakeProvider::start(standard).await,
        FakeProvider::start(standard_anthropic).await,
    );
    let gw = gateway(&strict, &lenient, &anth).await;
    let everything = json!({
        "model": "openai/gpt", "messages": user("hi"),
        "usage": {"include": true}, "transforms": ["middle-out"], "session_id": "s-1",
        "debug": {"echo_upstream_body": true}, "reasoning": {"effort": "high"},
        "include_reasoning": true, "route": "fallback", "models": ["openai/gpt"],
        "plugins": [{"id": "context-compression"}], "provider": {"sort": "price"},
        "top_k": 40, "min_p": 0.1, "top_a": 0.2, "repetition_penalty": 1.1, "temperature": 0.3
    });
    let a = ask(&gw, everything.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let up = strict.last().body;
    assert_eq!(
        up["reasoning_effort"], "high",
        "reasoning.effort as OpenAI's: {up}"
    );
    assert_eq!(up["temperature"], 0.3);
    for key in up.as_object().unwrap().keys() {
        assert!(
            OPENAI_PARAMETERS.contains(&key.as_str()),
            "`{key}` went upstream"
        );
    }
    // `reasoning.max_tokens` alone becomes an effort; `enabled: false` sends none.
    ask(
        &gw,
        json!({"model": "openai/gpt", "messages": user("hi"), "reasoning": {"max_tokens": 1000}}),
    )
    .await;
    assert_eq!(strict.last().body["reasoning_effort"], "low");
    ask(
        &gw,
        json!({"model": "openai/gpt", "messages": user("hi"), "reasoning": {"enabled": false}}),
    )
    .await;
    assert!(strict.last().body.get("reasoning_effort").is_none());

    // An endpoint that declares `top_k` gets it; the rest of its undeclared ones are dropped.
    let mut llama = everything;
    llama["model"] = "meta/llama".into();
    llama["models"] = json!(["meta/llama"]);
    let a = ask(&gw, llama).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let up = lenient.last().body;
    assert_eq!(up["top_k"], 40);
    assert_eq!(up["temperature"], 0.3);
    for dropped in [
        "min_p",
        "top_a",
        "repetition_penalty",
        "reasoning_effort",
        "reasoning",
    ] {
        assert!(up.get(dropped).is_none(), "`{dropped}` reached {up}");
    }
    // With `require_parameters`, an endpoint without one is left out instead: a 404 naming it.
    let a = ask(
        &gw,
        json!({"model": "openai/gpt", "messages": user("hi"), "top_k": 3,
               "provider": {"require_parameters": true}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.text().contains("does not support `top_k`"),
        "{}",
        a.text()
    );
}

#[tokio::test]
async fn what_the_gateway_does_not_offer_is_refused_by_name() {
    let (strict, lenient, anth) = (
        FakeProvider::start(strict_openai).await,
        FakeProvider::start(standard).await,
        FakeProvider::start(standard_anthropic).await,
    );
    let gw = gateway(&strict, &lenient, &anth).await;
    for (body, param, words) in [
        (
            json!({"model": "openai/gpt:online", "messages": user("hi")}),
            "model",
            ":online",
        ),
        (
            json!({"model": "openai/gpt:exacto", "messages": user("hi")}),
            "model",
            ":exacto",
        ),
        (
            json!({"model": "openai/gpt", "models": ["meta/llama:extended"], "messages": user("hi")}),
            "models",
            ":extended",
        ),
        (
            json!({"model": "openai/gpt", "messages": user("hi"), "plugins": [{"id": "web"}]}),
            "plugins[0].id",
            "web search",
        ),
        (
            json!({"model": "openai/gpt", "messages": user("hi"), "plugins": [{"id": "context-compression"}, {"id": "file-parser"}]}),
            "plugins[1].id",
            "PDF",
        ),
        (
            json!({"model": "openai/gpt", "messages": user("hi"), "plugins": [{"id": "response-healing"}]}),
            "plugins[0].id",
            "JSON repair",
        ),
        (
            json!({"model": "openai/gpt", "messages": user("hi"), "transforms": ["squash"]}),
            "transforms[0]",
            "squash",
        ),
    ] {
        let a = ask(&gw, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text());
        let e = &a.json()["error"];
        assert_eq!(e["code"], 400);
        assert_eq!(e["param"], param, "{body}");
        assert!(e["message"].as_str().unwrap().contains(words), "{e}");
    }
    // A plugin turned off is no request for it.
    let a = ask(&gw, json!({"model": "openai/gpt", "messages": user("hi"), "plugins": [{"id": "web", "enabled": false}]})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(strict.count(), 1, "nothing refused went upstream");
}

#[tokio::test]
async fn privacy_filters_keep_only_endpoints_that_declare_what_is_asked() {
    let (strict, lenient, anth) = (
        FakeProvider::start(strict_openai).await,
        FakeProvider::start(standard).await,
        FakeProvider::start(standard_anthropic).await,
    );
    let gw = gateway(&strict, &lenient, &anth).await;
    for provider in [
        json!({"data_collection": "deny"}),
        json!({"zdr": true}),
        json!({"quantizations": ["fp8"]}),
    ] {
        let a = ask(
            &gw,
            json!({"model": "meta/llama", "messages": user("hi"), "provider": provider}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{provider}: {}", a.text());
        let a = ask(
            &gw,
            json!({"model": "openai/gpt", "messages": user("hi"), "provider": provider}),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{provider}");
        let m = a.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            m.contains("openai/text (") && m.contains("provider."),
            "{m}"
        );
    }
    // `max_price` as strings.
    let a = ask(
        &gw,
        json!({"model": "openai/gpt", "messages": user("hi"),
                            "provider": {"max_price": {"prompt": "0.5", "completion": "5"}}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.text()
            .contains("prompt price 1 above provider.max_price.prompt 0.5"),
        "{}",
        a.text()
    );
}

#[tokio::test]
async fn middle_out_fits_a_long_conversation_into_the_context() {
    let (strict, lenient, anth) = (
        FakeProvider::start(strict_openai).await,
        FakeProvider::start(standard).await,
        FakeProvider::start(standard_anthropic).await,
    );
    let gw = gateway(&strict, &lenient, &anth).await;
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    for i in 0..20 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages
            .push(json!({"role": role, "content": format!("turn {i} {}", "words ".repeat(40))}));
    }
    messages.push(json!({"role": "user", "content": "Why are there tides?"}));
    let body = |transforms: Option<Value>| {
        let mut b = json!({"model": "openai/gpt", "messages": messages});
        if let Some(t) = transforms {
            b["transforms"] = t;
        }
        b
    };
    // Without the transform, the whole conversation goes (the provider judges its length).
    ask(&gw, body(None)).await;
    assert_eq!(strict.last().body["messages"].as_array().unwrap().len(), 22);
    for asked in [
        json!({"transforms": ["middle-out"]}),
        json!({"plugins": [{"id": "context-compression"}]}),
    ] {
        let mut b = body(None);
        b.as_object_mut()
            .unwrap()
            .extend(asked.as_object().unwrap().clone());
        let a = ask(&gw, b).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let sent = strict.last().body["messages"].as_array().unwrap().clone();
        assert!(sent.len() < 22, "{}", sent.len());
        assert_eq!(sent[0]["content"], "Be brief.");
        assert_eq!(sent.last().unwrap()["content"], "Why are there tides?");
        assert!(serde_json::to_string(&sent).unwrap().len() / 4 < 400);
    }
}

#[tokio::test]
async fn a_fault_after_the_200_is_openrouters_error_chunk() {
    let (strict, lenient, anth) = (
        FakeProvider::start(strict_openai).await,
        FakeProvider::start(standard).await,
        FakeProvider::start(standard_anthropic).await,
    );
    let gw = gateway(&strict, &lenient, &anth).await;
    let a = ask(
        &gw,
        json!({"model": "openai/broken", "messages": user("hi"), "stream": true}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // No `[DONE]`: the error chunk is the last event.
    let text = a.text();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = chunks.last().unwrap();
    assert_eq!(last["id"], a.headers["x-generation-id"].to_str().unwrap());
    assert_eq!(last["object"], "chat.completion.chunk");
    assert_eq!(last["model"], "openai/broken");
    assert_eq!(last["provider"], "openai");
    assert_eq!(last["error"]["code"], 502);
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server had an error"),
        "{last}"
    );
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.get("error").is_none()));
}

#[tokio::test]
async fn reasoning_is_shown_in_openrouters_shape_unless_excluded() {
    let (strict, lenient, anth) = (
        FakeProvider::start(strict_openai).await,
        FakeProvider::start(standard).await,
        FakeProvider::start(standard_anthropic).await,
    );
    let gw = gateway(&strict, &lenient, &anth).await;
    let shown = ask(
        &gw,
        json!({"model": "anthropic/thinking", "messages": user("17*24?"), "stream": true,
                                "reasoning": {"max_tokens": 2048}}),
    )
    .await;
    let text: String = shown
        .chunks()
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["reasoning"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(text.starts_with("The user wants 17 * 24."), "{text}");
    assert_eq!(anth.last().body["thinking"]["budget_tokens"], 2048);
    for exclude in [
        json!({"reasoning": {"max_tokens": 2048, "exclude": true}}),
        json!({"include_reasoning": false}),
    ] {
        let mut b =
            json!({"model": "anthropic/thinking", "messages": user("17*24?"), "stream": true});
        b.as_object_mut()
            .unwrap()
            .extend(exclude.as_object().unwrap().clone());
        let hidden = ask(&gw, b).await;
        assert_eq!(hidden.status, StatusCode::OK);
        assert!(
            !hidden.text().contains("reasoning"),
            "{exclude}: {}",
            hidden.text()
        );
        assert!(hidden.text().contains("408"), "the answer itself");
    }
    // `:thinking` turns reasoning on.
    let a = ask(
        &gw,
        json!({"model": "anthropic/thinking:thinking", "messages": user("17*24?")}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(anth.last().body["thinking"]["type"], "enabled");
}

#[tokio::test]
async fn app_attribution_and_the_session_are_on_the_generation() {
    let (strict, lenient, anth) = (
        FakeProvider::start(strict_openai).await,
        FakeProvider::start(standard).await,
        FakeProvider::start(standard_anthropic).await,
    );
    let gw = gateway(&strict, &lenient, &anth).await;
    let c = client();
    let req = Request::post(gw.url("/api/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .header("http-referer", "https://app.example")
        .header("x-openrouter-title", "My App")
        .header("x-title", "older name")
        .header("x-openrouter-categories", "cli-agent,cloud-agent")
        .body(Full::new(Bytes::from(
            json!({"model": "openai/gpt", "messages": user("hi"), "session_id": "conv-7"})
                .to_string(),
        )))
        .unwrap();
    let a = send(&c, req).await;
    assert_eq!(a.status, StatusCode::OK);
    gw.flush().await;
    let id = a.json()["id"].as_str().unwrap().to_owned();
    let req = Request::get(gw.url(&format!("/api/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let g = send(&c, req).await.json()["data"].clone();
    assert_eq!(g["http_referer"], "https://app.example");
    assert_eq!(g["title"], "My App");
    assert_eq!(g["categories"], "cli-agent,cloud-agent");
    assert_eq!(g["session_id"], "conv-7");
    assert_eq!(g["total_cost"], g["cost"]);
    assert!(g["created_at"].as_str().unwrap().ends_with('Z'));
}

/// The fragments of a stream's `reasoning_details`, as a client collects them.
fn details_of(a: &Answer) -> Vec<Value> {
    a.chunks()
        .iter()
        .flat_map(|c| {
            c["choices"][0]["delta"]["reasoning_details"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn reasoning_details_sent_back_are_the_providers_own_form_again() {
    let anth = FakeProvider::start(standard_anthropic).await;
    let gem = FakeProvider::start(|r: &Received| {
        if r.path.contains("streamGenerateContent") {
            Script::sse(events_of(&fixture("gemini/gemini_tool.sse")))
        } else {
            standard_gemini(r)
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[models]]
id = "anthropic/thinking"
[[models.endpoints]]
provider = "anth"
model = "claude-thinking"

[[models]]
id = "google/gemini"
[[models.endpoints]]
provider = "gem"
model = "gemini-2.5-flash"
"#,
        anth.base_url(),
        gem.base_url()
    ))
    .await;

    // Anthropic: the streamed fragments, sent back as they came, are one signed thinking block.
    let a = ask(
        &gw,
        json!({"model": "anthropic/thinking", "messages": user("17*24?"), "stream": true}),
    )
    .await;
    let details = details_of(&a);
    assert!(details.len() >= 3, "{details:?}");
    let a = ask(
        &gw,
        json!({"model": "anthropic/thinking", "messages": [
            {"role": "user", "content": "17*24?"},
            {"role": "assistant", "content": "17 × 24 = 408.", "reasoning_details": details},
            {"role": "user", "content": "and 17*25?"}]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let sent = &anth.last().body["messages"][1]["content"][0];
    assert_eq!(sent["type"], "thinking");
    assert_eq!(
        sent["thinking"],
        "The user wants 17 * 24. 17*24 = 17*20 + 17*4 = 340 + 68 = 408."
    );
    assert_eq!(
        sent["signature"],
        "EqQBCkYIBRgCKkCz0fakesignatureOnlyForFixtures0Qm9vYmF6cXV4cXV1eA=="
    );

    // Gemini: the thought signature comes as encrypted reasoning and goes back on its call.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
                       {"type": "function", "function": {"name": "get_local_time", "parameters": {"type": "object"}}}]);
    let a = ask(&gw, json!({"model": "google/gemini", "messages": user("Lyon?"), "stream": true, "tools": tools})).await;
    let details = details_of(&a);
    assert!(
        details
            .iter()
            .any(|d| d["type"] == "reasoning.encrypted" && d["format"] == "google-gemini-v1"),
        "{details:?}"
    );
    let calls: Vec<Value> = a
        .chunks()
        .iter()
        .flat_map(|c| {
            c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c.get("id").is_some())
        .map(|c| json!({"id": c["id"], "type": "function", "function": c["function"]}))
        .collect();
    assert_eq!(calls.len(), 2);
    let a = ask(
        &gw,
        json!({"model": "google/gemini", "tools": tools, "messages": [
            {"role": "user", "content": "Lyon?"},
            {"role": "assistant", "content": null, "tool_calls": calls, "reasoning_details": details},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "12 C"},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"}]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let parts = &gem.last().body["contents"][1]["parts"];
    assert_eq!(
        parts[0]["thoughtSignature"],
        "CiQBcsjafakeSignatureBytesForFixtureOnlyAAAAAAAAAAAAAA=="
    );
}

#[tokio::test]
async fn a_session_stays_on_one_endpoint_through_the_proxy() {
    let (one, two) = (
        FakeProvider::start(standard).await,
        FakeProvider::start(standard).await,
    );
    let gw = Gateway::start(&format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[[providers]]
name = "one"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "two"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[models]]
id = "open/model"
[[models.endpoints]]
provider = "one"
model = "text"
prompt_price = 1.0
[[models.endpoints]]
provider = "two"
model = "text"
prompt_price = 1.0
"#,
        one.base_url(),
        two.base_url()
    ))
    .await;
    // Balanced across both (equal prices), yet every turn of a session lands on one.
    for session in ["s-a", "s-b", "s-c", "s-d"] {
        let before = (one.count(), two.count());
        for turn in 0..8 {
            let a = ask(&gw, json!({"model": "open/model", "messages": user(&format!("turn {turn}")), "session_id": session})).await;
            assert_eq!(a.status, StatusCode::OK);
        }
        let after = (one.count() - before.0, two.count() - before.1);
        assert!(after == (8, 0) || after == (0, 8), "{session}: {after:?}");
    }
    // Without a session id, conversations spread over both.
    for i in 0..40 {
        ask(
            &gw,
            json!({"model": "open/model", "messages": user(&format!("conversation {i}"))}),
        )
        .await;
    }
    assert!(one.count() > 0 && two.count() > 0);
}
