//! The embedded, crash-safe state database under `[state] dir` (redb): keys created through
//! the API now; spend and usage records share it.
//!
//! redb is a pure-Rust, ACID, copy-on-write B-tree store: every commit is durable
//! (fsync'd) and a crash mid-write leaves the last committed state. The file is locked, so a
//! second process pointed at the same directory fails to start instead of corrupting it.

// redb's error is large; it only ever travels on the cold path of a management write.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::auth::KeyRecord;
use crate::future::BoxFuture;
use crate::usage::activity::{rollups, HourlyRollups, Rollup, Slot};
use crate::usage::query::{page, GenerationPage, GenerationQuery};
use crate::usage::{KeySpend, SinkError, UsageRecord, UsageSink};

/// Runtime keys: id → the JSON of a [`KeyRecord`].
const KEYS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("keys");

/// Generation records: `gen-…` id → a [`UsageRecord`], encoded by [`encode_record`].
const GENERATIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("generations");

/// Spend: key id → the JSON of a [`KeySpend`].
const SPEND: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("spend");

/// Each hour's totals per key, model and provider (`Slot::encode` → the rollup, postcard).
const ACTIVITY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("activity");

/// Each record's key and id (`<key id>\0<generation id>` → nothing): a key's records in order
/// of arrival, for listing one key's records without reading the others'.
const BY_KEY: TableDefinition<'_, &str, ()> = TableDefinition::new("generations_by_key");

/// The index entry of record `id` of `key`.
fn by_key(key: &str, id: &str) -> String {
    format!("{key}\0{id}")
}

/// The state database's page cache.
const CACHE_BYTES: usize = 4 << 20;

/// The database file's name inside the state directory.
pub const FILE_NAME: &str = "modelgate.redb";

/// A state directory that cannot be used; the message says which and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateError {}

/// The open state database. Cheap to clone.
///
/// An I/O error (a full disk, say) leaves a redb database refusing every later write until it
/// is closed and opened again, so after one the store reopens itself before its next use: at
/// once, then, while reopening fails, no more often than a backoff that doubles from 100 ms to
/// 10 s. Each error and each reopening is logged and counted (`modelgate_state_io_errors_total`,
/// `modelgate_state_reopens_total`). Nothing is lost meanwhile: a failed write was not
/// committed, and its caller (the usage writer, a management request) sees the error.
#[derive(Clone)]
pub struct StateDb {
    store: Arc<Store>,
    /// How long usage records are kept (seconds); `None`: forever.
    retention: Option<i64>,
    /// When records were last pruned (Unix seconds).
    pruned_at: Arc<std::sync::atomic::AtomicI64>,
}

/// Opens the database file (again).
type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

struct Store {
    path: PathBuf,
    open: Opener,
    /// `None` only between a failed reopening and the next attempt.
    db: RwLock<Option<Database>>,
    /// Set by an I/O error: the database is reopened before its next use.
    broken: Mutex<Option<Broken>>,
}

struct Broken {
    /// No attempt to reopen before this.
    retry_at: Instant,
    /// The wait after the next failed attempt.
    backoff: Duration,
    /// What went wrong, for the errors given meanwhile.
    error: String,
}

/// The first wait before reopening again after a failed reopening; doubled up to the cap.
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(10);

impl fmt::Debug for StateDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateDb")
            .field("path", &self.store.path)
            .finish()
    }
}

impl StateDb {
    /// Opens (creating it if needed) the database in `dir`, and proves it writable.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(FILE_NAME);
        let file = path.clone();
        Self::open_with(
            dir,
            Box::new(move || {
                // redb's default page cache is 1 GiB; ours is 4 MiB, so memory stays flat as
                // the database grows (reads of old records are rare: lookups by id).
                redb::Builder::new()
                    .set_cache_size(CACHE_BYTES)
                    .create(&file)
            }),
        )
    }

    /// Opens the database in `dir` on a storage backend of the caller's: `backend` is called
    /// for each (re)opening. For tests that inject I/O faults.
    #[doc(hidden)]
    pub fn open_with_backend<B: redb::StorageBackend>(
        dir: &Path,
        backend: impl Fn() -> B + Send + Sync + 'static,
    ) -> Result<Self, StateError> {
        Self::open_with(
            dir,
            Box::new(move || {
                redb::Builder::new()
                    .set_cache_size(CACHE_BYTES)
                    .create_with_backend(backend())
            }),
        )
    }

    fn open_with(dir: &Path, open: Opener) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError(format!(
                "cannot create the state dir {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        let db = open_guarded(&open).map_err(|e| {
            StateError(format!(
                "cannot open the state database {}: {e}",
                path.display()
            ))
        })?;
        let this = StateDb {
            store: Arc::new(Store {
                path,
                open,
                db: RwLock::new(Some(db)),
                broken: Mutex::new(None),
            }),
            retention: None,
            pruned_at: Arc::default(),
        };
        // Creates the tables and proves the file writable now, not at the first API call.
        this.write(|tx| {
            tx.open_table(KEYS)?;
            let generations = tx.open_table(GENERATIONS)?;
            tx.open_table(SPEND)?;
            let mut index = tx.open_table(BY_KEY)?;
            let mut activity = tx.open_table(ACTIVITY)?;
            // A store from before the index and the rollups: every record counted once.
            let (index_it, roll_up) = (index.is_empty()?, activity.is_empty()?);
            if (index_it || roll_up) && !generations.is_empty()? {
                let mut sums = std::collections::BTreeMap::new();
                for row in generations.iter()? {
                    let (id, bytes) = row?;
                    let Ok(r) = decode_record(bytes.value()) else {
                        continue;
                    };
                    if let (true, Some(key)) = (index_it, &r.key_id) {
                        index.insert(by_key(key, id.value()).as_str(), ())?;
                    }
                    if roll_up {
                        sums.entry(Slot::of(&r))
                            .or_insert_with(Rollup::default)
                            .add(&r);
                    }
                }
                for (slot, rollup) in sums {
                    activity.insert(slot.encode().as_str(), encode_rollup(&rollup)?.as_slice())?;
                }
            }
            Ok(())
        })
        .map_err(|e| {
            StateError(format!(
                "the state database {} is not writable: {e}",
                this.store.path.display()
            ))
        })?;
        Ok(this)
    }

    /// As a usage sink: keep records `days` days (pruned at most hourly as records are
    /// written); `None` keeps them forever. Spend is never pruned.
    pub fn with_record_retention(mut self, days: Option<u32>) -> Self {
        self.retention = days.map(|d| i64::from(d) * 86_400);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// Runs `f` on the open database, reopening it first if an I/O error broke it. An I/O
    /// error from `f` marks it broken. `what` says what failed, for the error's message.
    fn with_db<R>(
        &self,
        what: &str,
        f: impl FnOnce(&Database) -> Result<R, redb::Error>,
    ) -> Result<R, StateError> {
        let fail =
            |e: &dyn fmt::Display| StateError(format!("{what} {}: {e}", self.store.path.display()));
        self.store.heal().map_err(|e| fail(&e))?;
        let db = self.store.db.read().unwrap_or_else(|e| e.into_inner());
        let Some(db) = db.as_ref() else {
            return Err(fail(&"the database is being reopened"));
        };
        f(db).map_err(|e| {
            if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                self.store.broke(&e);
            }
            fail(&e)
        })
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        self.with_db("cannot write the state database", |db| {
            let tx = db.begin_write()?;
            f(&tx)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Every runtime key. A record that does not parse is an error, never skipped: a key
    /// silently missing could be a key silently unlimited or silently re-enabled.
    pub(crate) fn load_keys(&self) -> Result<Vec<KeyRecord>, StateError> {
        Ok(self
            .load_json(KEYS, "key record")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Every row of a table of JSON values. A row that does not parse is an error naming it.
    fn load_json<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        what: &str,
    ) -> Result<Vec<(String, T)>, StateError> {
        let rows = self.with_db("cannot read the state database", |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(table)?;
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (id, value) = row?;
                rows.push((id.value().to_owned(), value.value().to_vec()));
            }
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(id, value)| {
                let v = serde_json::from_slice(&value).map_err(|e| {
                    StateError(format!(
                        "the state database {} holds an unreadable {what} `{id}`: {e}",
                        self.store.path.display(),
                    ))
                })?;
                Ok((id, v))
            })
            .collect()
    }

    /// Writes (inserts or replaces) a key record; durable when it returns.
    pub(crate) fn put_key(&self, record: &KeyRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| StateError(format!("cannot encode a key record: {e}")))?;
        self.write(|tx| {
            tx.open_table(KEYS)?
                .insert(record.id.as_str(), json.as_slice())?;
            Ok(())
        })
    }

    /// Deletes a key record; durable when it returns.
    pub(crate) fn delete_key(&self, id: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(KEYS)?.remove(id)?;
            Ok(())
        })
    }
}

impl Store {
    /// After an I/O error: drops the broken database and opens the file again, unless the last
    /// attempt failed too recently. `Err` says why the database cannot be used now.
    fn heal(&self) -> Result<(), String> {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = broken.as_mut() else {
            return Ok(());
        };
        if Instant::now() < b.retry_at {
            return Err(format!("unavailable after an I/O error ({})", b.error));
        }
        // The file is locked while open: the old handle goes before the new one comes.
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        drop(db.take());
        match open_guarded(&self.open) {
            Ok(fresh) => {
                *db = Some(fresh);
                metrics::counter!("modelgate_state_reopens_total").increment(1);
                tracing::warn!(path = %self.path.display(), after = %b.error, "state database reopened");
                *broken = None;
                Ok(())
            }
            Err(e) => {
                b.error = e.to_string();
                b.retry_at = Instant::now() + b.backoff;
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    retry_in_ms = b.backoff.as_millis() as u64,
                    "cannot reopen the state database"
                );
                b.backoff = (b.backoff * 2).min(REOPEN_BACKOFF_MAX);
                Err(format!("cannot be reopened after an I/O error ({e})"))
            }
        }
    }

    /// Notes an I/O error: the next use reopens the database.
    fn broke(&self, e: &redb::Error) {
        metrics::counter!("modelgate_state_io_errors_total").increment(1);
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if broken.is_none() {
            tracing::error!(path = %self.path.display(), error = %e, "state database I/O error: it will be reopened");
            *broken = Some(Broken {
                retry_at: Instant::now(),
                backoff: REOPEN_BACKOFF,
                error: e.to_string(),
            });
        }
    }
}

/// Opens the database; a panic inside redb (a file cut short trips an assertion) is an error
/// like any other, so a damaged file is a clear start-up error, not a crash.
fn open_guarded(open: &Opener) -> Result<Database, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!(
                "the file is damaged (cut short?): {why}; restore it from a backup, or move it away to start empty"
            ))
        }
    }
}

impl StateDb {
    /// Every key's spend. An unreadable row is an error, never skipped: a key whose spend
    /// silently vanished would get its whole limit again.
    pub fn load_spend(&self) -> Result<Vec<(String, KeySpend)>, StateError> {
        self.load_json(SPEND, "spend record")
    }

    /// Stores a batch of records and adds their cost to each key's spend, in one durable
    /// transaction. A record already stored (a batch offered again after a failure) is
    /// neither stored twice nor charged twice.
    pub fn put_records(&self, batch: &[UsageRecord]) -> Result<(), StateError> {
        let mut encoded = Vec::with_capacity(batch.len());
        for r in batch {
            encoded.push(encode_record(r)?);
        }
        self.write(|tx| {
            let mut generations = tx.open_table(GENERATIONS)?;
            let mut spend = tx.open_table(SPEND)?;
            let mut index = tx.open_table(BY_KEY)?;
            let mut activity = tx.open_table(ACTIVITY)?;
            let mut new = Vec::with_capacity(batch.len());
            let mut changed: std::collections::HashMap<&str, KeySpend> = Default::default();
            for (r, json) in batch.iter().zip(&encoded) {
                // Already there (a batch offered again): the same record, not charged again.
                if generations
                    .insert(r.id.as_str(), json.as_slice())?
                    .is_some()
                {
                    continue;
                }
                if let Some(key) = &r.key_id {
                    index.insert(by_key(key, &r.id).as_str(), ())?;
                }
                new.push(r);
                let (Some(key), Some(cost)) = (&r.key_id, r.cost) else {
                    continue;
                };
                if !(cost.is_finite() && cost > 0.0) {
                    continue;
                }
                let entry = match changed.entry(key.as_str()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let old = match spend.get(key.as_str())? {
                            Some(row) => serde_json::from_slice(row.value()).map_err(|e| {
                                redb::Error::Corrupted(format!(
                                    "the spend record of `{key}` is unreadable: {e}"
                                ))
                            })?,
                            None => KeySpend::default(),
                        };
                        v.insert(old)
                    }
                };
                entry.add(cost, r.created_at);
            }
            for (key, s) in changed {
                let json = serde_json::to_vec(&s)
                    .map_err(|e| redb::Error::Corrupted(format!("cannot encode spend: {e}")))?;
                spend.insert(key, json.as_slice())?;
            }
            for (slot, mut rollup) in rollups(new) {
                let at = slot.encode();
                if let Some(old) = activity.get(at.as_str())? {
                    rollup.merge(&decode_rollup(old.value())?);
                }
                activity.insert(at.as_str(), encode_rollup(&rollup)?.as_slice())?;
            }
            Ok(())
        })
    }

    /// Deletes the records made before `before` (Unix seconds); returns how many. Ids are
    /// `gen-<unix seconds>-…` with ten-digit seconds (until the year 2286), so their order is
    /// their age.
    pub fn prune_records(&self, before: i64) -> Result<u64, StateError> {
        let cutoff = format!("gen-{:010}", before.max(0));
        let mut removed = 0;
        self.write(|tx| {
            let mut t = tx.open_table(GENERATIONS)?;
            t.retain_in("gen-0000000000"..cutoff.as_str(), |_, _| {
                removed += 1;
                false
            })?;
            let hour = Slot::hour_start(before.div_euclid(3600) * 3600);
            tx.open_table(ACTIVITY)?
                .retain_in("0000000000"..hour.as_str(), |_, _| false)?;
            let mut index = tx.open_table(BY_KEY)?;
            index.retain(|entry, ()| {
                entry
                    .rsplit_once('\0')
                    .is_none_or(|(_, id)| id >= cutoff.as_str())
            })?;
            Ok(())
        })?;
        Ok(removed)
    }

    /// Prunes records past the retention, at most once an hour; a failure is logged (the
    /// records stay, nothing is lost).
    fn prune_if_due(&self) {
        use std::sync::atomic::Ordering;
        let Some(keep) = self.retention else { return };
        let now = crate::facts::unix_now() as i64;
        let last = self.pruned_at.load(Ordering::Relaxed);
        if now - last < 3_600
            || self
                .pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self.prune_records(now - keep) {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "pruned usage records past their retention"),
            Err(e) => tracing::warn!(error = %e, "cannot prune usage records"),
        }
    }

    /// The hourly rollups of the hours from `since` (rounded down to its hour) up to `until`.
    pub fn activity(&self, since: i64, until: i64) -> Result<HourlyRollups, StateError> {
        let from = Slot::hour_start(since.div_euclid(3600) * 3600);
        let to = Slot::hour_start(until);
        self.with_db("cannot read the state database", |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(ACTIVITY)?;
            let mut out = Vec::new();
            for row in table.range(from.as_str()..to.as_str())? {
                let (at, bytes) = row?;
                let Some(slot) = Slot::decode(at.value()) else {
                    continue;
                };
                out.push((slot, decode_rollup(bytes.value())?));
            }
            Ok(out)
        })
    }

    /// A page of records, newest first: read backwards through the ids (their order is their
    /// age), through the key's index when the query names a key.
    pub fn list_records(&self, q: &GenerationQuery) -> Result<GenerationPage, StateError> {
        let (lower, upper) = q.id_range();
        self.with_db("cannot read the state database", |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(GENERATIONS)?;
            let load = |id: &str| -> Result<Option<UsageRecord>, redb::Error> {
                let Some(row) = table.get(id)? else {
                    return Ok(None);
                };
                decode_record(row.value()).map(Some).map_err(|e| {
                    redb::Error::Corrupted(format!("the usage record `{id}` is unreadable: {e}"))
                })
            };
            match &q.key {
                Some(key) => {
                    let index = tx.open_table(BY_KEY)?;
                    let (from, to) = (by_key(key, &lower), by_key(key, &upper));
                    let ids = index.range(from.as_str()..to.as_str())?.rev().map(|row| {
                        let (entry, _) = row.map_err(redb::Error::from)?;
                        let id = entry.value().rsplit_once('\0').map_or("", |(_, id)| id);
                        Ok(id.to_owned())
                    });
                    page(q, ids, load)
                }
                None => {
                    let ids = table
                        .range(lower.as_str()..upper.as_str())?
                        .rev()
                        .map(|row| Ok(row.map_err(redb::Error::from)?.0.value().to_owned()));
                    page(q, ids, load)
                }
            }
        })
    }

    /// The record of generation `id`.
    pub fn get_record(&self, id: &str) -> Result<Option<UsageRecord>, StateError> {
        let row = self.with_db("cannot read the state database", |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(GENERATIONS)?;
            let row = table.get(id)?;
            Ok(row.map(|r| r.value().to_vec()))
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        decode_record(&row)
            .map(Some)
            .map_err(|e| StateError(format!("the usage record `{id}` is unreadable: {e}")))
    }
}

fn encode_rollup(r: &Rollup) -> Result<Vec<u8>, redb::Error> {
    postcard::to_allocvec(r)
        .map_err(|e| redb::Error::Corrupted(format!("cannot encode a rollup: {e}")))
}

fn decode_rollup(bytes: &[u8]) -> Result<Rollup, redb::Error> {
    postcard::from_bytes(bytes)
        .map_err(|e| redb::Error::Corrupted(format!("a rollup is unreadable: {e}")))
}

/// The stored form of a record: a format byte, then the record in postcard (compact and
/// cheap: much smaller than its JSON, and writing records is most of the metering's cost).
/// A new format gets a new byte; old ones stay readable.
///
/// Postcard writes a struct's fields in order, without names. Version 2 added
/// `cache_write_tokens` as the last field, version 3 `dialect` after it, version 4
/// `categories` and `session_id`; an older record is read as version 4 with the bytes of the
/// missing fields' defaults (a zero each: the varint of 0, the first variant, `chat`, and
/// `None`).
const RECORD_POSTCARD_V1: u8 = 1;
const RECORD_POSTCARD_V2: u8 = 2;
const RECORD_POSTCARD_V3: u8 = 3;
const RECORD_POSTCARD_V4: u8 = 4;

pub(crate) fn encode_record(r: &UsageRecord) -> Result<Vec<u8>, StateError> {
    let mut out = Vec::with_capacity(256);
    out.push(RECORD_POSTCARD_V4);
    postcard::to_io(r, &mut out)
        .map_err(|e| StateError(format!("cannot encode a usage record: {e}")))?;
    Ok(out)
}

pub(crate) fn decode_record(bytes: &[u8]) -> Result<UsageRecord, String> {
    let (missing, rest) = match bytes.split_first() {
        Some((&RECORD_POSTCARD_V4, rest)) => (0, rest),
        Some((&RECORD_POSTCARD_V3, rest)) => (2, rest),
        Some((&RECORD_POSTCARD_V2, rest)) => (3, rest),
        Some((&RECORD_POSTCARD_V1, rest)) => (4, rest),
        Some((b'{', _)) => return serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => return Err("unknown record format".into()),
    };
    if missing == 0 {
        return postcard::from_bytes(rest).map_err(|e| e.to_string());
    }
    let mut padded = Vec::with_capacity(rest.len() + missing);
    padded.extend_from_slice(rest);
    padded.resize(rest.len() + missing, 0);
    postcard::from_bytes(&padded).map_err(|e| e.to_string())
}

#[cfg(test)]
impl StateDb {
    /// Every stored record.
    pub(crate) fn all_records(&self) -> Vec<UsageRecord> {
        let db = self.store.db.read().unwrap();
        let tx = db.as_ref().unwrap().begin_read().unwrap();
        let table = tx.open_table(GENERATIONS).unwrap();
        table
            .iter()
            .unwrap()
            .map(|row| decode_record(row.unwrap().1.value()).unwrap())
            .collect()
    }
}

/// The keys made through the API, for [`LocalKeyStore`](crate::auth::LocalKeyStore).
impl crate::auth::KeyFile for StateDb {
    fn load(&self) -> Result<Vec<KeyRecord>, crate::auth::StoreError> {
        self.load_keys()
            .map_err(|e| crate::auth::StoreError::Unavailable(e.0))
    }

    fn put(&self, record: &KeyRecord) -> Result<(), crate::auth::StoreError> {
        self.put_key(record)
            .map_err(|e| crate::auth::StoreError::Unavailable(e.0))
    }

    fn remove(&self, id: &str) -> Result<(), crate::auth::StoreError> {
        self.delete_key(id)
            .map_err(|e| crate::auth::StoreError::Unavailable(e.0))
    }
}

/// The default sink: records and spend in the state database, so both survive a restart.
impl UsageSink for StateDb {
    fn name(&self) -> &str {
        "state"
    }

    fn write(&self, batch: Arc<[UsageRecord]>) -> BoxFuture<'_, Result<(), SinkError>> {
        let db = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                db.put_records(&batch)?;
                db.prune_if_due();
                Ok::<_, StateError>(())
            })
            .await
            .map_err(|e| SinkError(e.to_string()))?
            .map_err(|e| SinkError(e.0))
        })
    }

    fn generation(&self, id: String) -> BoxFuture<'_, Result<Option<UsageRecord>, SinkError>> {
        let db = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || db.get_record(&id))
                .await
                .map_err(|e| SinkError(e.to_string()))?
                .map_err(|e| SinkError(e.0))
        })
    }

    fn activity(
        &self,
        since: i64,
        until: i64,
    ) -> BoxFuture<'_, Result<Option<HourlyRollups>, SinkError>> {
        let db = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || db.activity(since, until))
                .await
                .map_err(|e| SinkError(e.to_string()))?
                .map(Some)
                .map_err(|e| SinkError(e.0))
        })
    }

    fn generations(
        &self,
        query: GenerationQuery,
    ) -> BoxFuture<'_, Result<Option<GenerationPage>, SinkError>> {
        let db = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || db.list_records(&query))
                .await
                .map_err(|e| SinkError(e.to_string()))?
                .map(Some)
                .map_err(|e| SinkError(e.0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, key: &str, cost: f64, at: i64) -> UsageRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "created_at": at, "key_id": key, "requested_model": "m", "model": "m",
            "provider": "p", "upstream_model": "u", "prompt_tokens": 1, "completion_tokens": 1,
            "cached_tokens": 0, "reasoning_tokens": 0, "cost": cost, "estimated": false,
            "streamed": false, "status": 200, "error": null, "finish_reason": "stop",
            "cancelled": false, "latency_ms": 1, "time_to_first_token_ms": 1, "attempts": [],
            "referer": null, "title": null, "user": null
        }))
        .unwrap()
    }

    #[test]
    fn records_are_stored_once_charged_once_and_pruned_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let batch = [
            record("gen-0000000100-a", "k", 0.25, 100),
            record("gen-0000000200-b", "k", 0.5, 200),
            record("gen-1796212800-c", "k", 1.0, 1_796_212_800),
        ];
        db.put_records(&batch).unwrap();
        db.put_records(&batch).unwrap();
        let spend = db.load_spend().unwrap();
        assert_eq!(spend.len(), 1);
        assert_eq!(
            spend[0].1.total, 1.75,
            "a batch offered twice is charged once"
        );
        assert_eq!(db.prune_records(200).unwrap(), 1);
        assert_eq!(db.get_record("gen-0000000100-a").unwrap(), None);
        assert_eq!(
            db.get_record("gen-0000000200-b").unwrap().unwrap().cost,
            Some(0.5)
        );
        assert_eq!(db.prune_records(1_796_212_801).unwrap(), 2);
        assert!(db.all_records().is_empty());
        assert_eq!(
            db.load_spend().unwrap()[0].1.total,
            1.75,
            "spend is never pruned"
        );
    }

    #[test]
    fn records_are_listed_newest_first_by_key_and_filters_without_gaps_or_repeats() {
        use crate::usage::query::{cursor_id, GenerationQuery, StatusFilter};
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut batch = Vec::new();
        for i in 0..300i64 {
            let key = if i % 3 == 0 { "a" } else { "b" };
            let mut r = record(&format!("gen-{:010}-{i:04}", 1000 + i), key, 0.1, 1000 + i);
            if i % 10 == 0 {
                r.status = Some(500);
                r.error = Some("boom".into());
            }
            r.model = if i % 2 == 0 {
                "even".into()
            } else {
                "odd".into()
            };
            batch.push(r);
        }
        db.put_records(&batch).unwrap();
        let all = |mut q: GenerationQuery| {
            let mut seen = Vec::new();
            loop {
                let page = db.list_records(&q).unwrap();
                seen.extend(page.records.iter().map(|r| r.id.clone()));
                match page.next {
                    Some(c) => q.before = cursor_id(&c),
                    None => return seen,
                }
            }
        };
        let q = |key: Option<&str>| GenerationQuery {
            key: key.map(str::to_owned),
            limit: 7,
            ..Default::default()
        };
        // Every record once, newest first, a page at a time.
        let everything = all(q(None));
        assert_eq!(everything.len(), 300);
        assert!(everything.windows(2).all(|w| w[0] > w[1]));
        // A key's, through its index.
        let of_a = all(q(Some("a")));
        assert_eq!(of_a.len(), 100);
        assert!(all(q(Some("nobody"))).is_empty());
        // Filters and a time range.
        let errors = all(GenerationQuery {
            status: Some(StatusFilter::Error),
            model: Some("even".into()),
            since: Some(1100),
            until: Some(1200),
            limit: 3,
            ..Default::default()
        });
        assert_eq!(errors.len(), 10, "{errors:?}");
        // Records written while paging: the pages already read are not repeated.
        let mut first = db.list_records(&q(None)).unwrap();
        db.put_records(&[record("gen-0000002000-new", "a", 0.1, 2000)])
            .unwrap();
        let rest = all(GenerationQuery {
            before: cursor_id(&first.next.take().unwrap()),
            ..q(None)
        });
        assert_eq!(rest.len(), 293);
        // Pruning drops the index entries too.
        db.prune_records(1150).unwrap();
        assert_eq!(all(q(Some("a"))).len(), 51);
    }

    #[test]
    fn a_record_stored_in_the_first_format_still_reads() {
        // Written by the version 1 encoder (before `cache_write_tokens`).
        let v1 = "012367656e2d313739363231323830302d303030306161616161616161616161616161616180a1\
                  80b10d01056b65795f31016d016d010170010175ac0207c8010001000000000000d03f000101c8\
                  0100010473746f70000c0103010170016d01750673657276656401c8010b000113687474707\
                  33a2f2f6170702e6578616d706c65000103752d31";
        let bytes: Vec<u8> = (0..v1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).unwrap())
            .collect();
        let r = decode_record(&bytes).unwrap();
        assert_eq!(r.id, "gen-1796212800-0000aaaaaaaaaaaaaaaa");
        assert_eq!((r.prompt_tokens, r.cached_tokens), (300, 200));
        assert_eq!((r.cost, r.cache_write_tokens), (Some(0.25), 0));
        assert_eq!(r.attempts.len(), 1);
        assert_eq!(r.referer.as_deref(), Some("https://app.example"));
        assert_eq!(r.user.as_deref(), Some("u-1"));
        assert_eq!(r.dialect, crate::Dialect::Chat);
        assert_eq!(
            (r.categories.as_deref(), r.session_id.as_deref()),
            (None, None)
        );
        // Written again, it is version 4 and reads back the same.
        let mut r2 = r.clone();
        r2.cache_write_tokens = 50;
        r2.dialect = crate::Dialect::Messages;
        r2.categories = Some("cli-agent".into());
        r2.session_id = Some("s-1".into());
        let again = encode_record(&r2).unwrap();
        assert_eq!(again[0], RECORD_POSTCARD_V4);
        // A version 3 record (before `categories` and `session_id`) reads with neither, and a
        // version 2 one (before `dialect`) as `chat`.
        let mut v3 = encode_record(&r).unwrap();
        v3.truncate(v3.len() - 2);
        v3[0] = RECORD_POSTCARD_V3;
        assert_eq!(decode_record(&v3).unwrap(), r);
        let mut v2 = v3.clone();
        v2.pop();
        v2[0] = RECORD_POSTCARD_V2;
        assert_eq!(decode_record(&v2).unwrap(), r);
        assert_eq!(decode_record(&again).unwrap(), r2);
        assert_eq!(
            decode_record(&[9, 1, 2]).unwrap_err(),
            "unknown record format"
        );
    }

    /// A file backend whose writes fail with ENOSPC while `full` is set.
    #[derive(Debug)]
    struct Disk {
        file: redb::backends::FileBackend,
        full: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Disk {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for Disk {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.file.read(offset, len)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
            self.check()?;
            self.file.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.file.write(offset, data)
        }
    }

    fn on_disk(dir: &Path) -> (StateDb, Arc<std::sync::atomic::AtomicBool>) {
        let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, flag) = (dir.join(FILE_NAME), full.clone());
        let db = StateDb::open_with_backend(dir, move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            Disk {
                file: redb::backends::FileBackend::new(file).unwrap(),
                full: flag.clone(),
            }
        })
        .unwrap();
        (db, full)
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_full_disk_the_store_reopens_itself_and_loses_nothing() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let (db, full) = on_disk(dir.path());
        db.put_records(&[record("gen-1796212800-a", "k", 0.25, 1_796_212_800)])
            .unwrap();

        full.store(true, Relaxed);
        let batch = [record("gen-1796212801-b", "k", 0.5, 1_796_212_801)];
        let err = db.put_records(&batch).unwrap_err();
        assert!(err.0.contains("No space left"), "{err}");
        // Still full: the reopening fails, and is not tried again before its backoff.
        let err = db.put_records(&batch).unwrap_err();
        assert!(err.0.contains("cannot be reopened"), "{err}");
        let err = db
            .put_key(&KeyRecord::from_config("a", "sk-mg-aaaaaaaaaaaaaaaaaaaa"))
            .unwrap_err();
        assert!(err.0.contains("unavailable after an I/O error"), "{err}");

        // Space again: after the backoff the store reopens, and the batch offered again lands.
        full.store(false, Relaxed);
        tokio::time::advance(REOPEN_BACKOFF).await;
        db.put_records(&batch).unwrap();
        let mut ids: Vec<String> = db.all_records().into_iter().map(|r| r.id).collect();
        ids.sort();
        assert_eq!(ids, ["gen-1796212800-a", "gen-1796212801-b"]);
        assert_eq!(db.load_spend().unwrap()[0].1.total, 0.75);
        db.put_key(&KeyRecord::from_config("a", "sk-mg-aaaaaaaaaaaaaaaaaaaa"))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_usage_writer_waits_out_a_full_disk_and_then_writes_every_record() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let (db, full) = on_disk(dir.path());
        let sinks: Vec<Arc<dyn UsageSink>> = vec![Arc::new(db.clone())];
        let recorder =
            crate::usage::Recorder::start(sinks, Arc::new(crate::usage::SpendLedger::new()), 64)
                .unwrap();
        full.store(true, Relaxed);
        for i in 0..5 {
            let permit = recorder.try_reserve().unwrap();
            let r = record(&format!("gen-1796212800-{i}"), "k", 0.1, 1_796_212_800);
            permit.send(crate::usage::Msg::Record(Box::new(r)));
        }
        // The writer keeps retrying while the disk is full: nothing written, nothing dropped.
        let flushed = tokio::time::timeout(Duration::from_secs(60), recorder.flush()).await;
        assert!(
            flushed.is_err(),
            "nothing can be written while the disk is full"
        );
        assert!(recorder.stats().write_failures > 0);
        assert_eq!(recorder.stats().written, 0);

        full.store(false, Relaxed);
        tokio::time::timeout(Duration::from_secs(60), recorder.flush())
            .await
            .expect("written once there is space");
        assert_eq!(db.all_records().len(), 5);
        assert!((db.load_spend().unwrap()[0].1.total - 0.5).abs() < 1e-12);
    }

    #[test]
    fn keys_survive_a_reopen_and_garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(dir.path()).unwrap();
            let mut r = KeyRecord::from_config("a", "sk-mg-aaaaaaaaaaaaaaaaaaaa");
            r.id = "key_1".into();
            db.put_key(&r).unwrap();
            let mut gone = r.clone();
            gone.id = "key_2".into();
            db.put_key(&gone).unwrap();
            db.delete_key("key_2").unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        let keys = db.load_keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].id, "key_1");
        drop(db);

        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join(FILE_NAME), b"not a database at all").unwrap();
        let err = StateDb::open(bad.path()).unwrap_err();
        assert!(err.0.contains("cannot open the state database"), "{err}");

        // A file cut short (redb asserts on it): an error, not a panic.
        let whole = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        for cut in [100, 4096, 8000, whole.len() / 2] {
            std::fs::write(bad.path().join(FILE_NAME), &whole[..cut]).unwrap();
            let err = StateDb::open(bad.path()).unwrap_err();
            assert!(
                err.0.contains("cannot open the state database"),
                "{cut}: {err}"
            );
        }
    }
}
