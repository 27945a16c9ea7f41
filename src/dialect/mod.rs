//! The APIs clients speak to the gateway, and the edges that read and write them.
//!
//! One core serves every dialect: the same keys, limits, catalog, routing, fallback, metering
//! and records. A dialect's edge reads its request into the core's [`ChatRequest`], writes the
//! core's answer (JSON or stream) back in the dialect, and answers every error, the gateway's
//! own included, in the dialect's envelope.
//!
//! - Chat Completions: the core's own dialect ([`DecodeLayer`](crate::DecodeLayer)).
//! - Anthropic Messages ([`messages`]): translated for any provider, passed through natively to
//!   an `anthropic` one.
//! - OpenAI Responses ([`responses`]): translated for any provider, stateless.
//! - OpenAI embeddings ([`embeddings`]): passed on to `openai` and `azure` providers,
//!   translated for the others that have embeddings.
//!
//! The edges of the last three are one [`Edge`](edge::Edge), each with its dialect's
//! [`Wire`](edge::Wire).
//!
//! The dialect a request came in is a request extension ([`Dialect`]): the layers in front of
//! the edge (authentication, rate limits) answer their refusals in it, and the usage record
//! says which it was.
//!
//! [`ChatRequest`]: crate::ChatRequest

pub mod edge;
pub mod embeddings;
pub mod messages;
pub mod responses;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The API a client spoke. A request extension, set by the route (absent: Chat Completions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Dialect {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    #[default]
    Chat,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// OpenAI embeddings (`/v1/embeddings`).
    Embeddings,
}

impl Dialect {
    /// The dialect's name, as records and metrics show it: `chat`, `messages`, `responses`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dialect::Chat => "chat",
            Dialect::Messages => "messages",
            Dialect::Responses => "responses",
            Dialect::Embeddings => "embeddings",
        }
    }

    /// The dialect of a request: its extension, or Chat Completions.
    pub fn of(extensions: &http::Extensions) -> Dialect {
        extensions.get::<Dialect>().copied().unwrap_or_default()
    }

    /// `err` answered in this dialect's envelope, with its status and headers.
    pub fn error_response(&self, err: &Error) -> Response<Full<Bytes>> {
        match self {
            // Responses errors are OpenAI's envelope, as on chat.
            Dialect::Chat | Dialect::Responses | Dialect::Embeddings => err.clone().into_response(),
            Dialect::Messages => messages::error_response(err),
        }
    }
}
