//! The Anthropic Messages API (`POST /v1/messages`): Claude Code's and the Anthropic SDKs'
//! dialect.
//!
//! [`MessagesLayer`] is the dialect's edge, in front of the same typed stack as Chat
//! Completions ([`DecodeLayer`](crate::DecodeLayer)'s place): it reads the body (up to a
//! limit), answers every error in Anthropic's envelope
//! (`{"type":"error","error":{"type":…,"message":…}}`, with Anthropic's error type for the
//! status), and every answer carries `X-Generation-Id`.
//!
//! Each attempt is served one of two ways, decided by the endpoint the attempt goes to:
//!
//! - **Native**, at an `anthropic` endpoint: the client's body goes upstream as it came, with
//!   only `model` rewritten to the endpoint's name for it and the gateway's own fields
//!   (`models`, `provider`) removed; `anthropic-version` and `anthropic-beta` are forwarded.
//!   The answer comes back as the provider wrote it but for the public `model` (its `id` is
//!   the provider's; the gateway's is `X-Generation-Id`): thinking signatures, tool ids,
//!   citations and cache counts untouched. Usage is read from the provider's own
//!   `message_start` and `message_delta`.
//! - **Translated**, at any other kind: the request is read into the core's
//!   [`ChatRequest`](crate::ChatRequest) (the rules are in `request.rs`), and the answer and
//!   its stream are written back in the Messages grammar (`answer.rs`, `stream.rs`).
//!
//! A request only Anthropic can serve (a server tool such as `web_search`, a document by URL)
//! is refused at endpoints of other kinds with a `400` naming the field; fallback moves on.
//!
//! ```
//! use modelgate::dialect::messages::MessagesLayer;
//!
//! let _edge = MessagesLayer::new().max_body_bytes(8 << 20);
//! ```

mod answer;
mod error;
mod request;
mod service;
mod stream;

pub(crate) use self::error::{error_event, error_response};
#[cfg(feature = "proxy")]
pub(crate) use self::request::parse;
pub use self::request::{InputMessage, MessagesRequest};
#[cfg(feature = "proxy")]
pub(crate) use self::service::FORWARDED;
pub use self::service::{Messages, MessagesApi, MessagesBody, MessagesLayer};
pub use self::stream::{check_event_sequence, Writer};

/// Reads a Messages request body as the edge does: the core's request it becomes and whether
/// a provider of another kind can serve it, or the `400` that names the field. For tests and
/// fuzzing.
#[doc(hidden)]
pub fn read_request(bytes: &[u8]) -> Result<(crate::ChatRequest, bool), crate::Error> {
    let t = request::parse(bytes)?.into_chat()?;
    Ok((t.chat, t.untranslatable.is_none()))
}

/// The Messages stream the edge writes for a core stream arriving in these pieces (each a
/// frame of the core's body). For tests and fuzzing.
#[doc(hidden)]
pub fn write_stream(pieces: Vec<bytes::Bytes>) -> bytes::Bytes {
    crate::dialect::edge::write_frames(pieces, stream::Writer::new("gen-0", "m", 1))
}
