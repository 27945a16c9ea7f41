//! [`FailedAttempts`]: a client address that keeps presenting bad keys is held back.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// The address of the client a request came from (the connection's peer, never a header a
/// client can write), inserted by the server into the request extensions. Without it, failed
/// attempts are not counted per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Counts failed key attempts (`401`s) per client address: past `max` within a window, the
/// address is refused (`429` with `Retry-After`) until the window ends, whatever key it sends,
/// and its keys are not even looked up. An IPv6 client counts by its /64 network (one host
/// commonly holds a whole one). At most [`MAX_TRACKED_ADDRESSES`] addresses are tracked: past that,
/// addresses whose window is over are forgotten, and a new one is not counted until there is
/// room. Shared by every clone of the layers it is given to.
#[derive(Debug)]
pub struct FailedAttempts {
    max: u32,
    window: Duration,
    by_addr: DashMap<AddrKey, Window, foldhash::fast::RandomState>,
    tracked: AtomicUsize,
}

/// The most addresses tracked at once.
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddrKey(u128);

impl From<IpAddr> for AddrKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddrKey(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(u128::from(v4.to_ipv6_mapped())),
                None => AddrKey(u128::from(v6) & !u128::from(u64::MAX)),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl FailedAttempts {
    /// At most `max` failed attempts per address within each `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        FailedAttempts {
            max: max.max(1),
            window,
            by_addr: DashMap::default(),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Whether `addr` is held back now, and for how long.
    pub fn held_back(&self, addr: IpAddr) -> Option<Duration> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let w = *self.by_addr.get(&AddrKey::from(addr))?;
        let ends = w.start + self.window;
        let now = Instant::now();
        (w.failures >= self.max && now < ends).then(|| ends - now)
    }

    /// Counts a failed attempt from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        let key = AddrKey::from(addr);
        let now = Instant::now();
        if !self.by_addr.contains_key(&key) && !self.make_room(now) {
            return;
        }
        let mut entry = self.by_addr.entry(key).or_insert_with(|| {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            Window {
                start: now,
                failures: 0,
            }
        });
        if now >= entry.start + self.window {
            *entry = Window {
                start: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Room for one more address: forgets those whose window is over when full. Whether
    /// there is room.
    fn make_room(&self, now: Instant) -> bool {
        if self.tracked.load(Ordering::Relaxed) < MAX_TRACKED_ADDRESSES {
            return true;
        }
        self.by_addr.retain(|_, w| now < w.start + self.window);
        self.tracked.store(self.by_addr.len(), Ordering::Relaxed);
        self.by_addr.len() < MAX_TRACKED_ADDRESSES
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_address_is_held_back_after_its_failures_until_its_window_ends() {
        let f = FailedAttempts::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(f.held_back(a), None);
            f.failed(a);
        }
        let wait = f.held_back(a).unwrap();
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        assert_eq!(f.held_back(b), None, "another address is not affected");
        // The same address as IPv4-mapped IPv6 is the same client.
        assert!(f.held_back("::ffff:192.0.2.7".parse().unwrap()).is_some());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(f.held_back(a), None);
        // An IPv6 client counts by its /64.
        for i in 0..3 {
            f.failed(format!("2001:db8:1:2::{i}").parse().unwrap());
        }
        assert!(f.held_back("2001:db8:1:2::ffff".parse().unwrap()).is_some());
        assert_eq!(f.held_back("2001:db8:1:3::1".parse().unwrap()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_expired_addresses_make_room() {
        let f = FailedAttempts::new(1, Duration::from_secs(60));
        for i in 0..MAX_TRACKED_ADDRESSES as u32 + 10 {
            f.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(
            f.tracked(),
            MAX_TRACKED_ADDRESSES,
            "new addresses wait for room"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        f.failed("198.51.100.1".parse().unwrap());
        assert_eq!(f.tracked(), 1, "the expired ones were forgotten");
    }
}
