use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project::{pin_project, pinned_drop};
use tokio::time::Sleep;

use super::capture::Captured;
use super::Translator;
use crate::error::{BoxError, ErrorSource, Retry};
use crate::facts::{StreamEnd, UsageSlot};
use crate::future::later;
use crate::sse::event_stream::EventStreamDecoder;
use crate::sse::{self, SseDecoder};
use crate::Error;

/// Events ready at once are sent in one frame up to this size.
const COALESCE_LIMIT: usize = 64 << 10;

/// The body [`StreamNormalize`](super::StreamNormalize) answers with: a whole JSON document, or
/// the normalised SSE stream of an upstream body `B`.
#[pin_project(project = ResponseBodyProj)]
#[derive(Debug)]
pub enum ResponseBody<B> {
    /// A complete JSON answer.
    Full {
        /// The bytes.
        #[pin]
        body: Full<Bytes>,
    },
    /// A normalised event stream.
    Stream {
        /// The stream, boxed: its decoder and translator take about 1.5 KB, which every
        /// response (whole answers too) would otherwise carry and copy through each layer.
        stream: Pin<Box<SseStream<B>>>,
    },
}

impl<B> ResponseBody<B> {
    pub(crate) fn full(bytes: Bytes) -> Self {
        ResponseBody::Full {
            body: Full::new(bytes),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ResponseBodyProj::Full { body } => body.poll_frame(cx),
            ResponseBodyProj::Stream { stream } => stream.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full { body } => body.is_end_stream(),
            ResponseBody::Stream { stream } => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full { body } => body.size_hint(),
            ResponseBody::Stream { .. } => SizeHint::default(),
        }
    }
}

/// How an upstream stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Server-sent events (every provider but Bedrock).
    #[default]
    Sse,
    /// AWS event-stream frames (Bedrock's ConverseStream).
    EventStream,
}

/// The decoder of one framing: both give [`SseEvent`](crate::sse::SseEvent)s.
#[derive(Debug)]
enum Decoder {
    Sse(SseDecoder),
    EventStream(EventStreamDecoder),
}

impl Decoder {
    fn feed(&mut self, bytes: &[u8]) {
        match self {
            Decoder::Sse(d) => d.feed(bytes),
            Decoder::EventStream(d) => d.feed(bytes),
        }
    }

    fn next_event(&mut self) -> Option<crate::sse::SseEvent> {
        match self {
            Decoder::Sse(d) => d.next_event(),
            Decoder::EventStream(d) => d.next_event(),
        }
    }

    fn recycle(&mut self, ev: crate::sse::SseEvent) {
        if let Decoder::Sse(d) = self {
            d.recycle(ev);
        }
    }

    /// The stream's end: an SSE event without its blank line is dispatched; part of a frame
    /// left over is a fault.
    fn finish(&mut self) {
        match self {
            Decoder::Sse(d) => d.finish(),
            Decoder::EventStream(d) => d.finish(),
        }
    }

    /// Why nothing more can be decoded: an event past the limit, a corrupt frame.
    fn fault(&self) -> Option<String> {
        match self {
            Decoder::Sse(d) => d.too_large().map(|limit| {
                format!("the provider sent a stream event larger than the limit of {limit} bytes")
            }),
            Decoder::EventStream(d) => d.fault().map(str::to_owned),
        }
    }
}

/// An upstream SSE body turned into the gateway's stream: decoded, normalised and re-encoded;
/// events the upstream has ready together leave in one frame (nothing waits for more);
/// `: keepalive` comments from the provider's `200` until its first event.
/// It never fails: upstream failures become the one error event, then the end.
#[pin_project(PinnedDrop)]
pub struct SseStream<B> {
    #[pin]
    upstream: B,
    #[pin]
    keepalive: Option<Sleep>,
    keepalive_interval: Duration,
    decoder: Decoder,
    state: Translator,
    out: BytesMut,
    done: bool,
    slot: Option<UsageSlot>,
    /// Upstream events that produced output (metering's estimate when no usage comes).
    events: u64,
    first_event_at: Option<tokio::time::Instant>,
    /// The answer's text, when the request asked for it to be captured.
    captured: Option<Box<Captured>>,
}

/// The events ready for the client, read for their text when it is captured.
fn take_out(out: &mut BytesMut, captured: &mut Option<Box<Captured>>) -> Bytes {
    let bytes = out.split().freeze();
    if let Some(c) = captured {
        c.feed_sse(&bytes);
    }
    bytes
}

#[pinned_drop]
impl<B> PinnedDrop for SseStream<B> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        // End of stream, failure or a client that went away: the usage seen so far is final.
        if let Some(slot) = this.slot.take() {
            let end = this.state.is_finished().then(|| match this.state.error() {
                Some(e) => StreamEnd::Failed(e.message().to_owned()),
                None => StreamEnd::Done,
            });
            slot.report_stream(
                this.state.usage(),
                this.state.finish_reason(),
                *this.events,
                *this.first_event_at,
                end,
            );
            if let Some(c) = this.captured.take() {
                slot.record_output(c.text);
            }
        }
    }
}

impl<B> std::fmt::Debug for SseStream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("state", &self.state)
            .field("done", &self.done)
            .finish()
    }
}

impl<B> SseStream<B> {
    pub(crate) fn new(
        upstream: B,
        state: Translator,
        keepalive_interval: Option<Duration>,
    ) -> Self {
        SseStream {
            upstream,
            keepalive: keepalive_interval.map(tokio::time::sleep),
            keepalive_interval: keepalive_interval.unwrap_or_default(),
            decoder: Decoder::Sse(SseDecoder::new()),
            state,
            out: BytesMut::new(),
            done: false,
            slot: None,
            events: 0,
            first_event_at: None,
            captured: None,
        }
    }

    /// Reads the upstream in this framing (default: SSE).
    pub(crate) fn framing(mut self, framing: Framing) -> Self {
        self.decoder = match framing {
            Framing::Sse => Decoder::Sse(SseDecoder::new()),
            Framing::EventStream => Decoder::EventStream(EventStreamDecoder::new()),
        };
        self
    }

    /// Reports the stream's usage to `slot` when the stream ends or is dropped.
    pub(crate) fn usage_slot(mut self, slot: Option<UsageSlot>) -> Self {
        self.slot = slot;
        self
    }

    /// Keeps the answer's text for the usage slot's report.
    pub(crate) fn capture(mut self, on: bool) -> Self {
        self.captured = on.then(Box::default);
        self
    }
}

impl<B> Body for SseStream<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = std::convert::Infallible;

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
                return Poll::Ready(Some(Ok(Frame::data(take_out(this.out, this.captured)))));
            }
            match this.upstream.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.keepalive.set(None);
                    this.decoder.feed(&data);
                    while let Some(ev) = this.decoder.next_event() {
                        let before = this.out.len();
                        this.state.on_event(&ev, this.out);
                        if this.out.len() > before {
                            *this.events += 1;
                        }
                        this.decoder.recycle(ev);
                    }
                    if let Some(why) = this.decoder.fault() {
                        if !this.state.is_finished() {
                            let err =
                                Error::bad_gateway(why, ErrorSource::Upstream, Retry::Retryable);
                            this.state.on_error(err, this.out);
                        }
                    }
                    if this.first_event_at.is_none() && !this.out.is_empty() {
                        *this.first_event_at = Some(tokio::time::Instant::now());
                    }
                    if this.state.is_finished() {
                        *this.done = true;
                        // Read what is already here so the upstream connection can go back
                        // to the pool; never wait for more.
                        while let Poll::Ready(Some(Ok(_))) = this.upstream.as_mut().poll_frame(cx) {
                        }
                    } else if this.out.len() >= COALESCE_LIMIT {
                        return Poll::Ready(Some(Ok(Frame::data(take_out(
                            this.out,
                            this.captured,
                        )))));
                    }
                    // Otherwise take whatever else the upstream has ready, so events that
                    // arrived together leave together (one write, not one per event); nothing
                    // waits: the first Pending sends what we have.
                }
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    let err = match e.downcast::<Error>() {
                        Ok(err) => *err,
                        Err(other) => Error::bad_gateway(
                            format!("the provider's stream failed: {other}"),
                            ErrorSource::Transport,
                            Retry::Retryable,
                        ),
                    };
                    this.state.on_error(err, this.out);
                    *this.done = true;
                }
                Poll::Ready(None) => {
                    this.decoder.finish();
                    while let Some(ev) = this.decoder.next_event() {
                        this.state.on_event(&ev, this.out);
                    }
                    match this.decoder.fault() {
                        Some(why) if !this.state.is_finished() => {
                            let err =
                                Error::bad_gateway(why, ErrorSource::Transport, Retry::Retryable);
                            this.state.on_error(err, this.out);
                        }
                        _ => this.state.on_end(this.out),
                    }
                    *this.done = true;
                }
                Poll::Pending => {
                    if !this.out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(take_out(
                            this.out,
                            this.captured,
                        )))));
                    }
                    if let Some(mut sleep) = this.keepalive.as_mut().as_pin_mut() {
                        if sleep.as_mut().poll(cx).is_ready() {
                            let next = later(tokio::time::Instant::now(), *this.keepalive_interval);
                            sleep.as_mut().reset(next);
                            // Register the new deadline with the timer before yielding.
                            let _ = sleep.poll(cx);
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                                sse::KEEPALIVE,
                            )))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }
}
