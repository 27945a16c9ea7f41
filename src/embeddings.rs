//! Embeddings: OpenAI's request and answer (`POST /v1/embeddings`), the core's part of them.
//!
//! An embeddings request goes through the same stack as a chat request: the edge
//! ([`EmbeddingsLayer`](crate::dialect::embeddings::EmbeddingsLayer)) reads it into a
//! [`ChatRequest`] that carries only what routing reads (`model`, `models`, `provider`) and
//! puts the request itself beside it as the [`Embeddings`] fact. Keys, limits, routing,
//! fallback and metering then apply unchanged; [`Dispatch`](crate::dispatch::Dispatch) sends
//! the request in the serving provider's API and
//! [`StreamNormalize`](crate::stream_normalize::StreamNormalize) writes the answer back in
//! OpenAI's shape, with the usage priced at the endpoint's prompt price.
//!
//! - `openai` and `azure` providers get OpenAI's fields (`input`, `encoding_format`,
//!   `dimensions`, `user`) with the upstream model, and any other field of the request that
//!   the endpoint's `supported_parameters` lists (`input_type` for a host that takes it); the
//!   gateway's own (`models`, `provider`, `session_id`, …) never go. Their answer comes back
//!   with only `model` and the usage's `cost` changed.
//! - `gemini` providers get `batchEmbedContents`; Gemini reports no token counts, so the
//!   usage is estimated (a token per 4 bytes of input).
//! - `bedrock` providers get `InvokeModel` in the body of the model's family (Amazon Titan,
//!   Cohere); `vertex` providers get `predict`.
//! - `anthropic` providers have no embeddings API: the attempt is refused with a 400 and
//!   fallback moves on to the next endpoint.
//!
//! Vectors a provider returns as numbers are written as numbers (`encoding_format: "float"`,
//! the default) or as the base64 of their little-endian `f32`s (`"base64"`, what the official
//! Python SDK asks for).

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::chat::{ChatRequest, Usage};
use crate::Error;

/// An embeddings request, as the client sends it (OpenAI's fields, and OpenRouter's routing
/// controls `models` and `provider`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct EmbeddingsRequest {
    /// The model id the client asked for.
    pub model: String,
    /// What to embed.
    #[serde(default)]
    pub input: Option<Input>,
    /// How vectors are written in the answer.
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// The length of each vector, for models that can shorten theirs.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// The end user, passed on to providers that take it.
    #[serde(default)]
    pub user: Option<String>,
    /// Models to fall back to, in order.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Provider preferences (`order`, `only`, `ignore`, `sort`, …).
    #[serde(default)]
    pub provider: Option<Value>,
    /// Every other field: sent on only to an endpoint whose `supported_parameters` lists it.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The fields of OpenAI's embeddings API, as sent upstream.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    input: &'a Input,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<EncodingFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

/// What to embed: a text, texts, or token ids (one list, or one per input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One input as token ids.
    Tokens(Vec<u32>),
    /// Several inputs as token ids.
    TokenLists(Vec<Vec<u32>>),
}

impl Input {
    /// How many vectors the answer holds.
    pub fn len(&self) -> usize {
        match self {
            Input::Text(_) | Input::Tokens(_) => 1,
            Input::Texts(v) => v.len(),
            Input::TokenLists(v) => v.len(),
        }
    }

    /// True when there is nothing to embed (an empty list).
    pub fn is_empty(&self) -> bool {
        match self {
            Input::Text(_) => false,
            Input::Tokens(t) => t.is_empty(),
            Input::Texts(v) => v.is_empty(),
            Input::TokenLists(v) => v.is_empty() || v.iter().any(Vec::is_empty),
        }
    }

    /// The inputs as texts; `None` when they are token ids (which only a provider of the
    /// tokenizer's own can read).
    pub fn texts(&self) -> Option<Vec<&str>> {
        match self {
            Input::Text(t) => Some(vec![t.as_str()]),
            Input::Texts(v) => Some(v.iter().map(String::as_str).collect()),
            Input::Tokens(_) | Input::TokenLists(_) => None,
        }
    }

    /// The input's tokens, estimated where a provider does not count them: token ids as they
    /// are, texts at a token per 4 bytes.
    pub fn estimated_tokens(&self) -> u64 {
        let text = |t: &str| (t.len() as u64).div_ceil(4).max(1);
        match self {
            Input::Text(t) => text(t),
            Input::Texts(v) => v.iter().map(|t| text(t)).sum(),
            Input::Tokens(t) => t.len() as u64,
            Input::TokenLists(v) => v.iter().map(|t| t.len() as u64).sum(),
        }
    }
}

/// How vectors are written in the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// The base64 of the vector's little-endian `f32`s.
    Base64,
}

/// The fact an embeddings request carries through the stack (a request extension).
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// The request.
    pub request: Arc<EmbeddingsRequest>,
}

impl EmbeddingsRequest {
    /// Checks what parsing cannot: there is input, and `dimensions` is not 0. A `400` naming
    /// the field otherwise.
    pub fn check(&self) -> Result<(), Error> {
        let invalid = |param: &str, message: &str| {
            Error::invalid_request(message.to_owned(), Some(param.to_owned()))
        };
        match &self.input {
            None => Err(invalid("input", "`input` is required")),
            Some(i) if i.is_empty() => Err(invalid(
                "input",
                "`input` must not be empty (nor hold an empty list of tokens)",
            )),
            Some(_) if self.dimensions == Some(0) => {
                Err(invalid("dimensions", "`dimensions` must be at least 1"))
            }
            Some(_) => Ok(()),
        }
    }
}

impl Embeddings {
    /// The core's request for a checked embeddings request (what routing reads: `model`,
    /// `models`, `provider`; never streamed), and the fact.
    pub fn new(req: EmbeddingsRequest) -> (ChatRequest, Embeddings) {
        let mut chat = ChatRequest::default();
        chat.model.clone_from(&req.model);
        chat.models.clone_from(&req.models);
        chat.provider.clone_from(&req.provider);
        chat.stream = Some(false);
        (
            chat,
            Embeddings {
                request: Arc::new(req),
            },
        )
    }

    /// The body for a provider of OpenAI's API: OpenAI's fields with `model`, and the other
    /// fields `supported` lists.
    pub fn openai_body(&self, model: &str, supported: Option<&[String]>) -> Result<Vec<u8>, Error> {
        let r = &self.request;
        let extra = r
            .extra
            .iter()
            .filter(|(k, _)| supported.is_some_and(|s| s.iter().any(|p| p == *k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let body = OpenAiBody {
            model,
            input: self.input(),
            encoding_format: r.encoding_format,
            dimensions: r.dimensions,
            user: r.user.as_deref(),
            extra,
        };
        serde_json::to_vec(&body)
            .map_err(|e| Error::internal(format!("cannot serialise the request: {e}")))
    }

    /// The request's input (present in a checked request).
    pub fn input(&self) -> &Input {
        const NONE: &Input = &Input::Texts(Vec::new());
        self.request.input.as_ref().unwrap_or(NONE)
    }

    /// How the answer's vectors are written.
    pub fn format(&self) -> EncodingFormat {
        self.request.encoding_format.unwrap_or_default()
    }
}

/// A vector as the answer carries it.
pub fn encode_vector(values: &[f32], format: EncodingFormat) -> Value {
    match format {
        EncodingFormat::Float => Value::Array(
            values
                .iter()
                .map(|v| {
                    serde_json::Number::from_f64(f64::from(*v)).map_or(Value::Null, Value::Number)
                })
                .collect(),
        ),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// OpenAI's embeddings answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbeddingsAnswer {
    /// The generation id, in the gateway's answer (as OpenRouter's answers carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `list`.
    #[serde(default)]
    pub object: String,
    /// One vector per input, in order.
    pub data: Vec<Embedding>,
    /// The model (the public id, in the gateway's answer).
    #[serde(default)]
    pub model: String,
    /// The tokens read (and their cost, in the gateway's answer).
    #[serde(default)]
    pub usage: Usage,
}

/// One vector of an [`EmbeddingsAnswer`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    #[serde(default)]
    pub object: String,
    /// The input it embeds.
    pub index: usize,
    /// Numbers, or base64 (kept as the provider wrote them).
    pub embedding: Box<RawValue>,
}

impl EmbeddingsAnswer {
    /// An answer of these vectors (each already encoded) for `model`.
    pub fn new(vectors: Vec<Value>, model: &str, usage: Usage) -> Result<Self, Error> {
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| {
                Ok(Embedding {
                    object: "embedding".into(),
                    index,
                    embedding: serde_json::value::to_raw_value(&v)
                        .map_err(|e| Error::internal(format!("cannot serialise a vector: {e}")))?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(EmbeddingsAnswer {
            id: None,
            object: "list".into(),
            data,
            model: model.to_owned(),
            usage,
        })
    }
}

/// The usage of an embeddings answer: prompt tokens only.
pub fn usage(prompt_tokens: u64) -> Usage {
    Usage {
        prompt_tokens,
        total_tokens: prompt_tokens,
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<(ChatRequest, Embeddings), Error> {
        let req: EmbeddingsRequest =
            serde_json::from_str(body).map_err(|e| Error::invalid_request(e.to_string(), None))?;
        req.check()?;
        Ok(Embeddings::new(req))
    }

    #[test]
    fn every_input_form_is_read() {
        for (input, n) in [
            (r#""hello""#, 1),
            (r#"["a","b","c"]"#, 3),
            (r#"[1,2,3]"#, 1),
            (r#"[[1,2],[3]]"#, 2),
        ] {
            let (chat, e) = read(&format!(r#"{{"model":"m","input":{input}}}"#)).unwrap();
            assert_eq!(chat.model, "m");
            assert_eq!(e.input().len(), n, "{input}");
        }
        let (chat, e) = read(
            r#"{"model":"m","input":"x","encoding_format":"base64","dimensions":8,"models":["n"],"provider":{"order":["p"]}}"#,
        )
        .unwrap();
        assert_eq!(e.format(), EncodingFormat::Base64);
        assert_eq!(e.request.dimensions, Some(8));
        assert_eq!(chat.models.as_deref(), Some(&["n".to_owned()][..]));
        assert!(chat.provider.is_some());
        assert!(!chat.is_stream());
    }

    #[test]
    fn a_missing_or_empty_input_is_a_400_naming_it() {
        for body in [
            r#"{"model":"m"}"#,
            r#"{"model":"m","input":[]}"#,
            r#"{"model":"m","input":[[1],[]]}"#,
        ] {
            let e = read(body).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert_eq!(e.param(), Some("input"), "{body}");
        }
        let e = read(r#"{"model":"m","input":"x","dimensions":0}"#).unwrap_err();
        assert_eq!(e.param(), Some("dimensions"));
    }

    #[test]
    fn only_openais_fields_and_the_declared_ones_go_upstream() {
        let (_, e) = read(
            r#"{"model":"m","input":["a"],"user":"u","models":["n"],"session_id":"s","input_type":"query"}"#,
        )
        .unwrap();
        let sent = |supported: Option<&[String]>| -> Value {
            serde_json::from_slice(&e.openai_body("up", supported).unwrap()).unwrap()
        };
        assert_eq!(
            sent(None),
            serde_json::json!({"model":"up","input":["a"],"user":"u"})
        );
        assert_eq!(
            sent(Some(&["input_type".to_owned()])),
            serde_json::json!({"model":"up","input":["a"],"user":"u","input_type":"query"})
        );
    }

    #[test]
    fn base64_is_the_little_endian_floats() {
        let v = encode_vector(&[1.0, -2.5], EncodingFormat::Base64);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let back: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, [1.0, -2.5]);
        assert_eq!(
            encode_vector(&[0.5], EncodingFormat::Float),
            serde_json::json!([0.5])
        );
    }
}
