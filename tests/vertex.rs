//! `kind = "vertex"` through the whole proxy, against a fake Vertex: a token endpoint that
//! verifies the service account's RS256 assertion against the test key and hands out tokens,
//! and the Gemini and Anthropic publisher routes, which take only a token it handed out.
//! Tokens are reused while they last and refreshed before they expire; a token endpoint that
//! refuses or is down is a 502 naming the provider.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use ring::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use support::*;

const TIDES: &str = "Tides come mostly from the Moon's pull on the oceans.";
const PREFIX: &str = "/v1/projects/proj-1/locations/us-east5/publishers";

/// The fake's state: tokens handed out, and how long each lives.
struct TokenDesk {
    minted: AtomicU64,
    lifetime: AtomicU64,
    public_key: Vec<u8>,
}

/// The test key's public half, from the fixture's private key.
fn public_key() -> Vec<u8> {
    let sa: Value = serde_json::from_slice(&fixture("vertex/service_account.json")).unwrap();
    let pem = sa["private_key"].as_str().unwrap();
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    ring::signature::KeyPair::public_key(&key).as_ref().to_vec()
}

/// Whether `jwt` is an RS256 assertion by the test key for the cloud-platform scope,
/// addressed to `aud`.
fn assertion_ok(jwt: &str, public_key: &[u8], aud: &str) -> bool {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let signed = format!("{h}.{c}");
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(signed.as_bytes(), &sig)
        .is_err()
    {
        return false;
    }
    let decode =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    let (header, claims) = (decode(h), decode(c));
    header["alg"] == "RS256"
        && header["kid"] == "0123456789abcdef"
        && claims["iss"] == "gateway@proj-1.iam.gserviceaccount.com"
        && claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        && claims["aud"] == aud
        && claims["exp"].as_u64() == claims["iat"].as_u64().map(|t| t + 3600)
}

/// A fake Vertex with its token endpoint at `/token`.
async fn fake_vertex(desk: Arc<TokenDesk>) -> FakeProvider {
    FakeProvider::start(move |r: &Received| {
        let host = r.headers["host"].to_str().unwrap().to_owned();
        if r.path == "/token" {
            let form = String::from_utf8_lossy(&r.raw).into_owned();
            let field = |k: &str| {
                form.split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let ok = field("grant_type") == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                && assertion_ok(&field("assertion"), &desk.public_key, &format!("http://{host}/token"));
            if !ok {
                return Script::json(400, r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#);
            }
            let n = desk.minted.fetch_add(1, Ordering::SeqCst) + 1;
            return Script::json(
                200,
                json!({"access_token": format!("ya29.token-{n}"), "expires_in": desk.lifetime.load(Ordering::SeqCst), "token_type": "Bearer"}).to_string(),
            );
        }
        let token = r.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !token.starts_with("Bearer ya29.token-") {
            return Script::json(401, r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#);
        }
        if r.path.starts_with(&format!("{PREFIX}/anthropic/models/claude-sonnet-4-5@20250929:")) {
            assert_eq!(r.body["anthropic_version"], "vertex-2023-10-16");
            assert!(r.body.get("model").is_none(), "{}", r.body);
            if r.path.ends_with(":streamRawPredict") {
                assert_eq!(r.body["stream"], true);
                return Script::sse(events_of(&fixture("anthropic/anthropic_text.sse")));
            }
            assert!(r.path.ends_with(":rawPredict"), "{}", r.path);
            return Script::json(200, ANTHROPIC_MESSAGE);
        }
        if r.path.starts_with(&format!("{PREFIX}/google/models/text-embedding-005:predict")) {
            let n = r.body["instances"].as_array().map_or(0, Vec::len);
            let predictions: Vec<Value> = (0..n)
                .map(|i| json!({"embeddings": {"values": [i as f32, 0.25], "statistics": {"token_count": 3, "truncated": false}}}))
                .collect();
            return Script::json(200, json!({ "predictions": predictions }).to_string());
        }
        if r.path.starts_with(&format!("{PREFIX}/google/models/gemini-2.5-flash:")) {
            let mut g = r.clone();
            g.path = r.path.replace(PREFIX, "");
            return standard_gemini(&g);
        }
        Script::json(404, r#"{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}"#)
    })
    .await
}

/// A service-account file like the fixture `file`, its `token_uri` at `token_uri`.
fn account_file(dir: &tempfile::TempDir, file: &str, token_uri: &str) -> String {
    let mut sa: Value = serde_json::from_slice(&fixture(&format!("vertex/{file}"))).unwrap();
    sa["token_uri"] = token_uri.into();
    let path = dir.path().join(file);
    std::fs::write(&path, sa.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn gateway(fake: &FakeProvider, credentials: &str) -> Gateway {
    let toml = format!(
        r#"
[fallback]
retries_per_target = 0

[[providers]]
name = "vertex"
kind = "vertex"
project = "proj-1"
region = "us-east5"
base_url = "http://{}"
credentials_file = "{credentials}"

[[models]]
id = "google/gemini-flash"
[[models.endpoints]]
provider = "vertex"
model = "gemini-2.5-flash"
prompt_price = 0.3
completion_price = 2.5

[[models]]
id = "anthropic/claude"
[[models.endpoints]]
provider = "vertex"
model = "claude-sonnet-4-5@20250929"
prompt_price = 3.0
completion_price = 15.0

[[models]]
id = "google/embedding"
[[models.endpoints]]
provider = "vertex"
model = "text-embedding-005"
prompt_price = 0.025
"#,
        fake.addr
    );
    Gateway::start(&toml).await
}

fn desk(lifetime: u64) -> Arc<TokenDesk> {
    Arc::new(TokenDesk {
        minted: AtomicU64::new(0),
        lifetime: AtomicU64::new(lifetime),
        public_key: public_key(),
    })
}

/// A fake Vertex handing out tokens that live `lifetime` seconds, and the gateway in front of
/// it with the service account of the fixture `file` (the temporary folder holds its copy).
async fn start(
    lifetime: u64,
    file: &str,
) -> (Arc<TokenDesk>, FakeProvider, Gateway, tempfile::TempDir) {
    let desk = desk(lifetime);
    let fake = fake_vertex(desk.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = account_file(&dir, file, &format!("http://{}/token", fake.addr));
    let gw = gateway(&fake, &creds).await;
    (desk, fake, gw, dir)
}

async fn ask(gw: &Gateway, model: &str, stream: bool) -> Answer {
    post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat(model, stream),
    )
    .await
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "Why are there tides?"}], "stream": stream}).to_string()
}

#[tokio::test]
async fn gemini_and_claude_models_are_served_with_one_minted_token() {
    let (desk, fake, gw, _dir) = start(3600, "service_account.json").await;
    let c = client();
    let a = ask(&gw, "google/gemini-flash", false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["choices"][0]["message"]["content"], TIDES);
    let a = ask(&gw, "google/gemini-flash", true).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.text().ends_with("data: [DONE]\n\n"));
    let a = ask(&gw, "anthropic/claude", false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["choices"][0]["message"]["content"], "4");
    assert_eq!(
        a.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
        300
    );
    let a = ask(&gw, "anthropic/claude", true).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.text().ends_with("data: [DONE]\n\n"));
    // The Messages dialect, translated for Vertex's Claude.
    let a = post(
        &c,
        &gw.url("/v1/messages"),
        json!({"model": "anthropic/claude", "max_tokens": 20, "messages": [{"role": "user", "content": "2+2?"}]}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["type"], "message");
    // Embeddings through `predict`, its token counts kept.
    let a = post(
        &c,
        &gw.url("/v1/embeddings"),
        json!({"model": "google/embedding", "input": ["a", "b"], "dimensions": 2}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["data"][1]["embedding"], json!([1.0, 0.25]));
    assert_eq!(a.json()["usage"]["prompt_tokens"], 6);
    assert_eq!(
        fake.last().body["parameters"],
        json!({"outputDimensionality": 2})
    );
    // One token for all of them.
    assert_eq!(desk.minted.load(Ordering::SeqCst), 1);
    let tokens: Vec<String> = fake
        .received()
        .iter()
        .filter(|r| r.path != "/token")
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert!(
        tokens.iter().all(|t| t == "Bearer ya29.token-1"),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_before_it_does() {
    // Tokens that live 4 minutes: less than the 5 the gateway keeps in hand, so each is used
    // once, and the next request gets a new one while the last is still valid.
    let (desk, fake, gw, _dir) = start(240, "service_account.json").await;
    for _ in 0..2 {
        let a = ask(&gw, "google/gemini-flash", false).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    assert_eq!(desk.minted.load(Ordering::SeqCst), 2);
    assert_eq!(fake.last().headers["authorization"], "Bearer ya29.token-2");
}

#[tokio::test]
async fn a_refused_or_unreachable_token_endpoint_is_a_502_naming_the_provider() {
    // Signed with another key: the token endpoint refuses the assertion.
    let (desk, fake, gw, dir) = start(3600, "other_key.json").await;
    let a = ask(&gw, "google/gemini-flash", false).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    let e = &a.json()["error"];
    assert_eq!(e["metadata"]["provider_name"], "vertex");
    let message = e["message"].as_str().unwrap();
    assert!(message.starts_with("vertex: no access token"), "{message}");
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(!message.contains("PRIVATE KEY"));
    assert_eq!(desk.minted.load(Ordering::SeqCst), 0);
    assert!(
        fake.received().iter().all(|r| r.path == "/token"),
        "nothing sent without a token"
    );

    // A token endpoint that is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let creds = account_file(
        &dir,
        "service_account.json",
        &format!("http://{closed}/token"),
    );
    let gw = gateway(&fake, &creds).await;
    let a = ask(&gw, "anthropic/claude", true).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("vertex: no access token"));
}
