//! An endpoint's recent history by the clock: outcomes per minute over the last day, and the
//! latency and throughput samples of the last half hour. What `GET /v1/models/…/endpoints`
//! reports as uptime over 5 minutes, 30 minutes and a day, and as percentiles.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Minutes of outcomes kept: a day.
const MINUTES: usize = 24 * 60;
/// Samples kept for the percentiles, at most (the newest).
const SAMPLES: usize = 512;
/// How far back the percentiles look.
const SAMPLE_WINDOW: Duration = Duration::from_secs(30 * 60);

/// Percentiles of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 75th percentile.
    pub p75: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (`None` when empty).
    fn of(mut values: Vec<f64>) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Some(Percentiles {
            p50: at(0.50),
            p75: at(0.75),
            p90: at(0.90),
            p99: at(0.99),
        })
    }
}

/// The recent history of an endpoint, by the clock: see
/// [`EndpointHealth::recent`](super::EndpointHealth::recent).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RecentHealth {
    /// Share of successful attempts over the last 5 minutes, in percent; `None` without any.
    pub uptime_5m: Option<f64>,
    /// Over the last 30 minutes.
    pub uptime_30m: Option<f64>,
    /// Over the last day.
    pub uptime_1d: Option<f64>,
    /// Time to the first token (or the whole answer), in milliseconds, over the last 30
    /// minutes.
    pub latency_30m: Option<Percentiles>,
    /// Output tokens per second over the last 30 minutes.
    pub throughput_30m: Option<Percentiles>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Minute {
    /// Minutes since the history began; which minute this slot holds.
    at: u32,
    ok: u32,
    failed: u32,
}

/// Kept under the endpoint's lock; allocated at its first outcome.
#[derive(Debug)]
pub(super) struct History {
    origin: Instant,
    minutes: Vec<Minute>,
    latency_ms: VecDeque<(Instant, f64)>,
    throughput: VecDeque<(Instant, f64)>,
}

impl History {
    pub(super) fn new(origin: Instant) -> Self {
        History {
            origin,
            minutes: vec![Minute::default(); MINUTES],
            latency_ms: VecDeque::new(),
            throughput: VecDeque::new(),
        }
    }

    fn minute(&self, now: Instant) -> u32 {
        let m = now.saturating_duration_since(self.origin).as_secs() / 60;
        u32::try_from(m).unwrap_or(u32::MAX)
    }

    pub(super) fn outcome(&mut self, now: Instant, ok: bool) {
        let at = self.minute(now);
        let slot = &mut self.minutes[at as usize % MINUTES];
        if slot.at != at {
            *slot = Minute {
                at,
                ok: 0,
                failed: 0,
            };
        }
        if ok {
            slot.ok = slot.ok.saturating_add(1);
        } else {
            slot.failed = slot.failed.saturating_add(1);
        }
    }

    pub(super) fn latency(&mut self, now: Instant, latency: Duration) {
        push(&mut self.latency_ms, now, latency.as_secs_f64() * 1000.0);
    }

    pub(super) fn throughput(&mut self, now: Instant, tokens_per_second: f64) {
        push(&mut self.throughput, now, tokens_per_second);
    }

    pub(super) fn recent(&self, now: Instant) -> RecentHealth {
        let current = self.minute(now);
        let uptime = |minutes: u32| {
            let since = current.saturating_sub(minutes - 1);
            let (ok, failed) = self
                .minutes
                .iter()
                .filter(|m| m.at >= since && m.at <= current && m.ok + m.failed > 0)
                .fold((0u64, 0u64), |(o, f), m| {
                    (o + u64::from(m.ok), f + u64::from(m.failed))
                });
            (ok + failed > 0).then(|| 100.0 * ok as f64 / (ok + failed) as f64)
        };
        let window = |samples: &VecDeque<(Instant, f64)>| {
            Percentiles::of(
                samples
                    .iter()
                    .filter(|(at, _)| now.saturating_duration_since(*at) <= SAMPLE_WINDOW)
                    .map(|(_, v)| *v)
                    .collect(),
            )
        };
        RecentHealth {
            uptime_5m: uptime(5),
            uptime_30m: uptime(30),
            uptime_1d: uptime(MINUTES as u32),
            latency_30m: window(&self.latency_ms),
            throughput_30m: window(&self.throughput),
        }
    }
}

fn push(samples: &mut VecDeque<(Instant, f64)>, now: Instant, value: f64) {
    if samples.len() == SAMPLES {
        samples.pop_front();
    }
    samples.push_back((now, value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_by_window() {
        let t0 = Instant::now();
        let mut h = History::new(t0);
        // An hour ago: failures only; the last minutes: successes.
        for _ in 0..3 {
            h.outcome(t0, false);
        }
        let now = t0 + Duration::from_secs(3600);
        h.outcome(now, true);
        h.outcome(now - Duration::from_secs(120), true);
        h.outcome(now - Duration::from_secs(600), false);
        let r = h.recent(now);
        assert_eq!(r.uptime_5m, Some(100.0));
        assert!((r.uptime_30m.unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert!((r.uptime_1d.unwrap() - 100.0 * 2.0 / 6.0).abs() < 1e-9);
        // A day later, the slots are reused and the old minutes forgotten.
        let later = now + Duration::from_secs(24 * 3600);
        h.outcome(later, true);
        assert_eq!(h.recent(later).uptime_1d, Some(100.0));
        assert_eq!(History::new(t0).recent(t0), RecentHealth::default());
    }

    #[test]
    fn percentiles_of_the_last_half_hour() {
        let t0 = Instant::now();
        let mut h = History::new(t0);
        h.latency(t0, Duration::from_secs(100));
        let now = t0 + Duration::from_secs(3600);
        for ms in 1..=100 {
            h.latency(now, Duration::from_millis(ms));
        }
        h.throughput(now, 50.0);
        let r = h.recent(now);
        let l = r.latency_30m.unwrap();
        assert_eq!((l.p50, l.p75, l.p90, l.p99), (50.0, 75.0, 90.0, 99.0));
        assert_eq!(r.throughput_30m.unwrap().p99, 50.0);
    }
}
