//! Facts that travel between layers as request extensions: the generation id, the route plan
//! and the target of one attempt.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::chat::{CacheCreationTokenDetails, Usage};
use crate::health::EndpointHealth;
use crate::provider::Provider;

/// The id of one client request: `gen-<unix seconds>-<20 characters>`, as OpenRouter's.
///
/// The 20 characters are 4 that encode the microsecond within the second, then 16 random
/// ones (95 bits), all from `0-9A-Za-z`, whose ASCII order is their value's: ids sort by the
/// time they were made. That keeps the state store's record inserts near the right edge of
/// its B-tree (a few dirty pages per batch) instead of scattered over every page of the
/// current second (a quarter of the write time in `cargo bench --bench usage`).
///
/// It is the completion's `id` and the `X-Generation-Id` header. Inserted by the decode step
/// when absent; every later layer reads it from the request extensions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GenerationId(Arc<str>);

/// The characters of a generation id's last part, in ASCII order.
const ID_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl GenerationId {
    /// A fresh id: made now, random in its last 16 characters.
    pub fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Written on the stack, then copied once into the `Arc` (a `String` would be a second
        // allocation): "gen-", at most 20 digits of seconds, "-", 20 characters.
        let mut id = [0u8; 45];
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            id[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        push(b"gen-");
        push(itoa::Buffer::new().format(now.as_secs()).as_bytes());
        push(b"-");
        push(&sortable_micros(now.subsec_micros()));
        // Eight base-62 digits from each of two random words: 62^8 is under 2^48, so the
        // digits are uniform to within one part in 80,000, and two draws replace sixteen.
        for _ in 0..2 {
            let mut word = fastrand::u64(..);
            for _ in 0..8 {
                push(&[ID_ALPHABET[(word % 62) as usize]]);
                word /= 62;
            }
        }
        let id = std::str::from_utf8(&id[..len]).expect("an id is ASCII");
        GenerationId(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The microsecond within a second as four base-62 digits, most significant first
/// (62^4 > 10^6), so their ASCII order is the order of time.
fn sortable_micros(micros: u32) -> [u8; 4] {
    let mut rest = micros as usize;
    let mut digits = [0u8; 4];
    for d in digits.iter_mut().rev() {
        *d = ID_ALPHABET[rest % 62];
        rest /= 62;
    }
    digits
}

impl Default for GenerationId {
    fn default() -> Self {
        GenerationId::new()
    }
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Now, in seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Prices of one endpoint, in USD per million tokens.
///
/// Prompt tokens read from or written to the provider's prompt cache have prices of their
/// own where the provider charges differently for them (Anthropic: reads at a tenth of the
/// input price, five-minute writes at 1.25 times and one-hour writes at twice; OpenAI and
/// Gemini: cached reads at a fraction); an endpoint without them charges every prompt token
/// at `prompt_per_million`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    /// USD per million input tokens.
    pub prompt_per_million: f64,
    /// USD per million output tokens.
    pub completion_per_million: f64,
    /// USD per million input tokens read from the prompt cache; `None`: the prompt price.
    pub cache_read_per_million: Option<f64>,
    /// USD per million input tokens written to the prompt cache; `None`: the prompt price.
    pub cache_write_per_million: Option<f64>,
    /// USD per million input tokens written to the prompt cache for an hour (Anthropic's
    /// `ttl: "1h"`, reported in `cache_creation_token_details`); `None`: the cache write
    /// price.
    pub cache_write_1h_per_million: Option<f64>,
}

impl Pricing {
    /// Prompt and completion prices, and no prices of their own for the prompt cache.
    pub const fn new(prompt_per_million: f64, completion_per_million: f64) -> Self {
        Pricing {
            prompt_per_million,
            completion_per_million,
            cache_read_per_million: None,
            cache_write_per_million: None,
            cache_write_1h_per_million: None,
        }
    }

    /// These prices with the prompt cache's own (`None`: the prompt price).
    pub const fn with_cache(mut self, read: Option<f64>, write: Option<f64>) -> Self {
        self.cache_read_per_million = read;
        self.cache_write_per_million = write;
        self
    }

    /// These prices with a price of its own for one-hour cache writes (`None`: the cache
    /// write price).
    pub const fn with_cache_write_1h(mut self, price: Option<f64>) -> Self {
        self.cache_write_1h_per_million = price;
        self
    }

    /// True when every price is zero.
    pub fn is_free(&self) -> bool {
        self.named()
            .iter()
            .all(|(_, price)| price.unwrap_or(0.0) == 0.0)
    }

    /// The prices, each with its name in error messages.
    pub(crate) fn named(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("prompt", Some(self.prompt_per_million)),
            ("completion", Some(self.completion_per_million)),
            ("cache read", self.cache_read_per_million),
            ("cache write", self.cache_write_per_million),
            ("one-hour cache write", self.cache_write_1h_per_million),
        ]
    }

    /// The cost in USD of `prompt` input and `completion` output tokens at these prices, with
    /// no prompt token read from or written to the cache.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        self.cost_with_cache(&Tokens {
            prompt,
            completion,
            ..Tokens::default()
        })
    }

    /// The cost in USD of `tokens` at these prices.
    ///
    /// Tokens at the same price are added up before they are multiplied, so an endpoint
    /// without cache prices costs exactly `prompt × price`, cached tokens or not. A provider's
    /// cache counts are capped at its prompt count (reads first, then writes, of which the
    /// one-hour ones), so no token is charged twice.
    pub fn cost_with_cache(&self, tokens: &Tokens) -> f64 {
        let prompt_price = self.prompt_per_million;
        let read = tokens.cache_read.min(tokens.prompt);
        let write = tokens.cache_write.min(tokens.prompt - read);
        let price_1h = self
            .cache_write_1h_per_million
            .or(self.cache_write_per_million);
        // At the same price as the other writes, they are added up with them.
        let write_1h = if price_1h == self.cache_write_per_million {
            0
        } else {
            tokens.cache_write_1h.min(write)
        };
        let mut at_prompt_price = tokens.prompt - read - write;
        let mut other = 0.0;
        for (count, price) in [
            (read, self.cache_read_per_million),
            (write - write_1h, self.cache_write_per_million),
            (write_1h, price_1h),
        ] {
            match price {
                Some(p) if p != prompt_price => other += count as f64 * p,
                _ => at_prompt_price += count,
            }
        }
        (at_prompt_price as f64 * prompt_price
            + tokens.completion as f64 * self.completion_per_million
            + other)
            / 1_000_000.0
    }

    /// `usage` with its `cost` set from these prices.
    pub fn price(&self, mut usage: Usage) -> Usage {
        usage.cost = Some(self.cost_with_cache(&Tokens::of(&usage)));
        usage
    }
}

/// The token counts a cost is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens, those read from and written to the prompt cache included.
    pub prompt: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
    /// Of `cache_write`, the tokens written for an hour.
    pub cache_write_1h: u64,
    /// Output tokens, reasoning included.
    pub completion: u64,
}

impl Tokens {
    /// The counts a provider reported (`prompt_tokens_details.cached_tokens` and
    /// `cache_write_tokens` for the cache, `cache_creation_token_details` for the writes by
    /// lifetime; DeepSeek's `prompt_cache_hit_tokens` when there are no details).
    pub fn of(usage: &Usage) -> Self {
        let details = usage.prompt_tokens_details.as_ref();
        let by_ttl = details.and_then(|d| d.cache_creation_token_details.as_deref());
        let ttl = |count: fn(&CacheCreationTokenDetails) -> Option<u64>| {
            by_ttl.and_then(count).unwrap_or(0)
        };
        let write_1h = ttl(|t| t.ephemeral_1h_input_tokens);
        Tokens {
            prompt: usage.prompt_tokens,
            cache_read: details
                .and_then(|d| d.cached_tokens)
                .or_else(|| {
                    usage
                        .extra
                        .get("prompt_cache_hit_tokens")
                        .and_then(serde_json::Value::as_u64)
                })
                .unwrap_or(0),
            cache_write: details
                .and_then(|d| d.cache_write_tokens)
                .unwrap_or_else(|| ttl(|t| t.ephemeral_5m_input_tokens).saturating_add(write_1h)),
            cache_write_1h: write_1h,
            completion: usage.completion_tokens,
        }
    }
}

/// Put in the request extensions (the usage layer does) to have stream normalisation write
/// `usage.cost`, from the serving target's prices, into the answer and the stream's usage chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct PriceAnswers;

/// One place a request can be sent: a configured provider and the model name it knows.
#[derive(Clone)]
pub struct Target {
    /// The configured provider.
    pub provider: Arc<Provider>,
    /// The model name sent upstream.
    pub upstream_model: Arc<str>,
    /// The public model id reported to the client.
    pub public_model: Arc<str>,
    /// The endpoint's prices; `None` for a `<provider>/<model>` pass-through (cost unknown).
    pub pricing: Option<Pricing>,
    /// The endpoint's output bound from the catalog (`max_output_tokens`); the Anthropic
    /// adapter sends it as `max_tokens` when the client gave none.
    pub max_output_tokens: Option<u32>,
    /// The endpoint's live health (shared by every request to it).
    pub health: Arc<EndpointHealth>,
    /// Whether a slow answer from this target is hedged (the model's setting).
    pub hedge: Option<Hedge>,
}

/// When the fallback layer starts the next target alongside a slow one (a model's setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hedge {
    /// After this long without a first token.
    After(std::time::Duration),
    /// After the endpoint's measured 95th percentile time to first token (no hedge until it
    /// has been measured).
    MeasuredP95,
}

impl Target {
    /// Whether `other` is a copy of this target (the same endpoint, shared state and
    /// settings), told without comparing strings.
    pub(crate) fn same_as(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.provider, &other.provider)
            && Arc::ptr_eq(&self.health, &other.health)
            && Arc::ptr_eq(&self.upstream_model, &other.upstream_model)
            && Arc::ptr_eq(&self.public_model, &other.public_model)
            && self.pricing == other.pricing
            && self.max_output_tokens == other.max_output_tokens
            && self.hedge == other.hedge
    }

    /// A target with no prices, no output bound and a health of its own.
    pub fn new(
        provider: Arc<Provider>,
        upstream_model: impl Into<Arc<str>>,
        public_model: impl Into<Arc<str>>,
    ) -> Self {
        Target {
            provider,
            upstream_model: upstream_model.into(),
            public_model: public_model.into(),
            pricing: None,
            max_output_tokens: None,
            health: Arc::default(),
            hedge: None,
        }
    }

    /// Whether this is the same endpoint as `other` (same provider and upstream model).
    pub fn same_endpoint(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.health, &other.health)
            || (self.provider.name() == other.provider.name()
                && self.upstream_model == other.upstream_model)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider.name())
            .field("upstream_model", &self.upstream_model)
            .field("public_model", &self.public_model)
            .field("pricing", &self.pricing)
            .field("max_output_tokens", &self.max_output_tokens)
            .finish()
    }
}

/// The ordered targets a request may be served by. Inserted by
/// [`ModelRewriteLayer`](crate::model_rewrite::ModelRewriteLayer), walked by
/// [`FallbackLayer`](crate::fallback::FallbackLayer).
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// The public model id the request resolved to.
    pub model: Arc<str>,
    /// Targets, best first; a `models: [...]` fallback list adds each model's targets after
    /// the first model's (their `public_model` tells them apart).
    pub targets: Vec<Target>,
}

/// How one attempt of the fallback layer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// It served the answer.
    Served,
    /// It failed (an error status, a transport fault, a stream that broke before its first
    /// token).
    Failed,
    /// It was not tried: cooling down, or its provider's request limit was spent.
    Skipped,
    /// The client went away while it was in flight (before a stream's first event).
    Cancelled,
}

/// One attempt at one target, as recorded by the fallback layer.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The configured provider.
    pub provider: Arc<str>,
    /// The public model id of the target.
    pub model: Arc<str>,
    /// The model name sent upstream.
    pub upstream_model: Arc<str>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The status the client would have seen for this attempt (200 when it served; none when
    /// skipped or cut before any status).
    pub status: Option<u16>,
    /// From the attempt's start to its answer (or failure).
    pub latency: std::time::Duration,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The target's prices (`None`: a pass-through, cost unknown); metering prices the
    /// attempt that served with them.
    pub pricing: Option<Pricing>,
}

/// Every attempt of one client request, in order. Shared: the fallback layer appends, the
/// layers outside it (metering) read after the answer. Put one in the request extensions to
/// receive the attempts; the fallback layer inserts one when absent and also puts it in the
/// response extensions.
#[derive(Debug, Clone, Default)]
pub struct Attempts(Arc<Mutex<Vec<Attempt>>>);

impl Attempts {
    /// An empty record.
    pub fn new() -> Self {
        Attempts::default()
    }

    /// Appends one attempt.
    pub fn push(&self, attempt: Attempt) {
        lock(&self.0).push(attempt);
    }

    /// A copy of the attempts so far.
    pub fn to_vec(&self) -> Vec<Attempt> {
        lock(&self.0).clone()
    }

    /// How many attempts were recorded.
    pub fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_cache_tokens_are_charged_at_their_own_prices() {
        let tokens = |prompt, cache_read, cache_write, completion| Tokens {
            prompt,
            cache_read,
            cache_write,
            cache_write_1h: 0,
            completion,
        };
        // Without cache prices every prompt token costs the prompt price, exactly as before
        // there were any.
        let plain = Pricing::new(3.0, 15.0);
        for t in [
            tokens(1000, 600, 300, 50),
            tokens(7, 0, 0, 3),
            tokens(0, 9, 9, 0),
        ] {
            assert_eq!(
                plain.cost_with_cache(&t),
                (t.prompt as f64 * 3.0 + t.completion as f64 * 15.0) / 1e6
            );
        }
        assert_eq!(plain.cost(7, 3), (7.0 * 3.0 + 3.0 * 15.0) / 1e6);

        // Anthropic's ratios: reads at a tenth, writes at 1.25 times.
        let cached = plain.with_cache(Some(0.3), Some(3.75));
        let cost = cached.cost_with_cache(&tokens(1000, 600, 300, 50));
        let want = (100.0 * 3.0 + 600.0 * 0.3 + 300.0 * 3.75 + 50.0 * 15.0) / 1e6;
        assert!((cost - want).abs() < 1e-18, "{cost} against {want}");

        // Counts past the prompt are capped (reads first): no token is charged twice.
        assert_eq!(
            cached.cost_with_cache(&tokens(1000, 2000, 500, 0)),
            cached.cost_with_cache(&tokens(1000, 1000, 0, 0))
        );
        assert_eq!(
            cached.cost_with_cache(&tokens(1000, 800, 500, 0)),
            cached.cost_with_cache(&tokens(1000, 800, 200, 0))
        );
        // A cache price equal to the prompt price is the prompt price.
        let same = plain.with_cache(Some(3.0), None);
        assert_eq!(
            same.cost_with_cache(&tokens(1000, 600, 0, 0)),
            plain.cost(1000, 0)
        );

        // `price` reads the counts from the usage's details.
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":50,
                "prompt_tokens_details":{"cached_tokens":600,"cache_write_tokens":300}}"#,
        )
        .unwrap();
        assert_eq!(cached.price(usage).cost, Some(cost));
        // DeepSeek's own field, when there are no details.
        let deepseek: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":50,"prompt_cache_hit_tokens":600,
                "prompt_cache_miss_tokens":400}"#,
        )
        .unwrap();
        assert_eq!(Tokens::of(&deepseek).cache_read, 600);

        assert!(Pricing::new(0.0, 0.0).is_free());
        assert!(!Pricing::new(0.0, 0.0).with_cache(None, Some(1.0)).is_free());
        assert!(Pricing::new(0.0, 0.0).with_cache(Some(0.0), None).is_free());
    }

    #[test]
    fn one_hour_cache_writes_have_a_price_of_their_own() {
        // Anthropic's ratios on a $3 prompt price: five-minute writes at 1.25 times, one-hour
        // writes at twice.
        let tokens = Tokens {
            prompt: 1000,
            cache_read: 100,
            cache_write: 500,
            cache_write_1h: 200,
            completion: 10,
        };
        let priced = Pricing::new(3.0, 15.0)
            .with_cache(Some(0.3), Some(3.75))
            .with_cache_write_1h(Some(6.0));
        let want = (400.0 * 3.0 + 100.0 * 0.3 + 300.0 * 3.75 + 200.0 * 6.0 + 10.0 * 15.0) / 1e6;
        let cost = priced.cost_with_cache(&tokens);
        assert!((cost - want).abs() < 1e-18, "{cost} against {want}");

        // Without a one-hour price, every write is at the write price, as before.
        let single = Pricing::new(3.0, 15.0).with_cache(Some(0.3), Some(3.75));
        assert_eq!(
            single.cost_with_cache(&tokens),
            single.cost_with_cache(&Tokens {
                cache_write_1h: 0,
                ..tokens
            })
        );
        // Without any write price, at the prompt price.
        let only_1h = Pricing::new(3.0, 15.0).with_cache_write_1h(Some(6.0));
        let want = (800.0 * 3.0 + 200.0 * 6.0 + 10.0 * 15.0) / 1e6;
        assert!((only_1h.cost_with_cache(&tokens) - want).abs() < 1e-18);
        // One-hour counts past the writes (and writes past the prompt) are capped.
        assert_eq!(
            priced.cost_with_cache(&Tokens {
                cache_write_1h: 9_000,
                ..tokens
            }),
            priced.cost_with_cache(&Tokens {
                cache_write_1h: 500,
                ..tokens
            })
        );
        assert!(!Pricing::new(0.0, 0.0)
            .with_cache_write_1h(Some(1.0))
            .is_free());

        // Read from the usage: `cache_creation_token_details` as LiteLLM and the Anthropic
        // translation write it; its sum when `cache_write_tokens` is absent.
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":10,
                "prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":500,
                "cache_creation_token_details":{"ephemeral_5m_input_tokens":300,
                "ephemeral_1h_input_tokens":200}}}"#,
        )
        .unwrap();
        assert_eq!(Tokens::of(&usage), tokens);
        assert_eq!(priced.price(usage).cost, Some(cost));
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":10,
                "prompt_tokens_details":{"cached_tokens":100,
                "cache_creation_token_details":{"ephemeral_5m_input_tokens":300,
                "ephemeral_1h_input_tokens":200}}}"#,
        )
        .unwrap();
        assert_eq!(Tokens::of(&usage), tokens);
    }

    #[test]
    fn generation_ids_sort_by_the_time_they_were_made() {
        assert_eq!(&sortable_micros(0), b"0000");
        assert_eq!(&sortable_micros(61), b"000z");
        assert_eq!(&sortable_micros(62), b"0010");
        assert_eq!(&sortable_micros(999_999), b"4C91");
        let mut last = sortable_micros(0);
        for micros in (1..1_000_000).step_by(7) {
            let d = sortable_micros(micros);
            assert!(d > last, "{micros}: {d:?} <= {last:?}");
            last = d;
        }
        let id = GenerationId::new();
        let (secs, rest) = id.as_str()["gen-".len()..].split_once('-').unwrap();
        assert!(secs.len() == 10 && secs.bytes().all(|b| b.is_ascii_digit()));
        assert!(rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
        let ids: Vec<_> = (0..50).map(|_| GenerationId::new()).collect();
        let (a, b) = (&ids[0], &ids[49]);
        assert!(a.as_str()[..19] <= b.as_str()[..19], "{a} then {b}");
    }

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
