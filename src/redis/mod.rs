//! Shared state on Redis (cargo feature `redis`): every proxy pointed at one Redis shares rate
//! limits, keys, spend and generation records, so a fleet behind a load balancer acts as one
//! gateway.
//!
//! [`RedisState::connect`] opens one multiplexed connection (redis-rs's `ConnectionManager`,
//! which reconnects by itself) and checks it answers: Redis unreachable at start is an error.
//! From it:
//! - [`RedisRateLimits`]: GCRA for requests per minute, per day and tokens per minute in one
//!   atomic Lua script per request, on Redis's clock (instances' clocks may differ); token
//!   reconciliation is sent in the background. Limiter state expires with its window.
//! - [`RedisKeyStore`]: keys made through the API in one hash with a version counter. Each
//!   instance serves lookups from its own snapshot and checks the version every `cache`
//!   (default 500 ms), so disabling a key takes effect everywhere within a second; a key it
//!   does not know makes it check at once, so a key made on another instance works at once.
//! - [`RedisUsage`]: generation records (kept `retention`) and per-key spend (all time, and
//!   the current UTC day, week and month), written by the usage writer in one Lua script per
//!   batch, idempotently (a record is stored and counted once however often its batch is
//!   retried). The credit check reads a key's spend from a cache younger than `cache`, plus
//!   this instance's records not yet written; older, it fetches (one round trip).
//!
//! Redis lost while running: per [`Concern`], fail closed (the default: a clear 503) or fail
//! open to this process's own state (rate limits: the in-memory GCRA; keys: the last
//! snapshot; spend: the last known spend plus this instance's own), with an error log line
//! (repeated every 10 s while it lasts) and the counter
//! `modelgate_redis_fail_open_total{concern}`; every failed call also counts in
//! `modelgate_redis_errors_total{concern}`. Never silently unlimited. Records are never
//! dropped: the usage writer retries a batch until Redis takes it (the queue is bounded, so
//! a long outage ends in 503s, not in lost records). Service resumes by itself when Redis is
//! back.
//!
//! Round trips per request: one for the rate limits (when the key has any), one more in the
//! background to settle a token limit; key lookups and spend reads come from memory (one
//! version check every `cache` per instance, one spend read per key every `cache`); records
//! and spend go in one script call per batch of up to 512.

mod keys;
mod limits;
mod usage;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use self::keys::RedisKeyStore;
pub use self::limits::RedisRateLimits;
pub use self::usage::RedisUsage;
use crate::state::StateError;

/// What shared state a Redis failure touches; each fails closed or open on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Concern {
    /// Per-key rate limits.
    RateLimits,
    /// Key lookups and the key management API.
    Keys,
    /// Credit limits (per-key spend).
    Spend,
}

impl Concern {
    /// The name used in configuration, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Concern::RateLimits => "rate_limits",
            Concern::Keys => "keys",
            Concern::Spend => "spend",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How to reach Redis and how to behave when it is lost. Its `Debug` shows the URL without
/// its password.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS (the server's
    /// certificate checked against the public web roots, or [`RedisOptions::tls_ca_pem`]).
    pub url: String,
    /// For `rediss://`: the certificate (PEM) of the authority that signed the server's, when
    /// it is a private one. `None`: the public web roots (webpki-roots).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// For `rediss://` servers that ask clients for a certificate (mutual TLS): this
    /// client's.
    pub tls_client: Option<ClientIdentity>,
    /// Prefix of every key the gateway writes (default `modelgate:`).
    pub prefix: String,
    /// Connection and reply timeout (default 1 s).
    pub timeout: Duration,
    /// How long key snapshots and spend reads are trusted (default 500 ms).
    pub cache: Duration,
    /// The concerns that fail open (default none: all fail closed).
    pub fail_open: Vec<Concern>,
}

/// A client's certificate chain and private key, both PEM. Its `Debug` shows neither.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact(&self.url))
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(Vec::len))
            .field("tls_client", &self.tls_client)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cache", &self.cache)
            .field("fail_open", &self.fail_open)
            .finish()
    }
}

impl RedisOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            tls_ca_pem: None,
            tls_client: None,
            prefix: "modelgate:".into(),
            timeout: Duration::from_secs(1),
            cache: Duration::from_millis(500),
            fail_open: Vec::new(),
        }
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    crate::error::redact_url(url)
}

/// One concern's health, for the log line and the recovery message.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    /// When the last call failed ([`RedisState::now_ms`]; 0: not since the last success).
    failed_at: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// A connection to the shared Redis, and what the stores built on it share. Cheap to clone.
#[derive(Clone)]
pub struct RedisState {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    opts: RedisOptions,
    health: [Health; 3],
    epoch: Instant,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("url", &redact(&self.inner.opts.url))
            .field("prefix", &self.inner.opts.prefix)
            .finish_non_exhaustive()
    }
}

/// How often a lasting failure is logged again.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl RedisState {
    /// Connects and checks that Redis answers (`PING`); an error says why, without the
    /// password.
    pub async fn connect(opts: RedisOptions) -> Result<Self, StateError> {
        let shown = redact(&opts.url);
        let tls = opts.url.starts_with("rediss://");
        if tls {
            // redis-rs builds its TLS client with the process's default rustls provider: ring,
            // as the HTTP client's, unless the embedding program chose one already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let certificates = opts.tls_ca_pem.is_some() || opts.tls_client.is_some();
        if certificates && !tls {
            return Err(StateError(format!(
                "[state] redis_url `{shown}`: certificates are given for TLS, but the URL is not \
                 `rediss://`"
            )));
        }
        let client = if certificates {
            redis::Client::build_with_tls(
                opts.url.as_str(),
                redis::TlsCertificates {
                    client_tls: opts.tls_client.as_ref().map(|c| redis::ClientTlsConfig {
                        client_cert: c.cert_pem.clone(),
                        client_key: c.key_pem.clone(),
                    }),
                    root_cert: opts.tls_ca_pem.clone(),
                },
            )
        } else {
            redis::Client::open(opts.url.as_str())
        }
        .map_err(|e| StateError(format!("[state] redis_url `{shown}`: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let unreachable = |e: &dyn fmt::Display| {
            let e = e.to_string();
            let hint = if tls && opts.tls_ca_pem.is_none() && e.contains("certificate") {
                " (a server certificate from a private authority needs `[state] redis_ca_file`)"
            } else {
                ""
            };
            StateError(format!(
                "Redis at `{shown}` ([state] redis_url) is unreachable: {e}{hint}"
            ))
        };
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unreachable(&e))?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| unreachable(&e))?;
        if pong != "PONG" {
            return Err(unreachable(&format!("PING answered `{pong}`")));
        }
        tracing::info!(url = %shown, prefix = %opts.prefix, "shared state on Redis");
        Ok(RedisState {
            inner: Arc::new(Inner {
                conn,
                opts,
                health: Default::default(),
                epoch: Instant::now(),
            }),
        })
    }

    /// The options it was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// A key under the prefix.
    fn key(&self, rest: fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.inner.opts.prefix)
    }

    fn fails_open(&self, c: Concern) -> bool {
        self.inner.opts.fail_open.contains(&c)
    }

    /// Milliseconds since the connection was made (at least 1).
    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether the last call for `c` failed so recently that this one should not go to Redis
    /// (a Redis that hangs then costs one timeout per pause, not one per request); when it is,
    /// `Some(fail open)`, counted as a failure served by the fallback or refused.
    fn resting(&self, c: Concern) -> Option<bool> {
        let failed = self.inner.health[c.index()]
            .failed_at
            .load(Ordering::Relaxed);
        let pause = self
            .inner
            .opts
            .cache
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        if failed == 0 || self.now_ms() - failed >= pause.as_millis() as u64 {
            return None;
        }
        let open = self.fails_open(c);
        if open {
            metrics::counter!("modelgate_redis_fail_open_total", "concern" => c.name())
                .increment(1);
        }
        Some(open)
    }

    /// Notes a failed call for `c`: counts it, logs (at most every 10 s), and says whether
    /// to fall back to local state (fail open) rather than refuse.
    fn lost(&self, c: Concern, e: &dyn fmt::Display) -> bool {
        let open = self.fails_open(c);
        metrics::counter!("modelgate_redis_errors_total", "concern" => c.name()).increment(1);
        if open {
            metrics::counter!("modelgate_redis_fail_open_total", "concern" => c.name())
                .increment(1);
        }
        let h = &self.inner.health[c.index()];
        h.down.store(true, Ordering::Relaxed);
        h.failed_at.store(self.now_ms(), Ordering::Relaxed);
        let mut last = h.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            if open {
                tracing::error!(
                    concern = c.name(),
                    error = %e,
                    "Redis is unreachable: FAILING OPEN to this instance's own state (limits and budgets are no longer shared across the fleet)"
                );
            } else {
                tracing::error!(
                    concern = c.name(),
                    error = %e,
                    "Redis is unreachable: failing closed (requests that need it get 503)"
                );
            }
        }
        open
    }

    /// Notes a successful call for `c` (logs the recovery once).
    fn fine(&self, c: Concern) {
        let h = &self.inner.health[c.index()];
        if h.down.load(Ordering::Relaxed) && h.down.swap(false, Ordering::Relaxed) {
            h.failed_at.store(0, Ordering::Relaxed);
            *h.last_log.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::warn!(concern = c.name(), "Redis is reachable again");
        }
    }

    /// The 503 answer's error for `c` when Redis is lost and `c` fails closed.
    fn unavailable(&self, c: Concern, e: &dyn fmt::Display) -> crate::auth::StoreError {
        let what = match c {
            Concern::RateLimits => "rate limits cannot be checked",
            Concern::Keys => "keys cannot be checked",
            Concern::Spend => "credit limits cannot be checked",
        };
        crate::auth::StoreError::Unavailable(format!(
            "{what}: the shared Redis did not answer ({e})"
        ))
    }

    /// Rate limits shared through this Redis.
    pub fn rate_limits(&self) -> RedisRateLimits {
        RedisRateLimits::new(self.clone())
    }

    /// Spend and generation records shared through this Redis, records kept `retention`
    /// (`None`: for ever).
    pub fn usage(&self, retention: Option<Duration>) -> RedisUsage {
        RedisUsage::new(self.clone(), retention)
    }

    /// Keys shared through this Redis, with `configured` (the configuration's keys and the
    /// admin key, local to each instance). Loads the shared keys, then keeps them current.
    pub async fn key_store(
        &self,
        configured: crate::auth::LocalKeyStore,
    ) -> Result<Arc<RedisKeyStore>, StateError> {
        RedisKeyStore::start(self.clone(), configured).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/2"),
            "redis://…@10.0.0.1:6379/2"
        );
        assert_eq!(
            redact("rediss://user:p@ss@host:6380"),
            "rediss://…@host:6380"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        let mut opts = RedisOptions::new("redis://:s3cret@10.0.0.1:6379/2");
        opts.tls_client = Some(ClientIdentity {
            cert_pem: b"cert-s3cret".to_vec(),
            key_pem: b"key-s3cret".to_vec(),
        });
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("10.0.0.1:6379/2"),
            "{shown}"
        );
    }
}
