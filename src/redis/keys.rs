//! Keys on Redis: one hash of key records and a version counter; a snapshot per instance.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::Script;

use super::{Concern, RedisState};
use crate::auth::store::{fresh_id, new_record, patched, Index};
use crate::auth::{
    KeyDigest, KeyPatch, KeyRecord, KeyRole, KeySource, KeyStore, LocalKeyStore, ManagedKeyStore,
    NewKey, Principal, StoreError,
};
use crate::future::BoxFuture;
use crate::state::StateError;

/// Replaces a key record that still exists, and bumps the version.
/// KEYS: the hash, the version. ARGV: id, JSON.
const REPLACE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
";

/// Keys shared through Redis, plus each instance's configured keys; see the
/// [module docs](super).
///
/// Lookups are answered from this instance's snapshot. The snapshot is reloaded when the
/// shared version changes (checked every `cache`, and at once when a key is not found). While
/// Redis is lost, keys made through the API are refused with a 503 (fail closed) or served
/// from the last snapshot (fail open); configured keys never depend on Redis. The management
/// API needs Redis either way.
pub struct RedisKeyStore {
    state: RedisState,
    configured: Index,
    snapshot: RwLock<Arc<Index>>,
    /// The version the snapshot holds (`None`: nothing loaded yet; `Some(None)`: no key
    /// was ever made); held while syncing, so syncs do not pile up.
    version: tokio::sync::Mutex<Option<Option<i64>>>,
    /// When the last sync that went through started ([`RedisState::now_ms`]): the snapshot
    /// holds every change made before then.
    synced_at: AtomicU64,
    replace: Script,
}

impl fmt::Debug for RedisKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("keys", &self.snap().by_id.len())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The shortest pause between two version checks.
const MIN_POLL: Duration = Duration::from_millis(50);

impl RedisKeyStore {
    pub(super) async fn start(
        state: RedisState,
        configured: LocalKeyStore,
    ) -> Result<Arc<Self>, StateError> {
        let configured = configured.into_index();
        let store = Arc::new(RedisKeyStore {
            state,
            snapshot: RwLock::new(Arc::new(configured.clone())),
            configured,
            version: tokio::sync::Mutex::new(None),
            synced_at: AtomicU64::new(0),
            replace: Script::new(REPLACE),
        });
        store
            .sync()
            .await
            .map_err(|e| StateError(format!("the keys in Redis could not be read: {e}")))?;
        let every = store.state.options().cache.max(MIN_POLL);
        tokio::spawn(poll(Arc::downgrade(&store), every));
        Ok(store)
    }

    /// Whether any inference key exists (configured or shared).
    pub fn has_inference_keys(&self) -> bool {
        self.snap()
            .by_id
            .values()
            .any(|p| p.role == KeyRole::Inference)
    }

    fn snap(&self) -> Arc<Index> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn hash(&self) -> String {
        self.state.key(format_args!("keys"))
    }

    fn version_key(&self) -> String {
        self.state.key(format_args!("keys:version"))
    }

    /// Whether the snapshot is recent enough to trust (a version check went through lately).
    fn fresh(&self) -> bool {
        let o = self.state.options();
        let within = o
            .cache
            .saturating_mul(2)
            .saturating_add(o.timeout)
            .max(Duration::from_secs(1));
        self.state.now_ms() - self.synced_at.load(Ordering::Relaxed) < within.as_millis() as u64
    }

    /// Checks the shared version; reloads every shared key when it moved. A sync that
    /// went through while this one waited for its turn is as good.
    async fn sync(&self) -> Result<(), redis::RedisError> {
        let asked = self.state.now_ms();
        let mut known = self.version.lock().await;
        // (Strictly later: a sync started in the same millisecond may have read before.)
        if self.synced_at.load(Ordering::Relaxed) > asked {
            return Ok(());
        }
        let started = self.state.now_ms();
        let mut conn = self.state.conn();
        let version: Option<i64> = redis::cmd("GET")
            .arg(self.version_key())
            .query_async(&mut conn)
            .await?;
        if *known != Some(version) {
            let all: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.hash())
                .query_async(&mut conn)
                .await?;
            let mut index = self.configured.clone();
            for (id, json) in all {
                match serde_json::from_str::<KeyRecord>(&json) {
                    Ok(r)
                        if r.source == KeySource::Api
                            && !index.by_id.contains_key(&r.id)
                            && !index.by_digest.contains_key(&r.digest) =>
                    {
                        index.insert(Principal::new(r));
                    }
                    Ok(_) => {
                        tracing::warn!(id = %id, "a shared key clashes with a configured key; ignored")
                    }
                    Err(e) => {
                        tracing::warn!(id = %id, error = %e, "an unreadable key record in Redis; ignored")
                    }
                }
            }
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
            *known = Some(version);
        }
        self.synced_at.store(started, Ordering::Relaxed);
        self.state.fine(Concern::Keys);
        Ok(())
    }

    /// A sync for the management API: Redis must answer.
    async fn sync_for_write(&self) -> Result<Arc<Index>, StoreError> {
        self.sync()
            .await
            .map_err(|e| self.state.unavailable(Concern::Keys, &e))?;
        Ok(self.snap())
    }

    fn api_key(index: &Index, id: &str) -> Result<Principal, StoreError> {
        index
            .by_id
            .get(id)
            .filter(|p| p.role == KeyRole::Inference)
            .cloned()
            .ok_or(StoreError::NotFound)
    }
}

/// Checks the version every `every` while the store lives.
async fn poll(store: Weak<RedisKeyStore>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = store.sync().await {
            store.state.lost(Concern::Keys, &e);
        }
    }
}

impl KeyStore for RedisKeyStore {
    fn lookup(&self, digest: KeyDigest) -> BoxFuture<'_, Result<Option<Principal>, StoreError>> {
        if let Some(known) = self.lookup_now(digest) {
            return Box::pin(std::future::ready(known));
        }
        Box::pin(async move {
            match self.sync().await {
                Ok(()) => Ok(self.snap().by_digest.get(&digest).cloned()),
                Err(e) if self.state.lost(Concern::Keys, &e) => {
                    Ok(self.snap().by_digest.get(&digest).cloned())
                }
                Err(e) => Err(self.state.unavailable(Concern::Keys, &e)),
            }
        })
    }

    fn lookup_now(&self, digest: KeyDigest) -> Option<Result<Option<Principal>, StoreError>> {
        if let Some(p) = self.snap().by_digest.get(&digest) {
            if p.source == KeySource::Config || self.fresh() {
                return Some(Ok(Some(p.clone())));
            }
        }
        // Unknown here (maybe made on another instance a moment ago), or a snapshot too old
        // to trust: ask Redis (unless it failed moments ago).
        match self.state.resting(Concern::Keys) {
            Some(true) => Some(Ok(self.snap().by_digest.get(&digest).cloned())),
            Some(false) => Some(Err(self
                .state
                .unavailable(Concern::Keys, &"it failed moments ago"))),
            None => None,
        }
    }
}

impl ManagedKeyStore for RedisKeyStore {
    fn create(&self, key: NewKey) -> BoxFuture<'_, Result<(Principal, String), StoreError>> {
        Box::pin(async move {
            let (mut record, plaintext) = new_record(key, fresh_id())?;
            loop {
                let json = serde_json::to_string(&record)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let (added, _): (i64, i64) = redis::pipe()
                    .atomic()
                    .cmd("HSETNX")
                    .arg(self.hash())
                    .arg(&record.id)
                    .arg(json)
                    .cmd("INCR")
                    .arg(self.version_key())
                    .query_async(&mut self.state.conn())
                    .await
                    .map_err(|e| self.state.unavailable(Concern::Keys, &e))?;
                if added == 1 {
                    break;
                }
                record.id = fresh_id();
            }
            let index = self.sync_for_write().await?;
            let p = Self::api_key(&index, &record.id)?;
            Ok((p, plaintext))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Principal>, StoreError>> {
        Box::pin(async move {
            let index = self.sync_for_write().await?;
            Ok(index
                .by_id
                .values()
                .filter(|p| p.role == KeyRole::Inference)
                .cloned()
                .collect())
        })
    }

    fn get(&self, id: String) -> BoxFuture<'_, Result<Principal, StoreError>> {
        Box::pin(async move { Self::api_key(&*self.sync_for_write().await?, &id) })
    }

    fn update(&self, id: String, patch: KeyPatch) -> BoxFuture<'_, Result<Principal, StoreError>> {
        Box::pin(async move {
            let index = self.sync_for_write().await?;
            let record = patched(&Self::api_key(&index, &id)?, patch)?;
            let json = serde_json::to_string(&record)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let replaced: i64 = self
                .replace
                .key(self.hash())
                .key(self.version_key())
                .arg(&id)
                .arg(json)
                .invoke_async(&mut self.state.conn())
                .await
                .map_err(|e| self.state.unavailable(Concern::Keys, &e))?;
            if replaced == 0 {
                return Err(StoreError::NotFound);
            }
            Self::api_key(&*self.sync_for_write().await?, &id)
        })
    }

    fn delete(&self, id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let index = self.sync_for_write().await?;
            if Self::api_key(&index, &id)?.source == KeySource::Config {
                return Err(StoreError::ReadOnly);
            }
            let (removed, _): (i64, i64) = redis::pipe()
                .atomic()
                .cmd("HDEL")
                .arg(self.hash())
                .arg(&id)
                .cmd("INCR")
                .arg(self.version_key())
                .query_async(&mut self.state.conn())
                .await
                .map_err(|e| self.state.unavailable(Concern::Keys, &e))?;
            if removed == 0 {
                return Err(StoreError::NotFound);
            }
            self.sync_for_write().await?;
            Ok(())
        })
    }
}
