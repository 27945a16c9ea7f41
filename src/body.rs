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
