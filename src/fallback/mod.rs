//! [`FallbackLayer`]: walks the [`RoutePlan`] until a target answers.
//!
//! Sits between the routing (and metering) layers and
//! [`StreamNormalizeLayer`](crate::stream_normalize::StreamNormalizeLayer); the inner service
//! runs once per attempt with that attempt's [`Target`] in the request extensions (and the
//! client request's extensions, method and URI).
//!
//! - **First pass**: every target of the plan in order, without delay. A target whose
//!   endpoint is cooling down ([`health`](crate::health)) or whose provider's
//!   `requests_per_minute` is spent is skipped (recorded, never queued).
//! - **Failures that move on**: transport faults, timeouts, 408, 429, 5xx and 529 (the error
//!   says [`is_retryable`](Error::is_retryable)). For a `models: [...]` fallback list, any
//!   upstream error also moves on, to the next *model* (the same request would fail the same
//!   way at another provider of the same model). Other errors (a 400 the provider found in the
//!   request) end the walk at once.
//! - **Retries**: after the first pass, targets that failed retryably are tried again, up to
//!   [`FallbackPolicy::retries_per_target`] times each, after a backoff with jitter, counted
//!   from that target's failure (time spent on the others counts); an upstream `Retry-After`
//!   is honoured when it is at most [`FallbackPolicy::max_retry_wait`] (a longer one drops the
//!   target). Retries draw on a retry budget (tower's `TpsBudget` rule, a share of recent
//!   requests, without its lock), so a failing upstream cannot cause a retry storm; failing
//!   over to *another* target is free.
//! - **Deadline**: no attempt starts after [`FallbackPolicy::deadline`], and each attempt's
//!   wait for its answer is cut at the deadline (504).
//! - **Streams**: never a retry after bytes reached the client. A stream whose first event is
//!   an error (a provider that answers 200, then `overloaded_error`) fails over inside the
//!   body: the client, which has seen at most `: keepalive` comments, never notices.
//! - **Answer**: the served target's `model` and `provider` are in the answer (stream
//!   normalisation stamps them). Once the layer has retried or failed over and still fails,
//!   the error carries `x-should-retry: false`. With every target cooling down, a 503 at once
//!   with `Retry-After`.
//! - **Hedging** (per model, [`Hedge`]): when an attempt has no first token (a stream's first
//!   event, or the whole answer) after the model's delay (or the endpoint's measured p95), the
//!   next usable target starts too; the first to answer wins, the other is cancelled. Both are
//!   recorded. Only in the first pass.
//! - **Record**: every attempt (target, outcome, status, latency, error) goes to the
//!   [`Attempts`] a layer outside (metering) put in the request extensions; the layer puts it
//!   in the response extensions too. Without one, nothing is recorded. The inner service does
//!   not see it.
//!
//! ```
//! use std::time::Duration;
//! use modelgate::fallback::{FallbackLayer, FallbackPolicy};
//!
//! let _default = FallbackLayer::new();
//! let mut policy = FallbackPolicy::default();
//! policy.retries_per_target = 1;
//! policy.deadline = Some(Duration::from_secs(60));
//! let _custom = FallbackLayer::new()
//!     .policy(policy)
//!     .retry_budget(Duration::from_secs(10), 5, 0.1);
//! ```

mod body;
mod budget;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

pub use self::body::FallbackBody;
use self::budget::RetryBudget;
use crate::chat::{ChatRequest, Usage};
use crate::error::{BoxError, ErrorSource};
use crate::facts::{
    Attempt, AttemptOutcome, Attempts, Hedge, RoutePlan, Target, TraceContext, UsageSlot,
};
use crate::future::{later, BoxFuture};
use crate::health::{Availability, HealthPolicy};
use crate::Error;

/// How the fallback layer retries, fails over and cools endpoints down.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FallbackPolicy {
    /// Attempts sent upstream per client request, at most (default 12).
    pub max_attempts: usize,
    /// Extra attempts at one target after its first failure (default 5). With two targets
    /// failing independently a fifth of the time, twelve attempts all fail about once in
    /// 240 million requests (0.2¹²); eight did once in 390,000.
    pub retries_per_target: u32,
    /// The bound of the first backoff before a retry (default 25 ms, as Envoy's); doubled per
    /// retry of a target. The wait is drawn at random below the bound (full jitter).
    pub backoff_base: Duration,
    /// The longest backoff (default 2 s).
    pub backoff_max: Duration,
    /// The longest upstream `Retry-After` the layer waits for before retrying the same target
    /// (default 10 s); a longer one drops the target (it cools down for that long instead).
    pub max_retry_wait: Duration,
    /// No attempt starts after this long since the request arrived, and no attempt waits past
    /// it for its answer (default 300 s; `None`: no deadline).
    pub deadline: Option<Duration>,
    /// When endpoints cool down.
    pub health: HealthPolicy,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        FallbackPolicy {
            max_attempts: 12,
            retries_per_target: 5,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_secs(2),
            max_retry_wait: Duration::from_secs(10),
            deadline: Some(Duration::from_secs(300)),
            health: HealthPolicy::default(),
        }
    }
}

struct Shared {
    policy: FallbackPolicy,
    budget: RetryBudget,
    budget_params: (Duration, u32, f32),
}

impl Shared {
    fn new(policy: FallbackPolicy, (ttl, min_per_sec, percent): (Duration, u32, f32)) -> Self {
        Shared {
            policy,
            budget: RetryBudget::new(ttl, min_per_sec, percent),
            budget_params: (ttl, min_per_sec, percent),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .finish()
    }
}

/// Builds [`Fallback`]; see the [module docs](self). Clones share one retry budget.
#[derive(Debug, Clone)]
pub struct FallbackLayer {
    shared: Arc<Shared>,
}

impl Default for FallbackLayer {
    fn default() -> Self {
        FallbackLayer::new()
    }
}

impl FallbackLayer {
    /// The default policy and a retry budget of 20 % of the requests of the last 10 s (at
    /// least 10 retries a second).
    pub fn new() -> Self {
        FallbackLayer {
            shared: Arc::new(Shared::new(
                FallbackPolicy::default(),
                (Duration::from_secs(10), 10, 0.2),
            )),
        }
    }

    /// Replaces the policy.
    pub fn policy(self, policy: FallbackPolicy) -> Self {
        FallbackLayer {
            shared: Arc::new(Shared::new(policy, self.shared.budget_params)),
        }
    }

    /// Replaces the retry budget: over the last `ttl` (1 to 60 s), retries may be
    /// `retry_percent` of the requests (0.0 to 1000.0), plus `min_per_sec` a second.
    ///
    /// # Panics
    /// When a value is outside those ranges (as tower's `TpsBudget::new` does).
    pub fn retry_budget(self, ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        FallbackLayer {
            shared: Arc::new(Shared::new(
                self.shared.policy.clone(),
                (ttl, min_per_sec, retry_percent),
            )),
        }
    }

    /// The policy in force.
    pub fn current_policy(&self) -> &FallbackPolicy {
        &self.shared.policy
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;
    fn layer(&self, inner: S) -> Fallback<S> {
        Fallback {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Walks the route plan; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Fallback<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> Service<Request<ChatRequest>> for Fallback<S>
where
    S: Service<Request<ChatRequest>, Response = Response<B>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<FallbackBody<B>>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Self::Response, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ChatRequest>) -> Self::Future {
        // The ready service serves the first attempt; a clone takes its place.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        // Boxed: the future stays small (glibc serves a small allocation from its per-thread
        // cache; a big one costs several times more), and a stream's body takes the box as is.
        let mut walk = match Walk::new(svc, self.shared.clone(), req) {
            Ok(w) => Box::new(w),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let fut = async move {
            let served = walk.next().await?;
            let mut parts = served.head;
            if let Some(a) = &walk.attempts {
                parts.extensions.insert(a.clone());
            }
            let body = match served.body {
                ServedBody::Committed(boxed, first) => FallbackBody::committed(boxed, first),
                // Committed only when the first event that is not a comment arrives.
                ServedBody::Fresh(body) if walk.streaming => {
                    FallbackBody::watching(body, walk, served.started)
                }
                ServedBody::Fresh(body) => FallbackBody::plain(body),
            };
            Ok(Response::from_parts(parts, body))
        };
        Box::pin(fut)
    }
}

/// An attempt that answered (for a stream: with its headers; the body decides the rest).
pub(crate) struct Served<B> {
    head: http::response::Parts,
    body: ServedBody<B>,
    started: Instant,
}

/// The body of an attempt that answered.
pub(crate) enum ServedBody<B> {
    /// As the inner service gave it.
    Fresh(B),
    /// A hedged stream already read up to its first event: boxed (it was polled in place),
    /// that event to go out first. The stream is committed.
    Committed(Pin<Box<B>>, Option<Bytes>),
}

impl<B> Served<B> {
    fn fresh(response: Response<B>, started: Instant) -> Self {
        let (head, body) = response.into_parts();
        Served {
            head,
            body: ServedBody::Fresh(body),
            started,
        }
    }
}

/// What one raced attempt produced.
enum Won<B> {
    /// A whole answer.
    Whole(Response<B>),
    /// A stream, read up to its first event.
    Stream(http::response::Parts, Pin<Box<B>>, Option<Bytes>),
}

type Launched<B> = BoxFuture<'static, Result<Won<B>, Error>>;

/// Per target: how many of its tries failed (every try but a serving one, which ends the
/// walk), whether another try may help, and when its last try failed (its backoff or
/// `Retry-After` counts from then, not from when the walk comes back to it).
#[derive(Debug, Clone, Copy, Default)]
struct TargetState {
    tries: u32,
    retry: bool,
    retry_after: Option<Duration>,
    failed_at: Option<Instant>,
}

/// The state of one client request's walk through its plan. Lives in the response future,
/// then (for a stream not yet committed) in the body.
pub(crate) struct Walk<S, B> {
    svc: S,
    shared: Arc<Shared>,
    parts: http::request::Parts,
    body: ChatRequest,
    /// The first target, for the first attempt at it (then `None`: later ones are copies).
    first_target: Option<Target>,
    targets: Vec<Target>,
    /// Per target, from the first failure on (empty until then: a walk whose first attempt
    /// serves never needs it). A try is counted when it fails: one that serves ends the walk.
    state: Vec<TargetState>,
    /// 0: the first pass; then retry passes.
    pass: u32,
    next: usize,
    /// Where attempts are recorded, when a layer outside asked for them.
    attempts: Option<Attempts>,
    sent: usize,
    deadline: Option<Instant>,
    last_error: Option<Error>,
    earliest_cool_end: Option<Instant>,
    /// A target was skipped for another reason than an upstream rate limit.
    skipped_unhealthy: bool,
    /// The deadline passed before an attempt could start.
    out_of_time: bool,
    slot: Option<UsageSlot>,
    streaming: bool,
    /// The target of the attempt in flight, and whether it is a half-open probe.
    current: Option<(usize, bool, Instant)>,
    /// When the walk was made, until its first attempt starts: one clock read for both.
    made: Option<Instant>,
    /// The request's trace context, when it is traced (boxed: most requests are not).
    trace: Option<Box<TraceContext>>,
    /// Each target's latest attempt span (empty when the request is not traced).
    spans: Vec<Option<TraceContext>>,
    _body: std::marker::PhantomData<fn() -> B>,
}

impl<S, B> Walk<S, B>
where
    S: Service<Request<ChatRequest>, Response = Response<B>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn new(svc: S, shared: Arc<Shared>, req: Request<ChatRequest>) -> Result<Self, Error> {
        let (mut parts, body) = req.into_parts();
        let targets =
            match parts.extensions.remove::<RoutePlan>() {
                Some(plan) => plan.targets,
                None => match parts.extensions.get::<Target>() {
                    Some(t) => vec![t.clone()],
                    None => return Err(Error::internal(
                        "no route plan on the request: put ModelRewriteLayer before FallbackLayer",
                    )),
                },
            };
        // A layer outside that wants the attempts put a record here; the inner ones do not
        // need it (nor a copy of it per attempt).
        let attempts = parts.extensions.remove::<Attempts>();
        // Each attempt's request carries a span of its own under the request's.
        let trace = parts.extensions.remove::<TraceContext>().map(Box::new);
        // The parts kept for the attempts hold no target: each attempt's copy gets its own.
        // The first attempt's is the one the routing layer put there, moved, not copied (a
        // target's copy touches four shared reference counts).
        let placed = parts.extensions.remove::<Target>();
        let first_target = match (targets.first(), placed) {
            (Some(first), Some(t)) if t.same_as(first) => Some(t),
            (Some(first), _) => Some(first.clone()),
            (None, _) => None,
        };
        let streaming = body.is_stream();
        // A stream's throughput is measured when its usage is final.
        let slot = if streaming {
            Some(match parts.extensions.get::<UsageSlot>() {
                Some(s) => s.clone(),
                None => {
                    let s = UsageSlot::new();
                    parts.extensions.insert(s.clone());
                    s
                }
            })
        } else {
            None
        };
        let now = Instant::now();
        shared.budget.deposit(now);
        Ok(Walk {
            svc,
            deadline: shared.policy.deadline.map(|d| later(now, d)),
            made: Some(now),
            state: Vec::new(),
            shared,
            streaming,
            parts,
            body,
            first_target,
            targets,
            pass: 0,
            next: 0,
            attempts,
            sent: 0,
            last_error: None,
            earliest_cool_end: None,
            skipped_unhealthy: false,
            out_of_time: false,
            slot,
            current: None,
            trace,
            spans: Vec::new(),
            _body: std::marker::PhantomData,
        })
    }

    fn policy(&self) -> &FallbackPolicy {
        &self.shared.policy
    }

    /// Records an attempt at target `i` that started at `started` and took `latency`.
    fn record(
        &self,
        i: usize,
        outcome: AttemptOutcome,
        status: Option<u16>,
        (started, latency): (Instant, Duration),
        error: Option<String>,
    ) {
        if let Some(attempts) = &self.attempts {
            attempts.push(self.attempt_record(i, outcome, status, started, latency, error));
        }
    }

    /// The next target to try and the wait before it; `None` when the walk is over. A retry
    /// waits out what is left of the target's own backoff: the time spent on the other
    /// targets since it failed counts.
    fn pick(&mut self) -> Option<(usize, Duration)> {
        let max_retries = self.policy().retries_per_target;
        loop {
            if self.next >= self.targets.len() {
                if self.pass >= max_retries || !self.state.iter().any(|s| s.retry) {
                    return None;
                }
                self.pass += 1;
                self.next = 0;
            }
            let i = self.next;
            self.next += 1;
            if self.pass == 0 {
                return Some((i, Duration::ZERO));
            }
            let s = self.state.get(i).copied().unwrap_or_default();
            if !s.retry || s.tries > max_retries {
                continue;
            }
            let wait = match s.retry_after {
                Some(wait) if wait > self.policy().max_retry_wait => {
                    self.state[i].retry = false;
                    continue;
                }
                Some(wait) => wait,
                None => backoff(self.policy(), s.tries),
            };
            let left = match s.failed_at {
                Some(at) => later(at, wait).saturating_duration_since(Instant::now()),
                None => wait,
            };
            return Some((i, left));
        }
    }

    /// Runs attempts until one answers or the plan is spent.
    async fn next(&mut self) -> Result<Served<B>, Error> {
        while let Some((i, wait)) = self.pick() {
            if self.sent >= self.policy().max_attempts {
                break;
            }
            if self.pass > 0 {
                if self
                    .deadline
                    .is_some_and(|deadline| later(Instant::now(), wait) >= deadline)
                {
                    self.out_of_time = true;
                    continue;
                }
                // A retry of a target that failed draws on the budget; failing over is free.
                if !self.shared.budget.withdraw(Instant::now()) {
                    tracing::debug!("retry budget spent: no more retries");
                    break;
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let now = self.made.take().unwrap_or_else(Instant::now);
            if self.deadline.is_some_and(|d| now >= d) {
                self.out_of_time = true;
                break;
            }
            let target = &self.targets[i];
            let availability = target.health.acquire(now, &self.policy().health);
            if let Availability::CoolingUntil(until) = availability {
                self.earliest_cool_end =
                    Some(self.earliest_cool_end.map_or(until, |e| e.min(until)));
                self.skipped_unhealthy |= !target.health.is_rate_limited();
                self.record(
                    i,
                    AttemptOutcome::Skipped,
                    None,
                    (now, Duration::ZERO),
                    Some("cooling down after failures".into()),
                );
                continue;
            }
            let probe = availability == Availability::Probe;
            if !target.provider.try_acquire() {
                if probe {
                    target.health.release_probe();
                }
                self.skipped_unhealthy = true;
                let why = format!(
                    "provider `{}` has spent its requests_per_minute",
                    target.provider.name()
                );
                self.record(
                    i,
                    AttemptOutcome::Skipped,
                    None,
                    (now, Duration::ZERO),
                    Some(why),
                );
                continue;
            }
            self.sent += 1;
            let started = now;
            if let Some(delay) = self.hedge_delay(i) {
                // Boxed: the race's state (two attempts, a timer) stays out of the common path's.
                match Box::pin(self.hedged(i, probe, started, delay)).await {
                    Ok(served) => return Ok(served),
                    Err(go_on) if go_on => continue,
                    Err(_) => break,
                }
            }
            self.current = Some((i, probe, started));
            match self.attempt(i, now).await {
                Ok(response) => {
                    if !self.streaming {
                        self.on_served(i, started, response.extensions().get::<Usage>());
                    }
                    return Ok(Served::fresh(response, started));
                }
                Err(e) => {
                    if !self.on_failed(started, e) {
                        break;
                    }
                }
            }
        }
        Err(self.final_error())
    }

    /// The client's request, with target `i` in its extensions.
    fn request_for(&mut self, i: usize) -> Request<ChatRequest> {
        let mut parts = self.parts.clone();
        let target = match self.first_target.take() {
            Some(t) if i == 0 => t,
            kept => {
                self.first_target = kept;
                self.targets[i].clone()
            }
        };
        parts.extensions.insert(target);
        if let Some(server) = &self.trace {
            // The attempt's own span, under the request's: what the provider is sent.
            let span = server.child();
            if self.spans.len() < self.targets.len() {
                self.spans.resize(self.targets.len(), None);
            }
            self.spans[i] = Some(span.clone());
            parts.extensions.insert(span);
        }
        Request::from_parts(parts, self.body.clone())
    }

    /// Sends one attempt to target `i`, bounded by the deadline.
    async fn attempt(&mut self, i: usize, now: Instant) -> Result<Response<B>, Error> {
        if self.sent > 1 {
            // The first attempt's service was made ready by `poll_ready`.
            self.svc.ready().await?;
        }
        // Made after the wait: a request held across it would make this future 664 bytes larger.
        let req = self.request_for(i);
        let fut = self.svc.call(req);
        // The provider's own timeouts (connect, first byte) end the wait first unless the
        // deadline is nearer: only then is a timer of our own needed.
        let timeouts = self.targets[i].provider.timeouts();
        let deadline = match self.deadline {
            Some(d)
                if d.saturating_duration_since(now)
                    < timeouts.connect.saturating_add(timeouts.first_byte) =>
            {
                d
            }
            _ => return fut.await,
        };
        match Box::pin(tokio::time::timeout_at(deadline, fut)).await {
            Ok(r) => r,
            Err(_) => {
                let t = &self.targets[i];
                Err(Error::gateway_timeout(
                    format!(
                        "{}: no answer within the request deadline ({} s)",
                        t.provider.name(),
                        self.policy().deadline.unwrap_or_default().as_secs()
                    ),
                    ErrorSource::Transport,
                    crate::error::Retry::Never,
                )
                .with_provider(t.provider.name_arc().clone()))
            }
        }
    }

    /// The attempt in flight answered (`usage`: what a whole answer reported).
    fn on_served(&mut self, i: usize, started: Instant, usage: Option<&Usage>) {
        self.current = None;
        let latency = started.elapsed();
        let t = &self.targets[i];
        let policy = &self.shared.policy.health;
        let secs = latency.as_secs_f64();
        let tps = usage
            .filter(|u| secs > 0.0 && u.completion_tokens > 0)
            .map(|u| u.completion_tokens as f64 / secs);
        t.health.on_success_with_throughput(latency, tps, policy);
        self.record(
            i,
            AttemptOutcome::Served,
            Some(200),
            (started, latency),
            None,
        );
    }

    /// The stream of the attempt in flight produced its first event: it serves. Throughput
    /// is measured when the stream's usage is final.
    fn on_stream_served(&mut self, started: Instant) {
        let Some((i, _, _)) = self.current else {
            return;
        };
        self.on_stream_served_at(i, started);
    }

    fn on_stream_served_at(&mut self, i: usize, started: Instant) {
        self.on_served(i, started, None);
        let health = self.targets[i].health.clone();
        let policy = self.shared.policy.health;
        let first = Instant::now();
        let Some(slot) = &self.slot else {
            return;
        };
        slot.on_final(move |usage| {
            let secs = first.elapsed().as_secs_f64();
            if let Some(u) = usage.filter(|u| u.completion_tokens > 0 && secs > 0.0) {
                health.on_throughput(u.completion_tokens as f64 / secs, &policy);
            }
        });
    }

    /// The attempt in flight failed with `e`. Returns whether the walk goes on.
    fn on_failed(&mut self, started: Instant, e: Error) -> bool {
        let Some((i, probe, _)) = self.current.take() else {
            self.last_error = Some(e);
            return false;
        };
        self.on_failed_at(i, probe, started, e)
    }

    /// Target `i` (a half-open probe or not) failed with `e`. Returns whether the walk goes on.
    fn on_failed_at(&mut self, i: usize, probe: bool, started: Instant, e: Error) -> bool {
        if self.state.is_empty() {
            self.state = vec![TargetState::default(); self.targets.len()];
        }
        self.state[i].tries += 1;
        let now = Instant::now();
        self.state[i].failed_at = Some(now);
        let latency = now.saturating_duration_since(started);
        self.record(
            i,
            AttemptOutcome::Failed,
            Some(e.status().as_u16()),
            (started, latency),
            Some(e.message().to_owned()),
        );
        let t = &self.targets[i];
        let retryable = e.is_retryable();
        // A request the provider's API cannot carry goes elsewhere, but is the request's
        // fault, not the endpoint's.
        if retryable && e.source_kind() != ErrorSource::Client {
            // A provider saying when to come back (429, 503): cool for that long.
            let policy = &self.shared.policy.health;
            match (e.status(), e.retry_after()) {
                (StatusCode::TOO_MANY_REQUESTS, Some(wait)) => {
                    t.health.on_rate_limited(now, wait, policy)
                }
                (StatusCode::SERVICE_UNAVAILABLE, wait) => t.health.on_failure(now, wait, policy),
                _ => t.health.on_failure(now, None, policy),
            }
        } else if probe {
            // Someone else may probe.
            t.health.release_probe();
        }
        if retryable {
            // After a `200` (the provider answered, and may have billed), not this target again.
            self.state[i].retry = e.retry() != crate::error::Retry::Elsewhere;
            self.state[i].retry_after = e.retry_after();
        }
        let upstream = matches!(
            e.source_kind(),
            ErrorSource::Upstream | ErrorSource::Transport | ErrorSource::Connect
        );
        let go_on = if retryable {
            true
        } else if upstream && self.pass == 0 {
            // A `models: [...]` list: any upstream error moves on to the next model.
            let model = &t.public_model;
            match self.targets[self.next..]
                .iter()
                .position(|t| t.public_model != *model)
            {
                Some(skip) => {
                    self.next += skip;
                    true
                }
                None => false,
            }
        } else {
            false
        };
        self.last_error = Some(e);
        go_on
    }

    /// An upstream's `Retry-After` as the client hears it: no longer than the cool-down the
    /// gateway applies for it (so the answers that follow, refused while the endpoint cools,
    /// say the same figure).
    fn bounded_wait(&self, e: Error) -> Error {
        let cap = self.shared.policy.health.max_cooldown;
        match e.retry_after() {
            Some(wait) if !cap.is_zero() && wait > cap => e.with_retry_after(Some(cap)),
            _ => e,
        }
    }

    /// The hedging delay for target `i`, if its model hedges and another target is left.
    fn hedge_delay(&self, i: usize) -> Option<Duration> {
        if self.pass > 0 || self.next >= self.targets.len() {
            return None;
        }
        let t = &self.targets[i];
        match t.hedge? {
            Hedge::After(d) => Some(d),
            Hedge::MeasuredP95 => t.health.snapshot(Instant::now()).latency_p95,
        }
    }

    /// Starts an attempt at target `i` as a future of its own (for racing), answered once
    /// its first event is in (streams) or its whole answer (otherwise).
    fn launch(&mut self, i: usize) -> Launched<B> {
        let req = self.request_for(i);
        let mut svc = self.svc.clone();
        let streaming = self.streaming;
        Box::pin(async move {
            svc.ready().await?;
            let res = svc.call(req).await?;
            if !streaming {
                return Ok(Won::Whole(res));
            }
            let (parts, body) = res.into_parts();
            let mut body = Box::pin(body);
            loop {
                match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                    None => return Ok(Won::Stream(parts, body, None)),
                    Some(Err(e)) => {
                        let e: BoxError = e.into();
                        return Err(Error::bad_gateway(
                            format!("the stream broke before its first event: {e}"),
                            ErrorSource::Transport,
                            crate::error::Retry::Retryable,
                        ));
                    }
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        match body::classify(&data) {
                            // Nobody is listening yet: keep-alives are not needed.
                            body::FrameKind::Comments => continue,
                            body::FrameKind::Error(e) => return Err(e),
                            body::FrameKind::Data => {
                                return Ok(Won::Stream(parts, body, Some(data)))
                            }
                        }
                    }
                }
            }
        })
    }

    /// Target `i` with hedging: when it has not answered (its first event, for a stream)
    /// after `delay`, the next usable target starts too; the first to answer wins and the
    /// other is cancelled. `Err(go_on)` when both failed.
    async fn hedged(
        &mut self,
        i: usize,
        probe: bool,
        started: Instant,
        delay: Duration,
    ) -> Result<Served<B>, bool> {
        let mut first = self.launch(i);
        let timer = tokio::time::sleep(delay);
        tokio::pin!(timer);
        tokio::select! {
            biased;
            r = &mut first => return self.settle(i, probe, started, r),
            _ = &mut timer => {}
        }
        // The hedge: the next target that may be tried now.
        let Some((j, probe_j)) = self.take_next_usable() else {
            let r = first.await;
            return self.settle(i, probe, started, r);
        };
        let hedge_started = Instant::now();
        let mut second = self.launch(j);
        let mut first_failed = false;
        loop {
            let (k, k_probe, k_started, r) = if first_failed {
                let r = (&mut second).await;
                (j, probe_j, hedge_started, r)
            } else {
                tokio::select! {
                    r = &mut first => (i, probe, started, r),
                    r = &mut second => (j, probe_j, hedge_started, r),
                }
            };
            match r {
                Ok(won) => {
                    // The other one, unless it already failed, is dropped here: cancelled.
                    let (o, o_probe, o_started) = if k == i {
                        (j, probe_j, hedge_started)
                    } else {
                        (i, probe, started)
                    };
                    if k == i || !first_failed {
                        if o_probe {
                            self.targets[o].health.release_probe();
                        }
                        self.record(
                            o,
                            AttemptOutcome::Cancelled,
                            None,
                            (o_started, o_started.elapsed()),
                            Some("lost the hedge race".into()),
                        );
                    }
                    return self.settle(k, k_probe, k_started, Ok(won));
                }
                Err(e) => {
                    let go_on = self.on_failed_at(k, k_probe, k_started, e);
                    if k == i {
                        // The hedge may still answer.
                        first_failed = true;
                        continue;
                    }
                    if first_failed {
                        return Err(go_on);
                    }
                    // The hedge failed first: the first one alone now.
                    let r = first.await;
                    return self.settle(i, probe, started, r);
                }
            }
        }
    }

    /// The outcome of a raced attempt at target `i`.
    fn settle(
        &mut self,
        i: usize,
        probe: bool,
        started: Instant,
        r: Result<Won<B>, Error>,
    ) -> Result<Served<B>, bool> {
        match r {
            Ok(Won::Whole(response)) => {
                self.on_served(i, started, response.extensions().get::<Usage>());
                Ok(Served::fresh(response, started))
            }
            Ok(Won::Stream(head, body, first)) => {
                self.on_stream_served_at(i, started);
                Ok(Served {
                    head,
                    body: ServedBody::Committed(body, first),
                    started,
                })
            }
            Err(e) => Err(self.on_failed_at(i, probe, started, e)),
        }
    }

    /// The next target after the current position that may be tried now (taking its probe
    /// and a request of its provider's allowance); the ones passed over are recorded.
    fn take_next_usable(&mut self) -> Option<(usize, bool)> {
        while self.next < self.targets.len() && self.sent < self.policy().max_attempts {
            let j = self.next;
            self.next += 1;
            let now = Instant::now();
            let t = &self.targets[j];
            let availability = t.health.acquire(now, &self.shared.policy.health);
            if let Availability::CoolingUntil(until) = availability {
                self.earliest_cool_end =
                    Some(self.earliest_cool_end.map_or(until, |e| e.min(until)));
                self.skipped_unhealthy |= !t.health.is_rate_limited();
                self.record(
                    j,
                    AttemptOutcome::Skipped,
                    None,
                    (now, Duration::ZERO),
                    Some("cooling down after failures".into()),
                );
                continue;
            }
            let probe = availability == Availability::Probe;
            if !t.provider.try_acquire() {
                if probe {
                    t.health.release_probe();
                }
                self.skipped_unhealthy = true;
                continue;
            }
            self.sent += 1;
            return Some((j, probe));
        }
        None
    }

    /// The answer when no target served.
    fn final_error(&mut self) -> Error {
        match self.last_error.take().map(|e| self.bounded_wait(e)) {
            Some(e) if self.sent > 1 => e.with_should_retry(Some(false)),
            Some(e) => e,
            None if self.out_of_time => Error::gateway_timeout(
                "no answer within the request deadline",
                ErrorSource::Gateway,
                crate::error::Retry::Never,
            ),
            None => {
                // Nothing was sent: every target was cooling down or out of requests.
                let wait = self
                    .earliest_cool_end
                    .map(|end| end.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(1));
                let model = self
                    .targets
                    .first()
                    .map(|t| t.public_model.to_string())
                    .unwrap_or_default();
                if !self.skipped_unhealthy && self.earliest_cool_end.is_some() {
                    // Every provider asked us to wait: that is a rate limit, say so.
                    return Error::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_exceeded",
                        format!("every provider of `{model}` is rate limited: retry after the wait they asked for"),
                    )
                    .with_source(ErrorSource::Gateway)
                    .with_retry_after(Some(wait.max(Duration::from_secs(1))));
                }
                Error::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    format!(
                        "no provider of `{model}` is available: every endpoint is cooling down after failures or has spent its request limit"
                    ),
                )
                .with_source(ErrorSource::Gateway)
                .with_retry_after(Some(wait.max(Duration::from_secs(1))))
            }
        }
    }
}

impl<S, B> Walk<S, B> {
    /// The record of an attempt at target `i`.
    fn attempt_record(
        &self,
        i: usize,
        outcome: AttemptOutcome,
        status: Option<u16>,
        started: Instant,
        latency: Duration,
        error: Option<String>,
    ) -> Attempt {
        let t = &self.targets[i];
        Attempt {
            provider: t.provider.name_arc().clone(),
            model: t.public_model.clone(),
            upstream_model: t.upstream_model.clone(),
            kind: t.provider.kind(),
            outcome,
            status,
            started,
            latency,
            error,
            pricing: t.pricing,
            // A skipped target was sent nothing: no span.
            span: match outcome {
                AttemptOutcome::Skipped => None,
                _ => self.spans.get(i).cloned().flatten(),
            },
        }
    }
}

impl<S, B> Drop for Walk<S, B> {
    fn drop(&mut self) {
        // The client went away with an attempt in flight: record it, free its probe.
        if let Some((i, probe, started)) = self.current.take() {
            let t = &self.targets[i];
            if probe {
                t.health.release_probe();
            }
            let Some(attempts) = &self.attempts else {
                return;
            };
            attempts.push(self.attempt_record(
                i,
                AttemptOutcome::Cancelled,
                None,
                started,
                started.elapsed(),
                Some("the client went away".into()),
            ));
        }
    }
}

impl<S, B> body::Resume<B> for Walk<S, B>
where
    S: Service<Request<ChatRequest>, Response = Response<B>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn served(mut self: Box<Self>, started: Instant) {
        self.on_stream_served(started);
    }

    fn resume(mut self: Box<Self>, failure: Error, started: Instant) -> body::Next<B> {
        // The stream's head was a `200`: another target may serve, this one not again.
        let failure = if failure.is_retryable() {
            failure.with_retry(crate::error::Retry::Elsewhere)
        } else {
            failure
        };
        Box::pin(async move {
            let result = if self.on_failed(started, failure) {
                self.next().await
            } else {
                Err(self.final_error())
            };
            let walk: Box<dyn body::Resume<B>> = self;
            (walk, result)
        })
    }

    fn error_event(&self, failure: &Error) -> Bytes {
        let id = self
            .parts
            .extensions
            .get::<crate::facts::GenerationId>()
            .map_or("", |id| id.as_str());
        let model = self
            .parts
            .extensions
            .get::<RoutePlan>()
            .map_or(self.body.model.as_str(), |p| &p.model);
        failure.to_sse_chunk(id, model, crate::facts::unix_now())
    }
}

/// Backoff before retry number `tries` of a target: a random wait below base × 2^(tries-1),
/// capped ("full jitter", the scheme of Envoy's retries and of the AWS SDKs).
fn backoff(policy: &FallbackPolicy, tries: u32) -> Duration {
    let exp = tries.saturating_sub(1).min(16);
    let full = policy
        .backoff_base
        .saturating_mul(1 << exp)
        .min(policy.backoff_max);
    full.mul_f64(fastrand::f64())
}
