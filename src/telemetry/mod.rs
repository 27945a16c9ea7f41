//! [`TelemetryLayer`]: OpenTelemetry traces of every request, in the GenAI semantic
//! conventions, exported over OTLP (HTTP/protobuf). The `otel` feature.
//!
//! Outermost on each inference route. For every request it:
//!
//! - continues the client's trace (a valid W3C `traceparent`, with its `tracestate`; in an app
//!   traced with `tracing-opentelemetry`, the current span's) or starts one, sampled at
//!   `sample_ratio` (a client's own sampling decision is kept);
//! - puts a [`TraceContext`] in the request extensions: the fallback layer gives each attempt a
//!   span of its own under it, and [`Dispatch`](crate::Dispatch) sends the attempt's as
//!   `traceparent` to the provider, so its spans join the trace;
//! - when sampled, exports one **server** span for the request and one **client** span per
//!   upstream attempt (retries and hedges included; a target skipped while cooling down was
//!   sent nothing and has none).
//!
//! The spans are made from the request's [`UsageRecord`] when the
//! usage layer makes it ([`RecordObserver`]): at the end of the answer, which for a stream is
//! its last event or the client going away, not its first byte. Their attributes are the
//! record's: `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model` (as
//! asked), `gen_ai.response.model` (as served), `gen_ai.response.id`,
//! `gen_ai.response.finish_reasons`, `gen_ai.usage.*` tokens (cache reads and writes
//! included), `error.type`, and the gateway's own under `modelgate.*`: the key's name (never
//! the key), the dialect, the cost, the time to first token. A request refused before it is
//! metered (a bad key, a rate limit, a malformed body) gets a server span with its status.
//! Prompt and answer text (`gen_ai.input.messages`, `gen_ai.output.messages`) are recorded only
//! with [`capture_content`](TelemetryBuilder::capture_content).
//!
//! Export never slows a request: finished spans go to a bounded queue, and a task sends them
//! in batches. When the collector is slow or down the queue fills and spans are dropped and
//! counted (`modelgate_telemetry_spans_dropped_total`); usage records are never dropped, and
//! are kept apart from this.
//!
//! Without a `TelemetryLayer` in the stack, nothing is traced and nothing is paid: the other
//! layers only look for a [`TraceContext`] in the extensions.
//!
//! ```no_run
//! use modelgate::telemetry::{Telemetry, TelemetryLayer};
//!
//! # async fn run() -> Result<(), modelgate::telemetry::TelemetryError> {
//! let telemetry = Telemetry::builder("http://127.0.0.1:4318")
//!     .service_name("modelgate")
//!     .sample_ratio(0.1)
//!     .build()?;
//! let layer = TelemetryLayer::new(telemetry.clone());
//! // Outermost around each inference stack (before auth); at shutdown:
//! telemetry.flush().await;
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

mod export;
mod spans;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

pub use self::export::{TelemetryStats, SPANS_DROPPED, SPANS_EXPORTED};
pub use self::spans::{attr, provider_name};
use crate::facts::{CaptureContent, TraceContext};
use crate::future::BoxFuture;
use crate::usage::{ObserveRecord, RecordDetail, RecordObserver, UsageRecord};

/// Spans waiting for export, at most (more are dropped and counted).
pub const DEFAULT_QUEUE_CAPACITY: usize = 8_192;

/// How long one export to the collector may take.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The telemetry could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryError(pub String);

impl std::fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TelemetryError {}

/// The trace exporter of a gateway: sampling, content capture and the export queue. Cheap to
/// clone: clones share the queue.
#[derive(Clone)]
pub struct Telemetry(Arc<Inner>);

struct Inner {
    queue: export::Queue,
    ratio: Sampler,
    capture_content: bool,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("sampler", &self.0.ratio)
            .field("capture_content", &self.0.capture_content)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Builds [`Telemetry`].
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    endpoint: String,
    headers: Vec<(String, String)>,
    service_name: String,
    sample_ratio: f64,
    capture_content: bool,
    queue_capacity: usize,
    export_timeout: Duration,
}

impl Telemetry {
    /// Exports to the OTLP/HTTP collector at `endpoint`: its base URL
    /// (`http://collector:4318`), to which `/v1/traces` is added, or the full URL of its
    /// traces path (ending in `/v1/traces`).
    pub fn builder(endpoint: impl Into<String>) -> TelemetryBuilder {
        TelemetryBuilder {
            endpoint: endpoint.into(),
            headers: Vec::new(),
            service_name: "modelgate".into(),
            sample_ratio: 1.0,
            capture_content: false,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }

    /// Sends what is queued to the collector and waits for it (at shutdown).
    pub async fn flush(&self) {
        self.0.queue.flush().await;
    }

    /// Spans exported and dropped so far.
    pub fn stats(&self) -> TelemetryStats {
        self.0.queue.stats()
    }

    /// Whether a new trace (no sampled parent to follow) with this id is sampled.
    fn sample_root(&self, trace_id: [u8; 16]) -> bool {
        let r = self.0.ratio.should_sample(
            None,
            TraceId::from_bytes(trace_id),
            "",
            &SpanKind::Server,
            &[],
            &[],
        );
        r.decision == SamplingDecision::RecordAndSample
    }
}

impl TelemetryBuilder {
    /// A header sent with every export (a vendor's API key, say).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `service.name` resource attribute (default `modelgate`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// The share of new traces that are sampled, 0 to 1 (default 1). A client's `traceparent`
    /// decides for its own trace.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = ratio;
        self
    }

    /// Record the prompt and the answer's text on the request's span (default off).
    pub fn capture_content(mut self, on: bool) -> Self {
        self.capture_content = on;
        self
    }

    /// Spans waiting for export, at most (default [`DEFAULT_QUEUE_CAPACITY`]).
    pub fn queue_capacity(mut self, spans: usize) -> Self {
        self.queue_capacity = spans;
        self
    }

    /// How long one export may take (default [`DEFAULT_EXPORT_TIMEOUT`]).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// Starts the export task (on the current Tokio runtime).
    pub fn build(self) -> Result<Telemetry, TelemetryError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(TelemetryError(format!(
                "sample_ratio must be between 0 and 1, not {}",
                self.sample_ratio
            )));
        }
        if self.queue_capacity == 0 {
            return Err(TelemetryError(
                "the queue capacity must be at least 1".into(),
            ));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(TelemetryError(format!(
                    "the export header `{name}` is not a valid HTTP header name and value"
                )));
            }
        }
        let endpoint = traces_url(&self.endpoint)?;
        let exporter = export::exporter(
            &endpoint,
            &self.headers,
            &self.service_name,
            self.export_timeout,
        )?;
        let queue = export::Queue::start(exporter, self.queue_capacity)?;
        Ok(Telemetry(Arc::new(Inner {
            queue,
            ratio: Sampler::TraceIdRatioBased(self.sample_ratio),
            capture_content: self.capture_content,
            scope: InstrumentationScope::builder("modelgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })))
    }
}

/// The collector's traces URL: `/v1/traces` added to a base URL.
fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| TelemetryError(format!("otlp_endpoint `{endpoint}` is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(TelemetryError(format!(
            "otlp_endpoint `{endpoint}` must be an http:// or https:// URL"
        )));
    }
    let trimmed = endpoint.trim_end_matches('/');
    Ok(if trimmed.ends_with("/v1/traces") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    })
}

/// Traces every request; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    telemetry: Telemetry,
}

impl TelemetryLayer {
    /// Traces into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        TelemetryLayer { telemetry }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// Traces each request; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S, B, RB> Service<Request<B>> for Traced<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let parent = TraceContext::from_headers(req.headers()).or_else(current_span);
        let server = match &parent {
            Some(p) => p.child(),
            None => {
                let mut root = TraceContext::new_root(false);
                root.sampled = self.telemetry.sample_root(root.trace_id);
                root
            }
        };
        let sampled = server.sampled;
        req.extensions_mut().insert(server.clone());
        if !sampled {
            // Propagated (not sampled), never exported.
            return Box::pin(self.inner.call(req));
        }
        let span = Arc::new(RequestSpan {
            telemetry: self.telemetry.clone(),
            server,
            parent: parent.map(|p| p.span_id),
            wall: SystemTime::now(),
            start: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().into(),
            claimed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        });
        req.extensions_mut()
            .insert(ObserveRecord(span.clone() as Arc<dyn RecordObserver>));
        if self.telemetry.0.capture_content {
            req.extensions_mut().insert(CaptureContent);
        }
        let fut = self.inner.call(req);
        let guard = Unmetered(span);
        Box::pin(async move {
            let res = fut.await;
            guard.answered(res.as_ref().ok().map(Response::status));
            res
        })
    }
}

/// The current `tracing` span's context, when the app embedding the layers traces with
/// `tracing-opentelemetry`: a request that carries no `traceparent` is a child of it.
fn current_span() -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
        state: http::HeaderValue::from_str(&sc.trace_state().header())
            .ok()
            .filter(|v| !v.is_empty()),
    })
}

/// One traced request: its server span, until it is exported.
struct RequestSpan {
    telemetry: Telemetry,
    /// The server span's context (its trace, its id, the client's `tracestate`).
    server: TraceContext,
    /// The client's span, when it sent a `traceparent`.
    parent: Option<[u8; 8]>,
    /// When the request arrived: the wall clock for the export, the monotonic clock (the one
    /// the attempts are timed with) for the offsets.
    wall: SystemTime,
    start: Instant,
    method: Method,
    path: Box<str>,
    /// The usage layer took the request: its record makes the spans.
    claimed: AtomicBool,
    /// The spans went to the queue.
    ended: AtomicBool,
}

impl RequestSpan {
    /// The wall-clock time of `t`.
    fn wall(&self, t: Instant) -> SystemTime {
        if t >= self.start {
            self.wall + (t - self.start)
        } else {
            self.wall - (self.start - t)
        }
    }

    /// Runs `f` unless the spans were already exported (once per request).
    fn end_once(&self, f: impl FnOnce()) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            f();
        }
    }
}

impl RecordObserver for RequestSpan {
    fn claimed(&self) {
        self.claimed.store(true, Ordering::Release);
    }

    fn on_record(&self, record: &UsageRecord, detail: &RecordDetail<'_>) {
        self.end_once(|| {
            let end = Instant::now();
            for span in spans::from_record(self, record, detail, end) {
                self.telemetry.0.queue.push(span);
            }
        });
    }
}

/// The server span of a request the usage layer never took (refused before it, or left
/// before it was reached): made when the answer comes, or when the client goes away.
struct Unmetered(Arc<RequestSpan>);

impl Unmetered {
    fn answered(self, status: Option<StatusCode>) {
        self.end(status.or(Some(StatusCode::INTERNAL_SERVER_ERROR)));
    }

    fn end(&self, status: Option<StatusCode>) {
        let span = &self.0;
        if span.claimed.load(Ordering::Acquire) {
            return;
        }
        span.end_once(|| {
            let data = spans::unmetered(span, status, Instant::now());
            span.telemetry.0.queue.push(data);
        });
    }
}

impl Drop for Unmetered {
    fn drop(&mut self) {
        // Dropped before an answer: the client went away.
        self.end(None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otlp.example.com/otlp/").unwrap(),
            "https://otlp.example.com/otlp/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert!(traces_url("collector:4318").is_err());
        assert!(traces_url("grpc://c:4317").is_err());
    }

    #[tokio::test]
    async fn inside_an_app_traced_with_tracing_opentelemetry_its_span_is_the_parent() {
        use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
        use tower::ServiceExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")));
        let _default = tracing::subscriber::set_default(subscriber);
        let telemetry = Telemetry::builder("http://127.0.0.1:1").build().unwrap();
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let mut svc =
            TelemetryLayer::new(telemetry).layer(tower::service_fn(move |req: Request<()>| {
                *s.lock().unwrap() = req.extensions().get::<TraceContext>().cloned();
                async { Ok::<_, std::convert::Infallible>(Response::new(())) }
            }));
        let span = tracing::info_span!("the app's request");
        let app = span.context().span().span_context().clone();
        assert!(app.is_valid());
        let svc = svc.ready().await.unwrap();
        let call = span.in_scope(|| svc.call(Request::new(())));
        call.await.unwrap();
        let cx = seen.lock().unwrap().clone().unwrap();
        assert_eq!(cx.trace_id, app.trace_id().to_bytes());
        assert_ne!(
            cx.span_id,
            app.span_id().to_bytes(),
            "the gateway's own span, under it"
        );
        assert!(cx.sampled);

        // Outside any span: a new trace.
        let call = svc.call(Request::new(()));
        call.await.unwrap();
        let root = seen.lock().unwrap().clone().unwrap();
        assert_ne!(root.trace_id, app.trace_id().to_bytes());
    }

    #[tokio::test]
    async fn bad_settings_are_refused() {
        let e = Telemetry::builder("http://127.0.0.1:1")
            .sample_ratio(1.5)
            .build()
            .unwrap_err();
        assert!(e.0.contains("sample_ratio"), "{e}");
        let e = Telemetry::builder("http://127.0.0.1:1")
            .header("x key", "v")
            .build()
            .unwrap_err();
        assert!(e.0.contains("`x key`"), "{e}");
        let e = Telemetry::builder("http://127.0.0.1:1")
            .header("x-key", "line\nbreak")
            .build()
            .unwrap_err();
        assert!(e.0.contains("`x-key`"), "{e}");
    }

    #[tokio::test]
    async fn a_ratio_of_zero_samples_nothing_and_one_everything() {
        let none = Telemetry::builder("http://127.0.0.1:1")
            .sample_ratio(0.0)
            .build()
            .unwrap();
        let all = Telemetry::builder("http://127.0.0.1:1").build().unwrap();
        for _ in 0..100 {
            let id = TraceContext::new_root(false).trace_id;
            assert!(!none.sample_root(id));
            assert!(all.sample_root(id));
        }
    }
}
