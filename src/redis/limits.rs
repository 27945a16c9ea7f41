//! Rate limits on Redis: GCRA in Lua, on Redis's clock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::{Concern, RedisState};
use crate::auth::{RateLimits, StoreError};
use crate::future::BoxFuture;
use crate::rate_limit::{Decision, MemoryRateLimits, RateLimitStore, Window};

/// Takes one request (and `tokens`) from every configured window, or nothing.
///
/// KEYS: the minute, day and tokens states (theoretical arrival times, µs). ARGV: requests
/// per minute, per day, tokens per minute (0: no limit), tokens to reserve. Returns
/// `{allowed, req?, req_limit, req_remaining, req_reset_us, tok?, tok_limit,
/// tok_remaining, tok_reset_us, retry_after_us}`.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local periods = {60000000, 86400000000, 60000000}
local tokens = tonumber(ARGV[4])
local allowed, retry = 1, 0
local next_tat = {}
local win = {}
for i = 1, 3 do
  local limit = limits[i]
  if limit > 0 then
    local per = periods[i] / limit
    local n = 1
    if i == 3 then n = math.min(math.max(tokens, 0), limit) end
    local tat = tonumber(redis.call('GET', KEYS[i]) or 0)
    local base = math.max(tat, now)
    local nxt = base + per * n
    if nxt - now > periods[i] then
      allowed = 0
      retry = math.max(retry, nxt - now - periods[i])
      win[i] = {limit, math.floor(math.max(periods[i] - (base - now), 0) / per), base - now, 0}
    else
      next_tat[i] = nxt
      win[i] = {limit, math.floor((periods[i] - (nxt - now)) / per), nxt - now, 1}
    end
  end
end
if allowed == 1 then
  for i = 1, 3 do
    if next_tat[i] then
      redis.call('SET', KEYS[i], string.format('%.0f', next_tat[i]), 'PX',
        math.ceil((next_tat[i] - now) / 1000) + 1)
    end
  end
end
-- The requests window to report: a refusing one, else the one with less left.
local req = nil
for i = 1, 2 do
  local w = win[i]
  if w then
    if req == nil then req = w
    elseif allowed == 0 then
      if w[4] == 0 and req[4] == 1 then req = w end
    elseif w[2] < req[2] then req = w end
  end
end
local out = {allowed, 0, 0, 0, 0, 0, 0, 0, 0, math.ceil(retry)}
if req then
  out[2], out[3], out[4], out[5] = 1, req[1], req[2], math.ceil(req[3])
end
if win[3] then
  local w = win[3]
  out[6], out[7], out[8], out[9] = 1, w[1], w[2], math.ceil(w[3])
end
return out
";

/// Settles a token reservation: KEYS[1] the tokens state; ARGV: tokens per minute, reserved,
/// used. Debt pushes the state forward, at most a hundred years ahead (3,153,600,000,000,000
/// µs; a provider's absurd usage must not make a state Redis refuses to store, which would
/// count as Redis failing); what was not used is given back (never into the past).
const RECONCILE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local per = 60000000 / limit
local reserved = math.min(tonumber(ARGV[2]), limit)
local used = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if used >= reserved then
  tat = math.min(math.max(tat, now) + (used - reserved) * per, now + 3153600000000000)
else
  tat = math.max(tat - (reserved - used) * per, now)
end
if tat > now then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
    string.format('%.0f', math.ceil((tat - now) / 1000) + 1))
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Per-key rate limits shared through Redis; see the [module docs](super).
///
/// When Redis is lost and rate limits fail open, decisions come from an in-memory GCRA of the
/// same shape (per instance, so a fleet of `n` lets through up to `n` times the limit).
pub struct RedisRateLimits {
    state: RedisState,
    local: Arc<MemoryRateLimits>,
    acquire: Script,
    reconcile: Script,
}

impl fmt::Debug for RedisRateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimits")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn window(present: i64, limit: i64, remaining: i64, reset_us: i64) -> Option<Window> {
    (present == 1).then(|| Window {
        limit: limit.clamp(0, i64::from(u32::MAX)) as u32,
        remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
        reset: Duration::from_micros(reset_us.max(0) as u64),
    })
}

impl RedisRateLimits {
    pub(super) fn new(state: RedisState) -> Self {
        RedisRateLimits {
            state,
            local: Arc::new(MemoryRateLimits::new()),
            acquire: Script::new(ACQUIRE),
            reconcile: Script::new(RECONCILE),
        }
    }

    /// The state keys of key `id`: one hash tag per key, so a cluster keeps them together.
    fn keys(&self, id: &str) -> [String; 3] {
        ["m", "d", "t"].map(|w| self.state.key(format_args!("rl:{{{id}}}:{w}")))
    }
}

impl RateLimitStore for RedisRateLimits {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a RateLimits,
        tokens: u32,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move {
            match self.state.resting(Concern::RateLimits) {
                Some(true) => return self.local.acquire(key, limits, tokens).await,
                Some(false) => {
                    return Err(self
                        .state
                        .unavailable(Concern::RateLimits, &"it failed moments ago"))
                }
                None => {}
            }
            let mut inv = self.acquire.prepare_invoke();
            for k in self.keys(key) {
                inv.key(k);
            }
            inv.arg(limits.requests_per_minute.unwrap_or(0))
                .arg(limits.requests_per_day.unwrap_or(0))
                .arg(limits.tokens_per_minute.unwrap_or(0))
                .arg(tokens);
            match inv.invoke_async::<Vec<i64>>(&mut self.state.conn()).await {
                Ok(v) if v.len() == 10 => {
                    self.state.fine(Concern::RateLimits);
                    Ok(Decision {
                        allowed: v[0] == 1,
                        requests: window(v[1], v[2], v[3], v[4]),
                        tokens: window(v[5], v[6], v[7], v[8]),
                        retry_after: (v[0] != 1).then(|| Duration::from_micros(v[9].max(0) as u64)),
                    })
                }
                Ok(v) => Err(StoreError::Unavailable(format!(
                    "the rate-limit script answered {} values, not 10",
                    v.len()
                ))),
                Err(e) => {
                    if self.state.lost(Concern::RateLimits, &e) {
                        self.local.acquire(key, limits, tokens).await
                    } else {
                        Err(self.state.unavailable(Concern::RateLimits, &e))
                    }
                }
            }
        })
    }

    fn reconcile(&self, key: &str, limits: &RateLimits, reserved: u32, used: u64) {
        let Some(per_minute) = limits.tokens_per_minute else {
            return;
        };
        if u64::from(reserved) == used {
            return;
        }
        match self.state.resting(Concern::RateLimits) {
            Some(true) => return self.local.reconcile(key, limits, reserved, used),
            // Nowhere to settle it: the reservation stands.
            Some(false) => return,
            None => {}
        }
        // In the background: this runs where a response body ends.
        let state = self.state.clone();
        let script = self.reconcile.clone();
        let [_, _, tokens_key] = self.keys(key);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (local, key, limits) = (self.local.clone(), key.to_owned(), *limits);
        handle.spawn(async move {
            let mut inv = script.key(tokens_key);
            inv.arg(per_minute).arg(reserved).arg(used);
            if let Err(e) = inv.invoke_async::<i64>(&mut state.conn()).await {
                if state.lost(Concern::RateLimits, &e) {
                    local.reconcile(&key, &limits, reserved, used);
                }
            }
        });
    }
}
