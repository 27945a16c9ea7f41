//! Keys, authentication and rate limits through the proxy: every refusal, a burst past
//! `requests_per_minute`, token limits settled with the real usage, the key lifecycle through
//! the management API, persistence across a restart, and no key ever in a log line.

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use modelgate::proxy::{Config, Proxy};
use support::*;

const CLIENT_KEY: &str = "sk-mg-team-a-0123456789abcdef";
const OFF_KEY: &str = "sk-mg-switched-off-0123456789";
const ADMIN_KEY: &str = "sk-mg-admin-9876543210fedcba";

fn keys_config(extra_keys: &str) -> String {
    format!(
        r#"
admin_key_env = "TEST_ADMIN_KEY"

[[keys]]
name = "team-a"
key = "{CLIENT_KEY}"

[[keys]]
name = "off"
key = "{OFF_KEY}"
disabled = true

{extra_keys}
"#
    )
}

async fn gateway(fake: &FakeProvider, extra_keys: &str) -> Gateway {
    let toml = standard_config(fake, &keys_config(extra_keys));
    Gateway::start_with_env(&toml, &[("TEST_ADMIN_KEY", ADMIN_KEY)]).await
}

async fn call(
    c: &HttpClient,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<String>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(Bytes::from).unwrap_or_default();
    send(c, req.body(Full::new(body)).unwrap()).await
}

async fn chat_as(c: &HttpClient, gw: &Gateway, key: Option<&str>) -> Answer {
    call(
        c,
        Method::POST,
        &gw.url("/v1/chat/completions"),
        key,
        Some(chat("vendor/fake-model", false, false)),
    )
    .await
}

fn assert_envelope(a: &Answer, status: StatusCode, words: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    let j = a.json();
    assert_eq!(j["error"]["code"], status.as_u16(), "{}", a.text());
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(msg.contains(words), "`{msg}` should say `{words}`");
    assert!(
        a.headers.contains_key("x-generation-id"),
        "every answer has a generation id"
    );
    for secret in [CLIENT_KEY, OFF_KEY, ADMIN_KEY, PROVIDER_KEY] {
        assert!(!a.text().contains(secret), "{} leaks a key", a.text());
    }
}

#[tokio::test]
async fn every_refusal_is_a_401_or_403_envelope() {
    let fake = FakeProvider::start(standard).await;
    let gw = gateway(&fake, "").await;
    let c = client();

    assert_eq!(
        chat_as(&c, &gw, Some(CLIENT_KEY)).await.status,
        StatusCode::OK
    );

    let a = chat_as(&c, &gw, None).await;
    assert_envelope(&a, StatusCode::UNAUTHORIZED, "missing API key");
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    assert_envelope(
        &chat_as(&c, &gw, Some("sk-mg-nobody-0123456789")).await,
        StatusCode::UNAUTHORIZED,
        "invalid API key",
    );
    assert_envelope(
        &chat_as(&c, &gw, Some(OFF_KEY)).await,
        StatusCode::UNAUTHORIZED,
        "disabled",
    );
    assert_envelope(
        &chat_as(&c, &gw, Some(ADMIN_KEY)).await,
        StatusCode::FORBIDDEN,
        "management key",
    );
    // Malformed headers: 401, never a 500.
    for value in [
        &b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"[..],
        b"Bearer",
        b"Bearer two tokens",
        b"Bearer \xff\xfe",
        "Bearer ".repeat(100).as_bytes(),
    ] {
        let req = Request::post(gw.url("/v1/chat/completions"))
            .header(
                "authorization",
                http::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(Full::new(Bytes::from(chat(
                "vendor/fake-model",
                false,
                false,
            ))))
            .unwrap();
        let a = send(&c, req).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{value:?}: {}",
            a.text()
        );
    }
    let huge = format!("Bearer sk-{}", "a".repeat(8000));
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", huge)
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    assert_eq!(send(&c, req).await.status, StatusCode::UNAUTHORIZED);

    // Management needs the admin key.
    assert_envelope(
        &call(&c, Method::GET, &gw.url("/v1/keys"), Some(CLIENT_KEY), None).await,
        StatusCode::FORBIDDEN,
        "admin key",
    );
    assert_envelope(
        &call(&c, Method::GET, &gw.url("/v1/keys"), None, None).await,
        StatusCode::UNAUTHORIZED,
        "missing API key",
    );
    assert_eq!(fake.count(), 1, "no refused request reached the provider");
}

#[tokio::test]
async fn a_burst_past_requests_per_minute_gets_exactly_the_expected_429s() {
    let fake = FakeProvider::start(standard).await;
    let limited = r#"
[[keys]]
name = "limited"
key = "sk-mg-limited-0123456789"
requests_per_minute = 5
"#;
    let gw = gateway(&fake, limited).await;
    let c = client();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..8 {
        let a = chat_as(&c, &gw, Some("sk-mg-limited-0123456789")).await;
        statuses.push(a.status.as_u16());
        assert_eq!(a.headers["x-ratelimit-limit-requests"], "5");
        last = Some(a);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let a = last.unwrap();
    assert_envelope(&a, StatusCode::TOO_MANY_REQUESTS, "rate limit");
    assert_eq!(a.json()["error"]["type"], "rate_limit_exceeded");
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (11..=12).contains(&wait),
        "one request per 12 s, rounded up: {wait}"
    );
    assert_eq!(a.headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(fake.count(), 5);
    // Another key is not affected.
    assert_eq!(
        chat_as(&c, &gw, Some(CLIENT_KEY)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_limits_are_settled_with_the_usage_the_provider_reported() {
    let fake = FakeProvider::start(standard).await;
    let limited = r#"
[[keys]]
name = "tokens"
key = "sk-mg-tokens-0123456789"
tokens_per_minute = 1000
"#;
    let gw = gateway(&fake, limited).await;
    let c = client();
    let body = chat("vendor/fake-model", false, false);
    let estimate = (body.len() / 4) as u64;
    let a = chat_as(&c, &gw, Some("sk-mg-tokens-0123456789")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let remaining = |a: &Answer| -> u64 {
        a.headers["x-ratelimit-remaining-tokens"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = remaining(&a);
    assert!(
        (1000 - estimate - 1..=1000 - estimate).contains(&first),
        "{first}"
    );
    // The answer used 29 tokens (18 + 11): the next reservation sees 1000 - 29 - estimate.
    let a = chat_as(&c, &gw, Some("sk-mg-tokens-0123456789")).await;
    let second = remaining(&a);
    assert!(
        (1000 - 29 - estimate - 1..=1000 - 29 - estimate).contains(&second),
        "{second}: the first answer's 29 tokens, settled, plus this estimate"
    );
    // Streaming usage settles too (the fake's stream reports its own usage).
    let a = call(
        &c,
        Method::POST,
        &gw.url("/v1/chat/completions"),
        Some("sk-mg-tokens-0123456789"),
        Some(chat("vendor/fake-model", true, false)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = chat_as(&c, &gw, Some("sk-mg-tokens-0123456789")).await;
    assert!(
        remaining(&a) < second - estimate,
        "the stream's usage counted"
    );
}

#[tokio::test]
async fn the_key_lifecycle_through_the_api_survives_a_restart() {
    let fake = FakeProvider::start(standard).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}\n[state]\ndir = \"{}\"\n",
        standard_config(&fake, &keys_config("")),
        dir.path().display()
    );
    let env = [("TEST_ADMIN_KEY", ADMIN_KEY)];
    let mut gw = Gateway::start_with_env(&toml, &env).await;
    let c = client();
    let keys = gw.url("/v1/keys");

    let body = r#"{"name":"app-1","limit":10,"limit_reset":"monthly","requests_per_minute":100,"expires_at":"2099-01-01T00:00:00Z","models":["vendor/fake-model"]}"#;
    let a = call(&c, Method::POST, &keys, Some(ADMIN_KEY), Some(body.into())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let j = a.json();
    let key = j["key"].as_str().unwrap().to_owned();
    let id = j["data"]["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-mg-"));
    assert_eq!(j["data"]["limit"], 10.0);
    assert_eq!(j["data"]["limit_reset"], "monthly");
    assert_eq!(j["data"]["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(j["data"]["source"], "api");

    assert_eq!(chat_as(&c, &gw, Some(&key)).await.status, StatusCode::OK);
    let me = call(&c, Method::GET, &gw.url("/v1/key"), Some(&key), None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(me.json()["data"]["name"], "app-1");
    assert_eq!(me.json()["data"]["rate_limit"]["requests_per_minute"], 100);

    let names_in = |list: &serde_json::Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = call(&c, Method::GET, &keys, Some(ADMIN_KEY), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let names = names_in(&list.json());
    assert_eq!(
        names.len(),
        2,
        "{names:?}: one configured, one made; not the disabled one, not the admin"
    );
    let all = call(
        &c,
        Method::GET,
        &format!("{keys}?include_disabled=true"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    let names = names_in(&all.json());
    assert_eq!(names.len(), 3, "{names:?}: the disabled one too");
    let skipped = call(
        &c,
        Method::GET,
        &format!("{keys}?include_disabled=true&offset=2"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(names_in(&skipped.json()).len(), 1);
    assert!(names.contains(&"app-1".to_owned()));
    assert!(!list.text().contains(&key), "no plaintext in the list");
    assert!(!list.text().contains(&key[20..]), "not even part of it");

    // Disable: refused at once. Enable again.
    let off = call(
        &c,
        Method::PATCH,
        &format!("{keys}/{id}"),
        Some(ADMIN_KEY),
        Some(r#"{"disabled":true}"#.into()),
    )
    .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text());
    assert_envelope(
        &chat_as(&c, &gw, Some(&key)).await,
        StatusCode::UNAUTHORIZED,
        "disabled",
    );
    let on = call(
        &c,
        Method::PATCH,
        &format!("{keys}/{id}"),
        Some(ADMIN_KEY),
        Some(r#"{"disabled":false,"limit":null,"requests_per_minute":1}"#.into()),
    )
    .await;
    assert_eq!(on.json()["data"]["limit"], serde_json::Value::Null);
    assert_eq!(chat_as(&c, &gw, Some(&key)).await.status, StatusCode::OK);
    assert_eq!(
        chat_as(&c, &gw, Some(&key)).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the new limit took effect"
    );

    // Bad input names the field; configured keys are read-only; unknown ids are 404.
    for (body, field) in [
        (r#"{"limit":5}"#, "name"),
        (r#"{"name":"x","limit":-1}"#, "limit"),
        (
            r#"{"name":"x","requests_per_minute":0}"#,
            "requests_per_minute",
        ),
        (r#"{"name":"x","limit_reset":"yearly"}"#, "limit_reset"),
        (r#"{"name":"x","expires_at":"tomorrow"}"#, "expires_at"),
        (
            r#"{"name":"x","expires_at":"2001-01-01T00:00:00Z"}"#,
            "expires_at",
        ),
        (r#"{"name":"x","colour":"red"}"#, "colour"),
        (r#"[1,2]"#, "JSON object"),
        (r#"{"name":"#, "not valid JSON"),
    ] {
        let a = call(&c, Method::POST, &keys, Some(ADMIN_KEY), Some(body.into())).await;
        assert_envelope(&a, StatusCode::BAD_REQUEST, field);
    }
    let a = call(
        &c,
        Method::PATCH,
        &format!("{keys}/cfg_team-a"),
        Some(ADMIN_KEY),
        Some(r#"{"disabled":true}"#.into()),
    )
    .await;
    assert_envelope(&a, StatusCode::CONFLICT, "configuration file");
    let a = call(
        &c,
        Method::DELETE,
        &format!("{keys}/key_nope"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_envelope(&a, StatusCode::NOT_FOUND, "no such key");
    let a = call(&c, Method::PUT, &keys, Some(ADMIN_KEY), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);

    // A second key, deleted before the restart.
    let a = call(
        &c,
        Method::POST,
        &keys,
        Some(ADMIN_KEY),
        Some(r#"{"name":"gone"}"#.into()),
    )
    .await;
    let gone_key = a.json()["key"].as_str().unwrap().to_owned();
    let gone_id = a.json()["data"]["id"].as_str().unwrap().to_owned();
    let a = call(
        &c,
        Method::DELETE,
        &format!("{keys}/{gone_id}"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_envelope(
        &chat_as(&c, &gw, Some(&gone_key)).await,
        StatusCode::UNAUTHORIZED,
        "invalid API key",
    );

    gw.shutdown().await.unwrap().unwrap();
    drop(gw);

    let gw = Gateway::start_with_env(&toml, &env).await;
    let a = call(
        &c,
        Method::GET,
        &format!("{}/{id}", gw.url("/v1/keys")),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["data"]["requests_per_minute"], 1);
    assert_eq!(
        chat_as(&c, &gw, Some(&key)).await.status,
        StatusCode::OK,
        "the key works after a restart"
    );
    assert_envelope(
        &chat_as(&c, &gw, Some(&gone_key)).await,
        StatusCode::UNAUTHORIZED,
        "invalid API key",
    );
}

#[tokio::test]
async fn unauthenticated_only_on_loopback_and_management_off_without_an_admin_key() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    assert_eq!(chat_as(&c, &gw, None).await.status, StatusCode::OK);
    assert_eq!(
        chat_as(&c, &gw, Some("sk-anything-the-sdk-sends"))
            .await
            .status,
        StatusCode::OK
    );
    let a = call(&c, Method::GET, &gw.url("/v1/keys"), Some(ADMIN_KEY), None).await;
    assert_envelope(&a, StatusCode::NOT_FOUND, "admin_key_env");

    let dir = tempfile::tempdir().unwrap();
    let open = async |extra: &str| {
        let toml = format!(
            "listen = \"0.0.0.0:8080\"\n{extra}\n{}\n[state]\ndir = \"{}\"\n",
            standard_config(&fake, ""),
            dir.path().display()
        );
        let env = |_: &str| None;
        Proxy::from_config(&Config::from_toml(&toml).unwrap(), &env)
            .await
            .map(|_| ())
    };
    let err = open("").await.unwrap_err();
    assert!(
        err.0.contains("refusing to listen on 0.0.0.0:8080"),
        "{err}"
    );
    open(&format!("[[keys]]\nname = \"a\"\nkey = \"{CLIENT_KEY}\""))
        .await
        .expect("with keys it starts");
}

#[tokio::test]
async fn an_unusable_state_dir_or_bad_key_config_is_a_clear_startup_error() {
    let fake = FakeProvider::start(standard).await;
    let build = async |toml: String, vars: &'static [(&'static str, &'static str)]| {
        let env = move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        Proxy::from_config(&Config::from_toml(&toml).unwrap(), &env)
            .await
            .map(|_| ())
            .unwrap_err()
            .0
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = build(
        format!(
            "{}\n[state]\ndir = \"{}\"",
            standard_config(&fake, ""),
            file.display()
        ),
        &[],
    )
    .await;
    assert!(err.contains("cannot create the state dir"), "{err}");

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("modelgate.redb"), vec![0x5a; 4096]).unwrap();
    let err = build(
        format!(
            "{}\n[state]\ndir = \"{}\"",
            standard_config(&fake, ""),
            corrupt.display()
        ),
        &[],
    )
    .await;
    assert!(err.contains("cannot open the state database"), "{err}");

    let state = format!("\n[state]\ndir = \"{}\"", dir.path().join("ok").display());
    let with = |extra: &str| format!("{}{state}", standard_config(&fake, extra));
    let err = build(with("admin_key_env = \"UNSET_ADMIN\""), &[]).await;
    assert!(err.contains("UNSET_ADMIN"), "{err}");
    let err = build(with("admin_key_env = \"SHORT\""), &[("SHORT", "abc")]).await;
    assert!(err.contains("too short"), "{err}");
    assert!(!err.contains("abc"), "the admin key is not echoed");
    let err = build(with("[[keys]]\nname = \"a\"\nkey = \"short\""), &[]).await;
    assert!(
        err.contains("too short") && !err.contains("\"short\""),
        "{err}"
    );
    let err = build(with("[[keys]]\nname = \"a\""), &[]).await;
    assert!(err.contains("key_sha256"), "{err}");
    let twice = format!(
        "[[keys]]\nname = \"a\"\nkey = \"{CLIENT_KEY}\"\n[[keys]]\nname = \"b\"\nkey = \"{CLIENT_KEY}\""
    );
    let err = build(with(&twice), &[]).await;
    assert!(
        err.contains("same key") && !err.contains(CLIENT_KEY),
        "{err}"
    );
}

#[tokio::test]
async fn key_sha256_and_x_api_key_work_and_expired_keys_are_refused() {
    let fake = FakeProvider::start(standard).await;
    let digest = modelgate::auth::KeyDigest::of("sk-mg-hashed-0123456789").to_hex();
    let extra = format!(
        r#"
[[keys]]
name = "hashed"
key_sha256 = "{digest}"

[[keys]]
name = "old"
key = "sk-mg-expired-0123456789"
expires_at = "2020-01-01T00:00:00Z"
"#
    );
    let gw = gateway(&fake, &extra).await;
    let c = client();
    assert_eq!(
        chat_as(&c, &gw, Some("sk-mg-hashed-0123456789"))
            .await
            .status,
        StatusCode::OK
    );
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("x-api-key", CLIENT_KEY)
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    assert_eq!(send(&c, req).await.status, StatusCode::OK);
    assert_envelope(
        &chat_as(&c, &gw, Some("sk-mg-expired-0123456789")).await,
        StatusCode::UNAUTHORIZED,
        "expired",
    );
}

#[tokio::test]
async fn no_key_ever_reaches_a_log_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeProvider::start(standard).await;
    let gw = gateway(&fake, "").await;
    let c = client();
    let a = call(
        &c,
        Method::POST,
        &gw.url("/v1/keys"),
        Some(ADMIN_KEY),
        Some(r#"{"name":"logged"}"#.into()),
    )
    .await;
    let made = a.json()["key"].as_str().unwrap().to_owned();
    for key in [
        CLIENT_KEY,
        OFF_KEY,
        ADMIN_KEY,
        made.as_str(),
        "sk-mg-nobody-0123456789",
    ] {
        chat_as(&c, &gw, Some(key)).await;
        call(&c, Method::GET, &gw.url("/v1/key"), Some(key), None).await;
        call(&c, Method::GET, &gw.url("/v1/keys"), Some(key), None).await;
    }
    // The provider refusing its own key (the fake echoes it back in the error).
    let a = call(
        &c,
        Method::POST,
        &gw.url("/v1/chat/completions"),
        Some(CLIENT_KEY),
        Some(chat("fake/fail-401", false, false)),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    drop(gw);

    let logs = String::from_utf8(capture.bytes()).unwrap();
    assert!(logs.contains("key created"), "the capture works: {logs}");
    for secret in [
        CLIENT_KEY,
        OFF_KEY,
        ADMIN_KEY,
        made.as_str(),
        "sk-mg-nobody-0123456789",
        PROVIDER_KEY,
    ] {
        assert!(!logs.contains(secret), "a key reached the logs:\n{logs}");
        assert!(
            !logs.contains(&secret[8..]),
            "part of a key reached the logs:\n{logs}"
        );
    }
}
