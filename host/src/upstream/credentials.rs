//! Credentials: how an upstream request gets authenticated, after the provider built it and
//! the network config added its headers, so a signature covers the final request. One
//! [`Credential`] per configured key (or per keyless provider), built at start-up and shared
//! by every request of that key: a static key in a header, AWS SigV4 signing, or a Google
//! OAuth2 token source that caches, renews and coalesces.
//!
//! Nothing here lets a secret out: errors say which provider and what failed, header
//! values are marked sensitive, and [`Credential::scrub`] masks what a provider echoes back.

use http::{HeaderName, HeaderValue, StatusCode};

use crate::config::{KeyConfig, ProviderConfig, Secret};
use crate::error::GatewayError;
use crate::providers::{Auth, UpstreamRequest};

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
}

/// What [`Credential::apply`] used, so a 401 can invalidate exactly that.
#[derive(Debug, Default)]
pub struct Applied;

impl Credential {
    /// The credential for `key` of `provider`, authenticated as `auth` says.
    pub fn new(
        provider: &ProviderConfig,
        auth: &Auth,
        key: Option<&KeyConfig>,
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
            (Auth::SigV4 { .. } | Auth::GoogleOAuth, _) => Err(format!(
                "providers.{}: this provider's credentials are not supported yet",
                provider.name
            )),
        }
    }

    /// Authenticate `req`.
    pub async fn apply(&self, req: &mut UpstreamRequest) -> Result<Applied, GatewayError> {
        match self {
            Credential::None => {}
            Credential::Header { name, value, .. } => {
                req.headers.insert(name.clone(), value.clone());
            }
        }
        Ok(Applied)
    }

    /// Whether a 401 may be cured by renewing (OAuth2 tokens), once.
    pub fn renewable(&self) -> bool {
        false
    }

    /// The provider refused what `applied` carried: renew before the next use.
    pub fn invalidate(&self, _applied: &Applied) {}

    /// `text` with every secret of this credential masked, keeping the last four
    /// characters (as OpenAI does) so an operator can still tell which key was meant.
    pub fn scrub(&self, text: &str) -> String {
        match self {
            Credential::None => text.to_owned(),
            Credential::Header { secret, .. } => scrub_secret(text, secret.expose()),
        }
    }

    /// The credential's state in words, for `/health`.
    pub fn state(&self) -> String {
        match self {
            Credential::None => "none needed".to_owned(),
            Credential::Header { .. } => "static key".to_owned(),
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
        let c = Credential::new(&cfg, &auth, Some(&key("sk-1"))).unwrap();
        let mut req = UpstreamRequest::post_json("http://x".into(), Default::default());
        c.apply(&mut req).await.unwrap();
        assert_eq!(req.headers["authorization"], "Bearer sk-1");
        assert!(req.headers["authorization"].is_sensitive());
        assert_eq!(c.scrub("bad key sk-1 given"), "bad key **** given");
        let c = Credential::new(&cfg, &auth, Some(&key("sk-0123456789"))).unwrap();
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
        let err = Credential::new(&cfg, &auth, Some(&key("bad\nkey")))
            .err()
            .unwrap();
        assert!(
            err.contains("providers.openai") && !err.contains("bad"),
            "{err}"
        );
    }
}
