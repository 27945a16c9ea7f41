//! OpenAI's Responses API (`POST /v1/responses`): the Codex CLI's and the AI SDK's dialect,
//! served statelessly.
//!
//! [`ResponsesLayer`] is the dialect's edge, in front of the same typed stack as Chat
//! Completions: it reads the body into the core's [`ChatRequest`](crate::ChatRequest) (the
//! rules are in `request.rs`), writes the answer back as a `response` object (`answer.rs`) or
//! a stream of typed events with increasing `sequence_number`s and exactly one terminal event
//! (`stream.rs`), and answers every error in OpenAI's envelope, as on chat. Every answer
//! carries `X-Generation-Id`, which is also the response's `id`.
//!
//! An `openai` or `azure` endpoint with `responses = true` serves the request natively: the
//! client's body goes upstream as it came (`model` rewritten, `models` / `provider` removed) to
//! its `/responses`, and the answer comes back as the provider wrote it but for the public
//! `model`; usage is read from its terminal event. Every other endpoint gets the translation.
//!
//! Nothing is kept: `previous_response_id`, `conversation` and `background: true` are refused
//! with a `400` that says so, and `store` is ignored. A client that needs the model's
//! reasoning back on the next turn asks for `include: ["reasoning.encrypted_content"]`: the
//! reasoning item then carries what the provider needs (Anthropic's thinking and its
//! signature, Gemini's thought signature), and the client sends it back with the items.
//!
//! ```
//! use modelgate::dialect::responses::ResponsesLayer;
//!
//! let _edge = ResponsesLayer::new().max_body_bytes(8 << 20);
//! ```

mod answer;
mod request;
mod stream;

use bytes::Bytes;
use http::header::HeaderMap;

use self::request::parse;
pub use self::request::{ResponsesRequest, Shape};
pub use self::stream::{check_event_sequence, Writer};
use crate::chat::ChatCompletion;
use crate::dialect::edge::{Edge, EdgeBody, EdgeLayer, Read, Wire};
use crate::dialect::Dialect;
use crate::facts::{NativeApi, NativeRequest};
use crate::Error;

/// OpenAI's Responses API as a [`Wire`]: see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct ResponsesApi;

/// Builds [`Responses`]; see the [module docs](self).
pub type ResponsesLayer = EdgeLayer<ResponsesApi>;

/// The Responses API's edge in front of the typed core; see the [module docs](self).
pub type Responses<S> = Edge<S, ResponsesApi>;

/// The body of a Responses answer.
pub type ResponsesBody<B> = EdgeBody<B, Writer>;

impl Wire for ResponsesApi {
    #[doc(hidden)]
    type Shape = Shape;
    type Writer = Writer;
    const DIALECT: Dialect = Dialect::Responses;

    fn read(bytes: Bytes, _: &HeaderMap) -> Result<Read<Shape>, Error> {
        let t = parse(&bytes)?.into_chat()?;
        Ok(Read {
            chat: t.chat,
            // Served as it came by an `openai` or `azure` endpoint with `responses = true`.
            native: Some(NativeRequest::new(
                NativeApi::OpenAiResponses,
                bytes,
                Vec::new(),
                None,
            )),
            embeddings: None,
            shape: t.shape,
        })
    }

    fn writer(id: &str, model: String, shape: Shape) -> Writer {
        Writer::new(id, &model, shape)
    }

    fn answer(c: ChatCompletion, id: &str, shape: Shape) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&answer::response(c, id, &shape))
            .map_err(|e| Error::internal(format!("cannot serialise the answer: {e}")))
    }
}

/// Reads a Responses request body as the edge does: the core's request it becomes, or the
/// `400` that names the field. For tests and fuzzing.
#[doc(hidden)]
pub fn read_request(bytes: &[u8]) -> Result<crate::ChatRequest, Error> {
    Ok(parse(bytes)?.into_chat()?.chat)
}

/// The Responses stream the edge writes for a core stream arriving in these frames. For
/// tests and fuzzing.
#[doc(hidden)]
pub fn write_stream(frames: Vec<Bytes>, shape: Shape) -> Bytes {
    crate::dialect::edge::write_frames(frames, Writer::new("gen-0", "m", shape))
}
