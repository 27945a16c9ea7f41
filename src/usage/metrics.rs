//! Prometheus metrics (through the `metrics` facade): their names, and the per-request
//! emission the usage layer makes. The bundled proxy installs the exporter and serves them at
//! `/metrics`; an embedder installs the `metrics` recorder of its choice.
//!
//! Emitted by [`UsageLayer`](crate::usage::UsageLayer) once per client request, when its
//! record is made (nothing is emitted when no `metrics` recorder is installed):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `modelgate_requests_total` | counter | `model`, `provider`, `status` |
//! | `modelgate_tokens_total` | counter | `model`, `provider`, `kind` (prompt, completion, cached, cache_write, reasoning) |
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
//! `modelgate_usage_sink_failures_total`. The embedded state store counts its I/O errors and
//! its reopenings after them: `modelgate_state_io_errors_total`, `modelgate_state_reopens_total`.

use std::hash::BuildHasher;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::usage::UsageRecord;

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

/// Metric handles, registered once per label set (a registry lookup with labels costs more
/// than the whole rest of the metering): the recorder installed when a label set is first
/// seen gets its metrics, so install it before the first request.
struct Cache<T> {
    /// Hashes the label pair once; the map is keyed by that hash.
    hasher: foldhash::fast::RandomState,
    by_hash: RwLock<crate::FastMap<u64, Vec<Labelled<T>>>>,
}

/// A value and the two label values it was registered for.
type Labelled<T> = (Box<str>, Box<str>, T);

impl<T> Cache<T> {
    fn new() -> Self {
        Cache {
            hasher: Default::default(),
            by_hash: Default::default(),
        }
    }

    fn with<R>(&self, a: &str, b: &str, make: impl FnOnce() -> T, f: impl FnOnce(&T) -> R) -> R {
        let key = self.hasher.hash_one((a, b));
        {
            let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, t)) = map
                .get(&key)
                .and_then(|v| v.iter().find(|(x, y, _)| &**x == a && &**y == b))
            {
                return f(t);
            }
        }
        let mut map = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        let chain = map.entry(key).or_default();
        let at = match chain.iter().position(|(x, y, _)| &**x == a && &**y == b) {
            Some(i) => i,
            None => {
                chain.push((a.into(), b.into(), make()));
                chain.len() - 1
            }
        };
        f(&chain[at].2)
    }
}

/// The metrics of one (model, provider).
struct ModelMetrics {
    tokens: [Counter; 5],
    cost: Gauge,
    duration: Histogram,
    ttft: Histogram,
}

fn statics() -> &'static Statics {
    static S: OnceLock<Statics> = OnceLock::new();
    S.get_or_init(|| Statics {
        in_flight: gauge!(IN_FLIGHT),
        overhead: histogram!(OVERHEAD),
        models: Cache::new(),
        requests: Cache::new(),
        attempts: Cache::new(),
    })
}

struct Statics {
    in_flight: Gauge,
    overhead: Histogram,
    models: Cache<ModelMetrics>,
    /// (model, provider) → counters by status.
    requests: Cache<RwLock<Vec<(String, Counter)>>>,
    attempts: Cache<Counter>,
}

/// One request began.
pub(crate) fn request_started() {
    statics().in_flight.increment(1.0);
}

/// One request ended with this record.
pub(crate) fn request_ended(r: &UsageRecord, model: &str, overhead: Option<Duration>) {
    let s = statics();
    s.in_flight.decrement(1.0);
    let provider = r.provider.as_deref().unwrap_or("none");
    let mut code = [0u8; 8];
    let status: &str = match (r.cancelled, r.status) {
        (true, _) | (false, None) => "cancelled",
        (false, Some(n)) => {
            use std::io::Write;
            let mut w = &mut code[..];
            let _ = write!(w, "{n}");
            let len = 8 - w.len();
            std::str::from_utf8(&code[..len]).unwrap_or("other")
        }
    };
    s.requests.with(
        model,
        provider,
        || RwLock::new(Vec::new()),
        |by_status| {
            let found = by_status
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(st, _)| st == status)
                .map(|(_, c)| c.clone());
            let counter = found.unwrap_or_else(|| {
                let c = counter!(REQUESTS, "model" => model.to_owned(), "provider" => provider.to_owned(), "status" => status.to_owned());
                by_status
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((status.to_owned(), c.clone()));
                c
            });
            counter.increment(1);
        },
    );
    s.models.with(
        model,
        provider,
        || {
            let m = model.to_owned();
            let p = provider.to_owned();
            let tokens = |kind: &'static str| {
                counter!(TOKENS, "model" => m.clone(), "provider" => p.clone(), "kind" => kind)
            };
            ModelMetrics {
                tokens: [
                    tokens("prompt"),
                    tokens("completion"),
                    tokens("cached"),
                    tokens("cache_write"),
                    tokens("reasoning"),
                ],
                cost: gauge!(COST, "model" => m.clone(), "provider" => p.clone()),
                duration: histogram!(DURATION, "model" => m.clone()),
                ttft: histogram!(TTFT, "model" => m),
            }
        },
        |m| {
            for (c, n) in m.tokens.iter().zip([
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
                r.reasoning_tokens,
            ]) {
                if n > 0 {
                    c.increment(n);
                }
            }
            if let Some(cost) = r.cost.filter(|c| *c > 0.0) {
                m.cost.increment(cost);
            }
            m.duration.record(r.latency_ms as f64 / 1e3);
            if let Some(t) = r.time_to_first_token_ms {
                m.ttft.record(t as f64 / 1e3);
            }
        },
    );
    if let Some(o) = overhead {
        s.overhead.record(o.as_secs_f64());
    }
    for a in &r.attempts {
        s.attempts.with(
            &a.provider,
            &a.outcome,
            || counter!(ATTEMPTS, "provider" => a.provider.clone(), "outcome" => a.outcome.clone()),
            |c| c.increment(1),
        );
    }
}
