//! [`AuthLayer`]: who is calling.
//!
//! Reads the client's key from `Authorization: Bearer <key>` (or `x-api-key: <key>`, as the
//! Anthropic SDK sends it), looks its SHA-256 digest up in a [`KeyStore`] and inserts the
//! [`Principal`] (key id, name, limits, allowed models) into the request extensions for the
//! layers below. Keys are only ever held as digests ([`KeyDigest`]), compared in constant
//! time; no plaintext key is kept once a store is built, and no key reaches a log line, an
//! error message or a metric.
//!
//! Rejections are answers, not errors: a missing, malformed, unknown, disabled or expired key
//! is a `401` in the error envelope (with `WWW-Authenticate: Bearer`), the wrong kind of key a
//! `403`. Management keys (the admin key) manage keys and cannot call inference; inference keys
//! cannot manage ([`AuthLayer::management`]).
//!
//! The layer is generic over any `Request<B>`: mount it in front of your own axum routes too.
//!
//! ```
//! use std::sync::Arc;
//! use modelgate::auth::{AuthLayer, KeyRecord, LocalKeyStore, Principal};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let mut store = LocalKeyStore::in_memory();
//! store.add(KeyRecord::from_config("team-a", "sk-mg-team-a-0123456789")).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(AuthLayer::new(Arc::new(store)))
//!     .service(service_fn(|req: http::Request<String>| async move {
//!         let who = req.extensions().get::<Principal>().unwrap().name.clone();
//!         Ok::<_, std::convert::Infallible>(http::Response::new(who))
//!     }));
//! let req = http::Request::builder()
//!     .header("authorization", "Bearer sk-mg-team-a-0123456789")
//!     .body(String::new())
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # });
//! ```

mod failures;
pub(crate) mod store;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use pin_project::pin_project;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

pub use self::failures::{ClientAddr, FailedAttempts, MAX_TRACKED_ADDRESSES};
pub use self::store::{KeyFile, LocalKeyStore};
use crate::body::GatewayBody;
use crate::decode::GENERATION_ID_NAME;
use crate::facts::GenerationId;
use crate::future::BoxFuture;
use crate::Error;

/// `x-api-key`, as the Anthropic SDK sends the key (a constant: a name given as text is
/// parsed and hashed at each lookup).
const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// Longest key accepted in a header, in bytes; anything longer is a malformed key (401).
pub const MAX_KEY_LEN: usize = 256;

/// The SHA-256 digest of a key: the only form in which keys are kept.
///
/// Equality is constant-time. `Debug` shows the first four bytes only.
#[derive(Clone, Copy, Eq)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of a plaintext key.
    pub fn of(key: &str) -> Self {
        use sha2::Digest;
        KeyDigest(sha2::Sha256::digest(key.as_bytes()).into())
    }

    /// Parses 64 hexadecimal digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(KeyDigest(out))
    }

    /// The digest as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", hex(&self.0[..4]))
    }
}

impl Serialize for KeyDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyDigest::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hexadecimal digits (a SHA-256)"))
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Calls the models (`/v1/chat/completions`, `/v1/key`).
    Inference,
    /// Manages keys (`/v1/keys`); cannot call the models.
    Management,
}

/// Where a key was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// `[[keys]]` or `admin_key_env` in the configuration: read-only through the API.
    Config,
    /// Created through `POST /v1/keys`; kept in the state store.
    Api,
}

/// When a key's credit `limit` starts over (UTC; weeks start on Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitReset {
    /// Every day at 00:00 UTC.
    Daily,
    /// Every Monday at 00:00 UTC.
    Weekly,
    /// The first of every month at 00:00 UTC.
    Monthly,
}

/// A key's rate limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests per day.
    #[serde(default)]
    pub requests_per_day: Option<u32>,
    /// Tokens (prompt and completion) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}

impl RateLimits {
    /// With at most `n` requests a minute.
    pub fn with_requests_per_minute(mut self, n: u32) -> Self {
        self.requests_per_minute = Some(n);
        self
    }

    /// With at most `n` requests a day.
    pub fn with_requests_per_day(mut self, n: u32) -> Self {
        self.requests_per_day = Some(n);
        self
    }

    /// With at most `n` tokens a minute.
    pub fn with_tokens_per_minute(mut self, n: u32) -> Self {
        self.tokens_per_minute = Some(n);
        self
    }

    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.requests_per_day.is_none()
            && self.tokens_per_minute.is_none()
    }
}

/// Everything the gateway knows about one key, except the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyRecord {
    /// Stable id (`key_…` for keys made through the API, `cfg_<name>` for configured ones).
    pub id: String,
    /// Human name.
    pub name: String,
    /// A display form of the key (`sk-mg-1a2b…9f0e`), never enough to use it.
    pub label: String,
    /// SHA-256 of the key.
    pub digest: KeyDigest,
    /// What the key may do.
    pub role: KeyRole,
    /// Where it was defined.
    pub source: KeySource,
    /// A disabled key is refused (401).
    #[serde(default)]
    pub disabled: bool,
    /// Creation time, Unix seconds.
    #[serde(default)]
    pub created_at: i64,
    /// Expiry, Unix seconds; from then on the key is refused (401).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Credit limit in USD; `None` is unlimited.
    #[serde(default)]
    pub limit: Option<f64>,
    /// When the credit limit starts over; `None`: never.
    #[serde(default)]
    pub limit_reset: Option<LimitReset>,
    /// Rate limits.
    #[serde(default, flatten)]
    pub rate_limits: RateLimits,
    /// The model ids this key may call; `None`: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

impl KeyRecord {
    /// An inference key defined in configuration, from its plaintext (which is not kept).
    pub fn from_config(name: &str, key: &str) -> Self {
        KeyRecord::with_digest(name, KeyDigest::of(key), label_of(key))
    }

    /// An inference key defined in configuration by its digest.
    pub fn with_digest(name: &str, digest: KeyDigest, label: String) -> Self {
        KeyRecord {
            id: format!("cfg_{name}"),
            name: name.to_owned(),
            label,
            digest,
            role: KeyRole::Inference,
            source: KeySource::Config,
            disabled: false,
            created_at: 0,
            expires_at: None,
            limit: None,
            limit_reset: None,
            rate_limits: RateLimits::default(),
            models: None,
        }
    }

    /// The admin key (management only), from its plaintext (which is not kept).
    pub fn admin(key: &str) -> Self {
        KeyRecord {
            id: "admin".into(),
            name: "admin".into(),
            role: KeyRole::Management,
            ..KeyRecord::from_config("admin", key)
        }
    }

    /// Whether the key has expired at `now` (Unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// The display form of a key: its last three characters (none for a key under 24), after the
/// gateway's own `sk-mg-` prefix when it has it.
pub fn label_of(key: &str) -> String {
    // The gateway's own prefix is the same for every key it makes: it tells nothing.
    let prefix = if key.starts_with("sk-mg-") {
        "sk-mg-"
    } else {
        ""
    };
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 24 {
        // Too short to show any of it.
        return format!("{prefix}…");
    }
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{prefix}…{tail}")
}

/// The caller of a request, inserted by [`AuthLayer`] into the request extensions.
#[derive(Debug, Clone)]
pub struct Principal(Arc<KeyRecord>);

impl Principal {
    /// Wraps a key record.
    pub fn new(record: KeyRecord) -> Self {
        Principal(Arc::new(record))
    }

    /// The caller of an unauthenticated gateway (no keys configured, loopback only): no limits.
    pub fn anonymous() -> Self {
        static ANONYMOUS: std::sync::OnceLock<Principal> = std::sync::OnceLock::new();
        ANONYMOUS
            .get_or_init(|| {
                Principal::new(KeyRecord {
                    id: "anonymous".into(),
                    ..KeyRecord::with_digest("anonymous", KeyDigest([0; 32]), String::new())
                })
            })
            .clone()
    }

    /// The record.
    pub fn record(&self) -> &Arc<KeyRecord> {
        &self.0
    }
}

impl std::ops::Deref for Principal {
    type Target = KeyRecord;
    fn deref(&self) -> &KeyRecord {
        &self.0
    }
}

/// Why a request's credentials were refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsError {
    /// No `Authorization` and no `x-api-key`.
    Missing,
    /// `Authorization` with a scheme other than `Bearer`.
    WrongScheme,
    /// `Bearer` with nothing after it, or an empty `x-api-key`.
    Empty,
    /// More than one credential header.
    Ambiguous,
    /// Not printable ASCII, whitespace inside, or longer than [`MAX_KEY_LEN`].
    Malformed,
}

impl CredentialsError {
    fn message(self) -> &'static str {
        match self {
            CredentialsError::Missing => {
                "missing API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)"
            }
            CredentialsError::WrongScheme => {
                "the Authorization header must use the Bearer scheme: `Authorization: Bearer <key>`"
            }
            CredentialsError::Empty => "the API key is empty",
            CredentialsError::Ambiguous => "more than one API key was sent (two `Authorization` or `x-api-key` headers, or both with different keys); send one",
            CredentialsError::Malformed => "the API key is malformed",
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>` first, then `x-api-key`.
///
/// Never panics; any header that is not one clean token is an error, never a guess.
pub fn credentials(headers: &HeaderMap) -> Result<&str, CredentialsError> {
    let mut auth = headers.get_all(AUTHORIZATION).iter();
    let bearer = match (auth.next(), auth.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(CredentialsError::Ambiguous),
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| CredentialsError::Malformed)?;
            let value = value.trim_matches(|c| c == ' ' || c == '\t');
            let (scheme, token) = match value.find([' ', '\t']) {
                Some(at) => (&value[..at], &value[at..]),
                None => (value, ""),
            };
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(CredentialsError::WrongScheme);
            }
            Some(token_of(token)?)
        }
    };
    let mut api_key = headers.get_all(X_API_KEY).iter();
    let api_key = match (api_key.next(), api_key.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(CredentialsError::Ambiguous),
        (Some(value), None) => Some(token_of(
            value.to_str().map_err(|_| CredentialsError::Malformed)?,
        )?),
    };
    match (bearer, api_key) {
        // Both, saying different things: which one the client meant is a guess, not made.
        (Some(a), Some(b)) if a != b => Err(CredentialsError::Ambiguous),
        (Some(key), _) | (None, Some(key)) => Ok(key),
        (None, None) => Err(CredentialsError::Missing),
    }
}

/// Whether `key` can ever be presented in a header and accepted: printable ASCII without
/// spaces, at most [`MAX_KEY_LEN`] bytes. `Err` says why not.
pub fn check_key_text(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_LEN {
        return Err(format!("the key is longer than {MAX_KEY_LEN} bytes"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the key holds a space, a control or a non-ASCII character: no client could send it"
                .into(),
        );
    }
    Ok(())
}

fn token_of(raw: &str) -> Result<&str, CredentialsError> {
    let token = raw.trim_matches(|c| c == ' ' || c == '\t');
    if token.is_empty() {
        return Err(CredentialsError::Empty);
    }
    if token.len() > MAX_KEY_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CredentialsError::Malformed);
    }
    Ok(token)
}

/// Why a key store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No key of that id.
    NotFound,
    /// The key is defined in the configuration file and cannot be changed through the API.
    ReadOnly,
    /// The request is invalid (the message says why).
    Invalid(String),
    /// The store cannot be read or written (disk, database).
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("no such key"),
            StoreError::ReadOnly => f.write_str(
                "this key is defined in the configuration file; change it there and restart",
            ),
            StoreError::Invalid(m) => f.write_str(m),
            StoreError::Unavailable(m) => write!(f, "the state store is unavailable: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// The envelope answer for this error.
    pub fn to_error(&self) -> Error {
        match self {
            StoreError::NotFound => {
                Error::new(StatusCode::NOT_FOUND, "not_found_error", self.to_string())
            }
            StoreError::ReadOnly => Error::new(StatusCode::CONFLICT, "conflict", self.to_string()),
            StoreError::Invalid(m) => Error::invalid_request(m.clone(), None),
            StoreError::Unavailable(_) => Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                self.to_string(),
            ),
        }
    }
}

/// A new key, as `POST /v1/keys` asks for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewKey {
    /// Human name (required, 1 to 128 characters).
    pub name: String,
    /// Credit limit in USD.
    pub limit: Option<f64>,
    /// When the credit limit starts over (`None`: never).
    pub limit_reset: Option<LimitReset>,
    /// Expiry, Unix seconds.
    pub expires_at: Option<i64>,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Allowed model ids.
    pub models: Option<Vec<String>>,
}

/// Changes to a key, as `PATCH /v1/keys/{id}` asks for them: an absent field is unchanged, a
/// `null` one cleared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<String>,
    /// Disable (`true`) or enable.
    pub disabled: Option<bool>,
    /// New credit limit (`Some(None)`: unlimited).
    pub limit: Option<Option<f64>>,
    /// New reset period.
    pub limit_reset: Option<Option<LimitReset>>,
    /// New expiry.
    pub expires_at: Option<Option<i64>>,
    /// New requests per minute.
    pub requests_per_minute: Option<Option<u32>>,
    /// New requests per day.
    pub requests_per_day: Option<Option<u32>>,
    /// New tokens per minute.
    pub tokens_per_minute: Option<Option<u32>>,
    /// New allowed models.
    pub models: Option<Option<Vec<String>>>,
}

impl KeyPatch {
    /// Applies the changes to a record.
    pub fn apply(&self, r: &mut KeyRecord) {
        if let Some(v) = &self.name {
            r.name = v.clone();
        }
        if let Some(v) = self.disabled {
            r.disabled = v;
        }
        if let Some(v) = self.limit {
            r.limit = v;
        }
        if let Some(v) = self.limit_reset {
            r.limit_reset = v;
        }
        if let Some(v) = self.expires_at {
            r.expires_at = v;
        }
        if let Some(v) = self.requests_per_minute {
            r.rate_limits.requests_per_minute = v;
        }
        if let Some(v) = self.requests_per_day {
            r.rate_limits.requests_per_day = v;
        }
        if let Some(v) = self.tokens_per_minute {
            r.rate_limits.tokens_per_minute = v;
        }
        if let Some(v) = &self.models {
            r.models = v.clone();
        }
    }
}

/// Where keys live. Lookups are on the hot path of every request; the rest is the management
/// API. The in-process [`LocalKeyStore`] keeps every key in memory (and runtime keys in the
/// embedded state database); a shared store (Redis) can take over behind the same trait.
pub trait KeyStore: Send + Sync + 'static {
    /// The key with this digest, if any (disabled and expired ones included: the caller
    /// decides).
    fn lookup(&self, digest: KeyDigest) -> BoxFuture<'_, Result<Option<Principal>, StoreError>>;
    /// [`lookup`](KeyStore::lookup)'s answer when the store has it without waiting (an index
    /// in memory, a fresh cache); `None` when it has to ask elsewhere. [`AuthLayer`] tries
    /// this first, so a request whose key is answered here costs no allocation. The default
    /// always says `None`.
    fn lookup_now(&self, digest: KeyDigest) -> Option<Result<Option<Principal>, StoreError>> {
        let _ = digest;
        None
    }
}

/// A [`KeyStore`] whose keys can be made and changed at run time: what the proxy's key
/// management API (`/v1/keys`) needs. An embedder that only authenticates implements
/// [`KeyStore`] alone.
pub trait ManagedKeyStore: KeyStore {
    /// Creates an inference key; returns its record and the plaintext key (shown once).
    fn create(&self, key: NewKey) -> BoxFuture<'_, Result<(Principal, String), StoreError>>;
    /// Every inference key, configured ones included.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Principal>, StoreError>>;
    /// One key by id.
    fn get(&self, id: String) -> BoxFuture<'_, Result<Principal, StoreError>>;
    /// Changes a key made through the API.
    fn update(&self, id: String, patch: KeyPatch) -> BoxFuture<'_, Result<Principal, StoreError>>;
    /// Deletes a key made through the API.
    fn delete(&self, id: String) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Authenticates requests against a [`KeyStore`]; see the [module docs](self).
#[derive(Clone)]
pub struct AuthLayer {
    store: Arc<dyn KeyStore>,
    role: KeyRole,
    anonymous: bool,
    failures: Option<Arc<FailedAttempts>>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("role", &self.role)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// Inference keys only.
    pub fn new(store: Arc<dyn KeyStore>) -> Self {
        AuthLayer {
            store,
            role: KeyRole::Inference,
            anonymous: false,
            failures: None,
        }
    }

    /// Counts failed attempts per client address (the request's [`ClientAddr`]) in `failures`
    /// and holds back an address past its limit: see [`FailedAttempts`]. Share one among the
    /// layers of a server, so every route counts.
    pub fn hold_back_failures(mut self, failures: Arc<FailedAttempts>) -> Self {
        self.failures = Some(failures);
        self
    }

    /// Management keys only (the key management routes).
    pub fn management(mut self) -> Self {
        self.role = KeyRole::Management;
        self
    }

    /// With `true`, a request without a known key goes through as [`Principal::anonymous`]
    /// (the proxy's unauthenticated loopback mode); a known key still gets its own principal.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.anonymous = allow;
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The [`AuthLayer`] service.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

/// An authentication or authorization refusal: `401` or `403` in the envelope.
fn refuse(status: StatusCode, message: impl Into<String>) -> Error {
    let kind = if status == StatusCode::FORBIDDEN {
        "permission_error"
    } else {
        "authentication_error"
    };
    Error::new(status, kind, message)
}

/// The envelope answer of a refusal; a 401 says `WWW-Authenticate: Bearer`.
#[cfg(feature = "proxy")]
pub(crate) fn refusal(err: &Error) -> Response<http_body_util::Full<bytes::Bytes>> {
    let mut res = err.clone().into_response();
    if err.status() == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// The answer of a layer that refuses a request before the stack, in the envelope of the
/// request's [`Dialect`](crate::Dialect): carries the request's generation id when one was
/// assigned.
pub(crate) fn reject<B>(err: &Error, extensions: &http::Extensions) -> Response<GatewayBody<B>> {
    // In the envelope of the client's dialect.
    let mut res = crate::dialect::Dialect::of(extensions).error_response(err);
    if err.status() == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(id) = extensions.get::<GenerationId>() {
        if let Ok(v) = HeaderValue::from_str(id.as_str()) {
            res.headers_mut().insert(GENERATION_ID_NAME, v);
        }
    }
    res.map(GatewayBody::full)
}

impl AuthLayer {
    /// Who is calling, or the refusal. Used by [`Auth`] and by routes that authenticate by
    /// hand.
    /// The request's head and extensions say who: its key, and its [`ClientAddr`].
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Principal, Error> {
        let addr = client_addr(extensions);
        match self.authenticate_now(headers, addr) {
            Verdict::Done(verdict) => verdict,
            Verdict::Ask(digest) => self.counted(addr, self.judge(self.store.lookup(digest).await)),
        }
    }

    /// The verdict when the store answers without waiting, else the digest to look up.
    fn authenticate_now(&self, headers: &HeaderMap, addr: Option<std::net::IpAddr>) -> Verdict {
        if let (Some(failures), Some(addr)) = (&self.failures, addr) {
            if let Some(wait) = failures.held_back(addr) {
                return Verdict::Done(Err(Error::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    "too many failed API key attempts from this address; retry after the Retry-After delay",
                )
                .with_retry_after(Some(wait))));
            }
        }
        let token = match credentials(headers) {
            Ok(t) => t,
            Err(_) if self.anonymous => return Verdict::Done(Ok(Principal::anonymous())),
            Err(e) => {
                return Verdict::Done(
                    self.counted(addr, Err(refuse(StatusCode::UNAUTHORIZED, e.message()))),
                );
            }
        };
        let digest = KeyDigest::of(token);
        match self.store.lookup_now(digest) {
            Some(found) => Verdict::Done(self.counted(addr, self.judge(found))),
            None => Verdict::Ask(digest),
        }
    }

    /// `verdict`, a `401` counted against the client's address.
    fn counted(
        &self,
        addr: Option<std::net::IpAddr>,
        verdict: Result<Principal, Error>,
    ) -> Result<Principal, Error> {
        if let (Err(e), Some(failures), Some(addr)) = (&verdict, &self.failures, addr) {
            if e.status() == StatusCode::UNAUTHORIZED {
                failures.failed(addr);
            }
        }
        verdict
    }

    /// The verdict on what the store found for the caller's key.
    fn judge(&self, found: Result<Option<Principal>, StoreError>) -> Result<Principal, Error> {
        let found = found.map_err(|e| e.to_error())?;
        let Some(principal) = found else {
            if self.anonymous {
                return Ok(Principal::anonymous());
            }
            return Err(refuse(StatusCode::UNAUTHORIZED, "invalid API key"));
        };
        if principal.disabled {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("API key {} is disabled", principal.label),
            ));
        }
        if principal.is_expired(now_unix()) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("API key {} has expired", principal.label),
            ));
        }
        if principal.role != self.role {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                match self.role {
                    KeyRole::Inference => {
                        "this is a management key: it manages keys and cannot call models"
                    }
                    KeyRole::Management => "this route needs the admin key",
                },
            ));
        }
        Ok(principal)
    }
}

/// What [`AuthLayer::authenticate_now`] could tell.
enum Verdict {
    /// Let in (with this principal) or refused.
    Done(Result<Principal, Error>),
    /// The store has to be asked for this digest.
    Ask(KeyDigest),
}

/// The request's client address, when the server said it.
fn client_addr(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<ClientAddr>().map(|a| a.0)
}

/// Now, in Unix seconds (signed, as key times are).
pub(crate) fn now_unix() -> i64 {
    crate::facts::unix_now() as i64
}

impl<S, B, ResB> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<GatewayBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let addr = client_addr(req.extensions());
        match self.layer.authenticate_now(req.headers(), addr) {
            Verdict::Done(Ok(principal)) => {
                req.extensions_mut().insert(principal.clone());
                ResponseFuture::Inner {
                    future: self.inner.call(req),
                    principal: Some(principal),
                }
            }
            // The inner service stays ready for the next request.
            Verdict::Done(Err(e)) => ResponseFuture::Refused {
                response: Some(reject(&e, req.extensions())),
            },
            Verdict::Ask(digest) => {
                // The ready inner service goes with the request; its clone waits for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let layer = self.layer.clone();
                ResponseFuture::Asking {
                    future: Box::pin(async move {
                        let verdict = layer.judge(layer.store.lookup(digest).await);
                        match layer.counted(addr, verdict) {
                            Ok(principal) => {
                                req.extensions_mut().insert(principal.clone());
                                let res = inner.call(req).await?;
                                Ok(answered(res, Some(principal)))
                            }
                            Err(e) => Ok(reject(&e, req.extensions())),
                        }
                    }),
                }
            }
        }
    }
}

/// The inner service's answer, with the caller's [`Principal`] in its extensions (so layers
/// outside, an access log, can name the key).
fn answered<B>(mut res: Response<B>, principal: Option<Principal>) -> Response<GatewayBody<B>> {
    if let Some(p) = principal {
        res.extensions_mut().insert(p);
    }
    res.map(GatewayBody::inner)
}

/// The [`Auth`] service's response future.
#[pin_project(project = ResponseFutureProj)]
pub enum ResponseFuture<F, B, E> {
    /// Let in: the inner service's answer.
    Inner {
        /// The inner future.
        #[pin]
        future: F,
        /// Who was let in, told to the answer.
        principal: Option<Principal>,
    },
    /// Refused (`401`, `403`), or the store failed: the layer's own answer.
    Refused {
        /// The answer, taken on first poll.
        response: Option<Response<GatewayBody<B>>>,
    },
    /// The store had to be asked (a remote store without the key at hand).
    Asking {
        /// The lookup, then the inner service.
        future: BoxFuture<'static, Result<Response<GatewayBody<B>>, E>>,
    },
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseFuture::Inner { .. } => "ResponseFuture::Inner",
            ResponseFuture::Refused { .. } => "ResponseFuture::Refused",
            ResponseFuture::Asking { .. } => "ResponseFuture::Asking",
        })
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GatewayBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Inner { future, principal } => future
                .poll(cx)
                .map(|res| res.map(|r| answered(r, principal.take()))),
            ResponseFutureProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            ResponseFutureProj::Asking { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, ServiceExt};

    const KEY: &str = "sk-mg-test-0123456789abcdef";

    fn store() -> Arc<LocalKeyStore> {
        let mut s = LocalKeyStore::in_memory();
        s.add(KeyRecord::from_config("team-a", KEY)).unwrap();
        let mut off = KeyRecord::from_config("off", "sk-mg-disabled-0123456789");
        off.disabled = true;
        s.add(off).unwrap();
        let mut old = KeyRecord::from_config("old", "sk-mg-expired-0123456789");
        old.expires_at = Some(1);
        s.add(old).unwrap();
        s.add(KeyRecord::admin("sk-mg-admin-0123456789abc"))
            .unwrap();
        Arc::new(s)
    }

    async fn call(layer: AuthLayer, headers: &[(&str, &[u8])]) -> (StatusCode, String) {
        let svc = layer.layer(service_fn(|req: Request<()>| async move {
            let p = req.extensions().get::<Principal>().cloned().unwrap();
            Ok::<_, std::convert::Infallible>(Response::new(Full::from(p.name.clone())))
        }));
        let mut req = Request::builder();
        for (k, v) in headers {
            req = req.header(*k, HeaderValue::from_bytes(v).unwrap());
        }
        let res = svc.oneshot(req.body(()).unwrap()).await.unwrap();
        let status = res.status();
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(res.headers()[WWW_AUTHENTICATE], "Bearer");
        }
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn good_keys_pass_with_their_principal() {
        let l = AuthLayer::new(store());
        let bearer = format!("Bearer {KEY}");
        assert_eq!(
            call(l.clone(), &[("authorization", bearer.as_bytes())]).await,
            (StatusCode::OK, "team-a".into())
        );
        let lower = format!("bearer   {KEY}  ");
        assert_eq!(
            call(l.clone(), &[("authorization", lower.as_bytes())])
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            call(l.clone(), &[("x-api-key", KEY.as_bytes())]).await,
            (StatusCode::OK, "team-a".into())
        );
        // Both headers with the same key: no ambiguity.
        assert_eq!(
            call(
                l,
                &[
                    ("authorization", bearer.as_bytes()),
                    ("x-api-key", KEY.as_bytes())
                ]
            )
            .await,
            (StatusCode::OK, "team-a".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_keeps_failing_is_held_back_whatever_key_it_sends() {
        let failures = Arc::new(FailedAttempts::new(3, std::time::Duration::from_secs(60)));
        let l = AuthLayer::new(store()).hold_back_failures(failures.clone());
        let svc = l.layer(service_fn(|_req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<bytes::Bytes>::from("ok")))
        }));
        let send = |key: &str, from: &str| {
            let req = Request::builder()
                .header("authorization", format!("Bearer {key}"))
                .extension(ClientAddr(from.parse().unwrap()))
                .body(())
                .unwrap();
            svc.clone().oneshot(req)
        };
        for _ in 0..3 {
            let res = send("sk-mg-wrong-0000000000", "192.0.2.1").await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        let held = send(KEY, "192.0.2.1").await.unwrap();
        assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = held.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(wait, 60);
        assert_eq!(
            send(KEY, "192.0.2.2").await.unwrap().status(),
            StatusCode::OK
        );
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        assert_eq!(
            send(KEY, "192.0.2.1").await.unwrap().status(),
            StatusCode::OK
        );
        // Good keys are never counted.
        for _ in 0..10 {
            assert_eq!(
                send(KEY, "192.0.2.3").await.unwrap().status(),
                StatusCode::OK
            );
        }
        assert_eq!(failures.tracked(), 1);
    }

    #[tokio::test]
    async fn every_refusal_is_an_envelope_that_names_no_key() {
        let l = AuthLayer::new(store());
        let long = format!("Bearer {}", "a".repeat(MAX_KEY_LEN + 1));
        type Case<'a> = (Vec<(&'a str, &'a [u8])>, StatusCode, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (vec![], StatusCode::UNAUTHORIZED, "missing API key"),
            (
                vec![("authorization", b"Basic dXNlcjpwdw==")],
                StatusCode::UNAUTHORIZED,
                "Bearer scheme",
            ),
            (
                vec![("authorization", b"Bearer")],
                StatusCode::UNAUTHORIZED,
                "empty",
            ),
            (
                vec![("authorization", b"Bearer   ")],
                StatusCode::UNAUTHORIZED,
                "empty",
            ),
            (
                vec![("authorization", b"Bearer a b")],
                StatusCode::UNAUTHORIZED,
                "malformed",
            ),
            (
                vec![("authorization", "Bearer sk-\u{e9}t\u{e9}".as_bytes())],
                StatusCode::UNAUTHORIZED,
                "malformed",
            ),
            (
                vec![("authorization", long.as_bytes())],
                StatusCode::UNAUTHORIZED,
                "malformed",
            ),
            (
                vec![
                    ("authorization", b"Bearer sk-mg-unknown-000000000"),
                    ("authorization", b"Bearer x"),
                ],
                StatusCode::UNAUTHORIZED,
                "more than one",
            ),
            // Both headers, two different keys (a good one among them): neither is guessed.
            (
                vec![
                    ("authorization", b"Bearer sk-mg-unknown-000000000"),
                    ("x-api-key", KEY.as_bytes()),
                ],
                StatusCode::UNAUTHORIZED,
                "both with different keys",
            ),
            (
                vec![("authorization", b"Bearer sk-mg-unknown-000000000")],
                StatusCode::UNAUTHORIZED,
                "invalid API key",
            ),
            (vec![("x-api-key", b"")], StatusCode::UNAUTHORIZED, "empty"),
            (
                vec![("authorization", b"Bearer sk-mg-disabled-0123456789")],
                StatusCode::UNAUTHORIZED,
                "disabled",
            ),
            (
                vec![("authorization", b"Bearer sk-mg-expired-0123456789")],
                StatusCode::UNAUTHORIZED,
                "expired",
            ),
            (
                vec![("authorization", b"Bearer sk-mg-admin-0123456789abc")],
                StatusCode::FORBIDDEN,
                "management key",
            ),
        ];
        for (headers, status, words) in cases {
            let (got, body) = call(l.clone(), &headers).await;
            assert_eq!(got, status, "{headers:?}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(words), "{headers:?}: {msg}");
            assert_eq!(v["error"]["code"], status.as_u16());
            for secret in ["0123456789", "unknown-0000", "dXNlcjpwdw"] {
                assert!(!body.contains(secret), "{body} leaks a key");
            }
        }
    }

    /// A store that answers only through `lookup`, as a remote one does when its cache is
    /// cold.
    struct Remote(Arc<LocalKeyStore>);

    impl KeyStore for Remote {
        fn lookup(&self, d: KeyDigest) -> BoxFuture<'_, Result<Option<Principal>, StoreError>> {
            self.0.lookup(d)
        }
    }

    impl ManagedKeyStore for Remote {
        fn create(&self, k: NewKey) -> BoxFuture<'_, Result<(Principal, String), StoreError>> {
            self.0.create(k)
        }
        fn list(&self) -> BoxFuture<'_, Result<Vec<Principal>, StoreError>> {
            self.0.list()
        }
        fn get(&self, id: String) -> BoxFuture<'_, Result<Principal, StoreError>> {
            self.0.get(id)
        }
        fn update(&self, id: String, p: KeyPatch) -> BoxFuture<'_, Result<Principal, StoreError>> {
            self.0.update(id, p)
        }
        fn delete(&self, id: String) -> BoxFuture<'_, Result<(), StoreError>> {
            self.0.delete(id)
        }
    }

    #[tokio::test]
    async fn a_store_that_must_be_asked_gives_the_same_verdicts() {
        let local = store();
        let asked = Arc::new(Remote(local.clone()));
        assert!(local.lookup_now(KeyDigest::of(KEY)).is_some());
        assert!(asked.lookup_now(KeyDigest::of(KEY)).is_none());
        let bearer = format!("Bearer {KEY}");
        let keys: [&[u8]; 6] = [
            bearer.as_bytes(),
            b"Bearer sk-mg-unknown-000000000",
            b"Bearer sk-mg-disabled-0123456789",
            b"Bearer sk-mg-expired-0123456789",
            b"Bearer sk-mg-admin-0123456789abc",
            b"Basic dXNlcjpwdw==",
        ];
        let mut statuses = Vec::new();
        for (at_once, asked) in [
            (AuthLayer::new(local.clone()), AuthLayer::new(asked.clone())),
            (
                AuthLayer::new(local.clone()).management(),
                AuthLayer::new(asked.clone()).management(),
            ),
            (
                AuthLayer::new(local.clone()).allow_anonymous(true),
                AuthLayer::new(asked.clone()).allow_anonymous(true),
            ),
        ] {
            for key in keys {
                let headers = [("authorization", key)];
                let expected = call(at_once.clone(), &headers).await;
                assert_eq!(call(asked.clone(), &headers).await, expected);
                statuses.push(expected.0.as_u16());
            }
        }
        assert_eq!(
            statuses,
            [
                200, 401, 401, 401, 403, 401, 403, 401, 401, 401, 200, 401, 200, 200, 401, 401,
                403, 200
            ]
        );
    }

    #[tokio::test]
    async fn the_inner_service_is_only_called_once_ready() {
        let local = store();
        for layer in [
            AuthLayer::new(local.clone()),
            AuthLayer::new(Arc::new(Remote(local.clone()))),
        ] {
            let mut svc = layer.layer(crate::future::testing::MustBeReady::default());
            for key in [KEY, "sk-mg-unknown-000000000", KEY, KEY, "", KEY] {
                let req = Request::builder()
                    .header("authorization", format!("Bearer {key}"))
                    .body(())
                    .unwrap();
                let ready = ServiceExt::<Request<()>>::ready(&mut svc).await.unwrap();
                let res = ready.call(req).await.unwrap();
                let expected = if key == KEY { 200 } else { 401 };
                assert_eq!(res.status(), expected, "{key}");
            }
        }
    }

    #[tokio::test]
    async fn management_routes_take_only_the_admin_key() {
        let l = AuthLayer::new(store()).management();
        assert_eq!(
            call(
                l.clone(),
                &[("authorization", b"Bearer sk-mg-admin-0123456789abc")]
            )
            .await,
            (StatusCode::OK, "admin".into())
        );
        let bearer = format!("Bearer {KEY}");
        let (status, body) = call(l, &[("authorization", bearer.as_bytes())]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }

    #[tokio::test]
    async fn anonymous_mode_lets_keyless_and_unknown_keys_through() {
        let l = AuthLayer::new(store()).allow_anonymous(true);
        assert_eq!(
            call(l.clone(), &[]).await,
            (StatusCode::OK, "anonymous".into())
        );
        assert_eq!(
            call(
                l.clone(),
                &[("authorization", b"Bearer sk-whatever-the-sdk-sends")]
            )
            .await,
            (StatusCode::OK, "anonymous".into())
        );
        let bearer = format!("Bearer {KEY}");
        assert_eq!(
            call(l, &[("authorization", bearer.as_bytes())]).await,
            (StatusCode::OK, "team-a".into())
        );
    }

    #[test]
    fn digests_round_trip_and_labels_hide_the_key() {
        let d = KeyDigest::of("abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyDigest::from_hex(&d.to_hex().to_uppercase()), Some(d));
        assert_eq!(KeyDigest::from_hex("zz"), None);
        assert_eq!(KeyDigest::from_hex(&"g".repeat(64)), None);
        assert!(!format!("{d:?}").contains(&d.to_hex()));
        assert_eq!(label_of(KEY), "sk-mg-…def");
        assert_eq!(label_of("short"), "…");
        assert_eq!(
            label_of("seventeen-chars-k"),
            "…",
            "too short to show any of it"
        );
        assert_eq!(label_of("a-config-key-of-thirty-two-chars"), "…ars");
        assert_eq!(label_of("sk-mg-0123456789"), "sk-mg-…");
    }
}
