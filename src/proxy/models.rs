//! The catalog in OpenRouter's shapes: `GET /v1/models` (with its query filters),
//! `/v1/models/count`, `/v1/models/{author}/{slug}/endpoints` and `/v1/providers`.
//!
//! Prices are strings in USD per token. What the configuration does not say is listed as
//! OpenRouter lists an unknown: `null`, text in and out, the `Other` tokenizer. Each model also
//! carries the gateway's own `endpoints` list (each endpoint's live health), and the `object`
//! and `owned_by` of OpenAI's model object, so OpenAI's SDKs read the list too.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::facts::Pricing;
use crate::health::{Percentiles, RecentHealth};
use crate::model_rewrite::{Catalog, Endpoint, Model};
use crate::provider::PARAMETERS;

/// USD per million tokens → USD per token, as a decimal string without float noise.
pub(crate) fn per_token(per_million: f64) -> String {
    let s = format!("{:.15}", per_million / 1_000_000.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Prices as OpenRouter lists them; the cache prices only where configured
/// (`input_cache_write_1h`, the one-hour write price, is the gateway's own key).
#[derive(Serialize)]
struct Prices {
    prompt: String,
    completion: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_cache_read: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_cache_write: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_cache_write_1h: Option<String>,
}

impl Prices {
    fn of(p: &Pricing) -> Self {
        Prices {
            prompt: per_token(p.prompt_per_million),
            completion: per_token(p.completion_per_million),
            request: None,
            image: None,
            input_cache_read: p.cache_read_per_million.map(per_token),
            input_cache_write: p.cache_write_per_million.map(per_token),
            input_cache_write_1h: p.cache_write_1h_per_million.map(per_token),
        }
    }

    /// A model's listed prices: its cheapest endpoint's, with no charge per request or image.
    fn listed(p: &Pricing) -> Self {
        Prices {
            request: Some("0"),
            image: Some("0"),
            ..Prices::of(p)
        }
    }
}

#[derive(Serialize)]
struct Architecture<'a> {
    modality: String,
    input_modalities: Vec<&'a str>,
    output_modalities: Vec<&'a str>,
    tokenizer: &'a str,
    instruct_type: Option<&'a str>,
}

#[derive(Serialize)]
struct TopProvider {
    context_length: Option<u64>,
    max_completion_tokens: Option<u64>,
    is_moderated: bool,
}

#[derive(Serialize)]
struct Links {
    details: String,
}

/// OpenRouter's model object, with OpenAI's `object` and `owned_by` and the gateway's
/// `endpoints`.
#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    canonical_slug: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hugging_face_id: Option<&'a str>,
    name: &'a str,
    created: u64,
    description: &'a str,
    context_length: Option<u64>,
    architecture: Architecture<'a>,
    pricing: Prices,
    top_provider: TopProvider,
    per_request_limits: Option<()>,
    supported_parameters: Vec<&'a str>,
    default_parameters: Option<&'a Map<String, Value>>,
    supported_voices: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    knowledge_cutoff: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_date: Option<&'a str>,
    links: Links,
    object: &'static str,
    owned_by: &'a str,
    endpoints: Vec<GatewayEndpoint<'a>>,
}

/// One endpoint of a model, with its live health: the gateway's own listing.
#[derive(Serialize)]
struct GatewayEndpoint<'a> {
    provider_name: &'a str,
    model: &'a str,
    context_length: Option<u64>,
    max_completion_tokens: Option<u64>,
    pricing: Prices,
    supported_parameters: Vec<&'a str>,
    status: &'static str,
    uptime: Option<f64>,
    latency_ms: Option<u64>,
    latency_p95_ms: Option<u64>,
    throughput: Option<f64>,
}

/// The parameters an endpoint supports: its declared list, else its provider kind's.
fn endpoint_parameters(e: &Endpoint) -> Vec<&str> {
    match &e.supported_parameters {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => e.provider.kind().parameters().to_vec(),
    }
}

/// The parameters any of a model's endpoints supports, in OpenRouter's order (then the
/// endpoints' own names).
fn model_parameters(m: &Model) -> Vec<&str> {
    let all: Vec<Vec<&str>> = m.endpoints.iter().map(endpoint_parameters).collect();
    let mut out: Vec<&str> = PARAMETERS
        .iter()
        .copied()
        .filter(|p| all.iter().any(|list| list.contains(p)))
        .collect();
    for p in all.iter().flatten() {
        if !out.contains(p) {
            out.push(p);
        }
    }
    out
}

fn cheapest(m: &Model) -> &Endpoint {
    m.endpoints
        .iter()
        .min_by(|a, b| total(&a.pricing).total_cmp(&total(&b.pricing)))
        .expect("a catalog model has at least one endpoint")
}

fn total(p: &Pricing) -> f64 {
    p.prompt_per_million + p.completion_per_million
}

fn modalities(list: &Option<Vec<String>>) -> Vec<&str> {
    match list {
        Some(l) if !l.is_empty() => l.iter().map(String::as_str).collect(),
        _ => vec!["text"],
    }
}

fn model_object<'a>(m: &'a Model, now: tokio::time::Instant) -> ModelObject<'a> {
    let info = &m.info;
    let top = cheapest(m);
    let (inputs, outputs) = (
        modalities(&info.input_modalities),
        modalities(&info.output_modalities),
    );
    let endpoints = m
        .endpoints
        .iter()
        .map(|e| {
            let h = e.health.snapshot(now);
            GatewayEndpoint {
                provider_name: e.provider.name(),
                model: &e.model,
                context_length: e.context_length.or(m.context_length),
                max_completion_tokens: e.max_output_tokens,
                pricing: Prices::of(&e.pricing),
                supported_parameters: endpoint_parameters(e),
                status: if h.cooling { "cooling" } else { "ok" },
                uptime: (h.samples > 0).then(|| ((1.0 - h.error_rate) * 1000.0).round() / 10.0),
                latency_ms: h.latency.map(|d| d.as_millis() as u64),
                latency_p95_ms: h.latency_p95.map(|d| d.as_millis() as u64),
                throughput: h.throughput.map(|t| (t * 10.0).round() / 10.0),
            }
        })
        .collect();
    ModelObject {
        id: &m.id,
        canonical_slug: info.canonical_slug.as_deref().unwrap_or(&m.id),
        hugging_face_id: info.hugging_face_id.as_deref(),
        name: &m.name,
        created: info.created.unwrap_or(0),
        description: info.description.as_deref().unwrap_or(""),
        context_length: m.context_length.or(top.context_length),
        architecture: Architecture {
            modality: format!("{}->{}", inputs.join("+"), outputs.join("+")),
            input_modalities: inputs,
            output_modalities: outputs,
            tokenizer: info.tokenizer.as_deref().unwrap_or("Other"),
            instruct_type: info.instruct_type.as_deref(),
        },
        pricing: Prices::listed(&top.pricing),
        top_provider: TopProvider {
            context_length: top.context_length.or(m.context_length),
            max_completion_tokens: top.max_output_tokens,
            is_moderated: false,
        },
        per_request_limits: None,
        supported_parameters: model_parameters(m),
        default_parameters: info.default_parameters.as_ref(),
        supported_voices: None,
        knowledge_cutoff: info.knowledge_cutoff.as_deref(),
        expiration_date: info.expiration_date.as_deref(),
        links: Links {
            details: format!("/api/v1/models/{}/endpoints", m.id),
        },
        object: "model",
        owned_by: m.id.split('/').next().unwrap_or(""),
        endpoints,
    }
}

/// The query of `GET /v1/models`: OpenRouter's filters, a comma-separated list where it
/// takes several values. Unknown keys are ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct ModelQuery {
    supported_parameters: Option<String>,
    input_modalities: Option<String>,
    output_modalities: Option<String>,
    q: Option<String>,
    context: Option<u64>,
    min_price: Option<f64>,
    max_price: Option<f64>,
    arch: Option<String>,
    model_authors: Option<String>,
    providers: Option<String>,
    sort: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

fn list(s: &Option<String>) -> Vec<&str> {
    s.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl ModelQuery {
    /// Reads the query of `uri` (none: no filters); a malformed one is a 400.
    pub(crate) fn of(uri: &http::Uri) -> Result<Self, crate::Error> {
        axum::extract::Query::<ModelQuery>::try_from_uri(uri)
            .map(|q| q.0)
            .map_err(|e| {
                crate::Error::invalid_request(format!("invalid query: {}", e.body_text()), None)
            })
    }

    fn keeps(&self, m: &Model) -> bool {
        let info = &m.info;
        let params = model_parameters(m);
        if !list(&self.supported_parameters)
            .iter()
            .all(|p| params.contains(p))
        {
            return false;
        }
        let inputs = modalities(&info.input_modalities);
        if !list(&self.input_modalities)
            .iter()
            .all(|p| inputs.contains(p))
        {
            return false;
        }
        // OpenRouter lists text models unless asked for others (or `all`).
        let outputs = modalities(&info.output_modalities);
        let wanted = match list(&self.output_modalities) {
            w if w.is_empty() => vec!["text"],
            w => w,
        };
        if !wanted.contains(&"all") && !wanted.iter().any(|w| outputs.contains(w)) {
            return false;
        }
        if let Some(q) = self.q.as_deref().map(str::to_lowercase) {
            let hay = [
                &*m.id,
                m.name.as_str(),
                info.description.as_deref().unwrap_or(""),
            ];
            if !hay.iter().any(|h| h.to_lowercase().contains(&q)) {
                return false;
            }
        }
        if let Some(min) = self.context {
            if m.context_length.or(cheapest(m).context_length).unwrap_or(0) < min {
                return false;
            }
        }
        let prompt = cheapest(m).pricing.prompt_per_million;
        if self.min_price.is_some_and(|p| prompt < p) || self.max_price.is_some_and(|p| prompt > p)
        {
            return false;
        }
        let arch = list(&self.arch);
        if !arch.is_empty() {
            let tokenizer = info.tokenizer.as_deref().unwrap_or("Other");
            if !arch.iter().any(|a| a.eq_ignore_ascii_case(tokenizer)) {
                return false;
            }
        }
        let authors = list(&self.model_authors);
        if !authors.is_empty() && !authors.contains(&m.id.split('/').next().unwrap_or("")) {
            return false;
        }
        let providers = list(&self.providers);
        if !providers.is_empty()
            && !m
                .endpoints
                .iter()
                .any(|e| providers.contains(&e.provider.name()))
        {
            return false;
        }
        true
    }

    fn sort(&self, models: &mut [&Model], now: tokio::time::Instant) {
        let throughput = |m: &Model| {
            m.endpoints
                .iter()
                .filter_map(|e| e.health.snapshot(now).throughput)
                .fold(0.0, f64::max)
        };
        let latency = |m: &Model| {
            m.endpoints
                .iter()
                .filter_map(|e| e.health.snapshot(now).latency)
                .min()
                .unwrap_or(std::time::Duration::MAX)
        };
        match self.sort.as_deref() {
            Some("pricing-low-to-high") => models.sort_by(|a, b| {
                total(&cheapest(a).pricing).total_cmp(&total(&cheapest(b).pricing))
            }),
            Some("pricing-high-to-low") => models.sort_by(|a, b| {
                total(&cheapest(b).pricing).total_cmp(&total(&cheapest(a).pricing))
            }),
            Some("context-high-to-low") => {
                models.sort_by_key(|m| std::cmp::Reverse(m.context_length.unwrap_or(0)))
            }
            Some("newest") => {
                models.sort_by_key(|m| std::cmp::Reverse(m.info.created.unwrap_or(0)))
            }
            Some("throughput-high-to-low") => {
                models.sort_by(|a, b| throughput(b).total_cmp(&throughput(a)))
            }
            Some("latency-low-to-high") => models.sort_by_key(|m| latency(m)),
            // Popularity and benchmarks the gateway does not know: the configured order.
            _ => {}
        }
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
    total_count: usize,
    links: ListLinks,
}

#[derive(Serialize)]
struct ListLinks {
    next: Option<String>,
}

fn to_json(v: &impl Serialize) -> Bytes {
    // Strings, numbers and maps of them: serialising into memory cannot fail.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// The models the query keeps, sorted.
fn selected<'a>(
    catalog: &'a Catalog,
    query: &ModelQuery,
    now: tokio::time::Instant,
) -> Vec<&'a Model> {
    let mut models: Vec<&Model> = catalog.models().iter().filter(|m| query.keeps(m)).collect();
    query.sort(&mut models, now);
    models
}

/// `GET /v1/models`.
pub(crate) fn render(catalog: &Catalog, query: &ModelQuery) -> Bytes {
    let now = tokio::time::Instant::now();
    let models = selected(catalog, query, now);
    let total_count = models.len();
    // Without `offset` and `limit`, the whole list (as OpenRouter does).
    let paged = query.offset.is_some() || query.limit.is_some();
    let offset = query.offset.unwrap_or(0).min(total_count);
    let limit = query.limit.unwrap_or(500).clamp(1, 1000);
    let end = if paged {
        (offset + limit).min(total_count)
    } else {
        total_count
    };
    let next =
        (paged && end < total_count).then(|| format!("/api/v1/models?offset={end}&limit={limit}"));
    to_json(&ModelList {
        object: "list",
        data: models[offset..end]
            .iter()
            .map(|m| model_object(m, now))
            .collect(),
        total_count,
        links: ListLinks { next },
    })
}

/// `GET /v1/models/count`: how many models the same filters keep.
pub(crate) fn count(catalog: &Catalog, query: &ModelQuery) -> Bytes {
    #[derive(Serialize)]
    struct Count {
        data: CountData,
    }
    #[derive(Serialize)]
    struct CountData {
        count: usize,
    }
    let now = tokio::time::Instant::now();
    to_json(&Count {
        data: CountData {
            count: selected(catalog, query, now).len(),
        },
    })
}

/// OpenRouter's `PublicEndpoint`.
#[derive(Serialize)]
struct PublicEndpoint<'a> {
    name: String,
    model_id: &'a str,
    model_name: &'a str,
    context_length: u64,
    pricing: Prices,
    provider_name: &'a str,
    tag: &'a str,
    quantization: Option<&'a str>,
    max_completion_tokens: Option<u64>,
    max_prompt_tokens: Option<u64>,
    supported_parameters: Vec<&'a str>,
    status: i32,
    uptime_last_5m: Option<f64>,
    uptime_last_30m: Option<f64>,
    uptime_last_1d: Option<f64>,
    latency_last_30m: Option<Stats>,
    throughput_last_30m: Option<Stats>,
    supports_implicit_caching: bool,
    supports_tool_choice: ToolChoiceSupport,
    supports_diarization: bool,
    native_tools: Map<String, Value>,
    service_tier: Option<()>,
    // The gateway's own.
    data_collection: Option<crate::model_rewrite::DataCollection>,
    zdr: Option<bool>,
}

#[derive(Serialize)]
struct Stats {
    p50: f64,
    p75: f64,
    p90: f64,
    p99: f64,
}

impl From<Percentiles> for Stats {
    fn from(p: Percentiles) -> Self {
        let r = |v: f64| (v * 10.0).round() / 10.0;
        Stats {
            p50: r(p.p50),
            p75: r(p.p75),
            p90: r(p.p90),
            p99: r(p.p99),
        }
    }
}

#[derive(Serialize)]
struct ToolChoiceSupport {
    auto: bool,
    none: bool,
    required: bool,
    function: bool,
}

#[derive(Serialize)]
struct EndpointList<'a> {
    data: EndpointListData<'a>,
}

#[derive(Serialize)]
struct EndpointListData<'a> {
    id: &'a str,
    name: &'a str,
    created: u64,
    description: &'a str,
    architecture: Architecture<'a>,
    endpoints: Vec<PublicEndpoint<'a>>,
}

fn public_endpoint<'a>(
    m: &'a Model,
    e: &'a Endpoint,
    now: tokio::time::Instant,
) -> PublicEndpoint<'a> {
    let recent: RecentHealth = e.health.recent(now);
    let snapshot = e.health.snapshot(now);
    let params = endpoint_parameters(e);
    let tools = params.contains(&"tool_choice");
    PublicEndpoint {
        name: format!("{} | {}", e.provider.name(), e.model),
        model_id: &m.id,
        model_name: &m.name,
        context_length: e.context_length.or(m.context_length).unwrap_or(0),
        pricing: Prices::of(&e.pricing),
        provider_name: e.provider.name(),
        tag: e.provider.name(),
        quantization: e.quantization.as_deref(),
        max_completion_tokens: e.max_output_tokens,
        max_prompt_tokens: None,
        supported_parameters: params,
        // OpenRouter's codes: 0 serving, -1 down for a while.
        status: if snapshot.cooling { -1 } else { 0 },
        uptime_last_5m: recent.uptime_5m,
        uptime_last_30m: recent.uptime_30m,
        uptime_last_1d: recent.uptime_1d,
        latency_last_30m: recent.latency_30m.map(Stats::from),
        throughput_last_30m: recent.throughput_30m.map(Stats::from),
        supports_implicit_caching: false,
        supports_tool_choice: ToolChoiceSupport {
            auto: tools,
            none: tools,
            required: tools,
            function: tools,
        },
        supports_diarization: false,
        native_tools: Map::new(),
        service_tier: None,
        data_collection: e.data_collection,
        zdr: e.zdr,
    }
}

/// `GET /v1/models/{author}/{slug}/endpoints`: the model's endpoints with their live health;
/// `None` for a model not in the catalog.
pub(crate) fn endpoints(catalog: &Catalog, id: &str) -> Option<Bytes> {
    let m = catalog.models().iter().find(|m| &*m.id == id)?;
    let now = tokio::time::Instant::now();
    let object = model_object(m, now);
    Some(to_json(&EndpointList {
        data: EndpointListData {
            id: &m.id,
            name: &m.name,
            created: object.created,
            description: object.description,
            architecture: object.architecture,
            endpoints: m
                .endpoints
                .iter()
                .map(|e| public_endpoint(m, e, now))
                .collect(),
        },
    }))
}

/// `GET /v1/providers`: the configured providers.
pub(crate) fn providers(catalog: &Catalog) -> Bytes {
    #[derive(Serialize)]
    struct Providers<'a> {
        data: Vec<ProviderObject<'a>>,
    }
    #[derive(Serialize)]
    struct ProviderObject<'a> {
        name: &'a str,
        slug: &'a str,
        kind: &'static str,
        privacy_policy_url: Option<()>,
        terms_of_service_url: Option<()>,
        status_page_url: Option<()>,
        models: usize,
    }
    let mut served: HashMap<&str, usize> = HashMap::new();
    for m in catalog.models() {
        for e in &m.endpoints {
            *served.entry(e.provider.name()).or_default() += 1;
        }
    }
    to_json(&Providers {
        data: catalog
            .providers()
            .iter()
            .map(|p| ProviderObject {
                name: p.name(),
                slug: p.name(),
                kind: p.kind().as_str(),
                privacy_policy_url: None,
                terms_of_service_url: None,
                status_page_url: None,
                models: served.get(p.name()).copied().unwrap_or(0),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::per_token;

    #[test]
    fn prices_per_token_as_strings() {
        assert_eq!(per_token(3.0), "0.000003");
        assert_eq!(per_token(15.0), "0.000015");
        assert_eq!(per_token(0.27), "0.00000027");
        assert_eq!(per_token(0.0), "0");
        assert_eq!(per_token(1.1), "0.0000011");
    }
}
