//! Where a request's final usage is reported, once, to whoever asked for it.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::chat::Usage;

type UsageObserver = Box<dyn FnOnce(&SlotReport) + Send>;

/// How the answer behind a [`UsageSlot`] ended, as its last writer saw it.
#[derive(Debug, Clone, Default)]
pub struct SlotReport {
    /// The usage the provider reported (the attempt that served replaces earlier ones).
    pub usage: Option<Usage>,
    /// The last finish reason seen.
    pub finish_reason: Option<Arc<str>>,
    /// For a stream: how many upstream events carried output (about one token each); what
    /// metering estimates from when no usage was ever reported.
    pub events: u64,
    /// For a stream: when its first event went out.
    pub first_event_at: Option<tokio::time::Instant>,
    /// For a stream: how it ended; `None` when it was dropped before its end (the client went
    /// away), and for an answer that was not streamed.
    pub stream_end: Option<StreamEnd>,
    /// The answer's text, when the request asked for it to be captured
    /// ([`CaptureContent`](super::CaptureContent)).
    pub output: Option<String>,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// `[DONE]` went out.
    Done,
    /// The one error event went out; its message.
    Failed(String),
}

/// Where a request's final usage is reported, once, to whoever asked for it.
///
/// A layer that wants the usage of the answer (the rate limiter reconciling tokens, metering)
/// puts a `UsageSlot` in the request extensions (or takes the one already there) and registers
/// an observer with [`on_final`](Self::on_final) or [`on_report`](Self::on_report). Stream
/// normalisation records the usage the provider reported ([`record`](Self::record)) and how a
/// stream ended ([`report_stream`](Self::report_stream)); the observers run when the last clone
/// of the slot is dropped: after a whole answer, after the last byte of a stream, after a
/// failure, or when the client went away mid-stream. The usage is `None` when none was ever
/// reported (the provider never answered, or the client left before the usage chunk).
///
/// Observers run on whatever thread drops the last clone: they must be quick and must not
/// block.
#[derive(Clone, Default)]
pub struct UsageSlot(Arc<SlotInner>);

#[derive(Default)]
struct SlotInner {
    report: Mutex<SlotReport>,
    observers: Mutex<Vec<UsageObserver>>,
}

impl UsageSlot {
    /// An empty slot.
    pub fn new() -> Self {
        UsageSlot::default()
    }

    /// Records the usage of the answer; a later record (a fallback attempt that served)
    /// replaces an earlier one.
    pub fn record(&self, usage: Usage) {
        lock(&self.0.report).usage = Some(usage);
    }

    /// Records how a stream went (called once per stream, when it ends or is dropped); a
    /// later stream (a fallback attempt that served) replaces an earlier one. `usage` replaces
    /// the recorded usage only when present.
    pub fn report_stream(
        &self,
        usage: Option<&Usage>,
        finish_reason: Option<&str>,
        events: u64,
        first_event_at: Option<tokio::time::Instant>,
        end: Option<StreamEnd>,
    ) {
        let mut r = lock(&self.0.report);
        if let Some(u) = usage {
            r.usage = Some(u.clone());
        }
        r.finish_reason = finish_reason.map(Arc::from);
        r.events = events;
        r.first_event_at = first_event_at;
        r.stream_end = end;
    }

    /// Records the answer's text (captured for telemetry); a later one replaces it.
    pub fn record_output(&self, text: String) {
        lock(&self.0.report).output = Some(text);
    }

    /// Records the finish reason of an answer that was not streamed.
    pub fn record_finish_reason(&self, reason: Option<&str>) {
        lock(&self.0.report).finish_reason = reason.map(Arc::from);
    }

    /// The usage recorded so far.
    pub fn usage(&self) -> Option<Usage> {
        lock(&self.0.report).usage.clone()
    }

    /// Runs `f` with the final usage once every clone of this slot is gone.
    pub fn on_final(&self, f: impl FnOnce(Option<&Usage>) + Send + 'static) {
        self.on_report(move |r| f(r.usage.as_ref()));
    }

    /// Runs `f` with the whole final report once every clone of this slot is gone.
    pub fn on_report(&self, f: impl FnOnce(&SlotReport) + Send + 'static) {
        lock(&self.0.observers).push(Box::new(f));
    }
}

impl fmt::Debug for UsageSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageSlot")
            .field("report", &*lock(&self.0.report))
            .finish_non_exhaustive()
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let report = std::mem::take(self.report.get_mut().unwrap_or_else(|e| e.into_inner()));
        let observers = std::mem::take(self.observers.get_mut().unwrap_or_else(|e| e.into_inner()));
        for f in observers {
            f(&report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Usage;

    #[test]
    fn observers_run_once_when_the_last_clone_goes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let slot = UsageSlot::new();
        let s = seen.clone();
        slot.on_final(move |u| s.lock().unwrap().push(u.map(|u| u.total_tokens)));
        let clone = slot.clone();
        clone.record(Usage {
            total_tokens: 7,
            ..Usage::default()
        });
        drop(slot);
        assert!(seen.lock().unwrap().is_empty(), "a clone is still alive");
        drop(clone);
        assert_eq!(*seen.lock().unwrap(), vec![Some(7)]);
    }

    #[test]
    fn no_record_gives_none() {
        let seen = Arc::new(Mutex::new(None));
        let slot = UsageSlot::new();
        let s = seen.clone();
        slot.on_final(move |u| *s.lock().unwrap() = Some(u.is_none()));
        drop(slot);
        assert_eq!(*seen.lock().unwrap(), Some(true));
    }
}
