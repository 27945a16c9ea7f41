//! Traces through the whole proxy, read by a fake OTLP/HTTP collector that decodes what the
//! exporter sends with `opentelemetry-proto`: the server span and one client span per attempt,
//! their GenAI attributes and parent links, the client's trace continued and passed on to the
//! provider, content kept out unless asked for, and a collector that is down.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};
use support::*;
use tokio::net::TcpListener;

const KEY: &str = "sk-client-secret-do-not-forward";

/// A fake OTLP/HTTP collector: decodes every `POST /v1/traces` it gets.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    headers: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let services = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (s, sv, h) = (spans.clone(), services.clone(), headers.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (s, sv, h) = (s.clone(), sv.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, sv, h) = (s.clone(), sv.clone(), h.clone());
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            h.lock().unwrap().push(req.headers().clone());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in export.resource_spans {
                                let resource = rs.resource.unwrap_or_default();
                                for kv in resource.attributes {
                                    if kv.key == "service.name" {
                                        sv.lock().unwrap().push(string(&kv.value));
                                    }
                                }
                                for ss in rs.scope_spans {
                                    s.lock().unwrap().extend(ss.spans);
                                }
                            }
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Collector {
            addr,
            spans,
            services,
            headers,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Flushes the gateway's exporter until `n` spans have come (bounded).
    async fn wait_for(&self, gw: &Gateway, n: usize) -> Vec<Span> {
        let telemetry = gw.telemetry.as_ref().expect("telemetry is configured");
        for _ in 0..500 {
            telemetry.flush().await;
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= n {
                return spans;
            }
            // The last span is queued when the stream's body is dropped, just after the
            // client read its end.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} spans, got {:?}",
            self.spans
                .lock()
                .unwrap()
                .iter()
                .map(|s| &s.name)
                .collect::<Vec<_>>()
        );
    }
}

fn string(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A span's attributes as JSON, for assertions.
fn attrs(span: &Span) -> Value {
    fn value(v: &Any) -> Value {
        match v {
            Any::StringValue(s) => json!(s),
            Any::BoolValue(b) => json!(b),
            Any::IntValue(i) => json!(i),
            Any::DoubleValue(d) => json!(d),
            Any::ArrayValue(a) => Value::Array(
                a.values
                    .iter()
                    .filter_map(|v| v.value.as_ref().map(value))
                    .collect(),
            ),
            other => panic!("unexpected attribute value {other:?}"),
        }
    }
    let mut out = serde_json::Map::new();
    for kv in &span.attributes {
        if let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            out.insert(kv.key.clone(), value(v));
        }
    }
    Value::Object(out)
}

fn server(spans: &[Span]) -> &Span {
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1, "one server span: {spans:#?}");
    servers[0]
}

fn clients(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn gateway(fake: &FakeProvider, telemetry: &str) -> Gateway {
    let toml = format!(
        r#"
[telemetry]
{telemetry}

[[keys]]
name = "app"
key = "{KEY}"

[fallback]
retries_per_target = 0

[[providers]]
name = "fake"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[models]]
id = "vendor/fake-model"
[[models.endpoints]]
provider = "fake"
model = "text"
prompt_price = 3.0
completion_price = 15.0

[[models]]
id = "vendor/slow"
[[models.endpoints]]
provider = "fake"
model = "slow"

[[models]]
id = "vendor/stall"
[[models.endpoints]]
provider = "fake"
model = "stall"

[[models]]
id = "vendor/hedged"
hedge = 50
[[models.endpoints]]
provider = "fake"
model = "hang"
prompt_price = 1.0
[[models.endpoints]]
provider = "fake"
model = "text"
prompt_price = 3.0

[[models]]
id = "vendor/flaky"
[[models.endpoints]]
provider = "fake"
model = "fail-500"
prompt_price = 1.0
[[models.endpoints]]
provider = "fake"
model = "text"
prompt_price = 3.0
completion_price = 15.0
"#,
        fake.base_url()
    );
    Gateway::start_with_env(&toml, &[("COLLECTOR_KEY", "team-secret")]).await
}

/// A chat request for `model`, its cheapest endpoint tried first.
async fn cheapest_first(gw: &Gateway, model: &str) -> Answer {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "provider": {"sort": "price"},
    });
    post(&client(), &gw.url("/v1/chat/completions"), body.to_string()).await
}

fn config(collector: &Collector) -> String {
    format!(
        r#"otlp_endpoint = "{}"
service_name = "gateway-under-test"
headers = {{ "x-collector-key" = "env:COLLECTOR_KEY" }}"#,
        collector.url()
    )
}

#[tokio::test]
async fn a_plain_request_is_a_server_span_with_an_attempt_under_it() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(&fake, &config(&collector)).await;
    let c = client();
    let res = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let id = res.headers["x-generation-id"].to_str().unwrap().to_owned();

    let spans = collector.wait_for(&gw, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let s = server(&spans);
    assert_eq!(s.name, "chat vendor/fake-model");
    assert!(s.parent_span_id.is_empty(), "a new trace: no parent");
    let a = attrs(s);
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.provider.name"], "openai");
    assert_eq!(a["gen_ai.request.model"], "vendor/fake-model");
    assert_eq!(a["gen_ai.response.model"], "text");
    assert_eq!(a["gen_ai.response.id"], id);
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert_eq!(a["gen_ai.usage.input_tokens"], 18);
    assert_eq!(a["gen_ai.usage.output_tokens"], 11);
    assert_eq!(a["gen_ai.request.stream"], false);
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["modelgate.key.name"], "app");
    assert_eq!(a["modelgate.dialect"], "chat");
    assert_eq!(a["modelgate.provider"], "fake");
    assert!(a["modelgate.cost_usd"].as_f64().unwrap() > 0.0);
    assert!(a.get("modelgate.time_to_first_token_ms").is_some());
    assert!(a.get("error.type").is_none());
    // Content is not recorded unless asked for; the key never is.
    assert!(a.get("gen_ai.input.messages").is_none());
    assert!(a.get("gen_ai.output.messages").is_none());
    assert!(!format!("{spans:?}").contains(KEY));

    let attempts = clients(&spans);
    assert_eq!(attempts.len(), 1);
    let t = attempts[0];
    assert_eq!(t.name, "chat text");
    assert_eq!(t.trace_id, s.trace_id);
    assert_eq!(t.parent_span_id, s.span_id);
    assert!(t.start_time_unix_nano >= s.start_time_unix_nano);
    assert!(t.end_time_unix_nano <= s.end_time_unix_nano);
    let ta = attrs(t);
    assert_eq!(ta["gen_ai.request.model"], "text");
    assert_eq!(ta["gen_ai.response.model"], "text");
    assert_eq!(ta["modelgate.attempt.outcome"], "served");
    assert_eq!(ta["gen_ai.usage.output_tokens"], 11);

    // The provider was sent the attempt's span as the parent of its own work.
    let sent = fake.last();
    let parent = sent.headers["traceparent"].to_str().unwrap();
    assert_eq!(
        parent,
        format!("00-{}-{}-01", hex(&t.trace_id), hex(&t.span_id))
    );
    // The resource and the vendor's header.
    assert_eq!(
        *collector.services.lock().unwrap(),
        vec!["gateway-under-test"]
    );
    assert_eq!(
        collector.headers.lock().unwrap()[0]["x-collector-key"],
        "team-secret"
    );
}

#[tokio::test]
async fn a_clients_trace_is_continued_and_reaches_the_provider() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(&fake, &config(&collector)).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("tracestate", "vendor=opaque")
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    assert_eq!(send(&client(), req).await.status, StatusCode::OK);
    let spans = collector.wait_for(&gw, 2).await;
    let s = server(&spans);
    assert_eq!(hex(&s.trace_id), trace);
    assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(s.trace_state, "vendor=opaque");
    let sent = fake.last();
    let parent = sent.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(parent.starts_with(&format!("00-{trace}-")), "{parent}");
    assert_eq!(sent.headers["tracestate"], "vendor=opaque");
    assert_eq!(
        parent,
        format!("00-{trace}-{}-01", hex(&clients(&spans)[0].span_id))
    );

    // A client that does not sample its trace: continued to the provider, not exported.
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-00"))
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    assert_eq!(send(&client(), req).await.status, StatusCode::OK);
    gw.telemetry.as_ref().unwrap().flush().await;
    assert_eq!(
        collector.spans.lock().unwrap().len(),
        2,
        "nothing more exported"
    );
    let parent = fake.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        parent.starts_with(&format!("00-{trace}-")) && parent.ends_with("-00"),
        "{parent}"
    );
}

#[tokio::test]
async fn a_streams_spans_end_with_the_stream_not_its_first_byte() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(&fake, &config(&collector)).await;
    // "slow": 50 ms between events, after the first.
    let res = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        chat("vendor/slow", true, false),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(!res.chunks().is_empty());
    let spans = collector.wait_for(&gw, 2).await;
    let s = server(&spans);
    let a = attrs(s);
    assert_eq!(a["gen_ai.request.stream"], true);
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["stop"]));
    let ttft_ms = a["modelgate.time_to_first_token_ms"].as_i64().unwrap();
    assert!(a["gen_ai.response.time_to_first_chunk"].as_f64().is_some());
    let span_ms = ((s.end_time_unix_nano - s.start_time_unix_nano) / 1_000_000) as i64;
    assert!(
        span_ms >= ttft_ms + 100,
        "the span ({span_ms} ms) covers the stream, well past its first token ({ttft_ms} ms)"
    );
    // The attempt that served lasts to the stream's end too.
    let t = clients(&spans)[0];
    let attempt_ms = ((t.end_time_unix_nano - t.start_time_unix_nano) / 1_000_000) as i64;
    assert!(attempt_ms >= ttft_ms + 100, "{attempt_ms} ms");
    assert_eq!(attrs(t)["modelgate.attempt.outcome"], "served");
}

#[tokio::test]
async fn a_fallback_is_two_attempt_spans_under_one_server_span() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(&fake, &config(&collector)).await;
    // The cheaper endpoint, the failing one, first.
    let res = cheapest_first(&gw, "vendor/flaky").await;
    assert_eq!(res.status, StatusCode::OK);
    let spans = collector.wait_for(&gw, 3).await;
    assert_eq!(spans.len(), 3);
    let s = server(&spans);
    let mut attempts = clients(&spans);
    attempts.sort_by_key(|t| t.start_time_unix_nano);
    assert_eq!(attempts.len(), 2);
    for t in &attempts {
        assert_eq!(t.parent_span_id, s.span_id);
        assert_eq!(t.trace_id, s.trace_id);
    }
    assert_ne!(attempts[0].span_id, attempts[1].span_id);
    let failed = attrs(attempts[0]);
    assert_eq!(attempts[0].name, "chat fail-500");
    assert_eq!(failed["modelgate.attempt.outcome"], "failed");
    // The status the client would have had: a provider's 500 is the gateway's 502.
    assert_eq!(failed["error.type"], "502");
    assert_eq!(failed["modelgate.attempt.status"], 502);
    let status = attempts[0].status.as_ref().unwrap();
    assert_eq!(status.code, SpanStatus::Error as i32);
    assert!(status.message.contains("server had an error"), "{status:?}");
    let served = attrs(attempts[1]);
    assert_eq!(served["modelgate.attempt.outcome"], "served");
    assert_eq!(served["gen_ai.response.model"], "text");
    // The request itself succeeded.
    assert!(attrs(s).get("error.type").is_none());
    // Each attempt carried its own span to the provider.
    let sent: Vec<String> = fake
        .received()
        .iter()
        .map(|r| r.headers["traceparent"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sent,
        attempts
            .iter()
            .map(|t| format!("00-{}-{}-01", hex(&t.trace_id), hex(&t.span_id)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_hedge_is_an_attempt_span_and_so_is_the_one_it_beat() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(&fake, &config(&collector)).await;
    // The cheaper endpoint first: the one that hangs.
    let res = cheapest_first(&gw, "vendor/hedged").await;
    assert_eq!(res.status, StatusCode::OK);
    let spans = collector.wait_for(&gw, 3).await;
    let s = server(&spans);
    let attempts = clients(&spans);
    assert_eq!(attempts.len(), 2);
    let outcome = |name: &str| {
        let t = attempts.iter().find(|t| t.name == name).unwrap();
        assert_eq!(t.parent_span_id, s.span_id);
        attrs(t)["modelgate.attempt.outcome"].clone()
    };
    assert_eq!(outcome("chat hang"), "cancelled");
    assert_eq!(outcome("chat text"), "served");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_ends_the_span_as_cancelled() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(&fake, &config(&collector)).await;
    // "stall": one event, then nothing; the client reads the first chunk and goes.
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(chat("vendor/stall", true, false))))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body);
    let spans = collector.wait_for(&gw, 2).await;
    let a = attrs(server(&spans));
    assert_eq!(a["modelgate.cancelled"], true);
    assert_eq!(a["error.type"], "cancelled");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(clients(&spans).len(), 1);
}

#[tokio::test]
async fn content_is_recorded_only_when_asked() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(
        &fake,
        &format!("{}\ncapture_content = true", config(&collector)),
    )
    .await;
    let c = client();
    let res = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let spans = collector.wait_for(&gw, 2).await;
    let a = attrs(server(&spans));
    let input: Value = serde_json::from_str(a["gen_ai.input.messages"].as_str().unwrap()).unwrap();
    assert_eq!(
        input,
        json!([{"role": "user", "parts": [{"type": "text", "content": "Why are there tides?"}]}])
    );
    let output: Value =
        serde_json::from_str(a["gen_ai.output.messages"].as_str().unwrap()).unwrap();
    assert_eq!(
        output,
        json!([{
            "role": "assistant",
            "parts": [{"type": "text", "content": "Tides come mostly from the Moon's pull on the oceans."}],
            "finish_reason": "stop",
        }])
    );

    // A stream's text is gathered from its chunks.
    let res = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", true, false),
    )
    .await;
    let streamed: String = res
        .chunks()
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(!streamed.is_empty());
    let spans = collector.wait_for(&gw, 4).await;
    let stream_span = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .find(|s| attrs(s)["gen_ai.request.stream"] == true)
        .unwrap();
    let output: Value = serde_json::from_str(
        attrs(stream_span)["gen_ai.output.messages"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(output[0]["parts"][0]["content"], streamed);
}

#[tokio::test]
async fn a_request_refused_before_metering_has_a_server_span() {
    let fake = FakeProvider::start(standard).await;
    let collector = Collector::start().await;
    let gw = gateway(&fake, &config(&collector)).await;
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-wrong")
        .body(Full::new(Bytes::from(chat(
            "vendor/fake-model",
            false,
            false,
        ))))
        .unwrap();
    assert_eq!(send(&client(), req).await.status, StatusCode::UNAUTHORIZED);
    let spans = collector.wait_for(&gw, 1).await;
    assert_eq!(spans.len(), 1);
    let s = server(&spans);
    assert_eq!(s.name, "POST /v1/chat/completions");
    let a = attrs(s);
    assert_eq!(a["http.response.status_code"], 401);
    assert_eq!(a["error.type"], "401");
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_requests() {
    let fake = FakeProvider::start(standard).await;
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let gw = gateway(&fake, &format!(r#"otlp_endpoint = "http://{down}""#)).await;
    let c = client();
    for stream in [false, true, false] {
        let res = post(
            &c,
            &gw.url("/v1/chat/completions"),
            chat("vendor/fake-model", stream, false),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
    }
    let telemetry = gw.telemetry.as_ref().unwrap();
    let mut stats = telemetry.stats();
    for _ in 0..500 {
        telemetry.flush().await;
        stats = telemetry.stats();
        if stats.dropped >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.exported, 0);
    assert!(stats.dropped >= 6, "{stats:?}");
    // Counted where operators look.
    let metrics = send(
        &c,
        Request::get(gw.url("/metrics"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let text = metrics.text();
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("modelgate_telemetry_spans_dropped_total{reason=\"export_failed\"}")),
        "{text}"
    );
    // Records are unaffected.
    gw.flush().await;
}

#[tokio::test]
async fn the_messages_dialect_to_anthropic_natively_is_traced_like_chat() {
    let anthropic = FakeProvider::start(standard_anthropic).await;
    let collector = Collector::start().await;
    let toml = format!(
        r#"
[telemetry]
{}
capture_content = true

[[keys]]
name = "claude-code"
key = "{KEY}"

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[models]]
id = "anthropic/claude-sonnet-4.5"
[[models.endpoints]]
provider = "anth"
model = "claude-sonnet-4-5"
prompt_price = 3.0
completion_price = 15.0
"#,
        config(&collector),
        anthropic.base_url()
    );
    let gw = Gateway::start_with_env(&toml, &[("COLLECTOR_KEY", "k")]).await;
    let c = client();
    // Whole: the cache counts of the answer; streamed: its text.
    for stream in [false, true] {
        let body = json!({
            "model": "anthropic/claude-sonnet-4.5",
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": "2+2?"}],
        });
        let req = Request::post(gw.url("/v1/messages"))
            .header("content-type", "application/json")
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let res = send(&c, req).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    }
    let spans = collector.wait_for(&gw, 4).await;
    let servers: Vec<Value> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .map(attrs)
        .collect();
    assert_eq!(servers.len(), 2);
    for a in &servers {
        assert_eq!(a["modelgate.dialect"], "messages");
        assert_eq!(a["gen_ai.provider.name"], "anthropic");
        assert_eq!(a["gen_ai.request.model"], "anthropic/claude-sonnet-4.5");
        assert_eq!(a["gen_ai.response.model"], "claude-sonnet-4-5");
        assert_eq!(a["modelgate.key.name"], "claude-code");
    }
    let whole = servers
        .iter()
        .find(|a| a["gen_ai.request.stream"] == false)
        .unwrap();
    assert_eq!(whole["gen_ai.usage.cache_read.input_tokens"], 300);
    assert_eq!(whole["gen_ai.usage.cache_creation.input_tokens"], 100);
    let output: Value =
        serde_json::from_str(whole["gen_ai.output.messages"].as_str().unwrap()).unwrap();
    assert_eq!(output[0]["parts"][0]["content"], "4");
    let streamed = servers
        .iter()
        .find(|a| a["gen_ai.request.stream"] == true)
        .unwrap();
    let output: Value =
        serde_json::from_str(streamed["gen_ai.output.messages"].as_str().unwrap()).unwrap();
    assert!(
        !output[0]["parts"][0]["content"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{output}"
    );
    // The prompt of the Messages request, in the conventions' shape.
    let input: Value =
        serde_json::from_str(streamed["gen_ai.input.messages"].as_str().unwrap()).unwrap();
    assert_eq!(input[0]["parts"][0]["content"], "2+2?");
}

#[tokio::test]
async fn a_collector_that_never_answers_fills_the_queue_and_spans_are_dropped() {
    let fake = FakeProvider::start(standard).await;
    // A collector that takes the request and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck = listener.local_addr().unwrap();
    let (arrived, mut export_started) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
            let _ = arrived.try_send(());
            held.push(tcp);
        }
    });
    let gw = gateway(
        &fake,
        &format!("otlp_endpoint = \"http://{stuck}\"\nqueue_capacity = 2"),
    )
    .await;
    let c = client();
    let res = post(
        &c,
        &gw.url("/v1/chat/completions"),
        chat("vendor/fake-model", false, false),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    // The first batch is on its way, and stays there.
    export_started.recv().await.unwrap();
    let telemetry = gw.telemetry.as_ref().unwrap();
    for _ in 0..4 {
        let res = post(
            &c,
            &gw.url("/v1/chat/completions"),
            chat("vendor/fake-model", false, false),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "requests are served as before");
    }
    // Two spans a request: two fit the queue, the other six are dropped at once.
    assert_eq!(telemetry.stats().dropped, 6);
    assert_eq!(telemetry.stats().exported, 0);
    let metrics = send(
        &c,
        Request::get(gw.url("/metrics"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert!(
        metrics.text().lines().any(
            |l| l.starts_with("modelgate_telemetry_spans_dropped_total{reason=\"queue_full\"}")
        ),
        "{}",
        metrics.text()
    );
}
