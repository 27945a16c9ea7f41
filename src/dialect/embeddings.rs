//! OpenAI's embeddings API (`POST /v1/embeddings`) at the gateway's edge.
//!
//! [`EmbeddingsLayer`] reads the body ([`read_request`]: a `400` naming the field when it is
//! wrong), sends the core a request that carries only what routing reads, with the
//! embeddings request beside it, and passes the core's answer on: it is in OpenAI's shape
//! already (see [`crate::embeddings`]). Errors are in OpenAI's envelope; every answer carries
//! `X-Generation-Id`.
//!
//! ```
//! use modelgate::dialect::embeddings::EmbeddingsLayer;
//!
//! let _edge = EmbeddingsLayer::new().max_body_bytes(8 << 20);
//! ```

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;

use crate::chat::{ChatCompletion, ChatRequest};
use crate::dialect::edge::{parse_body, Edge, EdgeBody, EdgeLayer, Read, StreamWriter, Wire};
use crate::dialect::Dialect;
use crate::embeddings::{Embeddings, EmbeddingsRequest};
use crate::sse::SseEvent;
use crate::Error;

/// OpenAI's embeddings API as a [`Wire`]: see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingsApi;

/// Builds [`EmbeddingsEdge`]; see the [module docs](self).
pub type EmbeddingsLayer = EdgeLayer<EmbeddingsApi>;

/// The embeddings edge in front of the typed core; see the [module docs](self).
pub type EmbeddingsEdge<S> = Edge<S, EmbeddingsApi>;

/// The body of an embeddings answer.
pub type EmbeddingsBody<B> = EdgeBody<B, Unstreamed>;

impl Wire for EmbeddingsApi {
    #[doc(hidden)]
    type Shape = ();
    type Writer = Unstreamed;
    const DIALECT: Dialect = Dialect::Embeddings;

    fn read(bytes: Bytes, _: &HeaderMap) -> Result<Read<()>, Error> {
        let (chat, embeddings) = read_request(&bytes)?;
        Ok(Read {
            chat,
            native: None,
            embeddings: Some(embeddings),
            shape: (),
        })
    }

    fn writer(_: &str, _: String, _: ()) -> Unstreamed {
        Unstreamed { finished: false }
    }

    fn answer(_: ChatCompletion, _: &str, _: ()) -> Result<Vec<u8>, Error> {
        // The core answers embeddings in their own shape (marked native), never as a chat
        // completion.
        Err(Error::internal(
            "an embeddings request was answered with a chat completion",
        ))
    }
}

/// Reads an embeddings request body: the core's request and the [`Embeddings`] fact, or the
/// `400` that names the field.
pub fn read_request(bytes: &[u8]) -> Result<(ChatRequest, Embeddings), Error> {
    let req: EmbeddingsRequest = parse_body(bytes, |r: &EmbeddingsRequest| {
        (r.model.as_str(), r.models.as_deref())
    })?;
    req.check()?;
    Ok(Embeddings::new(req))
}

/// The stream writer of an API whose answers never stream: a stream that comes anyway ends
/// with one error event in OpenAI's envelope.
#[derive(Debug)]
pub struct Unstreamed {
    finished: bool,
}

impl StreamWriter for Unstreamed {
    fn ping(&mut self, _: &mut BytesMut) {}

    fn on_event(&mut self, _: &SseEvent, out: &mut BytesMut) {
        self.fail(
            &Error::internal("an embeddings answer came as a stream"),
            out,
        );
    }

    fn on_end(&mut self, _: &mut BytesMut) {
        self.finished = true;
    }

    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if !self.finished {
            out.extend_from_slice(&err.to_sse_event());
            self.finished = true;
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_are_400s_naming_the_field() {
        let e = read_request(br#"{"model":"m","input":"x","encoding_format":"int8"}"#).unwrap_err();
        assert_eq!(e.param(), Some("encoding_format"));
        for body in [&br#"{"model":"m"}"#[..], br#"{"model":"m","input":[]}"#] {
            assert_eq!(read_request(body).unwrap_err().param(), Some("input"));
        }
        let e = read_request(br#"{"input":"x"}"#).unwrap_err();
        assert_eq!(e.status(), 400);
        let e = read_request(br#"{"model":"","input":"x"}"#).unwrap_err();
        assert_eq!(e.param(), Some("model"));
    }
}
