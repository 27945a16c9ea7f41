//! AWS Signature Version 4 for Bedrock requests, by the `aws-sigv4` crate.

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{HeaderName, HeaderValue};
use http::Uri;

use crate::Error;

/// AWS credentials: an access key, its secret, and the session token of temporary ones. The
/// `Debug` shows the key id only.
#[derive(Clone)]
pub struct AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Signs requests for one region's Bedrock with one set of credentials.
pub(crate) struct Signer {
    region: String,
    identity: Identity,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub(crate) fn new(region: &str, c: &AwsCredentials) -> Self {
        let credentials = Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "modelgate",
        );
        Signer {
            region: region.to_owned(),
            identity: credentials.into(),
        }
    }

    /// The signature's headers (`authorization`, `x-amz-date`, `x-amz-security-token`) of a
    /// `POST` of `body` to `uri` carrying `content_type`, signed at `time`.
    pub(crate) fn headers(
        &self,
        uri: &Uri,
        content_type: &str,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
        let failed =
            |e: &dyn fmt::Display| Error::internal(format!("cannot sign the request: {e}"));
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("bedrock")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let uri = uri.to_string();
        let signable = SignableRequest::new(
            "POST",
            uri.as_str(),
            std::iter::once(("content-type", content_type)),
            SignableBody::Bytes(body),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        instructions
            .headers()
            .map(|(name, value)| {
                let mut value = HeaderValue::try_from(value).map_err(|e| failed(&e))?;
                value.set_sensitive(true);
                Ok((HeaderName::try_from(name).map_err(|e| failed(&e))?, value))
            })
            .collect()
    }
}
