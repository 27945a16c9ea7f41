//! [`UsageLayer`]: credit limits, cost, and one generation record per client request.
//!
//! Sits outside [`FallbackLayer`](crate::fallback::FallbackLayer), once per client request
//! (the proxy's order: decode → model rewrite → **usage** → fallback → stream normalisation →
//! dispatch).
//!
//! - **Before**: a key whose spend has reached its `limit` in the current window
//!   (`limit_reset`: daily, weekly from Monday, monthly, UTC; none: all time) gets a 402 in the
//!   envelope. With [`refuse_unaffordable`](UsageLayer::refuse_unaffordable), a request whose
//!   `max_tokens` (or `max_completion_tokens`) could not be paid at the first target's prices
//!   is refused up front too. Then the request takes a place in the [`Recorder`]'s bounded
//!   queue (waiting a bounded time when it is full; 503 after that, before anything was spent).
//! - **Down the stack**: it puts [`Attempts`], a [`UsageSlot`] and
//!   [`PriceAnswers`] in the request extensions: the fallback layer records every attempt,
//!   stream normalisation reports the provider's usage and writes `usage.cost` (from the
//!   prices of the endpoint that actually served) into the answer, or into the stream's usage
//!   chunk.
//! - **After**, however the request ends (a whole answer, a stream's `[DONE]` or error event,
//!   an error answer, or the client going away, mid-stream or before the answer): one
//!   [`UsageRecord`] with tokens (prompt, completion, cached, reasoning), cost, latency, time
//!   to first token, finish reason, every attempt and the attribution headers goes to the
//!   queue, and the key's spend grows by the cost. An answer that failed with no completion
//!   tokens costs nothing. A stream the client left before the provider reported usage is
//!   recorded `cancelled`, with the gateway's own count of what was streamed marked
//!   `estimated`. An [`ObserveRecord`] in the request extensions is told of the record as it is
//!   made (the telemetry layer makes the request's spans from it).
//!
//! ```
//! use std::sync::Arc;
//! use modelgate::usage::{MemorySink, Recorder, SpendLedger, UsageLayer};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let sink = Arc::new(MemorySink::new());
//! let recorder = Recorder::start(vec![sink.clone()], Arc::new(SpendLedger::new()), 16_384).unwrap();
//! let layer = UsageLayer::new(recorder.clone());
//! // Stack it between ModelRewriteLayer and FallbackLayer; at shutdown:
//! recorder.flush().await;
//! # let _ = layer;
//! # });
//! ```

pub mod activity;
mod ledger;
pub mod metrics;
pub mod query;
mod record;
mod sink;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

pub use self::ledger::{window_start, KeySpend, SpendLedger, SpendStore, Window};
use self::record::millis;
pub use self::record::{AttemptRecord, UsageRecord};
pub use self::sink::{
    replay_spill, JsonLinesSink, MemorySink, Recorder, RecorderStats, SinkError, UsageSink,
    DEFAULT_LINGER,
};
pub(crate) use self::sink::{Msg, Permit};
use crate::auth::{LimitReset, Principal};
use crate::chat::{ChatRequest, Message};
use crate::dialect::Dialect;
use crate::facts::{
    Attempt, AttemptOutcome, Attempts, GenerationId, PriceAnswers, Pricing, RoutePlan, SlotReport,
    StreamEnd, Target, Tokens, UsageSlot,
};
use crate::future::BoxFuture;
use crate::Error;

/// A wall clock in Unix seconds (replaceable in tests).
pub type WallClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Told of a request's record when it is made: the telemetry layer exports the request's
/// spans from it. Put one in the request extensions as an [`ObserveRecord`].
pub trait RecordObserver: Send + Sync {
    /// The usage layer took the request: [`on_record`](Self::on_record) follows, once,
    /// however the request ends (a stream's end, the client going away included).
    fn claimed(&self);

    /// The request's record, just made (before it goes to the queue), and what the record
    /// does not keep.
    fn on_record(&self, record: &UsageRecord, detail: &RecordDetail<'_>);
}

/// What a [`RecordObserver`] is told beside the record.
#[derive(Debug)]
#[non_exhaustive]
pub struct RecordDetail<'a> {
    /// Every attempt, with its start and its span.
    pub attempts: &'a [Attempt],
    /// The calling key's name.
    pub key_name: Option<&'a str>,
    /// The prompt.
    pub messages: &'a [Message],
    /// The answer's text, when it was captured ([`CaptureContent`](crate::facts::CaptureContent)).
    pub output: Option<&'a str>,
}

/// A request extension: the [`RecordObserver`] of the request's record.
#[derive(Clone)]
pub struct ObserveRecord(pub Arc<dyn RecordObserver>);

impl std::fmt::Debug for ObserveRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserveRecord")
    }
}

fn system_clock() -> i64 {
    crate::facts::unix_now() as i64
}

/// Builds [`Meter`]; see the [module docs](self).
#[derive(Clone)]
pub struct UsageLayer {
    recorder: Recorder,
    refuse_unaffordable: bool,
    clock: WallClock,
}

impl std::fmt::Debug for UsageLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLayer")
            .field("recorder", &self.recorder)
            .field("refuse_unaffordable", &self.refuse_unaffordable)
            .finish()
    }
}

impl UsageLayer {
    /// Meters into `recorder` (whose ledger the credit check reads).
    pub fn new(recorder: Recorder) -> Self {
        UsageLayer {
            recorder,
            refuse_unaffordable: false,
            clock: Arc::new(system_clock),
        }
    }

    /// Also refuse (402) a request whose `max_tokens` could not be paid from what is left of
    /// the key's limit, at the first target's prices (default off).
    pub fn refuse_unaffordable(mut self, on: bool) -> Self {
        self.refuse_unaffordable = on;
        self
    }

    /// The wall clock the credit windows are read with (Unix seconds).
    pub fn clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

impl<S> Layer<S> for UsageLayer {
    type Service = Meter<S>;
    fn layer(&self, inner: S) -> Meter<S> {
        Meter {
            inner,
            layer: self.clone(),
        }
    }
}

/// Meters each request; see the [module docs](self).
#[derive(Clone)]
pub struct Meter<S> {
    inner: S,
    layer: UsageLayer,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Meter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

fn window_name(reset: Option<LimitReset>) -> &'static str {
    match reset {
        None => "",
        Some(LimitReset::Daily) => " today (UTC)",
        Some(LimitReset::Weekly) => " this week (UTC, from Monday)",
        Some(LimitReset::Monthly) => " this month (UTC)",
    }
}

/// The 402 of a key whose limit is spent, or that cannot afford `max_tokens`.
fn credit_check(
    refuse_unaffordable: bool,
    req: &Request<ChatRequest>,
    principal: &Principal,
    spend: &KeySpend,
    now: i64,
) -> Result<(), Error> {
    let Some(limit) = principal.limit else {
        return Ok(());
    };
    let spent = spend.spent(principal.limit_reset, now);
    let window = window_name(principal.limit_reset);
    if spent >= limit {
        return Err(Error::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            format!(
                "key `{}` has spent its credit limit: ${spent:.6} of ${limit}{window}",
                principal.name
            ),
        ));
    }
    if !refuse_unaffordable {
        return Ok(());
    }
    let body = req.body();
    let Some(max) = body.max_completion_tokens.or(body.max_tokens) else {
        return Ok(());
    };
    let pricing = req
        .extensions()
        .get::<RoutePlan>()
        .and_then(|p| p.targets.first())
        .or_else(|| req.extensions().get::<Target>())
        .and_then(|t| t.pricing);
    if let Some(p) = pricing {
        let worst = p.cost(0, u64::from(max));
        if spent + worst > limit {
            return Err(Error::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                format!(
                    "key `{}` cannot afford max_tokens = {max} (up to ${worst:.6}): ${:.6} of its ${limit} limit is left{window}",
                    principal.name,
                    limit - spent
                ),
            )
            .with_param(Some("max_tokens".into())));
        }
    }
    Ok(())
}

/// Who served: provider, public model, upstream model, prices.
type Served = (Arc<str>, Arc<str>, Arc<str>, Option<Pricing>);

/// What the response future saw, for the record made when the slot's last clone goes.
#[derive(Default)]
struct Answer {
    status: Option<u16>,
    error: Option<String>,
    answered_at: Option<tokio::time::Instant>,
}

/// The part of the record known when the request arrives.
struct Pending {
    permit: Permit,
    ledger: Arc<dyn SpendStore>,
    answer: Arc<Mutex<Answer>>,
    attempts: Attempts,
    started: tokio::time::Instant,
    /// The target when there is no fallback layer to record attempts.
    target: Option<Served>,
    /// The prompt, for an estimate when the provider never reports usage.
    messages: Arc<Vec<Message>>,
    /// Whether the model is priced in the catalog: its metrics are labelled with its id;
    /// pass-throughs share one label (their names are the client's, so unbounded).
    catalog_model: bool,
    record: UsageRecord,
    /// Told of the record (and the key's name), when the request is observed.
    observer: Option<(ObserveRecord, Option<String>)>,
}

/// An attribution header, as recorded (clipped).
fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(clipped)
}

/// An attribution value (a header, the request's `user`) as recorded: its first 512
/// characters, so that no request can make its record large.
fn clipped(v: &str) -> String {
    v.chars().take(512).collect()
}

impl Pending {
    fn finish(self, report: &SlotReport) {
        let Pending {
            permit,
            ledger,
            answer,
            attempts,
            started,
            target,
            messages,
            catalog_model,
            mut record,
            observer,
        } = self;
        let answer = std::mem::take(&mut *answer.lock().unwrap_or_else(|e| e.into_inner()));
        let attempts = attempts.to_vec();
        record.attempts = attempts.iter().map(AttemptRecord::from).collect();
        let served = attempts
            .iter()
            .rev()
            .find(|a| a.outcome == AttemptOutcome::Served)
            .map(|a| {
                (
                    a.provider.clone(),
                    a.model.clone(),
                    a.upstream_model.clone(),
                    a.pricing,
                )
            })
            .or_else(|| {
                // No fallback layer: the one target, when it answered.
                target.filter(|_| attempts.is_empty() && answer.status == Some(200))
            });
        let mut pricing = None;
        if let Some((provider, model, upstream, p)) = served {
            record.provider = Some(provider.to_string());
            record.model = model.to_string();
            record.upstream_model = Some(upstream.to_string());
            pricing = p;
        }
        record.status = answer.status;
        record.cancelled = match answer.status {
            None => true,
            Some(s) => s == 200 && record.streamed && report.stream_end.is_none(),
        };
        record.error = answer.error.or_else(|| match &report.stream_end {
            Some(StreamEnd::Failed(m)) => Some(m.clone()),
            _ => None,
        });
        record.finish_reason = report.finish_reason.as_deref().map(str::to_owned);
        // What the cost is computed from, and the record's token fields: one source.
        let tokens = match &report.usage {
            Some(u) => {
                record.reasoning_tokens = u
                    .completion_tokens_details
                    .as_ref()
                    .and_then(|d| d.reasoning_tokens)
                    .unwrap_or(0);
                Tokens::of(u)
            }
            None if report.events > 0 => {
                // The provider never reported usage (the client left, or the stream broke):
                // the gateway's count. About a token per streamed event; the prompt at about
                // four bytes per token of its JSON.
                record.estimated = true;
                Tokens {
                    prompt: serde_json::to_vec(&*messages).map_or(0, |v| v.len() as u64 / 4),
                    completion: report.events,
                    ..Tokens::default()
                }
            }
            None => Tokens::default(),
        };
        record.prompt_tokens = tokens.prompt;
        record.completion_tokens = tokens.completion;
        record.cached_tokens = tokens.cache_read;
        record.cache_write_tokens = tokens.cache_write;
        let failed = record.error.is_some() || answer.status.is_some_and(|s| s != 200);
        record.cost = pricing.map(|p| {
            if failed && tokens.completion == 0 {
                0.0
            } else {
                p.cost_with_cache(&tokens)
            }
        });
        let end = tokio::time::Instant::now();
        record.latency_ms = millis(end - started);
        record.time_to_first_token_ms = report
            .first_event_at
            .or(answer.answered_at.filter(|_| !record.streamed))
            .map(|t| millis(t - started));
        if let (Some(key), Some(cost)) = (&record.key_id, record.cost) {
            ledger.add(key, cost, record.created_at);
        }
        // The gateway's own time: to the answer, less the time spent in upstream attempts.
        let overhead = answer.answered_at.map(|t| {
            let upstream: std::time::Duration = attempts
                .iter()
                .filter(|a| a.outcome != AttemptOutcome::Skipped)
                .map(|a| a.latency)
                .sum();
            (t - started).saturating_sub(upstream)
        });
        // A `models[]` fallback may have been served by a pass-through: unpriced, unbounded.
        let metric_model = if catalog_model && (pricing.is_some() || record.provider.is_none()) {
            record.model.as_str()
        } else {
            "passthrough"
        };
        metrics::request_ended(&record, metric_model, overhead);
        tracing::debug!(
            generation_id = %record.id,
            model = %record.model,
            provider = record.provider.as_deref().unwrap_or("none"),
            status = record.status.unwrap_or(0),
            cancelled = record.cancelled,
            prompt_tokens = record.prompt_tokens,
            completion_tokens = record.completion_tokens,
            cost = record.cost.unwrap_or(0.0),
            "request metered"
        );
        if let Some((observer, key_name)) = observer {
            observer.0.on_record(
                &record,
                &RecordDetail {
                    attempts: &attempts,
                    key_name: key_name.as_deref(),
                    messages: &messages,
                    output: report.output.as_deref(),
                },
            );
        }
        permit.send(Msg::Record(Box::new(record)));
    }
}

impl<S, B> Service<Request<ChatRequest>> for Meter<S>
where
    S: Service<Request<ChatRequest>, Response = Response<B>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Response<B>, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ChatRequest>) -> Self::Future {
        let now = (self.layer.clock)();
        let principal = req.extensions().get::<Principal>().cloned();
        let refuse = self.layer.refuse_unaffordable;
        let mut fetch = false;
        if let Some(p) = principal.as_ref().filter(|p| p.limit.is_some()) {
            match self.layer.recorder.ledger().cached(&p.id) {
                Some(spend) => {
                    if let Err(e) = credit_check(refuse, &req, p, &spend, now) {
                        return Box::pin(std::future::ready(Err(e)));
                    }
                }
                // A shared store with nothing fresh at hand: fetch before going on.
                None => fetch = true,
            }
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let recorder = self.layer.recorder.clone();
        if fetch {
            return Box::pin(async move {
                if let Some(p) = &principal {
                    let spend = recorder
                        .ledger()
                        .fetch(&p.id)
                        .await
                        .map_err(|e| e.to_error())?;
                    credit_check(refuse, &req, p, &spend, now)?;
                }
                let permit = recorder.reserve().await?;
                metered(inner, req, permit, recorder, principal, now).await
            });
        }
        match recorder.try_reserve() {
            Some(permit) => Box::pin(metered(inner, req, permit, recorder, principal, now)),
            None => Box::pin(async move {
                let permit = recorder.reserve().await?;
                metered(inner, req, permit, recorder, principal, now).await
            }),
        }
    }
}

/// Meters one request: everything up to calling `inner` is done here, at once; the future
/// returned holds only what the answer needs. It stays small: the request (664 bytes) and the
/// arguments would otherwise be stored in it for its whole life, and glibc serves an
/// allocation up to about 1 KiB from a per-thread cache, a larger one at several times the
/// cost.
fn metered<S, B>(
    mut inner: S,
    mut req: Request<ChatRequest>,
    permit: Permit,
    recorder: Recorder,
    principal: Option<Principal>,
    now: i64,
) -> impl Future<Output = Result<Response<B>, Error>>
where
    S: Service<Request<ChatRequest>, Response = Response<B>, Error = Error>,
{
    let started = tokio::time::Instant::now();
    let id = match req.extensions().get::<GenerationId>() {
        Some(id) => id.clone(),
        None => {
            let id = GenerationId::new();
            req.extensions_mut().insert(id.clone());
            id
        }
    };
    let attempts = Attempts::new();
    let span_attempts = attempts.clone();
    let slot = match req.extensions().get::<UsageSlot>() {
        Some(s) => s.clone(),
        None => {
            let s = UsageSlot::new();
            req.extensions_mut().insert(s.clone());
            s
        }
    };
    req.extensions_mut().insert(attempts.clone());
    req.extensions_mut().insert(PriceAnswers);
    let target = req.extensions().get::<Target>().map(|t| {
        (
            t.provider.name_arc().clone(),
            t.public_model.clone(),
            t.upstream_model.clone(),
            t.pricing,
        )
    });
    let body = req.body();
    let plan = req.extensions().get::<RoutePlan>();
    let model = plan.map_or_else(|| body.model.clone(), |p| p.model.to_string());
    let catalog_model = match plan {
        Some(p) => p.targets.iter().any(|t| t.pricing.is_some()),
        None => target.as_ref().is_some_and(|t| t.3.is_some()),
    };
    let span = tracing::debug_span!(
        "request",
        generation_id = %id,
        model = %model,
        provider = tracing::field::Empty,
    );
    let record = UsageRecord {
        id: id.as_str().to_owned(),
        created_at: now,
        key_id: principal.as_ref().map(|p| p.id.clone()),
        requested_model: body.model.clone(),
        model,
        provider: None,
        upstream_model: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        reasoning_tokens: 0,
        cost: None,
        estimated: false,
        streamed: body.is_stream(),
        status: None,
        error: None,
        finish_reason: None,
        cancelled: false,
        latency_ms: 0,
        time_to_first_token_ms: None,
        attempts: Vec::new(),
        referer: header(req.headers(), "http-referer"),
        title: header(req.headers(), "x-openrouter-title")
            .or_else(|| header(req.headers(), "x-title")),
        user: body.user.as_deref().map(clipped),
        cache_write_tokens: 0,
        dialect: Dialect::of(req.extensions()),
        categories: header(req.headers(), "x-openrouter-categories"),
        session_id: body
            .session_id
            .as_deref()
            .map(clipped)
            .or_else(|| header(req.headers(), "x-session-id")),
    };
    let observer = req.extensions().get::<ObserveRecord>().map(|o| {
        o.0.claimed();
        (o.clone(), principal.as_ref().map(|p| p.name.clone()))
    });
    let answer = Arc::new(Mutex::new(Answer::default()));
    let pending = Pending {
        permit,
        ledger: recorder.ledger().clone(),
        answer: answer.clone(),
        attempts,
        started,
        target,
        messages: body.messages.clone(),
        catalog_model,
        record,
        observer,
    };
    metrics::request_started();
    slot.on_report(move |report| pending.finish(report));
    let call = {
        use tracing::Instrument;
        inner.call(req).instrument(span.clone())
    };
    async move {
        let res = call.await;
        if !span.is_disabled() {
            if let Some(last) = span_attempts.to_vec().pop() {
                span.record("provider", &*last.provider);
            }
        }
        {
            let mut a = answer.lock().unwrap_or_else(|e| e.into_inner());
            a.answered_at = Some(tokio::time::Instant::now());
            match &res {
                Ok(r) => a.status = Some(r.status().as_u16()),
                Err(e) => {
                    a.status = Some(e.status().as_u16());
                    a.error = Some(e.message().to_owned());
                }
            }
        }
        // The record is made when the last clone of the slot goes: now for a whole answer,
        // at the stream's end (or the client leaving) for a stream.
        drop(slot);
        res
    }
}

#[cfg(test)]
mod tests;
