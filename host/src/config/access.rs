//! `client.virtual_keys`, `client.admin_listen` and `client.admin_token`: who may call the
//! gateway, with which models and how much, and where the admin surfaces are served.
//! Secrets are held only as SHA-256 digests from the moment the config is validated.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of a secret (a virtual key or the admin token). The secret itself is
/// dropped once hashed, so a memory dump, a `Debug` print or a panic message cannot show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub fn of(secret: &[u8]) -> SecretDigest {
        SecretDigest(Sha256::digest(secret).into())
    }

    /// Whether `presented` is the secret, comparing the digests in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.ct_eq(&SecretDigest::of(presented))
    }

    /// Constant-time equality of two digests.
    pub fn ct_eq(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:*****")
    }
}

/// Who may call, and where the admin side is served.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// `client.virtual_keys`: `None` when the section is absent (the gateway is open, as
    /// before); `Some` (even empty) means every request needs one of these keys.
    pub virtual_keys: Option<Vec<VirtualKey>>,
    /// `client.admin_listen`: a second listener serving `/metrics`, the detailed `/health`
    /// and the status page; the public listener then serves none of them.
    pub admin_listen: Option<SocketAddr>,
    /// `client.admin_token` (literal or `env.NAME`): admin surfaces need
    /// `Authorization: Bearer <token>`.
    pub admin_token: Option<SecretDigest>,
}

/// One `client.virtual_keys[i]`.
#[derive(Debug, Clone)]
pub struct VirtualKey {
    /// `name`: what logs, metrics, errors and plugins (`client-key`) see.
    pub name: String,
    /// `secret`, hashed.
    pub digest: SecretDigest,
    /// `models`: what the key may use.
    pub models: Vec<ModelPattern>,
    /// `requests_per_minute`.
    pub requests_per_minute: Option<u64>,
    /// `tokens_per_minute`: provider-reported tokens (prompt + completion).
    pub tokens_per_minute: Option<u64>,
    /// `token_budget`.
    pub token_budget: Option<TokenBudget>,
}

impl VirtualKey {
    /// Whether the key may use `model` of `provider`.
    pub fn allows(&self, provider: &str, model: &str) -> bool {
        self.models.iter().any(|p| p.matches(provider, model))
    }
}

/// An entry of a key's `models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern {
    /// `*`: every model of every provider.
    Any,
    /// `provider/*`.
    Provider(String),
    /// `provider/model`.
    Exact { provider: String, model: String },
}

impl ModelPattern {
    pub fn matches(&self, provider: &str, model: &str) -> bool {
        match self {
            ModelPattern::Any => true,
            ModelPattern::Provider(p) => p == provider,
            ModelPattern::Exact {
                provider: p,
                model: m,
            } => p == provider && m == model,
        }
    }
}

impl std::fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelPattern::Any => f.write_str("*"),
            ModelPattern::Provider(p) => write!(f, "{p}/*"),
            ModelPattern::Exact { provider, model } => write!(f, "{provider}/{model}"),
        }
    }
}

/// `token_budget`: provider-reported tokens per calendar period (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    pub tokens: u64,
    pub period: BudgetPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// From 00:00 UTC to the next.
    Day,
    /// From the 1st, 00:00 UTC, to the next month's.
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    /// `daily` / `monthly`, for messages.
    pub fn adjective(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "daily",
            BudgetPeriod::Month => "monthly",
        }
    }
}
