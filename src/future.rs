//! A future that is either the inner service's or an answer ready at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;

/// The response future of a layer that may answer by itself (a rejection) without calling the
/// inner service.
#[pin_project(project = ResponseFutureProj)]
#[derive(Debug)]
pub enum ResponseFuture<F, T, E> {
    /// Waiting on the inner service.
    Inner {
        /// The inner future.
        #[pin]
        future: F,
    },
    /// Answered without the inner service.
    Ready {
        /// The answer, taken on first poll.
        result: Option<Result<T, E>>,
    },
}

impl<F, T, E> ResponseFuture<F, T, E> {
    pub(crate) fn ready(result: Result<T, E>) -> Self {
        ResponseFuture::Ready {
            result: Some(result),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Inner { future } => future.poll(cx),
            ResponseFutureProj::Ready { result } => Poll::Ready(
                result
                    .take()
                    .expect("ResponseFuture polled after completion"),
            ),
        }
    }
}

/// A boxed, sendable future: what the stores' methods and the asynchronous layers return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `at + d`, saturating at thirty years after `at` (what Tokio's timers do with a deadline
/// too far away): a duration configured as "never" ([`Duration::MAX`]) must not overflow the
/// clock.
pub(crate) fn later(at: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    at.checked_add(d.min(FAR)).unwrap_or(at)
}

/// Helpers for the layers' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use http::{Request, Response};
    use http_body_util::Full;

    /// An inner service that must be polled ready before each call (it panics otherwise); its
    /// clones start unready, so a layer that calls a clone it never polled is caught.
    #[derive(Default)]
    pub(crate) struct MustBeReady {
        ready: bool,
    }

    impl Clone for MustBeReady {
        fn clone(&self) -> Self {
            MustBeReady::default()
        }
    }

    impl<B> tower_service::Service<Request<B>> for MustBeReady {
        type Response = Response<Full<bytes::Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.ready = true;
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<B>) -> Self::Future {
            assert!(std::mem::take(&mut self.ready), "called before poll_ready");
            std::future::ready(Ok(Response::new(Full::default())))
        }
    }
}
