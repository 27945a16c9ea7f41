//! Configured providers: where a provider lives, how to authenticate, and its timeouts.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
    USER_AGENT,
};
use http::{Method, Request, Uri};
use http_body_util::Full;

pub(crate) mod anthropic;
pub(crate) mod bedrock;
mod error;
pub(crate) mod gemini;
mod params;
pub(crate) mod vertex;

pub use self::bedrock::AwsCredentials;
pub use self::error::{client_status, retry_after_from, upstream_error};
pub use self::params::{keep_supported, PARAMETERS};
pub use self::vertex::ServiceAccount;

use crate::chat::{ChatRequest, Content, ReasoningDetail};
use crate::embeddings::Embeddings;
use crate::error::Secrets;
use crate::Error;
use serde::Deserialize;

/// Which wire dialect a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible host (Groq, Together, DeepSeek, Mistral, vLLM, Ollama…).
    OpenAi,
    /// Anthropic's Messages API, translated both ways.
    Anthropic,
    /// Google's Generative Language API (Gemini), translated both ways.
    Gemini,
    /// Azure OpenAI: deployment URLs with `api-version`, or the `/openai/v1` form.
    Azure,
    /// Amazon Bedrock's Converse API, SigV4-signed or with a Bedrock API key, translated both
    /// ways.
    Bedrock,
    /// Google Vertex AI: Gemini models in Gemini's API, Claude models in Anthropic's, with
    /// OAuth tokens minted from a service account.
    Vertex,
}

impl ProviderKind {
    /// Parses a config `kind`. The kinds a later release adds are refused with a clear message.
    pub fn parse(kind: &str) -> Result<Self, String> {
        match kind {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
            "gemini" => Ok(ProviderKind::Gemini),
            "azure" => Ok(ProviderKind::Azure),
            "bedrock" => Ok(ProviderKind::Bedrock),
            "vertex" => Ok(ProviderKind::Vertex),
            other => Err(format!(
                "unknown provider kind `{other}` (expected openai, anthropic, gemini, azure, bedrock or vertex)"
            )),
        }
    }

    /// The config name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Vertex => "vertex",
        }
    }
}

/// Timeouts of one provider. [`Duration::MAX`] is "none" (as are the other durations of the
/// crate's policies: a wait that long is taken as never ending).
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
    /// The URL prefix the adapter appends paths to (Gemini: with the API version).
    base: String,
    chat_uri: Uri,
    /// `POST …/responses`, when the provider serves OpenAI's Responses API (`responses`).
    responses_uri: Option<Uri>,
    api_version: Option<String>,
    api_key: Option<String>,
    auth: Option<(HeaderName, HeaderValue)>,
    headers: HeaderMap,
    /// The key, the configured header values and the base URL's credentials.
    secrets: Secrets,
    timeouts: Timeouts,
    /// `requests_per_minute`: an exhausted provider counts as unavailable.
    limiter: Option<governor::DefaultDirectRateLimiter>,
    requests_per_minute: Option<NonZeroU32>,
    /// Bedrock with AWS credentials: signs every request.
    signer: Option<bedrock::Signer>,
    /// Vertex: the project, the region and the service account's tokens.
    vertex: Option<vertex::Vertex>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &crate::error::redact_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeouts", &self.timeouts)
            .field("requests_per_minute", &self.requests_per_minute)
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
            api_version: None,
            region: None,
            aws_credentials: None,
            project: None,
            service_account: None,
            responses: false,
            headers: Vec::new(),
            timeouts: Timeouts::default(),
            requests_per_minute: None,
        }
    }

    /// Takes one request from the provider's `requests_per_minute` allowance; `false` when
    /// it is spent (the provider then counts as unavailable: skipped, never queued). Always
    /// `true` without a limit.
    pub fn try_acquire(&self) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }

    /// The configured `requests_per_minute`, if any.
    pub fn requests_per_minute(&self) -> Option<NonZeroU32> {
        self.requests_per_minute
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

    /// `POST …/responses` when the provider serves OpenAI's Responses API (`responses = true`).
    pub fn responses_uri(&self) -> Option<&Uri> {
        self.responses_uri.as_ref()
    }

    /// The URI requests go to (Gemini: the models collection, each request appends its model
    /// and method; Azure with `api_version`: each request names its deployment instead).
    pub fn chat_uri(&self) -> &Uri {
        &self.chat_uri
    }

    /// Whether this provider can be asked for `model`: an adapter that puts the model in the
    /// URL's path (Azure deployments, Gemini) refuses a name that would be a dot segment or
    /// hold a separator. `Err` says why.
    pub fn check_model(&self, model: &str) -> Result<(), String> {
        match (self.kind, &self.api_version) {
            (ProviderKind::Gemini | ProviderKind::Vertex, _) | (ProviderKind::Azure, Some(_)) => {
                check_segment(model)
            }
            // Every reserved character is encoded (ARNs hold `/`): only an empty name is wrong.
            (ProviderKind::Bedrock, _) if model.is_empty() => {
                Err("the model name must not be empty".into())
            }
            _ => Ok(()),
        }
    }

    /// The API this provider speaks for `model`: its own kind's, but for Vertex, which serves
    /// Claude models in Anthropic's and the others in Gemini's.
    pub fn speaks(&self, model: &str) -> ProviderKind {
        match self.kind {
            ProviderKind::Vertex if vertex::is_claude(model) => ProviderKind::Anthropic,
            ProviderKind::Vertex => ProviderKind::Gemini,
            kind => kind,
        }
    }

    /// Whether this provider serves Anthropic's Messages API itself for `model`: an
    /// `anthropic` provider, and Claude models on Vertex and Bedrock.
    pub fn serves_messages(&self, model: &str) -> bool {
        match self.kind {
            ProviderKind::Anthropic => true,
            ProviderKind::Vertex => vertex::is_claude(model),
            ProviderKind::Bedrock => bedrock::is_claude(model),
            _ => false,
        }
    }

    /// Where this provider serves Anthropic's Messages API for `model` (see
    /// [`serves_messages`](Self::serves_messages)).
    pub fn messages_uri(&self, model: &str, stream: bool) -> Option<Uri> {
        if !self.serves_messages(model) || self.check_model(model).is_err() {
            return None;
        }
        let path = match (&self.kind, &self.vertex) {
            (ProviderKind::Anthropic, _) => return Some(self.chat_uri.clone()),
            (ProviderKind::Vertex, Some(v)) => v.path(
                model,
                if stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                },
            ),
            _ => bedrock::invoke_path(model, stream),
        };
        format!("{}{path}", self.base).parse().ok()
    }

    /// Vertex's service account and token cache, for [`Dispatch`](crate::dispatch::Dispatch).
    pub(crate) fn vertex(&self) -> Option<&vertex::Vertex> {
        self.vertex.as_ref()
    }

    /// What must never leave the gateway: the key, the values of the configured headers
    /// (those of at least 8 bytes: `true` or `eu` are settings, not secrets) and the base
    /// URL's user and password. Text copied from this provider's answers is scrubbed of them.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The base URL without its credentials, for logs and messages.
    pub fn display_url(&self) -> String {
        crate::error::redact_url(&self.base_url)
    }

    /// Translates a typed request into this provider's HTTP request.
    ///
    /// The client's own headers are never copied: only the provider's key and the configured
    /// extra headers go upstream. A request the provider's dialect cannot express (say `n > 1`
    /// for Anthropic) is a 400 naming the field. `upstream_model` is the name this provider
    /// knows the model by; `max_output_tokens`, the endpoint's bound on the answer, if any.
    pub fn build_request(
        &self,
        mut body: ChatRequest,
        upstream_model: &str,
        max_output_tokens: Option<u32>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let stream = body.is_stream();
        self.check_model(upstream_model)
            .map_err(|e| Error::invalid_request(e, Some("model".into())))?;
        let (uri, bytes) = match self.kind {
            ProviderKind::OpenAi | ProviderKind::Azure => {
                body.model.clear();
                body.model.push_str(upstream_model);
                // OpenRouter's reasoning on assistant messages is its own: not sent on.
                let theirs = |m: &crate::chat::Message| {
                    m.extra.contains_key("reasoning_details") || m.extra.contains_key("reasoning")
                };
                if body.messages.iter().any(theirs) {
                    let messages = std::sync::Arc::make_mut(&mut body.messages);
                    for m in messages.iter_mut() {
                        m.extra.remove("reasoning_details");
                        m.extra.remove("reasoning");
                    }
                }
                // OpenRouter's `reasoning` object is OpenAI's `reasoning_effort`.
                if body.reasoning_effort.is_none() {
                    let ask = body.reasoning_ask();
                    let effort = match body.reasoning.as_ref().and_then(|r| r.effort.as_deref()) {
                        Some("none") => Some("none"),
                        _ => ask.effective_effort(),
                    };
                    body.reasoning_effort = effort.map(str::to_owned);
                }
                // Room for the texts and the rest, so the buffer seldom grows.
                let texts: usize = body
                    .messages
                    .iter()
                    .map(|m| match &m.content {
                        Some(Content::Text(t)) => t.len(),
                        _ => 64,
                    })
                    .sum();
                let mut bytes = Vec::with_capacity(256 + texts + 32 * body.messages.len());
                serde_json::to_writer(&mut bytes, &body)
                    .map_err(|e| Error::internal(format!("cannot serialise the request: {e}")))?;
                let uri = match (&self.kind, &self.api_version) {
                    (ProviderKind::Azure, Some(version)) => self.uri(&format!(
                        "{}/openai/deployments/{}/chat/completions?api-version={}",
                        self.base,
                        path_segment(upstream_model),
                        path_segment(version)
                    ))?,
                    _ => self.chat_uri.clone(),
                };
                (uri, bytes)
            }
            ProviderKind::Anthropic => {
                let max = max_output_tokens.unwrap_or(anthropic::DEFAULT_MAX_TOKENS);
                let json = anthropic::request(&body, upstream_model, max)?;
                (self.chat_uri.clone(), to_vec(&json)?)
            }
            ProviderKind::Bedrock => {
                let json = bedrock::request(&body, max_output_tokens)?;
                let uri = self.at(&bedrock::path(upstream_model, stream))?;
                (uri, to_vec(&json)?)
            }
            ProviderKind::Vertex => {
                let v = self.vertex_settings()?;
                let (json, method) = if vertex::is_claude(upstream_model) {
                    let max = max_output_tokens.unwrap_or(anthropic::DEFAULT_MAX_TOKENS);
                    let json = vertex::claude_body(anthropic::request(&body, upstream_model, max)?);
                    (
                        json,
                        if stream {
                            "streamRawPredict"
                        } else {
                            "rawPredict"
                        },
                    )
                } else {
                    let json = gemini::request(&body, max_output_tokens)?;
                    let method = if stream {
                        "streamGenerateContent?alt=sse"
                    } else {
                        "generateContent"
                    };
                    (json, method)
                };
                let uri = self.at(&v.path(upstream_model, method))?;
                (uri, to_vec(&json)?)
            }
            ProviderKind::Gemini => {
                let json = gemini::request(&body, max_output_tokens)?;
                let method = if stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                let uri = self.uri(&format!(
                    "{}/models/{}:{method}",
                    self.base,
                    path_segment(upstream_model)
                ))?;
                (uri, to_vec(&json)?)
            }
        };
        let mut req = self.http_request(uri, bytes, stream)?;
        if self.kind == ProviderKind::Anthropic {
            // Unless the configuration set one.
            req.headers_mut()
                .entry("anthropic-version")
                .or_insert(HeaderValue::from_static(anthropic::VERSION));
        }
        Ok(req)
    }

    /// The upstream request for an embeddings request: OpenAI's `/embeddings` for `openai` and
    /// `azure` (OpenAI's fields, and those of the endpoint's `supported` parameters),
    /// `batchEmbedContents` for `gemini`. A kind with no embeddings API refuses the attempt (a
    /// `400`, tried elsewhere).
    pub fn build_embeddings_request(
        &self,
        e: &Embeddings,
        upstream_model: &str,
        supported: Option<&[String]>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        self.check_model(upstream_model)
            .map_err(|e| Error::invalid_request(e, Some("model".into())))?;
        let (uri, bytes) = match self.kind {
            ProviderKind::OpenAi | ProviderKind::Azure => {
                let uri = match (&self.kind, &self.api_version) {
                    (ProviderKind::Azure, Some(version)) => format!(
                        "{}/openai/deployments/{}/embeddings?api-version={}",
                        self.base,
                        path_segment(upstream_model),
                        path_segment(version)
                    ),
                    (ProviderKind::Azure, None) => format!("{}/openai/v1/embeddings", self.base),
                    _ => format!("{}/embeddings", self.base),
                };
                (self.uri(&uri)?, e.openai_body(upstream_model, supported)?)
            }
            ProviderKind::Gemini => {
                let json = gemini::embeddings::request(e, upstream_model)
                    .map_err(|err| err.with_retry(crate::error::Retry::Elsewhere))?;
                let uri = self.uri(&format!(
                    "{}/models/{}:batchEmbedContents",
                    self.base,
                    path_segment(upstream_model)
                ))?;
                (uri, to_vec(&json)?)
            }
            ProviderKind::Bedrock => {
                let json = bedrock::embeddings::request(e, upstream_model)
                    .map_err(|err| err.with_retry(crate::error::Retry::Elsewhere))?;
                let uri = self.at(&bedrock::invoke_path(upstream_model, false))?;
                (uri, to_vec(&json)?)
            }
            ProviderKind::Vertex => {
                let v = self.vertex_settings()?;
                let json = vertex::embeddings_request(e)
                    .map_err(|err| err.with_retry(crate::error::Retry::Elsewhere))?;
                let uri = self.at(&v.path(upstream_model, "predict"))?;
                (uri, to_vec(&json)?)
            }
            ProviderKind::Anthropic => {
                return Err(invalid(
                    "model",
                    format!(
                        "{}: an {} provider serves no embeddings",
                        self.name,
                        self.kind.as_str()
                    ),
                )
                .with_retry(crate::error::Retry::Elsewhere))
            }
        };
        self.http_request(uri, bytes, false)
    }

    /// The upstream request, to `uri`, for a request kept in this provider's own dialect
    /// ([`NativeRequest`](crate::facts::NativeRequest)): its `body` as the client wrote it,
    /// with only `model` set to `upstream_model` and the gateway's own fields (`models`,
    /// `provider`) removed, and the dialect's `headers` forwarded (`anthropic-version`
    /// defaults to the gateway's).
    pub fn build_native_request(
        &self,
        uri: Uri,
        body: &[u8],
        headers: &[(http::HeaderName, HeaderValue)],
        upstream_model: &str,
        stream: bool,
    ) -> Result<Request<Full<Bytes>>, Error> {
        self.check_model(upstream_model)
            .map_err(|e| Error::invalid_request(e, Some("model".into())))?;
        let invalid_body = |e: &dyn fmt::Display| {
            Error::invalid_request(format!("invalid request body: {e}"), None)
        };
        let bytes = match self.kind {
            // Vertex and Bedrock take the model in the path and their own `anthropic_version`
            // in the body; Bedrock takes the betas in the body too, and the stream by its path.
            ProviderKind::Vertex | ProviderKind::Bedrock => {
                let mut v: serde_json::Value =
                    serde_json::from_slice(body).map_err(|e| invalid_body(&e))?;
                let Some(obj) = v.as_object_mut() else {
                    return Err(invalid_body(&"not a JSON object"));
                };
                // The gateway's fields, and the abuse-tracking ones these clouds do not take.
                for field in ["model", "models", "provider", "metadata", "service_tier"] {
                    obj.remove(field);
                }
                if self.kind == ProviderKind::Vertex {
                    obj.insert("anthropic_version".into(), vertex::ANTHROPIC_VERSION.into());
                } else {
                    obj.remove("stream");
                    obj.insert(
                        "anthropic_version".into(),
                        bedrock::ANTHROPIC_VERSION.into(),
                    );
                    let betas: Vec<&str> = headers
                        .iter()
                        .filter(|(name, _)| name == "anthropic-beta")
                        .filter_map(|(_, v)| v.to_str().ok())
                        .flat_map(|v| v.split(',').map(str::trim))
                        .filter(|b| !b.is_empty())
                        .collect();
                    if !betas.is_empty() {
                        obj.insert("anthropic_beta".into(), betas.into());
                    }
                }
                serde_json::to_vec(&v).map_err(|e| invalid_body(&e))?
            }
            _ => crate::json::with_model(body, upstream_model, &["models", "provider"])
                .map_err(|e| invalid_body(&e))?,
        };
        let mut req = self.http_request(uri, bytes, stream)?;
        let h = req.headers_mut();
        if self.kind == ProviderKind::Anthropic {
            h.insert(
                "anthropic-version",
                HeaderValue::from_static(anthropic::VERSION),
            );
        }
        for (name, value) in headers {
            // Bedrock's betas went in the body; Vertex's version is in the body, its betas
            // go as Anthropic's do.
            let in_body = match self.kind {
                ProviderKind::Bedrock => true,
                ProviderKind::Vertex => name == "anthropic-version",
                _ => false,
            };
            if in_body {
                continue;
            }
            h.insert(name.clone(), value.clone());
        }
        // The configuration's headers win over the client's.
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        Ok(req)
    }

    /// A `POST` of `bytes` to `uri` with the provider's key and configured headers.
    fn http_request(
        &self,
        uri: Uri,
        bytes: Vec<u8>,
        stream: bool,
    ) -> Result<Request<Full<Bytes>>, Error> {
        // Signed before the body moves into the request (Bedrock with AWS credentials).
        let signature = match &self.signer {
            Some(signer) => signer.headers(&uri, "application/json", &bytes, SystemTime::now())?,
            None => Vec::new(),
        };
        // The length's digits go in the body's own allocation, after the body: both are
        // slices of one buffer. (Left to hyper, the header would take two allocations.)
        let mut bytes = bytes;
        let len = bytes.len();
        bytes.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        let bytes = Bytes::from(bytes);
        let length = HeaderValue::from_maybe_shared(bytes.slice(len..))
            .map_err(|e| Error::internal(format!("a body length is not a header value: {e}")))?;
        let mut req = Request::new(Full::new(bytes.slice(..len)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.reserve(6 + self.headers.len());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, length);
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
        if stream && self.kind == ProviderKind::Bedrock {
            h.insert(ACCEPT, HeaderValue::from_static(bedrock::EVENT_STREAM));
        }
        if let Some((name, value)) = &self.auth {
            h.insert(name.clone(), value.clone());
        }
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        h.extend(signature);
        Ok(req)
    }

    /// The URI of `path` under the base URL.
    fn at(&self, path: &str) -> Result<Uri, Error> {
        self.uri(&format!("{}{path}", self.base))
    }

    fn vertex_settings(&self) -> Result<&vertex::Vertex, Error> {
        self.vertex
            .as_ref()
            .ok_or_else(|| Error::internal("a Vertex provider without its settings"))
    }

    fn uri(&self, s: &str) -> Result<Uri, Error> {
        s.parse().map_err(|e| {
            Error::invalid_request(format!("cannot build the upstream URL: {e}"), None)
        })
    }
}

/// Headers a provider's configuration may not set: the request's framing (a length that is not
/// the body's would cut or stall it upstream) and the hop-by-hop ones (RFC 9110, section
/// 7.6.1), which belong to the connection, not to the request. (`host` may be set: a provider
/// reached by address can need its virtual host's name.)
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

// What both translating adapters (Anthropic, Gemini) read from an OpenAI request the same way.

/// A 400 naming the offending field.
pub(crate) fn invalid(param: &str, message: impl Into<String>) -> Error {
    Error::invalid_request(message.into(), Some(param.to_owned()))
}

/// `stop` as a list; `None` when absent or empty.
pub(crate) fn stop_sequences(req: &ChatRequest) -> Option<Vec<String>> {
    let list = match req.stop.as_ref()? {
        crate::chat::Stop::One(s) => vec![s.clone()],
        crate::chat::Stop::Many(v) => v.clone(),
    };
    (!list.is_empty()).then_some(list)
}

/// The function a named `tool_choice` forces.
pub(crate) fn named_tool(choice: &serde_json::Value) -> Result<&str, Error> {
    choice
        .get("function")
        .and_then(|f| f.get("name"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| invalid("tool_choice", "`tool_choice.function.name` is missing"))
}

/// The `reasoning_details` a client sent back on an assistant message, those of `format`
/// only, the fragments of one `index` joined (streamed details come in pieces: texts are
/// concatenated, the signature or data kept).
pub(crate) fn reasoning_details(m: &crate::chat::Message, format: &str) -> Vec<ReasoningDetail> {
    let Some(list) = m.extra.get("reasoning_details") else {
        return Vec::new();
    };
    let Ok(list) = Vec::<ReasoningDetail>::deserialize(list) else {
        return Vec::new();
    };
    let mut out: Vec<ReasoningDetail> = Vec::new();
    for d in list
        .into_iter()
        .filter(|d| d.format.as_deref().is_none_or(|f| f == format))
    {
        match out.last_mut() {
            Some(last) if d.index.is_some() && last.index == d.index && last.kind == d.kind => {
                if let Some(t) = d.text {
                    last.text.get_or_insert_with(String::new).push_str(&t);
                }
                last.signature = d.signature.or(last.signature.take());
                last.data = d.data.or(last.data.take());
            }
            _ => out.push(d),
        }
    }
    out
}

/// An assistant tool call's `arguments` parsed: a JSON object (empty text: `{}`); anything else
/// is a 400 naming `messages[i].tool_calls[j].function.arguments`.
pub(crate) fn tool_arguments(
    call: &crate::chat::ToolCall,
    i: usize,
    j: usize,
) -> Result<serde_json::Value, Error> {
    let at = || format!("messages[{i}].tool_calls[{j}].function.arguments");
    let args = call.function.arguments.trim();
    if args.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let value: serde_json::Value = serde_json::from_str(args).map_err(|e| {
        invalid(
            &at(),
            format!("tool call arguments are not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(invalid(&at(), "tool call arguments must be a JSON object"));
    }
    Ok(value)
}

fn to_vec(v: &serde_json::Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::internal(format!("cannot serialise the request: {e}")))
}

/// Percent-encodes what cannot stand in one URL path segment or query value.
fn path_segment(s: &str) -> String {
    percent_encode(s, b"@:")
}

/// Percent-encodes every byte of `s` but the unreserved ones (RFC 3986) and those of `keep`.
pub(crate) fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || keep.contains(&b)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `model` can be one segment of an upstream URL's path: not empty, not `.` or `..`
/// (which a server that normalises paths would resolve to another resource, with this
/// provider's key attached; encoding the dots does not help, `%2E` is a dot to such a server),
/// and no `/` or `\\` (some servers decode `%2F` and `%5C`).
fn check_segment(model: &str) -> Result<(), String> {
    if model.is_empty() || model == "." || model == ".." || model.contains(['/', '\\']) {
        return Err(format!(
            "the model name `{model}` cannot be a segment of the provider's URL (empty, `.`, `..`, or with `/` or `\\`)"
        ));
    }
    Ok(())
}

/// Builds a [`Provider`]. Its `Debug` shows neither the key nor the extra headers' values.
pub struct ProviderBuilder {
    name: String,
    kind: ProviderKind,
    base_url: String,
    api_key: Option<String>,
    api_version: Option<String>,
    region: Option<String>,
    aws_credentials: Option<AwsCredentials>,
    project: Option<String>,
    service_account: Option<ServiceAccount>,
    responses: bool,
    headers: Vec<(String, String)>,
    timeouts: Timeouts,
    requests_per_minute: Option<NonZeroU32>,
}

impl fmt::Debug for ProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ProviderBuilder")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &crate::error::redact_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_version", &self.api_version)
            .field("region", &self.region)
            .field("aws_credentials", &self.aws_credentials)
            .field("project", &self.project)
            .field("service_account", &self.service_account)
            .field("headers", &headers)
            .field("timeouts", &self.timeouts)
            .field("requests_per_minute", &self.requests_per_minute)
            .finish()
    }
}

impl ProviderBuilder {
    /// At most this many requests a minute go to the provider (a burst of that many, refilled
    /// evenly); past it the provider is skipped as unavailable.
    pub fn requests_per_minute(mut self, limit: Option<NonZeroU32>) -> Self {
        self.requests_per_minute = limit;
        self
    }

    /// Azure's `api-version` (absent: the `/openai/v1` form). Only for [`ProviderKind::Azure`].
    pub fn api_version(mut self, version: Option<String>) -> Self {
        self.api_version = version.filter(|v| !v.is_empty());
        self
    }

    /// The region (kinds `bedrock` and `vertex`, required). The base URL may then be empty: it
    /// defaults to `https://bedrock-runtime.{region}.amazonaws.com` for Bedrock,
    /// `https://{region}-aiplatform.googleapis.com` (or `https://aiplatform.googleapis.com`
    /// for `global`) for Vertex.
    pub fn region(mut self, region: Option<String>) -> Self {
        self.region = region.filter(|r| !r.is_empty());
        self
    }

    /// The Google Cloud project (kind `vertex`, required).
    pub fn project(mut self, project: Option<String>) -> Self {
        self.project = project.filter(|p| !p.is_empty());
        self
    }

    /// The service account Vertex tokens are minted from (kind `vertex`, required).
    pub fn service_account(mut self, account: Option<ServiceAccount>) -> Self {
        self.service_account = account;
        self
    }

    /// The AWS credentials Bedrock requests are signed with (SigV4). Without them a Bedrock
    /// provider needs an API key ([`api_key`](Self::api_key)), sent as a bearer token.
    pub fn aws_credentials(mut self, credentials: Option<AwsCredentials>) -> Self {
        self.aws_credentials = credentials;
        self
    }

    /// The provider serves OpenAI's Responses API too (`openai` and `azure` only): a client of
    /// that API is served natively, its request passed on as it came.
    pub fn responses(mut self, on: bool) -> Self {
        self.responses = on;
        self
    }

    /// The provider's API key (sent only to this provider).
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// An extra header sent with every request to this provider. It replaces a header of the
    /// same name the gateway would send (`user-agent`, `accept`, the API key's), except those
    /// that frame the request or the connection (`content-length`, `transfer-encoding`,
    /// `connection` and the other hop-by-hop ones): [`build`](Self::build) refuses those.
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
        if self.api_version.is_some() && self.kind != ProviderKind::Azure {
            return Err(format!(
                "provider `{name}`: `api_version` applies to kind = \"azure\" only"
            ));
        }
        let regional = matches!(self.kind, ProviderKind::Bedrock | ProviderKind::Vertex);
        if !regional && self.region.is_some() {
            return Err(format!(
                "provider `{name}`: `region` applies to kinds \"bedrock\" and \"vertex\" only"
            ));
        }
        if self.kind != ProviderKind::Bedrock && self.aws_credentials.is_some() {
            return Err(format!(
                "provider `{name}`: AWS credentials apply to kind = \"bedrock\" only"
            ));
        }
        if self.kind != ProviderKind::Vertex
            && (self.project.is_some() || self.service_account.is_some())
        {
            return Err(format!(
                "provider `{name}`: `project` and a service account apply to kind = \"vertex\" only"
            ));
        }
        let default_base;
        let base_url = match (&self.kind, &self.region) {
            (ProviderKind::Bedrock | ProviderKind::Vertex, None) => {
                return Err(format!(
                    "provider `{name}`: kind = \"{}\" needs a `region`",
                    self.kind.as_str()
                ))
            }
            (ProviderKind::Bedrock, Some(region)) if self.base_url.is_empty() => {
                default_base = format!("https://bedrock-runtime.{region}.amazonaws.com");
                &default_base
            }
            (ProviderKind::Vertex, Some(region)) if self.base_url.is_empty() => {
                default_base = vertex::Vertex::default_base(region);
                &default_base
            }
            _ => &self.base_url,
        };
        let trimmed = base_url.trim_end_matches('/');
        let (base, chat) = match self.kind {
            ProviderKind::OpenAi => (trimmed.to_owned(), format!("{trimmed}/chat/completions")),
            ProviderKind::Anthropic => {
                let root = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
                (root.to_owned(), format!("{root}/v1/messages"))
            }
            ProviderKind::Gemini => {
                let versioned = ["/v1beta", "/v1", "/v1alpha"]
                    .iter()
                    .any(|v| trimmed.ends_with(v));
                let base = if versioned {
                    trimmed.to_owned()
                } else {
                    format!("{trimmed}/v1beta")
                };
                let chat = format!("{base}/models");
                (base, chat)
            }
            ProviderKind::Azure => {
                let root = trimmed
                    .strip_suffix("/openai/v1")
                    .or_else(|| trimmed.strip_suffix("/openai"))
                    .unwrap_or(trimmed);
                (
                    root.to_owned(),
                    format!("{root}/openai/v1/chat/completions"),
                )
            }
            // Each request names its model and method in the path.
            ProviderKind::Bedrock | ProviderKind::Vertex => {
                (trimmed.to_owned(), format!("{trimmed}/"))
            }
        };
        if self.responses && !matches!(self.kind, ProviderKind::OpenAi | ProviderKind::Azure) {
            return Err(format!(
                "provider `{name}`: `responses` applies to kind = \"openai\" or \"azure\" only"
            ));
        }
        let responses_uri = match (self.responses, self.kind) {
            (false, _) => None,
            (true, ProviderKind::Azure) => Some(format!("{base}/openai/v1/responses")),
            (true, _) => Some(format!("{base}/responses")),
        };
        let responses_uri = match responses_uri.map(|u| u.parse::<Uri>()) {
            Some(Err(e)) => {
                return Err(format!(
                    "provider `{name}`: base_url `{}` is not a valid URL: {e}",
                    crate::error::redact_url(&self.base_url)
                ))
            }
            Some(Ok(u)) => Some(u),
            None => None,
        };
        let chat_uri: Uri = chat.parse().map_err(|e| {
            format!(
                "provider `{name}`: base_url `{}` is not a valid URL: {e}",
                crate::error::redact_url(&self.base_url)
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
                crate::error::redact_url(&self.base_url)
            ));
        }
        let auth = match &self.api_key {
            Some(key) => {
                let (header, value) = match self.kind {
                    ProviderKind::OpenAi => (AUTHORIZATION, format!("Bearer {key}")),
                    ProviderKind::Azure => (HeaderName::from_static("api-key"), key.clone()),
                    ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), key.clone()),
                    ProviderKind::Gemini => {
                        (HeaderName::from_static("x-goog-api-key"), key.clone())
                    }
                    // A Bedrock API key.
                    ProviderKind::Bedrock => (AUTHORIZATION, format!("Bearer {key}")),
                    ProviderKind::Vertex => {
                        return Err(format!(
                            "provider `{name}`: kind = \"vertex\" takes no API key: its tokens come from the service account"
                        ))
                    }
                };
                let mut v = HeaderValue::try_from(value).map_err(|_| {
                    format!(
                        "provider `{name}`: the API key holds characters not allowed in a header"
                    )
                })?;
                v.set_sensitive(true);
                Some((header, v))
            }
            None => None,
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let k = HeaderName::try_from(k.as_str())
                .map_err(|_| format!("provider `{name}`: `{k}` is not a valid header name"))?;
            if FRAMING_HEADERS.contains(&k.as_str()) {
                return Err(format!(
                    "provider `{name}`: header `{k}` cannot be configured (the gateway sets it: it \
                     frames the request or the connection)"
                ));
            }
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
        let signer = match (&self.kind, &self.region, &self.aws_credentials, &self.api_key) {
            (ProviderKind::Bedrock, Some(region), Some(c), None) => {
                if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
                    return Err(format!(
                        "provider `{name}`: the AWS access key id and secret access key must not be empty"
                    ));
                }
                Some(bedrock::Signer::new(region, c))
            }
            (ProviderKind::Bedrock, _, Some(_), Some(_)) => {
                return Err(format!(
                    "provider `{name}`: give AWS credentials or a Bedrock API key, not both"
                ))
            }
            (ProviderKind::Bedrock, _, None, None) => {
                return Err(format!(
                    "provider `{name}`: kind = \"bedrock\" needs AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or a Bedrock API key (`api_key_env`)"
                ))
            }
            _ => None,
        };
        let vertex = match (self.kind, self.project, self.service_account) {
            (ProviderKind::Vertex, Some(project), Some(account)) => Some(vertex::Vertex::new(
                project,
                self.region.clone().unwrap_or_default(),
                account,
            )),
            (ProviderKind::Vertex, None, _) => {
                return Err(format!("provider `{name}`: kind = \"vertex\" needs a `project`"))
            }
            (ProviderKind::Vertex, _, None) => {
                return Err(format!(
                    "provider `{name}`: kind = \"vertex\" needs a service account (`credentials_file` or GOOGLE_APPLICATION_CREDENTIALS)"
                ))
            }
            _ => None,
        };
        let mut secrets: Vec<String> = self.api_key.iter().cloned().collect();
        if let Some(c) = &self.aws_credentials {
            secrets.push(c.secret_access_key.clone());
            secrets.extend(c.session_token.iter().cloned());
        }
        secrets.extend(
            self.headers
                .iter()
                .map(|(_, v)| v.clone())
                .filter(|v| v.len() >= 8),
        );
        if let Some(user_info) = chat_uri
            .authority()
            .and_then(|a| a.as_str().rsplit_once('@'))
            .map(|(info, _)| info)
        {
            secrets.push(user_info.to_owned());
            if let Some((_, password)) = user_info.split_once(':') {
                secrets.push(password.to_owned());
            }
        }
        Ok(Provider {
            secrets: Secrets::new(secrets),
            name: Arc::from(name),
            kind: self.kind,
            base_url: base_url.clone(),
            base,
            chat_uri,
            responses_uri,
            api_version: self.api_version,
            api_key: self.api_key,
            auth,
            headers,
            timeouts: t,
            limiter: self
                .requests_per_minute
                .map(|n| governor::RateLimiter::direct(governor::Quota::per_minute(n))),
            requests_per_minute: self.requests_per_minute,
            signer,
            vertex,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use http_body::Body;

    use super::*;

    fn body_of(req: &mut Request<Full<Bytes>>) -> Bytes {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(req.body_mut()).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_request_body_goes_with_its_length() {
        for kind in [
            ProviderKind::OpenAi,
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
        ] {
            let provider = Arc::new(
                Provider::builder("p", kind, "http://127.0.0.1:9/v1")
                    .build()
                    .unwrap(),
            );
            let chat: ChatRequest = serde_json::from_str(
                r#"{"model":"public","messages":[{"role":"user","content":"hi é"}],"top_k":5}"#,
            )
            .unwrap();
            let mut req = provider.build_request(chat.clone(), "up", None).unwrap();
            let body = body_of(&mut req);
            assert_eq!(
                req.headers()[CONTENT_LENGTH],
                body.len().to_string().as_str()
            );
            if kind == ProviderKind::OpenAi {
                let mut sent = chat;
                sent.model = "up".into();
                assert_eq!(body, serde_json::to_vec(&sent).unwrap());
            }
        }
    }

    #[test]
    fn secrets_cover_the_key_the_header_values_and_the_url_credentials() {
        let p = Provider::builder(
            "p",
            ProviderKind::OpenAi,
            "http://svc:s3cret-pass@llm.internal:8000/v1",
        )
        .api_key(Some("plainkey0123".into()))
        .header("x-team-token", "tok-internal-abcdef123")
        .header("x-region", "eu")
        .build()
        .unwrap();
        let text = "plainkey0123 tok-internal-abcdef123 svc:s3cret-pass s3cret-pass eu";
        let clean = crate::error::scrub(text, p.secrets());
        assert_eq!(clean, "[REDACTED] [REDACTED] [REDACTED] [REDACTED] eu");
        assert_eq!(p.display_url(), "http://…@llm.internal:8000/v1");
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("plainkey"),
            "{debug}"
        );
    }

    #[test]
    fn configured_headers_replace_the_gateways_but_never_the_framing() {
        let provider = Arc::new(
            Provider::builder("p", ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
                .header("User-Agent", "team-app/2")
                .header("OpenAI-Organization", "org-1")
                .header("Host", "llm.internal")
                .build()
                .unwrap(),
        );
        let chat: ChatRequest = serde_json::from_str(
            r#"{"model":"public","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let req = provider.build_request(chat, "up", None).unwrap();
        assert_eq!(req.headers()[USER_AGENT], "team-app/2");
        assert_eq!(req.headers()["openai-organization"], "org-1");
        assert_eq!(req.headers()[http::header::HOST], "llm.internal");
        for name in [
            "Content-Length",
            "transfer-encoding",
            "Keep-Alive",
            "connection",
            "TE",
            "upgrade",
        ] {
            let err = Provider::builder("p", ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
                .header(name, "5")
                .build()
                .unwrap_err();
            assert!(
                err.contains(&format!(
                    "header `{}` cannot be configured",
                    name.to_ascii_lowercase()
                )),
                "{name}: {err}"
            );
        }
    }
}
