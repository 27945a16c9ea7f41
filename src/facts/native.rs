use bytes::Bytes;
use http::HeaderValue;

use crate::provider::Provider;
use crate::Error;

/// A provider API a client may speak at the gateway's edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NativeApi {
    /// Anthropic's Messages API: served by `anthropic` providers.
    AnthropicMessages,
    /// OpenAI's Responses API: served by `openai` and `azure` providers with `responses`.
    OpenAiResponses,
}

/// A request as its client wrote it in a provider's own API (Anthropic Messages, OpenAI
/// Responses), kept
/// beside the core's translation of it. Inserted by the dialect's edge; read per attempt:
///
/// - an attempt at a provider that speaks that API sends these bytes upstream (only `model`
///   rewritten, the gateway's own fields removed, the dialect's headers forwarded) and its
///   answer reaches the client as the provider wrote it ([`NativeAnswer`]);
/// - an attempt at another provider sends the translation, unless the request says something
///   only its own API understands ([`untranslatable`](Self::untranslatable)): then that
///   attempt is refused with a `400` naming the field, and fallback moves on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NativeRequest {
    /// The API the request is in.
    pub api: NativeApi,
    /// The body as the client sent it.
    pub body: Bytes,
    /// The dialect's own headers to forward (`anthropic-version`, `anthropic-beta`).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Why a provider of another kind cannot serve the request, when it cannot.
    pub untranslatable: Option<Error>,
}

impl NativeRequest {
    /// A request in `api`, with its body and the headers to forward.
    pub fn new(
        api: NativeApi,
        body: Bytes,
        headers: Vec<(http::HeaderName, HeaderValue)>,
        untranslatable: Option<Error>,
    ) -> Self {
        NativeRequest {
            api,
            body,
            headers,
            untranslatable,
        }
    }

    /// Whether `provider` speaks this request's API for `model` (and serves it
    /// untranslated): Anthropic's Messages are spoken by `anthropic` providers and by Claude
    /// models on Vertex and Bedrock.
    pub fn served_by(&self, provider: &Provider, model: &str) -> bool {
        match self.api {
            NativeApi::AnthropicMessages => provider.serves_messages(model),
            NativeApi::OpenAiResponses => provider.responses_uri().is_some(),
        }
    }

    /// Where `provider` serves this request untranslated for `model`; `None` when it does not
    /// speak its API.
    pub fn native_uri(&self, provider: &Provider, model: &str, stream: bool) -> Option<http::Uri> {
        match self.api {
            NativeApi::AnthropicMessages => provider.messages_uri(model, stream),
            NativeApi::OpenAiResponses => provider.responses_uri().cloned(),
        }
    }
}

/// A response extension: the answer is in the provider's own dialect (see [`NativeRequest`]),
/// not normalised to Chat Completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeAnswer;
