//! Raw serde structs mirroring `config.json` (Bifrost's keys).
//!
//! Every struct denies unknown fields and every field is optional: defaults and checks live
//! in [`super::validate`], which can then report *every* problem with its JSON path instead
//! of stopping at the first missing field. Maps whose order matters (`providers`) or whose
//! duplicate keys should be reported are read into [`OrderedMap`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A JSON object read as a list of `(key, value)` pairs in file order; duplicate keys are
/// kept so validation can report them.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `$schema`: accepted and ignored, for editors.
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub client: Option<RawClient>,
    pub providers: Option<OrderedMap<RawProvider>>,
    pub plugins: Option<RawPlugins>,
    pub logging: Option<RawLogging>,
    pub telemetry: Option<RawTelemetry>,
    pub status_page: Option<RawStatusPage>,
}

/// `client`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub listen: Option<String>,
    pub initial_pool_size: Option<usize>,
    pub drop_excess_requests: Option<bool>,
    pub max_request_body_bytes: Option<usize>,
    pub max_response_body_bytes: Option<usize>,
    pub max_stream_event_bytes: Option<usize>,
    pub queue_timeout_in_seconds: Option<u64>,
    pub shutdown_timeout_in_seconds: Option<u64>,
    pub header_read_timeout_in_seconds: Option<u64>,
    pub idle_timeout_in_seconds: Option<u64>,
    pub write_timeout_in_seconds: Option<u64>,
    pub body_read_timeout_in_seconds: Option<u64>,
    pub max_in_flight: Option<usize>,
    /// Public model names: each `"provider/model"` or a list of them (primary, then
    /// fallbacks).
    pub model_aliases: Option<OrderedMap<serde_json::Value>>,
    pub virtual_keys: Option<Vec<RawVirtualKey>>,
    pub admin_listen: Option<String>,
    /// A literal or `env.NAME`.
    pub admin_token: Option<String>,
}

/// `client.virtual_keys[i]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVirtualKey {
    pub name: Option<String>,
    /// A literal or `env.NAME`.
    pub secret: Option<String>,
    /// `provider/model`, `provider/*` or `*`.
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub token_budget: Option<RawTokenBudget>,
}

/// `client.virtual_keys[i].token_budget`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenBudget {
    pub tokens: Option<u64>,
    /// `day` or `month`.
    pub period: Option<String>,
}

/// `providers.<name>`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Required when the name is not a built-in provider kind.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub keys: Option<Vec<RawKey>>,
    pub network_config: Option<RawNetwork>,
    pub concurrency_and_buffer_size: Option<RawConcurrency>,
    pub proxy_config: Option<RawProxy>,
    /// Read per provider kind (`RawAzureMeta`, `RawBedrockMeta`, `RawVertexMeta`) once the
    /// kind is known, so problems carry the kind's own field names.
    pub meta_config: Option<serde_json::Value>,
    /// Anthropic only.
    pub anthropic_version: Option<String>,
}

/// `providers.<name>.keys[i]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// The key itself, or `env.NAME`.
    pub value: Option<String>,
    pub models: Option<Vec<String>>,
    pub weight: Option<f64>,
}

/// `providers.<name>.network_config`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub base_url: Option<String>,
    pub extra_headers: Option<OrderedMap<String>>,
    pub default_request_timeout_in_seconds: Option<u64>,
    pub stream_idle_timeout_in_seconds: Option<u64>,
    pub max_retries: Option<u32>,
    /// Milliseconds.
    pub retry_backoff_initial: Option<u64>,
    /// Milliseconds.
    pub retry_backoff_max: Option<u64>,
}

/// `providers.<name>.concurrency_and_buffer_size`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrency {
    pub concurrency: Option<usize>,
    pub buffer_size: Option<usize>,
}

/// `providers.<name>.proxy_config`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// `http` or `socks5`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub username: Option<String>,
    /// A literal or `env.NAME`.
    pub password: Option<String>,
}

/// `meta_config` of an `azure` provider.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzureMeta {
    pub endpoint: Option<String>,
    pub api_version: Option<String>,
    pub deployments: Option<OrderedMap<String>>,
}

/// `meta_config` of a `bedrock` provider.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBedrockMeta {
    pub region: Option<String>,
    /// A literal or `env.NAME`.
    pub secret_access_key: Option<String>,
    /// A literal or `env.NAME`.
    pub session_token: Option<String>,
    pub arn: Option<String>,
}

/// `meta_config` of a `vertex` provider.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVertexMeta {
    pub project_id: Option<String>,
    pub location: Option<String>,
    /// The service-account JSON: an object, a JSON string, or `env.NAME`.
    pub auth_credentials: Option<serde_json::Value>,
}

/// `plugins`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    pub directory: Option<String>,
    pub watch: Option<bool>,
    pub debounce_ms: Option<u64>,
    pub max_instances: Option<usize>,
    pub entries: Option<Vec<RawPluginEntry>>,
    /// The plugins' key-value store.
    pub kv: Option<RawPluginKv>,
    /// wasmtime's compilation cache: a directory, or `false` to turn it off.
    pub compile_cache: Option<serde_json::Value>,
}

/// `plugins.kv`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginKv {
    /// `memory` (default) or `redis`.
    pub backend: Option<String>,
    pub max_bytes_per_plugin: Option<u64>,
    /// Redis only: `redis://host:port[/db]`, or `env.NAME`.
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub command_timeout_ms: Option<u64>,
    pub pool_size: Option<u64>,
}

/// `plugins.entries[i]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginEntry {
    pub name: Option<String>,
    pub file: Option<String>,
    pub order: Option<i64>,
    pub enabled: Option<bool>,
    pub config: Option<serde_json::Value>,
    /// `fail_open` or `fail_closed`.
    pub on_error: Option<String>,
    pub deadline_ms: Option<u64>,
    pub memory_limit_mib: Option<u64>,
    pub fresh_instance_after: Option<u64>,
}

/// `logging`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// `text` or `json`.
    pub format: Option<String>,
    pub access_log: Option<bool>,
    pub access_log_prompts: Option<bool>,
}

/// `telemetry` (OpenTelemetry traces).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (the only one for now).
    pub otlp_protocol: Option<String>,
    pub otlp_headers: Option<OrderedMap<String>>,
    pub service_name: Option<String>,
    pub sampling_ratio: Option<f64>,
    pub resource_attributes: Option<OrderedMap<String>>,
    pub record_prompts: Option<bool>,
    pub max_queue_size: Option<usize>,
    pub max_export_batch_size: Option<usize>,
    pub export_interval_ms: Option<u64>,
    pub export_timeout_ms: Option<u64>,
}

/// `status_page`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatusPage {
    pub enabled: Option<bool>,
}
