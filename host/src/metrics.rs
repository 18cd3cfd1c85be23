//! Gateway metrics in Prometheus text format on `/metrics`, all prefixed `switchyard_`.
//! Every phase of the request's way records here: the proxy (requests, end-to-end latency,
//! overhead, fallbacks), the engine (upstream latency, retries, queue depth, drops) and the
//! plugins (their own metrics, registered on the same registry).
//!
//! Labels stay low-cardinality whatever clients send: a provider label is a configured
//! provider (else `unknown`), a model label is a model the config lists for it, or one the
//! provider answered for (the first [`MAX_LEARNED_MODELS`] of them), else `other`. The
//! handles of each provider and model are resolved once, so recording costs an atomic add.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::ProviderConfig;
use crate::error::Fault;

/// Models a provider answered for that get a label of their own, beyond those the config
/// lists; the rest count as `other`.
pub const MAX_LEARNED_MODELS: usize = 64;

/// The label of providers that are not configured.
pub const UNKNOWN: &str = "unknown";
/// The label of models past the limit.
pub const OTHER: &str = "other";

/// All gateway metrics.
pub struct Metrics {
    pub registry: Registry,
    /// `switchyard_requests_total{provider,model,outcome}`; outcome is `success` or a fault.
    pub requests: IntCounterVec,
    /// `switchyard_request_duration_seconds{provider,model}`: end to end, as the client sees it
    /// (to the last byte for non-streaming, to the first chunk for streams).
    pub request_duration: HistogramVec,
    /// `switchyard_upstream_duration_seconds{provider,model}`: one upstream attempt.
    pub upstream_duration: HistogramVec,
    /// `switchyard_gateway_overhead_seconds`: time in the gateway excluding upstream time.
    pub overhead: HistogramVec,
    /// `switchyard_retries_total{provider,model}`
    pub retries: IntCounterVec,
    /// `switchyard_fallbacks_total{from_provider,to_provider}`
    pub fallbacks: IntCounterVec,
    /// `switchyard_queue_depth{provider}`: requests admitted but waiting for a worker.
    pub queue_depth: IntGaugeVec,
    /// `switchyard_in_flight{provider}`: requests holding a worker.
    pub in_flight: IntGaugeVec,
    /// `switchyard_dropped_requests_total{provider,reason}`
    pub dropped: IntCounterVec,
    /// `switchyard_tokens_total{provider,model,type}`; type is `prompt` or `completion`.
    pub tokens: IntCounterVec,
    /// `switchyard_stream_chunks_total{provider}`
    pub stream_chunks: IntCounterVec,
    /// `switchyard_streams_total{provider,model,end}`: how streams ended (`complete`,
    /// `upstream_error`, `plugin_error`, `client_gone`).
    pub streams: IntCounterVec,
    /// `switchyard_panics_total`: panics caught while handling a request.
    pub panics: IntCounter,
    /// `switchyard_overloaded_total`: requests refused because `client.max_in_flight`
    /// requests were being handled.
    pub rejected_overloaded: IntCounter,
    /// `switchyard_key_requests_total{key,outcome}`: requests per virtual key (configured
    /// key names only).
    pub key_requests: IntCounterVec,
    /// `switchyard_key_tokens_total{key,type}`: provider-reported tokens per virtual key.
    pub key_tokens: IntCounterVec,
    /// `switchyard_key_rejections_total{key,reason}`: requests of a valid key refused
    /// (`model_not_allowed`, `requests_per_minute`, `tokens_per_minute`, `token_budget`,
    /// `store_error`).
    pub key_rejections: IntCounterVec,
    /// `switchyard_auth_failures_total{reason}`: requests without a valid key
    /// (`missing_key`, `invalid_key`).
    pub auth_failures: IntCounterVec,
}

/// The handles of one provider and model.
pub struct ModelMetrics {
    /// By outcome: success, then each [`Fault`].
    requests: [IntCounter; 5],
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub retries: IntCounter,
    pub tokens_prompt: IntCounter,
    pub tokens_completion: IntCounter,
    /// By end: complete, upstream_error, plugin_error, client_gone.
    streams: [IntCounter; 4],
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Complete,
    UpstreamError,
    PluginError,
    ClientGone,
}

impl StreamEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::UpstreamError => "upstream_error",
            StreamEnd::PluginError => "plugin_error",
            StreamEnd::ClientGone => "client_gone",
        }
    }

    const ALL: [StreamEnd; 4] = [
        StreamEnd::Complete,
        StreamEnd::UpstreamError,
        StreamEnd::PluginError,
        StreamEnd::ClientGone,
    ];
}

const OUTCOMES: [&str; 5] = ["success", "client", "upstream", "plugin", "gateway"];

fn outcome_index(fault: Option<Fault>) -> usize {
    match fault {
        None => 0,
        Some(Fault::Client) => 1,
        Some(Fault::Upstream) => 2,
        Some(Fault::Plugin) => 3,
        Some(Fault::Gateway) => 4,
    }
}

impl ModelMetrics {
    fn new(m: &Metrics, provider: &str, model: &str) -> ModelMetrics {
        let pm = [provider, model];
        ModelMetrics {
            requests: OUTCOMES.map(|o| m.requests.with_label_values(&[provider, model, o])),
            request_duration: m.request_duration.with_label_values(&pm),
            upstream_duration: m.upstream_duration.with_label_values(&pm),
            retries: m.retries.with_label_values(&pm),
            tokens_prompt: m.tokens.with_label_values(&[provider, model, "prompt"]),
            tokens_completion: m.tokens.with_label_values(&[provider, model, "completion"]),
            streams: StreamEnd::ALL
                .map(|e| m.streams.with_label_values(&[provider, model, e.as_str()])),
        }
    }

    /// One request finished: `fault` is `None` for a success.
    pub fn finished(&self, fault: Option<Fault>) {
        self.requests[outcome_index(fault)].inc();
    }

    pub fn stream_ended(&self, end: StreamEnd) {
        self.streams[end as usize].inc();
    }

    pub fn tokens(&self, usage: crate::schema::Usage) {
        self.tokens_prompt.inc_by(u64::from(usage.prompt_tokens));
        self.tokens_completion
            .inc_by(u64::from(usage.completion_tokens));
    }
}

/// The handles of one provider: per model, and the provider-wide ones.
pub struct ProviderMetrics {
    name: String,
    registry: Arc<Metrics>,
    listed: HashMap<String, Arc<ModelMetrics>>,
    learned: RwLock<HashMap<String, Arc<ModelMetrics>>>,
    other: Arc<ModelMetrics>,
    pub overhead: Histogram,
    pub stream_chunks: IntCounter,
}

impl ProviderMetrics {
    /// The handles of `model` (its own, or `other`'s).
    pub fn model(&self, model: &str) -> Arc<ModelMetrics> {
        if let Some(m) = self.listed.get(model) {
            return m.clone();
        }
        let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
        learned.get(model).unwrap_or(&self.other).clone()
    }

    /// The provider answered for `model`: give it a label of its own while there is room.
    pub fn learn(&self, model: &str) {
        if self.listed.contains_key(model) {
            return;
        }
        let known = {
            let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
            learned.contains_key(model) || learned.len() >= MAX_LEARNED_MODELS
        };
        if known {
            return;
        }
        let mut learned = self.learned.write().unwrap_or_else(|e| e.into_inner());
        if learned.len() < MAX_LEARNED_MODELS && !learned.contains_key(model) {
            let m = Arc::new(ModelMetrics::new(&self.registry, &self.name, model));
            learned.insert(model.to_owned(), m);
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    /// The handles of a configured provider, its listed models resolved up front.
    pub fn provider(self: &Arc<Self>, cfg: &ProviderConfig) -> ProviderMetrics {
        self.provider_named(&cfg.name, &cfg.listed_models())
    }

    /// The handles of requests to providers that are not configured.
    pub fn unknown_provider(self: &Arc<Self>) -> ProviderMetrics {
        self.provider_named(UNKNOWN, &[])
    }

    fn provider_named(self: &Arc<Self>, name: &str, models: &[&str]) -> ProviderMetrics {
        ProviderMetrics {
            name: name.to_owned(),
            registry: self.clone(),
            listed: models
                .iter()
                .map(|m| (m.to_string(), Arc::new(ModelMetrics::new(self, name, m))))
                .collect(),
            learned: RwLock::new(HashMap::new()),
            other: Arc::new(ModelMetrics::new(self, name, OTHER)),
            overhead: self.overhead.with_label_values(&[name]),
            stream_chunks: self.stream_chunks.with_label_values(&[name]),
        }
    }

    pub fn new() -> Metrics {
        let registry = Registry::new();
        // 1 ms .. ~65 s: LLM calls span four orders of magnitude.
        let latency = exponential_buckets(0.001, 2.0, 17).expect("valid buckets");
        // 1 µs .. ~16 ms: the gateway's own share should sit at the bottom.
        let overhead = exponential_buckets(0.000_001, 2.0, 15).expect("valid buckets");
        Metrics {
            requests: counter(
                &registry,
                "switchyard_requests_total",
                "Requests by provider, model and outcome (success, client, upstream, plugin, gateway)",
                &["provider", "model", "outcome"],
            ),
            request_duration: histogram(
                &registry,
                "switchyard_request_duration_seconds",
                "End-to-end request latency as the client sees it (first chunk for streams)",
                &["provider", "model"],
                latency.clone(),
            ),
            upstream_duration: histogram(
                &registry,
                "switchyard_upstream_duration_seconds",
                "Latency of one upstream attempt (to the last byte, or the headers of a stream)",
                &["provider", "model"],
                latency,
            ),
            overhead: histogram(
                &registry,
                "switchyard_gateway_overhead_seconds",
                "Time each request spends in the gateway, excluding upstream time",
                &["provider"],
                overhead,
            ),
            retries: counter(
                &registry,
                "switchyard_retries_total",
                "Retries of an upstream call on the same provider",
                &["provider", "model"],
            ),
            fallbacks: counter(
                &registry,
                "switchyard_fallbacks_total",
                "Requests moved to a fallback target",
                &["from_provider", "to_provider"],
            ),
            queue_depth: gauge(
                &registry,
                "switchyard_queue_depth",
                "Requests waiting in a provider's queue for a worker",
                &["provider"],
            ),
            in_flight: gauge(
                &registry,
                "switchyard_in_flight",
                "Requests being served by a provider's workers",
                &["provider"],
            ),
            dropped: counter(
                &registry,
                "switchyard_dropped_requests_total",
                "Requests refused because a provider queue was full",
                &["provider", "reason"],
            ),
            tokens: counter(
                &registry,
                "switchyard_tokens_total",
                "Tokens reported by providers",
                &["provider", "model", "type"],
            ),
            stream_chunks: counter(
                &registry,
                "switchyard_stream_chunks_total",
                "Stream chunks sent to clients",
                &["provider"],
            ),
            streams: counter(
                &registry,
                "switchyard_streams_total",
                "Streamed answers by how they ended (complete, upstream_error, plugin_error, client_gone)",
                &["provider", "model", "end"],
            ),
            panics: plain_counter(
                &registry,
                "switchyard_panics_total",
                "Panics caught while handling a request (answered with a 500)",
            ),
            rejected_overloaded: plain_counter(
                &registry,
                "switchyard_overloaded_total",
                "Requests refused with 503 because client.max_in_flight requests were in flight",
            ),
            key_requests: counter(
                &registry,
                "switchyard_key_requests_total",
                "Requests per virtual key by outcome (success, client, upstream, plugin, gateway)",
                &["key", "outcome"],
            ),
            key_tokens: counter(
                &registry,
                "switchyard_key_tokens_total",
                "Provider-reported tokens per virtual key",
                &["key", "type"],
            ),
            key_rejections: counter(
                &registry,
                "switchyard_key_rejections_total",
                "Requests of a valid virtual key refused, by reason",
                &["key", "reason"],
            ),
            auth_failures: counter(
                &registry,
                "switchyard_auth_failures_total",
                "Requests refused with 401 (missing_key, invalid_key)",
                &["reason"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
