//! Gateway metrics in Prometheus text format on `/metrics`, all prefixed `switchyard_`.
//! Every phase of the request's way records here: the proxy (requests, end-to-end latency,
//! overhead, fallbacks), the engine (upstream latency, retries, queue depth, drops) and the
//! plugins (their own metrics, registered on the same registry).
//!
//! Labels stay low-cardinality: provider and model come from config, outcome is a fault.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

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
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
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
