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
///
/// The clock is read only when the body has to wait: a body that is there at once (a JSON
/// answer, the usual case) never reads it and never arms a timer.
#[pin_project]
pub struct ResponseBody<B = Incoming> {
    #[pin]
    inner: B,
    /// Armed at the first wait.
    #[pin]
    sleep: Option<Sleep>,
    idle: Duration,
    /// When the body last started waiting for a piece it did not have (set with `sleep`).
    waiting_since: Option<Instant>,
    /// A piece came since `waiting_since` was read.
    moved: bool,
    provider: Arc<str>,
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("provider", &self.provider)
            .finish()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, idle: Duration, provider: Arc<str>) -> Self {
        ResponseBody {
            inner,
            sleep: None,
            idle,
            waiting_since: None,
            moved: false,
            provider,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.moved = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::bad_gateway(
                format!("{}: the response body failed: {e}", this.provider),
                ErrorSource::Transport,
                Retry::Retryable,
            )
            .with_provider(this.provider.clone())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Moving the timer on every piece would cost a timer-wheel update each time;
                // the instant the wait began is noted instead, and the deadline pushed only
                // when the timer fires.
                if this.sleep.is_none() {
                    let now = Instant::now();
                    *this.waiting_since = Some(now);
                    *this.moved = false;
                    this.sleep
                        .set(Some(tokio::time::sleep_until(later(now, *this.idle))));
                } else if std::mem::take(this.moved) {
                    *this.waiting_since = Some(Instant::now());
                }
                let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() else {
                    unreachable!("the idle timer is armed above");
                };
                loop {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let since = this.waiting_since.unwrap_or_else(Instant::now);
                    let deadline = later(since, *this.idle);
                    let now = Instant::now();
                    if now >= deadline {
                        *this.waiting_since = Some(now);
                        return Poll::Ready(Some(Err(stalled(this.provider, *this.idle))));
                    }
                    sleep.as_mut().reset(deadline);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error of a body that waited longer than `idle` for a piece.
fn stalled(provider: &Arc<str>, idle: Duration) -> Error {
    Error::gateway_timeout(
        format!(
            "{provider}: the response stalled for more than the idle timeout of {} ms",
            idle.as_millis()
        ),
        ErrorSource::Transport,
        Retry::Retryable,
    )
    .with_provider(provider.clone())
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    use super::*;

    /// A body fed piece by piece from a channel.
    struct Chan(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx)
        }
    }

    fn channel() -> (
        mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        ResponseBody<Chan>,
    ) {
        let (tx, rx) = mpsc::channel(8);
        let body = ResponseBody::new(Chan(rx), Duration::from_millis(100), Arc::from("p"));
        (tx, body)
    }

    #[tokio::test(start_paused = true)]
    async fn pieces_within_the_idle_timeout_keep_a_long_body_alive() {
        let (tx, body) = channel();
        let mut body = std::pin::pin!(body);
        let feed = tokio::spawn(async move {
            // Ten pieces 60 ms apart: 600 ms in all, each wait under the 100 ms timeout.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
        });
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            frame.expect("no idle timeout");
            got += 1;
        }
        assert_eq!(got, 10);
        feed.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_longer_than_the_idle_timeout_fails_the_body() {
        let (tx, body) = channel();
        let mut body = std::pin::pin!(body);
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(
            err.message().contains("idle timeout of 100 ms"),
            "{}",
            err.message()
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        drop(tx);
    }
}
