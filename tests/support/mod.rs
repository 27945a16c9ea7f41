//! Test support: a fake OpenAI-compatible provider on 127.0.0.1:0 that speaks the real wire
//! format (and its faults), the proxy started on 127.0.0.1:0, and a small HTTP client.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelgate::proxy::{serve, Config, Proxy, ServeOptions};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub const PROVIDER_KEY: &str = "sk-fake-provider-key-0123456789";

pub fn fixture(path: &str) -> Bytes {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}")))
}

/// One piece of a scripted answer body.
#[derive(Clone, Debug)]
pub enum Piece {
    /// Bytes, sent as one frame.
    Data(Bytes),
    /// Wait (real time; keep it short).
    Pause(Duration),
    /// Abort the connection (the body fails; hyper closes without the chunked terminator).
    Cut,
    /// Never send anything more.
    Hang,
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Never answer at all (no headers).
    pub hang_before_headers: bool,
    /// Wait this long before the headers (real time; keep it short).
    pub headers_after: Option<Duration>,
    pub body: Vec<Piece>,
}

impl Script {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Script {
            status,
            headers: vec![("content-type", "application/json".into())],
            hang_before_headers: false,
            headers_after: None,
            body: vec![Piece::Data(body.into())],
        }
    }

    pub fn sse(pieces: Vec<Piece>) -> Self {
        Script {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            hang_before_headers: false,
            headers_after: None,
            body: pieces,
        }
    }

    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
}

/// What the fake provider received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    /// The body's bytes, as they came.
    #[allow(dead_code)] // not every test binary reads them
    pub raw: Bytes,
}

type Handler = Arc<dyn Fn(&Received) -> Script + Send + Sync>;

/// A fake OpenAI-compatible provider.
pub struct FakeProvider {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    _stop: oneshot::Sender<()>,
}

impl FakeProvider {
    pub async fn start(handler: impl Fn(&Received) -> Script + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let rec = received.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                let _ = tcp.set_nodelay(true);
                let handler = handler.clone();
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let rec = rec.clone();
                        async move { Ok::<_, Infallible>(answer(req, handler, rec).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FakeProvider {
            addr,
            received,
            _stop: stop,
        }
    }

    /// The OpenAI `base_url` of this fake.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the fake provider received nothing")
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Every request received, in order.
    #[allow(dead_code)] // not every test binary reads them all
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn answer(
    req: Request<Incoming>,
    handler: Handler,
    rec: Arc<Mutex<Vec<Received>>>,
) -> Response<ChannelBody> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let received = Received {
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned(),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        raw: bytes,
    };
    let script = handler(&received);
    rec.lock().unwrap().push(received);
    if script.hang_before_headers {
        std::future::pending::<()>().await;
    }
    if let Some(wait) = script.headers_after {
        tokio::time::sleep(wait).await;
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for piece in script.body {
            match piece {
                Piece::Data(b) => {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
                Piece::Pause(d) => tokio::time::sleep(d).await,
                Piece::Cut => {
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                    return;
                }
                Piece::Hang => {
                    tx.closed().await;
                    return;
                }
            }
        }
    });
    let mut res = Response::new(ChannelBody { rx });
    *res.status_mut() = StatusCode::from_u16(script.status).unwrap();
    for (k, v) in script.headers {
        res.headers_mut().insert(k, v.parse().unwrap());
    }
    res
}

/// A body fed by a channel (no length: HTTP/1 sends it chunked).
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl ChannelBody {
    /// The sending end, and the body.
    pub fn channel() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(16);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// Splits an SSE fixture into one piece per event.
pub fn events_of(bytes: &[u8]) -> Vec<Piece> {
    let text = std::str::from_utf8(bytes).unwrap();
    let sep = if text.contains("\r\n\r\n") {
        "\r\n\r\n"
    } else {
        "\n\n"
    };
    text.split_inclusive(sep)
        .map(|e| Piece::Data(Bytes::copy_from_slice(e.as_bytes())))
        .collect()
}

/// The behaviours the standard fake offers, chosen by the upstream model name.
pub fn standard(received: &Received) -> Script {
    let model = received.body["model"].as_str().unwrap_or("").to_owned();
    let stream = received.body["stream"].as_bool().unwrap_or(false);
    match model.as_str() {
        "tool" if stream => Script::sse(events_of(&fixture("openai/openai_tool.sse"))),
        "fail-429" => Script::json(429, r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#)
            .header("retry-after", "2"),
        "fail-400" => Script::json(400, r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#),
        "fail-401" => Script::json(401, format!(r#"{{"error":{{"message":"Incorrect API key provided: {PROVIDER_KEY}","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#)),
        "fail-500" => Script::json(500, r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#),
        "fail-503" => Script::json(503, r#"{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}"#),
        "fail-529" => Script::json(529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        "garbage" => Script::json(200, "{\"id\": \"chatcmpl-x\", \"choices\": [tru"),
        "cut" if stream => {
            let mut p: Vec<Piece> = events_of(&fixture("openai/openai_text.sse")).into_iter().take(2).collect();
            // Let the events reach the wire before the abort (hyper drops unflushed bytes).
            p.push(Piece::Pause(Duration::from_millis(20)));
            p.push(Piece::Cut);
            Script::sse(p)
        }
        "no-done" if stream => Script::sse(events_of(&fixture("openai/openai_text.sse")).into_iter().take(3).collect()),
        "in-stream-error" if stream => {
            let mut p: Vec<Piece> = events_of(&fixture("openai/openai_text.sse")).into_iter().take(2).collect();
            p.push(Piece::Data(Bytes::from_static(b"data: {\"error\":{\"message\":\"The server had an error while processing your request\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n")));
            Script::sse(p)
        }
        "hang" => Script { hang_before_headers: true, ..Script::json(200, "") },
        "stall" if stream => Script::sse(vec![events_of(&fixture("openai/openai_text.sse")).remove(0), Piece::Hang]),
        "slow" if stream => {
            let mut p = Vec::new();
            for e in events_of(&fixture("openai/openai_text.sse")) {
                p.push(e);
                p.push(Piece::Pause(Duration::from_millis(50)));
            }
            Script::sse(p)
        }
        "json-for-stream" => Script::json(200, completion_json("text")),
        _ if stream => Script::sse(events_of(&fixture("openai/openai_text.sse"))),
        _ => Script::json(200, completion_json(&model)),
    }
}

/// OpenAI's own Chat Completions parameters: what [`strict_openai`] accepts.
pub const OPENAI_PARAMETERS: &[&str] = &[
    "messages",
    "model",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

/// An OpenAI-kind fake as strict as OpenAI: an argument it does not know is a 400
/// ("Unrecognized request argument supplied"), which ends a fallback walk; otherwise the
/// standard fake's answers.
#[allow(dead_code)] // not every test binary uses it
pub fn strict_openai(received: &Received) -> Script {
    if let Some(obj) = received.body.as_object() {
        if let Some(k) = obj
            .keys()
            .find(|k| !OPENAI_PARAMETERS.contains(&k.as_str()))
        {
            return Script::json(
                400,
                format!(
                    r#"{{"error":{{"message":"Unrecognized request argument supplied: {k}","type":"invalid_request_error","param":null,"code":null}}}}"#
                ),
            );
        }
    }
    standard(received)
}

/// The behaviours the standard Anthropic-kind fake offers, chosen by the upstream model name
/// (`count_tokens` always counts 1,234).
pub fn standard_anthropic(received: &Received) -> Script {
    if received.path.ends_with("/count_tokens") {
        return Script::json(200, r#"{"input_tokens":1234}"#);
    }
    let model = received.body["model"].as_str().unwrap_or("").to_owned();
    let stream = received.body["stream"].as_bool().unwrap_or(false);
    match model.as_str() {
        "claude-529" => Script::json(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
        "claude-400" => Script::json(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
        ),
        "claude-busy" if stream => {
            // Overloaded right after `message_start`: nothing has reached the client yet.
            let mut p: Vec<Piece> = events_of(&fixture("anthropic/anthropic_error.sse"));
            p.remove(1);
            p.remove(1);
            Script::sse(p)
        }
        "claude-cut" if stream => {
            let mut p: Vec<Piece> = events_of(&fixture("anthropic/anthropic_text.sse"))
                .into_iter()
                .take(3)
                .collect();
            p.push(Piece::Pause(Duration::from_millis(20)));
            p.push(Piece::Cut);
            Script::sse(p)
        }
        "claude-thinking" if stream => {
            Script::sse(events_of(&fixture("anthropic/anthropic_thinking.sse")))
        }
        "claude-tool" if stream => Script::sse(events_of(&fixture("anthropic/anthropic_tool.sse"))),
        _ if stream => Script::sse(events_of(&fixture("anthropic/anthropic_text.sse"))),
        _ => Script::json(200, ANTHROPIC_MESSAGE),
    }
}

/// A non-streamed Anthropic message with thinking, redacted thinking and cache counts.
pub const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_01Abc","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"thinking","thinking":"Sum.","signature":"EqQBsig=="},{"type":"redacted_thinking","data":"EmwKAhgBEgy3"},{"type":"text","text":"4","citations":null}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":20,"cache_creation_input_tokens":100,"cache_read_input_tokens":300,"cache_creation":{"ephemeral_5m_input_tokens":40,"ephemeral_1h_input_tokens":60},"output_tokens":5}}"#;

/// A Gemini-kind fake: the text fixture, streamed or whole, whatever the model.
pub fn standard_gemini(received: &Received) -> Script {
    if received.path.contains("streamGenerateContent") {
        return Script::sse(events_of(&fixture("gemini/gemini_text.sse")));
    }
    Script::json(
        200,
        r#"{"candidates":[{"content":{"parts":[{"text":"Tides come mostly from the Moon's pull on the oceans."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":18,"totalTokenCount":30},"modelVersion":"gemini-2.5-flash"}"#,
    )
}

/// An OpenAI-kind fake that serves the Responses API itself (`responses = true`): "Hi there",
/// streamed or whole; upstream model `gpt-5-cut` cuts the stream after the first delta.
pub fn standard_openai_responses(received: &Received) -> Script {
    assert!(received.path.ends_with("/responses"), "{}", received.path);
    let model = received.body["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": "resp_up1", "object": "response", "created_at": 1, "status": status,
               "model": "gpt-5-2025-08-07", "output": output, "usage": usage})
    };
    let usage = json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 8},
                       "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 26});
    let item = json!({"type": "message", "id": "msg_up1", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": "Hi there", "annotations": []}]});
    if received.body["stream"] != true {
        return Script::json(200, response("completed", json!([item]), usage).to_string());
    }
    let ev = |n: u64, kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(n);
        Piece::Data(format!("event: {kind}\ndata: {body}\n\n").into())
    };
    let mut pieces = vec![
        ev(
            0,
            "response.created",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            1,
            "response.in_progress",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            2,
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "message", "id": "msg_up1", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        ev(
            3,
            "response.content_part.added",
            json!({"item_id": "msg_up1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        ev(
            4,
            "response.output_text.delta",
            json!({"item_id": "msg_up1", "output_index": 0, "content_index": 0, "delta": "Hi there"}),
        ),
    ];
    if model == "gpt-5-cut" {
        pieces.push(Piece::Pause(Duration::from_millis(20)));
        pieces.push(Piece::Cut);
        return Script::sse(pieces);
    }
    let part = json!({"type": "output_text", "text": "Hi there", "annotations": []});
    let at = json!({"item_id": "msg_up1", "output_index": 0, "content_index": 0});
    let with = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    pieces.extend([
        ev(
            5,
            "response.output_text.done",
            with(at.clone(), "text", json!("Hi there")),
        ),
        ev(6, "response.content_part.done", with(at, "part", part)),
        ev(
            7,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ),
        ev(
            8,
            "response.completed",
            json!({"response": response("completed", json!([item]), usage)}),
        ),
    ]);
    Script::sse(pieces)
}

pub fn completion_json(model: &str) -> String {
    if model == "tool" {
        return r#"{"id":"chatcmpl-T1","object":"chat.completion","created":1767225600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_Qm3b7LxV0cTgH2aZ5nKe8RwY","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\",\"unit\":\"celsius\"}"}}],"refusal":null},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":87,"completion_tokens":19,"total_tokens":106},"system_fingerprint":"fp_7c1d2a9e40"}"#.into();
    }
    r#"{"id":"chatcmpl-D3mo7Xw2QbGkz9VfYtR1aLpE","object":"chat.completion","created":1767225600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Tides come mostly from the Moon's pull on the oceans.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":18,"completion_tokens":11,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_7c1d2a9e40","x_vendor_extra":{"region":"eu"}}"#.into()
}

/// The proxy, serving on 127.0.0.1:0.
pub struct Gateway {
    pub addr: SocketAddr,
    /// The proxy's usage recorder, until shutdown (it holds the state store open).
    recorder: Option<modelgate::usage::Recorder>,
    /// The state directory when the test gave none (removed when the gateway is dropped).
    pub state: Option<tempfile::TempDir>,
    /// The trace exporter, when the config has `[telemetry]`.
    #[cfg(feature = "otel")]
    #[allow(dead_code)] // only the telemetry tests read it
    pub telemetry: Option<modelgate::telemetry::Telemetry>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Starts the proxy with this TOML (no `listen` needed).
    pub async fn start(toml: &str) -> Self {
        Self::start_with_env(toml, &[]).await
    }

    /// Starts the proxy with this TOML and these environment variables.
    pub async fn start_with_env(toml: &str, vars: &[(&str, &str)]) -> Self {
        Self::start_app(toml, vars, Proxy::router).await
    }

    /// Starts the proxy with this TOML and these environment variables, serving the router
    /// `app` makes of it.
    pub async fn start_app(
        toml: &str,
        vars: &[(&str, &str)],
        app: impl FnOnce(&Proxy) -> axum::Router,
    ) -> Self {
        let mut config = Config::from_toml(toml).expect("test config parses");
        let mut state = None;
        if config.state.as_ref().is_none_or(|s| s.dir.is_none()) {
            let dir = tempfile::tempdir().unwrap();
            config.state.get_or_insert_with(Default::default).dir = Some(dir.path().to_owned());
            state = Some(dir);
        }
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // A gateway stopped just before on the same state directory lets go of it when its
        // usage writer ends: wait for that (bounded).
        let mut proxy = Proxy::from_config(&config, &env).await;
        for _ in 0..200 {
            match &proxy {
                Err(e) if e.0.contains("already open") => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    proxy = Proxy::from_config(&config, &env).await;
                }
                _ => break,
            }
        }
        let proxy = proxy.expect("test config builds");
        let recorder = proxy.recorder().clone();
        #[cfg(feature = "otel")]
        let telemetry = proxy.telemetry().cloned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut options: ServeOptions = config
            .serve_options()
            .expect("test config's server options");
        options.shutdown_grace = Duration::from_secs(5);
        let task = tokio::spawn(serve(
            listener,
            app(&proxy),
            async move {
                let _ = stopped.await;
            },
            options,
        ));
        Gateway {
            addr,
            recorder: Some(recorder),
            state,
            #[cfg(feature = "otel")]
            telemetry,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown; the returned handle completes when `serve` returns.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        self.recorder = None;
        let _ = self.stop.take().expect("shut down once").send(());
        self.task.take().expect("shut down once")
    }

    /// The proxy in front of one fake provider named `fake`, with a catalog model `fake-model`
    /// (upstream `text`) and an alias `smart`.
    pub async fn in_front_of(fake: &FakeProvider, extra: &str) -> Self {
        Self::start(&standard_config(fake, extra)).await
    }

    /// Shuts the usage writer down as the bundled proxy does: see `Recorder::close`.
    #[allow(dead_code)] // not every test binary closes
    pub async fn close_recorder(&self, wait: Duration) -> bool {
        match &self.recorder {
            Some(r) => r.close(wait).await,
            None => true,
        }
    }

    /// Waits until every usage record so far is written.
    #[allow(dead_code)] // not every test binary flushes
    pub async fn flush(&self) {
        if let Some(r) = &self.recorder {
            r.flush().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub fn standard_config(fake: &FakeProvider, extra: &str) -> String {
    standard_config_at(&fake.base_url(), extra)
}

/// [`standard_config`] for a fake provider at `base_url` (one in another process).
pub fn standard_config_at(base_url: &str, extra: &str) -> String {
    format!(
        r#"
{extra}
[[providers]]
name = "fake"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"
headers = {{ "x-team" = "blue" }}
first_byte_timeout_ms = 1500
idle_timeout_ms = 1500

[[models]]
id = "vendor/fake-model"
context_length = 8192
[[models.endpoints]]
provider = "fake"
model = "text"
prompt_price = 3.0
completion_price = 15.0

[aliases]
smart = "vendor/fake-model"
"#,
        base_url
    )
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(http)
}

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `data:` payloads of an SSE answer (comments dropped), checking LF-only framing.
    pub fn events(&self) -> Vec<String> {
        let text = self.text();
        assert!(!text.contains('\r'), "our streams are LF-only: {text:?}");
        assert!(
            text.is_empty() || text.ends_with("\n\n"),
            "each event ends with a blank line: {text:?}"
        );
        text.split("\n\n")
            .filter(|e| !e.is_empty() && !e.starts_with(':'))
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data line: {e:?}"))
                    .to_owned()
            })
            .collect()
    }
}

impl Answer {
    /// The chunks of a stream that ended with `[DONE]`, parsed (the `[DONE]` itself left out).
    pub fn chunks(&self) -> Vec<serde_json::Value> {
        let ev = self.events();
        assert_eq!(
            ev.last().map(String::as_str),
            Some("[DONE]"),
            "the stream ends with [DONE]"
        );
        ev[..ev.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
            .collect()
    }
}

pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Answer {
    let res = client.request(req).await.expect("the gateway answers");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("the body completes").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(client: &HttpClient, url: &str, body: impl Into<Bytes>) -> Answer {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-client-secret-do-not-forward")
        .body(Full::new(body.into()))
        .unwrap();
    send(client, req).await
}

pub fn chat(model: &str, stream: bool, include_usage: bool) -> String {
    let mut v = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Why are there tides?"}],
    });
    if stream {
        v["stream"] = true.into();
        if include_usage {
            v["stream_options"] = serde_json::json!({"include_usage": true});
        }
    }
    v.to_string()
}

/// A writer a log subscriber appends to (for tests that read the log).
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The path in `var` of a client the tests drive (a Python with an SDK, a CLI), which
/// `scripts/test.sh` installs and sets. Unset: a failure when `CI` is set, a skip otherwise.
pub fn installed(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set: run the tests with scripts/test.sh, which installs {what}"
            );
            eprintln!("skipped: {var} not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// Runs `tests/sdk/<script>` with `python` and these arguments; it must exit 0 and print
/// `all checks passed`.
pub async fn run_sdk_script(python: &str, script: &str, args: &[String]) {
    let script = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the SDK checks failed:\n{stdout}\n{stderr}"
    );
}

/// Runs a client's command line offline: only `PATH` kept from this environment, `HOME` in
/// `home`, these variables, no input, at most three minutes; it must succeed. Its output.
pub async fn run_cli(
    program: &str,
    args: &[&str],
    dir: &std::path::Path,
    home: &std::path::Path,
    vars: &[(&str, &str)],
) -> String {
    let run = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(vars.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish in 3 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// An OpenAI-kind embeddings fake: a 3-number vector per input (`dimensions` long when asked),
/// base64 when asked, 4 prompt tokens an input; upstream model `emb-fail` answers 500.
#[allow(dead_code)] // not every test binary serves embeddings
pub fn openai_embeddings(received: &Received) -> Script {
    assert!(received.path.ends_with("/embeddings"), "{}", received.path);
    let b = &received.body;
    if b["model"] == "emb-fail" {
        return Script::json(
            500,
            r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#,
        );
    }
    let n = match &b["input"] {
        serde_json::Value::Array(v) if v.iter().all(|x| !x.is_number()) => v.len(),
        _ => 1,
    };
    let dims = b["dimensions"].as_u64().unwrap_or(3) as usize;
    let data: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let values: Vec<f32> = (0..dims).map(|d| (i * 10 + d) as f32 + 0.5).collect();
            let embedding = if b["encoding_format"] == "base64" {
                use base64::Engine as _;
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                serde_json::json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(values)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Script::json(
        200,
        serde_json::json!({
            "object": "list",
            "data": data,
            "model": b["model"],
            "usage": {"prompt_tokens": 4 * n, "total_tokens": 4 * n},
        })
        .to_string(),
    )
}

/// A Gemini-kind embeddings fake (`batchEmbedContents`): `[0.25, 0.5, -1]` for each request.
#[allow(dead_code)] // not every test binary serves embeddings
pub fn gemini_embeddings(received: &Received) -> Script {
    assert!(
        received.path.ends_with(":batchEmbedContents"),
        "{}",
        received.path
    );
    let n = received.body["requests"].as_array().map_or(0, Vec::len);
    let embeddings: Vec<serde_json::Value> = (0..n)
        .map(|_| serde_json::json!({"values": [0.25, 0.5, -1.0]}))
        .collect();
    Script::json(
        200,
        serde_json::json!({ "embeddings": embeddings }).to_string(),
    )
}

/// The AWS credentials of the tests' Bedrock fake.
#[allow(dead_code)]
pub const AWS_KEY_ID: &str = "AKIDMODELGATETEST0001";
#[allow(dead_code)]
pub const AWS_SECRET: &str = "test/Secret+Access/Key0123456789abcdefgh";
#[allow(dead_code)]
pub const AWS_REGION: &str = "us-west-2";
/// The Bedrock API key the fake takes as a bearer token.
#[allow(dead_code)]
pub const BEDROCK_API_KEY: &str = "bedrock-api-key-for-tests-0123456789";

/// Whether a request carries a valid SigV4 signature by [`AWS_KEY_ID`] / [`AWS_SECRET`] for
/// Bedrock in [`AWS_REGION`]: the signature is computed again, at the request's own
/// `x-amz-date`, over the headers it says it signed, the path as sent and the body's bytes.
#[allow(dead_code)]
pub fn sigv4_ok(r: &Received) -> bool {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(auth), Some(date), Some(host)) = (
        header("authorization"),
        header("x-amz-date"),
        header("host"),
    ) else {
        return false;
    };
    let Some((head, sent)) = auth.rsplit_once(", Signature=") else {
        return false;
    };
    let scope = format!(
        "Credential={AWS_KEY_ID}/{}/{AWS_REGION}/bedrock/aws4_request",
        &date[..8]
    );
    if !head.starts_with("AWS4-HMAC-SHA256 ") || !head.contains(&scope) {
        return false;
    }
    let Some(signed) = head.split("SignedHeaders=").nth(1) else {
        return false;
    };
    // `20261207T111300Z`.
    let num = |r: std::ops::Range<usize>| date.get(r).and_then(|s| s.parse::<u32>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        num(0..4),
        num(4..6),
        num(6..8),
        num(9..11),
        num(11..13),
        num(13..15),
    ) else {
        return false;
    };
    let Ok(day) = time::Month::try_from(mo as u8)
        .and_then(|m| time::Date::from_calendar_date(y as i32, m, d as u8))
    else {
        return false;
    };
    let Ok(at) = day.with_hms(h as u8, mi as u8, s as u8) else {
        return false;
    };
    let at: std::time::SystemTime = at.assume_utc().into();
    let headers: Vec<(&str, &str)> = signed
        .split(';')
        .filter(|h| !matches!(*h, "host" | "x-amz-date"))
        .filter_map(|h| Some((h, header(h)?)))
        .collect();
    let identity =
        aws_credential_types::Credentials::new(AWS_KEY_ID, AWS_SECRET, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(AWS_REGION)
        .name("bedrock")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let uri = format!("http://{host}{}", r.path);
    let Ok(req) = SignableRequest::new(
        "POST",
        uri.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&r.raw),
    ) else {
        return false;
    };
    sign(req, &params).is_ok_and(|out| out.signature() == sent)
}

/// The model a Bedrock request names in its path (`/model/{id}/{method}`), decoded.
#[allow(dead_code)]
pub fn bedrock_model(r: &Received) -> String {
    let id = r.path.trim_start_matches("/model/");
    let id = id.split('/').next().unwrap_or_default();
    percent_decode(id)
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Bedrock stream fixture (`tests/fixtures/bedrock/{stem}.jsonl`) as event-stream frames.
#[allow(dead_code)]
pub fn converse_frames(stem: &str) -> Vec<Bytes> {
    String::from_utf8(fixture(&format!("bedrock/{stem}.jsonl")).to_vec())
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Bytes::from(modelgate::sse::event_stream::event_frame(
                v["event"].as_str().unwrap(),
                v["payload"].to_string().as_bytes(),
            ))
        })
        .collect()
}

/// A Bedrock fake. Every request must be signed with the test credentials (or carry
/// [`BEDROCK_API_KEY`]): otherwise a 403, as AWS answers. By model:
/// `…throttled` 429 `ThrottlingException`; `…not-ready` 429 `ModelNotReadyException`;
/// `…bad` 400 `ValidationException`; `…mid-exception` streams a delta, then a
/// `modelStreamErrorException`; `…bytewise` streams the text fixture a byte a frame;
/// `…titan…` and `…cohere…` answer `InvokeModel` embeddings; any other answers the text
/// fixture (Converse JSON, or ConverseStream frames).
#[allow(dead_code)]
pub fn fake_bedrock(r: &Received) -> Script {
    let bearer = r.headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {BEDROCK_API_KEY}"));
    if !bearer && !sigv4_ok(r) {
        return Script::json(
            403,
            r#"{"message":"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}"#,
        )
        .header("x-amzn-errortype", "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/");
    }
    let model = bedrock_model(r);
    let aws_error = |status: u16, kind: &str, message: &str| {
        Script::json(
            status,
            serde_json::json!({ "message": message }).to_string(),
        )
        .header(
            "x-amzn-errortype",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        )
    };
    if model.ends_with("throttled") {
        return aws_error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        );
    }
    if model.ends_with("not-ready") {
        return aws_error(
            429,
            "ModelNotReadyException",
            "The model is not ready to serve inference requests.",
        );
    }
    if model.ends_with("bad") {
        return aws_error(
            400,
            "ValidationException",
            "The provided model identifier is invalid.",
        );
    }
    if model.contains("anthropic.claude") && r.path.contains("/invoke") {
        // Claude's own Messages body, as Bedrock takes it.
        assert_eq!(
            r.body["anthropic_version"], "bedrock-2023-05-31",
            "{}",
            r.body
        );
        assert!(
            r.body.get("model").is_none() && r.body.get("stream").is_none(),
            "{}",
            r.body
        );
        if r.path.ends_with("/invoke") {
            return Script::json(200, ANTHROPIC_MESSAGE);
        }
        // Each Anthropic event base64-encoded in a `chunk` frame.
        use base64::Engine as _;
        let frames = events_of(&fixture("anthropic/anthropic_text.sse"))
            .into_iter()
            .filter_map(|p| match p {
                Piece::Data(b) => Some(b),
                _ => None,
            })
            .filter_map(|event| {
                let text = String::from_utf8(event.to_vec()).ok()?;
                let data = text
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))?
                    .to_owned();
                let bytes = base64::engine::general_purpose::STANDARD.encode(data);
                Some(Piece::Data(Bytes::from(
                    modelgate::sse::event_stream::event_frame(
                        "chunk",
                        serde_json::json!({ "bytes": bytes }).to_string().as_bytes(),
                    ),
                )))
            })
            .collect();
        return Script {
            status: 200,
            headers: vec![("content-type", "application/vnd.amazon.eventstream".into())],
            hang_before_headers: false,
            headers_after: None,
            body: frames,
        };
    }
    if r.path.ends_with("/invoke") {
        if model.contains("titan") {
            return Script::json(
                200,
                r#"{"embedding":[0.125,-0.5,2.0],"inputTextTokenCount":4}"#,
            );
        }
        let n = r.body["texts"].as_array().map_or(0, Vec::len);
        let vectors: Vec<serde_json::Value> =
            (0..n).map(|i| serde_json::json!([i as f32, 0.5])).collect();
        return Script::json(
            200,
            serde_json::json!({"id": "emb-1", "embeddings": {"float": vectors}, "response_type": "embeddings_by_type", "texts": r.body["texts"]}).to_string(),
        );
    }
    if r.path.ends_with("/converse-stream") {
        let frames = converse_frames("converse_text");
        let pieces: Vec<Piece> = if model.ends_with("mid-exception") {
            let mut p: Vec<Piece> = frames[..2].iter().cloned().map(Piece::Data).collect();
            p.push(Piece::Data(Bytes::from(
                modelgate::sse::event_stream::exception_frame(
                    "modelStreamErrorException",
                    "The model stopped answering.",
                ),
            )));
            p
        } else if model.ends_with("bytewise") {
            frames
                .concat()
                .into_iter()
                .map(|b| Piece::Data(Bytes::from(vec![b])))
                .collect()
        } else {
            frames.into_iter().map(Piece::Data).collect()
        };
        return Script {
            status: 200,
            headers: vec![("content-type", "application/vnd.amazon.eventstream".into())],
            hang_before_headers: false,
            headers_after: None,
            body: pieces,
        };
    }
    Script::json(
        200,
        r#"{"output":{"message":{"role":"assistant","content":[{"text":"Tides come mostly from the Moon's pull on the oceans."}]}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":18,"totalTokens":430,"cacheReadInputTokens":300,"cacheWriteInputTokens":100},"metrics":{"latencyMs":512}}"#,
    )
}
