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

pub mod access;
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
    /// `logging`: line format and the access log.
    pub logging: LoggingConfig,
    /// `telemetry`: OpenTelemetry traces; `None` unless `telemetry.otlp_endpoint` is set.
    pub telemetry: Option<TelemetryConfig>,
    /// `status_page.enabled` (default true): `GET /ui` (and `/`) serve the status page.
    pub status_page: bool,
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
    /// `max_response_body_bytes` (default 32 MiB): a larger non-streaming answer from a
    /// provider is refused with a 502 instead of being held in memory.
    pub max_response_body_bytes: usize,
    /// `max_stream_event_bytes` (default 1 MiB): longest event of a streamed answer.
    pub max_stream_event_bytes: usize,
    /// `queue_timeout_in_seconds` (default: the provider's request timeout): how long a
    /// request may wait for a place in a full queue before it gets 503.
    pub queue_timeout: Option<Duration>,
    /// `shutdown_timeout_in_seconds` (default 30): on SIGTERM, how long in-flight and queued
    /// requests get to finish.
    pub shutdown_timeout: Duration,
    /// `header_read_timeout_in_seconds` (default 10): from a request's first byte to the end
    /// of its headers.
    pub header_read_timeout: Duration,
    /// `idle_timeout_in_seconds` (default 60): a keep-alive connection with no request for
    /// this long is closed.
    pub idle_timeout: Duration,
    /// `write_timeout_in_seconds` (default 30): a client that reads nothing of its answer
    /// for this long is disconnected (its upstream call is cancelled).
    pub write_timeout: Duration,
    /// `body_read_timeout_in_seconds` (default 60): longest time to receive a request body.
    pub body_read_timeout: Duration,
    /// `max_in_flight` (default 10000): requests handled at once by the whole gateway;
    /// more get 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// `model_aliases`: a public model name and the `(provider, model)` targets it stands
    /// for, the first the primary and the rest its fallbacks, in file order.
    pub model_aliases: Vec<(String, Vec<(String, String)>)>,
    /// `virtual_keys`, `admin_listen`, `admin_token`: who may call, and where the admin
    /// surfaces are served.
    pub access: access::AccessConfig,
}

/// Built-in provider implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Azure,
    Anthropic,
    /// AWS Bedrock (Converse API, SigV4).
    Bedrock,
    /// Google Vertex AI (Gemini, Claude on Vertex; OAuth2 service accounts).
    Vertex,
    /// Cohere v2 (chat, embed).
    Cohere,
    Groq,
    Mistral,
    Ollama,
    /// Any OpenAI-compatible server; needs `network_config.base_url`.
    Custom,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 10] = [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Bedrock,
        ProviderKind::Vertex,
        ProviderKind::Cohere,
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
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Vertex => "vertex",
            ProviderKind::Cohere => "cohere",
            ProviderKind::Groq => "groq",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Custom => "custom",
        }
    }

    pub fn parse(name: &str) -> Option<ProviderKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether requests need a `keys` entry. Local servers take none, and Vertex's
    /// credentials are the service account in `meta_config`.
    pub fn requires_key(self) -> bool {
        !matches!(
            self,
            ProviderKind::Ollama | ProviderKind::Custom | ProviderKind::Vertex
        )
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
    /// The typed `meta_config` section of this provider's kind.
    pub settings: ProviderSettings,
    /// Anthropic's `anthropic-version` header (`anthropic_version`, default `2023-06-01`).
    pub anthropic_version: String,
}

impl ProviderConfig {
    /// Whether requests need one of `keys` (see [`ProviderKind::requires_key`]).
    pub fn requires_key(&self) -> bool {
        self.kind.requires_key()
    }

    pub fn azure(&self) -> Option<&AzureConfig> {
        match &self.settings {
            ProviderSettings::Azure(a) => Some(a),
            _ => None,
        }
    }

    /// Every model name the config lists for this provider (keys' `models`, Azure
    /// deployments), sorted and deduplicated.
    pub fn listed_models(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .keys
            .iter()
            .flat_map(|k| k.models.iter().map(String::as_str))
            .collect();
        if let Some(az) = self.azure() {
            names.extend(az.deployments.keys().map(String::as_str));
        }
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// `providers.<name>.meta_config`, typed by the provider's kind.
#[derive(Debug, Clone, Default)]
pub enum ProviderSettings {
    /// Kinds without settings.
    #[default]
    None,
    Azure(AzureConfig),
    Bedrock(BedrockConfig),
    Vertex(VertexConfig),
}

/// AWS Bedrock settings. A key's `value` is the access key id.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// `region` (required), e.g. `us-east-1`: the endpoint's and the signature's region.
    pub region: String,
    /// `secret_access_key` (literal or `env.NAME`); `None` when its variable is unset (the
    /// provider is then unavailable and says which variable to set).
    pub secret_access_key: Option<Secret>,
    /// `session_token` for temporary credentials.
    pub session_token: Option<Secret>,
    /// `arn`: an inference-profile or provisioned-throughput ARN prefix; model ids are
    /// appended to it (`<arn>/<model>`) to form the model id in the path.
    pub arn: Option<String>,
}

/// Google Vertex AI settings.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    /// `project_id` (default: the service account's).
    pub project_id: String,
    /// `location` (default `us-central1`); `global` uses the global endpoint.
    pub location: String,
    /// `auth_credentials`: the service-account JSON (inline or `env.NAME`); `None` when its
    /// variable is unset.
    pub credentials: Option<ServiceAccount>,
}

/// The parts of a Google service-account key file the gateway uses.
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    /// PKCS#8 PEM.
    pub private_key: Secret,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    pub project_id: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key", &self.private_key)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
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

/// Default of `plugins.kv.max_bytes_per_plugin`.
pub const DEFAULT_KV_MAX_BYTES_PER_PLUGIN: usize = 16 << 20;

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
    /// `kv.max_bytes_per_plugin` (default 16 MiB): size cap of one plugin's keys in the
    /// in-process store; least recently used keys are evicted past it.
    pub kv_max_bytes_per_plugin: usize,
    /// `kv.backend` and its settings: where the plugins' (and virtual keys') counters live.
    pub kv_backend: KvBackend,
    /// `compile_cache` (default `$XDG_CACHE_HOME/switchyard/wasmtime`, else
    /// `~/.cache/switchyard/wasmtime`, else `plugins.directory/.cache`; `false` = none):
    /// where wasmtime keeps compiled components across restarts.
    pub compile_cache: Option<PathBuf>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            directory: PathBuf::from("plugins/build"),
            watch: true,
            debounce: Duration::from_millis(200),
            max_instances: 64,
            entries: Vec::new(),
            kv_max_bytes_per_plugin: DEFAULT_KV_MAX_BYTES_PER_PLUGIN,
            kv_backend: KvBackend::Memory,
            compile_cache: None,
        }
    }
}

/// `plugins.kv.backend`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KvBackend {
    /// `memory` (default): in-process, one gateway's own.
    #[default]
    Memory,
    /// `redis`: shared by every gateway pointed at the same server and `key_prefix`.
    Redis(RedisKvConfig),
}

impl KvBackend {
    pub fn as_str(&self) -> &'static str {
        match self {
            KvBackend::Memory => "memory",
            KvBackend::Redis(_) => "redis",
        }
    }
}

/// `plugins.kv` with `"backend": "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKvConfig {
    /// `url`: `redis://[user:password@]host:port[/db]`, literal or `env.NAME`; a secret
    /// (it may hold a password), never logged.
    pub url: Secret,
    /// `key_prefix` (default `switchyard:`): every key is `<prefix><plugin>:<key>`.
    pub key_prefix: String,
    /// `connect_timeout_ms` (default 1000): one connection attempt.
    pub connect_timeout: Duration,
    /// `command_timeout_ms` (default 100): one command; a plugin call's own deadline
    /// shortens it further.
    pub command_timeout: Duration,
    /// `pool_size` (default 4, 1..=64): multiplexed connections, used in turn.
    pub pool_size: usize,
}

/// One `plugins.entries[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable; colours only when the output is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// `logging`.
#[derive(Debug, Clone, Default)]
pub struct LoggingConfig {
    /// `format` (`text`, the default, or `json`); `--log-format` overrides it.
    pub format: LogFormat,
    /// `access_log` (default false): one line per request (target `switchyard::access`).
    pub access_log: bool,
    /// `access_log_prompts` (default false): add the request's messages to the access line.
    pub access_log_prompts: bool,
}

/// `telemetry`: where and how traces are exported.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `otlp_endpoint`: the collector's base URL (`http://127.0.0.1:4318`); spans are
    /// posted to `<otlp_endpoint>/v1/traces` unless it already ends so.
    pub traces_url: String,
    /// `otlp_headers`: sent with each export (e.g. an API key of a hosted collector).
    pub headers: Vec<(String, Secret)>,
    /// `service_name` (default `switchyard`).
    pub service_name: String,
    /// `sampling_ratio` (default 1.0): share of new traces kept; a continued trace follows
    /// its parent's decision.
    pub sampling_ratio: f64,
    /// `resource_attributes`: extra resource attributes (`deployment.environment`, ...).
    pub resource_attributes: Vec<(String, String)>,
    /// `record_prompts` (default false): put the request's messages and the answer on the
    /// request span.
    pub record_prompts: bool,
    /// `max_queue_size` (default 2048): finished spans waiting for export; more are dropped
    /// and counted.
    pub max_queue_size: usize,
    /// `max_export_batch_size` (default 512).
    pub max_export_batch_size: usize,
    /// `export_interval_ms` (default 1000): longest a span waits before it is sent.
    pub export_interval: Duration,
    /// `export_timeout_ms` (default 10000): one export's time limit.
    pub export_timeout: Duration,
}
