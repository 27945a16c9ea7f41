use bytes::Bytes;
use http::HeaderValue;

use crate::provider::ProviderKind;
use crate::Error;

/// A request as its client wrote it in a provider's own dialect (Anthropic Messages), kept
/// beside the core's translation of it. Inserted by the dialect's edge; read per attempt:
///
/// - an attempt at a provider of that kind sends these bytes upstream (only `model`
///   rewritten, the gateway's own fields removed, the dialect's headers forwarded) and its
///   answer reaches the client as the provider wrote it ([`NativeAnswer`]);
/// - an attempt at another kind sends the translation, unless the request says something
///   only its own kind understands ([`untranslatable`](Self::untranslatable)): then that
///   attempt is refused with a `400` naming the field, and fallback moves on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NativeRequest {
    /// The provider kind whose dialect this is.
    pub kind: ProviderKind,
    /// The body as the client sent it.
    pub body: Bytes,
    /// The dialect's own headers to forward (`anthropic-version`, `anthropic-beta`).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Why a provider of another kind cannot serve the request, when it cannot.
    pub untranslatable: Option<Error>,
}

impl NativeRequest {
    /// A request of `kind`'s dialect, with its body and the headers to forward.
    pub fn new(
        kind: ProviderKind,
        body: Bytes,
        headers: Vec<(http::HeaderName, HeaderValue)>,
        untranslatable: Option<Error>,
    ) -> Self {
        NativeRequest {
            kind,
            body,
            headers,
            untranslatable,
        }
    }
}

/// A response extension: the answer is in the provider's own dialect (see [`NativeRequest`]),
/// not normalised to Chat Completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeAnswer;
