//! `POST /v1/embeddings` through the whole proxy: passed on to an OpenAI-kind provider,
//! translated for Gemini- and Bedrock-kind ones, refused by an Anthropic-kind one (and served
//! by the next endpoint), with fallback, records and cost as on chat.

mod support;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";

/// An OpenAI-, a Gemini-, an Anthropic- and a Bedrock-kind fake.
struct Fakes {
    oai: FakeProvider,
    gem: FakeProvider,
    anth: FakeProvider,
    bedrock: FakeProvider,
}

impl Fakes {
    async fn start() -> Self {
        Fakes {
            oai: FakeProvider::start(openai_embeddings).await,
            gem: FakeProvider::start(gemini_embeddings).await,
            anth: FakeProvider::start(standard_anthropic).await,
            bedrock: FakeProvider::start(fake_bedrock).await,
        }
    }
}

async fn gateway(f: &Fakes) -> Gateway {
    let (oai, gem, anth, bedrock) = (&f.oai, &f.gem, &f.anth, &f.bedrock);
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
name = "google"
kind = "gemini"
base_url = "http://{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "bedrock"
kind = "bedrock"
region = "{AWS_REGION}"
base_url = "http://{}"

[[models]]
id = "cohere/embed-english"
[[models.endpoints]]
provider = "bedrock"
model = "cohere.embed-english-v3"
prompt_price = 0.1

[[models]]
id = "openai/text-embedding-3-small"
[[models.endpoints]]
provider = "openai"
model = "text-embedding-3-small"
prompt_price = 0.02

[[models]]
id = "google/gemini-embedding"
[[models.endpoints]]
provider = "google"
model = "gemini-embedding-001"
prompt_price = 0.15

[[models]]
id = "flaky/embed"
[[models.endpoints]]
provider = "anth"
model = "claude-sonnet"
[[models.endpoints]]
provider = "openai"
model = "emb-fail"
[[models.endpoints]]
provider = "google"
model = "gemini-embedding-001"
prompt_price = 0.15
"#,
        oai.base_url(),
        gem.addr,
        anth.base_url(),
        bedrock.addr
    );
    Gateway::start_with_env(
        &toml,
        &[
            ("AWS_ACCESS_KEY_ID", AWS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ],
    )
    .await
}

async fn embed(gw: &Gateway, path: &str, body: Value) -> Answer {
    post(&client(), &gw.url(path), body.to_string()).await
}

async fn generation(gw: &Gateway, id: &str) -> Value {
    gw.flush().await;
    let req = Request::get(gw.url(&format!("/api/v1/generation?id={id}")))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client(), req).await.json()["data"].clone()
}

fn floats(b64: &str) -> Vec<f32> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn an_openai_kind_provider_gets_the_body_as_it_came_and_the_answer_is_priced() {
    let f = Fakes::start().await;
    let gw = gateway(&f).await;
    let a = embed(
        &gw,
        "/v1/embeddings",
        json!({"model": "openai/text-embedding-3-small", "input": ["a", "b"], "dimensions": 2,
               "user": "u-1", "provider": {"order": ["openai"]}, "session_id": "s-1",
               "input_type": "search_document"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let id = a.headers["x-generation-id"].to_str().unwrap().to_owned();
    let body = a.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "openai/text-embedding-3-small");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][1]["embedding"], json!([10.5, 11.5]));
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    assert_eq!(body["usage"]["total_tokens"], 8);
    let cost = body["usage"]["cost"].as_f64().unwrap();
    assert!((cost - 8.0 * 0.02 / 1e6).abs() < 1e-15, "{cost}");
    // Upstream: OpenAI's fields with the upstream model; not the gateway's own, nor a field
    // the endpoint does not declare.
    let sent = f.oai.last();
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(
        sent.body,
        json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 2, "user": "u-1"})
    );
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str()
    );
    // Base64 passes as the provider wrote it.
    let a = embed(
        &gw,
        "/api/v1/embeddings",
        json!({"model": "openai/text-embedding-3-small", "input": "a", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        floats(a.json()["data"][0]["embedding"].as_str().unwrap()),
        [0.5, 1.5, 2.5]
    );
    // The record: the key, the dialect, tokens and cost.
    let g = generation(&gw, &id).await;
    assert_eq!(g["dialect"], "embeddings", "{g}");
    assert_eq!(g["tokens_prompt"], 8);
    assert_eq!(g["tokens_completion"], 0);
    assert_eq!(g["provider_name"], "openai");
    assert!((g["total_cost"].as_f64().unwrap() - cost).abs() < 1e-15);
}

#[tokio::test]
async fn a_gemini_kind_provider_is_asked_with_batch_embed_contents() {
    let f = Fakes::start().await;
    let gw = gateway(&f).await;
    let a = embed(
        &gw,
        "/embeddings",
        json!({"model": "google/gemini-embedding", "input": ["one text", "two"], "dimensions": 3}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let sent = f.gem.last();
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    assert_eq!(sent.headers["x-goog-api-key"], PROVIDER_KEY);
    assert_eq!(
        sent.body["requests"][0],
        json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "one text"}]}, "outputDimensionality": 3})
    );
    let body = a.json();
    assert_eq!(body["data"][0]["embedding"], json!([0.25, 0.5, -1.0]));
    assert_eq!(body["data"][1]["object"], "embedding");
    assert_eq!(body["model"], "google/gemini-embedding");
    // Gemini counts no tokens: estimated, a token per 4 bytes of each text.
    assert_eq!(body["usage"]["prompt_tokens"], 2 + 1);
    // Base64 is the little-endian floats.
    let a = embed(
        &gw,
        "/v1/embeddings",
        json!({"model": "google/gemini-embedding", "input": "x", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(
        floats(a.json()["data"][0]["embedding"].as_str().unwrap()),
        [0.25, 0.5, -1.0]
    );
    // Token ids cannot be sent to Gemini.
    let a = embed(
        &gw,
        "/v1/embeddings",
        json!({"model": "google/gemini-embedding", "input": [1, 2, 3]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert_eq!(a.json()["error"]["param"], "input");
}

#[tokio::test]
async fn fallback_walks_past_a_kind_without_embeddings_and_a_failing_endpoint() {
    let f = Fakes::start().await;
    let gw = gateway(&f).await;
    let a = embed(
        &gw,
        "/v1/embeddings",
        json!({"model": "flaky/embed", "input": "hello"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["model"], "flaky/embed");
    assert_eq!(
        f.anth.count(),
        0,
        "nothing is sent to a kind without embeddings"
    );
    assert_eq!(f.oai.count(), 1);
    assert_eq!(f.gem.count(), 1);
    let g = generation(&gw, a.headers["x-generation-id"].to_str().unwrap()).await;
    assert_eq!(g["provider_name"], "google");
    assert_eq!(
        g["provider_responses"].as_array().map(Vec::len),
        Some(3),
        "{g}"
    );
}

#[tokio::test]
async fn bad_requests_name_the_field_in_openais_envelope() {
    let f = Fakes::start().await;
    let gw = gateway(&f).await;
    for (body, param) in [
        (
            json!({"model": "openai/text-embedding-3-small"}),
            Some("input"),
        ),
        (
            json!({"model": "openai/text-embedding-3-small", "input": []}),
            Some("input"),
        ),
        (
            json!({"model": "openai/text-embedding-3-small", "input": "x", "encoding_format": "int8"}),
            Some("encoding_format"),
        ),
        (json!({"input": "x"}), None),
    ] {
        let a = embed(&gw, "/v1/embeddings", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text());
        let e = &a.json()["error"];
        assert_eq!(e["code"], 400);
        if let Some(param) = param {
            assert_eq!(e["param"], param, "{body}");
        }
        assert!(a.headers.contains_key("x-generation-id"));
    }
    let a = embed(
        &gw,
        "/v1/embeddings",
        json!({"model": "nobody/none", "input": "x"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let req = Request::post(gw.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-wrong")
        .body(Full::new(Bytes::from(
            json!({"model": "openai/text-embedding-3-small", "input": "x"}).to_string(),
        )))
        .unwrap();
    assert_eq!(send(&client(), req).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.oai.count(), 0);
}

/// The official `openai` Python SDK (`MODELGATE_PYTHON`, installed by `scripts/test.sh`):
/// its default base64 and `float`, against the OpenAI-kind and Gemini-kind fakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_embeddings() {
    let Some(python) = installed("MODELGATE_PYTHON", "the openai SDK") else {
        return;
    };
    let f = Fakes::start().await;
    let gw = gateway(&f).await;
    run_sdk_script(
        &python,
        "openai_embeddings.py",
        &[gw.url("/v1"), KEY.to_owned()],
    )
    .await;
    // The SDK's default asked the provider for base64 too.
    assert!(f
        .oai
        .received()
        .iter()
        .any(|r| r.body["encoding_format"] == "base64"));
}
