//! OAuth access tokens for Vertex AI, minted from a service account: an RS256-signed JWT
//! assertion (signed with `ring`) exchanged at the account's `token_uri` (RFC 7523), cached
//! and refreshed before it expires, one refresh in flight at a time. Neither the key nor a
//! token is ever logged or shown in a `Debug`.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::Error;

/// The scope the tokens are asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long an assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;

/// A token is refreshed when less than this is left of it.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A Google service account: who it is, where it gets tokens, and its private key.
pub struct ServiceAccount {
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    key: RsaKeyPair,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct File {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Reads a service-account JSON file (the one the Google Cloud console downloads). `Err`
    /// says what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let f: File = serde_json::from_slice(bytes)
            .map_err(|e| format!("the credentials file is not valid JSON ({e})"))?;
        if let Some(kind) = f.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!(
                "the credentials file is of type `{kind}`, not `service_account`"
            ));
        }
        let missing = |field: &str| format!("the credentials file has no `{field}`");
        let client_email = f.client_email.ok_or_else(|| missing("client_email"))?;
        let pem = f.private_key.ok_or_else(|| missing("private_key"))?;
        let token_uri = f
            .token_uri
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
        if !token_uri.starts_with("https://") && !token_uri.starts_with("http://") {
            return Err(format!(
                "the credentials file's `token_uri` is not an http(s) URL: `{token_uri}`"
            ));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            format!("the credentials file's `private_key` is not a PEM PKCS#8 key ({e})")
        })?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| {
            format!("the credentials file's `private_key` is not a usable RSA key ({e})")
        })?;
        Ok(ServiceAccount {
            client_email,
            private_key_id: f.private_key_id,
            token_uri,
            key,
        })
    }

    /// Reads a service-account JSON file from `path`.
    pub fn from_file(path: &str) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the credentials file `{path}`: {e}"))?;
        Self::from_json(&bytes).map_err(|e| format!("`{path}`: {e}"))
    }

    /// Where tokens are asked for.
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The signed JWT assertion, issued at `now` (Unix seconds).
    pub fn assertion(&self, now: u64) -> Result<String, Error> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::internal("cannot sign the service account's assertion"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// A token endpoint's answer.
#[derive(Deserialize)]
pub(crate) struct Granted {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Granted {
    /// The `Authorization` value and how long the token lives.
    pub(crate) fn bearer(self) -> Result<(HeaderValue, Duration), String> {
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.access_token))
            .map_err(|_| "the token endpoint's `access_token` is not a header value".to_owned())?;
        value.set_sensitive(true);
        Ok((value, Duration::from_secs(self.expires_in.unwrap_or(3600))))
    }
}

/// The token in use and when to refresh it.
#[derive(Default)]
pub(crate) struct TokenCache {
    slot: Mutex<Option<(HeaderValue, Instant)>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// The `Authorization` value to send: the cached token while more than
    /// [`REFRESH_MARGIN`] of it is left (one that lives no longer is used once), else a new
    /// one from `fetch`. Callers that come while a refresh is in flight wait for it.
    pub(crate) async fn bearer<F, Fut>(&self, fetch: F) -> Result<HeaderValue, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(HeaderValue, Duration), Error>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((value, refresh_at)) = &*slot {
            if Instant::now() < *refresh_at {
                return Ok(value.clone());
            }
        }
        let (value, lifetime) = fetch().await?;
        let margin = REFRESH_MARGIN.min(lifetime);
        *slot = Some((value.clone(), Instant::now() + lifetime - margin));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_then_refreshed_before_it_expires_one_refresh_at_a_time() {
        let cache = std::sync::Arc::new(TokenCache::default());
        let minted = std::sync::Arc::new(AtomicU32::new(0));
        let get = || {
            let (cache, minted) = (cache.clone(), minted.clone());
            async move {
                cache
                    .bearer(|| async move {
                        // A slow token endpoint: others wait for this one refresh.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let n = minted.fetch_add(1, Ordering::SeqCst) + 1;
                        Ok((
                            HeaderValue::try_from(format!("Bearer t{n}")).unwrap(),
                            Duration::from_secs(3600),
                        ))
                    })
                    .await
                    .unwrap()
            }
        };
        let (a, b) = tokio::join!(get(), get());
        assert_eq!(
            (a.to_str().unwrap(), b.to_str().unwrap()),
            ("Bearer t1", "Bearer t1")
        );
        assert_eq!(minted.load(Ordering::SeqCst), 1);
        // Still 6 minutes left: reused.
        tokio::time::advance(Duration::from_secs(3600 - 360)).await;
        assert_eq!(get().await, "Bearer t1");
        // 4 minutes left: refreshed before it expires.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(get().await, "Bearer t2");
        assert_eq!(minted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_bad_credentials_file_says_what_is_wrong() {
        let err = |json: &str| ServiceAccount::from_json(json.as_bytes()).unwrap_err();
        assert!(err("{").contains("not valid JSON"));
        assert!(err(r#"{"type":"authorized_user"}"#).contains("`authorized_user`"));
        assert!(err(r#"{"type":"service_account"}"#).contains("`client_email`"));
        assert!(err(r#"{"client_email":"a@b"}"#).contains("`private_key`"));
        assert!(err(r#"{"client_email":"a@b","private_key":"nope"}"#).contains("PEM"));
        assert!(ServiceAccount::from_file("/nonexistent/sa.json")
            .unwrap_err()
            .contains("cannot read"));
    }
}
