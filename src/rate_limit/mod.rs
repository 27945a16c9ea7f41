//! [`RateLimitLayer`]: per-key requests per minute, requests per day and tokens per minute.
//!
//! Reads the [`Principal`] that [`AuthLayer`](crate::auth::AuthLayer) inserted and asks a
//! [`RateLimitStore`] whether the key may send one more request. The in-memory store
//! ([`MemoryRateLimits`]) runs GCRA through [governor](https://docs.rs/governor); a shared
//! store (Redis) can take over behind the same trait.
//!
//! - A refusal is a `429` in the envelope with `Retry-After` (whole seconds, rounded up, at
//!   least 1) and the OpenAI-style headers; every answer that went through carries the same
//!   headers: `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
//!   `x-ratelimit-reset-requests` (the tighter of the minute and day windows) and their
//!   `-tokens` equivalents.
//! - Tokens: when the request arrives, an estimate (a quarter of the body's length, the usual
//!   four bytes per token, capped at the limit) is reserved. A body that does not say its
//!   length (`Transfer-Encoding: chunked`, an HTTP/2 body without `content-length`) is read
//!   first, up to [`max_body_bytes`](RateLimitLayer::max_body_bytes) (413 beyond), so its
//!   estimate is as honest as any other's; the inner service gets it whole, as a
//!   [`GatewayBody::Full`]. When the answer ends, the layer
//!   settles with the real prompt plus completion tokens the provider reported (through the
//!   request's [`UsageSlot`]). A key that used more than its estimate goes into debt and
//!   waits it out; one that used less gets the rest back. When no usage ever arrives (the
//!   client left early) the estimate stands.
//! - A key without limits goes straight through. A request without a `Principal` is refused
//!   with a `500` that names the missing [`AuthLayer`](crate::auth::AuthLayer), unless the
//!   layer was given a [key function](RateLimitLayer::key_fn) that says which key a request
//!   is (an embedder with its own authentication): never a silent pass.

mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use self::memory::MemoryRateLimits;
use crate::auth::{reject, Principal, RateLimits, StoreError};
use crate::body::{number_header, CollectError, GatewayBody};
use crate::chat::Usage;
use crate::error::BoxError;
use crate::facts::UsageSlot;
use crate::future::BoxFuture;
use crate::Error;

/// One limit's state after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The limit (per minute or per day).
    pub limit: u32,
    /// What is left now.
    pub remaining: u32,
    /// Time until the window is whole again.
    pub reset: Duration,
}

/// A rate-limit decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Whether the request may go.
    pub allowed: bool,
    /// The requests window to report (the tighter of minute and day).
    pub requests: Option<Window>,
    /// The tokens window to report.
    pub tokens: Option<Window>,
    /// When refused: how long until the request would be allowed.
    pub retry_after: Option<Duration>,
}

/// Where rate-limit state lives.
pub trait RateLimitStore: Send + Sync + 'static {
    /// Takes one request and reserves `tokens` for key `key` under `limits`, or refuses (then
    /// nothing is taken, except that a minute window already passed is not given back when the
    /// day window refuses).
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a RateLimits,
        tokens: u32,
    ) -> BoxFuture<'a, Result<Decision, StoreError>>;

    /// [`acquire`](RateLimitStore::acquire) done at once when the store can decide without
    /// waiting (state in memory); `None` (the default) when it has to ask elsewhere, and then
    /// nothing was taken. [`RateLimitLayer`] tries this first, so a request decided here costs
    /// no allocation.
    fn acquire_now(
        &self,
        key: &str,
        limits: &RateLimits,
        tokens: u32,
    ) -> Option<Result<Decision, StoreError>> {
        let _ = (key, limits, tokens);
        None
    }

    /// Settles a reservation with the tokens actually used. Called from the end of a response
    /// body: it must not block (a remote store sends it in the background).
    fn reconcile(&self, key: &str, limits: &RateLimits, reserved: u32, used: u64);
}

/// A key the embedder's own authentication chose for a request (see
/// [`RateLimitLayer::key_fn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitedKey {
    /// The key's stable id: what its limits are counted under.
    pub id: String,
    /// How refusals name it (never the key itself).
    pub label: String,
    /// Its limits.
    pub limits: RateLimits,
}

/// Which key a request is, read from its head: `None`, not limited.
pub type KeyFn =
    Arc<dyn Fn(&HeaderMap, &http::Extensions) -> Option<LimitedKey> + Send + Sync + 'static>;

/// Applies per-key rate limits; see the [module docs](self).
#[derive(Clone)]
pub struct RateLimitLayer {
    store: Arc<dyn RateLimitStore>,
    max_body_bytes: usize,
    key_fn: Option<KeyFn>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Limits kept in `store`.
    pub fn new(store: Arc<dyn RateLimitStore>) -> Self {
        RateLimitLayer {
            store,
            max_body_bytes: crate::decode::DEFAULT_MAX_BODY_BYTES,
            key_fn: None,
        }
    }

    /// Says which key a request without a [`Principal`] is (an embedder with its own
    /// authentication); without it, such a request is refused with a `500` naming the missing
    /// `AuthLayer`.
    pub fn key_fn(
        mut self,
        f: impl Fn(&HeaderMap, &http::Extensions) -> Option<LimitedKey> + Send + Sync + 'static,
    ) -> Self {
        self.key_fn = Some(Arc::new(f));
        self
    }

    /// The most bytes read of a body that does not say its length, to estimate its tokens
    /// (default 32 MiB, as the decode step's; larger: 413).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Limits kept in this process's memory, on the real clock.
    pub fn in_memory() -> Self {
        RateLimitLayer::new(Arc::new(MemoryRateLimits::new()))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            store: self.store.clone(),
            max_body_bytes: self.max_body_bytes,
            key_fn: self.key_fn.clone(),
        }
    }
}

/// The [`RateLimitLayer`] service.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    store: Arc<dyn RateLimitStore>,
    max_body_bytes: usize,
    key_fn: Option<KeyFn>,
}

/// The limited key a request is: its [`Principal`], or the key function's choice.
#[derive(Clone)]
enum Who {
    Principal(Principal),
    Key(Arc<LimitedKey>),
}

impl Who {
    fn id(&self) -> &str {
        match self {
            Who::Principal(p) => &p.id,
            Who::Key(k) => &k.id,
        }
    }

    fn label(&self) -> &str {
        match self {
            Who::Principal(p) => &p.label,
            Who::Key(k) => &k.label,
        }
    }

    fn limits(&self) -> &RateLimits {
        match self {
            Who::Principal(p) => &p.rate_limits,
            Who::Key(k) => &k.limits,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Bytes per token of the reservation estimate.
const BYTES_PER_TOKEN: u64 = 4;

/// The tokens reserved for a request of `bytes`: a quarter of them, at least 1, at most the
/// limit.
fn estimate(bytes: u64, per_minute: u32) -> u32 {
    let tokens = (bytes / BYTES_PER_TOKEN).max(1);
    tokens.min(u64::from(per_minute)) as u32
}

/// The body's length, when the request says it: by the body's own exact size, else by its
/// `content-length` (which hyper holds the body to).
fn declared_length<B: Body>(req: &Request<B>) -> Option<u64> {
    req.body().size_hint().exact().or_else(|| {
        req.headers()
            .get(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    })
}

impl<S, B, ResB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<GatewayBody<B>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResB: Send + 'static,
{
    type Response = Response<GatewayBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let who = match req.extensions().get::<Principal>() {
            Some(p) => (!p.rate_limits.is_unlimited()).then(|| Who::Principal(p.clone())),
            None => match &self.key_fn {
                Some(f) => f(req.headers(), req.extensions())
                    .filter(|k| !k.limits.is_unlimited())
                    .map(|k| Who::Key(Arc::new(k))),
                None => {
                    let e = Error::internal(
                        "no Principal on the request: put AuthLayer before RateLimitLayer, or give RateLimitLayer a key function (RateLimitLayer::key_fn)",
                    );
                    return ResponseFuture::Refused {
                        response: Some(reject(&e, req.extensions())),
                    };
                }
            },
        };
        let Some(principal) = who else {
            return ResponseFuture::Inner {
                future: self.inner.call(req.map(GatewayBody::inner)),
                decision: None,
                slot: None,
            };
        };
        // Tokens to reserve; `None`: the body must be read to know.
        let reserved = match principal.limits().tokens_per_minute {
            None => Some(0),
            Some(tpm) => declared_length(&req).map(|len| estimate(len, tpm)),
        };
        let mut req = req.map(GatewayBody::inner);
        if let Some(reserved) = reserved {
            let limits = principal.limits();
            if let Some(decided) = self.store.acquire_now(principal.id(), limits, reserved) {
                return match admit(&self.store, &mut req, &principal, reserved, decided) {
                    Ok((decision, slot)) => ResponseFuture::Inner {
                        future: self.inner.call(req),
                        decision: Some(decision),
                        slot,
                    },
                    // The inner service stays ready for the next request.
                    Err(refusal) => ResponseFuture::Refused {
                        response: Some(refusal),
                    },
                };
            }
        }
        // The ready inner service goes with the request; its clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let max_body_bytes = self.max_body_bytes;
        ResponseFuture::Asking {
            future: Box::pin(async move {
                let reserved = match reserved {
                    Some(r) => r,
                    None => match read_whole(&mut req, max_body_bytes).await {
                        Ok(len) => estimate(
                            len,
                            principal.limits().tokens_per_minute.unwrap_or(u32::MAX),
                        ),
                        Err(e) => return Ok(reject(&e, req.extensions())),
                    },
                };
                let limits = principal.limits();
                let decided = match store.acquire_now(principal.id(), limits, reserved) {
                    Some(decided) => decided,
                    None => store.acquire(principal.id(), limits, reserved).await,
                };
                let (decision, slot) = match admit(&store, &mut req, &principal, reserved, decided)
                {
                    Ok(admitted) => admitted,
                    Err(refusal) => return Ok(refusal),
                };
                let res = inner.call(req).await?;
                Ok(finish(res, &decision, slot))
            }),
        }
    }
}

/// Reads the request's body whole (at most `limit` bytes) and puts it back, read; its length.
async fn read_whole<B>(req: &mut Request<GatewayBody<B>>, limit: usize) -> Result<u64, Error>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let body = std::mem::replace(req.body_mut(), GatewayBody::full(Full::new(Bytes::new())));
    let bytes = match crate::body::collect_limited(std::pin::pin!(body), limit).await {
        Ok(bytes) => bytes,
        Err(CollectError::TooLarge) => return Err(Error::payload_too_large(limit)),
        Err(CollectError::Body(e)) => return Err(Error::from_request_body(e)),
    };
    let len = bytes.len() as u64;
    *req.body_mut() = GatewayBody::full(Full::new(bytes));
    Ok(len)
}

/// Lets the request in (its decision, and the usage slot that settles its reserved tokens) or
/// answers for it: a `429`, or the store's failure.
// The refusal is the answer itself, moved once into the response future.
#[allow(clippy::result_large_err)]
fn admit<B, ResB>(
    store: &Arc<dyn RateLimitStore>,
    req: &mut Request<B>,
    principal: &Who,
    reserved: u32,
    decided: Result<Decision, StoreError>,
) -> Result<(Decision, Option<UsageSlot>), Response<GatewayBody<ResB>>> {
    let decision = decided.map_err(|e| reject(&e.to_error(), req.extensions()))?;
    if !decision.allowed {
        let which = match (decision.requests, decision.tokens) {
            (Some(w), _) if w.remaining == 0 => "requests",
            _ => "tokens",
        };
        let err = Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!(
                "rate limit of key {} reached ({which}); retry after the Retry-After delay",
                principal.label()
            ),
        )
        .with_retry_after(decision.retry_after);
        let mut res = reject(&err, req.extensions());
        set_headers(res.headers_mut(), &decision);
        return Err(res);
    }
    let slot = (reserved > 0).then(|| match req.extensions().get::<UsageSlot>() {
        Some(s) => s.clone(),
        None => {
            let s = UsageSlot::new();
            req.extensions_mut().insert(s.clone());
            s
        }
    });
    if let Some(slot) = &slot {
        let store = store.clone();
        let key = principal.id().to_owned();
        let limits = *principal.limits();
        slot.on_final(move |usage| {
            if let Some(u) = usage {
                let used = u.prompt_tokens.saturating_add(u.completion_tokens);
                store.reconcile(&key, &limits, reserved, used);
            }
        });
    }
    Ok((decision, slot))
}

/// The inner service's answer, with the decision's headers.
fn finish<B>(
    mut res: Response<B>,
    decision: &Decision,
    slot: Option<UsageSlot>,
) -> Response<GatewayBody<B>> {
    if let Some(slot) = slot {
        // A refusal (bad request, upstream error) generated nothing.
        if !res.status().is_success() && slot.usage().is_none() {
            slot.record(Usage::default());
        }
    }
    set_headers(res.headers_mut(), decision);
    res.map(GatewayBody::inner)
}

/// The [`RateLimit`] service's response future.
#[pin_project(project = ResponseFutureProj)]
pub enum ResponseFuture<F, B, E> {
    /// Let in (or not limited): the inner service's answer, with the decision's headers.
    Inner {
        /// The inner future.
        #[pin]
        future: F,
        /// The decision, when the key is limited.
        decision: Option<Decision>,
        /// Settles the reserved tokens, when some were.
        slot: Option<UsageSlot>,
    },
    /// Refused (`429`), or the store failed: the layer's own answer.
    Refused {
        /// The answer, taken on first poll.
        response: Option<Response<GatewayBody<B>>>,
    },
    /// The store had to be asked (a remote store).
    Asking {
        /// The decision, then the inner service.
        future: BoxFuture<'static, Result<Response<GatewayBody<B>>, E>>,
    },
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseFuture::Inner { .. } => "ResponseFuture::Inner",
            ResponseFuture::Refused { .. } => "ResponseFuture::Refused",
            ResponseFuture::Asking { .. } => "ResponseFuture::Asking",
        })
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GatewayBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Inner {
                future,
                decision,
                slot,
            } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(match decision {
                    Some(d) => finish(res, d, slot.take()),
                    None => res.map(GatewayBody::inner),
                }))
            }
            ResponseFutureProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            ResponseFutureProj::Asking { future } => future.as_mut().poll(cx),
        }
    }
}

// A `static`: a `const` would build (and drop) the six names at every use.
static NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

/// The `x-ratelimit-*` headers' names (a browser app must be allowed to read them).
#[cfg(feature = "proxy")]
pub(crate) fn header_names() -> impl Iterator<Item = HeaderName> {
    NAMES.iter().flatten().cloned()
}

/// `x-ratelimit-*` headers of a decision.
fn set_headers(h: &mut HeaderMap, d: &Decision) {
    let windows = [d.requests, d.tokens];
    // One reservation for all of them: growing the map twice costs more than the inserts.
    h.reserve(3 * windows.iter().flatten().count());
    for (names, window) in NAMES.iter().zip(windows) {
        let Some(w) = window else { continue };
        let [limit, remaining, reset] = names;
        h.insert(limit.clone(), number_header(w.limit.into()));
        h.insert(remaining.clone(), number_header(w.remaining.into()));
        let mut buf = ResetText::default();
        write_reset(w.reset, &mut buf);
        if let Ok(v) = HeaderValue::from_bytes(buf.as_bytes()) {
            h.insert(reset.clone(), v);
        }
    }
}

/// A reset delay the way OpenAI writes it: `20ms`, `1s`, `6m0s`, `1h2m3s` (whole units,
/// rounded up).
pub fn format_reset(d: Duration) -> String {
    let mut buf = ResetText::default();
    write_reset(d, &mut buf);
    String::from_utf8_lossy(buf.as_bytes()).into_owned()
}

/// The text of a reset delay, on the stack: at most 23 bytes (`5124095576030431h59m59s`).
#[derive(Default)]
struct ResetText {
    buf: [u8; 32],
    len: usize,
}

impl ResetText {
    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }

    fn number(&mut self, n: u64, unit: &[u8]) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
        self.push(unit);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Writes [`format_reset`]'s text into `out`.
fn write_reset(d: Duration, out: &mut ResetText) {
    if d < Duration::from_secs(1) {
        return out.number(d.as_nanos().div_ceil(1_000_000) as u64, b"ms");
    }
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        out.number(h, b"h");
    }
    if h > 0 || m > 0 {
        out.number(m, b"m");
    }
    out.number(s, b"s");
}

#[cfg(test)]
mod tests;
