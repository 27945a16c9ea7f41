//! [`GatewayBody`]: the inner service's body, or a complete answer the layer wrote itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project::pin_project;

/// The response body of a layer that can answer by itself (an error envelope, a 401, a 429):
/// either the inner body, untouched, or a ready `Full<Bytes>`. No boxing.
#[pin_project(project = GatewayBodyProj)]
#[derive(Debug)]
pub enum GatewayBody<B> {
    /// The inner service's body.
    Inner {
        /// The body.
        #[pin]
        body: B,
    },
    /// A complete answer written by the layer.
    Full {
        /// The bytes.
        #[pin]
        body: Full<Bytes>,
    },
}

impl<B> GatewayBody<B> {
    /// Wraps the inner body.
    pub fn inner(body: B) -> Self {
        GatewayBody::Inner { body }
    }

    /// A complete body.
    pub fn full(body: Full<Bytes>) -> Self {
        GatewayBody::Full { body }
    }
}

impl<B> Body for GatewayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            GatewayBodyProj::Inner { body } => body.poll_frame(cx),
            GatewayBodyProj::Full { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Inner { body } => body.is_end_stream(),
            GatewayBody::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Inner { body } => body.size_hint(),
            GatewayBody::Full { body } => body.size_hint(),
        }
    }
}

/// Why [`collect_limited`] stopped short of a whole body.
#[derive(Debug)]
pub(crate) enum CollectError {
    /// The body is longer than the limit.
    TooLarge,
    /// The body failed.
    Body(crate::error::BoxError),
}

/// A whole body of at most `limit` bytes. A body that comes in one piece (the usual case for
/// a request or a JSON answer) is that piece, neither copied nor queued; several are joined
/// once. Trailers are ignored. (`http_body_util`'s `Limited` and `collect` queue every piece
/// in a list first, an allocation and a copy for what is mostly one piece.) The body is read
/// where the caller pinned it: a future that awaits this holds the body once, not twice.
pub(crate) async fn collect_limited<B>(
    mut body: Pin<&mut B>,
    limit: usize,
) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<crate::error::BoxError>,
{
    use bytes::{Buf, BytesMut};
    use http_body_util::BodyExt;

    let (mut first, mut joined) = (None::<Bytes>, BytesMut::new());
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Body(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.remaining());
        if len > limit {
            return Err(CollectError::TooLarge);
        }
        let data = data.copy_to_bytes(data.remaining());
        if first.is_none() && joined.is_empty() {
            first = Some(data);
            continue;
        }
        // A second piece: from now on the pieces are joined.
        if let Some(earlier) = first.take() {
            joined.extend_from_slice(&earlier);
        }
        joined.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// A number as a header value in one allocation (`HeaderValue::from(u64)` takes two: its
/// buffer, then the shared handle `freeze` makes of a buffer with spare capacity).
pub(crate) fn number_header(n: u64) -> http::HeaderValue {
    let mut digits = itoa::Buffer::new();
    http::HeaderValue::from_bytes(digits.format(n).as_bytes())
        .unwrap_or_else(|_| http::HeaderValue::from(n))
}

/// A request body that fails with a `408` [`Error`](crate::Error) when no byte comes for
/// its timeout. Only waiting counts: the deadline is armed when the body has nothing ready
/// and disarmed by each frame, so a slow but steady upload is never cut, and a body that
/// arrives with its head (most do) never touches a timer.
/// [`Error::from_request_body`](crate::Error::from_request_body) gives the `408` back to
/// whoever reads the body.
#[pin_project]
#[derive(Debug)]
pub struct IdleTimeout<B> {
    #[pin]
    body: B,
    timeout: Option<Duration>,
    /// Boxed: armed only while the body waits, and a request body is moved through every
    /// layer, so its unarmed size is what counts.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleTimeout<B> {
    /// `body`, failing after `timeout` without a byte (`None`: never).
    pub fn new(body: B, timeout: Option<Duration>) -> Self {
        IdleTimeout {
            body,
            timeout,
            deadline: None,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body,
    B::Error: Into<crate::error::BoxError>,
{
    type Data = B::Data;
    type Error = crate::error::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            *this.deadline = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(timeout) = *this.timeout else {
            return Poll::Pending;
        };
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(
                crate::Error::new(
                    http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body stopped arriving: no byte for {} ms",
                        timeout.as_millis()
                    ),
                )
                .with_source(crate::error::ErrorSource::Client),
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::{collect_limited, CollectError};
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::Full;

    /// A body of the given frames, ready at once.
    struct Pieces(VecDeque<Result<Frame<Bytes>, std::io::Error>>);

    impl http_body::Body for Pieces {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn pieces(p: &[&'static str]) -> Pieces {
        Pieces(
            p.iter()
                .map(|s| Ok(Frame::data(Bytes::from_static(s.as_bytes()))))
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_body_is_collected_whole_up_to_the_limit() {
        let one = Bytes::from_static(b"{\"a\":1}");
        let got = collect_limited(std::pin::pin!(Full::new(one.clone())), 7)
            .await
            .unwrap();
        assert_eq!(got, one);
        // One piece is that piece, not a copy.
        assert_eq!(got.as_ptr(), one.as_ptr());
        assert_eq!(
            collect_limited(std::pin::pin!(pieces(&[])), 0)
                .await
                .unwrap(),
            ""
        );
        assert_eq!(
            collect_limited(std::pin::pin!(pieces(&["ab", "", "cd", "e"])), 5)
                .await
                .unwrap(),
            "abcde"
        );
        assert_eq!(
            collect_limited(std::pin::pin!(pieces(&["", "ab"])), 5)
                .await
                .unwrap(),
            "ab"
        );
        for (p, limit) in [
            (&["abcdef"][..], 5),
            (&["abc", "def"][..], 5),
            (&["a"; 6][..], 5),
        ] {
            assert!(matches!(
                collect_limited(std::pin::pin!(pieces(p)), limit).await,
                Err(CollectError::TooLarge)
            ));
        }
        let mut failing = pieces(&["ab"]);
        failing
            .0
            .push_back(Ok(Frame::trailers(http::HeaderMap::new())));
        failing.0.push_back(Err(std::io::Error::other("cut")));
        match collect_limited(std::pin::pin!(failing), 10).await {
            Err(CollectError::Body(e)) => assert_eq!(e.to_string(), "cut"),
            other => panic!("{other:?}"),
        }
    }

    /// A body fed by a channel: pending while nothing is sent.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_a_408_and_a_slow_steady_one_is_whole() {
        use std::time::Duration;
        let idle = Duration::from_secs(30);
        // Steady: a piece every 20 s, 200 s in all.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                tx.send(Bytes::from_static(b"ab")).await.unwrap();
            }
        });
        let body = super::IdleTimeout::new(Fed(rx), Some(idle));
        let got = collect_limited(std::pin::pin!(body), 100).await.unwrap();
        assert_eq!(got.len(), 20);
        // Silent after one piece: the error is the 408.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Bytes::from_static(b"ab")).await.unwrap();
        let body = super::IdleTimeout::new(Fed(rx), Some(idle));
        let started = tokio::time::Instant::now();
        let err = match collect_limited(std::pin::pin!(body), 100).await {
            Err(CollectError::Body(e)) => crate::Error::from_request_body(e),
            other => panic!("{other:?}"),
        };
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(started.elapsed(), idle);
        drop(tx);
        // A body ready at once never arms a timer: no deadline, no error, even with none.
        let body = super::IdleTimeout::new(pieces(&["a", "b"]), None);
        assert_eq!(
            collect_limited(std::pin::pin!(body), 100).await.unwrap(),
            "ab"
        );
    }

    #[test]
    fn number_headers_are_the_decimal_digits() {
        for n in [0, 7, 42, 1_000_000, u64::MAX] {
            assert_eq!(super::number_header(n), n.to_string().as_str());
        }
    }
}
