//! [`StreamNormalizeLayer`]: turns each provider's answer into the OpenAI shape.
//!
//! Runs once per attempt, just outside [`Dispatch`](crate::dispatch::Dispatch). Reads the
//! [`Target`] and the [`GenerationId`] from the request extensions (a missing `GenerationId`
//! is minted here).
//!
//! - The upstream is always asked for usage (`stream_options.include_usage: true`), whatever
//!   the client asked, so metering never goes blind. Every stream ends with the usage chunk
//!   (`choices: []`, the usage with its `cost`), as OpenRouter's do;
//!   [`StreamUsage::Requested`] keeps it for clients that ask, as OpenAI does.
//! - Non-streaming: the JSON answer gets the gateway's `id`, the public `model` and the
//!   serving `provider`; everything else passes untouched.
//! - Streaming: `data: <compact JSON>\n\n` per event, LF only, sent as soon as it is ready,
//!   ending `data: [DONE]\n\n`; `role` once; tool-call `id`/`type`/`name` once with a dense
//!   `index`; `: keepalive` comments from the provider's `200` until its first event (not
//!   before the provider answers: a comment sent then would commit the answer's status to
//!   `200` before the provider's own is known, and no fallback or error status would be
//!   possible any more); an upstream error, cut, idle timeout or end without `[DONE]` after
//!   the `200` becomes exactly one `data: {"error":…}` event, then the end.
//! - An upstream error status (before any byte reached the client) becomes `Err(Error)` with
//!   the real status, `metadata.provider_name` and a scrubbed `metadata.raw`, so fallback can
//!   decide on it and the edge can answer with the envelope.
//!
//! ```
//! use std::time::Duration;
//! use modelgate::stream_normalize::StreamNormalizeLayer;
//!
//! // Default: a keep-alive comment every 10 s until the provider's first event.
//! let _default = StreamNormalizeLayer::new();
//! // Customised: every 2 s, and a 16 MiB cap on non-streamed answers.
//! let _custom = StreamNormalizeLayer::new()
//!     .keepalive_interval(Some(Duration::from_secs(2)))
//!     .max_response_bytes(16 << 20);
//! ```

mod anthropic;
mod bedrock;
mod body;
mod capture;
mod embeddings;
mod gemini;
mod native;
mod native_responses;
mod openai;

mod translate;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

pub use self::anthropic::AnthropicStream;
pub use self::bedrock::BedrockStream;
pub use self::body::{Framing, ResponseBody, SseStream};
pub use self::gemini::GeminiStream;
pub use self::native::NativeStream;
pub use self::native_responses::NativeResponsesStream;
pub use self::openai::OpenAiStream;
use crate::body::CollectError;
use crate::chat::{ChatCompletion, ChatRequest, StreamOptions, Usage};
use crate::embeddings::Embeddings;
use crate::error::{BoxError, ErrorSource, Retry, Secrets};
use crate::facts::{
    CaptureContent, GenerationId, NativeAnswer, NativeApi, NativeRequest, PriceAnswers, Pricing,
    Target, UsageSlot,
};
use crate::json::{self as raw, key, ObjectWriter};
use crate::provider::ProviderKind;
use crate::sse::SseEvent;
use crate::Error;

/// Largest upstream error body read for the envelope.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What a stream's chunks are stamped with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamContext {
    /// The gateway's id (`gen-…`), used as every chunk's `id`.
    pub id: GenerationId,
    /// The public model id.
    pub model: Arc<str>,
    /// The configured provider's name.
    pub provider: Arc<str>,
    /// Whether the client asked for the final usage chunk.
    pub include_usage: bool,
    /// Whether the client asked for the reasoning to be left out of the answer
    /// (`reasoning.exclude`, `include_reasoning: false`).
    pub exclude_reasoning: bool,
    /// `created` for chunks the gateway writes itself.
    pub created: u64,
    /// When set, the usage gets its `cost` from these prices (see
    /// [`PriceAnswers`]).
    pub pricing: Option<Pricing>,
    /// Scrubbed out of every error the provider's answer becomes.
    pub secrets: Secrets,
}

impl StreamContext {
    /// Chunks stamped with `id`, the public `model` and the serving `provider`; no usage chunk
    /// for the client, `created` taken from the provider, no pricing, no secrets. Set the
    /// other fields as needed.
    pub fn new(
        id: GenerationId,
        model: impl Into<Arc<str>>,
        provider: impl Into<Arc<str>>,
    ) -> Self {
        StreamContext {
            id,
            model: model.into(),
            provider: provider.into(),
            include_usage: false,
            exclude_reasoning: false,
            created: 0,
            pricing: None,
            secrets: Secrets::none(),
        }
    }
}

/// The per-stream state of one upstream dialect: bytes in, OpenAI chunks out.
#[derive(Debug)]
pub enum Translator {
    /// OpenAI and OpenAI-compatible hosts (Azure included).
    OpenAi(OpenAiStream),
    /// Anthropic Messages events.
    Anthropic(AnthropicStream),
    /// Gemini `GenerateContentResponse` events.
    Gemini(GeminiStream),
    /// Bedrock ConverseStream events.
    Bedrock(BedrockStream),
    /// Anthropic's own events, passed on to a client of the Messages API.
    Native(NativeStream),
    /// OpenAI's own Responses events, passed on to a client of the Responses API.
    NativeResponses(NativeResponsesStream),
}

impl Translator {
    /// The translator for a provider kind.
    pub fn new(kind: ProviderKind, ctx: StreamContext) -> Self {
        match kind {
            ProviderKind::Anthropic => Translator::Anthropic(AnthropicStream::new(ctx)),
            ProviderKind::Gemini => Translator::Gemini(GeminiStream::new(ctx)),
            ProviderKind::Bedrock => Translator::Bedrock(BedrockStream::new(ctx)),
            _ => Translator::OpenAi(OpenAiStream::new(ctx)),
        }
    }

    /// Handles one upstream event, appending what the client should see to `out`.
    pub fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        match self {
            Translator::OpenAi(s) => s.on_event(ev, out),
            Translator::Anthropic(s) => s.on_event(ev, out),
            Translator::Gemini(s) => s.on_event(ev, out),
            Translator::Bedrock(s) => s.on_event(ev, out),
            Translator::Native(s) => s.on_event(ev, out),
            Translator::NativeResponses(s) => s.on_event(ev, out),
        }
    }

    /// Every chunk is read in full, none translated like an earlier one of the same shape.
    /// The output is the same either way: this exists to test that it is.
    #[doc(hidden)]
    pub fn read_every_chunk_in_full(&mut self) {
        match self {
            Translator::OpenAi(s) => s.read_every_chunk_in_full(),
            Translator::Anthropic(s) => s.stage.read_every_chunk_in_full(),
            Translator::Gemini(s) => s.stage.read_every_chunk_in_full(),
            Translator::Bedrock(s) => s.inner().stage.read_every_chunk_in_full(),
            Translator::Native(_) | Translator::NativeResponses(_) => {}
        }
    }

    /// The upstream body ended.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        match self {
            Translator::OpenAi(s) => s.on_end(out),
            Translator::Anthropic(s) => s.on_end(out),
            Translator::Gemini(s) => s.on_end(out),
            Translator::Bedrock(s) => s.on_end(out),
            Translator::Native(s) => s.on_end(out),
            Translator::NativeResponses(s) => s.on_end(out),
        }
    }

    /// The upstream body failed (reset, idle timeout).
    pub fn on_error(&mut self, err: Error, out: &mut BytesMut) {
        match self {
            Translator::OpenAi(s) => s.on_error(err, out),
            Translator::Anthropic(s) => s.on_error(err, out),
            Translator::Gemini(s) => s.on_error(err, out),
            Translator::Bedrock(s) => s.on_error(err, out),
            Translator::Native(s) => s.on_error(err, out),
            Translator::NativeResponses(s) => s.on_error(err, out),
        }
    }

    /// True once `[DONE]` or the error event has been written.
    pub fn is_finished(&self) -> bool {
        match self {
            Translator::OpenAi(s) => s.is_finished(),
            Translator::Anthropic(s) => s.is_finished(),
            Translator::Gemini(s) => s.is_finished(),
            Translator::Bedrock(s) => s.is_finished(),
            Translator::Native(s) => s.is_finished(),
            Translator::NativeResponses(s) => s.is_finished(),
        }
    }

    /// The usage the provider reported, if any.
    pub fn usage(&self) -> Option<&Usage> {
        match self {
            Translator::OpenAi(s) => s.usage(),
            Translator::Anthropic(s) => s.usage(),
            Translator::Gemini(s) => s.usage(),
            Translator::Bedrock(s) => s.usage(),
            Translator::Native(s) => s.usage(),
            Translator::NativeResponses(s) => s.usage(),
        }
    }

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Translator::OpenAi(s) => s.error(),
            Translator::Anthropic(s) => s.error(),
            Translator::Gemini(s) => s.error(),
            Translator::Bedrock(s) => s.error(),
            Translator::Native(s) => s.error(),
            Translator::NativeResponses(s) => s.error(),
        }
    }

    /// The last finish reason seen.
    pub fn finish_reason(&self) -> Option<&str> {
        match self {
            Translator::OpenAi(s) => s.finish_reason(),
            Translator::Anthropic(s) => s.finish_reason(),
            Translator::Gemini(s) => s.finish_reason(),
            Translator::Bedrock(s) => s.finish_reason(),
            Translator::Native(s) => s.finish_reason(),
            Translator::NativeResponses(s) => s.finish_reason(),
        }
    }
}

/// Which streams end with the usage chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamUsage {
    /// Every stream, as OpenRouter does.
    #[default]
    Always,
    /// Only the streams of clients that ask with `stream_options.include_usage`, as OpenAI
    /// does.
    Requested,
}

/// Builds [`StreamNormalize`]; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct StreamNormalizeLayer {
    keepalive: Option<Duration>,
    max_response_bytes: usize,
    usage: StreamUsage,
}

impl Default for StreamNormalizeLayer {
    fn default() -> Self {
        StreamNormalizeLayer {
            keepalive: Some(Duration::from_secs(10)),
            max_response_bytes: 64 << 20,
            usage: StreamUsage::Always,
        }
    }
}

impl StreamNormalizeLayer {
    /// Keep-alive every 10 s; non-streamed answers up to 64 MiB; every stream ends with the
    /// usage chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which streams end with the usage chunk (default: [`StreamUsage::Always`]).
    pub fn stream_usage(mut self, usage: StreamUsage) -> Self {
        self.usage = usage;
        self
    }

    /// How often a `: keepalive` comment goes out between the provider's `200` and its first
    /// event (`None`: never).
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keepalive = interval.filter(|d| !d.is_zero());
        self
    }

    /// Largest non-streamed upstream answer accepted (larger: 502).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for StreamNormalizeLayer {
    type Service = StreamNormalize<S>;
    fn layer(&self, inner: S) -> StreamNormalize<S> {
        StreamNormalize {
            inner,
            config: *self,
        }
    }
}

/// Normalises a provider's answer; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct StreamNormalize<S> {
    inner: S,
    config: StreamNormalizeLayer,
}

impl<S, B> Service<Request<ChatRequest>> for StreamNormalize<S>
where
    S: Service<Request<ChatRequest>, Response = Response<B>, Error = Error>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ChatRequest>) -> Self::Future {
        let Some(target) = req.extensions().get::<Target>() else {
            return Box::pin(std::future::ready(Err(Error::internal(
                "no routing target on the request: put ModelRewriteLayer (or insert a Target) before StreamNormalize",
            ))));
        };
        // What the answer needs of the target, not a copy of all of it: each shared handle
        // copied is a counter every request touches, from every thread.
        let (provider, public_model, pricing) = (
            target.provider.clone(),
            target.public_model.clone(),
            target.pricing,
        );
        // The API the answer is in (Vertex's depends on the model); a request kept in this
        // provider's own dialect is answered in it, untranslated.
        let kind = provider.speaks(&target.upstream_model);
        let native = req
            .extensions()
            .get::<NativeRequest>()
            .filter(|n| n.served_by(&provider, &target.upstream_model))
            .map(|n| n.api);
        let id = match req.extensions().get::<GenerationId>() {
            Some(id) => id.clone(),
            None => {
                let id = GenerationId::new();
                req.extensions_mut().insert(id.clone());
                id
            }
        };
        let slot = req.extensions().get::<UsageSlot>().cloned();
        let embeddings = req.extensions().get::<Embeddings>().cloned();
        let streaming = req.body().is_stream();
        // The answer's text kept for telemetry (a slot to keep it in is needed).
        let capture = slot.is_some() && req.extensions().get::<CaptureContent>().is_some();
        let ctx = StreamContext {
            id,
            model: public_model,
            provider: provider.name_arc().clone(),
            include_usage: self.config.usage == StreamUsage::Always
                || req.body().wants_stream_usage(),
            exclude_reasoning: req.body().reasoning_ask().exclude,
            created: 0,
            pricing: pricing.filter(|_| req.extensions().get::<PriceAnswers>().is_some()),
            secrets: provider.secrets().clone(),
        };
        if streaming {
            req.body_mut()
                .stream_options
                .get_or_insert_with(StreamOptions::default)
                .include_usage = Some(true);
        }
        let config = self.config;
        let fut = self.inner.call(req);
        // Kept small (the whole of it is written into its allocation on every request): the
        // answer's head is not held while its body is read, and the body is read in place, not
        // moved into the reading future.
        Box::pin(async move {
            let res = fut.await.map_err(|e| e.redact(&ctx.secrets))?;
            let (mut parts, body) = res.into_parts();
            if !parts.status.is_success() {
                // The provider refused: nothing was generated.
                if let Some(slot) = &slot {
                    slot.record(Usage::default());
                }
                let bytes = read_error_body(std::pin::pin!(body)).await;
                return Err(crate::provider::upstream_error(
                    parts.status,
                    &parts.headers,
                    &bytes,
                    &ctx.provider,
                    &ctx.secrets,
                ));
            }
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let framing = if content_type.starts_with("text/event-stream") {
                Some(Framing::Sse)
            } else if content_type.starts_with(crate::provider::bedrock::EVENT_STREAM) {
                Some(Framing::EventStream)
            } else {
                None
            };
            if native.is_some() {
                parts.extensions.insert(NativeAnswer);
            }
            if let (true, Some(framing)) = (streaming, framing) {
                let state = match native {
                    Some(NativeApi::AnthropicMessages) if framing == Framing::EventStream => {
                        Translator::Native(NativeStream::new(ctx).bedrock_chunks())
                    }
                    Some(NativeApi::AnthropicMessages) => {
                        Translator::Native(NativeStream::new(ctx))
                    }
                    Some(_) => Translator::NativeResponses(NativeResponsesStream::new(ctx)),
                    None => Translator::new(kind, ctx),
                };
                let mut out = Response::new(ResponseBody::Stream {
                    stream: Box::pin(
                        SseStream::new(body, state, config.keepalive)
                            .framing(framing)
                            .usage_slot(slot)
                            .capture(capture),
                    ),
                });
                std::mem::swap(out.extensions_mut(), &mut parts.extensions);
                set_sse_headers(out.headers_mut());
                return Ok(out);
            }
            let extensions = std::mem::take(&mut parts.extensions);
            drop(parts);
            let bytes = read_body(
                std::pin::pin!(body),
                config.max_response_bytes,
                &ctx.provider,
            )
            .await?;
            let mut out = Response::new(ResponseBody::full(Bytes::new()));
            *out.extensions_mut() = extensions;
            if let Some(e) = &embeddings {
                // Answered in OpenAI's shape, which is the client's: passed on by its edge.
                let (json, usage) = embeddings::render(&bytes, &ctx, provider.kind(), e)?;
                if let Some(slot) = &slot {
                    slot.record(usage.clone());
                }
                out.extensions_mut().insert(usage);
                out.extensions_mut().insert(NativeAnswer);
                out.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                *out.body_mut() = ResponseBody::full(json);
                return Ok(out);
            }
            if let Some(api) = native {
                let (json, usage, finish_reason) = match api {
                    NativeApi::AnthropicMessages => native::render(&bytes, &ctx)?,
                    _ => native_responses::render(&bytes, &ctx)?,
                };
                if let Some(slot) = &slot {
                    slot.record_finish_reason(finish_reason);
                    slot.record(usage.clone().unwrap_or_default());
                    if capture {
                        slot.record_output(capture::whole(&json).unwrap_or_default());
                    }
                }
                if let Some(usage) = usage {
                    out.extensions_mut().insert(usage);
                }
                out.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                *out.body_mut() = ResponseBody::full(json);
                return Ok(out);
            }
            if streaming {
                // The provider ignored `stream: true` and answered with JSON: replay it as a stream.
                let mut completion = parse_completion(&bytes, &ctx, kind)?;
                if let Some(p) = ctx.pricing {
                    completion.usage = completion.usage.take().map(|u| p.price(u));
                }
                if let Some(slot) = &slot {
                    slot.record_finish_reason(
                        completion
                            .choices
                            .first()
                            .and_then(|c| c.finish_reason.as_deref()),
                    );
                }
                let mut state = OpenAiStream::new(ctx);
                let mut buf = bytes::BytesMut::new();
                if let (Some(slot), Some(usage)) = (&slot, &completion.usage) {
                    slot.record(usage.clone());
                }
                state.replay_completion(completion, &mut buf);
                if let (true, Some(slot)) = (capture, &slot) {
                    let mut c = capture::Captured::default();
                    c.feed_sse(&buf);
                    slot.record_output(c.text);
                }
                *out.body_mut() = ResponseBody::full(buf.freeze());
                set_sse_headers(out.headers_mut());
                return Ok(out);
            }
            let (json, usage, finish_reason) = match kind {
                ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Bedrock => {
                    let mut c = parse_completion(&bytes, &ctx, kind)?;
                    if let Some(p) = ctx.pricing {
                        c.usage = c.usage.take().map(|u| p.price(u));
                    }
                    if ctx.exclude_reasoning {
                        for choice in &mut c.choices {
                            let m = &mut choice.message;
                            (m.reasoning_content, m.reasoning, m.reasoning_details) =
                                (None, None, None);
                        }
                    }
                    c.id = ctx.id.as_str().to_owned();
                    c.model = ctx.model.to_string();
                    c.provider = Some(ctx.provider.to_string());
                    let json = serde_json::to_vec(&c).map_err(|e| {
                        Error::internal(format!("cannot serialise the answer: {e}"))
                    })?;
                    let reason = c.choices.first().and_then(|c| c.finish_reason.clone());
                    (Bytes::from(json), c.usage, reason)
                }
                _ => {
                    let r = render_completion(&bytes, &ctx)?;
                    (r.json, r.usage, r.finish_reason)
                }
            };
            if let Some(slot) = &slot {
                slot.record_finish_reason(finish_reason.as_deref());
                if capture {
                    slot.record_output(capture::whole(&json).unwrap_or_default());
                }
            }
            if let Some(usage) = usage {
                if let Some(slot) = &slot {
                    slot.record(usage.clone());
                }
                out.extensions_mut().insert(usage);
            }
            out.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            *out.body_mut() = ResponseBody::full(json);
            Ok(out)
        })
    }
}

fn set_sse_headers(h: &mut http::HeaderMap) {
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

async fn read_error_body<B>(body: Pin<&mut B>) -> Bytes
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    crate::body::collect_limited(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default()
}

async fn read_body<B>(body: Pin<&mut B>, limit: usize, provider: &Arc<str>) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match crate::body::collect_limited(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(CollectError::TooLarge) => Err(Error::bad_gateway(
            format!("{provider}: the answer is larger than the limit of {limit} bytes"),
            ErrorSource::Upstream,
            Retry::Never,
        )
        .with_provider(provider.clone())),
        Err(CollectError::Body(e)) => Err(answered(match e.downcast::<Error>() {
            Ok(err) => *err,
            Err(e) => Error::bad_gateway(
                format!("{provider}: reading the answer failed: {e}"),
                ErrorSource::Transport,
                Retry::Retryable,
            )
            .with_cause(e),
        })
        .with_provider(provider.clone())),
    }
}

/// A 200 answer the gateway cannot use: 502, with the (scrubbed) body as `metadata.raw`.
fn unusable_answer(ctx: &StreamContext, bytes: &[u8], why: String) -> Error {
    Error::bad_gateway(
        format!("{}: {why}", ctx.provider),
        ErrorSource::Upstream,
        Retry::Elsewhere,
    )
    .with_provider(ctx.provider.clone())
    .with_raw(Some(crate::error::scrub(
        &String::from_utf8_lossy(bytes),
        &ctx.secrets,
    )))
}

/// An error about an answer whose head was a `200`: whatever it says about retries, not at
/// this target again (it answered, and may have billed).
fn answered(e: Error) -> Error {
    if e.is_retryable() {
        e.with_retry(Retry::Elsewhere)
    } else {
        e
    }
}

/// A 200 answer that holds an `error` object: that error, as a 502 (not retried at this
/// target: it answered).
fn error_in_answer(ctx: &StreamContext, bytes: &[u8]) -> Error {
    answered(crate::provider::upstream_error(
        StatusCode::BAD_GATEWAY,
        &http::HeaderMap::new(),
        bytes,
        &ctx.provider,
        &ctx.secrets,
    ))
}

/// Parses a non-streamed upstream answer; an unusable one is a 502 with the body as `raw`.
fn parse_completion(
    bytes: &[u8],
    ctx: &StreamContext,
    kind: ProviderKind,
) -> Result<ChatCompletion, Error> {
    let garbage = |why: String| unusable_answer(ctx, bytes, why);
    if matches!(
        kind,
        ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Bedrock
    ) {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| garbage(format!("the provider answered with malformed JSON ({e})")))?;
        if v.get("error").is_some_and(|e| e.is_object()) {
            return Err(error_in_answer(ctx, bytes));
        }
        let translated = match kind {
            ProviderKind::Anthropic => crate::provider::anthropic::completion(&v),
            ProviderKind::Bedrock => crate::provider::bedrock::completion(&v),
            _ => crate::provider::gemini::completion(&v),
        };
        return translated.map_err(garbage);
    }
    let completion: ChatCompletion = serde_json::from_slice(bytes)
        .map_err(|e| garbage(format!("the provider answered with malformed JSON ({e})")))?;
    if completion.extra.contains_key("error") {
        return Err(error_in_answer(ctx, bytes));
    }
    Ok(completion)
}

/// Stamps a non-streamed answer with the gateway's id, the public model and the serving
/// provider; every other field is copied byte for byte. Also returns the reported usage.
///
/// An answer that is not a JSON object with a `choices` array is a 502; an answer that holds
/// an `error` object is that error.
pub fn render_completion(bytes: &[u8], ctx: &StreamContext) -> Result<Rendered, Error> {
    let garbage = |why: String| unusable_answer(ctx, bytes, why);
    // Validating UTF-8 once up front is cheaper than per string inside the parser.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| garbage(format!("the provider's answer is not UTF-8 ({e})")))?;
    let (obj, finish_reason) = raw::parse_answer(text, "choices", "finish_reason")
        .map_err(|e| garbage(format!("the provider answered with malformed JSON ({e})")))?;
    let obj = obj.members();
    // The members read, in one pass. One of them twice is refused: the usage recorded, or
    // whether the answer is an error, could differ from what the client reads (most parsers
    // keep the last), as a repeated `choices` in a stream chunk is refused.
    let (mut error, mut choices, mut usage) = (None, None, None);
    for m in obj.iter() {
        let (slot, name) = match m.key().as_ref() {
            "error" => (&mut error, "error"),
            "choices" => (&mut choices, "choices"),
            "usage" => (&mut usage, "usage"),
            _ => continue,
        };
        if slot.replace(m.value()).is_some() {
            return Err(garbage(format!("the provider's answer repeats `{name}`")));
        }
    }
    if error.is_some_and(|e| e.get() != "null") {
        return Err(error_in_answer(ctx, bytes));
    }
    if !choices.is_some_and(|c| c.get().starts_with('[')) {
        return Err(garbage(
            "the provider's answer has no `choices` array".into(),
        ));
    }
    let mut usage = match usage.filter(|u| u.get() != "null") {
        Some(u) => Some(match raw::plain_usage(u.get()) {
            Some(plain) => plain,
            None => serde_json::from_str::<Usage>(u.get())
                .map_err(|e| garbage(format!("the provider's `usage` is malformed ({e})")))?,
        }),
        None => None,
    };
    // Priced: the usage is written again, with the gateway's `cost`.
    let priced = match (ctx.pricing, usage.take()) {
        (Some(p), Some(u)) => {
            let u = p.price(u);
            let json = serde_json::to_string(&u)
                .map_err(|e| Error::internal(format!("cannot serialise the usage: {e}")))?;
            usage = Some(u);
            Some(json)
        }
        (_, u) => {
            usage = u;
            None
        }
    };
    let finish_reason = finish_reason.and_then(raw::string_value);
    let mut out = Vec::with_capacity(bytes.len() + 96);
    let mut w = ObjectWriter::begin(&mut out);
    let (mut wrote_id, mut wrote_model, mut fingerprint) = (false, false, false);
    for m in obj.iter() {
        match m.key().as_ref() {
            "system_fingerprint" => {
                fingerprint = true;
                w.member(&m);
            }
            "id" => {
                w.str_field(key!("id"), ctx.id.as_str());
                wrote_id = true;
            }
            "model" => {
                w.str_field(key!("model"), &ctx.model);
                w.str_field(key!("provider"), &ctx.provider);
                wrote_model = true;
            }
            "provider" => {}
            "usage" if priced.is_some() => {
                w.raw_field(key!("usage"), priced.as_deref().unwrap_or("null"))
            }
            _ => {
                w.member(&m);
            }
        }
    }
    if !wrote_id {
        w.str_field(key!("id"), ctx.id.as_str());
    }
    if !wrote_model {
        w.str_field(key!("model"), &ctx.model);
        w.str_field(key!("provider"), &ctx.provider);
    }
    if !fingerprint {
        // Present on every answer, as OpenRouter's are.
        w.raw_field(key!("system_fingerprint"), "null");
    }
    w.end();
    Ok(Rendered {
        json: Bytes::from(out),
        usage,
        finish_reason,
    })
}

/// A non-streamed OpenAI-dialect answer, rewritten by [`render_completion`].
#[derive(Debug)]
pub struct Rendered {
    /// The answer the client gets.
    pub json: Bytes,
    /// The usage it reported (priced when asked).
    pub usage: Option<Usage>,
    /// The first choice's finish reason.
    pub finish_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::Frame;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::provider::{Provider, ProviderKind};

    struct ChannelBody(mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn request(stream: bool) -> Request<ChatRequest> {
        let provider = Arc::new(
            Provider::builder("p", ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
                .build()
                .unwrap(),
        );
        let mut req = Request::new(ChatRequest {
            model: "m".into(),
            stream: Some(stream),
            ..Default::default()
        });
        req.extensions_mut()
            .insert(Target::new(provider, "up", "public"));
        req
    }

    async fn next_data<B: Body<Data = Bytes>>(mut body: Pin<&mut B>) -> Bytes
    where
        B::Error: std::fmt::Debug,
    {
        body.frame()
            .await
            .expect("a frame")
            .expect("no error")
            .into_data()
            .expect("a data frame")
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_comments_until_the_first_upstream_byte() {
        let (tx, rx) = mpsc::channel(4);
        let rx = std::sync::Mutex::new(Some(rx));
        let svc = StreamNormalizeLayer::new()
            .keepalive_interval(Some(Duration::from_secs(5)))
            .layer(service_fn(move |req: Request<ChatRequest>| {
                assert_eq!(
                    req.body().stream_options.as_ref().unwrap().include_usage,
                    Some(true)
                );
                let body = ChannelBody(rx.lock().unwrap().take().unwrap());
                let mut res = Response::new(body);
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                std::future::ready(Ok::<_, Error>(res))
            }));
        let res = svc.oneshot(request(true)).await.unwrap();
        let mut body = std::pin::pin!(res.into_body());
        let start = tokio::time::Instant::now();
        let frame = next_data(body.as_mut()).await;
        assert_eq!(&frame[..], crate::sse::KEEPALIVE);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        let frame = next_data(body.as_mut()).await;
        assert_eq!(&frame[..], crate::sse::KEEPALIVE);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        tx.send(Bytes::from_static(
            b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
        ))
        .await
        .unwrap();
        let frame = next_data(body.as_mut()).await;
        assert!(frame.starts_with(b"data: {"), "{frame:?}");
        // After the first byte: no more keep-alives, however long the silence.
        tokio::time::advance(Duration::from_secs(60)).await;
        tx.send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .unwrap();
        let frame = next_data(body.as_mut()).await;
        assert_eq!(&frame[..], crate::sse::DONE);
        assert!(body.as_mut().frame().await.is_none());
    }

    #[tokio::test]
    async fn missing_target_is_a_clear_internal_error() {
        let svc = StreamNormalizeLayer::new().layer(service_fn(|_req: Request<ChatRequest>| {
            std::future::ready(Ok::<_, Error>(Response::new(
                http_body_util::Empty::<Bytes>::new(),
            )))
        }));
        let err = svc
            .oneshot(Request::new(ChatRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.message().contains("ModelRewriteLayer"));
    }

    #[tokio::test]
    async fn upstream_error_status_is_an_error_with_the_real_status() {
        let svc = StreamNormalizeLayer::new().layer(service_fn(|_req: Request<ChatRequest>| {
            let mut res = Response::new(http_body_util::Full::new(Bytes::from_static(
                br#"{"error":{"message":"slow down","type":"rate_limit","code":null}}"#,
            )));
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("0.3"));
            std::future::ready(Ok::<_, Error>(res))
        }));
        let err = svc.oneshot(request(true)).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after(), Some(Duration::from_millis(300)));
        assert!(err.is_retryable());
        let res = err.into_response();
        assert_eq!(
            res.headers()[http::header::RETRY_AFTER],
            "1",
            "ceiling seconds, never 0"
        );
    }

    fn answer_ctx() -> StreamContext {
        StreamContext {
            id: GenerationId::new(),
            model: Arc::from("public/model"),
            provider: Arc::from("prov"),
            include_usage: false,
            exclude_reasoning: false,
            created: 0,
            pricing: None,
            secrets: Secrets::none(),
        }
    }

    #[test]
    fn the_finish_reason_recorded_is_the_first_choices_own() {
        let ctx = answer_ctx();
        let reason = |answer: &str| {
            render_completion(answer.as_bytes(), &ctx)
                .unwrap()
                .finish_reason
        };
        // A nested key of that name comes first; the choice's own comes after it.
        let nested = r#"{"choices":[{"message":{"role":"assistant","content":"x",
            "finish_reason":"tool_calls"},"finish_reason":"stop"},{"finish_reason":"length"}]}"#;
        assert_eq!(reason(nested).as_deref(), Some("stop"));
        // Pretty-printed: whitespace after the colon.
        let spaced = "{\"choices\": [ {\"index\": 0, \"finish_reason\" : \"length\"} ]}";
        assert_eq!(reason(spaced).as_deref(), Some("length"));
        // Only the second choice has one: the first choice's is what is recorded (none).
        let second = r#"{"choices":[{"index":0},{"index":1,"finish_reason":"stop"}]}"#;
        assert_eq!(reason(second), None);
        assert_eq!(reason(r#"{"choices":[{"finish_reason":null}]}"#), None);
        // Repeated: the last, as the client's JSON reader keeps it.
        let twice = r#"{"choices":[{"finish_reason":"length","finish_reason":"stop"}]}"#;
        assert_eq!(reason(twice).as_deref(), Some("stop"));
        assert_eq!(reason(r#"{"choices":[]}"#), None);
    }

    #[test]
    fn an_answer_that_repeats_a_member_the_gateway_reads_is_a_502() {
        let ctx = answer_ctx();
        for (answer, name) in [
            (r#"{"choices":[],"choices":5}"#, "choices"),
            (
                r#"{"choices":[],"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":9}}"#,
                "usage",
            ),
            (
                r#"{"error":null,"choices":[],"error":{"message":"x"}}"#,
                "error",
            ),
        ] {
            let err = render_completion(answer.as_bytes(), &ctx).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{answer}");
            assert!(
                err.message().contains(&format!("repeats `{name}`")),
                "{}",
                err.message()
            );
        }
        // Other members may repeat: they are copied as they are.
        let ok = render_completion(br#"{"x":1,"choices":[],"x":2}"#, &ctx).unwrap();
        assert!(std::str::from_utf8(&ok.json)
            .unwrap()
            .contains(r#""x":1,"choices":[],"x":2"#));
    }
}
