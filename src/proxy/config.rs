//! The proxy's TOML configuration and its embedded default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::model_rewrite::{Catalog, Endpoint, Model};
use crate::provider::{Provider, ProviderKind, Timeouts};
use crate::route::Pricing;

/// The proxy's configuration (see the README's config reference).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Environment variable holding the admin key (key management; not in this version yet).
    #[serde(default)]
    pub admin_key_env: Option<String>,
    /// Largest request body, in bytes (default 32 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Keep-alive comment interval while the first upstream byte is awaited (default 10000;
    /// 0 disables).
    #[serde(default)]
    pub keepalive_interval_ms: Option<u64>,
    /// How long in-flight requests may run after SIGTERM / Ctrl-C (default 30).
    #[serde(default)]
    pub shutdown_grace_secs: Option<u64>,
    /// Providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Models.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Aliases: alias → model id.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// `[state]`: durable state (not in this version yet).
    #[serde(default)]
    pub state: Option<toml::Table>,
    /// `[[keys]]`: client keys (not in this version yet).
    #[serde(default)]
    pub keys: Vec<toml::Table>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name used in `<provider>/<model>`, endpoints and `provider.order`.
    pub name: String,
    /// `openai` (anthropic, gemini and azure come in a later version).
    pub kind: String,
    /// Base URL, as the provider's official SDK has it.
    pub base_url: String,
    /// Environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The key itself (prefer `api_key_env`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Extra headers sent with every request to this provider.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Connect timeout (default 10000).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Time to the response headers (default 120000).
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest silence within a response body (default 120000).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Azure `api-version` (for kind = "azure", in a later version).
    #[serde(default)]
    pub api_version: Option<String>,
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The id clients send.
    pub id: String,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Context length.
    #[serde(default)]
    pub context_length: Option<u64>,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

/// One `[[models.endpoints]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// A configured provider's name.
    pub provider: String,
    /// The upstream model name.
    pub model: String,
    /// USD per million input tokens.
    #[serde(default)]
    pub prompt_price: f64,
    /// USD per million output tokens.
    #[serde(default)]
    pub completion_price: f64,
    /// Context length at this endpoint.
    #[serde(default)]
    pub context_length: Option<u64>,
    /// Largest output at this endpoint.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

/// A configuration the proxy cannot start with; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Well-known providers of the embedded default: name, base URL, key variable (`anthropic` and
/// `gemini` use their native adapters, the rest the OpenAI-compatible one).
pub const WELL_KNOWN: &[(&str, &str, &str)] = &[
    ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    (
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
    ),
    (
        "gemini",
        "https://generativelanguage.googleapis.com",
        "GEMINI_API_KEY",
    ),
    (
        "openrouter",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
    ),
    ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    ("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    (
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
    ),
    (
        "together",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
    ),
    (
        "fireworks",
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_API_KEY",
    ),
    ("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
];

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("invalid config: {e}")))
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// The embedded default: 127.0.0.1:8080; every well-known provider whose key variable is
    /// set (through its OpenAI-compatible endpoint), plus a local Ollama at 127.0.0.1:11434
    /// with no key. Models are reached as `<provider>/<model>`.
    pub fn embedded_default(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut providers: Vec<ProviderConfig> = WELL_KNOWN
            .iter()
            .filter(|(_, _, var)| env(var).is_some_and(|v| !v.is_empty()))
            .map(|(name, url, var)| {
                let mut p = ProviderConfig::openai(name, url, Some(var));
                // The native adapters: thinking, prompt caching and signatures survive.
                if matches!(*name, "anthropic" | "gemini") {
                    p.kind = (*name).into();
                }
                p
            })
            .collect();
        providers.push(ProviderConfig::openai(
            "ollama",
            "http://127.0.0.1:11434/v1",
            None,
        ));
        Config {
            listen: default_listen(),
            admin_key_env: None,
            max_body_bytes: None,
            keepalive_interval_ms: None,
            shutdown_grace_secs: None,
            providers,
            models: Vec::new(),
            aliases: BTreeMap::new(),
            state: None,
            keys: Vec::new(),
        }
    }

    /// How long in-flight requests may run after a shutdown signal.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs.unwrap_or(30))
    }

    /// The keep-alive interval (`None`: disabled).
    pub fn keepalive_interval(&self) -> Option<Duration> {
        match self.keepalive_interval_ms {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => Some(Duration::from_secs(10)),
        }
    }

    /// Checks the whole configuration and builds the catalog. Keys come from `env`.
    pub fn catalog(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Catalog, ConfigError> {
        if !self.keys.is_empty() {
            return Err(ConfigError(
                "`[[keys]]` (client keys and authentication) is not implemented in this version yet; remove it to run without authentication on a loopback address".into(),
            ));
        }
        if self.admin_key_env.is_some() {
            return Err(ConfigError(
                "`admin_key_env` (the key management API) is not implemented in this version yet; remove it".into(),
            ));
        }
        if self.state.is_some() {
            return Err(ConfigError(
                "`[state]` (durable keys, spend and usage records) is not implemented in this version yet; remove it".into(),
            ));
        }
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "refusing to listen on {} without client keys: without `[[keys]]` the gateway is unauthenticated and may only bind a loopback address",
                self.listen
            )));
        }
        let mut catalog = Catalog::new();
        for p in &self.providers {
            let provider = p.build(env)?;
            catalog
                .add_provider(Arc::new(provider))
                .map_err(ConfigError)?;
        }
        for m in &self.models {
            let mut endpoints = Vec::with_capacity(m.endpoints.len());
            for e in &m.endpoints {
                let provider = catalog.provider(&e.provider).cloned().ok_or_else(|| {
                    ConfigError(format!(
                        "model `{}`: endpoint provider `{}` is not configured",
                        m.id, e.provider
                    ))
                })?;
                endpoints.push(Endpoint {
                    provider,
                    model: Arc::from(e.model.as_str()),
                    pricing: Pricing {
                        prompt_per_million: e.prompt_price,
                        completion_per_million: e.completion_price,
                    },
                    context_length: e.context_length,
                    max_output_tokens: e.max_output_tokens,
                });
            }
            catalog
                .add_model(Model {
                    id: Arc::from(m.id.as_str()),
                    name: m.name.clone().unwrap_or_else(|| m.id.clone()),
                    context_length: m.context_length,
                    endpoints,
                })
                .map_err(ConfigError)?;
        }
        for (alias, target) in &self.aliases {
            catalog.add_alias(alias.clone(), target.clone());
        }
        catalog.validate().map_err(ConfigError)?;
        Ok(catalog)
    }
}

impl ProviderConfig {
    fn openai(name: &str, url: &str, key_env: Option<&str>) -> Self {
        ProviderConfig {
            name: name.into(),
            kind: "openai".into(),
            base_url: url.into(),
            api_key_env: key_env.map(Into::into),
            api_key: None,
            headers: BTreeMap::new(),
            connect_timeout_ms: None,
            first_byte_timeout_ms: None,
            idle_timeout_ms: None,
            api_version: None,
        }
    }

    fn build(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Provider, ConfigError> {
        let name = &self.name;
        let kind = ProviderKind::parse(&self.kind)
            .map_err(|e| ConfigError(format!("provider `{name}`: {e}")))?;
        let key = match (&self.api_key, &self.api_key_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(format!("provider `{name}`: set `api_key` or `api_key_env`, not both")))
            }
            (Some(k), None) => Some(k.clone()),
            (None, Some(var)) => match env(var) {
                Some(k) if !k.is_empty() => Some(k),
                _ => {
                    return Err(ConfigError(format!(
                        "provider `{name}`: environment variable `{var}` (api_key_env) is not set; set it or remove the provider"
                    )))
                }
            },
            (None, None) => None,
        };
        let d = Timeouts::default();
        let ms =
            |v: Option<u64>, default: Duration| v.map(Duration::from_millis).unwrap_or(default);
        let timeouts = Timeouts {
            connect: ms(self.connect_timeout_ms, d.connect),
            first_byte: ms(self.first_byte_timeout_ms, d.first_byte),
            idle: ms(self.idle_timeout_ms, d.idle),
        };
        let mut b = Provider::builder(name.clone(), kind, self.base_url.clone())
            .api_key(key)
            .api_version(self.api_version.clone())
            .timeouts(timeouts);
        for (k, v) in &self.headers {
            b = b.header(k.clone(), v.clone());
        }
        b.build().map_err(ConfigError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn design_example_parses() {
        let cfg = Config::from_toml(
            r#"
listen = "127.0.0.1:8080"
[[providers]]
name = "deepseek"
kind = "openai"
base_url = "https://api.deepseek.com/v1"
api_key = "sk-test"
headers = { "x-extra" = "1" }
connect_timeout_ms = 500
[[models]]
id = "deepseek/chat"
context_length = 64000
[[models.endpoints]]
provider = "deepseek"
model = "deepseek-chat"
prompt_price = 0.27
completion_price = 1.1
[aliases]
smart = "deepseek/chat"
"#,
        )
        .unwrap();
        let catalog = cfg.catalog(&no_env).unwrap();
        assert_eq!(catalog.providers().len(), 1);
        assert_eq!(
            &*catalog.resolve("smart").unwrap().targets[0].upstream_model,
            "deepseek-chat"
        );
    }

    #[test]
    fn later_sections_and_mistakes_are_refused_clearly() {
        let err = |toml: &str| {
            Config::from_toml(toml)
                .and_then(|c| c.catalog(&no_env).map(|_| ()))
                .unwrap_err()
                .0
        };
        assert!(err("[[keys]]\nname = \"a\"\nkey = \"k\"").contains("[[keys]]"));
        assert!(err("[state]\ndir = \"x\"").contains("[state]"));
        assert!(err("admin_key_env = \"X\"").contains("admin_key_env"));
        assert!(err("listen = \"0.0.0.0:8080\"").contains("loopback"));
        assert!(err("lisen = \"127.0.0.1:1\"").contains("unknown field"));
        assert!(
            err("[[providers]]\nname = \"a\"\nkind = \"bedrock\"\nbase_url = \"https://x\"")
                .contains("unknown provider kind")
        );
        assert!(
            err("[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"https://x\"\napi_version = \"2024-10-21\"")
                .contains("azure")
        );
        assert!(err("[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"https://x\"\napi_key_env = \"NOPE_NOT_SET\"").contains("NOPE_NOT_SET"));
        assert!(err(
            "[[models]]\nid = \"m\"\n[[models.endpoints]]\nprovider = \"ghost\"\nmodel = \"x\""
        )
        .contains("ghost"));
        assert!(err("[aliases]\nx = \"nowhere\"").contains("nowhere"));
    }

    #[test]
    fn embedded_default_enables_providers_by_key() {
        let env = |k: &str| (k == "GROQ_API_KEY").then(|| "gsk-test".to_owned());
        let cfg = Config::embedded_default(&env);
        let catalog = cfg.catalog(&env).unwrap();
        let names: Vec<&str> = catalog.providers().iter().map(|p| p.name()).collect();
        assert_eq!(names, ["groq", "ollama"]);
        assert!(catalog.resolve("groq/llama-3.1-8b-instant").is_ok());
        assert!(catalog.resolve("openai/gpt-4o").is_err());
        assert!(cfg.listen.ip().is_loopback());
    }
}
