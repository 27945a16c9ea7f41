//! Activity: totals per hour, kept as records are written, so a day of a busy key is a few
//! dozen rows to read, not every record.
//!
//! A [`Rollup`] holds one hour of one key's requests to one model at one provider: requests,
//! errors, prompt, completion and cached tokens, cost, and the time to first token and total
//! latency as [`Histogram`]s (buckets 25 % apart: a percentile read from them is within a
//! quarter of the true one). The stores keep a rollup per (hour, key, model, provider) and
//! hand them to [`summarize`], which adds them up per bucket (`1h`, `1d`) and group (model,
//! provider or key).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::query::StatusFilter;
use super::UsageRecord;

/// Buckets of a latency histogram.
const BUCKETS: usize = 64;

/// How much wider each bucket is than the one before.
const GROWTH: f64 = 1.25;

/// Counts of latencies in milliseconds, in buckets 25 % apart (bucket 0: under 1 ms; the last
/// one holds everything from about 20 minutes up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram(Vec<u32>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(vec![0; BUCKETS])
    }
}

impl Histogram {
    /// The bucket of a latency.
    pub fn bucket(ms: u64) -> usize {
        if ms == 0 {
            return 0;
        }
        let i = 1 + ((ms as f64).ln() / GROWTH.ln()).floor() as usize;
        i.min(BUCKETS - 1)
    }

    /// The upper edge of bucket `i`, in milliseconds.
    fn edge(i: usize) -> u64 {
        GROWTH.powi(i as i32).round() as u64
    }

    /// Counts one latency.
    pub fn record(&mut self, ms: u64) {
        self.0.resize(BUCKETS, 0);
        let b = Self::bucket(ms);
        self.0[b] = self.0[b].saturating_add(1);
    }

    /// Adds `n` to bucket `i` (a store's own form of the histogram); past the last bucket,
    /// to the last.
    pub fn add_at(&mut self, i: usize, n: u32) {
        self.0.resize(BUCKETS, 0);
        let i = i.min(BUCKETS - 1);
        self.0[i] = self.0[i].saturating_add(n);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        self.0.resize(BUCKETS, 0);
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a = a.saturating_add(*b);
        }
    }

    /// The `p`-th percentile (0–100), in milliseconds; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let total: u64 = self.0.iter().map(|c| u64::from(*c)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(Self::edge(i));
            }
        }
        None
    }
}

/// The totals of some requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Requests.
    pub requests: u64,
    /// Of them, answered with an error.
    pub errors: u64,
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cached_tokens: u64,
    /// USD.
    pub cost: f64,
    /// Time to first token.
    pub ttft: Histogram,
    /// From arrival to the end of the answer.
    pub latency: Histogram,
}

impl Rollup {
    /// Counts one record.
    pub fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        if StatusFilter::of(r) == StatusFilter::Error {
            self.errors += 1;
        }
        self.prompt_tokens = self.prompt_tokens.saturating_add(r.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(r.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(r.cached_tokens);
        self.cost += r.cost.filter(|c| c.is_finite()).unwrap_or(0.0);
        if let Some(t) = r.time_to_first_token_ms {
            self.ttft.record(t);
        }
        self.latency.record(r.latency_ms);
    }

    /// Adds another rollup's totals.
    pub fn merge(&mut self, o: &Rollup) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.cost += o.cost;
        self.ttft.merge(&o.ttft);
        self.latency.merge(&o.latency);
    }
}

/// Where a record's rollup is kept: its hour, key, model and provider.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    /// The hour's start, Unix seconds.
    pub hour: i64,
    /// The key's id (empty without one).
    pub key: String,
    /// The public model.
    pub model: String,
    /// The provider that served (empty when none did).
    pub provider: String,
}

impl Slot {
    /// The slot of `r`.
    pub fn of(r: &UsageRecord) -> Self {
        Slot {
            hour: r.created_at.div_euclid(3600) * 3600,
            key: r.key_id.clone().unwrap_or_default(),
            model: r.model.clone(),
            provider: r.provider.clone().unwrap_or_default(),
        }
    }

    /// The slot as a store key: `<hour, ten digits>\0<key>\0<model>\0<provider>`, in order of
    /// time.
    pub fn encode(&self) -> String {
        format!(
            "{:010}\0{}\0{}\0{}",
            self.hour.max(0),
            self.key,
            self.model,
            self.provider
        )
    }

    /// The slot a store key names.
    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(4, '\0');
        let hour = parts.next()?.parse().ok()?;
        Some(Slot {
            hour,
            key: parts.next()?.to_owned(),
            model: parts.next()?.to_owned(),
            provider: parts.next()?.to_owned(),
        })
    }

    /// The first store key of hour `hour`.
    pub fn hour_start(hour: i64) -> String {
        format!("{:010}", hour.max(0))
    }
}

/// The hourly rollups a store reads: each slot's totals.
pub type HourlyRollups = Vec<(Slot, Rollup)>;

/// The rollups of every slot of `records`.
pub fn rollups<'a>(records: impl IntoIterator<Item = &'a UsageRecord>) -> BTreeMap<Slot, Rollup> {
    let mut out: BTreeMap<Slot, Rollup> = BTreeMap::new();
    for r in records {
        out.entry(Slot::of(r)).or_default().add(r);
    }
    out
}

/// The width of a bucket of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// An hour.
    Hour,
    /// A day (UTC).
    Day,
}

impl Bucket {
    /// Its length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Bucket::Hour => 3600,
            Bucket::Day => 86_400,
        }
    }
}

/// What the answer is split by, besides time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The public model.
    Model,
    /// The provider that served.
    Provider,
    /// The key.
    Key,
}

/// What an activity query asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityQuery {
    /// Only this key's requests.
    pub key: Option<String>,
    /// From this time (Unix seconds, rounded down to its hour).
    pub since: i64,
    /// Up to this time (Unix seconds, exclusive).
    pub until: i64,
    /// The buckets' width.
    pub bucket: Bucket,
    /// The split, if any.
    pub group_by: Option<GroupBy>,
}

/// The totals of one bucket (and group).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRow {
    /// The bucket's start, Unix seconds.
    pub start: i64,
    /// The group's value (`None` without a split).
    pub group: Option<String>,
    /// The totals.
    pub totals: Rollup,
}

/// Adds up the hourly rollups of `slots` (the stores read those of the query's hours) into
/// the query's buckets and groups, in order of time, then group.
pub fn summarize(
    q: &ActivityQuery,
    slots: impl IntoIterator<Item = (Slot, Rollup)>,
) -> Vec<ActivityRow> {
    let mut out: BTreeMap<(i64, Option<String>), Rollup> = BTreeMap::new();
    for (slot, rollup) in slots {
        if q.key.as_ref().is_some_and(|k| *k != slot.key) {
            continue;
        }
        let start = slot.hour.div_euclid(q.bucket.seconds()) * q.bucket.seconds();
        let group = q.group_by.map(|g| match g {
            GroupBy::Model => slot.model.clone(),
            GroupBy::Provider => slot.provider.clone(),
            GroupBy::Key => slot.key.clone(),
        });
        out.entry((start, group)).or_default().merge(&rollup);
    }
    out.into_iter()
        .map(|((start, group), totals)| ActivityRow {
            start,
            group,
            totals,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: i64, key: &str, model: &str, ttft: u64, error: bool) -> UsageRecord {
        let mut r: UsageRecord = serde_json::from_value(serde_json::json!({
            "id": format!("gen-{at:010}-x"), "created_at": at, "key_id": key,
            "requested_model": model, "model": model, "provider": "p", "upstream_model": "u",
            "prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 2,
            "reasoning_tokens": 0, "cost": 0.5, "estimated": false, "streamed": false,
            "status": 200, "error": null, "finish_reason": "stop", "cancelled": false,
            "latency_ms": ttft * 2, "time_to_first_token_ms": ttft, "attempts": [],
            "referer": null, "title": null, "user": null
        }))
        .unwrap();
        if error {
            r.status = Some(502);
            r.error = Some("boom".into());
        }
        r
    }

    #[test]
    fn percentiles_are_within_a_quarter() {
        let mut h = Histogram::default();
        for ms in 1..=1000 {
            h.record(ms);
        }
        let p50 = h.percentile(50.0).unwrap() as f64;
        let p95 = h.percentile(95.0).unwrap() as f64;
        assert!((500.0..=625.0).contains(&p50), "{p50}");
        assert!((950.0..=1188.0).contains(&p95), "{p95}");
        assert_eq!(Histogram::default().percentile(50.0), None);
    }

    #[test]
    fn hours_add_up_into_days_and_groups() {
        let records = [
            record(3_600, "a", "m1", 100, false),
            record(3_700, "a", "m1", 300, true),
            record(7_200, "a", "m2", 200, false),
            record(90_000, "b", "m1", 50, false),
        ];
        let slots = rollups(&records);
        assert_eq!(slots.len(), 3);
        for slot in slots.keys() {
            assert_eq!(Slot::decode(&slot.encode()).as_ref(), Some(slot));
        }
        let q = |bucket, group_by, key: Option<&str>| ActivityQuery {
            key: key.map(str::to_owned),
            since: 0,
            until: 200_000,
            bucket,
            group_by,
        };
        let hourly = summarize(&q(Bucket::Hour, None, Some("a")), slots.clone());
        assert_eq!(hourly.len(), 2);
        assert_eq!(hourly[0].start, 3_600);
        assert_eq!(hourly[0].totals.requests, 2);
        assert_eq!(hourly[0].totals.errors, 1);
        assert_eq!(hourly[0].totals.prompt_tokens, 20);
        let daily = summarize(&q(Bucket::Day, Some(GroupBy::Model), None), slots.clone());
        let shape: Vec<(i64, Option<&str>, u64)> = daily
            .iter()
            .map(|r| (r.start, r.group.as_deref(), r.totals.requests))
            .collect();
        assert_eq!(
            shape,
            [
                (0, Some("m1"), 2),
                (0, Some("m2"), 1),
                (86_400, Some("m1"), 1)
            ]
        );
        let by_key = summarize(&q(Bucket::Day, Some(GroupBy::Key), None), slots);
        assert_eq!(by_key[0].group.as_deref(), Some("a"));
        assert!((by_key[0].totals.cost - 1.5).abs() < 1e-12);
    }
}
