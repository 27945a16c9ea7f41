use std::fmt::Write as _;
use std::sync::Arc;

use http::StatusCode;
use tokio::time::Instant;

use super::prefs::{used_parameters, ProviderPrefs, Sort, Variant};
use crate::chat::ChatRequest;
use crate::error::ErrorSource;
use crate::facts::{Hedge, Pricing, RoutePlan, Target};
use crate::health::EndpointHealth;
use crate::provider::Provider;
use crate::Error;

/// One endpoint of a model: a provider and the model name it knows, with prices.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The configured provider.
    pub provider: Arc<Provider>,
    /// The upstream model name.
    pub model: Arc<str>,
    /// Prices in USD per million tokens.
    pub pricing: Pricing,
    /// Context length at this endpoint, if it differs from the model's.
    pub context_length: Option<u64>,
    /// Largest output at this endpoint.
    pub max_output_tokens: Option<u64>,
    /// The request parameters this endpoint supports (OpenRouter's names: `tools`,
    /// `response_format`, `reasoning`, …); `None`: those of its provider's kind
    /// ([`ProviderKind::parameters`](crate::provider::ProviderKind::parameters)). A request's
    /// other parameters are dropped before it goes there; with `provider.require_parameters`
    /// the endpoint is left out instead.
    pub supported_parameters: Option<Arc<[String]>>,
    /// Whether the provider may keep prompts for training (`None`: undeclared).
    pub data_collection: Option<DataCollection>,
    /// Whether the provider keeps no data at all (`None`: undeclared).
    pub zdr: Option<bool>,
    /// The weights' precision (`fp8`, `bf16`, …; `None`: undeclared).
    pub quantization: Option<String>,
    /// Live health, shared by every request to this endpoint.
    pub health: Arc<EndpointHealth>,
}

/// An endpoint's data policy, as OpenRouter's `provider.data_collection` filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataCollection {
    /// The provider may keep prompts and train on them.
    Allow,
    /// It does not.
    Deny,
}

impl Endpoint {
    /// An endpoint with these prices, nothing else declared and a fresh health.
    pub fn new(provider: Arc<Provider>, model: impl Into<Arc<str>>, pricing: Pricing) -> Self {
        Endpoint {
            provider,
            model: model.into(),
            pricing,
            context_length: None,
            max_output_tokens: None,
            supported_parameters: None,
            data_collection: None,
            zdr: None,
            quantization: None,
            health: Arc::default(),
        }
    }

    fn target(&self, model: &Model, public_model: &Arc<str>) -> Target {
        Target {
            provider: self.provider.clone(),
            upstream_model: self.model.clone(),
            public_model: public_model.clone(),
            pricing: Some(self.pricing),
            max_output_tokens: self
                .max_output_tokens
                .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            health: self.health.clone(),
            hedge: model.hedge,
            supported_parameters: self.supported_parameters.clone(),
            context_length: self.context_length.or(model.context_length),
        }
    }
}

/// A model clients can ask for.
#[derive(Debug, Clone)]
pub struct Model {
    /// The id clients send.
    pub id: Arc<str>,
    /// A display name.
    pub name: String,
    /// The context length.
    pub context_length: Option<u64>,
    /// Where it can be served, in the order they were configured.
    pub endpoints: Vec<Endpoint>,
    /// Hedging of slow answers (off: `None`).
    pub hedge: Option<Hedge>,
    /// What the model listing says of it beyond routing.
    pub info: ModelInfo,
}

/// What `GET /v1/models` says of a model beyond what routing needs: OpenRouter's descriptive
/// fields, from the configuration. Absent ones are listed as OpenRouter lists an unknown
/// (`null`, text in and out, the `Other` tokenizer).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ModelInfo {
    /// A description.
    pub description: Option<String>,
    /// When the model was released, in seconds since the Unix epoch.
    pub created: Option<u64>,
    /// The permanent slug of this version (default: the id).
    pub canonical_slug: Option<String>,
    /// Its Hugging Face id, for open-weight models.
    pub hugging_face_id: Option<String>,
    /// What it reads: `text`, `image`, `file`, `audio`, `video` (default: text).
    pub input_modalities: Option<Vec<String>>,
    /// What it writes (default: text).
    pub output_modalities: Option<Vec<String>>,
    /// Its tokenizer family (`GPT`, `Claude`, `Gemini`, `Llama3`, …).
    pub tokenizer: Option<String>,
    /// Its instruction format, for completion-style prompts.
    pub instruct_type: Option<String>,
    /// The date its training data ends.
    pub knowledge_cutoff: Option<String>,
    /// The date it is withdrawn.
    pub expiration_date: Option<String>,
    /// Sampling defaults the model's authors recommend (`temperature`, `top_p`, …).
    pub default_parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Providers, models and aliases: what [`ModelRewriteLayer`](super::ModelRewriteLayer)
/// resolves a request's `model` against.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    /// The health of each provider's `<provider>/<model>` pass-through models.
    pass_through_health: Vec<Arc<PassThroughHealth>>,
    by_provider: crate::FastMap<String, usize>,
    models: Vec<Model>,
    by_model: crate::FastMap<String, usize>,
    aliases: crate::FastMap<String, String>,
}

/// The highest price an endpoint may have, in USD per million tokens.
const MAX_PRICE: f64 = 1_000_000.0;

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider. Names are unique.
    pub fn add_provider(&mut self, provider: Arc<Provider>) -> Result<(), String> {
        let name = provider.name().to_owned();
        if self.by_provider.contains_key(&name) {
            return Err(format!("provider `{name}` is configured twice"));
        }
        self.by_provider.insert(name, self.providers.len());
        self.providers.push(provider);
        self.pass_through_health.push(Arc::default());
        Ok(())
    }

    /// Adds a model. Ids are unique; every endpoint must name a provider added before.
    pub fn add_model(&mut self, model: Model) -> Result<(), String> {
        if model.id.is_empty() {
            return Err("a model has an empty id".into());
        }
        if self.by_model.contains_key(&*model.id) {
            return Err(format!("model `{}` is configured twice", model.id));
        }
        if model.endpoints.is_empty() {
            return Err(format!("model `{}` has no endpoints", model.id));
        }
        for e in &model.endpoints {
            if !self.by_provider.contains_key(e.provider.name()) {
                return Err(format!(
                    "model `{}`: provider `{}` is not configured",
                    model.id,
                    e.provider.name()
                ));
            }
            for (name, price) in e.pricing.named() {
                // Capped, so that any usage's cost (at most u64::MAX tokens) stays a finite
                // number: a spend store refuses an infinite one.
                if price.is_some_and(|p| !(p.is_finite() && (0.0..=MAX_PRICE).contains(&p))) {
                    return Err(format!(
                        "model `{}`: the {name} price must be between 0 and 1000000 (USD per million tokens)",
                        model.id
                    ));
                }
            }
        }
        self.by_model
            .insert(model.id.to_string(), self.models.len());
        self.models.push(model);
        Ok(())
    }

    /// Adds an alias for a model id (checked by [`Catalog::validate`]).
    pub fn add_alias(&mut self, alias: impl Into<String>, model: impl Into<String>) {
        self.aliases.insert(alias.into(), model.into());
    }

    /// Checks that every alias names a catalog model or a `<provider>/<model>` of a configured
    /// provider.
    pub fn validate(&self) -> Result<(), String> {
        for (alias, target) in &self.aliases {
            if self.by_model.contains_key(alias) {
                return Err(format!("alias `{alias}` shadows the model of the same id"));
            }
            if !self.by_model.contains_key(target) && self.pass_through(target).is_none() {
                return Err(format!("alias `{alias}` points to `{target}`, which is neither a model nor `<provider>/<model>`"));
            }
        }
        Ok(())
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// A provider by name.
    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_provider.get(name).map(|&i| &self.providers[i])
    }

    /// The models, in configuration order.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The health of a `<provider>/<model>` pass-through model (tracked for up to 1,024
    /// models per provider; beyond that, models nobody is using are forgotten).
    pub fn pass_through_health(&self, provider: &str, model: &str) -> Option<Arc<EndpointHealth>> {
        self.by_provider
            .get(provider)
            .map(|&i| self.pass_through_health[i].get(model))
    }

    /// Resolves a requested model id into a plan with no preferences: aliases first, then the
    /// catalog (endpoints by total price, cheapest first), then `<provider>/<model>`
    /// pass-through (cost unknown).
    pub fn resolve(&self, requested: &str) -> Result<RoutePlan, Error> {
        let req = ChatRequest {
            model: requested.to_owned(),
            provider: Some(serde_json::json!({"sort": "price"})),
            ..Default::default()
        };
        self.plan(&req, Instant::now())
    }

    /// Resolves a request into its plan: `model` (alias, catalog id, `:floor` / `:nitro` /
    /// `:free` variant, `<provider>/<model>`), then each of `models: [...]` as fallbacks, each
    /// model's endpoints filtered and ordered by the `provider` preferences. Health at `now`
    /// puts endpoints that are cooling down last.
    ///
    /// Errors: an unknown model is a 404; preferences that leave nothing are a 404 that says
    /// which filter removed which endpoint; malformed preferences are a 400.
    pub fn plan(&self, req: &ChatRequest, now: Instant) -> Result<RoutePlan, Error> {
        self.plan_with(req, &mut || now)
    }

    /// [`plan`](Self::plan) with the time read by `now`, only if some endpoint's health needs
    /// it (a cool-down was set): most requests never read the clock here.
    pub(crate) fn plan_with(
        &self,
        req: &ChatRequest,
        now: &mut dyn FnMut() -> Instant,
    ) -> Result<RoutePlan, Error> {
        let prefs = ProviderPrefs::from_request(req)?;
        if let Some(route) = req.route.as_deref() {
            // OpenRouter's deprecated spelling of what `models` does anyway.
            if route != "fallback" {
                return Err(Error::invalid_request(
                    format!("`route` may only be \"fallback\", not `{route}`"),
                    Some("route".into()),
                ));
            }
        }
        // `model`, then each of `models` not named before.
        let extra: &[String] = req.models.as_deref().unwrap_or_default();
        let ids = std::iter::once(req.model.as_str()).chain(
            extra
                .iter()
                .enumerate()
                .filter(|(k, m)| **m != req.model && !extra[..*k].contains(m))
                .map(|(_, m)| m.as_str()),
        );
        let used = if prefs.require_parameters {
            used_parameters(req)
        } else {
            Vec::new()
        };
        let mut plan: Option<RoutePlan> = None;
        let mut removed = String::new();
        for (n, id) in ids.enumerate() {
            let param = if n == 0 { "model" } else { "models" };
            // Before a `<provider>/<model>` pass-through would take `gpt-5:online` for a name.
            if let Some(suffix) = Variant::refused(id).filter(|_| !self.by_model.contains_key(id)) {
                return Err(Error::invalid_request(
                    format!("the `:{suffix}` variant is not offered by this gateway (`{id}`)"),
                    Some(param.into()),
                ));
            }
            let resolved = self.lookup(id).ok_or_else(|| {
                let e = Error::unknown_model(id);
                if n == 0 {
                    e
                } else {
                    e.with_param(Some("models".into()))
                }
            })?;
            let targets = match resolved {
                Resolved::Model(model, variant) => {
                    let mut p = prefs.clone();
                    if p.sort.is_none() {
                        p.sort = match variant {
                            Some(Variant::Floor) => Some(Sort::Price),
                            Some(Variant::Nitro) => Some(Sort::Throughput),
                            _ => None,
                        };
                    }
                    let public: Arc<str> = match variant {
                        Some(v) => Arc::from(format!("{}{}", model.id, v.suffix())),
                        None => model.id.clone(),
                    };
                    let free = variant == Some(Variant::Free);
                    order_endpoints(model, &public, &p, free, &used, now, &mut removed)
                }
                Resolved::PassThrough(target) => {
                    let mut kept = vec![target];
                    filter_pass_through(&mut kept, &prefs, &used, &mut removed);
                    kept
                }
            };
            match &mut plan {
                None => {
                    plan = Some(RoutePlan {
                        model: targets
                            .first()
                            .map(|t| t.public_model.clone())
                            .unwrap_or_else(|| Arc::from(id)),
                        targets,
                    })
                }
                Some(p) => {
                    if p.targets.is_empty() {
                        p.model = targets
                            .first()
                            .map(|t| t.public_model.clone())
                            .unwrap_or_else(|| p.model.clone());
                    }
                    p.targets.extend(targets);
                }
            }
        }
        let plan = plan.expect("the request names at least one model");
        if plan.targets.is_empty() {
            return Err(Error::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!(
                    "no endpoint of `{}` is left for this request:{removed}",
                    req.model
                ),
            )
            .with_param(Some("provider".into()))
            .with_source(ErrorSource::Client));
        }
        Ok(plan)
    }

    /// The model a requested id stands for: the catalog id (aliases and variants resolved)
    /// or the `<provider>/<model>` pass-through id; `None` when unknown.
    pub fn model_of(&self, requested: &str) -> Option<Arc<str>> {
        match self.lookup(requested)? {
            Resolved::Model(m, _) => Some(m.id.clone()),
            Resolved::PassThrough(t) => Some(t.public_model),
        }
    }

    fn lookup<'a>(&'a self, requested: &'a str) -> Option<Resolved<'a>> {
        let id =
            |s: &'a str| -> Option<&'a Model> { self.by_model.get(s).map(|&i| &self.models[i]) };
        let alias = |s: &str| -> Option<&'a str> { self.aliases.get(s).map(String::as_str) };
        if let Some(m) = self.by_model.get(requested).map(|&i| &self.models[i]) {
            return Some(Resolved::Model(m, None));
        }
        if let Some(target) = alias(requested) {
            if let Some(m) = id(target) {
                return Some(Resolved::Model(m, None));
            }
            if let Some((base, v)) = Variant::split(target) {
                if let Some(m) = id(base) {
                    return Some(Resolved::Model(m, Some(v)));
                }
            }
            return self.pass_through(target).map(Resolved::PassThrough);
        }
        if let Some((base, v)) = Variant::split(requested) {
            let base_id = alias(base).unwrap_or(base);
            if let Some(m) = id(base_id) {
                return Some(Resolved::Model(m, Some(v)));
            }
        }
        self.pass_through(requested).map(Resolved::PassThrough)
    }

    fn pass_through(&self, id: &str) -> Option<Target> {
        let (provider, model) = id.split_once('/')?;
        if model.is_empty() {
            return None;
        }
        let i = *self.by_provider.get(provider)?;
        let mut t = Target::new(self.providers[i].clone(), model, id);
        t.health = self.pass_through_health[i].get(model);
        Some(t)
    }
}

/// Pass-through models tracked per provider, at most.
const PASS_THROUGH_TRACKED: usize = 1024;

/// The health of one provider's pass-through models, by upstream model name. Bounded: clients
/// choose the names, so past [`PASS_THROUGH_TRACKED`] the entries no request holds and that
/// are not cooling down are dropped; if all are in use, a new model goes untracked.
#[derive(Debug, Default)]
struct PassThroughHealth {
    by_model: std::sync::Mutex<crate::FastMap<Box<str>, Arc<EndpointHealth>>>,
}

impl PassThroughHealth {
    fn get(&self, model: &str) -> Arc<EndpointHealth> {
        let mut map = self.by_model.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(model) {
            return h.clone();
        }
        if map.len() >= PASS_THROUGH_TRACKED {
            let now = Instant::now();
            map.retain(|_, h| Arc::strong_count(h) > 1 || h.is_cooling(now));
            if map.len() >= PASS_THROUGH_TRACKED {
                return Arc::default();
            }
        }
        let h = Arc::new(EndpointHealth::new());
        map.insert(model.into(), h.clone());
        h
    }
}

enum Resolved<'a> {
    Model(&'a Model, Option<Variant>),
    PassThrough(Target),
}

/// Why an endpoint was left out, appended to the explanation of an empty plan.
fn note_removed(removed: &mut String, t: &Target, why: &str) {
    let _ = write!(
        removed,
        " {}/{} ({why});",
        t.provider.name(),
        t.upstream_model
    );
}

/// The filters every target goes through: `only`, `ignore`, `max_price`,
/// `require_parameters`, `data_collection`, `zdr` and `quantizations`. `endpoint`: the
/// catalog's (`None` for a pass-through model, which declares nothing).
fn keep(
    t: &Target,
    endpoint: Option<&Endpoint>,
    prefs: &ProviderPrefs,
    used: &[&str],
    removed: &mut String,
) -> bool {
    let declared = endpoint.and_then(|e| e.supported_parameters.as_deref());
    let name = t.provider.name();
    if prefs.data_collection == Some(DataCollection::Deny)
        && endpoint.and_then(|e| e.data_collection) != Some(DataCollection::Deny)
    {
        note_removed(
            removed,
            t,
            "does not declare data_collection = \"deny\", provider.data_collection is \"deny\"",
        );
        return false;
    }
    if prefs.zdr && endpoint.and_then(|e| e.zdr) != Some(true) {
        note_removed(removed, t, "does not declare zdr, provider.zdr set");
        return false;
    }
    if let Some(wanted) = &prefs.quantizations {
        let q = endpoint.and_then(|e| e.quantization.as_deref());
        if !q.is_some_and(|q| wanted.iter().any(|w| w == q)) {
            note_removed(
                removed,
                t,
                &format!(
                    "quantization {} not in provider.quantizations",
                    q.unwrap_or("undeclared")
                ),
            );
            return false;
        }
    }
    if let Some(only) = &prefs.only {
        if !only.iter().any(|p| p == name) {
            note_removed(removed, t, "not in provider.only");
            return false;
        }
    }
    if prefs.ignore.iter().flatten().any(|p| p == name) {
        note_removed(removed, t, "in provider.ignore");
        return false;
    }
    if let Some(max) = prefs.max_price {
        match t.pricing {
            None => {
                note_removed(removed, t, "price unknown, provider.max_price set");
                return false;
            }
            Some(p) => {
                for (what, price, limit) in [
                    ("prompt", p.prompt_per_million, max.prompt),
                    ("completion", p.completion_per_million, max.completion),
                ] {
                    if let Some(limit) = limit.filter(|&l| price > l) {
                        note_removed(
                            removed,
                            t,
                            &format!(
                                "{what} price {price} above provider.max_price.{what} {limit}"
                            ),
                        );
                        return false;
                    }
                }
            }
        }
    }
    if prefs.require_parameters && !used.is_empty() {
        let kind = t.provider.kind().parameters();
        let supports = |u: &str| match declared {
            Some(list) => list.iter().any(|d| d == u),
            None => kind.contains(&u),
        };
        if let Some(missing) = used.iter().find(|u| !supports(u)) {
            note_removed(removed, t, &format!("does not support `{missing}`"));
            return false;
        }
    }
    true
}

fn filter_pass_through(
    targets: &mut Vec<Target>,
    prefs: &ProviderPrefs,
    used: &[&str],
    removed: &mut String,
) {
    targets.retain(|t| keep(t, None, prefs, used, removed));
    if let Some(order) = &prefs.order {
        if !prefs.allow_fallbacks {
            targets.retain(|t| {
                let listed = order.iter().any(|p| p == t.provider.name());
                if !listed {
                    note_removed(removed, t, "not in provider.order, allow_fallbacks false");
                }
                listed
            });
        }
    }
}

/// A model's endpoints for this request: filtered, then ordered (`order`, `sort`, or the
/// price-weighted balancing among healthy endpoints), cooling endpoints last, and cut to the
/// listed (or the first) ones when `allow_fallbacks` is false.
fn order_endpoints(
    model: &Model,
    public: &Arc<str>,
    prefs: &ProviderPrefs,
    free_only: bool,
    used: &[&str],
    now: &mut dyn FnMut() -> Instant,
    removed: &mut String,
) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::with_capacity(model.endpoints.len());
    let mut cooling: Vec<Target> = Vec::new();
    for e in &model.endpoints {
        let t = e.target(model, public);
        if free_only && !e.pricing.is_free() {
            note_removed(removed, &t, "not free, `:free` variant");
            continue;
        }
        if keep(&t, Some(e), prefs, used, removed) {
            // Endpoints cooling down go last (the fallback layer may still probe them).
            if e.health.may_be_cooling() && e.health.is_cooling(now()) {
                cooling.push(t);
            } else {
                targets.push(t);
            }
        }
    }
    let healthy = targets.len();
    targets.append(&mut cooling);
    // Healthy ones first, then the cooling ones, each part in its own order. Cheapest first
    // is the base order of every other (a stable sort keeps it for ties).
    let (first, rest) = targets.split_at_mut(healthy);
    for part in [first, rest] {
        if part.len() < 2 {
            continue;
        }
        part.sort_by(|a, b| total(a).total_cmp(&total(b)));
        match prefs.sort {
            Some(Sort::Price) | None => {}
            Some(Sort::Throughput) => {
                part.sort_by_cached_key(|t| std::cmp::Reverse(OrdF64(throughput(t))))
            }
            Some(Sort::Latency) => part.sort_by_cached_key(|t| OrdF64(latency(t))),
        }
    }
    if prefs.balanced() && healthy > 1 {
        balance(&mut targets[..healthy]);
    }
    if let Some(order) = &prefs.order {
        // Listed providers first, in the listed order; the rest keep their order after them.
        let rank = |t: &Target| {
            order
                .iter()
                .position(|p| p == t.provider.name())
                .unwrap_or(usize::MAX)
        };
        targets.sort_by_key(rank);
        if !prefs.allow_fallbacks {
            targets.retain(|t| {
                let listed = rank(t) != usize::MAX;
                if !listed {
                    note_removed(removed, t, "not in provider.order, allow_fallbacks false");
                }
                listed
            });
        }
    } else if !prefs.allow_fallbacks {
        for t in targets.iter().skip(1) {
            note_removed(removed, t, "allow_fallbacks false: only the first choice");
        }
        targets.truncate(1);
    }
    targets
}

/// OpenRouter's default: a random order weighted by the inverse square of the price, among
/// the healthy endpoints (the stable sort afterwards moves cooling ones last).
fn balance(targets: &mut [Target]) {
    // Efraimidis–Spirakis: key = u^(1/w), highest first, is a weighted draw without
    // replacement; its logarithm ln(u)/w cannot underflow. With w = 1/price², 1/w = price².
    let squared = |t: &Target| {
        let price = total(t).clamp(1e-6, 1e6);
        price * price
    };
    let key = |t: &Target| {
        let u = fastrand::f64().max(f64::MIN_POSITIVE);
        u.ln() * squared(t)
    };
    if let [a, b] = targets {
        // The common case, in closed form: `b` goes first with probability
        // w_b / (w_a + w_b) = price_a² / (price_a² + price_b²). One draw, no logarithm.
        let (pa, pb) = (squared(a), squared(b));
        if fastrand::f64() * (pa + pb) < pa {
            std::mem::swap(a, b);
        }
        return;
    }
    targets.sort_by_cached_key(|t| std::cmp::Reverse(OrdF64(key(t))));
}

/// An `f64` ordered by `total_cmp`.
#[derive(PartialEq)]
struct OrdF64(f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn total(t: &Target) -> f64 {
    t.pricing
        .map(|p| p.prompt_per_million + p.completion_per_million)
        .unwrap_or(f64::INFINITY)
}

/// Measured tokens per second; unmeasured endpoints sort after every measured one.
fn throughput(t: &Target) -> f64 {
    t.health
        .snapshot(Instant::now())
        .throughput
        .unwrap_or(f64::NEG_INFINITY)
}

/// Measured time to first token in seconds; unmeasured endpoints sort last.
fn latency(t: &Target) -> f64 {
    t.health
        .snapshot(Instant::now())
        .latency
        .map_or(f64::INFINITY, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::health::HealthPolicy;
    use crate::provider::ProviderKind;

    /// Model `v/m` at a (3+3), b (1+1), c (0+0, tools only), d (2+2, declares nothing: its
    /// kind's parameters).
    fn catalog() -> Catalog {
        let mut c = Catalog::new();
        let mut eps = Vec::new();
        for (name, price, params) in [
            (
                "a",
                3.0,
                Some(vec!["tools", "response_format", "temperature"]),
            ),
            ("b", 1.0, Some(vec!["temperature"])),
            ("c", 0.0, Some(vec!["tools"])),
            ("d", 2.0, None),
        ] {
            let p = Arc::new(
                Provider::builder(name, ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
                    .build()
                    .unwrap(),
            );
            c.add_provider(p.clone()).unwrap();
            let mut e = Endpoint::new(p, format!("{name}-up"), Pricing::new(price, price));
            e.supported_parameters = params.map(|v| v.into_iter().map(String::from).collect());
            // a: keeps no data, fp8; b: trains on prompts; c, d: declare nothing.
            if name == "a" {
                e.data_collection = Some(DataCollection::Deny);
                e.zdr = Some(true);
                e.quantization = Some("fp8".into());
            } else if name == "b" {
                e.data_collection = Some(DataCollection::Allow);
                e.quantization = Some("bf16".into());
            }
            eps.push(e);
        }
        c.add_model(Model {
            id: Arc::from("v/m"),
            name: "M".into(),
            context_length: None,
            endpoints: eps.clone(),
            hedge: None,
            info: Default::default(),
        })
        .unwrap();
        c.add_model(Model {
            id: Arc::from("v/other"),
            name: "Other".into(),
            context_length: None,
            endpoints: vec![eps[1].clone()],
            hedge: None,
            info: Default::default(),
        })
        .unwrap();
        c.add_alias("smart", "v/m");
        c.validate().unwrap();
        c
    }

    fn plan_of(c: &Catalog, body: serde_json::Value) -> Result<Vec<String>, Error> {
        let mut v = json!({"model": "v/m", "messages": []});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let req: ChatRequest = serde_json::from_value(v).unwrap();
        let plan = c.plan(&req, Instant::now())?;
        Ok(plan
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.public_model, t.provider.name()))
            .collect())
    }

    fn names(c: &Catalog, body: serde_json::Value) -> Vec<String> {
        plan_of(c, body)
            .unwrap()
            .into_iter()
            .map(|s| s.rsplit(':').next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn sort_order_only_ignore_and_allow_fallbacks() {
        let c = catalog();
        assert_eq!(
            names(&c, json!({"provider": {"sort": "price"}})),
            ["c", "b", "d", "a"]
        );
        assert_eq!(
            names(&c, json!({"provider": {"order": ["a", "d"]}})),
            ["a", "d", "c", "b"]
        );
        assert_eq!(
            names(
                &c,
                json!({"provider": {"order": ["a", "d"], "allow_fallbacks": false}})
            ),
            ["a", "d"]
        );
        assert_eq!(
            names(
                &c,
                json!({"provider": {"sort": "price", "allow_fallbacks": false}})
            ),
            ["c"]
        );
        assert_eq!(
            names(
                &c,
                json!({"provider": {"only": ["a", "b"], "sort": "price"}})
            ),
            ["b", "a"]
        );
        assert_eq!(
            names(&c, json!({"provider": {"ignore": ["c"], "sort": "price"}})),
            ["b", "d", "a"]
        );
        assert_eq!(
            names(
                &c,
                json!({"provider": {"max_price": {"prompt": 2}, "sort": "price"}})
            ),
            ["c", "b", "d"]
        );
    }

    #[test]
    fn variants_and_aliases() {
        let c = catalog();
        assert_eq!(
            plan_of(&c, json!({"model": "v/m:free"})).unwrap(),
            ["v/m:free:c"]
        );
        assert_eq!(
            names(&c, json!({"model": "smart:floor"})),
            ["c", "b", "d", "a"]
        );
        // Unmeasured throughput: price order; then measured endpoints lead.
        assert_eq!(
            names(&c, json!({"model": "v/m:nitro"})),
            ["c", "b", "d", "a"]
        );
        let p = HealthPolicy::default();
        c.models()[0].endpoints[0].health.on_throughput(90.0, &p);
        c.models()[0].endpoints[3].health.on_throughput(40.0, &p);
        assert_eq!(
            names(&c, json!({"model": "v/m:nitro"})),
            ["a", "d", "c", "b"]
        );
        c.models()[0].endpoints[1]
            .health
            .on_success(Duration::from_millis(20), &p);
        c.models()[0].endpoints[2]
            .health
            .on_success(Duration::from_millis(50), &p);
        assert_eq!(
            names(&c, json!({"provider": {"sort": "latency"}})),
            ["b", "c", "d", "a"]
        );
        // `:free` with no free endpoint: explained.
        let e = plan_of(&c, json!({"model": "v/other:free"})).unwrap_err();
        assert!(e.message().contains("b/b-up (not free"), "{}", e.message());
    }

    #[test]
    fn require_parameters_keeps_endpoints_that_support_them() {
        let c = catalog();
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        // `d` declares nothing: it supports what its kind (OpenAI) does, tools included.
        assert_eq!(
            names(
                &c,
                json!({"tools": tools, "provider": {"require_parameters": true, "sort": "price"}})
            ),
            ["c", "d", "a"]
        );
        let e = plan_of(
            &c,
            json!({"top_k": 3, "provider": {"require_parameters": true}}),
        )
        .unwrap_err();
        assert!(
            e.message().contains("d/d-up (does not support `top_k`)"),
            "{}",
            e.message()
        );
        // Without the flag nothing is filtered.
        assert_eq!(
            names(&c, json!({"tools": tools, "provider": {"sort": "price"}})).len(),
            4
        );
    }

    #[test]
    fn privacy_and_quality_filters_keep_what_endpoints_declare() {
        let c = catalog();
        let sorted = |p: serde_json::Value| {
            let mut p = p;
            p["sort"] = json!("price");
            names(&c, json!({ "provider": p }))
        };
        assert_eq!(sorted(json!({"data_collection": "deny"})), ["a"]);
        assert_eq!(sorted(json!({"data_collection": "allow"})).len(), 4);
        assert_eq!(sorted(json!({"zdr": true})), ["a"]);
        assert_eq!(
            sorted(json!({"quantizations": ["bf16", "fp8"]})),
            ["b", "a"]
        );
        let e = plan_of(&c, json!({"provider": {"zdr": true, "ignore": ["a"]}})).unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        for part in [
            "b/b-up (does not declare zdr, provider.zdr set)",
            "d/d-up (does not declare zdr",
        ] {
            assert!(e.message().contains(part), "{}", e.message());
        }
        let e = plan_of(&c, json!({"provider": {"quantizations": ["int4"]}})).unwrap_err();
        assert!(
            e.message()
                .contains("c/c-up (quantization undeclared not in provider.quantizations)"),
            "{}",
            e.message()
        );
        // Prices as strings, and the per-request and per-image bounds.
        assert_eq!(
            sorted(json!({"max_price": {"prompt": "1.5", "request": "0", "image": 0}})),
            ["c", "b"]
        );
        let e = plan_of(&c, json!({"provider": {"max_price": {"prompt": "cheap"}}})).unwrap_err();
        assert_eq!(e.param(), Some("provider.max_price.prompt"));
    }

    #[test]
    fn models_list_appends_each_models_endpoints() {
        let c = catalog();
        let plan = plan_of(
            &c,
            json!({"models": ["v/other", "a/raw"], "route": "fallback",
                   "provider": {"only": ["a", "b"], "sort": "price"}}),
        )
        .unwrap();
        assert_eq!(plan, ["v/m:b", "v/m:a", "v/other:b", "a/raw:a"]);
        let e = plan_of(&c, json!({"models": ["nope/x"]})).unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.param(), Some("models"));
        let e = plan_of(&c, json!({"route": "sort"})).unwrap_err();
        assert_eq!(e.param(), Some("route"));
    }

    #[test]
    fn an_empty_plan_says_which_filter_removed_which_endpoint() {
        let c = catalog();
        let e = plan_of(
            &c,
            json!({"response_format": {"type": "json_object"},
                   "provider": {"ignore": ["a"], "max_price": {"completion": 1.5},
                                "require_parameters": true}}),
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.param(), Some("provider"));
        let m = e.message();
        for part in [
            "a/a-up (in provider.ignore)",
            "b/b-up (does not support `response_format`)",
            "c/c-up (does not support `response_format`)",
            "d/d-up (completion price 2 above provider.max_price.completion 1.5)",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
    }

    #[test]
    fn pass_through_health_is_per_model_and_bounded() {
        let c = catalog();
        let a1 = c.pass_through_health("a", "one").unwrap();
        assert!(Arc::ptr_eq(
            &a1,
            &c.pass_through_health("a", "one").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &a1,
            &c.pass_through_health("a", "two").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &a1,
            &c.pass_through_health("b", "one").unwrap()
        ));
        // A flood of made-up names: the entries nobody holds are forgotten.
        for i in 0..5_000 {
            c.pass_through_health("a", &format!("m{i}"));
        }
        let tracked = c.pass_through_health[0].by_model.lock().unwrap().len();
        assert!(tracked <= PASS_THROUGH_TRACKED, "{tracked}");
        // The one still held survives the sweeps.
        assert!(Arc::ptr_eq(
            &a1,
            &c.pass_through_health("a", "one").unwrap()
        ));
    }

    fn priced(endpoints: &[(&str, f64)]) -> Catalog {
        let mut c = Catalog::new();
        let mut eps = Vec::new();
        for &(name, price) in endpoints {
            let p = Arc::new(
                Provider::builder(name, ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
                    .build()
                    .unwrap(),
            );
            c.add_provider(p.clone()).unwrap();
            eps.push(Endpoint::new(p, "up", Pricing::new(price, price)));
        }
        c.add_model(Model {
            id: Arc::from("v/m"),
            name: "M".into(),
            context_length: None,
            endpoints: eps,
            hedge: None,
            info: Default::default(),
        })
        .unwrap();
        c
    }

    #[test]
    fn three_endpoints_are_balanced_by_the_same_weights() {
        // Weights 1, 1 and 1/9: z first 1/19 of the time (about 158 of 3000), x and y
        // about 1421 each.
        let c = priced(&[("x", 1.0), ("y", 1.0), ("z", 3.0)]);
        let mut first = std::collections::HashMap::new();
        for _ in 0..3000 {
            *first.entry(names(&c, json!({}))[0].clone()).or_insert(0) += 1;
        }
        assert!((100..=220).contains(&first["z"]), "{first:?}");
        assert!((1300..=1550).contains(&first["x"]), "{first:?}");
    }

    #[test]
    fn default_order_balances_by_inverse_square_price_among_healthy_endpoints() {
        let c = priced(&[("x", 1.0), ("y", 3.0)]);
        let first_x = (0..3000).filter(|_| names(&c, json!({}))[0] == "x").count();
        // Weights 1 and 1/9: x first 90 % of the time.
        assert!((2550..=2850).contains(&first_x), "{first_x}");
        // A cooling endpoint goes last whatever its price.
        let p = HealthPolicy::default();
        c.models()[0].endpoints[0].health.on_failure(
            Instant::now(),
            Some(Duration::from_secs(60)),
            &p,
        );
        for _ in 0..50 {
            assert_eq!(names(&c, json!({})), ["y", "x"]);
        }
    }
}
