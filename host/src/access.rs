//! Who may call: virtual keys, checked before a request reaches the pipeline's upstream
//! side. It sits between the HTTP layer and the proxy: `routes` calls
//! [`Access::authenticate`] on the headers before reading the body (401), the proxy calls
//! [`Access::admit`] once the target is resolved (403 for a model the key may not use, 429
//! over a rate limit or budget), and the finish phase counts the tokens the provider
//! reported through [`Caller::record_usage`]. Each check returns a typed [`Rejection`];
//! the HTTP layer renders it (as a [`GatewayError`]) in the dialect the client spoke.
//!
//! Without `client.virtual_keys` the gateway is open and the caller is known only by
//! `ck-` + a hash of its bearer token (the `client-key` plugins see). With it, every
//! request needs a key, and the caller is the key's name. Secrets are held as SHA-256
//! digests; a presented key is hashed, looked up by digest and confirmed with a
//! constant-time comparison, so neither the secret nor the timing of a comparison with it
//! reaches a client, a log line, `/metrics`, `/health` or a plugin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, StatusCode};
use prometheus::IntCounter;
use sha2::{Digest, Sha256};

use crate::config::access::{BudgetPeriod, SecretDigest, VirtualKey};
use crate::config::Config;
use crate::error::{Fault, GatewayError};
use crate::metrics::Metrics;
use crate::plugins::{KvStore, MemoryKv};
use crate::schema::{Target, Usage};

pub mod limits;

use limits::{rfc3339, Counters, StoreError};
pub use limits::{Clock, ManualClock, SystemClock};

/// The credential a client presented: `Authorization: Bearer` (OpenAI SDKs) or
/// `x-api-key` (Anthropic SDKs).
pub fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        v.strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    });
    if bearer.is_some() {
        return bearer;
    }
    headers
        .get("x-api-key")
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|t| !t.is_empty())
}

/// The identity of an unauthenticated caller: `ck-` + 16 hex digits of SHA-256 of its
/// token, or `anonymous`.
pub fn anonymous_identity(headers: &HeaderMap) -> Arc<str> {
    match presented_key(headers) {
        Some(token) => {
            let digest = Sha256::digest(token);
            let mut s = String::with_capacity(19);
            s.push_str("ck-");
            for b in &digest[..8] {
                use std::fmt::Write;
                let _ = write!(s, "{b:02x}");
            }
            s.into()
        }
        None => Arc::from("anonymous"),
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// No key in `Authorization: Bearer` or `x-api-key`.
    MissingKey,
    /// A key that is none of the configured ones.
    InvalidKey,
    /// The key may not use `model` (`provider/model`); `param` is the request field.
    ModelNotAllowed {
        key: Arc<str>,
        model: String,
        param: String,
        allowed: String,
    },
    /// Over `requests_per_minute` or `tokens_per_minute`.
    RateLimited {
        key: Arc<str>,
        limit: RateLimit,
        per_minute: u64,
        retry_after: Duration,
    },
    /// The token budget of the period is spent.
    OverBudget {
        key: Arc<str>,
        period: BudgetPeriod,
        budget: u64,
        used: u64,
        /// Unix ms when the period ends.
        resets_at: u64,
        retry_after: Duration,
    },
    /// The store that holds the counts failed.
    Store(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Requests,
    Tokens,
}

impl Rejection {
    /// The `reason` label of `switchyard_key_rejections_total` / `switchyard_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingKey => "missing_key",
            Rejection::InvalidKey => "invalid_key",
            Rejection::ModelNotAllowed { .. } => "model_not_allowed",
            Rejection::RateLimited {
                limit: RateLimit::Requests,
                ..
            } => "requests_per_minute",
            Rejection::RateLimited {
                limit: RateLimit::Tokens,
                ..
            } => "tokens_per_minute",
            Rejection::OverBudget { .. } => "token_budget",
            Rejection::Store(_) => "store_error",
        }
    }
}

impl From<Rejection> for GatewayError {
    fn from(r: Rejection) -> GatewayError {
        match r {
            Rejection::MissingKey => GatewayError::client(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                None,
                "this gateway needs an API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            ),
            Rejection::InvalidKey => GatewayError::client(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                None,
                "the API key is not valid for this gateway",
            ),
            Rejection::ModelNotAllowed {
                key,
                model,
                param,
                allowed,
            } => GatewayError::client(
                StatusCode::FORBIDDEN,
                "model_not_allowed",
                Some(&param),
                format!("key '{key}' may not use model '{model}'; it may use: {allowed}"),
            ),
            Rejection::RateLimited {
                key,
                limit,
                per_minute,
                retry_after,
            } => {
                let what = match limit {
                    RateLimit::Requests => "requests",
                    RateLimit::Tokens => "tokens",
                };
                GatewayError::client(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    None,
                    format!(
                        "key '{key}' is over its limit of {per_minute} {what} per minute; retry in {} s",
                        retry_after.as_secs()
                    ),
                )
                .with_retry_after(Some(retry_after))
            }
            Rejection::OverBudget {
                key,
                period,
                budget,
                used,
                resets_at,
                retry_after,
            } => GatewayError::client(
                StatusCode::TOO_MANY_REQUESTS,
                "token_budget_exceeded",
                None,
                format!(
                    "key '{key}' has used its {} token budget ({used} of {budget} tokens); it resets at {}",
                    period.adjective(),
                    rfc3339(resets_at)
                ),
            )
            .with_retry_after(Some(retry_after)),
            Rejection::Store(e) => GatewayError::gateway(
                StatusCode::SERVICE_UNAVAILABLE,
                "limits_unavailable",
                format!("the store that counts rate limits and budgets failed: {e}"),
            )
            .with_retry_after(Some(Duration::from_secs(1))),
        }
    }
}

/// One configured key with its counters and metric handles.
pub struct KeyState {
    pub name: Arc<str>,
    pub config: VirtualKey,
    counters: Counters,
    metrics: KeyMetrics,
}

struct KeyMetrics {
    /// By outcome, like `switchyard_requests_total`.
    requests: [IntCounter; 5],
    tokens_prompt: IntCounter,
    tokens_completion: IntCounter,
    rejected: HashMap<&'static str, IntCounter>,
}

const OUTCOMES: [&str; 5] = ["success", "client", "upstream", "plugin", "gateway"];
const KEY_REASONS: [&str; 5] = [
    "model_not_allowed",
    "requests_per_minute",
    "tokens_per_minute",
    "token_budget",
    "store_error",
];

impl KeyMetrics {
    fn new(m: &Metrics, name: &str) -> KeyMetrics {
        KeyMetrics {
            requests: OUTCOMES.map(|o| m.key_requests.with_label_values(&[name, o])),
            tokens_prompt: m.key_tokens.with_label_values(&[name, "prompt"]),
            tokens_completion: m.key_tokens.with_label_values(&[name, "completion"]),
            rejected: KEY_REASONS
                .iter()
                .map(|r| (*r, m.key_rejections.with_label_values(&[name, r])))
                .collect(),
        }
    }
}

impl KeyState {
    /// `models` as written, for messages.
    fn allowed_list(&self) -> String {
        if self.config.models.is_empty() {
            return "no model".to_owned();
        }
        self.config
            .models
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn not_allowed(&self, target: &Target, param: &str) -> Rejection {
        Rejection::ModelNotAllowed {
            key: self.name.clone(),
            model: target.to_string(),
            param: param.to_owned(),
            allowed: self.allowed_list(),
        }
    }

    fn reject(&self, r: Rejection) -> Rejection {
        if let Some(c) = self.metrics.rejected.get(r.reason()) {
            c.inc();
        }
        r
    }

    fn store_failed(&self, e: StoreError) -> Rejection {
        tracing::warn!(key = %self.name, error = %e.0, "rate-limit store failed; request refused");
        self.reject(Rejection::Store(e.0))
    }
}

/// Who is calling, as far as the gateway knows.
#[derive(Clone)]
pub struct Caller {
    /// The matched virtual key; `None` when the gateway is open.
    pub key: Option<Arc<KeyState>>,
    /// What plugins see as `client-key`: the key's name, else `ck-<hash>` or `anonymous`.
    pub client_key: Arc<str>,
}

impl Caller {
    /// An open gateway's caller, known by `identity`.
    pub fn open(identity: Arc<str>) -> Caller {
        Caller {
            key: None,
            client_key: identity,
        }
    }

    /// Whether the caller may use `target` (always, without virtual keys).
    pub fn allows(&self, target: &Target, param: &str) -> Result<(), Rejection> {
        match &self.key {
            Some(k) if !k.config.allows(&target.provider, &target.model) => {
                Err(k.reject(k.not_allowed(target, param)))
            }
            _ => Ok(()),
        }
    }

    /// The finish phase: one request of the caller ended (`fault` `None`: success), with
    /// the usage the provider reported, which counts against the key's tokens per minute
    /// and budget.
    pub fn finished(&self, fault: Option<Fault>, usage: Option<Usage>) {
        let Some(k) = &self.key else { return };
        let i = match fault {
            None => 0,
            Some(Fault::Client) => 1,
            Some(Fault::Upstream) => 2,
            Some(Fault::Plugin) => 3,
            Some(Fault::Gateway) => 4,
        };
        k.metrics.requests[i].inc();
        let Some(u) = usage else { return };
        k.metrics.tokens_prompt.inc_by(u64::from(u.prompt_tokens));
        k.metrics
            .tokens_completion
            .inc_by(u64::from(u.completion_tokens));
        let total = u64::from(u.total_tokens)
            .max(u64::from(u.prompt_tokens) + u64::from(u.completion_tokens));
        let cfg = &k.config;
        if cfg.tokens_per_minute.is_none() && cfg.token_budget.is_none() {
            return;
        }
        if let Err(e) = k.counters.add_tokens(
            &k.name,
            total,
            cfg.tokens_per_minute.is_some(),
            cfg.token_budget.map(|b| b.period),
        ) {
            tracing::warn!(key = %k.name, error = %e.0, "could not count a request's tokens");
        }
    }
}

/// The virtual keys of the config with their counters, or an open gateway.
pub struct Access {
    /// `None`: no `client.virtual_keys`, every caller is let in.
    keys: Option<HashMap<[u8; 32], Arc<KeyState>>>,
    missing: IntCounter,
    invalid: IntCounter,
    /// Where the limits and budgets count, kept so that a config reload counts on.
    counters: Counters,
}

impl Access {
    /// The in-process store and the system clock.
    pub fn new(config: &Config, metrics: &Metrics) -> Access {
        Self::with(
            config,
            metrics,
            Arc::new(MemoryKv::new()),
            Arc::new(SystemClock),
        )
    }

    /// Counting in `kv` (the plugins' store) by `clock`.
    pub fn with(
        config: &Config,
        metrics: &Metrics,
        kv: Arc<dyn KvStore>,
        clock: Arc<dyn Clock>,
    ) -> Access {
        let counters = Counters { kv, clock };
        let kept = counters.clone();
        let keys = config.client.access.virtual_keys.as_ref().map(|keys| {
            keys.iter()
                .map(|k| {
                    let state = KeyState {
                        name: Arc::from(k.name.as_str()),
                        config: k.clone(),
                        counters: counters.clone(),
                        metrics: KeyMetrics::new(metrics, &k.name),
                    };
                    (*k.digest.bytes(), Arc::new(state))
                })
                .collect()
        });
        Access {
            keys,
            missing: metrics.auth_failures.with_label_values(&["missing_key"]),
            invalid: metrics.auth_failures.with_label_values(&["invalid_key"]),
            counters: kept,
        }
    }

    /// The same store and clock for the keys of another config (a reload): counts and
    /// budgets go on where they were.
    pub fn reconfigured(&self, config: &Config, metrics: &Metrics) -> Access {
        Self::with(
            config,
            metrics,
            self.counters.kv.clone(),
            self.counters.clock.clone(),
        )
    }

    /// Whether requests need a virtual key.
    pub fn required(&self) -> bool {
        self.keys.is_some()
    }

    /// How many keys are configured (for `/health`).
    pub fn key_count(&self) -> usize {
        self.keys.as_ref().map_or(0, HashMap::len)
    }

    /// The caller of a request with `headers`: its key, or 401. Headers only, so it runs
    /// before the body is read.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Rejection> {
        let Some(keys) = &self.keys else {
            return Ok(Caller::open(anonymous_identity(headers)));
        };
        let Some(token) = presented_key(headers) else {
            self.missing.inc();
            return Err(Rejection::MissingKey);
        };
        let digest = SecretDigest::of(token);
        // The map is keyed by the digest, which an attacker cannot steer towards a secret,
        // so the lookup's timing tells nothing; the constant-time comparison confirms.
        match keys.get(digest.bytes()) {
            Some(k) if k.config.digest.ct_eq(&digest) => Ok(Caller {
                client_key: k.name.clone(),
                key: Some(k.clone()),
            }),
            _ => {
                self.invalid.inc();
                Err(Rejection::InvalidKey)
            }
        }
    }

    /// Admission of a resolved request: every target (the primary and each fallback) is a
    /// model the key may use, the budget of the period is not spent, the minute's tokens
    /// are under the limit, and the request fits in the minute's requests (counted here).
    pub fn admit(
        &self,
        caller: &Caller,
        primary: &Target,
        fallbacks: &[Target],
    ) -> Result<(), Rejection> {
        let Some(k) = &caller.key else {
            return Ok(());
        };
        caller.allows(primary, "model")?;
        for (i, t) in fallbacks.iter().enumerate() {
            caller.allows(t, &format!("fallbacks[{i}]"))?;
        }
        let cfg = &k.config;
        let c = &k.counters;
        if let Some(b) = cfg.token_budget {
            let (used, resets_at) = c.budget_used(&k.name, b.period);
            if used >= b.tokens {
                let now = c.clock.now_ms();
                let secs = resets_at.saturating_sub(now).div_ceil(1000).max(1);
                return Err(k.reject(Rejection::OverBudget {
                    key: k.name.clone(),
                    period: b.period,
                    budget: b.tokens,
                    used,
                    resets_at,
                    retry_after: Duration::from_secs(secs),
                }));
            }
        }
        if let Some(limit) = cfg.tokens_per_minute {
            if let Err(over) = c.check_tokens(&k.name, limit) {
                return Err(k.reject(Rejection::RateLimited {
                    key: k.name.clone(),
                    limit: RateLimit::Tokens,
                    per_minute: limit,
                    retry_after: over.retry_after,
                }));
            }
        }
        if let Some(limit) = cfg.requests_per_minute {
            match c.take_request(&k.name, limit) {
                Ok(Ok(())) => {}
                Ok(Err(over)) => {
                    return Err(k.reject(Rejection::RateLimited {
                        key: k.name.clone(),
                        limit: RateLimit::Requests,
                        per_minute: limit,
                        retry_after: over.retry_after,
                    }))
                }
                Err(e) => return Err(k.store_failed(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
