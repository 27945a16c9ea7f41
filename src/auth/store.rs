use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

use super::{
    hex, label_of, now_unix, KeyDigest, KeyPatch, KeyRecord, KeyRole, KeySource, KeyStore,
    ManagedKeyStore, NewKey, Principal, StoreError,
};
use crate::future::BoxFuture;

/// Longest key name.
const MAX_NAME: usize = 128;

/// Where a [`LocalKeyStore`] keeps the keys made through the API, so that they survive a
/// restart (the proxy's embedded state store is one). Its calls block on the disk: the store
/// makes them off the async threads.
pub trait KeyFile: Send + Sync + 'static {
    /// Every key kept. A record that cannot be read is an error, never skipped: a key
    /// silently missing could be a key silently unlimited or silently re-enabled.
    fn load(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Writes (inserts or replaces) a key; durable when it returns.
    fn put(&self, record: &KeyRecord) -> Result<(), StoreError>;
    /// Deletes a key; durable when it returns.
    fn remove(&self, id: &str) -> Result<(), StoreError>;
}

/// The in-process [`KeyStore`]: every key in memory (lookups never touch the disk), keys
/// made through the API written to its [`KeyFile`] (when it has one) before they take
/// effect, so they survive a restart. Configured keys and the admin key are added at
/// start-up with [`add`](Self::add) and are read-only through the API.
pub struct LocalKeyStore {
    index: RwLock<Index>,
    db: Option<std::sync::Arc<dyn KeyFile>>,
    /// Serialises changes, so the database and the index agree on the last write.
    writes: tokio::sync::Mutex<()>,
}

/// Keys by digest (lookups) and by id (the API).
#[derive(Default, Clone)]
pub(crate) struct Index {
    pub(crate) by_digest: crate::FastMap<KeyDigest, Principal>,
    pub(crate) by_id: BTreeMap<String, Principal>,
}

impl Index {
    pub(crate) fn insert(&mut self, p: Principal) {
        if let Some(old) = self.by_id.insert(p.id.clone(), p.clone()) {
            self.by_digest.remove(&old.digest);
        }
        self.by_digest.insert(p.digest, p);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_digest.remove(&old.digest);
        }
    }
}

impl fmt::Debug for LocalKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyStore")
            .field("keys", &self.read().by_id.len())
            .field("persistent", &self.db.is_some())
            .finish()
    }
}

impl LocalKeyStore {
    /// A store whose runtime keys live in memory only (lost at exit).
    pub fn in_memory() -> Self {
        LocalKeyStore {
            index: RwLock::new(Index::default()),
            db: None,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// A store whose keys made through the API are kept in `file`: loads them.
    pub fn open(file: std::sync::Arc<dyn KeyFile>) -> Result<Self, StoreError> {
        let db = file;
        let mut index = Index::default();
        for record in db.load()? {
            index.insert(Principal::new(record));
        }
        Ok(LocalKeyStore {
            index: RwLock::new(index),
            db: Some(db),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Adds a configured key (or the admin key). Two keys with one digest, or one id, are
    /// refused: the message names them.
    pub fn add(&mut self, record: KeyRecord) -> Result<(), StoreError> {
        let index = self.index.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = index.by_digest.get(&record.digest) {
            return Err(StoreError::Invalid(format!(
                "keys `{}` and `{}` are the same key",
                other.name, record.name
            )));
        }
        if index.by_id.contains_key(&record.id) {
            return Err(StoreError::Invalid(format!(
                "two keys are named `{}`",
                record.name
            )));
        }
        index.insert(Principal::new(record));
        Ok(())
    }

    /// Whether any inference key exists (configured or made through the API).
    pub fn has_inference_keys(&self) -> bool {
        self.read()
            .by_id
            .values()
            .any(|p| p.role == KeyRole::Inference)
    }

    /// The keys held (for a shared store that adds its own).
    #[cfg(feature = "redis")]
    pub(crate) fn into_index(self) -> Index {
        self.index.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `record` to the database (off the async threads), then to the index.
    async fn persist(&self, record: KeyRecord) -> Result<Principal, StoreError> {
        if let Some(db) = &self.db {
            let db = db.clone();
            let copy = record.clone();
            tokio::task::spawn_blocking(move || db.put(&copy))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        }
        let p = Principal::new(record);
        self.write_index().insert(p.clone());
        Ok(p)
    }

    fn runtime_key(&self, id: &str) -> Result<Principal, StoreError> {
        let p = self
            .read()
            .by_id
            .get(id)
            .filter(|p| p.role == KeyRole::Inference)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if p.source == KeySource::Config {
            return Err(StoreError::ReadOnly);
        }
        Ok(p)
    }
}

/// `name` is 1 to 128 printable characters.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid(format!(
            "`name` must be 1 to {MAX_NAME} printable characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_limit(limit: Option<f64>) -> Result<(), StoreError> {
    match limit {
        Some(l) if !(l.is_finite() && l >= 0.0) => Err(StoreError::Invalid(
            "`limit` must be a non-negative number of USD".into(),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_rates(r: &super::RateLimits) -> Result<(), StoreError> {
    for (name, v) in [
        ("requests_per_minute", r.requests_per_minute),
        ("requests_per_day", r.requests_per_day),
        ("tokens_per_minute", r.tokens_per_minute),
    ] {
        if v == Some(0) {
            return Err(StoreError::Invalid(format!(
                "`{name}` must be at least 1 (leave it out for no limit; disable the key to stop it)"
            )));
        }
    }
    Ok(())
}

/// A fresh plaintext key: `sk-mg-` and 64 hexadecimal digits from the system's CSPRNG.
fn fresh_key() -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Unavailable("the system random generator failed".into()))?;
    Ok(format!("sk-mg-{}", hex(&bytes)))
}

pub(crate) fn fresh_id() -> String {
    let mut id = String::from("key_");
    for _ in 0..16 {
        id.push(char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'));
    }
    id
}

/// The record of a new inference key (its input checked) and its plaintext (shown once),
/// under `id`.
pub(crate) fn new_record(key: NewKey, id: String) -> Result<(KeyRecord, String), StoreError> {
    check_name(&key.name)?;
    check_limit(key.limit)?;
    check_rates(&key.rate_limits)?;
    let plaintext = fresh_key()?;
    let record = KeyRecord {
        id,
        name: key.name,
        label: label_of(&plaintext),
        digest: KeyDigest::of(&plaintext),
        role: KeyRole::Inference,
        source: KeySource::Api,
        disabled: false,
        created_at: now_unix(),
        expires_at: key.expires_at,
        limit: key.limit,
        limit_reset: key.limit_reset,
        rate_limits: key.rate_limits,
        models: key.models,
    };
    Ok((record, plaintext))
}

/// `patch` applied to the API-made key `current` (configured keys are read-only), checked.
pub(crate) fn patched(current: &Principal, patch: KeyPatch) -> Result<KeyRecord, StoreError> {
    if current.source == KeySource::Config {
        return Err(StoreError::ReadOnly);
    }
    if let Some(name) = &patch.name {
        check_name(name)?;
    }
    check_limit(patch.limit.flatten())?;
    let mut record = KeyRecord::clone(current.record());
    patch.apply(&mut record);
    check_rates(&record.rate_limits)?;
    Ok(record)
}

impl KeyStore for LocalKeyStore {
    fn lookup(&self, digest: KeyDigest) -> BoxFuture<'_, Result<Option<Principal>, StoreError>> {
        let found = self.read().by_digest.get(&digest).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn lookup_now(&self, digest: KeyDigest) -> Option<Result<Option<Principal>, StoreError>> {
        Some(Ok(self.read().by_digest.get(&digest).cloned()))
    }
}

impl ManagedKeyStore for LocalKeyStore {
    fn create(&self, key: NewKey) -> BoxFuture<'_, Result<(Principal, String), StoreError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let mut id = fresh_id();
            while self.read().by_id.contains_key(&id) {
                id = fresh_id();
            }
            let (record, plaintext) = new_record(key, id)?;
            let p = self.persist(record).await?;
            Ok((p, plaintext))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Principal>, StoreError>> {
        let keys = self
            .read()
            .by_id
            .values()
            .filter(|p| p.role == KeyRole::Inference)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(keys)))
    }

    fn get(&self, id: String) -> BoxFuture<'_, Result<Principal, StoreError>> {
        let found = self
            .read()
            .by_id
            .get(&id)
            .filter(|p| p.role == KeyRole::Inference)
            .cloned()
            .ok_or(StoreError::NotFound);
        Box::pin(std::future::ready(found))
    }

    fn update(&self, id: String, patch: KeyPatch) -> BoxFuture<'_, Result<Principal, StoreError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let record = patched(&self.runtime_key(&id)?, patch)?;
            self.persist(record).await
        })
    }

    fn delete(&self, id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            self.runtime_key(&id)?;
            if let Some(db) = &self.db {
                let db = db.clone();
                let key = id.clone();
                tokio::task::spawn_blocking(move || db.remove(&key))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
            }
            self.write_index().remove(&id);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(name: &str) -> NewKey {
        NewKey {
            name: name.into(),
            ..NewKey::default()
        }
    }

    #[cfg(feature = "proxy")]
    #[tokio::test]
    async fn lifecycle_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (id, plaintext) = {
            let store = LocalKeyStore::open(std::sync::Arc::new(
                crate::state::StateDb::open(dir.path()).unwrap(),
            ))
            .unwrap();
            let (p, plaintext) = store.create(new_key("app")).await.unwrap();
            assert!(plaintext.starts_with("sk-mg-") && plaintext.len() == 70);
            assert_eq!(p.label, label_of(&plaintext));
            let found = store
                .lookup(KeyDigest::of(&plaintext))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.id, p.id);
            let patch = KeyPatch {
                disabled: Some(true),
                limit: Some(Some(5.0)),
                ..KeyPatch::default()
            };
            let updated = store.update(p.id.clone(), patch).await.unwrap();
            assert!(updated.disabled);
            let (gone, _) = store.create(new_key("temp")).await.unwrap();
            store.delete(gone.id.clone()).await.unwrap();
            assert_eq!(
                store.get(gone.id.clone()).await.unwrap_err(),
                StoreError::NotFound
            );
            (p.id.clone(), plaintext)
        };
        let store = LocalKeyStore::open(std::sync::Arc::new(
            crate::state::StateDb::open(dir.path()).unwrap(),
        ))
        .unwrap();
        let p = store
            .lookup(KeyDigest::of(&plaintext))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.id, id);
        assert!(p.disabled);
        assert_eq!(p.limit, Some(5.0));
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn config_keys_are_read_only_and_bad_input_is_refused() {
        let mut store = LocalKeyStore::in_memory();
        store
            .add(KeyRecord::from_config("cfg", "sk-mg-config-0123456789"))
            .unwrap();
        let dup = store.add(KeyRecord::from_config("again", "sk-mg-config-0123456789"));
        assert!(matches!(dup, Err(StoreError::Invalid(m)) if m.contains("same key")));
        assert_eq!(
            store.delete("cfg_cfg".into()).await.unwrap_err(),
            StoreError::ReadOnly
        );
        assert_eq!(
            store
                .update("cfg_cfg".into(), KeyPatch::default())
                .await
                .unwrap_err(),
            StoreError::ReadOnly
        );
        for bad in [
            NewKey::default(),
            NewKey {
                limit: Some(-1.0),
                ..new_key("x")
            },
            NewKey {
                rate_limits: super::super::RateLimits {
                    requests_per_minute: Some(0),
                    ..Default::default()
                },
                ..new_key("x")
            },
        ] {
            assert!(matches!(
                store.create(bad).await,
                Err(StoreError::Invalid(_))
            ));
        }
    }
}
