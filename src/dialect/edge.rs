//! The edge every dialect but Chat Completions shares: the body read, the request translated
//! by the dialect's [`Wire`], the typed core called, and its answer written back in the
//! dialect (a stream event by event, a JSON answer whole, a native answer as it came), with
//! every error in the dialect's envelope and the generation id on every answer.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::Dialect;
use crate::chat::{ChatChunk, ChatCompletion, ChatRequest, MAX_MODEL_ID_BYTES};
use crate::decode::{check_declared_length, read_body, DEFAULT_MAX_BODY_BYTES, GENERATION_ID_NAME};
use crate::embeddings::Embeddings;
use crate::error::{BoxError, ErrorSource, Retry};
use crate::facts::{GenerationId, NativeAnswer, NativeRequest};
use crate::sse::{SseDecoder, SseEvent, KEEPALIVE};
use crate::Error;

/// A request read from a dialect's wire (the crate's own dialects make them).
#[doc(hidden)]
#[non_exhaustive]
pub struct Read<S> {
    /// The core's request.
    pub chat: ChatRequest,
    /// The request kept as it came, for a provider of the dialect's own kind.
    pub native: Option<NativeRequest>,
    /// The embeddings request, for the embeddings edge.
    pub embeddings: Option<Embeddings>,
    /// What writing the answer needs of the request.
    pub shape: S,
}

/// A dialect's own wire: how its request is read and its answers written.
pub trait Wire: Send + Sync + 'static {
    /// What writing the answer needs of the request.
    #[doc(hidden)]
    type Shape: Send + 'static;
    /// The stream writer.
    #[doc(hidden)]
    type Writer: StreamWriter;
    /// The dialect.
    #[doc(hidden)]
    const DIALECT: Dialect;
    /// Reads a request body.
    #[doc(hidden)]
    fn read(bytes: Bytes, headers: &HeaderMap) -> Result<Read<Self::Shape>, Error>;
    /// The stream writer of the answer `id` for the model the client asked for.
    #[doc(hidden)]
    fn writer(id: &str, model: String, shape: Self::Shape) -> Self::Writer;
    /// A whole answer.
    #[doc(hidden)]
    fn answer(c: ChatCompletion, id: &str, shape: Self::Shape) -> Result<Vec<u8>, Error>;
}

/// Writes the core's stream in a dialect.
#[doc(hidden)]
pub trait StreamWriter: Send + 'static {
    /// A keep-alive from the core.
    fn ping(&mut self, out: &mut BytesMut);
    /// One event of the core's stream.
    fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut);
    /// The core's stream ended.
    fn on_end(&mut self, out: &mut BytesMut);
    /// The stream failed: the dialect's one error event.
    fn fail(&mut self, err: &Error, out: &mut BytesMut);
    /// True once the terminal event has been written.
    fn is_finished(&self) -> bool;
}

/// Builds [`Edge`]: a dialect's edge in front of the typed core.
#[derive(Debug)]
pub struct EdgeLayer<W> {
    max_body_bytes: usize,
    _wire: PhantomData<fn() -> W>,
}

impl<W> Clone for EdgeLayer<W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for EdgeLayer<W> {}

impl<W> Default for EdgeLayer<W> {
    fn default() -> Self {
        EdgeLayer {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            _wire: PhantomData,
        }
    }
}

impl<W> EdgeLayer<W> {
    /// The edge with the default 32 MiB body limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the body limit.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

impl<S, W> Layer<S> for EdgeLayer<W> {
    type Service = Edge<S, W>;
    fn layer(&self, inner: S) -> Edge<S, W> {
        Edge {
            inner,
            max_body_bytes: self.max_body_bytes,
            _wire: PhantomData,
        }
    }
}

/// A dialect's edge in front of the typed core; see the [module docs](self).
#[derive(Debug)]
pub struct Edge<S, W> {
    inner: S,
    max_body_bytes: usize,
    _wire: PhantomData<fn() -> W>,
}

impl<S: Clone, W> Clone for Edge<S, W> {
    fn clone(&self) -> Self {
        Edge {
            inner: self.inner.clone(),
            max_body_bytes: self.max_body_bytes,
            _wire: PhantomData,
        }
    }
}

impl<S, W, B, RB> Service<Request<B>> for Edge<S, W>
where
    W: Wire,
    S: Service<Request<ChatRequest>, Response = Response<RB>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<EdgeBody<RB, W::Writer>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is driven to readiness inside the future, once the body is read.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.max_body_bytes;
        let ext = req.extensions_mut();
        let id = ext.get::<GenerationId>().cloned().unwrap_or_default();
        ext.insert(id.clone());
        ext.insert(W::DIALECT);
        Box::pin(async move {
            let result = async {
                check_declared_length(&req, limit)?;
                let (mut parts, body) = req.into_parts();
                let bytes = read_body(std::pin::pin!(body), limit).await?;
                let read = W::read(bytes, &parts.headers)?;
                if let Some(native) = read.native {
                    parts.extensions.insert(native);
                }
                if let Some(embeddings) = read.embeddings {
                    parts.extensions.insert(embeddings);
                }
                let model = read.chat.model.clone();
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                let res = inner.call(Request::from_parts(parts, read.chat)).await?;
                write::<W, RB>(res, id.as_str(), model, read.shape).await
            }
            .await;
            let mut res = result.unwrap_or_else(|e| {
                tracing::debug!(status = e.status().as_u16(), error = %e, "request failed");
                W::DIALECT.error_response(&e).map(EdgeBody::full)
            });
            if let Ok(v) = HeaderValue::from_str(id.as_str()) {
                res.headers_mut().insert(GENERATION_ID_NAME, v);
            }
            Ok(res)
        })
    }
}

/// The core's answer in the dialect: a stream re-written event by event (or passed on, when
/// native), a native JSON answer as it is, another translated.
async fn write<W, RB>(
    res: Response<RB>,
    id: &str,
    model: String,
    shape: W::Shape,
) -> Result<Response<EdgeBody<RB, W::Writer>>, Error>
where
    W: Wire,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    let is_sse = res
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_sse {
        // Native or translated is known at the stream's first event.
        let writer = W::writer(id, model, shape);
        return Ok(res.map(|body| EdgeBody::Stream {
            body: Box::pin(DialectStream::new(body, writer)),
        }));
    }
    if res.extensions().get::<NativeAnswer>().is_some() {
        return Ok(res.map(|body| EdgeBody::Native { body }));
    }
    let (mut parts, body) = res.into_parts();
    let bytes = crate::body::collect_limited(std::pin::pin!(body), usize::MAX)
        .await
        .map_err(|_| {
            Error::bad_gateway(
                "the answer could not be read",
                ErrorSource::Transport,
                Retry::Never,
            )
        })?;
    let completion: ChatCompletion = serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("the gateway wrote an unreadable answer: {e}")))?;
    let json = W::answer(completion, id, shape)?;
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.status = StatusCode::OK;
    Ok(Response::from_parts(
        parts,
        EdgeBody::full(Full::new(Bytes::from(json))),
    ))
}

/// The body of an answer at a dialect's edge.
#[pin_project(project = EdgeBodyProj)]
pub enum EdgeBody<B, W> {
    /// A provider's own (non-streamed) answer in the dialect, as it came (already stamped).
    Native {
        /// The body.
        #[pin]
        body: B,
    },
    /// A stream: a provider's own events in the dialect, or the core's re-written.
    Stream {
        /// The body.
        body: Pin<Box<DialectStream<B, W>>>,
    },
    /// A complete answer: a translated one, or an error.
    Full {
        /// The bytes.
        #[pin]
        body: Full<Bytes>,
    },
}

impl<B, W> std::fmt::Debug for EdgeBody<B, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EdgeBody::Native { .. } => "EdgeBody::Native",
            EdgeBody::Stream { .. } => "EdgeBody::Stream",
            EdgeBody::Full { .. } => "EdgeBody::Full",
        })
    }
}

impl<B, W> EdgeBody<B, W> {
    fn full(body: Full<Bytes>) -> Self {
        EdgeBody::Full { body }
    }
}

impl<B, W> Body for EdgeBody<B, W>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    W: StreamWriter,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            EdgeBodyProj::Native { body } => body.poll_frame(cx).map_err(Into::into),
            EdgeBodyProj::Stream { body } => body.as_mut().poll_frame(cx).map_err(|e| match e {}),
            EdgeBodyProj::Full { body } => body.poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::Native { body } => body.is_end_stream(),
            EdgeBody::Stream { body } => body.is_end_stream(),
            EdgeBody::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::Native { body } => body.size_hint(),
            EdgeBody::Stream { body } => body.size_hint(),
            EdgeBody::Full { body } => body.size_hint(),
        }
    }
}

/// How a stream is written: decided by its first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only keep-alives so far.
    Undecided,
    /// A provider's own events in the dialect (they come with `event:` lines): passed on.
    Native,
    /// The core's chunks: re-written.
    Translated,
}

/// A dialect's stream from the core's SSE body. Which endpoint serves is known only at the
/// stream's first event (the fallback layer may move on from a stream that fails before it):
/// a provider's own events in the dialect are passed on, the core's chunks are re-written by
/// the dialect's writer. Keep-alives are the writer's.
#[pin_project]
pub struct DialectStream<B, W> {
    #[pin]
    inner: B,
    mode: Mode,
    decoder: SseDecoder,
    writer: W,
    out: BytesMut,
    done: bool,
}

impl<B, W> std::fmt::Debug for DialectStream<B, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialectStream")
            .field("mode", &self.mode)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B, W> DialectStream<B, W> {
    pub(crate) fn new(inner: B, writer: W) -> Self {
        DialectStream {
            inner,
            mode: Mode::Undecided,
            decoder: SseDecoder::new(),
            writer,
            out: BytesMut::new(),
            done: false,
        }
    }
}

impl<B, W> Body for DialectStream<B, W>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    W: StreamWriter,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                if this.out.is_empty() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.as_ref() == KEEPALIVE {
                        this.writer.ping(this.out);
                        return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
                    }
                    if *this.mode == Mode::Undecided {
                        *this.mode = if data.starts_with(b"event:") {
                            Mode::Native
                        } else {
                            Mode::Translated
                        };
                    }
                    if *this.mode == Mode::Native {
                        // Already in the client's dialect (the native stream ends itself).
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.decoder.feed(&data);
                    while let Some(ev) = this.decoder.next_event() {
                        this.writer.on_event(&ev, this.out);
                        this.decoder.recycle(ev);
                    }
                    if this.writer.is_finished() {
                        *this.done = true;
                    } else if !this.out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    let err = Error::new(StatusCode::BAD_GATEWAY, "api_error", e.to_string());
                    this.writer.fail(&err, this.out);
                    *this.done = true;
                }
                Poll::Ready(None) => {
                    if *this.mode != Mode::Native {
                        this.decoder.finish();
                        while let Some(ev) = this.decoder.next_event() {
                            this.writer.on_event(&ev, this.out);
                        }
                        this.writer.on_end(this.out);
                    }
                    *this.done = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The stream `writer` writes for a core stream arriving in these frames, all ready at once.
/// For tests and fuzzing.
pub(crate) fn write_frames<W: StreamWriter>(frames: Vec<Bytes>, writer: W) -> Bytes {
    let mut stream = std::pin::pin!(DialectStream::new(Frames(frames.into()), writer));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = BytesMut::new();
    while let Poll::Ready(Some(Ok(frame))) = stream.as_mut().poll_frame(&mut cx) {
        if let Ok(data) = frame.into_data() {
            out.put_slice(&data);
        }
    }
    out.freeze()
}

/// A body of frames all ready at once.
struct Frames(std::collections::VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|p| Ok(Frame::data(p))))
    }
}

/// One event of the core's stream, as a dialect's writer reads it.
pub(crate) enum CoreEvent {
    /// Nothing to write (an empty event).
    Empty,
    /// `[DONE]`: the answer is complete.
    Done,
    /// The core's error event (or an event the gateway cannot read): the stream failed.
    Failed(Error),
    /// A chunk.
    Chunk(Box<ChatChunk>),
}

/// Reads one event of the core's stream.
pub(crate) fn core_event(ev: &SseEvent) -> CoreEvent {
    let data = ev.data.trim();
    if data.is_empty() {
        return CoreEvent::Empty;
    }
    if data == "[DONE]" {
        return CoreEvent::Done;
    }
    if data.starts_with(r#"{"error""#) {
        return CoreEvent::Failed(
            Error::from_sse_event(format!("data:{data}").as_bytes())
                .unwrap_or_else(|| Error::internal("the answer failed")),
        );
    }
    match serde_json::from_str(data) {
        Ok(c) => CoreEvent::Chunk(Box::new(c)),
        Err(e) => CoreEvent::Failed(Error::internal(format!(
            "the gateway wrote an unreadable chunk: {e}"
        ))),
    }
}

/// Parses a request body of a dialect: one parse on the common path, the body read again
/// with `serde_path_to_error` only when it fails, to name the field that is wrong. `model` (and
/// each of `models`) must be a non-empty id of at most [`MAX_MODEL_ID_BYTES`].
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    model: impl Fn(&T) -> (&str, Option<&[String]>),
) -> Result<T, Error> {
    let req: T = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(first) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            return Err(match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) => {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    if path == "." || path == "?" || path.is_empty() {
                        Error::invalid_request(format!("invalid request body: {inner}"), None)
                    } else {
                        Error::invalid_request(
                            format!("invalid request body: `{path}`: {inner}"),
                            Some(path),
                        )
                    }
                }
                // Only what follows the value was wrong (trailing bytes).
                Ok(_) => Error::invalid_request(format!("invalid request body: {first}"), None),
            });
        }
    };
    let (id, models) = model(&req);
    let invalid =
        |param: &str, message: String| Error::invalid_request(message, Some(param.into()));
    if id.trim().is_empty() {
        return Err(invalid(
            "model",
            "`model` must be a non-empty string".into(),
        ));
    }
    if id.len() > MAX_MODEL_ID_BYTES {
        return Err(invalid(
            "model",
            format!("`model` must be at most {MAX_MODEL_ID_BYTES} bytes long"),
        ));
    }
    if let Some(i) = models
        .into_iter()
        .flatten()
        .position(|m| m.len() > MAX_MODEL_ID_BYTES)
    {
        return Err(invalid(
            &format!("models[{i}]"),
            format!("`models[{i}]` must be at most {MAX_MODEL_ID_BYTES} bytes long"),
        ));
    }
    Ok(req)
}

/// The events of a stream, each checked to be named by its `event:` line and its data's
/// `type`. For the dialects' stream checkers.
pub(crate) fn named_events(bytes: &[u8]) -> Result<Vec<(String, serde_json::Value)>, String> {
    let mut out = Vec::new();
    for (i, ev) in crate::sse::decode_chunks([bytes]).into_iter().enumerate() {
        let name = ev.event.ok_or(format!("event {i} has no `event:` line"))?;
        let v: serde_json::Value =
            serde_json::from_str(&ev.data).map_err(|e| format!("event {i}: bad JSON: {e}"))?;
        if v["type"] != name.as_str() {
            return Err(format!("event {i}: `event: {name}` but type {}", v["type"]));
        }
        out.push((name, v));
    }
    Ok(out)
}
