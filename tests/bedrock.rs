//! `kind = "bedrock"` through the whole proxy, against a fake Bedrock that checks the SigV4
//! signature of every request (a wrong one is AWS's 403) and answers Converse JSON and
//! ConverseStream event-stream frames: answers, streams split at every byte, tools, errors
//! (throttling, a model not ready, a mid-stream exception, refused credentials), the Bedrock
//! API key, records and cost.

mod support;

use http::StatusCode;
use serde_json::{json, Value};
use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";
const TIDES: &str = "Tides come mostly from the Moon's pull on the oceans.";

async fn gateway(fake: &FakeProvider) -> Gateway {
    let base = format!("http://{}", fake.addr);
    let mut toml = format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[fallback]
retries_per_target = 0

[[providers]]
name = "bedrock"
kind = "bedrock"
region = "{AWS_REGION}"
base_url = "{base}"

[[providers]]
name = "bedrock-key"
kind = "bedrock"
region = "{AWS_REGION}"
base_url = "{base}"
api_key_env = "TEST_BEDROCK_KEY"

[[providers]]
name = "bedrock-wrong"
kind = "bedrock"
region = "{AWS_REGION}"
base_url = "{base}"
aws_secret_access_key_env = "TEST_WRONG_SECRET"
"#
    );
    for (id, provider, upstream) in [
        (
            "anthropic/claude",
            "bedrock",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        (
            "anthropic/claude-key",
            "bedrock-key",
            "anthropic.claude-3-haiku",
        ),
        (
            "anthropic/claude-wrong",
            "bedrock-wrong",
            "anthropic.claude-3-haiku",
        ),
        ("anthropic/throttled", "bedrock", "throttled"),
        ("anthropic/not-ready", "bedrock", "not-ready"),
        ("anthropic/bad", "bedrock", "bad"),
        ("anthropic/mid-exception", "bedrock", "mid-exception"),
        ("anthropic/bytewise", "bedrock", "bytewise"),
        (
            "amazon/titan-embed",
            "bedrock",
            "amazon.titan-embed-text-v2:0",
        ),
        ("cohere/embed", "bedrock", "cohere.embed-english-v3"),
    ] {
        toml.push_str(&format!(
            "\n[[models]]\nid = \"{id}\"\n[[models.endpoints]]\nprovider = \"{provider}\"\nmodel = \"{upstream}\"\nprompt_price = 3.0\ncompletion_price = 15.0\n"
        ));
    }
    Gateway::start_with_env(
        &toml,
        &[
            ("AWS_ACCESS_KEY_ID", AWS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ("TEST_BEDROCK_KEY", BEDROCK_API_KEY),
            ("TEST_WRONG_SECRET", "not-the-secret"),
        ],
    )
    .await
}

async fn ask(gw: &Gateway, path: &str, body: Value) -> Answer {
    post(&client(), &gw.url(path), body.to_string()).await
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The text of a stream's content deltas.
fn streamed_text(a: &Answer) -> String {
    a.chunks()
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn converse_answers_a_signed_request_in_the_openai_shape() {
    let fake = FakeProvider::start(fake_bedrock).await;
    let gw = gateway(&fake).await;
    let a = ask(
        &gw,
        "/v1/chat/completions",
        json!({
            "model": "anthropic/claude",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why are there tides?"}],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "temperature": 0.2,
            "max_tokens": 100
        }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let body = a.json();
    assert_eq!(body["choices"][0]["message"]["content"], TIDES);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["model"], "anthropic/claude");
    assert_eq!(body["provider"], "bedrock");
    // Cache reads and writes count in the prompt, as Anthropic's do.
    assert_eq!(body["usage"]["prompt_tokens"], 12 + 300 + 100);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 300);
    assert_eq!(body["usage"]["completion_tokens"], 18);
    assert!(body["usage"]["cost"].as_f64().unwrap() > 0.0);
    let sent = fake.last();
    assert_eq!(
        sent.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    );
    assert!(sigv4_ok(&sent), "signed with the test credentials");
    assert_eq!(sent.body["system"], json!([{"text": "Be brief."}]));
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": [{"text": "Why are there tides?"}]}])
    );
    assert_eq!(
        sent.body["inferenceConfig"],
        json!({"maxTokens": 100, "temperature": 0.2})
    );
    assert_eq!(
        sent.body["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "look"
    );
    // The client's key never goes upstream.
    assert!(!String::from_utf8_lossy(&sent.raw).contains(KEY));
    assert!(sent
        .headers
        .values()
        .all(|v| v.to_str().map_or(true, |v| !v.contains(KEY))));

    // A Bedrock API key goes as a bearer token, unsigned.
    let a = ask(
        &gw,
        "/v1/chat/completions",
        json!({"model": "anthropic/claude-key", "messages": user("hi")}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let sent = fake.last();
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {BEDROCK_API_KEY}").as_str()
    );
    assert!(sent.headers.get("x-amz-date").is_none());
}

#[tokio::test]
async fn converse_stream_frames_split_at_every_byte_become_the_openai_stream() {
    let fake = FakeProvider::start(fake_bedrock).await;
    let gw = gateway(&fake).await;
    for model in ["anthropic/claude", "anthropic/bytewise"] {
        let a = ask(
            &gw,
            "/v1/chat/completions",
            json!({"model": model, "messages": user("Why are there tides?"), "stream": true}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.headers["content-type"], "text/event-stream");
        assert_eq!(streamed_text(&a), TIDES, "{model}");
        let chunks = a.chunks();
        let last = chunks.last().unwrap();
        assert_eq!(last["usage"]["prompt_tokens"], 12 + 300 + 100, "{model}");
        assert_eq!(last["usage"]["completion_tokens"], 18);
        assert!(a.text().ends_with("data: [DONE]\n\n"));
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| f.is_string())
            .collect();
        assert_eq!(finish, [&json!("stop")]);
        let sent = fake.last();
        assert!(sent.path.ends_with("/converse-stream"), "{}", sent.path);
        assert_eq!(sent.headers["accept"], "application/vnd.amazon.eventstream");
    }
}

#[tokio::test]
async fn bedrock_errors_keep_their_meaning_and_name_the_provider() {
    let fake = FakeProvider::start(fake_bedrock).await;
    let gw = gateway(&fake).await;
    for (model, status, kind) in [
        (
            "anthropic/throttled",
            StatusCode::TOO_MANY_REQUESTS,
            "throttling_exception",
        ),
        (
            "anthropic/not-ready",
            StatusCode::SERVICE_UNAVAILABLE,
            "model_not_ready_exception",
        ),
        (
            "anthropic/bad",
            StatusCode::BAD_REQUEST,
            "validation_exception",
        ),
        // The gateway's credentials refused: not the client's fault.
        (
            "anthropic/claude-wrong",
            StatusCode::BAD_GATEWAY,
            "invalid_signature_exception",
        ),
    ] {
        let a = ask(
            &gw,
            "/v1/chat/completions",
            json!({"model": model, "messages": user("hi")}),
        )
        .await;
        assert_eq!(a.status, status, "{model}: {}", a.text());
        let e = &a.json()["error"];
        assert_eq!(e["code"], status.as_u16(), "{model}");
        assert_eq!(e["type"], kind, "{model}");
        assert_eq!(
            e["metadata"]["provider_name"],
            if model.ends_with("wrong") {
                "bedrock-wrong"
            } else {
                "bedrock"
            }
        );
        assert!(e["message"].as_str().unwrap().starts_with("bedrock"), "{e}");
    }
    // The same errors in the Messages dialect.
    let a = ask(
        &gw,
        "/v1/messages",
        json!({"model": "anthropic/throttled", "max_tokens": 10, "messages": user("hi")}),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["type"], "error");
}

#[tokio::test]
async fn an_exception_frame_mid_stream_is_the_one_error_event_and_is_recorded() {
    let fake = FakeProvider::start(fake_bedrock).await;
    let gw = gateway(&fake).await;
    let a = ask(
        &gw,
        "/v1/chat/completions",
        json!({"model": "anthropic/mid-exception", "messages": user("hi"), "stream": true}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let chunks: Vec<Value> = a
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Tides come mostly");
    let last = chunks.last().unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The model stopped answering."),
        "{last}"
    );
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert!(!a.text().contains("[DONE]"));
    gw.flush().await;
    let id = a.headers["x-generation-id"].to_str().unwrap();
    let req = http::Request::get(gw.url(&format!("/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let g = send(&client(), req).await.json()["data"].clone();
    assert_eq!(g["provider_name"], "bedrock", "{g}");
    assert!(
        g["error"].as_str().unwrap_or_default().contains("stopped"),
        "{g}"
    );
}

#[tokio::test]
async fn the_messages_dialect_and_embeddings_reach_bedrock() {
    let fake = FakeProvider::start(fake_bedrock).await;
    let gw = gateway(&fake).await;
    // Claude's own Messages, untranslated: InvokeModelWithResponseStream's `chunk` frames
    // unwrapped into Anthropic's events, the model made public.
    let req = http::Request::post(gw.url("/v1/messages"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14, context-1m-2025-08-07")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "anthropic/claude", "max_tokens": 50, "messages": user("Why are there tides?"),
                   "stream": true, "metadata": {"user_id": "u-1"}, "top_k": 3})
            .to_string(),
        )))
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let text = a.text();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("\"model\":\"anthropic/claude\""), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    let sent = fake.last();
    assert_eq!(
        sent.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    );
    assert_eq!(
        sent.body["anthropic_beta"],
        json!(["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"])
    );
    assert_eq!(sent.body["top_k"], 3);
    assert!(sent.body.get("metadata").is_none());
    assert!(sent.headers.get("anthropic-beta").is_none());
    assert!(sigv4_ok(&sent));
    // Whole.
    let a = ask(
        &gw,
        "/v1/messages",
        json!({"model": "anthropic/claude", "max_tokens": 50, "messages": user("2+2?")}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["model"], "anthropic/claude");
    assert_eq!(a.json()["content"][2]["text"], "4");
    assert!(fake.last().path.ends_with("/invoke"));

    let a = ask(
        &gw,
        "/v1/embeddings",
        json!({"model": "amazon/titan-embed", "input": "hello", "dimensions": 3}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["data"][0]["embedding"], json!([0.125, -0.5, 2.0]));
    assert_eq!(a.json()["usage"]["prompt_tokens"], 4);
    let sent = fake.last();
    assert_eq!(sent.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(sent.body, json!({"inputText": "hello", "dimensions": 3}));
    assert!(sigv4_ok(&sent));

    let a = ask(
        &gw,
        "/v1/embeddings",
        json!({"model": "cohere/embed", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["data"][1]["embedding"], json!([1.0, 0.5]));
    let a = ask(
        &gw,
        "/v1/embeddings",
        json!({"model": "amazon/titan-embed", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["param"], "input");
}
