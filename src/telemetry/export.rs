//! The export queue: finished spans wait here (a bounded number of them) and one task sends
//! them to the collector in batches with the OTLP exporter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use super::TelemetryError;

/// Spans sent in one export, at most.
const MAX_BATCH: usize = 512;

/// How long the first span of a batch waits for company before the batch is sent.
const LINGER: Duration = Duration::from_millis(500);

/// The Prometheus counter of spans sent to the collector.
pub const SPANS_EXPORTED: &str = "modelgate_telemetry_spans_exported_total";
/// The Prometheus counter of spans dropped (`reason`: `queue_full` or `export_failed`).
pub const SPANS_DROPPED: &str = "modelgate_telemetry_spans_dropped_total";

/// The OTLP/HTTP (protobuf) exporter to `url`, on a hyper client with rustls (the webpki
/// roots) for `https://` collectors.
pub(super) fn exporter(
    url: &str,
    headers: &[(String, String)],
    service_name: &str,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TelemetryError(format!("TLS for the collector: {e}")))?
    .with_root_certificates(rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    })
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = opentelemetry_http::hyper::HyperClient::new(connector, timeout, None);
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url)
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_headers(headers.iter().cloned().collect::<HashMap<_, _>>())
        .build()
        .map_err(|e| TelemetryError(format!("the OTLP exporter: {e}")))?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", service_name.to_owned()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("telemetry.sdk.language", "rust"),
                KeyValue::new("telemetry.sdk.name", "opentelemetry"),
            ])
            .build(),
    );
    Ok(exporter)
}

/// Spans exported and dropped since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TelemetryStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped: the queue was full, or their export failed.
    pub dropped: u64,
}

#[derive(Default)]
struct Counts {
    exported: AtomicU64,
    dropped: AtomicU64,
}

enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// The bounded queue in front of the export task.
pub(super) struct Queue {
    tx: mpsc::Sender<Msg>,
    counts: Arc<Counts>,
}

impl Queue {
    /// Starts the export task on the current Tokio runtime.
    pub(super) fn start(
        exporter: impl SpanExporter + 'static,
        capacity: usize,
    ) -> Result<Queue, TelemetryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TelemetryError("telemetry must be started inside a Tokio runtime".into())
        })?;
        let (tx, rx) = mpsc::channel(capacity);
        let counts = Arc::new(Counts::default());
        metrics::describe_counter!(SPANS_EXPORTED, "Trace spans the OTLP collector accepted.");
        metrics::describe_counter!(
            SPANS_DROPPED,
            "Trace spans dropped: the export queue was full (reason=queue_full), or the collector refused or could not be reached (reason=export_failed)."
        );
        runtime.spawn(run(rx, exporter, counts.clone()));
        Ok(Queue { tx, counts })
    }

    /// Queues a finished span; drops it (and counts it) when the queue is full.
    pub(super) fn push(&self, span: SpanData) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            dropped(&self.counts, 1, "queue_full");
        }
    }

    /// Exports what is queued and waits for it.
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub(super) fn stats(&self) -> TelemetryStats {
        TelemetryStats {
            exported: self.counts.exported.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
        }
    }
}

fn dropped(counts: &Counts, n: u64, reason: &'static str) {
    counts.dropped.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(SPANS_DROPPED, "reason" => reason).increment(n);
}

/// The export task: a batch is sent when it is full, when its first span has waited
/// [`LINGER`], or when a flush asks; one export at a time, while the queue takes new spans.
async fn run(mut rx: mpsc::Receiver<Msg>, exporter: impl SpanExporter, counts: Arc<Counts>) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut failing = false;
    loop {
        if rx.recv_many(&mut msgs, MAX_BATCH).await == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            for m in msgs.drain(..) {
                match m {
                    Msg::Span(s) => batch.push(*s),
                    Msg::Flush(done) => waiting.push(done),
                }
            }
            if batch.len() >= MAX_BATCH || !waiting.is_empty() {
                break;
            }
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut msgs, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match exporter.export(std::mem::take(&mut batch)).await {
                Ok(()) => {
                    counts.exported.fetch_add(n, Ordering::Relaxed);
                    metrics::counter!(SPANS_EXPORTED).increment(n);
                    failing = false;
                }
                Err(e) => {
                    dropped(&counts, n, "export_failed");
                    if !failing {
                        tracing::warn!(error = %e, spans = n, "trace export failed: spans dropped");
                    }
                    failing = true;
                }
            }
            batch = Vec::with_capacity(MAX_BATCH);
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
