//! [`GatewayBody`]: the inner service's body, or a complete answer the layer wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

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

/// A number as a header value in one allocation (`HeaderValue::from(u64)` takes two: its
/// buffer, then the shared handle `freeze` makes of a buffer with spare capacity).
pub(crate) fn number_header(n: u64) -> http::HeaderValue {
    let mut digits = itoa::Buffer::new();
    http::HeaderValue::from_bytes(digits.format(n).as_bytes())
        .unwrap_or_else(|_| http::HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    #[test]
    fn number_headers_are_the_decimal_digits() {
        for n in [0, 7, 42, 1_000_000, u64::MAX] {
            assert_eq!(super::number_header(n), n.to_string().as_str());
        }
    }
}
