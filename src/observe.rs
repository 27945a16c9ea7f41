//! Prometheus metrics (through the [`metrics`] facade): the names, the per-request emission
//! the usage layer makes, and the proxy's exporter.
//!
//! Emitted by [`UsageLayer`](crate::usage::UsageLayer) once per client request, when its
//! record is made (nothing is emitted when no `metrics` recorder is installed):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `modelgate_requests_total` | counter | `model`, `provider`, `status` |
//! | `modelgate_tokens_total` | counter | `model`, `provider`, `kind` (prompt, completion, cached, reasoning) |
//! | `modelgate_cost_usd_total` | gauge (only grows) | `model`, `provider` |
//! | `modelgate_request_duration_seconds` | histogram | `model` |
//! | `modelgate_time_to_first_token_seconds` | histogram | `model` |
//! | `modelgate_overhead_seconds` | histogram | |
//! | `modelgate_upstream_attempts_total` | counter | `provider`, `outcome` |
//! | `modelgate_requests_in_flight` | gauge | |
//!
//! `model` is the public model id for catalog models and `passthrough` for
//! `<provider>/<model>` pass-throughs (whose names are the client's, so unbounded);
//! `provider` is a configured provider's name or `none`. The overhead is the gateway's own
//! time per request: the time to the answer minus the time spent in upstream attempts.
//! The proxy adds the usage queue's figures at each scrape: `modelgate_usage_queue_depth`,
//! `modelgate_usage_queue_capacity`, `modelgate_usage_queue_waits_total`,
//! `modelgate_usage_queue_refused_total`, `modelgate_usage_records_written_total`,
//! `modelgate_usage_sink_failures_total`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::usage::{RecorderStats, UsageRecord};

/// Requests by model, provider and status.
pub const REQUESTS: &str = "modelgate_requests_total";
/// Tokens by model, provider and kind.
pub const TOKENS: &str = "modelgate_tokens_total";
/// Cost in USD by model and provider.
pub const COST: &str = "modelgate_cost_usd_total";
/// Request duration (arrival to the end of the answer).
pub const DURATION: &str = "modelgate_request_duration_seconds";
/// Time to first token.
pub const TTFT: &str = "modelgate_time_to_first_token_seconds";
/// The gateway's own time per request.
pub const OVERHEAD: &str = "modelgate_overhead_seconds";
/// Upstream attempts by provider and outcome.
pub const ATTEMPTS: &str = "modelgate_upstream_attempts_total";
/// Requests between arrival at the usage layer and their record.
pub const IN_FLIGHT: &str = "modelgate_requests_in_flight";

/// One request began.
pub(crate) fn request_started() {
    gauge!(IN_FLIGHT).increment(1.0);
}

/// One request ended with this record.
pub(crate) fn request_ended(r: &UsageRecord, model: &str, overhead: Option<Duration>) {
    gauge!(IN_FLIGHT).decrement(1.0);
    let provider = r.provider.clone().unwrap_or_else(|| "none".into());
    let status = match (r.cancelled, r.status) {
        (true, _) | (false, None) => "cancelled".to_owned(),
        (false, Some(s)) => s.to_string(),
    };
    let model = model.to_owned();
    counter!(REQUESTS, "model" => model.clone(), "provider" => provider.clone(), "status" => status)
        .increment(1);
    for (kind, n) in [
        ("prompt", r.prompt_tokens),
        ("completion", r.completion_tokens),
        ("cached", r.cached_tokens),
        ("reasoning", r.reasoning_tokens),
    ] {
        if n > 0 {
            counter!(TOKENS, "model" => model.clone(), "provider" => provider.clone(), "kind" => kind)
                .increment(n);
        }
    }
    if let Some(cost) = r.cost.filter(|c| *c > 0.0) {
        gauge!(COST, "model" => model.clone(), "provider" => provider).increment(cost);
    }
    histogram!(DURATION, "model" => model.clone()).record(r.latency_ms as f64 / 1e3);
    if let Some(t) = r.time_to_first_token_ms {
        histogram!(TTFT, "model" => model).record(t as f64 / 1e3);
    }
    if let Some(o) = overhead {
        histogram!(OVERHEAD).record(o.as_secs_f64());
    }
    for a in &r.attempts {
        counter!(ATTEMPTS, "provider" => a.provider.clone(), "outcome" => a.outcome.clone())
            .increment(1);
    }
}

/// The process-wide Prometheus recorder, installed at the first call; `None` when another
/// `metrics` recorder was installed first (then that one gets the metrics).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const SECONDS: &[f64] = &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ];
            const OVERHEAD_SECONDS: &[f64] = &[
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.05,
            ];
            let builder = PrometheusBuilder::new().set_buckets(SECONDS).and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(OVERHEAD.into()), OVERHEAD_SECONDS)
            });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot build the Prometheus recorder");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!("metrics: another recorder is installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

/// The Prometheus text of every metric, with the usage queue's figures.
pub fn render(handle: &PrometheusHandle, stats: RecorderStats) -> String {
    gauge!("modelgate_usage_queue_depth").set(stats.queued as f64);
    gauge!("modelgate_usage_queue_capacity").set(stats.capacity as f64);
    counter!("modelgate_usage_queue_waits_total").absolute(stats.waits);
    counter!("modelgate_usage_queue_refused_total").absolute(stats.refused);
    counter!("modelgate_usage_records_written_total").absolute(stats.written);
    counter!("modelgate_usage_sink_failures_total").absolute(stats.write_failures);
    handle.run_upkeep();
    handle.render()
}
