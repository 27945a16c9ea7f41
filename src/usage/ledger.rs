//! Spend per key and per credit window (UTC days, weeks from Monday, calendar months).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::auth::{LimitReset, StoreError};
use crate::future::BoxFuture;

const DAY: i64 = 86_400;

/// The start (Unix seconds, UTC) of the `reset` window holding `at`.
pub fn window_start(reset: LimitReset, at: i64) -> i64 {
    let day = at.div_euclid(DAY);
    match reset {
        LimitReset::Daily => day * DAY,
        // 1970-01-01 was a Thursday: Monday is 3 days before it.
        LimitReset::Weekly => (day - (day + 3).rem_euclid(7)) * DAY,
        LimitReset::Monthly => {
            let date = time::OffsetDateTime::from_unix_timestamp(at)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                .date();
            date.replace_day(1)
                .unwrap_or(date)
                .midnight()
                .assume_utc()
                .unix_timestamp()
        }
    }
}

/// Spend in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The window's start, Unix seconds (UTC).
    pub start: i64,
    /// USD spent in it.
    pub usd: f64,
}

impl Window {
    fn add(&mut self, start: i64, usd: f64) {
        if start > self.start {
            *self = Window { start, usd: 0.0 };
        }
        if start == self.start {
            self.usd += usd;
        }
    }

    fn at(&self, start: i64) -> f64 {
        if self.start == start {
            self.usd
        } else {
            0.0
        }
    }
}

/// What one key has spent: in all, today, this week and this month (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct KeySpend {
    /// USD spent since the key was made.
    pub total: f64,
    /// The current (or last) day.
    pub daily: Window,
    /// The current (or last) week, from Monday.
    pub weekly: Window,
    /// The current (or last) calendar month.
    pub monthly: Window,
}

impl KeySpend {
    /// Adds `usd` spent at `at` (Unix seconds). Spend dated in a window older than the one
    /// held counts in the total only.
    pub fn add(&mut self, usd: f64, at: i64) {
        self.total += usd;
        self.daily.add(window_start(LimitReset::Daily, at), usd);
        self.weekly.add(window_start(LimitReset::Weekly, at), usd);
        self.monthly.add(window_start(LimitReset::Monthly, at), usd);
    }

    /// Spend in the window of `reset` that holds `now` (`None`: all time).
    pub fn spent(&self, reset: Option<LimitReset>, now: i64) -> f64 {
        match reset {
            None => self.total,
            Some(r @ LimitReset::Daily) => self.daily.at(window_start(r, now)),
            Some(r @ LimitReset::Weekly) => self.weekly.at(window_start(r, now)),
            Some(r @ LimitReset::Monthly) => self.monthly.at(window_start(r, now)),
        }
    }
}

/// Where the credit check reads each key's spend, and where the cost of each record is added.
///
/// The in-process [`SpendLedger`] answers at once; a shared store (Redis, behind the `redis`
/// feature) answers from a short-lived cache and fetches when it has nothing fresh.
pub trait SpendStore: Send + Sync + 'static {
    /// Adds `usd` spent by `key` at `at` (Unix seconds), as a record is made. Must not block:
    /// it runs where a response ends.
    fn add(&self, key: &str, usd: f64, at: i64);

    /// `key`'s spend, when it is at hand without waiting (`None`: ask [`fetch`](Self::fetch)).
    fn cached(&self, key: &str) -> Option<KeySpend>;

    /// `key`'s spend, fetched if need be.
    fn fetch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<KeySpend, StoreError>>;
}

/// Every key's spend, in memory: what the credit check reads. Filled from the state store at
/// start-up and kept current as records are made (the store is updated by the sink writer
/// with the same arithmetic, so both agree once the queue is drained).
#[derive(Debug, Default)]
pub struct SpendLedger {
    keys: Mutex<crate::FastMap<String, KeySpend>>,
}

impl SpendLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        SpendLedger::default()
    }

    /// A ledger holding `spend` (as loaded from a store).
    pub fn with(spend: impl IntoIterator<Item = (String, KeySpend)>) -> Self {
        SpendLedger {
            keys: Mutex::new(spend.into_iter().collect()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::FastMap<String, KeySpend>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `usd` to `key`'s spend at `at` (Unix seconds).
    pub fn add(&self, key: &str, usd: f64, at: i64) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let mut keys = self.lock();
        match keys.get_mut(key) {
            Some(s) => s.add(usd, at),
            None => {
                let mut s = KeySpend::default();
                s.add(usd, at);
                keys.insert(key.to_owned(), s);
            }
        }
    }

    /// `key`'s spend in the window of `reset` holding `now`.
    pub fn spent(&self, key: &str, reset: Option<LimitReset>, now: i64) -> f64 {
        self.lock().get(key).map_or(0.0, |s| s.spent(reset, now))
    }

    /// `key`'s whole spend record.
    pub fn get(&self, key: &str) -> KeySpend {
        self.lock().get(key).copied().unwrap_or_default()
    }
}

impl SpendStore for SpendLedger {
    fn add(&self, key: &str, usd: f64, at: i64) {
        SpendLedger::add(self, key, usd, at);
    }

    fn cached(&self, key: &str) -> Option<KeySpend> {
        Some(self.get(key))
    }

    fn fetch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<KeySpend, StoreError>> {
        Box::pin(std::future::ready(Ok(self.get(key))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn windows_are_utc_days_weeks_from_monday_and_months() {
        // 2026-12-02 is a Wednesday.
        let t = at("2026-12-02T15:04:05Z");
        assert_eq!(
            window_start(LimitReset::Daily, t),
            at("2026-12-02T00:00:00Z")
        );
        assert_eq!(
            window_start(LimitReset::Weekly, t),
            at("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            window_start(LimitReset::Monthly, t),
            at("2026-12-01T00:00:00Z")
        );
        // A Monday is its own week's start; a Sunday belongs to the week before.
        let monday = at("2026-11-30T00:00:00Z");
        assert_eq!(window_start(LimitReset::Weekly, monday), monday);
        assert_eq!(
            window_start(LimitReset::Weekly, at("2026-11-29T23:59:59Z")),
            at("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            window_start(LimitReset::Monthly, at("2024-02-29T23:59:59Z")),
            at("2024-02-01T00:00:00Z")
        );
        // Before the epoch too (floor, not truncation).
        assert_eq!(window_start(LimitReset::Daily, -1), -DAY);
    }

    #[test]
    fn spend_starts_over_with_each_window() {
        let ledger = SpendLedger::new();
        let mon = at("2026-11-30T10:00:00Z");
        ledger.add("k", 1.0, mon);
        ledger.add("k", 0.5, mon + 3_600);
        assert_eq!(ledger.spent("k", Some(LimitReset::Daily), mon + 7_200), 1.5);
        assert_eq!(
            ledger.spent("k", Some(LimitReset::Monthly), mon + 7_200),
            1.5
        );
        // Next day, Tuesday 1 December: daily and monthly start over, weekly keeps counting.
        let tue = mon + DAY;
        assert_eq!(at("2026-12-01T00:00:00Z"), tue - 10 * 3_600);
        assert_eq!(ledger.spent("k", Some(LimitReset::Daily), tue), 0.0);
        assert_eq!(ledger.spent("k", Some(LimitReset::Monthly), tue), 0.0);
        ledger.add("k", 2.0, tue);
        assert_eq!(ledger.spent("k", Some(LimitReset::Daily), tue), 2.0);
        assert_eq!(ledger.spent("k", Some(LimitReset::Weekly), tue), 3.5);
        assert_eq!(ledger.spent("k", Some(LimitReset::Monthly), tue), 2.0);
        // Next week: weekly starts over; the total never does.
        let next_mon = mon + 7 * DAY;
        assert_eq!(ledger.spent("k", Some(LimitReset::Weekly), next_mon), 0.0);
        assert_eq!(ledger.spent("k", None, next_mon), 3.5);
        // A late record from an old day counts in the total only.
        ledger.add("k", 1.0, mon);
        assert_eq!(ledger.spent("k", Some(LimitReset::Daily), tue), 2.0);
        assert_eq!(ledger.spent("k", None, tue), 4.5);
        // Nothing for an unknown key, nothing added for a zero or NaN cost.
        ledger.add("z", 0.0, mon);
        ledger.add("z", f64::NAN, mon);
        assert_eq!(ledger.get("z"), KeySpend::default());
    }
}
