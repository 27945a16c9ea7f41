//! The request's routing preferences: OpenRouter's `provider` object and the model variants.

use serde::Deserialize;

use super::DataCollection;
use crate::chat::{ChatRequest, ResponseFormat};
use crate::Error;

/// How to order a model's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Cheapest first (prompt plus completion price).
    Price,
    /// Highest measured output tokens per second first (unmeasured last).
    Throughput,
    /// Lowest measured time to first token first (unmeasured last).
    Latency,
}

impl Sort {
    fn parse(s: &str) -> Option<Sort> {
        match s {
            "price" => Some(Sort::Price),
            "throughput" => Some(Sort::Throughput),
            "latency" => Some(Sort::Latency),
            _ => None,
        }
    }
}

/// `provider.max_price`: USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MaxPrice {
    /// Highest prompt price accepted.
    pub prompt: Option<f64>,
    /// Highest completion price accepted.
    pub completion: Option<f64>,
}

/// The request's `provider` object (OpenRouter's provider routing), plus the variant's sort.
///
/// Keys this gateway does not act on (`enforce_distillable_text`, …) are accepted and
/// ignored, as a provider ignores an unknown sampling parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderPrefs {
    /// Providers to try first, in this order; balancing is off.
    pub order: Option<Vec<String>>,
    /// Only these providers.
    pub only: Option<Vec<String>>,
    /// Never these providers.
    pub ignore: Option<Vec<String>>,
    /// `false`: no provider beyond `order` (or beyond the first choice without `order`).
    pub allow_fallbacks: bool,
    /// Order by price, throughput or latency; balancing is off.
    pub sort: Option<Sort>,
    /// Endpoints priced above this are left out.
    pub max_price: Option<MaxPrice>,
    /// Only endpoints that declare support for every parameter the request uses.
    pub require_parameters: bool,
    /// `deny`: only endpoints that declare they keep no prompts for training.
    pub data_collection: Option<DataCollection>,
    /// Only endpoints that declare zero data retention.
    pub zdr: bool,
    /// Only endpoints that declare one of these precisions.
    pub quantizations: Option<Vec<String>>,
}

impl Default for ProviderPrefs {
    fn default() -> Self {
        ProviderPrefs {
            order: None,
            only: None,
            ignore: None,
            allow_fallbacks: true,
            sort: None,
            max_price: None,
            require_parameters: false,
            data_collection: None,
            zdr: false,
            quantizations: None,
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    order: Option<Vec<String>>,
    #[serde(default)]
    only: Option<Vec<String>>,
    #[serde(default)]
    ignore: Option<Vec<String>>,
    #[serde(default)]
    allow_fallbacks: Option<bool>,
    #[serde(default)]
    sort: Option<RawSort>,
    #[serde(default)]
    max_price: Option<RawMaxPrice>,
    #[serde(default)]
    require_parameters: Option<bool>,
    #[serde(default)]
    data_collection: Option<DataCollection>,
    #[serde(default)]
    zdr: Option<bool>,
    #[serde(default)]
    quantizations: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSort {
    By(String),
    Object { by: String },
}

#[derive(Deserialize)]
struct RawMaxPrice {
    #[serde(default)]
    prompt: Option<Price>,
    #[serde(default)]
    completion: Option<Price>,
    // Per request and per image: no endpoint of this gateway charges either, so any bound
    // holds. Read, to refuse a malformed one.
    #[serde(default)]
    request: Option<Price>,
    #[serde(default)]
    image: Option<Price>,
}

/// A price as OpenRouter takes it: a number or a decimal string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Price {
    Number(f64),
    Text(String),
}

impl Price {
    fn value(&self) -> Option<f64> {
        match self {
            Price::Number(n) => Some(*n),
            Price::Text(t) => t.trim().parse().ok(),
        }
    }
}

impl ProviderPrefs {
    /// Reads the request's `provider` object (absent or `null`: the defaults). A wrong type
    /// is a 400 naming the field (`provider.order`, …).
    pub fn from_request(req: &ChatRequest) -> Result<Self, Error> {
        let Some(v) = req.provider.as_ref().filter(|v| !v.is_null()) else {
            return Ok(ProviderPrefs::default());
        };
        if !v.is_object() {
            return Err(Error::invalid_request(
                "`provider` must be an object",
                Some("provider".into()),
            ));
        }
        let raw: Raw = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let param = if path == "." || path.is_empty() {
                "provider".to_owned()
            } else {
                format!("provider.{path}")
            };
            Error::invalid_request(format!("`{param}`: {}", e.inner()), Some(param))
        })?;
        let sort = match raw.sort {
            None => None,
            Some(RawSort::By(s)) | Some(RawSort::Object { by: s }) => {
                Some(Sort::parse(&s).ok_or_else(|| {
                    Error::invalid_request(
                        format!(
                            "`provider.sort` must be \"price\", \"throughput\" or \"latency\", not `{s}`"
                        ),
                        Some("provider.sort".into()),
                    )
                })?)
            }
        };
        let max_price = match raw.max_price {
            None => None,
            Some(m) => {
                let read = |name: &str, p: &Option<Price>| {
                    match p {
                    None => Ok(None),
                    Some(p) => match p.value() {
                        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
                        _ => Err(Error::invalid_request(
                            format!("`provider.max_price.{name}` must be a price of at least 0 (USD per million tokens)"),
                            Some(format!("provider.max_price.{name}")),
                        )),
                    },
                }
                };
                let (prompt, completion) = (
                    read("prompt", &m.prompt)?,
                    read("completion", &m.completion)?,
                );
                read("request", &m.request)?;
                read("image", &m.image)?;
                Some(MaxPrice { prompt, completion })
            }
        };
        Ok(ProviderPrefs {
            order: raw.order,
            only: raw.only,
            ignore: raw.ignore,
            allow_fallbacks: raw.allow_fallbacks.unwrap_or(true),
            sort,
            max_price,
            require_parameters: raw.require_parameters.unwrap_or(false),
            data_collection: raw.data_collection,
            zdr: raw.zdr.unwrap_or(false),
            quantizations: raw.quantizations,
        })
    }

    /// Whether the endpoints are balanced by price (no `order`, no `sort`).
    pub fn balanced(&self) -> bool {
        self.order.is_none() && self.sort.is_none()
    }
}

/// A model id's variant suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `:floor`: cheapest first.
    Floor,
    /// `:nitro`: fastest first.
    Nitro,
    /// `:free`: zero-priced endpoints only.
    Free,
    /// `:thinking`: reasoning on.
    Thinking,
}

impl Variant {
    /// Splits `id:variant`; `None` when the suffix is not a variant this gateway knows.
    pub fn split(id: &str) -> Option<(&str, Variant)> {
        let (base, suffix) = id.rsplit_once(':')?;
        let v = match suffix {
            "floor" => Variant::Floor,
            "nitro" => Variant::Nitro,
            "free" => Variant::Free,
            "thinking" => Variant::Thinking,
            _ => return None,
        };
        (!base.is_empty()).then_some((base, v))
    }

    /// The suffix, with its colon.
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Floor => ":floor",
            Variant::Nitro => ":nitro",
            Variant::Free => ":free",
            Variant::Thinking => ":thinking",
        }
    }

    /// OpenRouter's variants this gateway does not serve (`:online` searches the web,
    /// `:exacto` and `:extended` pick OpenRouter's own endpoints): the suffix of `id`, if it
    /// is one of them.
    pub fn refused(id: &str) -> Option<&str> {
        let (base, suffix) = id.rsplit_once(':')?;
        (!base.is_empty() && matches!(suffix, "online" | "exacto" | "extended")).then_some(suffix)
    }
}

/// The parameters a request uses that an endpoint may or may not support, by their
/// OpenRouter `supported_parameters` names.
pub fn used_parameters(req: &ChatRequest) -> Vec<&'static str> {
    let mut used = Vec::new();
    let mut add = |present: bool, name: &'static str| {
        if present {
            used.push(name);
        }
    };
    add(req.tools.as_ref().is_some_and(|t| !t.is_empty()), "tools");
    add(req.tool_choice.is_some(), "tool_choice");
    add(req.parallel_tool_calls.is_some(), "parallel_tool_calls");
    add(req.response_format.is_some(), "response_format");
    add(
        matches!(req.response_format, Some(ResponseFormat::JsonSchema { .. })),
        "structured_outputs",
    );
    add(
        req.reasoning_effort.is_some()
            || req.reasoning.is_some()
            || req.include_reasoning.is_some(),
        "reasoning",
    );
    add(req.seed.is_some(), "seed");
    add(req.logprobs == Some(true), "logprobs");
    add(req.top_logprobs.is_some(), "top_logprobs");
    add(req.stop.is_some(), "stop");
    add(req.temperature.is_some(), "temperature");
    add(req.top_p.is_some(), "top_p");
    add(req.presence_penalty.is_some(), "presence_penalty");
    add(req.frequency_penalty.is_some(), "frequency_penalty");
    add(req.extra.contains_key("top_k"), "top_k");
    add(req.extra.contains_key("min_p"), "min_p");
    add(req.extra.contains_key("logit_bias"), "logit_bias");
    add(
        req.max_tokens.is_some() || req.max_completion_tokens.is_some(),
        "max_tokens",
    );
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn prefs(v: Value) -> Result<ProviderPrefs, Error> {
        ProviderPrefs::from_request(&ChatRequest {
            provider: Some(v),
            ..Default::default()
        })
    }

    #[test]
    fn reads_openrouter_provider_objects() {
        let p = prefs(json!({
            "order": ["a", "b"], "allow_fallbacks": false, "sort": "throughput",
            "max_price": {"prompt": 1, "completion": 2.5}, "require_parameters": true,
            "data_collection": "deny", "quantizations": ["fp8"]
        }))
        .unwrap();
        assert_eq!(
            p.order.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert!(!p.allow_fallbacks);
        assert_eq!(p.sort, Some(Sort::Throughput));
        assert_eq!(
            p.max_price,
            Some(MaxPrice {
                prompt: Some(1.0),
                completion: Some(2.5)
            })
        );
        assert!(p.require_parameters);
        assert!(!p.balanced());
        assert_eq!(
            prefs(json!({"sort": {"by": "latency"}})).unwrap().sort,
            Some(Sort::Latency)
        );
        assert_eq!(prefs(Value::Null).unwrap(), ProviderPrefs::default());
        assert!(ProviderPrefs::default().balanced());
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (v, param) in [
            (json!({"order": "a"}), "provider.order"),
            (json!({"only": [1]}), "provider.only[0]"),
            (json!({"sort": "fastest"}), "provider.sort"),
            (
                json!({"max_price": {"prompt": -1}}),
                "provider.max_price.prompt",
            ),
            (json!({"allow_fallbacks": "no"}), "provider.allow_fallbacks"),
            (json!(["a"]), "provider"),
        ] {
            let e = prefs(v.clone()).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{v}");
            assert_eq!(e.param(), Some(param), "{v}: {}", e.message());
        }
    }

    #[test]
    fn variants() {
        assert_eq!(Variant::split("a/b:floor"), Some(("a/b", Variant::Floor)));
        assert_eq!(Variant::split("a/b:nitro"), Some(("a/b", Variant::Nitro)));
        assert_eq!(Variant::split("a/b:free"), Some(("a/b", Variant::Free)));
        assert_eq!(
            Variant::split("a/b:thinking"),
            Some(("a/b", Variant::Thinking))
        );
        assert_eq!(Variant::refused("a/b:online"), Some("online"));
        assert_eq!(Variant::refused("ollama/llama3:8b"), None);
        assert_eq!(Variant::split("ollama/llama3:8b"), None);
        assert_eq!(Variant::split(":free"), None);
    }

    #[test]
    fn used_parameters_of_a_request() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            "reasoning": {"effort": "high"}, "seed": 1, "top_k": 3
        }))
        .unwrap();
        assert_eq!(
            used_parameters(&req),
            [
                "tools",
                "response_format",
                "structured_outputs",
                "reasoning",
                "seed",
                "top_k"
            ]
        );
    }
}
