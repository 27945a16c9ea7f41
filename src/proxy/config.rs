//! The proxy's TOML configuration and its embedded default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{label_of, KeyDigest, KeyRecord, LimitReset, LocalKeyStore, RateLimits};
use crate::facts::{Hedge, Pricing};
use crate::fallback::{FallbackLayer, FallbackPolicy};
use crate::health::HealthPolicy;
use crate::model_rewrite::{Catalog, DataCollection, Endpoint, Model, ModelInfo};
use crate::provider::{AwsCredentials, Provider, ProviderKind, ServiceAccount, Timeouts};
use crate::state::StateDb;
use crate::stream_normalize::StreamUsage;

use super::ServeOptions;

/// The proxy's configuration (every key: `docs/config.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Environment variable holding the admin key: enables the `/v1/keys` management API.
    #[serde(default)]
    pub admin_key_env: Option<String>,
    /// Largest request body, in bytes (default 32 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Keep-alive comment interval between the provider's `200` and its first event (default 10000;
    /// 0 disables).
    #[serde(default)]
    pub keepalive_interval_ms: Option<u64>,
    /// What `GET /v1/credits` reports as `total_credits`: the USD the team has with its
    /// providers (default 0; the gateway does not sell credit).
    #[serde(default)]
    pub credits: Option<f64>,
    /// How long a sticky session (one key's requests with the same `session_id`, or the same
    /// conversation start) stays on its endpoint without a request, in seconds (default 300;
    /// 0 turns sticky sessions off).
    #[serde(default)]
    pub session_idle_secs: Option<u64>,
    /// Which streams end with the usage chunk: `"always"` (default, as OpenRouter) or
    /// `"requested"` (only with `stream_options.include_usage`, as OpenAI).
    #[serde(default)]
    pub stream_usage: StreamUsage,
    /// How long in-flight requests may run after SIGTERM / Ctrl-C (default 30).
    #[serde(default)]
    pub shutdown_grace_secs: Option<u64>,
    /// Open client connections, at most (default: 10000, or half the process's file
    /// descriptor limit after 64 when that is less).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// How long a connection with nothing in flight may take to send its next request's
    /// head, the first one's included (default 30000).
    #[serde(default)]
    pub request_head_timeout_ms: Option<u64>,
    /// HTTP/2 keep-alive: a ping after this long without a frame, the connection closed when
    /// it goes unanswered as long (default 20000; 0 disables).
    #[serde(default)]
    pub http2_keepalive_interval_ms: Option<u64>,
    /// Longest silence while a request body is read: past it, 408 (default 30000; 0 disables).
    #[serde(default)]
    pub body_idle_timeout_ms: Option<u64>,
    /// One log line per request (method, path, status, latency, generation id, key name), at
    /// `info` under the `modelgate::access` target (default true).
    #[serde(default)]
    pub access_log: Option<bool>,
    /// Origins allowed to call the gateway from a browser (`"*"`: any); empty: no CORS
    /// headers.
    #[serde(default)]
    pub cors_allow_origins: Vec<String>,
    /// Providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Models.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Aliases: alias → model id.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// `[state]`: where durable state lives.
    #[serde(default)]
    pub state: Option<StateConfig>,
    /// `[[keys]]`: client keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// `[fallback]`: retries, fail-over and cool-down.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// `[usage]`: metering, the record queue and its sinks.
    #[serde(default)]
    pub usage: UsageConfig,
    /// `[telemetry]`: traces over OTLP; absent, nothing is traced.
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
}

/// `[telemetry]`: OpenTelemetry traces of every request, sent over OTLP/HTTP (protobuf) to a
/// collector (the `otel` feature; see `docs/telemetry.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`; `/v1/traces` is added), or
    /// the full URL of its traces path.
    pub otlp_endpoint: String,
    /// Headers sent with every export (a vendor's key); a value `env:NAME` is read from the
    /// environment variable `NAME`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The `service.name` of the spans (default `modelgate`).
    pub service_name: Option<String>,
    /// The share of new traces sampled, 0 to 1 (default 1); a client's `traceparent` decides
    /// for its own trace.
    pub sample_ratio: Option<f64>,
    /// Record the prompt and the answer's text on the spans (default false).
    #[serde(default)]
    pub capture_content: bool,
    /// Spans waiting for export, at most; more are dropped and counted (default 8192).
    pub queue_capacity: Option<usize>,
}

impl TelemetryConfig {
    /// The export headers, `env:` values read.
    pub fn headers(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        self.headers
            .iter()
            .map(|(name, value)| match value.strip_prefix("env:") {
                Some(var) => env(var).map(|v| (name.clone(), v)).ok_or_else(|| {
                    ConfigError(format!(
                        "[telemetry] headers.{name}: the environment variable `{var}` is not set"
                    ))
                }),
                None => Ok((name.clone(), value.clone())),
            })
            .collect()
    }
}

/// `[usage]`: how the proxy meters. Records and spend always go to the state store; every key
/// is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Places in the record queue (default 16384): records waiting for the writer plus
    /// requests in flight.
    pub queue_capacity: Option<usize>,
    /// How long a request waits for a place when the queue is full before a 503 (default 5000).
    pub max_queue_wait_ms: Option<u64>,
    /// How long the writer lets a batch of records fill before it writes it (default 100; 0:
    /// each record as soon as the writer is free). A record is durable this long, plus one
    /// write, after its request ended: what a crash (`kill -9`, power loss) can lose.
    pub linger_ms: Option<u64>,
    /// Also append every record to this JSON Lines file (export).
    pub jsonl_path: Option<PathBuf>,
    /// Refuse (402) a request whose `max_tokens` the key could not pay for (default false).
    #[serde(default)]
    pub refuse_unaffordable: bool,
    /// Days the state store keeps generation records (default 30; 0 keeps them forever).
    pub retention_days: Option<u32>,
}

/// The default size of the record queue.
pub const DEFAULT_USAGE_QUEUE: usize = 16_384;

/// `[fallback]`: how the proxy retries, fails over and cools endpoints down. Every key is
/// optional; the defaults are [`FallbackPolicy::default`] and [`HealthPolicy::default`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Attempts sent upstream per request, at most (default 12).
    #[serde(default)]
    pub max_attempts: Option<usize>,
    /// Extra attempts at one target after its first failure (default 5).
    #[serde(default)]
    pub retries_per_target: Option<u32>,
    /// Bound of the first backoff before a retry (default 25), doubled per retry; the wait is
    /// drawn at random below it.
    #[serde(default)]
    pub backoff_base_ms: Option<u64>,
    /// Longest backoff (default 2000).
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    /// Longest upstream `Retry-After` waited for before retrying a target (default 10000).
    #[serde(default)]
    pub max_retry_wait_ms: Option<u64>,
    /// Overall deadline for a request to get its answer started (default 300000; 0: none).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Retries may be this share of recent requests (default 0.2).
    #[serde(default)]
    pub retry_budget_percent: Option<f32>,
    /// Failures in a row before an endpoint cools down (default 5).
    #[serde(default)]
    pub failures_to_cool: Option<u32>,
    /// First cool-down (default 30000), doubled per failed probe.
    #[serde(default)]
    pub cooldown_ms: Option<u64>,
    /// Longest cool-down, also the cap on an upstream `Retry-After` (default 300000; 0 turns
    /// cool-downs off).
    #[serde(default)]
    pub max_cooldown_ms: Option<u64>,
}

impl FallbackConfig {
    /// The layer this section describes.
    pub fn layer(&self) -> Result<FallbackLayer, ConfigError> {
        let d = FallbackPolicy::default();
        let h = HealthPolicy::default();
        let ms =
            |v: Option<u64>, default: Duration| v.map(Duration::from_millis).unwrap_or(default);
        let policy = FallbackPolicy {
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            retries_per_target: self.retries_per_target.unwrap_or(d.retries_per_target),
            backoff_base: ms(self.backoff_base_ms, d.backoff_base),
            backoff_max: ms(self.backoff_max_ms, d.backoff_max),
            max_retry_wait: ms(self.max_retry_wait_ms, d.max_retry_wait),
            deadline: match self.deadline_ms {
                Some(0) => None,
                Some(v) => Some(Duration::from_millis(v)),
                None => d.deadline,
            },
            health: HealthPolicy {
                failures_to_cool: self.failures_to_cool.unwrap_or(h.failures_to_cool),
                cooldown: ms(self.cooldown_ms, h.cooldown),
                max_cooldown: ms(self.max_cooldown_ms, h.max_cooldown),
                ewma_alpha: h.ewma_alpha,
            },
        };
        if policy.max_attempts == 0 {
            return Err(ConfigError(
                "[fallback] max_attempts must be at least 1".into(),
            ));
        }
        let percent = self.retry_budget_percent.unwrap_or(0.2);
        if !(0.0..=1000.0).contains(&percent) {
            return Err(ConfigError(
                "[fallback] retry_budget_percent must be between 0 and 1000".into(),
            ));
        }
        Ok(FallbackLayer::new()
            .policy(policy)
            .retry_budget(Duration::from_secs(10), 10, percent))
    }
}

/// `[state]`. Its `Debug` shows `redis_url` without its password.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The embedded store's directory (default `./modelgate-state`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A Redis shared by several proxies (needs the `redis` cargo feature): rate limits, keys,
    /// spend and generation records then live there.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// For a `rediss://` URL: a PEM file with the certificate of the authority that signed the
    /// Redis server's, when it is a private one (default: the public web roots).
    #[serde(default)]
    pub redis_ca_file: Option<PathBuf>,
    /// For a `rediss://` server that asks clients for a certificate: this proxy's certificate
    /// chain (PEM), with `redis_client_key_file`.
    #[serde(default)]
    pub redis_client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `redis_client_cert_file`.
    #[serde(default)]
    pub redis_client_key_file: Option<PathBuf>,
    /// Prefix of the keys the gateway writes in Redis (default `modelgate:`).
    #[serde(default)]
    pub redis_prefix: Option<String>,
    /// Redis connection and reply timeout, in milliseconds (default 1000).
    #[serde(default)]
    pub redis_timeout_ms: Option<u64>,
    /// How long key snapshots and spend reads from Redis are trusted, in milliseconds
    /// (default 500): a key disabled on one instance is refused by every other within about
    /// twice this.
    #[serde(default)]
    pub redis_cache_ms: Option<u64>,
    /// What keeps working on this instance's own state when Redis is lost: any of
    /// `"rate_limits"`, `"keys"`, `"spend"` (default none: each fails closed, with 503s).
    #[serde(default)]
    pub redis_fail_open: Vec<String>,
}

impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field("dir", &self.dir)
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(crate::error::redact_url),
            )
            .field("redis_ca_file", &self.redis_ca_file)
            .field("redis_client_cert_file", &self.redis_client_cert_file)
            .field("redis_client_key_file", &self.redis_client_key_file)
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("redis_cache_ms", &self.redis_cache_ms)
            .field("redis_fail_open", &self.redis_fail_open)
            .finish()
    }
}

/// The default `[state] dir`.
pub const DEFAULT_STATE_DIR: &str = "./modelgate-state";

/// One `[[keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Human name; unique.
    pub name: String,
    /// The key (hashed as it is read; the plaintext is not kept).
    #[serde(default)]
    pub key: Option<ConfigKey>,
    /// Or the key's SHA-256, in hexadecimal.
    #[serde(default)]
    pub key_sha256: Option<KeyDigest>,
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests per day.
    #[serde(default)]
    pub requests_per_day: Option<u32>,
    /// Tokens per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Credit limit in USD.
    #[serde(default)]
    pub limit: Option<f64>,
    /// `daily`, `weekly`, `monthly` or `none`.
    #[serde(default)]
    pub limit_reset: Option<String>,
    /// Expiry: RFC 3339 text or Unix seconds.
    #[serde(default)]
    pub expires_at: Option<toml::Value>,
    /// The model ids this key may call (default: all).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// A disabled key is refused.
    #[serde(default)]
    pub disabled: bool,
}

/// A key read from configuration: only its digest and display label survive parsing.
#[derive(Clone)]
pub struct ConfigKey {
    digest: KeyDigest,
    label: String,
    len: usize,
    /// Why no client could ever present it, if so.
    unusable: Option<String>,
}

impl std::fmt::Debug for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl<'de> Deserialize<'de> for ConfigKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = String::deserialize(d)?;
        Ok(ConfigKey {
            digest: KeyDigest::of(&key),
            label: label_of(&key),
            len: key.len(),
            unusable: crate::auth::check_key_text(&key).err(),
        })
    }
}

/// Shortest key accepted in configuration.
const MIN_KEY_LEN: usize = 16;

/// `daily` / `weekly` / `monthly` / `none`.
pub(crate) fn parse_limit_reset(s: &str) -> Result<Option<LimitReset>, String> {
    match s {
        "daily" => Ok(Some(LimitReset::Daily)),
        "weekly" => Ok(Some(LimitReset::Weekly)),
        "monthly" => Ok(Some(LimitReset::Monthly)),
        "none" => Ok(None),
        other => Err(format!(
            "`limit_reset` must be daily, weekly, monthly or none, not `{other}`"
        )),
    }
}

/// RFC 3339 text to Unix seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            format!("`expires_at` must be an RFC 3339 time or Unix seconds; `{s}` is not ({e})")
        })
}

impl KeyConfig {
    fn record(&self) -> Result<KeyRecord, ConfigError> {
        let name = &self.name;
        let fail = |m: String| ConfigError(format!("key `{name}`: {m}"));
        let mut record = match (&self.key, &self.key_sha256) {
            (Some(_), Some(_)) => return Err(fail("set `key` or `key_sha256`, not both".into())),
            (None, None) => return Err(fail("set `key` or `key_sha256`".into())),
            (Some(k), None) => {
                if let Some(why) = &k.unusable {
                    return Err(fail(format!(
                        "{why}; no request could authenticate with it"
                    )));
                }
                if k.len < MIN_KEY_LEN {
                    return Err(fail(format!(
                        "the key is too short (at least {MIN_KEY_LEN} characters)"
                    )));
                }
                KeyRecord::with_digest(name, k.digest, k.label.clone())
            }
            (None, Some(d)) => {
                KeyRecord::with_digest(name, *d, format!("sha256:{}…", &d.to_hex()[..8]))
            }
        };
        record.rate_limits = RateLimits {
            requests_per_minute: self.requests_per_minute,
            requests_per_day: self.requests_per_day,
            tokens_per_minute: self.tokens_per_minute,
        };
        for (field, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("requests_per_day", self.requests_per_day),
            ("tokens_per_minute", self.tokens_per_minute),
        ] {
            if v == Some(0) {
                return Err(fail(format!("`{field}` must be at least 1")));
            }
        }
        if let Some(l) = self.limit {
            if !(l.is_finite() && l >= 0.0) {
                return Err(fail("`limit` must be a non-negative number of USD".into()));
            }
        }
        record.limit = self.limit;
        record.limit_reset = match &self.limit_reset {
            Some(s) => parse_limit_reset(s).map_err(fail)?,
            None => None,
        };
        record.expires_at = match &self.expires_at {
            None => None,
            Some(toml::Value::Integer(t)) => Some(*t),
            Some(toml::Value::String(s)) => Some(parse_rfc3339(s).map_err(fail)?),
            Some(toml::Value::Datetime(d)) => Some(parse_rfc3339(&d.to_string()).map_err(fail)?),
            Some(_) => {
                return Err(fail(
                    "`expires_at` must be RFC 3339 text or Unix seconds".into(),
                ))
            }
        };
        record.models = self.models.clone();
        record.disabled = self.disabled;
        Ok(record)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// One `[[providers]]` entry. Its `Debug` shows neither `api_key` nor the values of
/// `headers` (they may carry credentials).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name used in `<provider>/<model>`, endpoints and `provider.order`.
    pub name: String,
    /// `openai` (any OpenAI-compatible host), `anthropic`, `gemini`, `azure` or `bedrock`.
    pub kind: String,
    /// Base URL, as the provider's official SDK has it (required, but for `bedrock`, whose
    /// default follows from `region`).
    #[serde(default)]
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
    /// Connect timeout (default 10000; 0: none).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Time to the response headers (default 120000; 0: none).
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest silence within a response body (default 120000; 0: none).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// At most this many requests a minute go to this provider; past it the provider is
    /// skipped as unavailable (its endpoints fall back to others).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Azure `api-version` (kind `azure` only; absent: the `/openai/v1` form).
    #[serde(default)]
    pub api_version: Option<String>,
    /// The provider serves OpenAI's Responses API too (kinds `openai` and `azure`): clients of
    /// `/v1/responses` are served natively there.
    #[serde(default)]
    pub responses: bool,
    /// The region (kinds `bedrock` and `vertex`, required; Vertex also takes `global`).
    #[serde(default)]
    pub region: Option<String>,
    /// The Google Cloud project (kind `vertex`, required).
    #[serde(default)]
    pub project: Option<String>,
    /// A service-account JSON file (kind `vertex`; default: the file
    /// `GOOGLE_APPLICATION_CREDENTIALS` names).
    #[serde(default)]
    pub credentials_file: Option<String>,
    /// The variable holding the AWS access key id (default `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub aws_access_key_id_env: Option<String>,
    /// The variable holding the AWS secret access key (default `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub aws_secret_access_key_env: Option<String>,
    /// The variable holding the AWS session token (default `AWS_SESSION_TOKEN`).
    #[serde(default)]
    pub aws_session_token_env: Option<String>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &crate::error::redact_url(&self.base_url))
            .field("api_key_env", &self.api_key_env)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("headers", &headers)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("first_byte_timeout_ms", &self.first_byte_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("api_version", &self.api_version)
            .field("responses", &self.responses)
            .field("region", &self.region)
            .field("project", &self.project)
            .field("credentials_file", &self.credentials_file)
            .field("aws_access_key_id_env", &self.aws_access_key_id_env)
            .field("aws_secret_access_key_env", &self.aws_secret_access_key_env)
            .field("aws_session_token_env", &self.aws_session_token_env)
            .finish()
    }
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
    /// Hedging of slow answers: a delay in milliseconds, or `"p95"` (the endpoint's measured
    /// 95th percentile time to first token). Absent: off.
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
    /// For the model listing: a description.
    #[serde(default)]
    pub description: Option<String>,
    /// For the model listing: its release, in seconds since the Unix epoch.
    #[serde(default)]
    pub created: Option<u64>,
    /// For the model listing: the permanent slug of this version (default: the id).
    #[serde(default)]
    pub canonical_slug: Option<String>,
    /// For the model listing: its Hugging Face id.
    #[serde(default)]
    pub hugging_face_id: Option<String>,
    /// For the model listing: what it reads (default `["text"]`).
    #[serde(default)]
    pub input_modalities: Option<Vec<String>>,
    /// For the model listing: what it writes (default `["text"]`).
    #[serde(default)]
    pub output_modalities: Option<Vec<String>>,
    /// For the model listing: its tokenizer family (`GPT`, `Claude`, …; default `Other`).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// For the model listing: its instruction format.
    #[serde(default)]
    pub instruct_type: Option<String>,
    /// For the model listing: the date its training data ends.
    #[serde(default)]
    pub knowledge_cutoff: Option<String>,
    /// For the model listing: the date it is withdrawn.
    #[serde(default)]
    pub expiration_date: Option<String>,
    /// For the model listing: recommended sampling defaults (`temperature`, `top_p`, …).
    #[serde(default)]
    pub default_parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ModelConfig {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            description: self.description.clone(),
            created: self.created,
            canonical_slug: self.canonical_slug.clone(),
            hugging_face_id: self.hugging_face_id.clone(),
            input_modalities: self.input_modalities.clone(),
            output_modalities: self.output_modalities.clone(),
            tokenizer: self.tokenizer.clone(),
            instruct_type: self.instruct_type.clone(),
            knowledge_cutoff: self.knowledge_cutoff.clone(),
            expiration_date: self.expiration_date.clone(),
            default_parameters: self.default_parameters.clone(),
        }
    }
}

/// `hedge` of a `[[models]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum HedgeConfig {
    /// Milliseconds without a first token.
    Millis(u64),
    /// `"p95"`.
    Named(String),
}

impl HedgeConfig {
    fn parse(&self, model: &str) -> Result<Hedge, ConfigError> {
        match self {
            HedgeConfig::Millis(0) => Err(ConfigError(format!(
                "model `{model}`: hedge must be at least 1 ms (leave it out to turn hedging off)"
            ))),
            HedgeConfig::Millis(ms) => Ok(Hedge::After(Duration::from_millis(*ms))),
            HedgeConfig::Named(s) if s == "p95" => Ok(Hedge::MeasuredP95),
            HedgeConfig::Named(s) => Err(ConfigError(format!(
                "model `{model}`: hedge must be a delay in milliseconds or \"p95\", not `{s}`"
            ))),
        }
    }
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
    /// USD per million input tokens read from the provider's prompt cache (absent: the
    /// prompt price).
    #[serde(default)]
    pub cache_read_price: Option<f64>,
    /// USD per million input tokens written to the provider's prompt cache (absent: the
    /// prompt price).
    #[serde(default)]
    pub cache_write_price: Option<f64>,
    /// USD per million input tokens written to the prompt cache for an hour (Anthropic's
    /// `ttl: "1h"`; absent: the cache write price).
    #[serde(default)]
    pub cache_write_1h_price: Option<f64>,
    /// Context length at this endpoint.
    #[serde(default)]
    pub context_length: Option<u64>,
    /// Largest output at this endpoint.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Request parameters the endpoint supports (`tools`, `response_format`, `reasoning`,
    /// …), checked for requests with `provider.require_parameters`.
    #[serde(default)]
    pub supported_parameters: Option<Vec<String>>,
    /// Whether the provider may keep prompts for training: `"allow"` or `"deny"` (absent:
    /// undeclared, left out by `provider.data_collection: "deny"`).
    #[serde(default)]
    pub data_collection: Option<DataCollection>,
    /// Whether the provider keeps no data at all (zero data retention).
    #[serde(default)]
    pub zdr: Option<bool>,
    /// The weights' precision: `fp8`, `bf16`, `int4`, …
    #[serde(default)]
    pub quantization: Option<String>,
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
            credits: None,
            session_idle_secs: None,
            stream_usage: StreamUsage::default(),
            shutdown_grace_secs: None,
            max_connections: None,
            request_head_timeout_ms: None,
            http2_keepalive_interval_ms: None,
            body_idle_timeout_ms: None,
            access_log: None,
            cors_allow_origins: Vec::new(),
            providers,
            models: Vec::new(),
            aliases: BTreeMap::new(),
            state: None,
            keys: Vec::new(),
            fallback: FallbackConfig::default(),
            usage: UsageConfig::default(),
            telemetry: None,
        }
    }

    /// How long in-flight requests may run after a shutdown signal.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs.unwrap_or(30))
    }

    /// How the server treats connections: the defaults of [`ServeOptions`] where the
    /// configuration is silent.
    pub fn serve_options(&self) -> Result<ServeOptions, ConfigError> {
        let d = ServeOptions::default();
        let optional = |v: Option<u64>, default: Option<Duration>| match v {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => default,
        };
        let options = ServeOptions {
            shutdown_grace: self.shutdown_grace(),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            request_head_timeout: self
                .request_head_timeout_ms
                .map_or(d.request_head_timeout, Duration::from_millis),
            http2_keepalive: optional(self.http2_keepalive_interval_ms, d.http2_keepalive),
            body_idle_timeout: optional(self.body_idle_timeout_ms, d.body_idle_timeout),
        };
        if options.max_connections == 0 {
            return Err(ConfigError("`max_connections` must be at least 1".into()));
        }
        if options.request_head_timeout.is_zero() {
            return Err(ConfigError(
                "`request_head_timeout_ms` must be at least 1".into(),
            ));
        }
        Ok(options)
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
                provider.check_model(&e.model).map_err(|why| {
                    ConfigError(format!(
                        "model `{}`, endpoint `{}`: {why}",
                        m.id, e.provider
                    ))
                })?;
                let mut endpoint = Endpoint::new(
                    provider,
                    e.model.as_str(),
                    Pricing::new(e.prompt_price, e.completion_price)
                        .with_cache(e.cache_read_price, e.cache_write_price)
                        .with_cache_write_1h(e.cache_write_1h_price),
                );
                endpoint.context_length = e.context_length;
                endpoint.max_output_tokens = e.max_output_tokens;
                endpoint.supported_parameters = e.supported_parameters.as_deref().map(Arc::from);
                endpoint.data_collection = e.data_collection;
                endpoint.zdr = e.zdr;
                endpoint.quantization = e.quantization.clone();
                endpoints.push(endpoint);
            }
            catalog
                .add_model(Model {
                    id: Arc::from(m.id.as_str()),
                    name: m.name.clone().unwrap_or_else(|| m.id.clone()),
                    context_length: m.context_length,
                    endpoints,
                    hedge: m.hedge.as_ref().map(|h| h.parse(&m.id)).transpose()?,
                    info: m.info(),
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

/// The keys the proxy serves with, and whether it runs unauthenticated.
#[derive(Debug)]
pub struct Keys {
    /// Configured keys, the admin key and the keys made through the API.
    pub store: LocalKeyStore,
    /// The state database the keys were loaded from (also the default usage sink).
    pub db: StateDb,
    /// Whether `/v1/keys` is enabled (an admin key is configured).
    pub management: bool,
    /// No key at all: every request is let through (loopback only).
    pub anonymous: bool,
}

impl Config {
    /// The state directory in use.
    pub fn state_dir(&self) -> PathBuf {
        self.state
            .as_ref()
            .and_then(|s| s.dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// Opens the state store and loads every key: configured ones, the admin key (from
    /// `admin_key_env` through `env`) and those made through the API. Refuses an unusable
    /// state directory, and an unauthenticated gateway on a non-loopback address.
    pub fn keys(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Keys, ConfigError> {
        if self.redis_url().is_some() {
            return Err(ConfigError(
                "`[state] redis_url` is set: the keys live in Redis (the proxy connects to it)"
                    .into(),
            ));
        }
        let db = StateDb::open(&self.state_dir()).map_err(|e| ConfigError(e.0))?;
        let mut store =
            LocalKeyStore::open(Arc::new(db.clone())).map_err(|e| ConfigError(e.to_string()))?;
        let management = self.add_configured_keys(&mut store, env)?;
        let anonymous = !management && !store.has_inference_keys();
        self.check_anonymous(anonymous)?;
        Ok(Keys {
            store,
            db,
            management,
            anonymous,
        })
    }

    /// `[state] redis_url`, if set.
    pub fn redis_url(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.redis_url.as_deref())
    }

    /// The Redis options of `[state]` (`None` without `redis_url`).
    #[cfg(feature = "redis")]
    pub fn redis_options(&self) -> Result<Option<crate::redis::RedisOptions>, ConfigError> {
        use crate::redis::{Concern, RedisOptions};
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let Some(url) = &state.redis_url else {
            return Ok(None);
        };
        let mut o = RedisOptions::new(url.clone());
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                ConfigError(format!(
                    "[state] {key} `{}` cannot be read: {e}",
                    path.display()
                ))
            })
        };
        if let Some(path) = &state.redis_ca_file {
            o.tls_ca_pem = Some(read("redis_ca_file", path)?);
        }
        match (&state.redis_client_cert_file, &state.redis_client_key_file) {
            (Some(cert), Some(key)) => {
                o.tls_client = Some(crate::redis::ClientIdentity {
                    cert_pem: read("redis_client_cert_file", cert)?,
                    key_pem: read("redis_client_key_file", key)?,
                });
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError(
                    "[state] redis_client_cert_file and redis_client_key_file go together".into(),
                ))
            }
        }
        if let Some(p) = &state.redis_prefix {
            o.prefix = p.clone();
        }
        if let Some(ms) = state.redis_timeout_ms {
            if ms == 0 {
                return Err(ConfigError(
                    "[state] redis_timeout_ms must be at least 1".into(),
                ));
            }
            o.timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = state.redis_cache_ms {
            o.cache = Duration::from_millis(ms);
        }
        for c in &state.redis_fail_open {
            let concern = match c.as_str() {
                "rate_limits" => Concern::RateLimits,
                "keys" => Concern::Keys,
                "spend" => Concern::Spend,
                other => {
                    return Err(ConfigError(format!(
                        "[state] redis_fail_open: unknown `{other}` (use \"rate_limits\", \"keys\" or \"spend\")"
                    )))
                }
            };
            o.fail_open.push(concern);
        }
        Ok(Some(o))
    }

    /// The configured keys and the admin key, added to `store`; says whether key management
    /// is on (an admin key is configured).
    pub fn add_configured_keys(
        &self,
        store: &mut LocalKeyStore,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<bool, ConfigError> {
        for k in &self.keys {
            store
                .add(k.record()?)
                .map_err(|e| ConfigError(format!("[[keys]]: {e}")))?;
        }
        let mut management = false;
        if let Some(var) = &self.admin_key_env {
            let key = env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                ConfigError(format!(
                    "admin_key_env: environment variable `{var}` is not set; set it or remove admin_key_env"
                ))
            })?;
            if key.len() < MIN_KEY_LEN {
                return Err(ConfigError(format!(
                    "admin_key_env: the admin key in `{var}` is too short (at least {MIN_KEY_LEN} characters)"
                )));
            }
            if let Err(why) = crate::auth::check_key_text(&key) {
                return Err(ConfigError(format!(
                    "admin_key_env: the admin key in `{var}`: {why}"
                )));
            }
            store.add(KeyRecord::admin(&key)).map_err(|_| {
                ConfigError(
                    "admin_key_env: the admin key is also a client key; use a distinct key".into(),
                )
            })?;
            management = true;
        }
        Ok(management)
    }

    /// Refuses an unauthenticated gateway (`anonymous`) on a non-loopback address.
    pub fn check_anonymous(&self, anonymous: bool) -> Result<(), ConfigError> {
        if anonymous && !self.listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "refusing to listen on {} without client keys: add `[[keys]]` (or `admin_key_env` to create keys), or listen on a loopback address",
                self.listen
            )));
        }
        Ok(())
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
            requests_per_minute: None,
            api_version: None,
            responses: false,
            region: None,
            project: None,
            credentials_file: None,
            aws_access_key_id_env: None,
            aws_secret_access_key_env: None,
            aws_session_token_env: None,
        }
    }

    /// A Vertex provider's service account: `credentials_file`, else the file
    /// `GOOGLE_APPLICATION_CREDENTIALS` names; what is wrong with it is a start-up error.
    fn service_account(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServiceAccount, ConfigError> {
        let name = &self.name;
        let path = match (&self.credentials_file, env("GOOGLE_APPLICATION_CREDENTIALS")) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) if !p.is_empty() => p,
            _ => {
                return Err(ConfigError(format!(
                    "provider `{name}`: kind = \"vertex\" needs a service account: set `credentials_file` or GOOGLE_APPLICATION_CREDENTIALS"
                )))
            }
        };
        ServiceAccount::from_file(&path).map_err(|e| ConfigError(format!("provider `{name}`: {e}")))
    }

    /// A Bedrock provider's AWS credentials from the environment (`None` when it has an API
    /// key instead).
    fn aws_credentials(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        has_key: bool,
    ) -> Result<Option<AwsCredentials>, ConfigError> {
        let name = &self.name;
        let var = |set: &Option<String>, default: &'static str| {
            let var = set.as_deref().unwrap_or(default);
            (var.to_owned(), env(var).filter(|v| !v.is_empty()))
        };
        let (id_var, id) = var(&self.aws_access_key_id_env, "AWS_ACCESS_KEY_ID");
        let (secret_var, secret) = var(&self.aws_secret_access_key_env, "AWS_SECRET_ACCESS_KEY");
        let (_, token) = var(&self.aws_session_token_env, "AWS_SESSION_TOKEN");
        match (id, secret) {
            // The API key wins when the environment holds both (as the AWS SDKs' bearer auth).
            _ if has_key => Ok(None),
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(AwsCredentials {
                access_key_id,
                secret_access_key,
                session_token: token,
            })),
            (None, None) => Err(ConfigError(format!(
                "provider `{name}`: no AWS credentials: set `{id_var}` and `{secret_var}`, or a Bedrock API key with `api_key_env`"
            ))),
            (Some(_), None) => Err(ConfigError(format!(
                "provider `{name}`: `{id_var}` is set but `{secret_var}` is not"
            ))),
            (None, Some(_)) => Err(ConfigError(format!(
                "provider `{name}`: `{secret_var}` is set but `{id_var}` is not"
            ))),
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
        // 0: no timeout (as `deadline_ms = 0` is no deadline), which the timers take as never.
        let ms = |v: Option<u64>, default: Duration| match v {
            Some(0) => Duration::MAX,
            Some(ms) => Duration::from_millis(ms),
            None => default,
        };
        let timeouts = Timeouts {
            connect: ms(self.connect_timeout_ms, d.connect),
            first_byte: ms(self.first_byte_timeout_ms, d.first_byte),
            idle: ms(self.idle_timeout_ms, d.idle),
        };
        if self.base_url.is_empty() && !matches!(kind, ProviderKind::Bedrock | ProviderKind::Vertex)
        {
            return Err(ConfigError(format!(
                "provider `{name}`: `base_url` is required"
            )));
        }
        let aws = if kind == ProviderKind::Bedrock {
            self.aws_credentials(env, key.is_some())?
        } else {
            let set = self.aws_access_key_id_env.is_some()
                || self.aws_secret_access_key_env.is_some()
                || self.aws_session_token_env.is_some();
            if set {
                return Err(ConfigError(format!(
                    "provider `{name}`: the `aws_*_env` keys apply to kind = \"bedrock\" only"
                )));
            }
            None
        };
        let account = match kind {
            ProviderKind::Vertex => Some(self.service_account(env)?),
            _ if self.credentials_file.is_some() => {
                return Err(ConfigError(format!(
                    "provider `{name}`: `credentials_file` applies to kind = \"vertex\" only"
                )))
            }
            _ => None,
        };
        let mut b = Provider::builder(name.clone(), kind, self.base_url.clone())
            .project(self.project.clone())
            .service_account(account)
            .api_key(key)
            .api_version(self.api_version.clone())
            .region(self.region.clone())
            .aws_credentials(aws)
            .responses(self.responses)
            .timeouts(timeouts);
        if let Some(rpm) = self.requests_per_minute {
            let rpm = std::num::NonZeroU32::new(rpm).ok_or_else(|| {
                ConfigError(format!(
                    "provider `{name}`: requests_per_minute must be at least 1 (leave it out for no limit)"
                ))
            })?;
            b = b.requests_per_minute(Some(rpm));
        }
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
    fn debug_output_shows_no_secret() {
        let cfg = Config::from_toml(
            r#"
[[providers]]
name = "p"
kind = "openai"
base_url = "https://x"
api_key = "sk-provider-secret-1"
headers = { "x-portkey-api-key" = "header-secret-2" }
[state]
redis_url = "redis://user:redis-secret-3@10.0.0.1:6379/0"
[[keys]]
name = "a"
key = "sk-mg-client-secret-4"
"#,
        )
        .unwrap();
        let builder = crate::provider::Provider::builder(
            "p",
            crate::provider::ProviderKind::OpenAi,
            "https://x",
        )
        .api_key(Some("sk-provider-secret-1".into()))
        .header("x-portkey-api-key", "header-secret-2");
        let shown = format!("{cfg:?} {cfg:#?} {builder:?}");
        for secret in ["secret-1", "secret-2", "secret-3", "secret-4"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for visible in ["x-portkey-api-key", "<redacted>", "10.0.0.1:6379/0"] {
            assert!(shown.contains(visible), "{visible} not in {shown}");
        }
    }

    #[test]
    fn client_keys_no_request_could_carry_are_refused_at_start() {
        let long = "k".repeat(257);
        for (key, why) in [
            ("sk-mg-has a space-inside", "a space"),
            ("sk-mg-caf\u{e9}-0123456789ab", "non-ASCII"),
            ("sk-mg-tab\t0123456789abcdef", "a space, a control"),
            (long.as_str(), "longer than 256 bytes"),
        ] {
            let toml = format!("[[keys]]\nname = \"k\"\nkey = {key:?}\n");
            let cfg = Config::from_toml(&toml).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut store =
                LocalKeyStore::open(Arc::new(StateDb::open(dir.path()).unwrap())).unwrap();
            let err = cfg.add_configured_keys(&mut store, &no_env).unwrap_err().0;
            assert!(
                err.contains(why) && err.contains("key `k`"),
                "{key:?}: {err}"
            );
        }
        let cfg = Config::from_toml("admin_key_env = \"A\"").unwrap();
        let mut store = LocalKeyStore::in_memory();
        let err = cfg
            .add_configured_keys(&mut store, &|_: &str| Some("admin key with spaces".into()))
            .unwrap_err()
            .0;
        assert!(
            err.contains("admin_key_env") && err.contains("a space"),
            "{err}"
        );
    }

    #[test]
    fn bedrock_takes_its_region_and_credentials_from_the_environment() {
        let build = |toml: &str, vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            Config::from_toml(&format!(
                "[[providers]]\nname = \"b\"\nkind = \"bedrock\"\n{toml}"
            ))
            .and_then(|c| c.catalog(&env).map(|_| ()))
            .map_err(|e| e.0)
        };
        let aws = [
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cret"),
        ];
        assert_eq!(build("region = \"us-east-1\"", &aws), Ok(()));
        assert!(build("", &aws).unwrap_err().contains("needs a `region`"));
        let err = build("region = \"us-east-1\"", &[]).unwrap_err();
        assert!(
            err.contains("AWS_ACCESS_KEY_ID") && err.contains("api_key_env"),
            "{err}"
        );
        assert!(build("region = \"eu-west-1\"", &aws[..1])
            .unwrap_err()
            .contains("AWS_SECRET_ACCESS_KEY"));
        // Names overridden; a session token; or a Bedrock API key alone.
        assert_eq!(
            build(
                "region = \"eu-west-1\"\naws_access_key_id_env = \"K\"\naws_secret_access_key_env = \"S\"",
                &[("K", "AKID"), ("S", "x"), ("AWS_SESSION_TOKEN", "tok")]
            ),
            Ok(())
        );
        assert_eq!(
            build(
                "region = \"eu-west-1\"\napi_key_env = \"AWS_BEARER_TOKEN_BEDROCK\"",
                &[("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")]
            ),
            Ok(())
        );
        assert!(build("region = \"x\"", &aws).is_ok());
        let err = Config::from_toml(
            "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"https://x\"\nregion = \"us-east-1\"",
        )
        .and_then(|c| c.catalog(&no_env).map(|_| ()))
        .unwrap_err()
        .0;
        assert!(err.contains("bedrock"), "{err}");
        let err = Config::from_toml("[[providers]]\nname = \"o\"\nkind = \"openai\"")
            .and_then(|c| c.catalog(&no_env).map(|_| ()))
            .unwrap_err()
            .0;
        assert!(err.contains("`base_url` is required"), "{err}");
    }

    #[test]
    fn vertex_needs_a_project_a_region_and_a_good_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"type":"service_account","client_email":"a@b"}"#).unwrap();
        let build = |toml: &str, env: &dyn Fn(&str) -> Option<String>| {
            Config::from_toml(&format!(
                "[[providers]]\nname = \"v\"\nkind = \"vertex\"\n{toml}"
            ))
            .and_then(|c| c.catalog(env).map(|_| ()))
            .unwrap_err()
            .0
        };
        let file = format!("credentials_file = {:?}\n", bad.to_str().unwrap());
        let err = build(
            &format!("project = \"p\"\nregion = \"global\"\n{file}"),
            &no_env,
        );
        assert!(
            err.contains("bad.json") && err.contains("`private_key`"),
            "{err}"
        );
        let err = build("project = \"p\"\nregion = \"global\"", &no_env);
        assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
        let path = bad.to_str().unwrap().to_owned();
        let env = move |k: &str| (k == "GOOGLE_APPLICATION_CREDENTIALS").then(|| path.clone());
        let err = build("project = \"p\"\nregion = \"global\"", &env);
        assert!(err.contains("`private_key`"), "{err}");
        let good = format!(
            "credentials_file = \"{}/tests/fixtures/vertex/service_account.json\"\n",
            env!("CARGO_MANIFEST_DIR")
        );
        assert!(
            build(&format!("region = \"global\"\n{good}"), &no_env).contains("needs a `project`")
        );
        assert!(build(&format!("project = \"p\"\n{good}"), &no_env).contains("needs a `region`"));
    }

    #[test]
    fn later_sections_and_mistakes_are_refused_clearly() {
        let err = |toml: &str| {
            Config::from_toml(toml)
                .and_then(|c| c.catalog(&no_env).map(|_| ()))
                .unwrap_err()
                .0
        };
        assert!(err("lisen = \"127.0.0.1:1\"").contains("unknown field"));
        assert!(
            err("[[providers]]\nname = \"a\"\nkind = \"vertexx\"\nbase_url = \"https://x\"")
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
        let priced = |line: &str| {
            format!(
                "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://x\"\n\
                 [[models]]\nid = \"m\"\n[[models.endpoints]]\nprovider = \"p\"\nmodel = \"x\"\n{line}"
            )
        };
        assert_eq!(
            err(&priced("cache_write_price = -1.0")),
            "model `m`: the cache write price must be between 0 and 1000000 (USD per million tokens)"
        );
        assert!(err(&priced("prompt_price = nan")).contains("the prompt price"));
        assert_eq!(
            err(&priced("cache_write_1h_price = inf")),
            "model `m`: the one-hour cache write price must be between 0 and 1000000 (USD per million tokens)"
        );
        assert!(err(&priced("completion_price = 1e300"))
            .contains("the completion price must be between"));
        assert!(err(&priced("cache_price = 1.0")).contains("unknown field `cache_price`"));
        let cfg = Config::from_toml(&priced(
            "prompt_price = 3.0\ncache_read_price = 0.3\ncache_write_1h_price = 6.0",
        ))
        .unwrap();
        let catalog = cfg.catalog(&no_env).unwrap();
        let p = catalog.resolve("m").unwrap().targets[0].pricing.unwrap();
        assert_eq!(
            (
                p.cache_read_per_million,
                p.cache_write_per_million,
                p.cache_write_1h_per_million
            ),
            (Some(0.3), None, Some(6.0))
        );
    }

    #[test]
    fn fallback_section_builds_its_policy_and_refuses_nonsense() {
        let cfg = Config::from_toml(
            "[fallback]\nmax_attempts = 3\nretries_per_target = 1\ndeadline_ms = 0\nmax_cooldown_ms = 0\nfailures_to_cool = 2\n",
        )
        .unwrap();
        let layer = cfg.fallback.layer().unwrap();
        let p = layer.current_policy();
        assert_eq!((p.max_attempts, p.retries_per_target), (3, 1));
        assert_eq!(p.deadline, None);
        assert_eq!(p.health.max_cooldown, Duration::ZERO);
        assert_eq!(p.health.failures_to_cool, 2);
        assert_eq!(
            Config::from_toml("")
                .unwrap()
                .fallback
                .layer()
                .unwrap()
                .current_policy(),
            &FallbackPolicy::default()
        );
        let bad = |t: &str| {
            Config::from_toml(t)
                .and_then(|c| c.fallback.layer().map(|_| ()))
                .unwrap_err()
                .0
        };
        assert!(bad("[fallback]\nmax_attempts = 0").contains("max_attempts"));
        assert!(bad("[fallback]\nretry_budget_percent = -1.0").contains("retry_budget_percent"));
        assert!(bad("[fallback]\nretries = 2").contains("unknown field"));
        assert!(
            Config::from_toml("[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"https://x\"\nrequests_per_minute = 0")
                .and_then(|c| c.catalog(&no_env).map(|_| ()))
                .unwrap_err()
                .0
                .contains("requests_per_minute")
        );
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
