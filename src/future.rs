//! A future that is either the inner service's or an answer ready at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
