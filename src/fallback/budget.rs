//! The retry budget: retries may be a share of the recent requests, plus a floor per second.
//!
//! The same rule as tower's `TpsBudget` (`tower::retry::budget`), which this replaces on the
//! hot path: every request deposits, every retry withdraws, and the balance is what the last
//! `ttl` deposited (in ten windows) plus a reserve of `min_per_sec` retries a second. Tower's
//! takes a mutex and reads the clock on every deposit; this one is two atomic operations on the
//! clock reading the walk already made. Rolling to a new window can lose the few deposits made
//! in the instant between the roll and the clearing of the window's slot: a budget is an
//! estimate, and tower's has the same kind of race between its writer and its window.

use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The windows summed: the one being written and the ten before it (tower's `TpsBudget`
/// also keeps ten windows besides the one it writes to).
const SLOTS: usize = 11;

pub(crate) struct RetryBudget {
    start: Instant,
    window_nanos: u64,
    /// The window being written: windows since `start`.
    current: AtomicU64,
    slots: [AtomicIsize; SLOTS],
    reserve: isize,
    deposit_amount: isize,
    withdraw_amount: isize,
}

impl RetryBudget {
    /// Over the last `ttl` (1 to 60 s), retries may be `retry_percent` of the requests (0.0 to
    /// 1000.0), plus `min_per_sec` a second.
    ///
    /// # Panics
    /// When a value is outside those ranges, as tower's `TpsBudget::new` does.
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        assert!(
            ttl >= Duration::from_secs(1),
            "a retry budget's ttl is at least 1 s"
        );
        assert!(
            ttl <= Duration::from_secs(60),
            "a retry budget's ttl is at most 60 s"
        );
        assert!(
            (0.0..=1000.0).contains(&retry_percent),
            "a retry budget's percent is between 0 and 1000"
        );
        assert!(min_per_sec < i32::MAX as u32, "min_per_sec is too large");
        // Whole numbers, as tower's: a deposit of 1 and a withdrawal of 1/percent, or 1000 and
        // 1000/percent above 100 %.
        let (deposit_amount, withdraw_amount) = if retry_percent == 0.0 {
            (0, 1)
        } else if retry_percent <= 1.0 {
            (1, (1.0 / retry_percent) as isize)
        } else {
            (1000, (1000.0 / retry_percent) as isize)
        };
        let reserve = (min_per_sec as isize)
            .saturating_mul(ttl.as_secs() as isize)
            .saturating_mul(withdraw_amount);
        RetryBudget {
            start: Instant::now(),
            window_nanos: (ttl.as_nanos() / 10) as u64,
            current: AtomicU64::new(0),
            slots: Default::default(),
            reserve,
            deposit_amount,
            withdraw_amount,
        }
    }

    /// The window `now` falls in, made the current one (the slots it passes are cleared).
    fn roll(&self, now: Instant) -> usize {
        let window = (now.saturating_duration_since(self.start).as_nanos() as u64)
            .checked_div(self.window_nanos)
            .unwrap_or(0);
        let mut current = self.current.load(Ordering::Acquire);
        while current < window {
            match self.current.compare_exchange_weak(
                current,
                window,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // The winner clears what the new windows held SLOTS windows ago.
                    let passed = (window - current).min(SLOTS as u64);
                    for w in window + 1 - passed..=window {
                        self.slots[(w % SLOTS as u64) as usize].store(0, Ordering::Release);
                    }
                    break;
                }
                Err(seen) => current = seen,
            }
        }
        // A caller whose clock reading is older than the current window writes there: its
        // own window may already have been cleared for reuse.
        (window.max(current) % SLOTS as u64) as usize
    }

    /// One request: adds to the balance.
    pub(crate) fn deposit(&self, now: Instant) {
        if self.deposit_amount == 0 {
            return;
        }
        let slot = self.roll(now);
        self.slots[slot].fetch_add(self.deposit_amount, Ordering::AcqRel);
    }

    /// One retry: true (and the balance is drawn on) when the balance allows it.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let slot = self.roll(now);
        if self.balance() >= self.withdraw_amount {
            self.slots[slot].fetch_sub(self.withdraw_amount, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// What the windows hold, plus the reserve.
    fn balance(&self) -> isize {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .fold(self.reserve, isize::saturating_add)
    }

    /// The balance now, in whole retries (for `Debug`).
    fn retries_left(&self) -> isize {
        self.balance() / self.withdraw_amount.max(1)
    }
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("retries_left", &self.retries_left())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_recent_requests_plus_the_reserve() {
        // 20 % of the requests, no reserve: 10 requests allow 2 retries.
        let b = RetryBudget::new(Duration::from_secs(10), 0, 0.2);
        let now = Instant::now();
        assert!(!b.withdraw(now), "nothing deposited");
        for _ in 0..10 {
            b.deposit(now);
        }
        assert!(b.withdraw(now));
        assert!(b.withdraw(now));
        assert!(!b.withdraw(now));
        // A reserve of 1 a second over 10 s: 10 retries with no request at all.
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.2);
        assert_eq!((0..20).filter(|_| b.withdraw(now)).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl() {
        let b = RetryBudget::new(Duration::from_secs(10), 0, 1.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            b.deposit(t0);
        }
        // Still counted 9.9 s later, in a later window.
        assert_eq!(b.retries_left(), 5);
        let later = t0 + Duration::from_millis(9_900);
        assert!(b.withdraw(later));
        assert_eq!(b.retries_left(), 4);
        // Gone once ten more windows have begun.
        assert!(!b.withdraw(t0 + Duration::from_secs(11)), "{b:?}");
        // A long quiet spell clears everything, and deposits count again.
        b.deposit(t0 + Duration::from_secs(3600));
        assert!(b.withdraw(t0 + Duration::from_secs(3600)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_clock_reading_writes_to_the_current_window() {
        let b = RetryBudget::new(Duration::from_secs(10), 0, 1.0);
        let t0 = Instant::now();
        b.deposit(t0 + Duration::from_secs(30));
        // A reading from before the last roll (another thread's): counted now, not lost in a
        // slot about to be cleared.
        b.deposit(t0);
        assert_eq!(b.retries_left(), 2);
        assert!(b.withdraw(t0 + Duration::from_secs(39)));
        assert!(b.withdraw(t0 + Duration::from_secs(39)));
        assert!(!b.withdraw(t0 + Duration::from_secs(41)));
    }

    #[test]
    fn deposits_from_many_threads_in_one_window_all_count() {
        // No runtime: tokio's clock is the system's, and every thread deposits at one instant.
        let b = std::sync::Arc::new(RetryBudget::new(Duration::from_secs(10), 0, 1.0));
        let now = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| b.deposit(now)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(b.retries_left(), 40_000);
    }

    #[tokio::test(start_paused = true)]
    async fn over_100_percent_and_zero_percent() {
        let now = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(1), 0, 2.0);
        b.deposit(now);
        assert_eq!((0..5).filter(|_| b.withdraw(now)).count(), 2);
        let b = RetryBudget::new(Duration::from_secs(1), 0, 0.0);
        b.deposit(now);
        assert!(!b.withdraw(now));
    }

    #[test]
    #[should_panic(expected = "ttl is at least 1 s")]
    fn a_ttl_under_a_second_panics_as_tower_does() {
        let _ = RetryBudget::new(Duration::from_millis(500), 0, 0.2);
    }
}
