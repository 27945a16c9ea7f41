use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};

use super::answer::message;
use super::request::parse;
use super::stream::Writer;
use crate::chat::ChatCompletion;
use crate::dialect::edge::{Edge, EdgeBody, EdgeLayer, Read, Wire};
use crate::dialect::Dialect;
use crate::facts::{NativeApi, NativeRequest};
use crate::Error;

/// The request headers of Anthropic's API forwarded to an `anthropic` endpoint.
pub(crate) const FORWARDED: [HeaderName; 2] = [
    HeaderName::from_static("anthropic-version"),
    HeaderName::from_static("anthropic-beta"),
];

/// Anthropic's Messages API as a [`Wire`]: see the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct MessagesApi;

/// Builds [`Messages`]; see the [module docs](super).
pub type MessagesLayer = EdgeLayer<MessagesApi>;

/// The Messages API's edge in front of the typed core; see the [module docs](super).
pub type Messages<S> = Edge<S, MessagesApi>;

/// The body of a Messages answer.
pub type MessagesBody<B> = EdgeBody<B, Writer>;

impl Wire for MessagesApi {
    /// The local estimate of the prompt's tokens.
    type Shape = u64;
    type Writer = Writer;
    const DIALECT: Dialect = Dialect::Messages;

    fn read(bytes: Bytes, headers: &HeaderMap) -> Result<Read<u64>, Error> {
        let translated = parse(&bytes)?.into_chat()?;
        let forwarded = FORWARDED
            .iter()
            .filter_map(|h| Some((h.clone(), headers.get(h)?.clone())))
            .collect();
        Ok(Read {
            chat: translated.chat,
            native: Some(NativeRequest::new(
                NativeApi::AnthropicMessages,
                bytes,
                forwarded,
                translated.untranslatable,
            )),
            embeddings: None,
            shape: translated.input_tokens,
        })
    }

    fn writer(id: &str, model: String, estimate: u64) -> Writer {
        Writer::new(id, model, estimate)
    }

    fn answer(c: ChatCompletion, id: &str, _: u64) -> Result<Vec<u8>, Error> {
        let model = c.model.clone();
        serde_json::to_vec(&message(c, id, &model))
            .map_err(|e| Error::internal(format!("cannot serialise the answer: {e}")))
    }
}
