use std::collections::HashMap;
use std::sync::Arc;

use crate::provider::Provider;
use crate::route::{Pricing, RoutePlan, Target};
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
}

/// Providers, models and aliases: what [`ModelRewriteLayer`](super::ModelRewriteLayer)
/// resolves a request's `model` against.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    by_provider: HashMap<String, usize>,
    models: Vec<Model>,
    by_model: HashMap<String, usize>,
    aliases: HashMap<String, String>,
}

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
            let p = e.pricing;
            let valid = |price: f64| price.is_finite() && price >= 0.0;
            if !valid(p.prompt_per_million) || !valid(p.completion_per_million) {
                return Err(format!(
                    "model `{}`: prices must be finite and not negative",
                    model.id
                ));
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

    /// Resolves a requested model id into a plan: aliases first, then the catalog (endpoints
    /// by total price, cheapest first), then `<provider>/<model>` pass-through (cost unknown).
    pub fn resolve(&self, requested: &str) -> Result<RoutePlan, Error> {
        let id = self
            .aliases
            .get(requested)
            .map(String::as_str)
            .unwrap_or(requested);
        if let Some(&i) = self.by_model.get(id) {
            let model = &self.models[i];
            let mut targets: Vec<Target> = model
                .endpoints
                .iter()
                .map(|e| Target {
                    provider: e.provider.clone(),
                    upstream_model: e.model.clone(),
                    public_model: model.id.clone(),
                    pricing: Some(e.pricing),
                    max_output_tokens: e
                        .max_output_tokens
                        .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
                })
                .collect();
            targets.sort_by(|a, b| total(a).total_cmp(&total(b)));
            return Ok(RoutePlan {
                model: model.id.clone(),
                targets,
            });
        }
        if let Some(target) = self.pass_through(id) {
            return Ok(RoutePlan {
                model: target.public_model.clone(),
                targets: vec![target],
            });
        }
        Err(Error::unknown_model(requested))
    }

    fn pass_through(&self, id: &str) -> Option<Target> {
        let (provider, model) = id.split_once('/')?;
        if model.is_empty() {
            return None;
        }
        let provider = self.provider(provider)?;
        Some(Target {
            provider: provider.clone(),
            upstream_model: Arc::from(model),
            public_model: Arc::from(id),
            pricing: None,
            max_output_tokens: None,
        })
    }
}

fn total(t: &Target) -> f64 {
    t.pricing
        .map(|p| p.prompt_per_million + p.completion_per_million)
        .unwrap_or(f64::INFINITY)
}
