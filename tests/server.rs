//! The proxy's cross-cutting layers (tower-http): CORS for browser apps, a panic answered as a
//! `500` in the envelope while the proxy goes on, the access log, and credentials that never
//! reach a log line.

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn cors_answers_a_preflight_and_a_request_from_an_allowed_origin_only() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(
        &fake,
        "cors_allow_origins = [\"https://app.example.com\"]\n",
    )
    .await;
    let c = client();
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(gw.url("/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(&c, preflight).await;
    assert!(a.status.is_success(), "{}", a.status);
    assert_eq!(
        a.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = a.headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = a.headers["access-control-allow-headers"].to_str().unwrap();
    assert!(headers.contains("authorization"), "{headers}");

    let real = Request::post(gw.url("/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    let a = send(&c, real).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = a.headers["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.contains("x-generation-id"), "{exposed}");

    // Another origin is told nothing; without the key, no CORS header at all.
    let other = Request::get(gw.url("/v1/models"))
        .header("origin", "https://evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(!send(&c, other)
        .await
        .headers
        .contains_key("access-control-allow-origin"));
    let plain = Gateway::in_front_of(&fake, "").await;
    let asked = Request::get(plain.url("/v1/models"))
        .header("origin", "https://app.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(!send(&c, asked)
        .await
        .headers
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_panic_is_a_500_in_the_envelope_and_the_proxy_goes_on() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::start_app(&standard_config(&fake, ""), &[], |proxy| {
        let routes = proxy.routes().route(
            "/boom",
            axum::routing::get(|| async {
                if true {
                    panic!("a bug in a layer");
                }
                "never"
            }),
        );
        proxy.with_server_layers(routes)
    })
    .await;
    let c = client();
    let a = send(&c, get(&gw.url("/boom"))).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.json()["error"]["code"], 500);
    assert!(a.headers.contains_key("x-generation-id"));
    // The same client, the same connection pool: the proxy still serves.
    assert_eq!(
        send(&c, get(&gw.url("/health"))).await.status,
        StatusCode::OK
    );
    let chat = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(chat.status, StatusCode::OK);
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_never_a_key() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeProvider::start(standard).await;
    let key = "sk-mg-logged-0123456789abcdef";
    let gw = Gateway::in_front_of(
        &fake,
        &format!("[[keys]]\nname = \"team-a\"\nkey = \"{key}\"\n"),
    )
    .await;
    let c = client();
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    let a = send(&c, req).await;
    assert_eq!(a.status, StatusCode::OK);
    let id = a.headers["x-generation-id"].to_str().unwrap().to_owned();
    let refused = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let logs = String::from_utf8(capture.bytes()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no access line for {id}: {logs}"));
    for part in [
        "method=POST",
        "path=/v1/chat/completions",
        "status=200",
        "latency_ms=",
        "key=\"team-a\"",
        "modelgate::access",
    ] {
        assert!(line.contains(part), "`{part}` missing: {line}");
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("status=401") && l.contains("key=\"-\"")),
        "{logs}"
    );
    assert!(
        !logs.contains(key) && !logs.contains("sk-client-secret"),
        "a key reached the log"
    );
    drop(_guard);

    // Off: no line.
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let quiet = Gateway::in_front_of(&fake, "access_log = false\n").await;
    let a = send(&c, get(&quiet.url("/health"))).await;
    assert_eq!(a.status, StatusCode::OK);
    let logs = String::from_utf8(capture.bytes()).unwrap();
    assert!(!logs.contains("modelgate::access"), "{logs}");
}

#[tokio::test]
async fn credentials_reach_the_routes_marked_sensitive() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::start_app(&standard_config(&fake, ""), &[], |proxy| {
        // A route that shows what any `Debug` of the request's head would.
        let routes = proxy.routes().route(
            "/echo",
            axum::routing::get(|req: axum::extract::Request| async move {
                format!("{:?}", req.headers())
            }),
        );
        proxy.with_server_layers(routes)
    })
    .await;
    let req = Request::get(gw.url("/echo"))
        .header("authorization", "Bearer sk-mg-secret-0123456789")
        .header("x-api-key", "sk-ant-secret-0123456789")
        .header("x-goog-api-key", "AIza-secret-0123456789")
        .header("x-team", "blue")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let shown = send(&client(), req).await.text();
    assert!(!shown.contains("secret"), "{shown}");
    assert!(
        shown.contains("Sensitive") && shown.contains("blue"),
        "{shown}"
    );
}
