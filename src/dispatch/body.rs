use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::{ErrorSource, Retry};
use crate::future::later;
use crate::Error;

/// A provider's response body with an idle timeout: if no piece arrives for the provider's
/// `idle` duration, the body fails with a 504-class [`Error`].
#[pin_project]
pub struct ResponseBody {
    #[pin]
    inner: Incoming,
    #[pin]
    sleep: Sleep,
    idle: Duration,
    last: Instant,
    provider: Arc<str>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("provider", &self.provider)
            .finish()
    }
}

impl ResponseBody {
    pub(crate) fn new(inner: Incoming, idle: Duration, provider: Arc<str>) -> Self {
        let now = Instant::now();
        ResponseBody {
            inner,
            sleep: tokio::time::sleep_until(later(now, idle)),
            idle,
            last: now,
            provider,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Moving the timer on every frame would cost a timer-wheel update each time;
                // remember the instant instead and push the deadline only when it fires.
                *this.last = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::bad_gateway(
                format!("{}: the response body failed: {e}", this.provider),
                ErrorSource::Transport,
                Retry::Retryable,
            )
            .with_provider(this.provider.clone())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => loop {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = later(*this.last, *this.idle);
                if Instant::now() >= deadline {
                    *this.last = Instant::now();
                    return Poll::Ready(Some(Err(Error::gateway_timeout(
                        format!(
                            "{}: the response stalled for more than the idle timeout of {} ms",
                            this.provider,
                            this.idle.as_millis()
                        ),
                        ErrorSource::Transport,
                        Retry::Retryable,
                    )
                    .with_provider(this.provider.clone()))));
                }
                this.sleep.as_mut().reset(deadline);
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
