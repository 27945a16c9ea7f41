//! Hostile clients through the proxy: silent connections, half prefaces and HTTP/2 handshakes
//! that go nowhere, a descriptor limit, HTTP/2 peers that stop answering pings, stalled request
//! bodies, and chunked bodies against a token limit.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the peer closes (`Ok(bytes read)`), or `Err` when it is still open at `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Result<usize, &'static str> {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Err(_) => return Err("still open"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(total),
            Ok(Ok(n)) => total += n,
        }
    }
}

/// The ways a connection can say nothing useful.
async fn silent_connections(addr: SocketAddr) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for what in [&b""[..], &H2_PREFACE[..10], H2_PREFACE] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(what).await.unwrap();
        conns.push(tcp);
    }
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(H2_PREFACE).await.unwrap();
    tcp.write_all(H2_SETTINGS).await.unwrap();
    conns.push(tcp);
    // And an HTTP/1 head that never ends.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    conns.push(tcp);
    conns
}

#[tokio::test]
async fn silent_connections_are_closed_at_the_head_deadline_and_make_room_at_the_bound() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(
        &fake,
        "max_connections = 6\nrequest_head_timeout_ms = 800\n",
    )
    .await;
    let addr = gw.addr;
    let mut silent = silent_connections(addr).await;
    // Twice the bound: the oldest silent ones make room for the rest, and for a real client.
    silent.extend(silent_connections(addr).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "the client did not wait for the head deadline: {:?}",
        started.elapsed()
    );
    // Every silent connection is closed by the deadline (plus scheduling slack).
    for (i, tcp) in silent.iter_mut().enumerate() {
        closed_within(tcp, Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("silent connection {i}: {e}"));
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_makes_room_and_a_busy_one_is_never_evicted() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "max_connections = 2\n").await;
    // A stream in flight on one connection, an idle keep-alive connection on another.
    let busy = client();
    let slow = tokio::spawn({
        let url = gw.url("/v1/chat/completions");
        async move { post(&busy, &url, chat("fake/slow", true, false)).await }
    });
    let idle = client();
    let a = post(
        &idle,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // A third client: the idle connection gives its place; the stream is untouched.
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let streamed = slow.await.unwrap();
    assert_eq!(streamed.status, StatusCode::OK);
    assert!(streamed.chunks().len() > 1, "the stream ran to [DONE]");
}

/// A request's HEADERS frame (HPACK without Huffman or indexing): a chat POST whose body has
/// not begun.
fn h2_chat_headers(stream: u32) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let path = b"/v1/chat/completions";
    block.push(0x04); // :path, a literal value
    block.push(path.len() as u8);
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 0x01, b'x']); // :authority x
    let mut frame = Vec::new();
    frame.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
    frame.push(0x1); // HEADERS
    frame.push(0x4); // END_HEADERS, not END_STREAM: the body is still to come
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(&block);
    frame
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_disconnected() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(
        &fake,
        "http2_keepalive_interval_ms = 200\nbody_idle_timeout_ms = 0\nrequest_head_timeout_ms = 60000\n",
    )
    .await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(H2_PREFACE).await.unwrap();
    tcp.write_all(H2_SETTINGS).await.unwrap();
    // A request in flight (its body never comes): neither the head deadline nor the body's
    // applies; only the pings can tell the peer is gone. The peer reads but never answers.
    tcp.write_all(&h2_chat_headers(1)).await.unwrap();
    let started = Instant::now();
    closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("the unanswered ping closes the connection");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed by the ping timeout, not at once: {:?}",
        started.elapsed()
    );
}

/// Raw HTTP/1.1: the head and the first part of a body, then the rest after `pause` (never,
/// when `None`); the whole answer.
async fn raw_post(addr: SocketAddr, body: &str, first: usize, pause: Option<Duration>) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..first]).await.unwrap();
    if let Some(p) = pause {
        tokio::time::sleep(p).await;
        tcp.write_all(&body.as_bytes()[first..]).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_stalled_request_body_is_a_408_and_a_slow_steady_one_gets_through() {
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "body_idle_timeout_ms = 300\n").await;
    let body = chat("vendor/fake-model", false, false);
    let started = Instant::now();
    let answer = raw_post(gw.addr, &body, 10, None).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"type\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.count(), 0, "nothing went upstream");

    // A pause shorter than the deadline is fine.
    let answer = raw_post(gw.addr, &body, 10, Some(Duration::from_millis(100))).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A large body trickled in small pieces, well past the deadline in all.
    let mut big: serde_json::Value = serde_json::from_str(&body).unwrap();
    big["messages"][0]["content"] = "tides ".repeat(20_000).into();
    let big = Bytes::from(big.to_string());
    let pieces: Vec<Bytes> = big
        .chunks(big.len() / 12 + 1)
        .map(Bytes::copy_from_slice)
        .collect();
    let started = Instant::now();
    let a = post_chunked(
        &gw.url("/v1/chat/completions"),
        None,
        pieces,
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(started.elapsed() > Duration::from_millis(900));
}

/// A POST whose body goes out chunked (no length), `pieces` one every `every`.
async fn post_chunked(url: &str, key: Option<&str>, pieces: Vec<Bytes>, every: Duration) -> Answer {
    let (tx, body) = ChannelBody::channel();
    tokio::spawn(async move {
        for p in pieces {
            tokio::time::sleep(every).await;
            if tx.send(Ok(p)).await.is_err() {
                return;
            }
        }
    });
    let mut req = Request::post(url).header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let res = client
        .request(req.body(body).unwrap())
        .await
        .expect("the gateway answers");
    let (parts, body) = res.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

#[tokio::test]
async fn a_chunked_body_is_held_to_the_token_limit_like_one_with_a_length() {
    let fake = FakeProvider::start(standard).await;
    let key = "sk-mg-tokens-0123456789";
    let gw = Gateway::in_front_of(
        &fake,
        &format!("[[keys]]\nname = \"tokens\"\nkey = \"{key}\"\ntokens_per_minute = 1000\n"),
    )
    .await;
    // Ten requests of about 5,000 tokens each (20 KB), at once, chunked.
    let mut big: serde_json::Value =
        serde_json::from_str(&chat("vendor/fake-model", false, false)).unwrap();
    big["messages"][0]["content"] = "x".repeat(20_000).into();
    let big = Bytes::from(big.to_string());
    let url = gw.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (url, big) = (url.clone(), big.clone());
            tokio::spawn(async move {
                let pieces = vec![big.slice(..5_000), big.slice(5_000..)];
                post_chunked(&url, Some(key), pieces, Duration::from_millis(5)).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(a.text().contains("(tokens)"), "{}", a.text());
            assert!(a.headers.contains_key("retry-after"));
        }
        statuses.push(a.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 429, 429, 429, 429, 429, 429, 429, 429, 429]);
    assert_eq!(fake.count(), 1);

    // A chunked body over the body limit is a 413 before any decision.
    let gw = Gateway::in_front_of(
        &fake,
        &format!("max_body_bytes = 1000\n[[keys]]\nname = \"tokens\"\nkey = \"{key}\"\ntokens_per_minute = 1000\n"),
    )
    .await;
    let a = post_chunked(
        &gw.url("/v1/chat/completions"),
        Some(key),
        vec![big],
        Duration::ZERO,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
}

/// Set in the child process that runs the proxy under a low descriptor limit.
const CHILD: &str = "MODELGATE_TEST_LOW_ULIMIT_CHILD";

/// The proxy, in a child process whose descriptor limit is 128; then a parent (with the usual
/// limit) opens 300 silent connections, and a real client must still get its answer. Twice:
/// with the default bound (derived from the limit), and with a bound set far above the limit,
/// so that the process does run out of descriptors.
#[test]
fn under_a_low_descriptor_limit_silent_connections_cannot_starve_a_real_client() {
    if let Ok(extra) = std::env::var(CHILD) {
        return child_proxy(&extra);
    }
    if cfg!(not(unix)) {
        return;
    }
    for extra in ["", "max_connections = 1000"] {
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
            .arg(exe)
            .args([
                "--exact",
                "under_a_low_descriptor_limit_silent_connections_cannot_starve_a_real_client",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let addr: SocketAddr = loop {
            let line = lines.next().expect("the child proxy starts").unwrap();
            // libtest writes the test's name on the same line first.
            if let Some((_, a)) = line.split_once("LISTENING ") {
                break a.trim().parse().unwrap();
            }
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut silent = Vec::new();
            for _ in 0..60 {
                silent.extend(silent_connections(addr).await);
            }
            assert_eq!(silent.len(), 300);
            let started = Instant::now();
            let a = tokio::time::timeout(
                Duration::from_secs(10),
                post(
                    &client(),
                    &format!("http://{addr}/v1/chat/completions"),
                    chat("vendor/fake-model", false, false),
                ),
            )
            .await
            .unwrap_or_else(|_| panic!("`{extra}`: the real client got no answer"));
            assert_eq!(a.status, StatusCode::OK, "`{extra}`: {}", a.text());
            eprintln!("`{extra}`: answered in {:?}", started.elapsed());
        });
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "`{extra}`: the child proxy failed: {status}"
        );
    }
}

/// The child: the proxy in front of a fake provider, until its standard input closes.
fn child_proxy(extra: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let fake = FakeProvider::start(standard).await;
        let gw = Gateway::in_front_of(&fake, &format!("{extra}\nrequest_head_timeout_ms = 2000\n"))
            .await;
        // The upstream connection is made now, while descriptors are plenty; the pool keeps it.
        let a = post(
            &client(),
            &gw.url("/v1/chat/completions"),
            chat("vendor/fake-model", false, false),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        println!("LISTENING {}", gw.addr);
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await
        .unwrap();
    });
}

/// Set in the child process that runs the proxy with its state on a small tmpfs.
const DISK_CHILD: &str = "MODELGATE_TEST_FULL_DISK_CHILD";
const ADMIN: &str = "sk-mg-admin-9876543210fedcba";

/// The state store on a 16 MiB tmpfs that fills up, then has room again: in a child process
/// with its own mount namespace (`unshare`). Skipped where no namespace can be made, except
/// under CI.
#[test]
fn a_full_disk_is_survived_and_nothing_recorded_in_between_is_lost() {
    if let Ok(dir) = std::env::var(DISK_CHILD) {
        return full_disk_child(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = "mount -t tmpfs -o size=16m tmpfs \"$MODELGATE_TEST_FULL_DISK_CHILD\" && exec \"$0\" \"$@\"";
    let args = [
        "--exact",
        "a_full_disk_is_survived_and_nothing_recorded_in_between_is_lost",
        "--nocapture",
        "--test-threads=1",
    ];
    // As root, a mount namespace; otherwise a user namespace with one.
    for unshare in [&["-m"][..], &["-r", "-m"][..]] {
        let status = std::process::Command::new("unshare")
            .args(unshare)
            .args(["sh", "-c", script])
            .arg(&exe)
            .args(args)
            .env(DISK_CHILD, dir.path())
            .status();
        match status {
            Ok(s) if s.success() => return,
            // The namespace or the mount was refused (exit 1 from unshare or sh; the test
            // itself fails with 101).
            Ok(s) if s.code() != Some(101) => continue,
            Ok(s) => panic!("the full-disk scenario failed: {s}"),
            Err(_) => continue,
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no mount namespace for the full-disk test (unshare -m / -rm refused)"
    );
    eprintln!("skipped: no mount namespace for a tmpfs");
}

fn full_disk_child(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let fake = FakeProvider::start(standard).await;
        let state = dir.join("state");
        let toml = standard_config(
            &fake,
            &format!(
                "admin_key_env = \"TEST_ADMIN_KEY\"\n[[keys]]\nname = \"app\"\nkey = \"sk-client-secret-do-not-forward\"\n[state]\ndir = {:?}\n",
                state.display().to_string()
            ),
        );
        let gw = Gateway::start_with_env(&toml, &[("TEST_ADMIN_KEY", ADMIN)]).await;
        let c = client();
        let url = gw.url("/v1/chat/completions");
        let mut ids = Vec::new();
        let a = post(&c, &url, chat("vendor/fake-model", false, false)).await;
        assert_eq!(a.status, StatusCode::OK);
        ids.push(a.headers["x-generation-id"].to_str().unwrap().to_owned());
        gw.flush().await;

        // The disk fills up.
        let ballast = dir.join("ballast");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&ballast).unwrap();
            let mb = vec![7u8; 1 << 20];
            while f.write_all(&mb).and_then(|()| f.sync_data()).is_ok() {}
        }
        // Chat goes on (the records wait in the queue) ...
        for _ in 0..3 {
            let a = post(&c, &url, chat("vendor/fake-model", false, false)).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            ids.push(a.headers["x-generation-id"].to_str().unwrap().to_owned());
        }
        // ... while writing a key cannot.
        let create = || async {
            let req = Request::post(gw.url("/v1/keys"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(http_body_util::Full::new(Bytes::from(r#"{"name":"new"}"#)))
                .unwrap();
            send(&c, req).await
        };
        let refused = create().await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());

        // Space again: the store reopens itself, the queued records land, keys can be made.
        std::fs::remove_file(&ballast).unwrap();
        tokio::time::timeout(Duration::from_secs(30), gw.flush())
            .await
            .expect("the queued records are written once there is room");
        let made = create().await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
        for id in &ids {
            let req = Request::get(gw.url(&format!("/v1/generation?id={id}")))
                .header("authorization", "Bearer sk-client-secret-do-not-forward")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            let r = send(&c, req).await;
            assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.text());
        }
        let metrics = send(
            &c,
            Request::get(gw.url("/metrics"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .text();
        let reopens = metrics
            .lines()
            .find_map(|l| l.strip_prefix("modelgate_state_reopens_total "))
            .unwrap_or_else(|| panic!("no reopen counted: {metrics}"));
        assert!(reopens.trim().parse::<f64>().unwrap() >= 1.0, "{reopens}");
    });
}

/// A provider key that no pattern would catch, a configured header that holds a credential.
const PLAIN_KEY: &str = "prov0plain0key0no0pattern0here";
const TEAM_TOKEN: &str = "tok-internal-abcdef123";

/// A fake provider that echoes every header it was sent into its answers: an error object in
/// a 200, a 200 that is not JSON, an error event inside a stream, and a 500.
fn echoing(r: &Received) -> Script {
    let echo: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let echo = serde_json::Value::Object(echo);
    let error = serde_json::json!({"error": {
        "message": format!("request rejected; it carried {echo}"),
        "type": "invalid_request_error",
        "metadata": {"raw": echo},
    }});
    match r.body["model"].as_str().unwrap_or("") {
        "error-in-200" => Script::json(200, error.to_string()),
        "not-json" => Script::json(200, format!("<html><pre>{echo}</pre></html>")),
        "stream-error" => Script::sse(vec![Piece::Data(Bytes::from(format!("data: {error}\n\n")))]),
        _ => Script::json(500, error.to_string()),
    }
}

#[tokio::test]
async fn provider_secrets_never_reach_clients_records_or_logs_whatever_the_shape() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeProvider::start(echoing).await;
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("records.jsonl");
    let toml = format!(
        r#"
[usage]
jsonl_path = {jsonl:?}

[[keys]]
name = "app"
key = "sk-client-secret-do-not-forward"

[[providers]]
name = "echo"
kind = "openai"
base_url = "{}"
api_key = "{PLAIN_KEY}"
headers = {{ "x-team-token" = "{TEAM_TOKEN}" }}

[fallback]
max_attempts = 1
"#,
        fake.base_url(),
        jsonl = jsonl.display().to_string(),
    );
    let gw = Gateway::start(&toml).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut seen = String::new();
    for (model, stream) in [
        ("error-in-200", false),
        ("not-json", false),
        ("stream-error", true),
        ("fail", false),
    ] {
        let a = post(&c, &url, chat(&format!("echo/{model}"), stream, false)).await;
        let text = a.text();
        assert!(
            text.contains("REDACTED"),
            "{model}: the echo reached the client, scrubbed: {text}"
        );
        seen.push_str(&text);
        let id = a.headers["x-generation-id"].to_str().unwrap().to_owned();
        let req = Request::get(gw.url(&format!("/v1/generation?id={id}")))
            .header("authorization", "Bearer sk-client-secret-do-not-forward")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let record = send(&c, req).await;
        assert_eq!(record.status, StatusCode::OK, "{}", record.text());
        seen.push_str(&record.text());
    }
    gw.flush().await;
    seen.push_str(&std::fs::read_to_string(&jsonl).unwrap());
    seen.push_str(&String::from_utf8_lossy(&capture.bytes()));
    for secret in [PLAIN_KEY, TEAM_TOKEN] {
        assert!(!seen.contains(secret), "`{secret}` leaked");
    }
    // The echo itself did get through (so the check above means something).
    assert!(seen.contains("x-team-token"));
}

/// An upstream event that never ends: 17 MiB of `data:` lines with no blank line.
/// After a first chunk, unless the model is `first`.
fn endless_event(r: &Received) -> Script {
    let line = Bytes::from(format!("data: {}\n", "x".repeat(64 << 10)));
    let mut pieces = vec![Piece::Data(Bytes::from_static(
        b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    ))];
    if r.body["model"] == "first" {
        pieces.clear();
    }
    pieces.extend(std::iter::repeat_n(Piece::Data(line), 17 * 16 + 1));
    pieces.push(Piece::Hang);
    Script::sse(pieces)
}

#[tokio::test]
async fn an_upstream_event_that_never_ends_is_cut_at_its_limit() {
    let fake = FakeProvider::start(endless_event).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let started = Instant::now();
    let a = tokio::time::timeout(
        Duration::from_secs(60),
        post(
            &client(),
            &gw.url("/v1/chat/completions"),
            chat("vendor/fake-model", true, false),
        ),
    )
    .await
    .expect("the stream ends at the limit, without waiting for the upstream");
    assert_eq!(a.status, StatusCode::OK);
    let events = a.events();
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], 502, "{last}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("larger than the limit"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // As the first event: the one error event of the stream (its head went out already).
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("fake/first", true, false),
    )
    .await;
    let events = a.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let only: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(only["error"]["code"], 502, "{only}");
    assert!(a.text().contains("larger than the limit"), "{}", a.text());
}

#[tokio::test]
async fn an_absurd_upstream_retry_after_is_told_as_the_cool_down_the_gateway_applies() {
    let fake = FakeProvider::start(|_: &Received| {
        Script::json(
            429,
            r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
        )
        .header("retry-after", "999999")
    })
    .await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let first = post(&c, &url, chat("vendor/fake-model", false, false)).await;
    assert_eq!(
        first.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        first.text()
    );
    let second = post(&c, &url, chat("vendor/fake-model", false, false)).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.text()
    );
    assert_eq!(fake.count(), 1, "the second waits out the cool-down");
    let wait = |a: &Answer| -> u64 { a.headers["retry-after"].to_str().unwrap().parse().unwrap() };
    // The default longest cool-down: 300 s, both times.
    assert_eq!(wait(&first), 300);
    assert_eq!(wait(&second), 300);
}

#[tokio::test]
async fn keys_show_little_guessing_is_held_back_and_two_different_keys_are_refused() {
    let fake = FakeProvider::start(standard).await;
    let key = "a-config-key-of-thirty-two-chars";
    let gw = Gateway::in_front_of(
        &fake,
        &format!("[[keys]]\nname = \"app\"\nkey = \"{key}\"\n"),
    )
    .await;
    let c = client();
    let with = |headers: &[(&str, &str)]| {
        let mut req = Request::get(gw.url("/v1/key"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(
            &c,
            req.body(http_body_util::Full::new(Bytes::new())).unwrap(),
        )
    };
    let bearer = format!("Bearer {key}");
    let info = with(&[("authorization", &bearer)]).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    assert_eq!(
        info.json()["data"]["label"],
        "…ars",
        "three characters at most"
    );

    // The same key in both headers is fine; two different ones are refused.
    let both = with(&[("authorization", &bearer), ("x-api-key", key)]).await;
    assert_eq!(both.status, StatusCode::OK);
    let two = with(&[
        ("authorization", &bearer),
        ("x-api-key", "another-key-0123456789abcdef"),
    ])
    .await;
    assert_eq!(two.status, StatusCode::UNAUTHORIZED);
    assert!(two.text().contains("different keys"), "{}", two.text());

    // Guessing from one address: 20 failures a minute, then held back, good key or not.
    for i in 0..19 {
        let a = with(&[("authorization", &format!("Bearer guess-{i:026}"))]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let held = with(&[("authorization", &bearer)]).await;
    assert_eq!(
        held.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        held.text()
    );
    assert!(held.headers.contains_key("retry-after"));
    let chat = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(
        chat.status,
        StatusCode::TOO_MANY_REQUESTS,
        "every route counts together"
    );
    assert_eq!(fake.count(), 0);
}

/// `late-200`: the headers at once, the first event after 350 ms; `late-500`: a 500 after
/// 350 ms.
fn late(r: &Received) -> Script {
    let late = Duration::from_millis(350);
    match r.body["model"].as_str().unwrap_or("") {
        "late-500" => Script {
            headers_after: Some(late),
            ..Script::json(500, r#"{"error":{"message":"boom","type":"server_error"}}"#)
        },
        _ => {
            let mut pieces = vec![Piece::Pause(late)];
            pieces.extend(events_of(&fixture("openai/openai_text.sse")));
            Script::sse(pieces)
        }
    }
}

#[tokio::test]
async fn keep_alive_comments_start_at_the_providers_200_never_before() {
    let fake = FakeProvider::start(late).await;
    let gw = Gateway::in_front_of(
        &fake,
        "keepalive_interval_ms = 100\n[fallback]\nmax_attempts = 1\n",
    )
    .await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let a = post(&c, &url, chat("fake/late-200", true, false)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().starts_with(": keepalive\n\n"), "{}", a.text());
    assert!(a.chunks().len() > 1);
    // Before the provider's head, nothing goes out: its status is still the answer's.
    let a = post(&c, &url, chat("fake/late-500", true, false)).await;
    assert!(a.status.is_server_error(), "{}: {}", a.status, a.text());
    assert!(!a.text().contains("keepalive"), "{}", a.text());
}

/// Set in the child process that runs the proxy until it is killed.
const CRASH_CHILD: &str = "MODELGATE_TEST_CRASH_CHILD";
const CRASH_KEY: &str = "sk-client-secret-do-not-forward";

fn crash_config(fake: &str, dir: &std::path::Path) -> String {
    standard_config_at(
        fake,
        &format!(
            "admin_key_env = \"TEST_ADMIN_KEY\"\n[[keys]]\nname = \"app\"\nkey = \"{CRASH_KEY}\"\n[state]\ndir = {:?}\n",
            dir.display().to_string()
        ),
    )
}

/// `kill -9` in the middle of traffic: every record of a request that ended more than the
/// writer's linger (plus a write) before the kill is there after the restart, with its spend;
/// keys made through the API are all there.
#[test]
fn after_kill_9_what_ended_before_the_window_is_all_there() {
    if let Ok(dir) = std::env::var(CRASH_CHILD) {
        return crash_child(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start(standard));
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "after_kill_9_what_ended_before_the_window_is_all_there",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, dir.path())
        .env("MODELGATE_TEST_FAKE", fake.base_url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let addr: SocketAddr = loop {
        let line = lines.next().expect("the child proxy starts").unwrap();
        if let Some((_, a)) = line.split_once("LISTENING ") {
            break a.trim().parse().unwrap();
        }
    };
    let c = client();
    let (durable, recent, keys) = rt.block_on(async {
        let mut keys = Vec::new();
        for i in 0..3 {
            let req = Request::post(format!("http://{addr}/v1/keys"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(http_body_util::Full::new(Bytes::from(format!(
                    r#"{{"name":"k{i}"}}"#
                ))))
                .unwrap();
            let a = send(&c, req).await;
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
            keys.push(a.json()["key"].as_str().unwrap().to_owned());
        }
        let url = format!("http://{addr}/v1/chat/completions");
        let ids = |n: usize| {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let mut ids = Vec::new();
                for _ in 0..n {
                    let a = post(&c, &url, chat("vendor/fake-model", false, false)).await;
                    assert_eq!(a.status, StatusCode::OK);
                    ids.push(a.headers["x-generation-id"].to_str().unwrap().to_owned());
                }
                ids
            }
        };
        let durable = ids(40).await;
        // The linger is 100 ms: well past it (and a write), these are on disk.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let recent = ids(10).await;
        (durable, recent, keys)
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    rt.block_on(async {
        let gw = Gateway::start_with_env(
            &crash_config(&fake.base_url(), dir.path()),
            &[("TEST_ADMIN_KEY", ADMIN)],
        )
        .await;
        let record = |id: String| {
            let req = Request::get(gw.url(&format!("/v1/generation?id={id}")))
                .header("authorization", format!("Bearer {CRASH_KEY}"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            send(&c, req)
        };
        for id in &durable {
            let r = record(id.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{id} ended well before the kill: {}",
                r.text()
            );
        }
        let mut kept = durable.len();
        for id in &recent {
            kept += usize::from(record(id.clone()).await.status == StatusCode::OK);
        }
        eprintln!("records kept: {kept} of {}", durable.len() + recent.len());
        // The spend is that of exactly the records kept.
        let req = Request::get(gw.url("/v1/key"))
            .header("authorization", format!("Bearer {CRASH_KEY}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let usage = send(&c, req).await.json()["data"]["usage"]
            .as_f64()
            .unwrap();
        let cost = (18.0 * 3.0 + 11.0 * 15.0) / 1e6;
        assert!(
            (usage - kept as f64 * cost).abs() < 1e-9,
            "spend {usage} for {kept} records"
        );
        for key in &keys {
            let req = Request::get(gw.url("/v1/key"))
                .header("authorization", format!("Bearer {key}"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            assert_eq!(
                send(&c, req).await.status,
                StatusCode::OK,
                "a key made before the kill"
            );
        }
    });
}

/// The child: the proxy on the state directory, until it is killed.
fn crash_child(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let fake = std::env::var("MODELGATE_TEST_FAKE").unwrap();
        let toml = crash_config(&fake, dir);
        let gw = Gateway::start_with_env(&toml, &[("TEST_ADMIN_KEY", ADMIN)]).await;
        println!("LISTENING {}", gw.addr);
        std::future::pending::<()>().await;
    });
}
