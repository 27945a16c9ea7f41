//! Live health of each endpoint: time to first token, throughput, a rolling error rate, and
//! the cool-down that keeps a failing endpoint out of the way for a while.
//!
//! One [`EndpointHealth`] per catalog endpoint (and one per provider for `<provider>/<model>`
//! pass-through), shared by every request through an `Arc` in its [`Target`](crate::Target).
//! [`FallbackLayer`](crate::fallback::FallbackLayer) writes it after every attempt;
//! [`ModelRewriteLayer`](crate::ModelRewriteLayer) reads it to order endpoints (healthy ones
//! first, `sort: "throughput"` / `"latency"`), and `GET /v1/models` shows it.
//!
//! The state machine of one endpoint:
//! - **closed** (healthy): every request may use it.
//! - **cooling**: after [`HealthPolicy::failures_to_cool`] failures in a row *and* half the
//!   recent outcomes failed, or at once after an upstream 429 with `Retry-After` (for that
//!   long), the endpoint is skipped until the cool-down ends.
//! - **half-open**: when the cool-down ends, one request probes it; the others still skip it
//!   until the probe answers. Success closes it; failure cools it again, twice as long (up to
//!   [`HealthPolicy::max_cooldown`]).
//!
//! Time is `tokio::time::Instant`, so tests under `start_paused` are deterministic.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::future::later;

mod history;

use self::history::History;
pub use self::history::{Percentiles, RecentHealth};

/// Outcomes remembered for the rolling error rate. Sixty-four, not thirty-two: with a fifth of
/// the requests failing at random, half of the last 32 fail (and five in a row) about 2.5 times
/// in a million outcomes, which cooled a busy, merely degraded endpoint every few minutes; half
/// of the last 64 does not happen in practice (a test holds it to none in a million). An
/// endpoint that was healthy and then fails every request cools after 32 failures.
const WINDOW: u32 = 64;

/// How health turns failures into cool-downs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct HealthPolicy {
    /// Failures in a row before an endpoint cools down (default 5); half of the recent
    /// outcomes must have failed too, so scattered failures never cool a busy endpoint.
    pub failures_to_cool: u32,
    /// The first cool-down (default 30 s); each failed probe doubles it.
    pub cooldown: Duration,
    /// The longest cool-down, also the cap on an upstream's `Retry-After` (default 5 min;
    /// zero turns cool-downs off).
    pub max_cooldown: Duration,
    /// Weight of the newest sample in the moving averages (default 0.2).
    pub ewma_alpha: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failures_to_cool: 5,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            ewma_alpha: 0.2,
        }
    }
}

/// Whether an endpoint may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Healthy: use it.
    Ready,
    /// Its cool-down ended and this caller is the one probe: use it, its answer decides.
    Probe,
    /// Cooling down (or another request is probing it) until about this instant.
    CoolingUntil(Instant),
}

impl Availability {
    /// True for [`Ready`](Self::Ready) and [`Probe`](Self::Probe).
    pub fn is_usable(self) -> bool {
        !matches!(self, Availability::CoolingUntil(_))
    }
}

/// A snapshot of one endpoint's health, for display and routing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSnapshot {
    /// Moving average of the time to the first token (or to the whole answer when not
    /// streamed), if any request succeeded.
    pub latency: Option<Duration>,
    /// An estimate of the 95th percentile of that time: the average plus twice the moving
    /// average of the deviation from it.
    pub latency_p95: Option<Duration>,
    /// Moving average of output tokens per second, if measured.
    pub throughput: Option<f64>,
    /// Share of the recent outcomes (up to 64) that failed; 0 with no outcome yet.
    pub error_rate: f64,
    /// Outcomes counted in `error_rate`.
    pub samples: u32,
    /// True while the endpoint is cooling down.
    pub cooling: bool,
    /// Successful and failed attempts since start.
    pub totals: (u64, u64),
}

/// The live health of one endpoint; see the [module docs](self).
#[derive(Default)]
pub struct EndpointHealth {
    state: Mutex<State>,
    /// Whether `cooling_until` is set, readable without the lock: every request asks, and a
    /// healthy endpoint (the usual case) is answered without touching the shared lock.
    cooling: AtomicBool,
}

#[derive(Default)]
struct State {
    latency_ms: Option<f64>,
    latency_dev_ms: f64,
    throughput: Option<f64>,
    /// Bit i set: the i-th newest outcome failed.
    outcomes: u64,
    samples: u32,
    consecutive_failures: u32,
    cooling_until: Option<Instant>,
    /// The cool-down that the next failed probe doubles.
    last_cooldown: Option<Duration>,
    /// A probe is in flight (half-open), started at this instant.
    probing_since: Option<Instant>,
    /// The cool-down comes from an upstream 429 with `Retry-After`.
    rate_limited: bool,
    successes: u64,
    failures: u64,
    /// By the clock, from the first outcome on.
    history: Option<Box<History>>,
}

impl fmt::Debug for EndpointHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EndpointHealth")
            .field(&self.snapshot(Instant::now()))
            .finish()
    }
}

impl EndpointHealth {
    /// A fresh, healthy endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the endpoint may be tried at `now`. A caller that gets
    /// [`Availability::Probe`] must report the outcome (success or failure).
    pub fn acquire(&self, now: Instant, policy: &HealthPolicy) -> Availability {
        if !self.may_be_cooling() {
            return Availability::Ready;
        }
        let mut s = self.lock();
        match s.cooling_until {
            None => Availability::Ready,
            Some(until) if now < until => Availability::CoolingUntil(until),
            Some(_) => match s.probing_since {
                // A probe that never reported (its caller vanished) frees the slot after a
                // cool-down's length.
                Some(since) if now.saturating_duration_since(since) < policy.cooldown => {
                    Availability::CoolingUntil(later(since, policy.cooldown))
                }
                _ => {
                    s.probing_since = Some(now);
                    Availability::Probe
                }
            },
        }
    }

    /// Whether the endpoint would be usable at `now`, without taking the probe.
    pub fn is_cooling(&self, now: Instant) -> bool {
        if !self.may_be_cooling() {
            return false;
        }
        let s = self.lock();
        match s.cooling_until {
            None => false,
            Some(until) => now < until || s.probing_since.is_some(),
        }
    }

    /// Whether a cool-down was set and not yet lifted by a success (it may have run out):
    /// when not, the endpoint is usable, whatever the time. One load, no lock. (Read without
    /// the lock, it may lag a cool-down set at that very moment by another request: that one
    /// request goes ahead, as it would have a moment earlier.)
    pub(crate) fn may_be_cooling(&self) -> bool {
        self.cooling.load(Ordering::Relaxed)
    }

    /// A successful attempt: `latency` to the first token (or the whole answer).
    pub fn on_success(&self, latency: Duration, policy: &HealthPolicy) {
        self.on_success_with_throughput(latency, None, policy);
    }

    /// [`on_success`](Self::on_success) and, when measured, [`on_throughput`](Self::on_throughput)
    /// under one lock: a whole answer reports both at once.
    pub fn on_success_with_throughput(
        &self,
        latency: Duration,
        tokens_per_second: Option<f64>,
        policy: &HealthPolicy,
    ) {
        let now = Instant::now();
        let mut s = self.lock();
        let tps = tokens_per_second.filter(|t| t.is_finite() && *t > 0.0);
        if let Some(tps) = tps {
            s.throughput = Some(ewma(s.throughput, tps, policy.ewma_alpha));
        }
        let history = s.history(now);
        history.outcome(now, true);
        history.latency(now, latency);
        if let Some(tps) = tps {
            history.throughput(now, tps);
        }
        s.push(false);
        s.successes += 1;
        s.consecutive_failures = 0;
        s.cooling_until = None;
        self.cooling.store(false, Ordering::Relaxed);
        s.last_cooldown = None;
        s.probing_since = None;
        s.rate_limited = false;
        let ms = latency.as_secs_f64() * 1000.0;
        if let Some(mean) = s.latency_ms {
            s.latency_dev_ms = ewma(Some(s.latency_dev_ms), (ms - mean).abs(), policy.ewma_alpha);
        }
        s.latency_ms = Some(ewma(s.latency_ms, ms, policy.ewma_alpha));
    }

    /// Output speed measured over a whole answer.
    pub fn on_throughput(&self, tokens_per_second: f64, policy: &HealthPolicy) {
        if tokens_per_second.is_finite() && tokens_per_second > 0.0 {
            let now = Instant::now();
            let mut s = self.lock();
            s.throughput = Some(ewma(s.throughput, tokens_per_second, policy.ewma_alpha));
            s.history(now).throughput(now, tokens_per_second);
        }
    }

    /// A failed attempt at `now`. `retry_after`: the upstream said when to come back (a 429
    /// or 503 with `Retry-After`); the endpoint then cools for that long (capped) at once.
    pub fn on_failure(&self, now: Instant, retry_after: Option<Duration>, policy: &HealthPolicy) {
        self.failed(now, retry_after, false, policy);
    }

    /// An upstream 429 that said when to come back: a failure that cools the endpoint for
    /// that long (capped), remembered as a rate limit (see
    /// [`is_rate_limited`](Self::is_rate_limited)).
    pub fn on_rate_limited(&self, now: Instant, retry_after: Duration, policy: &HealthPolicy) {
        self.failed(now, Some(retry_after), true, policy);
    }

    /// Whether the current cool-down comes from the upstream's rate limit (a 429 with
    /// `Retry-After`) rather than from failures.
    pub fn is_rate_limited(&self) -> bool {
        self.lock().rate_limited
    }

    fn failed(
        &self,
        now: Instant,
        retry_after: Option<Duration>,
        rate_limited: bool,
        policy: &HealthPolicy,
    ) {
        let mut s = self.lock();
        s.history(now).outcome(now, false);
        s.push(true);
        s.failures += 1;
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        let was_probe = s.probing_since.take().is_some();
        let cooldown = if let Some(wait) = retry_after {
            Some(wait.min(policy.max_cooldown))
        } else if was_probe {
            let last = s.last_cooldown.unwrap_or(policy.cooldown);
            Some(last.saturating_mul(2).min(policy.max_cooldown))
        } else if s.consecutive_failures >= policy.failures_to_cool.max(1) && s.error_rate() >= 0.5
        {
            Some(policy.cooldown.min(policy.max_cooldown))
        } else {
            None
        };
        if let Some(d) = cooldown.filter(|d| !d.is_zero()) {
            s.cooling_until = Some(later(now, d));
            self.cooling.store(true, Ordering::Relaxed);
            s.last_cooldown = Some(d);
            s.rate_limited = rate_limited;
        }
    }

    /// A probe that ended without an outcome about the endpoint (the client left): lets the
    /// next request probe.
    pub fn release_probe(&self) {
        self.lock().probing_since = None;
    }

    /// Uptime over the last 5 minutes, 30 minutes and day, and the percentiles of latency
    /// and throughput over the last 30 minutes, at `now`.
    pub fn recent(&self, now: Instant) -> RecentHealth {
        self.lock()
            .history
            .as_ref()
            .map(|h| h.recent(now))
            .unwrap_or_default()
    }

    /// The current figures.
    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let s = self.lock();
        HealthSnapshot {
            // `try_`: an `ewma_alpha` outside 0..=1 (a policy's own) could make them negative.
            latency: s
                .latency_ms
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok()),
            latency_p95: s.latency_ms.and_then(|ms| {
                Duration::try_from_secs_f64((ms + 2.0 * s.latency_dev_ms) / 1000.0).ok()
            }),
            throughput: s.throughput,
            error_rate: s.error_rate(),
            samples: s.samples,
            cooling: s
                .cooling_until
                .is_some_and(|until| now < until || s.probing_since.is_some()),
            totals: (s.successes, s.failures),
        }
    }
}

impl State {
    fn history(&mut self, now: Instant) -> &mut History {
        self.history
            .get_or_insert_with(|| Box::new(History::new(now)))
    }

    fn push(&mut self, failed: bool) {
        self.outcomes = (self.outcomes << 1) | u64::from(failed);
        self.samples = (self.samples + 1).min(WINDOW);
    }

    fn error_rate(&self) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        let mask = if self.samples >= 64 {
            u64::MAX
        } else {
            (1u64 << self.samples) - 1
        };
        f64::from((self.outcomes & mask).count_ones()) / f64::from(self.samples)
    }
}

fn ewma(prev: Option<f64>, sample: f64, alpha: f64) -> f64 {
    match prev {
        Some(p) => p + alpha * (sample - p),
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            failures_to_cool: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(60),
            ewma_alpha: 0.5,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cools_after_failures_in_a_row_then_probes_once() {
        let h = EndpointHealth::new();
        let p = policy();
        let t0 = Instant::now();
        for _ in 0..2 {
            h.on_failure(t0, None, &p);
            assert_eq!(h.acquire(t0, &p), Availability::Ready);
        }
        h.on_failure(t0, None, &p);
        assert_eq!(
            h.acquire(t0, &p),
            Availability::CoolingUntil(t0 + Duration::from_secs(10))
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(h.acquire(later, &p), Availability::Probe);
        assert!(
            !h.acquire(later, &p).is_usable(),
            "one probe at a time while half-open"
        );
        // The probe fails: twice as long.
        h.on_failure(later, None, &p);
        assert_eq!(
            h.acquire(later, &p),
            Availability::CoolingUntil(later + Duration::from_secs(20))
        );
        let after = later + Duration::from_secs(20);
        assert_eq!(h.acquire(after, &p), Availability::Probe);
        h.on_success(Duration::from_millis(100), &p);
        assert_eq!(h.acquire(after, &p), Availability::Ready);
        assert!(!h.snapshot(after).cooling);
    }

    #[tokio::test(start_paused = true)]
    async fn scattered_failures_never_cool() {
        let h = EndpointHealth::new();
        let p = policy();
        let now = Instant::now();
        // One failure in five, for a long time: never three in a row, never cooling.
        for i in 0..1000 {
            if i % 5 == 0 {
                h.on_failure(now, None, &p);
            } else {
                h.on_success(Duration::from_millis(10), &p);
            }
            assert_eq!(h.acquire(now, &p), Availability::Ready);
        }
        let snap = h.snapshot(now);
        assert!((snap.error_rate - 0.2).abs() < 0.05, "{}", snap.error_rate);
        assert_eq!(snap.samples, 64);
        assert_eq!(snap.totals, (800, 200));
    }

    #[tokio::test(start_paused = true)]
    async fn random_failures_at_a_fifth_never_cool_a_busy_endpoint() {
        // Independent failures, a fifth of the outcomes: five in a row happens all the time,
        // half of the last 32 now and then (this seed: 5 times in a million), half of the last
        // 64 never.
        let h = EndpointHealth::new();
        let p = HealthPolicy::default();
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(17);
        let mut cooled = 0;
        for _ in 0..1_000_000 {
            if rng.u8(..5) == 0 {
                h.on_failure(now, None, &p);
                if h.snapshot(now).cooling {
                    cooled += 1;
                    // Start over, as after a cool-down that ended in a good probe.
                    h.on_success(Duration::from_millis(10), &p);
                }
            } else {
                h.on_success(Duration::from_millis(10), &p);
            }
        }
        let failed = h.snapshot(now).totals.1;
        assert!(
            (195_000..=205_000).contains(&failed),
            "a fifth failed: {failed}"
        );
        assert_eq!(cooled, 0, "cool-downs in a million outcomes");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_cools_at_once_capped() {
        let h = EndpointHealth::new();
        let p = policy();
        let now = Instant::now();
        h.on_failure(now, Some(Duration::from_secs(7)), &p);
        assert_eq!(
            h.acquire(now, &p),
            Availability::CoolingUntil(now + Duration::from_secs(7))
        );
        let h = EndpointHealth::new();
        h.on_failure(now, Some(Duration::from_secs(3600)), &p);
        assert_eq!(
            h.acquire(now, &p),
            Availability::CoolingUntil(now + Duration::from_secs(60))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cool_downs_of_the_maximum_duration_saturate() {
        let h = EndpointHealth::new();
        let p = HealthPolicy {
            failures_to_cool: 1,
            cooldown: Duration::MAX,
            max_cooldown: Duration::MAX,
            ..policy()
        };
        let now = Instant::now();
        let far = Duration::from_secs(86_400 * 365 * 30);
        h.on_failure(now, None, &p);
        assert_eq!(h.acquire(now, &p), Availability::CoolingUntil(now + far));
        // Thirty years on, the probe fails: twice "for ever" is still thirty years.
        let t = now + far;
        assert_eq!(h.acquire(t, &p), Availability::Probe);
        h.on_failure(t, None, &p);
        assert_eq!(h.acquire(t, &p), Availability::CoolingUntil(t + far));
        // An abandoned probe's slot, likewise.
        let t = t + far;
        assert_eq!(h.acquire(t, &p), Availability::Probe);
        assert_eq!(h.acquire(t, &p), Availability::CoolingUntil(t + far));
    }

    #[tokio::test(start_paused = true)]
    async fn a_smoothing_factor_out_of_range_panics_nothing() {
        let h = EndpointHealth::new();
        let p = HealthPolicy {
            ewma_alpha: 3.0,
            ..policy()
        };
        h.on_success(Duration::from_millis(100), &p);
        h.on_success(Duration::ZERO, &p);
        // 100 + 3 × (0 − 100) = −200 ms: no such duration, so none is reported.
        let snap = h.snapshot(Instant::now());
        assert_eq!(snap.latency, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let h = EndpointHealth::new();
        let p = policy();
        let now = Instant::now();
        h.on_failure(now, Some(Duration::from_secs(1)), &p);
        let t = now + Duration::from_secs(1);
        assert_eq!(h.acquire(t, &p), Availability::Probe);
        h.release_probe();
        assert_eq!(h.acquire(t, &p), Availability::Probe);
        // Never reported: after a cool-down's length another caller may probe.
        let t2 = t + Duration::from_secs(10);
        assert_eq!(h.acquire(t2, &p), Availability::Probe);
    }

    #[test]
    fn moving_averages() {
        let h = EndpointHealth::new();
        let p = policy();
        h.on_success(Duration::from_millis(100), &p);
        h.on_success(Duration::from_millis(200), &p);
        h.on_throughput(50.0, &p);
        h.on_throughput(f64::NAN, &p);
        h.on_throughput(100.0, &p);
        let s = h.snapshot(Instant::now());
        assert_eq!(s.latency, Some(Duration::from_millis(150)));
        // Deviation 100 ms × 0.5 = 50 ms: p95 ≈ 150 + 2 × 50.
        assert_eq!(s.latency_p95, Some(Duration::from_millis(250)));
        assert_eq!(s.throughput, Some(75.0));
    }
}
