//! Where records go: the [`UsageSink`] trait, the bounded queue and its background writer
//! ([`Recorder`]), and two sinks (JSON Lines export, in memory). The state store's sink is
//! [`StateDb`](crate::state::StateDb).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::activity::HourlyRollups;
use super::ledger::SpendStore;
use super::query::{GenerationPage, GenerationQuery};
use super::record::UsageRecord;
use crate::future::BoxFuture;

/// A sink that could not take a batch (it is retried, never dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SinkError {}

/// Stores generation records. Batches come from one background writer, in order; a batch that
/// fails is offered again (after a pause) until it is taken, so a sink must accept a batch it
/// has partly written before (records are keyed by their id).
pub trait UsageSink: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Stores a batch durably.
    fn write(&self, batch: Arc<[UsageRecord]>) -> BoxFuture<'_, Result<(), SinkError>>;

    /// The record of generation `id`, for sinks that can look one up (default: none).
    fn generation(&self, id: String) -> BoxFuture<'_, Result<Option<UsageRecord>, SinkError>> {
        let _ = id;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// The hourly rollups of the hours from `since` (rounded down to its hour) to `until`,
    /// for sinks that keep them (default: `None`, they do not).
    fn activity(
        &self,
        since: i64,
        until: i64,
    ) -> BoxFuture<'_, Result<Option<HourlyRollups>, SinkError>> {
        let _ = (since, until);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// A page of records, newest first, for sinks that can list them (default: `None`, they
    /// cannot).
    fn generations(
        &self,
        query: GenerationQuery,
    ) -> BoxFuture<'_, Result<Option<GenerationPage>, SinkError>> {
        let _ = query;
        Box::pin(std::future::ready(Ok(None)))
    }
}

pub(crate) enum Msg {
    Record(Box<UsageRecord>),
    Flush(oneshot::Sender<()>),
}

/// A place in the queue, taken before a request goes upstream: its record can always be sent,
/// from any thread, without waiting.
pub(crate) type Permit = mpsc::OwnedPermit<Msg>;

/// Counters of the queue and the writer.
#[derive(Debug, Default)]
struct Counters {
    waits: AtomicU64,
    refused: AtomicU64,
    written: AtomicU64,
    write_failures: AtomicU64,
    spilled: AtomicU64,
}

/// What the [`Recorder`] has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderStats {
    /// Places in the queue now taken (records queued plus requests in flight holding one).
    pub queued: usize,
    /// The queue's size.
    pub capacity: usize,
    /// Requests that found the queue full and waited for a place.
    pub waits: u64,
    /// Requests refused (503) because no place freed up within the wait bound.
    pub refused: u64,
    /// Records the sinks have taken.
    pub written: u64,
    /// Failed batch writes (each retried).
    pub write_failures: u64,
    /// Records written to the spill file at shutdown, because a sink would not take them.
    pub spilled: u64,
}

/// The bounded queue between the request path and the sinks, with its background writer.
///
/// Each metered request takes a place in the queue *before* it goes upstream (waiting up to
/// `max_wait` when the queue is full, then refused with a 503, so nothing was spent); the
/// place is used to send its record when the request ends, whatever the way it ends, so a
/// record is never dropped for want of room. The writer takes records in batches and hands
/// each batch to every sink in turn, retrying a failing sink until it takes the batch.
/// [`flush`](Self::flush) waits until everything queued so far is written: the shutdown path
/// and the generation lookup use it. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    ledger: Arc<dyn SpendStore>,
    sinks: Arc<[Arc<dyn UsageSink>]>,
    counters: Arc<Counters>,
    max_wait: Duration,
    /// Wakes the writer out of its linger when a flush is waiting.
    flushing: Arc<tokio::sync::Notify>,
    closing: Arc<Closing>,
}

/// Shutdown's hand to the writer: once `on`, a batch a sink refuses goes to the spill file.
#[derive(Default)]
struct Closing {
    on: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    spill: Mutex<Option<PathBuf>>,
}

/// How long the writer lets a batch fill before it writes it (unless a flush is waiting).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field(
                "sinks",
                &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("stats", &self.stats())
            .finish()
    }
}

/// Records per batch write, at most.
const BATCH: usize = 512;

impl Recorder {
    /// A recorder with a queue of `capacity` places writing to `sinks`, its writer spawned on
    /// the current Tokio runtime; batches fill for up to [`DEFAULT_LINGER`]. Errors outside a
    /// runtime.
    pub fn start(
        sinks: Vec<Arc<dyn UsageSink>>,
        ledger: Arc<dyn SpendStore>,
        capacity: usize,
    ) -> Result<Self, SinkError> {
        Self::start_with_linger(sinks, ledger, capacity, DEFAULT_LINGER)
    }

    /// As [`start`](Self::start), with the writer letting each batch fill for up to `linger`
    /// (a durable write per batch is what costs: fewer, larger batches cost much less per
    /// record). A [`flush`](Self::flush) writes at once. Records wait in memory meanwhile, as
    /// they do in the queue.
    pub fn start_with_linger(
        sinks: Vec<Arc<dyn UsageSink>>,
        ledger: Arc<dyn SpendStore>,
        capacity: usize,
        linger: Duration,
    ) -> Result<Self, SinkError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            SinkError("the usage recorder must be started inside a Tokio runtime".into())
        })?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sinks: Arc<[Arc<dyn UsageSink>]> = sinks.into();
        let counters = Arc::new(Counters::default());
        let flushing = Arc::new(tokio::sync::Notify::new());
        let closing = Arc::new(Closing::default());
        handle.spawn(writer(
            rx,
            sinks.clone(),
            counters.clone(),
            linger,
            flushing.clone(),
            closing.clone(),
        ));
        Ok(Recorder {
            tx,
            ledger,
            sinks,
            counters,
            max_wait: Duration::from_secs(5),
            flushing,
            closing,
        })
    }

    /// Where [`close`](Self::close) puts the records a failing sink has not taken (JSON
    /// Lines, created when first needed); [`replay_spill`] writes them at the next start.
    pub fn spill_to(self, path: impl Into<PathBuf>) -> Self {
        *self.closing.spill.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.into());
        self
    }

    /// Shutdown: waits up to `wait` for every queued record to be written. If a sink is
    /// still failing then, and a [spill file](Self::spill_to) is set, the writer stops
    /// retrying and appends what is left (the batch in hand and the rest of the queue) to
    /// it, waiting up to `wait` again. Returns whether every record went somewhere durable.
    pub async fn close(&self, wait: Duration) -> bool {
        if tokio::time::timeout(wait, self.flush()).await.is_ok() {
            return true;
        }
        if self
            .closing
            .spill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return false;
        }
        self.closing.on.store(true, Ordering::Relaxed);
        self.closing.wake.notify_one();
        tokio::time::timeout(wait, self.flush()).await.is_ok()
    }

    /// How long a request waits for a place in a full queue before it is refused (default 5 s).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The spend store the credit check reads.
    pub fn ledger(&self) -> &Arc<dyn SpendStore> {
        &self.ledger
    }

    /// The counters so far.
    pub fn stats(&self) -> RecorderStats {
        let capacity = self.tx.max_capacity();
        RecorderStats {
            queued: capacity - self.tx.capacity(),
            capacity,
            waits: self.counters.waits.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            written: self.counters.written.load(Ordering::Relaxed),
            write_failures: self.counters.write_failures.load(Ordering::Relaxed),
            spilled: self.counters.spilled.load(Ordering::Relaxed),
        }
    }

    /// A place in the queue at once, if there is one.
    pub(crate) fn try_reserve(&self) -> Option<Permit> {
        self.tx.clone().try_reserve_owned().ok()
    }

    /// A place in the queue, waiting up to the bound; `Err` says why there is none.
    pub(crate) async fn reserve(&self) -> Result<Permit, crate::Error> {
        if let Some(p) = self.try_reserve() {
            return Ok(p);
        }
        self.counters.waits.fetch_add(1, Ordering::Relaxed);
        let unavailable = |why: &str| {
            crate::Error::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                format!("usage recording is {why}; try again shortly"),
            )
            .with_retry_after(Some(Duration::from_secs(1)))
        };
        match tokio::time::timeout(self.max_wait, self.tx.clone().reserve_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(unavailable("stopped")),
            Err(_) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    wait_ms = self.max_wait.as_millis() as u64,
                    "usage queue full: request refused"
                );
                Err(unavailable("backed up"))
            }
        }
    }

    /// Waits until every record queued before this call is written by every sink.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            self.flushing.notify_one();
            let _ = wait.await;
        }
    }

    /// The hourly rollups from `since` to `until` from the first sink that keeps them (`None`
    /// when none does), after a flush, as [`generation`](Self::generation).
    pub async fn activity(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Option<HourlyRollups>, SinkError> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
        for sink in self.sinks.iter() {
            if let Some(rows) = sink.activity(since, until).await? {
                return Ok(Some(rows));
            }
        }
        Ok(None)
    }

    /// A page of records from the first sink that can list them (`None` when none can), after
    /// a flush, as [`generation`](Self::generation).
    pub async fn generations(
        &self,
        query: GenerationQuery,
    ) -> Result<Option<GenerationPage>, SinkError> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
        for sink in self.sinks.iter() {
            if let Some(page) = sink.generations(query.clone()).await? {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    /// The record of generation `id` from the first sink that has it, after a flush (so a
    /// request that just ended is found; the flush waits at most 5 s).
    pub async fn generation(&self, id: &str) -> Result<Option<UsageRecord>, SinkError> {
        // Bounded: a sink that keeps failing must not hang the lookup (what is stored is
        // still found).
        let _ = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
        for sink in self.sinks.iter() {
            if let Some(r) = sink.generation(id.to_owned()).await? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Msg>,
    sinks: Arc<[Arc<dyn UsageSink>]>,
    counters: Arc<Counters>,
    linger: Duration,
    flushing: Arc<tokio::sync::Notify>,
    closing: Arc<Closing>,
) {
    let mut msgs = Vec::with_capacity(BATCH);
    // Set once a batch was spilled at shutdown: the rest goes straight to the spill file.
    let mut spilling = false;
    while rx.recv_many(&mut msgs, BATCH).await > 0 {
        // Let the batch fill: sleep through the linger (one wake-up per batch, not one per
        // record), unless a flush is waiting or comes; then take what is there.
        if !linger.is_zero()
            && msgs.len() < BATCH
            && !msgs.iter().any(|m| matches!(m, Msg::Flush(_)))
        {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = flushing.notified() => {}
            }
            while msgs.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
        }
        let mut records = Vec::with_capacity(msgs.len());
        let mut flushes = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Record(r) => records.push(*r),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        if !records.is_empty() {
            let batch: Arc<[UsageRecord]> = records.into();
            let mut spilled = spilling && spill(&closing, &batch, &counters).await;
            'sinks: for sink in sinks.iter().filter(|_| !spilled) {
                let mut pause = Duration::from_millis(50);
                while let Err(e) = sink.write(batch.clone()).await {
                    counters.write_failures.fetch_add(1, Ordering::Relaxed);
                    if closing.on.load(Ordering::Relaxed)
                        && spill(&closing, &batch, &counters).await
                    {
                        spilling = true;
                        spilled = true;
                        break 'sinks;
                    }
                    tracing::error!(
                        sink = sink.name(),
                        error = %e,
                        records = batch.len(),
                        "usage sink failed; retrying the batch"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = closing.wake.notified() => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
            if !spilled {
                counters
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Appends `batch` to the spill file; whether it is there now.
async fn spill(closing: &Closing, batch: &Arc<[UsageRecord]>, counters: &Counters) -> bool {
    let Some(path) = closing
        .spill
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    else {
        return false;
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let written = match JsonLinesSink::open(&path) {
        Ok(file) => file.write(batch.clone()).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => {
            counters
                .spilled
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                path = %path.display(),
                records = batch.len(),
                "shutting down with a usage sink failing: records spilled, to be written at the next start"
            );
            true
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot spill usage records");
            false
        }
    }
}

/// Writes the records of a spill file (see [`Recorder::spill_to`]) to every sink, then
/// removes it; how many there were. A missing file is none. Records are keyed by id, so the
/// state stores take each once; a JSON Lines export may see a record twice.
pub async fn replay_spill(path: &Path, sinks: &[Arc<dyn UsageSink>]) -> Result<usize, SinkError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(SinkError(format!("cannot read {}: {e}", path.display()))),
    };
    let mut records = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<UsageRecord>(line) {
            Ok(r) => records.push(r),
            // A line cut by a crash while spilling: the rest is still worth having.
            Err(e) => {
                tracing::error!(path = %path.display(), line = n + 1, error = %e, "unreadable spilled record skipped")
            }
        }
    }
    for chunk in records.chunks(BATCH) {
        let batch: Arc<[UsageRecord]> = chunk.to_vec().into();
        for sink in sinks {
            sink.write(batch.clone()).await.map_err(|e| {
                SinkError(format!(
                    "cannot write the spilled records of {} to {}: {e}",
                    path.display(),
                    sink.name()
                ))
            })?;
        }
    }
    std::fs::remove_file(path)
        .map_err(|e| SinkError(format!("cannot remove {}: {e}", path.display())))?;
    if !records.is_empty() {
        tracing::warn!(path = %path.display(), records = records.len(), "spilled usage records written");
    }
    Ok(records.len())
}

/// Appends each record as one JSON line to a file (for export), synced per batch.
#[derive(Debug)]
pub struct JsonLinesSink {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl JsonLinesSink {
    /// Opens (creating it if needed) `path` for appending.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SinkError(format!("cannot open {}: {e}", path.display())))?;
        Ok(JsonLinesSink {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }
}

impl UsageSink for JsonLinesSink {
    fn name(&self) -> &str {
        "jsonl"
    }

    fn write(&self, batch: Arc<[UsageRecord]>) -> BoxFuture<'_, Result<(), SinkError>> {
        let file = self.file.clone();
        let path = self.path.clone();
        Box::pin(async move {
            let mut text = Vec::with_capacity(batch.len() * 512);
            for r in batch.iter() {
                serde_json::to_writer(&mut text, r)
                    .map_err(|e| SinkError(format!("cannot encode a record: {e}")))?;
                text.push(b'\n');
            }
            tokio::task::spawn_blocking(move || {
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                f.write_all(&text)?;
                f.sync_data()
            })
            .await
            .map_err(|e| SinkError(e.to_string()))?
            .map_err(|e| SinkError(format!("cannot write {}: {e}", path.display())))
        })
    }
}

/// Keeps every record in memory (tests, and embedders who read records themselves).
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<UsageRecord>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        MemorySink::default()
    }

    /// A copy of every record taken so far, in order.
    pub fn records(&self) -> Vec<UsageRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl UsageSink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    fn write(&self, batch: Arc<[UsageRecord]>) -> BoxFuture<'_, Result<(), SinkError>> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch.iter().cloned());
        Box::pin(std::future::ready(Ok(())))
    }

    fn generation(&self, id: String) -> BoxFuture<'_, Result<Option<UsageRecord>, SinkError>> {
        let found = self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|r| r.id == id)
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
