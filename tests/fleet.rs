//! A fleet on Redis: two proxies on one real `redis-server` share rate limits, keys, spend
//! and generation records; Redis killed mid-run and restarted; Redis unreachable at start.
//!
//! Each test starts its own `redis-server` (from `MODELGATE_REDIS_SERVER`, else `PATH`) on a
//! free loopback port. Without one the tests are skipped, except under CI (`CI` set), where
//! they fail: `scripts/test.sh` installs it.
#![cfg(feature = "redis")]

mod support;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use modelgate::auth::RateLimits;
use modelgate::proxy::{Config, Proxy};
use modelgate::rate_limit::RateLimitStore;
use modelgate::redis::{RedisOptions, RedisState};
use support::*;

const ADMIN: &str = "sk-mg-admin-fleet-0123456789";

/// 18 prompt tokens at $3/M and 11 completion tokens at $15/M (the fake's usage).
const COST: f64 = (18.0 * 3.0 + 11.0 * 15.0) / 1e6;

/// A `redis-server` of this test's own.
struct RedisServer {
    bin: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// TLS only (`rediss://`), with a certificate signed by `ca.pem` in `dir`.
    tls: bool,
    /// TLS clients must show a certificate signed by `ca.pem` (`client.pem` in `dir` is one).
    client_auth: bool,
}

impl RedisServer {
    /// Starts one, or `None` (skip) outside CI when there is no `redis-server`.
    fn start() -> Option<Self> {
        Self::start_with(false, false)
    }

    /// Starts one that speaks TLS only: a test certificate authority (`ca_file`) signed the
    /// server's certificate, for 127.0.0.1; with `client_auth`, clients need one it signed
    /// too (`client.pem`, `client.key`).
    fn start_tls(client_auth: bool) -> Option<Self> {
        Self::start_with(true, client_auth)
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool, client_auth: bool) -> Option<Self> {
        let bin = std::env::var("MODELGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let found = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server (`{bin}`) is missing under CI: scripts/test.sh installs it"
            );
            eprintln!(
                "skipped: no redis-server (set MODELGATE_REDIS_SERVER or install redis-server)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            bin,
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            tls,
            client_auth,
        };
        if tls {
            server.write_certificates();
        }
        server.spawn();
        Some(server)
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `ca.pem`, and `server.pem` / `server.key` (for 127.0.0.1) and `client.pem` /
    /// `client.key` signed by it.
    fn write_certificates(&self) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        // Distinct names: OpenSSL (the server) takes a certificate whose subject is its
        // issuer's for a self-signed one.
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "modelgate test authority");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let dir = self.dir.path();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for (name, san) in [("server", "127.0.0.1"), ("client", "modelgate-test-client")] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
    }

    /// Starts the process (with an append-only file, so a restart keeps the data) and waits
    /// until it answers PING.
    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .args([
                    "--tls-auth-clients",
                    if self.client_auth { "yes" } else { "no" },
                ]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                if self.tls {
                    // Listening is enough: the tests' first call is the TLS handshake.
                    return;
                }
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (`STOP`, `CONT`) to the server.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn fleet_config(fake: &FakeProvider, redis: &RedisServer, state: &str) -> String {
    standard_config(
        fake,
        &format!(
            "admin_key_env = \"MG_ADMIN\"\n[state]\nredis_url = \"{}\"\nredis_cache_ms = 100\n{state}\n",
            redis.url()
        ),
    )
}

async fn gateway(fake: &FakeProvider, redis: &RedisServer, state: &str) -> Gateway {
    Gateway::start_with_env(&fleet_config(fake, redis, state), &[("MG_ADMIN", ADMIN)]).await
}

async fn call(
    c: &HttpClient,
    method: Method,
    url: &str,
    key: &str,
    body: Option<String>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(Bytes::from).unwrap_or_default();
    send(c, req.body(Full::new(body)).unwrap()).await
}

async fn chat_on(c: &HttpClient, gw: &Gateway, key: &str) -> Answer {
    let body = chat("vendor/fake-model", false, false);
    call(
        c,
        Method::POST,
        &gw.url("/v1/chat/completions"),
        key,
        Some(body),
    )
    .await
}

/// Creates a key through `gw`'s management API: (id, plaintext).
async fn create_key(c: &HttpClient, gw: &Gateway, spec: serde_json::Value) -> (String, String) {
    let a = call(
        c,
        Method::POST,
        &gw.url("/v1/keys"),
        ADMIN,
        Some(spec.to_string()),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let v = a.json();
    (
        v["data"]["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

fn remaining_requests(a: &Answer) -> u32 {
    a.headers["x-ratelimit-remaining-requests"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_keys_limits_spend_and_records() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let a = gateway(&fake, &redis, "").await;
    let b = gateway(&fake, &redis, "").await;
    let c = client();

    // A key made on A works on B at once.
    let (limited_id, limited) = create_key(
        &c,
        &a,
        serde_json::json!({"name": "limited", "requests_per_minute": 4}),
    )
    .await;
    // Rate limit shared exactly: 4 per minute across both instances, whatever the order.
    let mut remaining = Vec::new();
    for gw in [&b, &a, &b, &a] {
        let r = chat_on(&c, gw, &limited).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        remaining.push(remaining_requests(&r));
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    for gw in [&b, &a] {
        let r = chat_on(&c, gw, &limited).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=15).contains(&wait), "retry-after {wait}");
    }

    // Spend shared: a limit of 1.5 requests' cost; one request on A, one on B, then both
    // refuse.
    let (spend_id, spender) = create_key(
        &c,
        &b,
        serde_json::json!({"name": "spender", "limit": COST * 1.5}),
    )
    .await;
    let first = chat_on(&c, &a, &spender).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    a.flush().await;
    let second = chat_on(&c, &b, &spender).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    b.flush().await;
    for gw in [&a, &b] {
        let r = chat_on(&c, gw, &spender).await;
        assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.text());
        assert_eq!(
            r.json()["error"]["type"],
            "insufficient_credits",
            "{}",
            r.text()
        );
    }
    let info = call(&c, Method::GET, &a.url("/v1/key"), &spender, None).await;
    let usage = info.json()["data"]["usage"].as_f64().unwrap();
    assert!((usage - 2.0 * COST).abs() < 1e-12, "usage {usage}");

    // Each serves the other's generation records, to the key that made them only.
    let id = first.headers["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let url = b.url(&format!("/v1/generation?id={id}"));
    let rec = call(&c, Method::GET, &url, &spender, None).await;
    assert_eq!(rec.status, StatusCode::OK, "{}", rec.text());
    let rec = rec.json();
    assert_eq!(rec["data"]["key_id"], spend_id.as_str());
    assert!((rec["data"]["cost"].as_f64().unwrap() - COST).abs() < 1e-15);
    assert_eq!(rec["data"]["prompt_tokens"], 18);
    let other = call(&c, Method::GET, &url, &limited, None).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    // Both list both keys.
    for gw in [&a, &b] {
        let list = call(&c, Method::GET, &gw.url("/v1/keys"), ADMIN, None).await;
        let ids: Vec<String> = list.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            ids.contains(&limited_id) && ids.contains(&spend_id),
            "{ids:?}"
        );
    }

    // Disabling a key on B takes effect on A within a second.
    let (_, fresh) = create_key(&c, &a, serde_json::json!({"name": "fresh"})).await;
    assert_eq!(chat_on(&c, &a, &fresh).await.status, StatusCode::OK);
    let list = call(&c, Method::GET, &b.url("/v1/keys"), ADMIN, None).await;
    let fresh_id = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "fresh")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patch = serde_json::json!({"disabled": true}).to_string();
    let url = b.url(&format!("/v1/keys/{fresh_id}"));
    let r = call(&c, Method::PATCH, &url, ADMIN, Some(patch)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let disabled_at = Instant::now();
    loop {
        let r = chat_on(&c, &a, &fresh).await;
        if r.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            disabled_at.elapsed() < Duration::from_secs(1),
            "still served a second after it was disabled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Deleted on A: gone on B (a lookup of an unknown key asks Redis at once).
    let url = a.url(&format!("/v1/keys/{fresh_id}"));
    let r = call(&c, Method::DELETE, &url, ADMIN, None).await;
    assert!(r.status.is_success(), "{}", r.text());
    let r = call(
        &c,
        Method::GET,
        &b.url(&format!("/v1/keys/{fresh_id}")),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_fails_closed_with_503s_and_service_resumes_when_it_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let gw = gateway(&fake, &redis, "").await;
    let c = client();
    let (_, key) = create_key(
        &c,
        &gw,
        serde_json::json!({"name": "app", "requests_per_minute": 1000, "limit": 1.0}),
    )
    .await;
    let before = chat_on(&c, &gw, &key).await;
    assert_eq!(before.status, StatusCode::OK);
    gw.flush().await;

    redis.kill();
    let r = chat_on(&c, &gw, &key).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("Redis"), "{msg}");
    assert_eq!(fake.count(), 1, "nothing went upstream unchecked");
    // Key management needs Redis too.
    let r = call(&c, Method::GET, &gw.url("/v1/keys"), ADMIN, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let metrics = call(&c, Method::GET, &gw.url("/metrics"), ADMIN, None)
        .await
        .text();
    assert!(
        metrics.contains("modelgate_redis_errors_total{concern=\"rate_limits\"}"),
        "{metrics}"
    );

    // Back (with its data): served again without a restart; the record and the spend of the
    // request before the outage are there.
    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let r = chat_on(&c, &gw, &key).await;
        if r.status == StatusCode::OK {
            break r;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert!(Instant::now() < deadline, "never recovered: {}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    gw.flush().await;
    for a in [&before, &after] {
        let id = a.headers["x-generation-id"].to_str().unwrap();
        let url = gw.url(&format!("/v1/generation?id={id}"));
        let rec = call(&c, Method::GET, &url, &key, None).await;
        assert_eq!(rec.status, StatusCode::OK, "{}", rec.text());
    }
    let info = call(&c, Method::GET, &gw.url("/v1/key"), &key, None).await;
    let usage = info.json()["data"]["usage"].as_f64().unwrap();
    assert!((usage - 2.0 * COST).abs() < 1e-12, "usage {usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_one_timeout_not_one_per_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let gw = gateway(&fake, &redis, "redis_timeout_ms = 300").await;
    let c = client();
    let (_, key) = create_key(
        &c,
        &gw,
        serde_json::json!({"name": "app", "requests_per_minute": 1000}),
    )
    .await;
    assert_eq!(chat_on(&c, &gw, &key).await.status, StatusCode::OK);

    // Frozen, not gone: connections stay open and nothing answers.
    redis.signal("STOP");
    let started = Instant::now();
    for _ in 0..10 {
        let r = chat_on(&c, &gw, &key).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    }
    let took = started.elapsed();
    redis.signal("CONT");
    // Ten requests waiting 300 ms each would take 3 s.
    assert!(took < Duration::from_millis(2_000), "{took:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while chat_on(&c, &gw, &key).await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_uses_local_limits_and_loses_no_record() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let open = "redis_fail_open = [\"rate_limits\", \"keys\", \"spend\"]";
    let gw = gateway(&fake, &redis, open).await;
    let c = client();
    let (_, key) = create_key(
        &c,
        &gw,
        serde_json::json!({"name": "app", "requests_per_minute": 3, "limit": 1.0}),
    )
    .await;
    assert_eq!(chat_on(&c, &gw, &key).await.status, StatusCode::OK);
    gw.flush().await;

    redis.kill();
    // Served from this instance's own state: its own limiter (fresh, so 3 more), never
    // unlimited.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = chat_on(&c, &gw, &key).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        ids.push(r.headers["x-generation-id"].to_str().unwrap().to_owned());
    }
    let r = chat_on(&c, &gw, &key).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let metrics = call(&c, Method::GET, &gw.url("/metrics"), ADMIN, None)
        .await
        .text();
    assert!(
        metrics.contains("modelgate_redis_fail_open_total{concern=\"rate_limits\"}"),
        "{metrics}"
    );

    // The records made meanwhile wait in the queue and land once Redis is back; another
    // instance then serves them, and the spend counts all four requests.
    redis.spawn();
    tokio::time::timeout(Duration::from_secs(30), gw.flush())
        .await
        .expect("the queued records are written once Redis is back");
    let other = gateway(&fake, &redis, "").await;
    for id in &ids {
        let url = other.url(&format!("/v1/generation?id={id}"));
        let rec = call(&c, Method::GET, &url, &key, None).await;
        assert_eq!(rec.status, StatusCode::OK, "{}", rec.text());
    }
    let info = call(&c, Method::GET, &other.url("/v1/key"), &key, None).await;
    let usage = info.json()["data"]["usage"].as_f64().unwrap();
    assert!((usage - 4.0 * COST).abs() < 1e-12, "usage {usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_redis_never_took_are_spilled_at_shutdown_and_written_at_the_next_start() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let dir = tempfile::tempdir().unwrap();
    let state = format!(
        "dir = \"{}\"\nredis_fail_open = [\"rate_limits\", \"keys\", \"spend\"]",
        dir.path().display()
    );
    let mut gw = gateway(&fake, &redis, &state).await;
    let c = client();
    let (_, key) = create_key(&c, &gw, serde_json::json!({"name": "app"})).await;
    redis.kill();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = chat_on(&c, &gw, &key).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        ids.push(r.headers["x-generation-id"].to_str().unwrap().to_owned());
    }
    // Shutdown with Redis still down: after the wait, the queue goes to the spill file.
    assert!(gw.close_recorder(Duration::from_millis(300)).await);
    let _ = gw.shutdown().await;
    let spill = dir.path().join(modelgate::proxy::SPILL_FILE);
    let text = std::fs::read_to_string(&spill).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for id in &ids {
        assert!(text.contains(id.as_str()));
    }
    drop(gw);

    // The next start writes them to Redis and removes the file.
    redis.spawn();
    let next = gateway(&fake, &redis, &state).await;
    assert!(!spill.exists());
    for id in &ids {
        let url = next.url(&format!("/v1/generation?id={id}"));
        let rec = call(&c, Method::GET, &url, &key, None).await;
        assert_eq!(rec.status, StatusCode::OK, "{}", rec.text());
    }
    let info = call(&c, Method::GET, &next.url("/v1/key"), &key, None).await;
    let usage = info.json()["data"]["usage"].as_f64().unwrap();
    assert!((usage - 2.0 * COST).abs() < 1e-12, "usage {usage}");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_startup_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fake = FakeProvider::start(standard).await;
    let toml = standard_config(
        &fake,
        &format!(
            "[state]\nredis_url = \"redis://:hunter2@127.0.0.1:{port}\"\nredis_timeout_ms = 300\n"
        ),
    );
    let env = |_: &str| None;
    let err = Proxy::from_config(&Config::from_toml(&toml).unwrap(), &env)
        .await
        .map(|_| ())
        .unwrap_err()
        .0;
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let bad = standard_config(
        &fake,
        "[state]\nredis_url = \"redis://x\"\nredis_fail_open = [\"records\"]\n",
    );
    let err = Proxy::from_config(&Config::from_toml(&bad).unwrap(), &env)
        .await
        .map(|_| ())
        .unwrap_err()
        .0;
    assert!(
        err.contains("redis_fail_open") && err.contains("records"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_authority_and_client_certificates() {
    let Some(redis) = RedisServer::start_tls(false) else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let ca = format!("redis_ca_file = \"{}\"", redis.ca_file().display());
    let a = gateway(&fake, &redis, &ca).await;
    let b = gateway(&fake, &redis, &ca).await;
    let c = client();

    // A key made on A works on B; a record made on B is served by A.
    let (_, key) = create_key(&c, &a, serde_json::json!({"name": "tls"})).await;
    let answer = chat_on(&c, &b, &key).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    b.flush().await;
    let id = answer.headers["x-generation-id"].to_str().unwrap();
    let url = a.url(&format!("/v1/generation?id={id}"));
    let record = call(&c, Method::GET, &url, &key, None).await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.text());
    assert_eq!(record.json()["data"]["cost"].as_f64(), Some(COST));

    // Without the authority, the server's certificate is refused: a startup error that says so.
    let env = |_: &str| None;
    let start = |toml: String| async move {
        Proxy::from_config(&Config::from_toml(&toml).unwrap(), &env)
            .await
            .map(|_| ())
            .unwrap_err()
            .0
    };
    let err = start(fleet_config(&fake, &redis, "")).await;
    assert!(
        err.contains("unreachable") && err.contains("redis_ca_file"),
        "{err}"
    );
    // An authority for a URL without TLS, and one that cannot be read, are refused too.
    let plain = redis.url().replace("rediss://", "redis://");
    let toml = fleet_config(&fake, &redis, &ca).replace(&redis.url(), &plain);
    let err = start(toml).await;
    assert!(err.contains("not `rediss://`"), "{err}");
    let err = start(fleet_config(
        &fake,
        &redis,
        "redis_ca_file = \"/nonexistent/ca.pem\"",
    ))
    .await;
    assert!(
        err.contains("redis_ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );

    // A server that asks for client certificates: refused without one, served with it.
    let Some(mutual) = RedisServer::start_tls(true) else {
        return;
    };
    let file = |name: &str| mutual.dir.path().join(name).display().to_string();
    let ca = format!("redis_ca_file = \"{}\"", file("ca.pem"));
    let err = start(fleet_config(&fake, &mutual, &ca)).await;
    assert!(err.contains("unreachable"), "{err}");
    let identity = format!(
        "{ca}\nredis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"",
        file("client.pem"),
        file("client.key")
    );
    let m = gateway(&fake, &mutual, &identity).await;
    let (_, key) = create_key(&c, &m, serde_json::json!({"name": "mtls"})).await;
    let answer = chat_on(&c, &m, &key).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let half = format!("{ca}\nredis_client_cert_file = \"{}\"", file("client.pem"));
    let err = start(fleet_config(&fake, &mutual, &half)).await;
    assert!(err.contains("go together"), "{err}");
}

/// The rate-limit store on `redis`.
async fn redis_limits(redis: &RedisServer) -> Arc<impl RateLimitStore> {
    let state = RedisState::connect(RedisOptions::new(redis.url()))
        .await
        .unwrap();
    Arc::new(state.rate_limits())
}

#[tokio::test]
async fn token_limits_are_reserved_and_settled_in_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = redis_limits(&redis).await;
    let tpm = RateLimits::default().with_tokens_per_minute(100);
    let d = limits.acquire("k", &tpm, 60).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.tokens.unwrap().remaining, 40);
    assert!(d.requests.is_none());
    // 60 more do not fit.
    let d = limits.acquire("k", &tpm, 60).await.unwrap();
    assert!(!d.allowed);
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(11) && wait <= Duration::from_secs(12),
        "{wait:?}"
    );
    // Only 10 were used: 50 come back (in the background), and then 80 fit.
    limits.reconcile("k", &tpm, 60, 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = limits
            .acquire("k", &RateLimits::default().with_tokens_per_minute(100), 0)
            .await
            .unwrap();
        if d.tokens.unwrap().remaining >= 89 {
            break;
        }
        assert!(Instant::now() < deadline, "the reconciliation never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = limits.acquire("k", &tpm, 80).await.unwrap();
    assert!(d.allowed, "{d:?}");
    // Another key is untouched.
    let d = limits.acquire("other", &tpm, 100).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.tokens.unwrap().remaining, 0);
}

fn record(id: &str, key: &str, cost: f64, at: i64) -> modelgate::usage::UsageRecord {
    modelgate::usage::UsageRecord {
        id: id.into(),
        created_at: at,
        key_id: Some(key.into()),
        requested_model: "m".into(),
        model: "m".into(),
        provider: Some("p".into()),
        upstream_model: Some("u".into()),
        prompt_tokens: 1,
        completion_tokens: 1,
        cached_tokens: 0,
        reasoning_tokens: 0,
        cost: Some(cost),
        estimated: false,
        streamed: false,
        status: Some(200),
        error: None,
        finish_reason: Some("stop".into()),
        cancelled: false,
        latency_ms: 1,
        time_to_first_token_ms: None,
        attempts: Vec::new(),
        referer: None,
        title: None,
        user: None,
        cache_write_tokens: 0,
        dialect: modelgate::Dialect::Chat,
        categories: None,
        session_id: None,
    }
}

#[tokio::test]
async fn spend_counts_each_record_once_per_window_and_pending_costs_count_at_once() {
    use modelgate::auth::LimitReset;
    use modelgate::usage::{SpendStore, UsageSink};
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut opts = RedisOptions::new(redis.url());
    opts.cache = Duration::from_secs(3600);
    let state = RedisState::connect(opts).await.unwrap();
    let usage = state.usage(Some(Duration::from_secs(86_400)));
    // Monday 2026-11-30 23:00 UTC, and an hour later (Tuesday 1 December).
    let mon = 1_796_079_600;
    let tue = mon + 3_600;
    // Made here: counted at once, before the writer got to it.
    for (at, usd) in [(mon, 0.25), (mon, 0.5), (tue, 1.0)] {
        usage.add("k", usd, at);
    }
    let s = usage.fetch("k").await.unwrap();
    assert_eq!(s.spent(None, tue), 1.75);
    assert_eq!(s.spent(Some(LimitReset::Daily), tue), 1.0);
    assert_eq!(s.spent(Some(LimitReset::Weekly), tue), 1.75);
    assert_eq!(s.spent(Some(LimitReset::Monthly), tue), 1.0);
    let batch: Arc<[_]> = vec![
        record("gen-1", "k", 0.25, mon),
        record("gen-2", "k", 0.5, mon),
        record("gen-3", "k", 1.0, tue),
        record("gen-4", "other", 2.0, tue),
    ]
    .into();
    usage.write(batch.clone()).await.unwrap();
    // A batch offered again (as after a failed reply) is not counted twice.
    usage.write(batch).await.unwrap();
    assert!(
        usage.cached("k").is_none(),
        "a write makes cached spend stale"
    );
    for s in [usage.fetch("k").await.unwrap(), {
        // Another instance sees the same.
        let other = RedisState::connect(RedisOptions::new(redis.url()))
            .await
            .unwrap();
        other.usage(None).fetch("k").await.unwrap()
    }] {
        assert!((s.spent(None, tue) - 1.75).abs() < 1e-12, "{s:?}");
        assert!(
            (s.spent(Some(LimitReset::Daily), tue) - 1.0).abs() < 1e-12,
            "{s:?}"
        );
        assert!(
            (s.spent(Some(LimitReset::Weekly), tue) - 1.75).abs() < 1e-12,
            "{s:?}"
        );
        assert!(
            (s.spent(Some(LimitReset::Monthly), tue) - 1.0).abs() < 1e-12,
            "{s:?}"
        );
        assert_eq!(s.spent(Some(LimitReset::Daily), tue + 86_400), 0.0);
    }
    assert!((usage.fetch("other").await.unwrap().total - 2.0).abs() < 1e-12);
    let r = usage.generation("gen-3".into()).await.unwrap().unwrap();
    assert_eq!(r, record("gen-3", "k", 1.0, tue));
    assert!(usage.generation("gen-none".into()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_absurd_usage_settles_as_a_long_wait_and_redis_stays_healthy() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = redis_limits(&redis).await;
    let tpm = RateLimits::default().with_tokens_per_minute(1);
    assert!(limits.acquire("k", &tpm, 1).await.unwrap().allowed);
    // A provider that reports u64::MAX tokens: the key owes them, Redis takes the debt.
    limits.reconcile("k", &tpm, 1, u64::MAX);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Refused with a long wait, not a Redis failure (which would be a 503 for everyone).
        let d = limits
            .acquire("k", &tpm, 1)
            .await
            .expect("Redis still serves");
        let wait = d.retry_after.unwrap_or_default();
        if !d.allowed && wait > Duration::from_secs(86_400 * 365) {
            break;
        }
        assert!(Instant::now() < deadline, "the debt never landed: {d:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = limits.acquire("other", &tpm, 1).await.unwrap();
    assert!(d.allowed, "another key is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_are_listed_from_redis_by_key_and_paged_while_records_are_written() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let a = gateway(&fake, &redis, "").await;
    let b = gateway(&fake, &redis, "").await;
    let c = client();
    let (_, one) = create_key(&c, &a, serde_json::json!({"name": "one"})).await;
    let (two_id, two) = create_key(&c, &a, serde_json::json!({"name": "two"})).await;
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(chat_on(&c, gw, &one).await.status, StatusCode::OK);
    }
    for _ in 0..4 {
        assert_eq!(chat_on(&c, &b, &two).await.status, StatusCode::OK);
    }
    a.flush().await;
    b.flush().await;
    let list = |gw: &Gateway, key: &str, query: String| {
        let url = gw.url(&format!("/v1/generations?{query}"));
        let key = key.to_owned();
        let c = c.clone();
        async move {
            let a = call(&c, Method::GET, &url, &key, None).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            a.json()
        }
    };
    // Key one's six, in pages of 4, through either instance; records written between pages
    // do not come back on later pages.
    let first = list(&a, &one, "limit=4".into()).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 4);
    assert_eq!(chat_on(&c, &b, &one).await.status, StatusCode::OK);
    b.flush().await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list(&b, &one, format!("limit=4&cursor={cursor}")).await;
    let ids: Vec<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, once each"
    );
    assert!(second["next_cursor"].is_null());
    // The admin key: everyone's (ten, and the one written since), or key two's.
    let all = list(&b, ADMIN, "limit=500".into()).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 11);
    let twos = list(&a, ADMIN, format!("key={two_id}")).await;
    assert_eq!(twos["data"].as_array().unwrap().len(), 4);
    // Activity from the hours' totals in Redis: a key's own, and everyone's by key.
    let activity = |gw: &Gateway, key: &str, query: &str| {
        let url = gw.url(&format!("/v1/activity?{query}"));
        let key = key.to_owned();
        let c = c.clone();
        async move {
            let a = call(&c, Method::GET, &url, &key, None).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            a.json()
        }
    };
    let mine = activity(&a, &one, "bucket=1d").await;
    let rows = mine["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{mine}");
    assert_eq!(rows[0]["requests"], 7);
    assert_eq!(rows[0]["errors"], 0);
    assert!(rows[0]["cost"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["latency_ms"]["p50"].as_u64().is_some());
    let by_key = activity(&b, ADMIN, "group_by=key&bucket=1d").await;
    let mut counts: Vec<u64> = by_key["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .collect();
    counts.sort();
    assert_eq!(counts, [4, 7]);
}
