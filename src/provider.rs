//! Configured providers: where a provider lives, how to authenticate, and its timeouts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT,
};
use http::{Method, Request, Uri};
use http_body_util::Full;

use crate::chat::ChatRequest;
use crate::route::Target;
use crate::Error;

/// Which wire dialect a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible host (Groq, Together, DeepSeek, Mistral, vLLM, Ollama…).
    OpenAi,
}

impl ProviderKind {
    /// Parses a config `kind`. The kinds a later release adds are refused with a clear message.
    pub fn parse(kind: &str) -> Result<Self, String> {
        match kind {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" | "gemini" | "azure" => Err(format!(
                "provider kind `{kind}` is not implemented in this version yet; use kind = \"openai\" with the provider's OpenAI-compatible base_url meanwhile"
            )),
            other => Err(format!("unknown provider kind `{other}` (expected openai, anthropic, gemini or azure)")),
        }
    }

    /// The config name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
        }
    }
}

/// Timeouts of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// From sending the request to the response headers.
    pub first_byte: Duration,
    /// Longest silence between two pieces of the response body.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(120),
        }
    }
}

/// A configured provider. Build with [`Provider::builder`].
pub struct Provider {
    name: Arc<str>,
    kind: ProviderKind,
    base_url: String,
    chat_uri: Uri,
    api_key: Option<String>,
    auth: Option<HeaderValue>,
    headers: HeaderMap,
    timeouts: Timeouts,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl Provider {
    /// Starts a provider of this name, kind and base URL.
    pub fn builder(
        name: impl Into<String>,
        kind: ProviderKind,
        base_url: impl Into<String>,
    ) -> ProviderBuilder {
        ProviderBuilder {
            name: name.into(),
            kind,
            base_url: base_url.into(),
            api_key: None,
            headers: Vec::new(),
            timeouts: Timeouts::default(),
        }
    }

    /// The configured name (used in `provider.order`, `<provider>/<model>`, responses).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The wire dialect.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// The base URL as configured.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// True when a key is configured.
    pub fn has_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The URI requests go to.
    pub fn chat_uri(&self) -> &Uri {
        &self.chat_uri
    }

    /// The key, for scrubbing it out of anything shown to clients. Never log it.
    pub(crate) fn secret(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// Translates a typed request into this provider's HTTP request.
    ///
    /// The client's own headers are never copied: only the provider's key and the configured
    /// extra headers go upstream.
    pub fn build_request(
        &self,
        mut body: ChatRequest,
        target: &Target,
    ) -> Result<Request<Full<Bytes>>, Error> {
        match self.kind {
            ProviderKind::OpenAi => {
                let stream = body.is_stream();
                body.model.clear();
                body.model.push_str(&target.upstream_model);
                let bytes = serde_json::to_vec(&body)
                    .map_err(|e| Error::internal(format!("cannot serialise the request: {e}")))?;
                let mut req = Request::new(Full::new(Bytes::from(bytes)));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = self.chat_uri.clone();
                let h = req.headers_mut();
                h.reserve(4 + self.headers.len());
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(
                    ACCEPT,
                    HeaderValue::from_static(if stream {
                        "text/event-stream"
                    } else {
                        "application/json"
                    }),
                );
                h.insert(
                    USER_AGENT,
                    HeaderValue::from_static(concat!("modelgate/", env!("CARGO_PKG_VERSION"))),
                );
                if let Some(auth) = &self.auth {
                    h.insert(AUTHORIZATION, auth.clone());
                }
                for (k, v) in &self.headers {
                    h.insert(k.clone(), v.clone());
                }
                Ok(req)
            }
        }
    }
}

/// Builds a [`Provider`].
#[derive(Debug)]
pub struct ProviderBuilder {
    name: String,
    kind: ProviderKind,
    base_url: String,
    api_key: Option<String>,
    headers: Vec<(String, String)>,
    timeouts: Timeouts,
}

impl ProviderBuilder {
    /// The provider's API key (sent only to this provider).
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// An extra header sent with every request to this provider.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Provider, String> {
        let name = self.name.trim();
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "provider name `{name}` must be non-empty and contain no `/`"
            ));
        }
        let base = self.base_url.trim_end_matches('/');
        let chat = match self.kind {
            ProviderKind::OpenAi => format!("{base}/chat/completions"),
        };
        let chat_uri: Uri = chat.parse().map_err(|e| {
            format!(
                "provider `{name}`: base_url `{}` is not a valid URL: {e}",
                self.base_url
            )
        })?;
        match chat_uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(format!(
                    "provider `{name}`: base_url must start with http:// or https://"
                ))
            }
        }
        if chat_uri.host().is_none() {
            return Err(format!(
                "provider `{name}`: base_url `{}` has no host",
                self.base_url
            ));
        }
        let auth = match &self.api_key {
            Some(key) => {
                let mut v = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    format!(
                        "provider `{name}`: the API key holds characters not allowed in a header"
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let k = HeaderName::try_from(k.as_str())
                .map_err(|_| format!("provider `{name}`: `{k}` is not a valid header name"))?;
            let mut v = HeaderValue::try_from(v.as_str()).map_err(|_| {
                format!("provider `{name}`: the value of header `{k}` is not valid")
            })?;
            v.set_sensitive(true);
            headers.insert(k, v);
        }
        let t = self.timeouts;
        if t.connect.is_zero() || t.first_byte.is_zero() || t.idle.is_zero() {
            return Err(format!(
                "provider `{name}`: timeouts must be greater than zero"
            ));
        }
        Ok(Provider {
            name: Arc::from(name),
            kind: self.kind,
            base_url: self.base_url,
            chat_uri,
            api_key: self.api_key,
            auth,
            headers,
            timeouts: t,
        })
    }
}
