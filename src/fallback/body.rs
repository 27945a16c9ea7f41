//! The body of a fallback answer: a stream not yet committed can still fail over.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tokio::time::Instant;

use super::{Served, ServedBody};
use crate::error::BoxError;
use crate::future::BoxFuture;
use crate::Error;

/// The rest of a walk, as the body sees it.
pub(crate) trait Resume<B>: Send {
    /// The stream produced its first event: the attempt in flight serves.
    fn served(self: Box<Self>, started: Instant);
    /// The stream failed before its first event: go on with the plan.
    fn resume(self: Box<Self>, failure: Error, started: Instant) -> Next<B>;
    /// The event that ends the stream when the plan is spent: OpenRouter's error chunk.
    fn error_event(&self, failure: &Error) -> Bytes;
}

/// A walk resumed: the walk again (for another failure) and what it found.
pub(crate) type Next<B> = BoxFuture<'static, (Box<dyn Resume<B>>, Result<Served<B>, Error>)>;

/// The body of [`Fallback`](super::Fallback)'s answers.
///
/// A whole (non-streamed) answer passes untouched. A stream is watched until its first event
/// that is not a comment: an error event there (the provider answered 200, then failed before
/// any token) is not passed on; the walk goes on to the next target and that target's stream
/// continues this body. The client, which has seen at most `: keepalive` comments, never
/// notices. When the plan is spent, the last error goes out as the one error event. After the
/// first event the stream is committed and passes untouched.
#[pin_project]
pub struct FallbackBody<B> {
    #[pin]
    state: State<B>,
}

#[pin_project(project = StateProj)]
enum State<B> {
    Streaming {
        #[pin]
        body: B,
        /// `Some` until the stream is committed.
        walk: Option<Box<dyn Resume<B>>>,
        started: Instant,
    },
    Resuming {
        next: Next<B>,
    },
    /// A hedged stream read up to its first event elsewhere: that event, then the rest.
    Committed {
        body: Pin<Box<B>>,
        first: Option<Bytes>,
    },
    Failed {
        event: Option<Bytes>,
    },
}

impl<B> std::fmt::Debug for FallbackBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Streaming { walk: Some(_), .. } => "watching",
            State::Streaming { walk: None, .. } => "committed",
            State::Resuming { .. } => "failing over",
            State::Committed { .. } => "committed",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("FallbackBody")
            .field("state", &state)
            .finish()
    }
}

impl<B> FallbackBody<B> {
    /// A body passed through untouched.
    pub(crate) fn plain(body: B) -> Self {
        FallbackBody {
            state: State::Streaming {
                body,
                walk: None,
                started: Instant::now(),
            },
        }
    }

    /// A stream already read up to its first event (a hedge race's winner).
    pub(crate) fn committed(body: Pin<Box<B>>, first: Option<Bytes>) -> Self {
        FallbackBody {
            state: State::Committed { body, first },
        }
    }

    /// A stream that may still fail over until its first event.
    pub(crate) fn watching(body: B, walk: Box<dyn Resume<B>>, started: Instant) -> Self {
        FallbackBody {
            state: State::Streaming {
                body,
                walk: Some(walk),
                started,
            },
        }
    }
}

/// What the first events of a frame say.
pub(crate) enum FrameKind {
    /// Only comments (`: keepalive`).
    Comments,
    /// An error event before any other event.
    Error(Error),
    /// A data event.
    Data,
}

/// Reads the frame's lines up to its first one that is not a comment; only an error event's
/// line is read to its end (a data event can be long, and this runs on every stream).
pub(crate) fn classify(frame: &[u8]) -> FrameKind {
    let line_end = |rest: &[u8]| rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let mut rest = frame;
    loop {
        let Some(start) = rest.iter().position(|&b| b != b'\n') else {
            return FrameKind::Comments;
        };
        rest = &rest[start..];
        if rest.starts_with(b":") {
            rest = &rest[line_end(rest)..];
            continue;
        }
        if rest.starts_with(b"data: {\"error\"") || rest.starts_with(b"data:{\"error\"") {
            if let Some(e) = Error::from_sse_event(&rest[..line_end(rest)]) {
                return FrameKind::Error(e);
            }
        }
        return FrameKind::Data;
    }
}

impl<B> Body for FallbackBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        // A committed stream (every frame but the first few) is one check away from its body;
        // the rest stays out of line, so this part inlines into the callers.
        let mut state = self.project().state;
        if let StateProj::Streaming {
            body, walk: None, ..
        } = state.as_mut().project()
        {
            return body.poll_frame(cx);
        }
        poll_watching(state, cx)
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Streaming { body, .. } => body.is_end_stream(),
            State::Resuming { .. } => false,
            State::Failed { event } => event.is_none(),
            State::Committed { body, first } => first.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Streaming {
                body, walk: None, ..
            } => body.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

/// [`FallbackBody::poll_frame`] for a stream not yet committed (or one that failed over).
#[inline(never)]
fn poll_watching<B>(
    mut state: Pin<&mut State<B>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    loop {
        let failure = match state.as_mut().project() {
            StateProj::Streaming {
                body,
                walk,
                started,
            } => {
                if walk.is_none() {
                    return body.poll_frame(cx);
                }
                let frame = match ready!(body.poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        let e: BoxError = e.into();
                        let failure = Error::bad_gateway(
                            format!("the stream broke before its first event: {e}"),
                            crate::error::ErrorSource::Transport,
                            crate::error::Retry::Retryable,
                        );
                        let w = walk.take().expect("checked above");
                        let next = w.resume(failure, *started);
                        state.set(State::Resuming { next });
                        continue;
                    }
                    None => {
                        // Ended without an event: nothing to fail over from.
                        if let Some(w) = walk.take() {
                            w.served(*started);
                        }
                        return Poll::Ready(None);
                    }
                };
                let kind = match frame.data_ref() {
                    Some(data) => classify(data),
                    None => FrameKind::Data,
                };
                match kind {
                    FrameKind::Comments => return Poll::Ready(Some(Ok(frame))),
                    FrameKind::Data => {
                        if let Some(w) = walk.take() {
                            w.served(*started);
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    FrameKind::Error(e) => (e, walk.take().expect("checked above"), *started),
                }
            }
            StateProj::Resuming { next } => {
                let (walk, result) = ready!(next.as_mut().poll(cx));
                match result {
                    Ok(served) => match served.body {
                        ServedBody::Fresh(body) => state.set(State::Streaming {
                            body,
                            walk: Some(walk),
                            started: served.started,
                        }),
                        ServedBody::Committed(body, first) => {
                            drop(walk);
                            state.set(State::Committed { body, first });
                        }
                    },
                    Err(e) => {
                        let event = walk.error_event(&e);
                        drop(walk);
                        state.set(State::Failed { event: Some(event) });
                    }
                }
                continue;
            }
            StateProj::Failed { event } => {
                return Poll::Ready(event.take().map(|e| Ok(Frame::data(e))));
            }
            StateProj::Committed { body, first } => {
                if let Some(first) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                return body.as_mut().poll_frame(cx);
            }
        };
        let (error, walk, started) = failure;
        let next = walk.resume(error, started);
        state.set(State::Resuming { next });
    }
}
