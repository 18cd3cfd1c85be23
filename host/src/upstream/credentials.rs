//! Credentials: how an upstream request gets authenticated, after the provider built it and
//! the network config added its headers, so a signature covers the final request. One
//! [`Credential`] per configured key (or per keyless provider), built at start-up and shared
//! by every request of that key: a static key in a header, AWS SigV4 signing, or a Google
//! OAuth2 token source that caches, renews and coalesces.
//!
//! Nothing here lets a secret out: errors say which provider and what failed, header
//! values are marked sensitive, and [`Credential::scrub`] masks what a provider echoes back.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::config::{KeyConfig, ProviderConfig, ProviderSettings, Secret};
use crate::error::GatewayError;
use crate::providers::{Auth, UpstreamRequest};

pub mod google;
pub mod sigv4;

/// The OAuth2 scope of Vertex AI calls.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The credentials of one key.
pub enum Credential {
    /// Keyless providers (a local Ollama, a custom server without keys).
    None,
    /// The key in one header.
    Header {
        name: HeaderName,
        value: HeaderValue,
        secret: Secret,
    },
    /// AWS Signature V4 over the final request.
    SigV4 {
        provider: String,
        creds: sigv4::AwsCredentials,
        region: String,
        service: &'static str,
    },
    /// A Google OAuth2 token source, shared by every request of the provider.
    Google {
        provider: String,
        tokens: Arc<google::TokenSource>,
    },
}

/// What [`Credential::apply`] used, so a 401 can invalidate exactly that.
#[derive(Debug, Default)]
pub struct Applied(Option<google::AccessToken>);

impl Credential {
    /// The credential for `key` of `provider`, authenticated as `auth` says.
    /// `http` is the provider's client, for token servers.
    pub fn new(
        provider: &ProviderConfig,
        auth: &Auth,
        key: Option<&KeyConfig>,
        http: &reqwest::Client,
    ) -> Result<Credential, String> {
        match (auth, key) {
            (Auth::Header { name, prefix }, Some(key)) => {
                let secret = key.value.clone();
                let mut value = HeaderValue::from_str(&format!("{prefix}{}", secret.expose()))
                    .map_err(|_| {
                        format!(
                            "providers.{}: a key contains characters that are not allowed in an HTTP header",
                            provider.name
                        )
                    })?;
                value.set_sensitive(true);
                Ok(Credential::Header {
                    name: name.clone(),
                    value,
                    secret,
                })
            }
            (Auth::Header { .. }, None) => Ok(Credential::None),
            (Auth::SigV4 { service }, Some(key)) => match &provider.settings {
                ProviderSettings::Bedrock(b) => match &b.secret_access_key {
                    Some(secret) => Ok(Credential::SigV4 {
                        provider: provider.name.clone(),
                        creds: sigv4::AwsCredentials {
                            access_key_id: key.value.expose().to_owned(),
                            secret_access_key: secret.clone(),
                            session_token: b.session_token.clone(),
                        },
                        region: b.region.clone(),
                        service,
                    }),
                    // Its variable is unset: the provider is unavailable and says so.
                    None => Ok(Credential::None),
                },
                _ => Err(format!(
                    "providers.{}: SigV4 needs the bedrock meta_config",
                    provider.name
                )),
            },
            (Auth::SigV4 { .. }, None) => Ok(Credential::None),
            // Vertex keys only choose models; the provider-wide credential authenticates.
            (Auth::GoogleOAuth, Some(_)) => Ok(Credential::None),
            (Auth::GoogleOAuth, None) => match &provider.settings {
                ProviderSettings::Vertex(v) => match &v.credentials {
                    Some(sa) => {
                        let tokens = google::TokenSource::new(
                            sa.clone(),
                            CLOUD_PLATFORM,
                            http.clone(),
                            Arc::new(google::SystemClock),
                        )
                        .map_err(|e| {
                            format!(
                                "providers.{}.meta_config.auth_credentials: {e}",
                                provider.name
                            )
                        })?;
                        Ok(Credential::Google {
                            provider: provider.name.clone(),
                            tokens: Arc::new(tokens),
                        })
                    }
                    None => Ok(Credential::None),
                },
                _ => Err(format!(
                    "providers.{}: Google OAuth2 needs the vertex meta_config",
                    provider.name
                )),
            },
        }
    }

    /// Authenticate `req`.
    pub async fn apply(&self, req: &mut UpstreamRequest) -> Result<Applied, GatewayError> {
        match self {
            Credential::None => {}
            Credential::Header { name, value, .. } => {
                req.headers.insert(name.clone(), value.clone());
            }
            Credential::SigV4 {
                provider,
                creds,
                region,
                service,
            } => sigv4::sign(
                &req.method,
                &req.url,
                &mut req.headers,
                &req.body,
                creds,
                region,
                service,
                SystemTime::now(),
            )
            .map_err(|e| credential_error(provider, e))?,
            Credential::Google { provider, tokens } => {
                let token = tokens
                    .token()
                    .await
                    .map_err(|e| credential_error(provider, e))?;
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        credential_error(
                            provider,
                            "the token server's access token is not a valid header value",
                        )
                    })?;
                value.set_sensitive(true);
                req.headers.insert(http::header::AUTHORIZATION, value);
                return Ok(Applied(Some(token)));
            }
        }
        Ok(Applied(None))
    }

    /// Whether a 401 may be cured by renewing (OAuth2 tokens), once.
    pub fn renewable(&self) -> bool {
        matches!(self, Credential::Google { .. })
    }

    /// The provider refused what `applied` carried: renew before the next use.
    pub fn invalidate(&self, applied: &Applied) {
        if let (Credential::Google { tokens, .. }, Applied(Some(token))) = (self, applied) {
            tokens.invalidate(token);
        }
    }

    /// `text` with every secret of this credential masked, keeping the last four
    /// characters (as OpenAI does) so an operator can still tell which key was meant.
    pub fn scrub(&self, text: &str) -> String {
        match self {
            Credential::None => text.to_owned(),
            Credential::Header { secret, .. } => scrub_secret(text, secret.expose()),
            Credential::SigV4 { creds, .. } => {
                let text = scrub_secret(text, creds.secret_access_key.expose());
                match &creds.session_token {
                    Some(t) => scrub_secret(&text, t.expose()),
                    None => text,
                }
            }
            Credential::Google { .. } => text.to_owned(),
        }
    }

    /// The credential's state in words, for `/health`.
    pub fn state(&self) -> String {
        match self {
            Credential::None => "none needed".to_owned(),
            Credential::Header { .. } => "static key".to_owned(),
            Credential::SigV4 { creds, region, .. } => {
                let id = &creds.access_key_id;
                let tail: String = id
                    .chars()
                    .skip(id.chars().count().saturating_sub(4))
                    .collect();
                format!("AWS SigV4, access key ****{tail}, region {region}")
            }
            Credential::Google { tokens, .. } => format!("Google OAuth2: {}", tokens.state()),
        }
    }
}

/// `text` with every occurrence of `secret` replaced by a mask that keeps its last four
/// characters when the secret is long enough for them to give nothing away.
pub fn scrub_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return text.to_owned();
    }
    let chars = secret.chars().count();
    let mask = if chars >= 12 {
        let tail: String = secret.chars().skip(chars - 4).collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    };
    text.replace(secret, &mask)
}

/// A credential that could not be used: says which provider and what failed, never the
/// secret. Retryable: token servers have bad minutes too.
pub fn credential_error(provider: &str, what: impl std::fmt::Display) -> GatewayError {
    let mut e = GatewayError::gateway(
        StatusCode::BAD_GATEWAY,
        "credentials_unavailable",
        format!("provider '{provider}': credentials unavailable: {what}"),
    );
    e.retryable = true;
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::providers::openai::tests::provider_config;

    fn key(value: &str) -> KeyConfig {
        KeyConfig {
            value: Secret::new(value),
            models: Vec::new(),
            weight: 1.0,
        }
    }

    #[tokio::test]
    async fn header_keys_are_sensitive() {
        let cfg = provider_config(ProviderKind::OpenAi, "http://x");
        let auth = Auth::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ",
        };
        let http = reqwest::Client::new();
        let c = Credential::new(&cfg, &auth, Some(&key("sk-1")), &http).unwrap();
        let mut req = UpstreamRequest::post_json("http://x".into(), Default::default());
        c.apply(&mut req).await.unwrap();
        assert_eq!(req.headers["authorization"], "Bearer sk-1");
        assert!(req.headers["authorization"].is_sensitive());
        assert_eq!(c.scrub("bad key sk-1 given"), "bad key **** given");
        let c = Credential::new(&cfg, &auth, Some(&key("sk-0123456789")), &http).unwrap();
        assert_eq!(
            c.scrub("Incorrect API key provided: sk-0123456789."),
            "Incorrect API key provided: ****6789."
        );
    }

    #[test]
    fn bad_key_is_an_error_not_a_panic() {
        let cfg = provider_config(ProviderKind::OpenAi, "http://x");
        let auth = Auth::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ",
        };
        let err = Credential::new(&cfg, &auth, Some(&key("bad\nkey")), &reqwest::Client::new())
            .err()
            .unwrap();
        assert!(
            err.contains("providers.openai") && !err.contains("bad"),
            "{err}"
        );
    }
}
