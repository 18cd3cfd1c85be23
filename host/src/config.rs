//! Configuration: `config.json` in, an immutable, validated [`Config`] out.
//!
//! Two stages. `config::raw` holds serde structs that mirror the file (Bifrost's keys,
//! `deny_unknown_fields`, documented defaults). `config::validate` checks every field,
//! collects *every* problem with its JSON path (`providers.openai.keys[0].weight: must be > 0`),
//! resolves `env.NAME` secrets through an injectable environment and produces the
//! runtime types below, with parsed URLs, durations and header values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub mod raw;
pub mod validate;

pub use validate::{ConfigError, Env};

/// A secret (API key). Prints as `*****` so it never reaches a log or a response.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("*****")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("*****")
    }
}

/// The whole runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub client: ClientConfig,
    /// Providers in the order the file lists them.
    pub providers: Vec<ProviderConfig>,
    pub plugins: PluginsConfig,
}

/// `client`: server-wide settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `listen` (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `initial_pool_size` (default 5000, Bifrost's): instances pre-warmed per plugin are
    /// `min(initial_pool_size, plugins.max_instances)`.
    pub initial_pool_size: usize,
    /// `drop_excess_requests` (default false): a full provider queue answers 503 at once
    /// instead of waiting.
    pub drop_excess_requests: bool,
    /// `max_request_body_bytes` (default 10 MiB): larger bodies get 413.
    pub max_request_body_bytes: usize,
    /// `queue_timeout_in_seconds` (default: the provider's request timeout): how long a
    /// request may wait for a place in a full queue before it gets 503.
    pub queue_timeout: Option<Duration>,
    /// `shutdown_timeout_in_seconds` (default 30): on SIGTERM, how long in-flight and queued
    /// requests get to finish.
    pub shutdown_timeout: Duration,
}

/// Built-in provider implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Azure,
    Anthropic,
    Groq,
    Mistral,
    Ollama,
    /// Any OpenAI-compatible server; needs `network_config.base_url`.
    Custom,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 7] = [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Groq,
        ProviderKind::Mistral,
        ProviderKind::Ollama,
        ProviderKind::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Groq => "groq",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Custom => "custom",
        }
    }

    pub fn parse(name: &str) -> Option<ProviderKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// `providers.<name>`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The key under `providers`; what clients write before the `/` in `"name/model"`.
    pub name: String,
    /// The map key when it names a built-in provider, else the `type` field.
    pub kind: ProviderKind,
    /// Keys whose value resolved. Keys naming an unset `env.` variable are left out.
    pub keys: Vec<KeyConfig>,
    /// `env.` variables named by keys that were left out because they are unset; a provider
    /// with no keys answers with an error naming these, and is unavailable on `/health`.
    pub missing_env: Vec<String>,
    pub network: NetworkConfig,
    /// `concurrency_and_buffer_size.concurrency` (default 1000)
    pub concurrency: usize,
    /// `concurrency_and_buffer_size.buffer_size` (default 5000)
    pub buffer_size: usize,
    pub proxy: Option<ProxyConfig>,
    /// Azure settings (`azure_key_config` / `meta_config`): required for `azure`.
    pub azure: Option<AzureConfig>,
    /// Anthropic's `anthropic-version` header (`anthropic_version`, default `2023-06-01`).
    pub anthropic_version: String,
}

impl ProviderConfig {
    /// True when no key can serve any request (all keys' env variables unset, or none given).
    /// Ollama and custom servers without keys are allowed and get no auth header.
    pub fn requires_key(&self) -> bool {
        !matches!(self.kind, ProviderKind::Ollama | ProviderKind::Custom)
    }
}

/// One API key with the models it serves and its share of the traffic.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub value: Secret,
    /// Empty: every model.
    pub models: Vec<String>,
    /// > 0; relative to the other keys that serve the same model.
    pub weight: f64,
}

impl KeyConfig {
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// `network_config`.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// `base_url` without a trailing `/` (default: the provider's public API).
    pub base_url: String,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// `default_request_timeout_in_seconds` (default 30): one attempt, from send to the last
    /// byte of a non-streaming body, or to the response headers of a stream.
    pub request_timeout: Duration,
    /// `stream_idle_timeout_in_seconds` (default 30): longest gap between two stream chunks.
    pub stream_idle_timeout: Duration,
    /// `max_retries` (default 0): retries of one target before its fallbacks are tried.
    pub max_retries: u32,
    /// `retry_backoff_initial` in milliseconds (default 500).
    pub retry_backoff_initial: Duration,
    /// `retry_backoff_max` in milliseconds (default 5000).
    pub retry_backoff_max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Http,
    Socks5,
}

/// `proxy_config`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub kind: ProxyKind,
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Azure OpenAI settings.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// `https://<resource>.openai.azure.com`, no trailing `/`.
    pub endpoint: String,
    /// `api-version` query parameter (default `2024-10-21`).
    pub api_version: String,
    /// Model name → deployment name. A model not in the map is used as the deployment name.
    pub deployments: HashMap<String, String>,
}

/// What to do with a request when a plugin traps, times out or runs out of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Skip the plugin and go on (default).
    FailOpen,
    /// Refuse the request with a 500 that names the plugin.
    FailClosed,
}

/// `plugins`.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// `directory` (default `plugins/build`), relative to the config file.
    pub directory: PathBuf,
    /// `watch` (default true): hot-reload components when files change.
    pub watch: bool,
    /// `debounce_ms` (default 200).
    pub debounce: Duration,
    /// `max_instances` (default 64): pool cap per plugin; pre-warmed instances are
    /// `min(client.initial_pool_size, max_instances)`.
    pub max_instances: usize,
    /// The entries in chain order (sorted by `order`, then position in the file).
    pub entries: Vec<PluginEntry>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            directory: PathBuf::from("plugins/build"),
            watch: true,
            debounce: Duration::from_millis(200),
            max_instances: 64,
            entries: Vec::new(),
        }
    }
}

/// One `plugins.entries[i]`.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// `name`: shown in logs, metrics (`plugin` label) and errors.
    pub name: String,
    /// `file` in the plugins directory (default `<name>.wasm`).
    pub file: String,
    /// `order` (default: position in the list); lower runs first in pre-hooks.
    pub order: i64,
    /// `enabled` (default true).
    pub enabled: bool,
    /// `config`: handed to the plugin's `init` as JSON (default `{}`).
    pub config_json: String,
    /// `on_error` (default `fail_open`).
    pub on_error: OnError,
    /// `deadline_ms` per hook call (default 10).
    pub deadline: Duration,
    /// `memory_limit_mib` per instance (default 64).
    pub memory_limit_bytes: usize,
    /// `fresh_instance_after` (default 0 = never): recycle an instance after this many
    /// requests; 1 gives every request a fresh instance (no data carried between requests).
    pub fresh_instance_after: u64,
}
