//! The proxy's Prometheus exporter: the process-wide recorder the layers' metrics (see
//! [`usage::metrics`](crate::usage::metrics)) go to, and the text `/metrics` serves.

use std::sync::OnceLock;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::usage::metrics::OVERHEAD;
use crate::usage::RecorderStats;

/// The process-wide Prometheus recorder, installed at the first call; `None` when another
/// `metrics` recorder was installed first (then that one gets the metrics).
pub(super) fn prometheus() -> Option<&'static PrometheusHandle> {
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
pub(super) fn render(handle: &PrometheusHandle, stats: RecorderStats) -> String {
    gauge!("modelgate_usage_queue_depth").set(stats.queued as f64);
    gauge!("modelgate_usage_queue_capacity").set(stats.capacity as f64);
    counter!("modelgate_usage_queue_waits_total").absolute(stats.waits);
    counter!("modelgate_usage_queue_refused_total").absolute(stats.refused);
    counter!("modelgate_usage_records_written_total").absolute(stats.written);
    counter!("modelgate_usage_sink_failures_total").absolute(stats.write_failures);
    handle.run_upkeep();
    handle.render()
}
