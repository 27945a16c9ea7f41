use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, QuantaClock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, RateLimitStore, Window};
use crate::auth::{RateLimits, StoreError};
use crate::future::BoxFuture;

/// The hasher of the state maps and of key ids: foldhash, seeded once per process.
type Hasher = foldhash::fast::RandomState;

type Limiter<C> = RateLimiter<u64, DashMapStateStore<u64, Hasher>, C, StateInformationMiddleware>;

/// The state key of a key id: its 64-bit hash (no allocation per decision). Key ids are made
/// by the gateway or its operator, not by clients; two ids colliding among a million has a
/// probability near 3e-8, and would only make them share a limit.
fn slot_of(seed: &Hasher, key: &str) -> u64 {
    use std::hash::BuildHasher;
    seed.hash_one(key)
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// Idle state is swept every this many decisions.
const SWEEP_EVERY: u64 = 4096;

/// Rate-limit state in this process's memory.
///
/// Request limits are governor's keyed GCRA limiters, one per distinct limit value (keys with
/// the same `requests_per_minute` share one, each key its own cell). Token limits are a GCRA of
/// the same shape kept here, because governor can neither give cells back nor go into debt,
/// which settling a token estimate needs. Every 4,096 decisions, state that has
/// become indistinguishable from a fresh key's is dropped, so memory follows the keys active
/// within the last window, not every key ever seen.
///
/// Generic over governor's [`Clock`]: tests use `FakeRelativeClock`.
pub struct MemoryRateLimits<C: Clock = QuantaClock> {
    clock: C,
    start: C::Instant,
    minute: RwLock<crate::FastMap<u32, Arc<Limiter<C>>>>,
    day: RwLock<crate::FastMap<u32, Arc<Limiter<C>>>>,
    /// Key → theoretical arrival time of its token bucket, in nanoseconds since `start`.
    tokens: DashMap<u64, u64, Hasher>,
    /// Hashes key ids into state keys.
    seed: Hasher,
    decisions: AtomicU64,
}

/// How far a key's token debt can reach, in nanoseconds: a hundred years.
const MAX_DEBT_NS: u64 = 100 * 365 * 86_400 * 1_000_000_000;

impl<C: Clock + Clone> fmt::Debug for MemoryRateLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRateLimits")
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

impl MemoryRateLimits<QuantaClock> {
    /// On the real (monotonic) clock.
    pub fn new() -> Self {
        MemoryRateLimits::with_clock(QuantaClock::default())
    }
}

impl Default for MemoryRateLimits<QuantaClock> {
    fn default() -> Self {
        MemoryRateLimits::new()
    }
}

impl<C: Clock + Clone> MemoryRateLimits<C> {
    /// On `clock`.
    pub fn with_clock(clock: C) -> Self {
        MemoryRateLimits {
            start: clock.now(),
            clock,
            minute: RwLock::default(),
            day: RwLock::default(),
            tokens: DashMap::default(),
            seed: Hasher::default(),
            decisions: AtomicU64::new(0),
        }
    }

    /// How many (key, limit) states are held now: what the sweep bounds.
    pub fn tracked(&self) -> usize {
        let limiters = |m: &RwLock<crate::FastMap<u32, Arc<Limiter<C>>>>| -> usize {
            m.read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|l| l.len())
                .sum()
        };
        limiters(&self.minute) + limiters(&self.day) + self.tokens.len()
    }

    /// Drops every state that a fresh key would have anyway.
    pub fn sweep(&self) {
        for m in [&self.minute, &self.day] {
            let mut m = m.write().unwrap_or_else(|e| e.into_inner());
            m.retain(|_, l| {
                l.retain_recent();
                l.shrink_to_fit();
                !l.is_empty()
            });
        }
        let now = self.now_ns();
        self.tokens.retain(|_, tat| *tat > now);
        self.tokens.shrink_to_fit();
    }

    fn now_ns(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    fn limiter(
        &self,
        map: &RwLock<crate::FastMap<u32, Arc<Limiter<C>>>>,
        limit: u32,
        period: Duration,
    ) -> Arc<Limiter<C>> {
        if let Some(l) = map.read().unwrap_or_else(|e| e.into_inner()).get(&limit) {
            return l.clone();
        }
        let mut map = map.write().unwrap_or_else(|e| e.into_inner());
        map.entry(limit)
            .or_insert_with(|| {
                let burst = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(period / burst.get())
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(burst);
                let limiter: RateLimiter<_, _, _, NoOpMiddleware<C::Instant>> =
                    RateLimiter::new(quota, DashMapStateStore::default(), self.clock.clone());
                Arc::new(limiter.with_middleware::<StateInformationMiddleware>())
            })
            .clone()
    }

    /// One request against one window: the window after it, or the wait before it may go.
    fn take_request(
        &self,
        map: &RwLock<crate::FastMap<u32, Arc<Limiter<C>>>>,
        key: u64,
        limit: u32,
        period: Duration,
    ) -> Result<Window, (Window, Duration)> {
        let limiter = self.limiter(map, limit, period);
        let per_cell = period / limit.max(1);
        match limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Window {
                    limit,
                    remaining,
                    reset: per_cell * limit.saturating_sub(remaining),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err((
                    Window {
                        limit,
                        remaining: 0,
                        reset: wait + per_cell * limit.saturating_sub(1),
                    },
                    wait,
                ))
            }
        }
    }

    /// Reserves `n` tokens of a per-minute bucket: the window after it, or the wait.
    fn take_tokens(&self, key: u64, per_minute: u32, n: u32) -> Result<Window, (Window, Duration)> {
        let per_token = token_interval(per_minute);
        let capacity = per_token * u64::from(per_minute);
        let now = self.now_ns();
        let mut tat = self.tokens.entry(key).or_insert(now);
        let base = (*tat).max(now);
        // Saturating: an upstream's absurd usage, settled, can leave a state far in the future.
        let next = base.saturating_add(per_token * u64::from(n.min(per_minute)));
        if next - now > capacity {
            let wait = next - now - capacity;
            return Err((
                Window {
                    limit: per_minute,
                    remaining: ((capacity.saturating_sub(base - now)) / per_token) as u32,
                    reset: Duration::from_nanos(base - now),
                },
                Duration::from_nanos(wait),
            ));
        }
        *tat = next;
        Ok(Window {
            limit: per_minute,
            remaining: ((capacity - (next - now)) / per_token) as u32,
            reset: Duration::from_nanos(next - now),
        })
    }

    pub(super) fn decide(&self, key: &str, limits: &RateLimits, tokens: u32) -> Decision {
        if self.decisions.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let key = slot_of(&self.seed, key);
        let mut decision = Decision {
            allowed: true,
            ..Decision::default()
        };
        let windows = [
            (limits.requests_per_minute, &self.minute, MINUTE),
            (limits.requests_per_day, &self.day, DAY),
        ];
        for (limit, map, period) in windows {
            let Some(limit) = limit else { continue };
            match self.take_request(map, key, limit, period) {
                Ok(w) => {
                    // Report the tighter window.
                    if decision.requests.is_none_or(|r| w.remaining < r.remaining) {
                        decision.requests = Some(w);
                    }
                }
                Err((w, wait)) => {
                    decision.allowed = false;
                    decision.requests = Some(w);
                    decision.retry_after = Some(wait);
                    return decision;
                }
            }
        }
        if let Some(per_minute) = limits.tokens_per_minute {
            match self.take_tokens(key, per_minute, tokens) {
                Ok(w) => decision.tokens = Some(w),
                Err((w, wait)) => {
                    decision.allowed = false;
                    decision.tokens = Some(w);
                    decision.retry_after = Some(wait);
                }
            }
        }
        decision
    }
}

/// Nanoseconds per token of a per-minute token budget (at least 1).
fn token_interval(per_minute: u32) -> u64 {
    (MINUTE.as_nanos() as u64 / u64::from(per_minute.max(1))).max(1)
}

impl<C> RateLimitStore for MemoryRateLimits<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a RateLimits,
        tokens: u32,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(std::future::ready(Ok(self.decide(key, limits, tokens))))
    }

    fn acquire_now(
        &self,
        key: &str,
        limits: &RateLimits,
        tokens: u32,
    ) -> Option<Result<Decision, StoreError>> {
        Some(Ok(self.decide(key, limits, tokens)))
    }

    fn reconcile(&self, key: &str, limits: &RateLimits, reserved: u32, used: u64) {
        let Some(per_minute) = limits.tokens_per_minute else {
            return;
        };
        let per_token = token_interval(per_minute);
        let now = self.now_ns();
        let reserved = u64::from(reserved.min(per_minute));
        let mut tat = self.tokens.entry(slot_of(&self.seed, key)).or_insert(now);
        if used >= reserved {
            // Debt: the key waits for what it used beyond the estimate.
            // At most a hundred years ahead, as in Redis: a provider's absurd usage is a very
            // long wait, not an overflow.
            let extra = (used - reserved).saturating_mul(per_token);
            let most = now.saturating_add(MAX_DEBT_NS);
            *tat = (*tat).max(now).saturating_add(extra).min(most);
        } else {
            // Give back what was not used; never into the past.
            let back = (reserved - used) * per_token;
            *tat = tat.saturating_sub(back).max(now);
        }
    }
}
