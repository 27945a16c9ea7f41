//! Spend and generation records on Redis.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;

use super::{Concern, RedisState};
use crate::auth::{LimitReset, StoreError};
use crate::future::BoxFuture;
use crate::state::{decode_record, encode_record};
use crate::usage::activity::{Histogram, HourlyRollups, Rollup, Slot};
use crate::usage::query::{
    cursor_after, GenerationPage, GenerationQuery, StatusFilter, SCAN_BUDGET,
};
use crate::usage::{window_start, KeySpend, SinkError, SpendStore, UsageRecord, UsageSink, Window};

/// Stores a batch of records and adds their cost to their keys' spend, each record once.
///
/// Each new record's id also goes in two sorted sets of equal scores, read in the ids' order
/// (their age) for listings: `gens` (every record) and `gens:{<key id>}` (the key's). With a
/// retention, the ids older than it leave both as their records expire. Its hour's totals go
/// in the hash `act:<hour>`, a field per key, model, provider and measure
/// (`<key>\0<model>\0<provider>\0<measure>`; see [`rollup_fields`]).
///
/// ARGV: prefix, retention in seconds (0: for ever), the oldest id kept (``: all), then per
/// record: id, key id (or ``),
/// cost in USD (or ``), the day, week and month window starts, the stored record (the state
/// store's compact form: a format byte, then postcard), its hour, its rollup's field prefix,
/// and its integer increments (`<measure> <n>` pairs, space separated). The cost
/// of the records that were new is summed per key and window, then added (one set of
/// updates per key, not per record). Returns how many records were new.
const WRITE: &str = r"
local p = ARGV[1]
local ttl = tonumber(ARGV[2])
local oldest = ARGV[3]
local stored = 0
local sums, order = {}, {}
local trimmed = {}
local function listed(set, id)
  redis.call('ZADD', set, 0, id)
  if oldest ~= '' and not trimmed[set] then
    trimmed[set] = true
    redis.call('ZREMRANGEBYLEX', set, '-', '(' .. oldest)
  end
end
for i = 4, #ARGV, 10 do
  local ok
  if ttl > 0 then
    ok = redis.call('SET', p .. 'gen:' .. ARGV[i], ARGV[i + 6], 'NX', 'EX', ttl)
  else
    ok = redis.call('SET', p .. 'gen:' .. ARGV[i], ARGV[i + 6], 'NX')
  end
  if ok then
    stored = stored + 1
    listed(p .. 'gens', ARGV[i])
    if ARGV[i + 1] ~= '' then
      listed(p .. 'gens:{' .. ARGV[i + 1] .. '}', ARGV[i])
    end
    local act = p .. 'act:' .. ARGV[i + 7]
    local slot = ARGV[i + 8]
    for measure, n in string.gmatch(ARGV[i + 9], '(%S+) (%S+)') do
      redis.call('HINCRBY', act, slot .. measure, n)
    end
    if ARGV[i + 2] ~= '' then
      redis.call('HINCRBYFLOAT', act, slot .. '$', ARGV[i + 2])
    end
    if ttl > 0 then
      redis.call('EXPIRE', act, ttl + 3600)
    end
    if ARGV[i + 1] ~= '' and ARGV[i + 2] ~= '' then
      local g = ARGV[i + 1] .. '|' .. ARGV[i + 3] .. '|' .. ARGV[i + 4] .. '|' .. ARGV[i + 5]
      local s = sums[g]
      if s then
        s[5] = s[5] + tonumber(ARGV[i + 2])
      else
        sums[g] = {ARGV[i + 1], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 2])}
        order[#order + 1] = g
      end
    end
  end
end
local function window(h, f, start, usd)
  local cur = redis.call('HGET', h, f .. '_start')
  if (not cur) or tonumber(start) > tonumber(cur) then
    redis.call('HSET', h, f .. '_start', start, f, usd)
  elseif tonumber(start) == tonumber(cur) then
    redis.call('HINCRBYFLOAT', h, f, usd)
  end
end
for _, g in ipairs(order) do
  local s = sums[g]
  local h = p .. 'spend:{' .. s[1] .. '}'
  local usd = string.format('%.17g', s[5])
  redis.call('HINCRBYFLOAT', h, 'total', usd)
  window(h, 'd', s[2], usd)
  window(h, 'w', s[3], usd)
  window(h, 'm', s[4], usd)
end
return stored
";

/// The spend hash's fields, in [`KeySpend`] order.
const FIELDS: [&str; 7] = ["total", "d_start", "d", "w_start", "w", "m_start", "m"];

/// Cached spend entries kept before stale ones are swept.
const MAX_CACHED: usize = 65_536;

/// Per-key spend and generation records shared through Redis; see the [module docs](super).
///
/// Both a [`SpendStore`] (what the credit check reads) and the [`UsageSink`] the usage writer
/// fills: a record's cost is *pending* from the moment it is made until its batch is in
/// Redis, and counts in this instance's reads meanwhile, so a key cannot outspend its limit
/// by racing the writer. Give the same instance to the [`Recorder`](crate::usage::Recorder)
/// as its spend store *and* as a sink: the sink's writes are what retire pending costs.
pub struct RedisUsage {
    state: RedisState,
    retention: Option<Duration>,
    write: Script,
    spend: Mutex<Spend>,
}

#[derive(Default)]
struct Spend {
    /// What Redis said, and when.
    remote: HashMap<String, (KeySpend, Instant)>,
    /// Costs made here and not yet in Redis: (USD, Unix seconds).
    pending: HashMap<String, Vec<(f64, i64)>>,
    /// Bumped by every write, so a read that started before it is not cached after it.
    epoch: u64,
}

impl Spend {
    /// `remote` plus what is pending for `key`.
    fn with_pending(&self, key: &str, remote: KeySpend) -> KeySpend {
        let mut s = remote;
        for &(usd, at) in self.pending.get(key).map_or(&[][..], Vec::as_slice) {
            s.add(usd, at);
        }
        s
    }
}

impl fmt::Debug for RedisUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUsage")
            .field("state", &self.state)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

fn charged(usd: f64) -> bool {
    usd.is_finite() && usd > 0.0
}

impl RedisUsage {
    pub(super) fn new(state: RedisState, retention: Option<Duration>) -> Self {
        RedisUsage {
            state,
            retention,
            write: Script::new(WRITE),
            spend: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spend> {
        self.spend.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spend_key(&self, key: &str) -> String {
        self.state.key(format_args!("spend:{{{key}}}"))
    }

    async fn read(&self, key: &str) -> Result<KeySpend, redis::RedisError> {
        let v: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.spend_key(key))
            .arg(&FIELDS[..])
            .query_async(&mut self.state.conn())
            .await?;
        let num = |i: usize| {
            v.get(i)
                .cloned()
                .flatten()
                .and_then(|s| s.parse::<f64>().ok())
        };
        let window = |i: usize| Window {
            start: num(i).unwrap_or(0.0) as i64,
            usd: num(i + 1).unwrap_or(0.0),
        };
        Ok(KeySpend {
            total: num(0).unwrap_or(0.0),
            daily: window(1),
            weekly: window(3),
            monthly: window(5),
        })
    }
}

impl SpendStore for RedisUsage {
    fn add(&self, key: &str, usd: f64, at: i64) {
        if charged(usd) {
            self.lock()
                .pending
                .entry(key.to_owned())
                .or_default()
                .push((usd, at));
        }
    }

    fn cached(&self, key: &str) -> Option<KeySpend> {
        let ttl = self.state.options().cache;
        let spend = self.lock();
        let (remote, at) = spend.remote.get(key)?;
        (at.elapsed() < ttl).then(|| spend.with_pending(key, *remote))
    }

    fn fetch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<KeySpend, StoreError>> {
        Box::pin(async move {
            let last_known = || {
                let spend = self.lock();
                let last = spend.remote.get(key).map(|r| r.0).unwrap_or_default();
                spend.with_pending(key, last)
            };
            match self.state.resting(Concern::Spend) {
                Some(true) => return Ok(last_known()),
                Some(false) => {
                    return Err(self
                        .state
                        .unavailable(Concern::Spend, &"it failed moments ago"))
                }
                None => {}
            }
            let epoch = self.lock().epoch;
            match self.read(key).await {
                Ok(remote) => {
                    self.state.fine(Concern::Spend);
                    let mut spend = self.lock();
                    if spend.epoch == epoch {
                        if spend.remote.len() >= MAX_CACHED {
                            let ttl = self.state.options().cache;
                            spend.remote.retain(|_, (_, at)| at.elapsed() < ttl);
                        }
                        spend
                            .remote
                            .insert(key.to_owned(), (remote, Instant::now()));
                    }
                    Ok(spend.with_pending(key, remote))
                }
                Err(e) => {
                    if self.state.lost(Concern::Spend, &e) {
                        Ok(last_known())
                    } else {
                        Err(self.state.unavailable(Concern::Spend, &e))
                    }
                }
            }
        })
    }
}

/// A record's part of its hour's totals: the hour, the field prefix of its slot
/// (`<key>\0<model>\0<provider>\0`), and its increments: `n` (requests), `e` (errors), `p`,
/// `c`, `k` (prompt, completion and cached tokens), `t<bucket>` and `l<bucket>` (the
/// histogram buckets of its time to first token and latency); the cost goes in `$`.
fn rollup_fields(r: &UsageRecord) -> (i64, String, String) {
    let slot = Slot::of(r);
    let prefix = format!("{}\0{}\0{}\0", slot.key, slot.model, slot.provider);
    let error = u8::from(StatusFilter::of(r) == StatusFilter::Error);
    let mut inc = format!(
        "n 1 e {error} p {} c {} k {} l{} 1",
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        Histogram::bucket(r.latency_ms)
    );
    if let Some(t) = r.time_to_first_token_ms {
        inc.push_str(&format!(" t{} 1", Histogram::bucket(t)));
    }
    (slot.hour, prefix, inc)
}

/// Reads the fields of hour `hour`'s hash back into its slots' rollups.
fn rollups_of(hour: i64, fields: HashMap<String, String>, out: &mut BTreeMap<Slot, Rollup>) {
    for (field, value) in fields {
        let Some((slot, measure)) = field.rsplit_once('\0') else {
            continue;
        };
        let Some(slot) = Slot::decode(&format!("{hour:010}\0{slot}")) else {
            continue;
        };
        let r = out.entry(slot).or_default();
        if measure == "$" {
            r.cost += value.parse::<f64>().unwrap_or(0.0);
            continue;
        }
        let n: u64 = value.parse().unwrap_or(0);
        match measure {
            "n" => r.requests += n,
            "e" => r.errors += n,
            "p" => r.prompt_tokens += n,
            "c" => r.completion_tokens += n,
            "k" => r.cached_tokens += n,
            _ => {
                let (hist, bucket) = match measure.split_at(1) {
                    ("t", b) => (&mut r.ttft, b),
                    ("l", b) => (&mut r.latency, b),
                    _ => continue,
                };
                if let Ok(b) = bucket.parse() {
                    hist.add_at(b, u32::try_from(n).unwrap_or(u32::MAX));
                }
            }
        }
    }
}

impl UsageSink for RedisUsage {
    fn name(&self) -> &str {
        "redis"
    }

    fn write(&self, batch: Arc<[UsageRecord]>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let mut inv = self.write.prepare_invoke();
            let oldest = self.retention.map_or(String::new(), |d| {
                let cutoff = crate::facts::unix_now().saturating_sub(d.as_secs());
                format!("gen-{cutoff:010}")
            });
            inv.arg(&self.state.options().prefix)
                .arg(self.retention.map_or(0, |d| d.as_secs().max(1)))
                .arg(oldest);
            for r in batch.iter() {
                let stored = encode_record(r).map_err(|e| SinkError(e.0))?;
                let cost = r.cost.filter(|c| charged(*c));
                inv.arg(&r.id)
                    .arg(r.key_id.as_deref().unwrap_or(""))
                    .arg(cost.map(|c| c.to_string()).unwrap_or_default())
                    .arg(window_start(LimitReset::Daily, r.created_at))
                    .arg(window_start(LimitReset::Weekly, r.created_at))
                    .arg(window_start(LimitReset::Monthly, r.created_at))
                    .arg(stored);
                let (hour, slot, increments) = rollup_fields(r);
                inv.arg(hour).arg(slot).arg(increments);
            }
            inv.invoke_async::<i64>(&mut self.state.conn())
                .await
                .map_err(|e| SinkError(format!("Redis did not take the batch: {e}")))?;
            // In Redis now: no longer pending, and cached reads of these keys are stale.
            let mut spend = self.lock();
            spend.epoch += 1;
            for r in batch.iter() {
                let (Some(key), Some(cost)) = (&r.key_id, r.cost.filter(|c| charged(*c))) else {
                    continue;
                };
                spend.remote.remove(key.as_str());
                if let Some(list) = spend.pending.get_mut(key.as_str()) {
                    if let Some(i) = list.iter().position(|&p| p == (cost, r.created_at)) {
                        list.swap_remove(i);
                    }
                    if list.is_empty() {
                        spend.pending.remove(key.as_str());
                    }
                }
            }
            Ok(())
        })
    }

    fn activity(
        &self,
        since: i64,
        until: i64,
    ) -> BoxFuture<'_, Result<Option<HourlyRollups>, SinkError>> {
        Box::pin(async move {
            let hours: Vec<i64> = (since.div_euclid(3600) * 3600..until)
                .step_by(3600)
                .collect();
            let mut out = BTreeMap::new();
            for chunk in hours.chunks(256) {
                let mut pipe = redis::pipe();
                for hour in chunk {
                    pipe.cmd("HGETALL")
                        .arg(self.state.key(format_args!("act:{hour}")));
                }
                let hashes: Vec<HashMap<String, String>> = pipe
                    .query_async(&mut self.state.conn())
                    .await
                    .map_err(|e| SinkError(format!("Redis did not answer: {e}")))?;
                for (hour, fields) in chunk.iter().zip(hashes) {
                    rollups_of(*hour, fields, &mut out);
                }
            }
            Ok(Some(out.into_iter().collect()))
        })
    }

    fn generations(
        &self,
        q: GenerationQuery,
    ) -> BoxFuture<'_, Result<Option<GenerationPage>, SinkError>> {
        Box::pin(async move {
            let failed = |e: redis::RedisError| SinkError(format!("Redis did not answer: {e}"));
            let set = match &q.key {
                Some(key) => self.state.key(format_args!("gens:{{{key}}}")),
                None => self.state.key(format_args!("gens")),
            };
            let (lower, mut upper) = q.id_range();
            let mut page = GenerationPage::default();
            let mut read = 0;
            loop {
                // The next ids below `upper`, newest first.
                let batch = (q.limit - page.records.len()).clamp(16, 256);
                let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                    .arg(&set)
                    .arg(format!("({upper}"))
                    .arg(format!("[{lower}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(batch)
                    .query_async(&mut self.state.conn())
                    .await
                    .map_err(failed)?;
                let Some(last) = ids.last().cloned() else {
                    return Ok(Some(page));
                };
                let keys: Vec<String> = ids
                    .iter()
                    .map(|id| self.state.key(format_args!("gen:{id}")))
                    .collect();
                let stored: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut self.state.conn())
                    .await
                    .map_err(failed)?;
                for (id, bytes) in ids.iter().zip(stored) {
                    read += 1;
                    // Expired since it was listed: not there any more.
                    if let Some(bytes) = bytes {
                        let r = decode_record(&bytes).map_err(|e| {
                            SinkError(format!("stored record `{id}` is unreadable: {e}"))
                        })?;
                        if q.matches(&r) {
                            page.records.push(r);
                        }
                    }
                    if page.records.len() == q.limit || read == SCAN_BUDGET {
                        page.next = Some(cursor_after(id));
                        return Ok(Some(page));
                    }
                }
                upper = last;
            }
        })
    }

    fn generation(&self, id: String) -> BoxFuture<'_, Result<Option<UsageRecord>, SinkError>> {
        Box::pin(async move {
            let key = self.state.key(format_args!("gen:{id}"));
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut self.state.conn())
                .await
                .map_err(|e| SinkError(format!("Redis did not answer: {e}")))?;
            stored
                .map(|b| decode_record(&b))
                .transpose()
                .map_err(|e| SinkError(format!("stored record `{id}` is unreadable: {e}")))
        })
    }
}
