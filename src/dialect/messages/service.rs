use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::answer::message;
use super::error_response;
use super::request::parse;
use super::stream::{MessagesStream, Writer};
use crate::chat::{ChatCompletion, ChatRequest};
use crate::decode::{check_declared_length, read_body, DEFAULT_MAX_BODY_BYTES, GENERATION_ID_NAME};
use crate::dialect::Dialect;
use crate::error::{BoxError, ErrorSource, Retry};
use crate::facts::{GenerationId, NativeAnswer, NativeRequest};
use crate::provider::ProviderKind;
use crate::Error;

/// The request headers of Anthropic's API forwarded to an `anthropic` endpoint.
pub(crate) const FORWARDED: [HeaderName; 2] = [
    HeaderName::from_static("anthropic-version"),
    HeaderName::from_static("anthropic-beta"),
];

/// Builds [`Messages`]; see the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct MessagesLayer {
    max_body_bytes: usize,
}

impl Default for MessagesLayer {
    fn default() -> Self {
        MessagesLayer {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl MessagesLayer {
    /// The Messages edge with the default 32 MiB body limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the body limit.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for MessagesLayer {
    type Service = Messages<S>;
    fn layer(&self, inner: S) -> Messages<S> {
        Messages {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The Messages API's edge in front of the typed stack; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Messages<S> {
    inner: S,
    max_body_bytes: usize,
}

impl<S, B, RB> Service<Request<B>> for Messages<S>
where
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
    type Response = Response<MessagesBody<RB>>;
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
        ext.insert(Dialect::Messages);
        Box::pin(async move {
            let result = async {
                check_declared_length(&req, limit)?;
                let (mut parts, body) = req.into_parts();
                let bytes = read_body(std::pin::pin!(body), limit).await?;
                let translated = parse(&bytes)?.into_chat()?;
                let headers = FORWARDED
                    .iter()
                    .filter_map(|h| Some((h.clone(), parts.headers.get(h)?.clone())))
                    .collect();
                parts.extensions.insert(NativeRequest::new(
                    ProviderKind::Anthropic,
                    bytes,
                    headers,
                    translated.untranslatable,
                ));
                let (model, estimate) = (translated.chat.model.clone(), translated.input_tokens);
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                let res = inner
                    .call(Request::from_parts(parts, translated.chat))
                    .await?;
                write(res, id.as_str(), model, estimate).await
            }
            .await;
            let mut res = result.unwrap_or_else(|e| {
                tracing::debug!(status = e.status().as_u16(), error = %e, "request failed");
                error_response(&e).map(MessagesBody::full)
            });
            if let Ok(v) = HeaderValue::from_str(id.as_str()) {
                res.headers_mut().insert(GENERATION_ID_NAME, v);
            }
            Ok(res)
        })
    }
}

/// The core's answer in the Messages dialect: a native one as it is, a stream re-written
/// event by event, a JSON answer translated.
async fn write<RB>(
    res: Response<RB>,
    id: &str,
    model: String,
    estimate: u64,
) -> Result<Response<MessagesBody<RB>>, Error>
where
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    let is_sse = res
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_sse {
        // Native or translated is known at the stream's first event.
        let writer = Writer::new(id, model, estimate);
        return Ok(res.map(|body| MessagesBody::Stream {
            body: Box::pin(MessagesStream::new(body, writer)),
        }));
    }
    if res.extensions().get::<NativeAnswer>().is_some() {
        return Ok(res.map(|body| MessagesBody::Native { body }));
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
    let model = completion.model.clone();
    let json = serde_json::to_vec(&message(completion, id, &model))
        .map_err(|e| Error::internal(format!("cannot serialise the answer: {e}")))?;
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if parts.status != StatusCode::OK {
        parts.status = StatusCode::OK;
    }
    Ok(Response::from_parts(
        parts,
        MessagesBody::full(Full::new(Bytes::from(json))),
    ))
}

/// The body of a Messages answer.
#[pin_project(project = MessagesBodyProj)]
#[derive(Debug)]
pub enum MessagesBody<B> {
    /// An `anthropic` endpoint's own (non-streamed) answer, as it came (already stamped).
    Native {
        /// The body.
        #[pin]
        body: B,
    },
    /// A stream: an `anthropic` endpoint's own events, or the core's re-written.
    Stream {
        /// The body.
        body: Pin<Box<MessagesStream<B>>>,
    },
    /// A complete answer: a translated message, or an error.
    Full {
        /// The bytes.
        #[pin]
        body: Full<Bytes>,
    },
}

impl<B> MessagesBody<B> {
    fn full(body: Full<Bytes>) -> Self {
        MessagesBody::Full { body }
    }
}

impl<B> Body for MessagesBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            MessagesBodyProj::Native { body } => body.poll_frame(cx).map_err(Into::into),
            MessagesBodyProj::Stream { body } => {
                body.as_mut().poll_frame(cx).map_err(|e| match e {})
            }
            MessagesBodyProj::Full { body } => body.poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MessagesBody::Native { body } => body.is_end_stream(),
            MessagesBody::Stream { body } => body.is_end_stream(),
            MessagesBody::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MessagesBody::Native { body } => body.size_hint(),
            MessagesBody::Stream { body } => body.size_hint(),
            MessagesBody::Full { body } => body.size_hint(),
        }
    }
}
