//! What operators read besides `/metrics`: log lines, the access log and OpenTelemetry
//! traces. Shared by every phase of the request's way, like `metrics`.
//!
//! - Logs: text (colours only on a terminal) or one JSON object per line
//!   (`logging.format`, `--log-format`); the access log is one `switchyard::access` line
//!   per finished request, with no secret and no prompt unless `logging.access_log_prompts`.
//! - Traces: `tracing` spans of target [`TARGET`] at trace level, turned into OpenTelemetry
//!   spans by `tracing-opentelemetry` and exported over OTLP/HTTP (protobuf). When
//!   `telemetry` is not configured no layer wants these spans, so creating one costs a
//!   cached callsite check. The span tree of a request: `request` (server) → `pre_hook` /
//!   `post_hook` per plugin, `queue_wait`, `upstream` per attempt (client; its context goes
//!   to the provider as `traceparent`). Attributes follow the GenAI semantic conventions.
//! - Export never waits on the collector: finished spans go into a bounded queue
//!   (`telemetry.max_queue_size`) that one task drains in batches; a full queue or a failed
//!   export drops spans, counted in `switchyard_trace_spans_dropped_total{reason}`; after a
//!   failed export, batches are dropped unencoded until a backoff (1 s doubling to 30 s) has
//!   passed. The SDK's own batch processor would drop just the same but count nowhere we
//!   can read.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat, ProviderKind, TelemetryConfig};
use crate::error::GatewayError;
use crate::schema::{RequestKind, Usage};

/// The target of the spans that become OpenTelemetry spans.
pub const TARGET: &str = "switchyard::otel";
/// The target of access-log lines.
pub const ACCESS: &str = "switchyard::access";
/// Longest prompt or answer text put on a span or an access line.
const MAX_TEXT: usize = 16 * 1024;

/// Whether traces are exported (set once at start-up): skips context propagation work
/// when they are not.
static ENABLED: AtomicBool = AtomicBool::new(false);

struct Counters {
    exported: IntCounter,
    dropped: IntCounterVec,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| {
    let dropped = IntCounterVec::new(
        Opts::new(
            "switchyard_trace_spans_dropped_total",
            "Finished trace spans not exported, by reason (queue_full, export_failed)",
        ),
        &["reason"],
    )
    .expect("valid metric");
    for reason in ["queue_full", "export_failed"] {
        dropped.with_label_values(&[reason]);
    }
    Counters {
        exported: IntCounter::new(
            "switchyard_trace_spans_exported_total",
            "Trace spans accepted by the OTLP collector",
        )
        .expect("valid metric"),
        dropped,
    }
});

/// Put the trace-export counters on a gateway's registry (once per registry).
pub fn register(registry: &Registry) {
    let c = &*COUNTERS;
    let _ = registry.register(Box::new(c.exported.clone()));
    let _ = registry.register(Box::new(c.dropped.clone()));
}

/// Whether `telemetry` traces are on in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What `init` started; [`Telemetry::shutdown`] sends the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    flush: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

impl Telemetry {
    /// Export what is queued (bounded by the export timeout) and stop.
    pub async fn shutdown(self) {
        if let Some(flush) = &self.flush {
            let (tx, rx) = oneshot::channel();
            if flush.send(tx).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(15), rx).await;
            }
        }
        if let Some(p) = self.provider {
            let _ = p.shutdown();
        }
    }
}

/// Start logging (and traces when `config.telemetry` is set) for the process. `format`
/// (`--log-format`) overrides `logging.format`. Must run inside the tokio runtime.
pub fn init(config: &Config, format: Option<LogFormat>) -> Result<Telemetry, String> {
    let format = format.unwrap_or(config.logging.format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into());
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    let (otel, telemetry) = match &config.telemetry {
        None => (
            None,
            Telemetry {
                provider: None,
                flush: None,
            },
        ),
        Some(t) => {
            let (provider, flush) = tracer_provider(t)?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("switchyard"))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target(TARGET, tracing::Level::TRACE),
                );
            ENABLED.store(true, Ordering::Relaxed);
            (
                Some(layer),
                Telemetry {
                    provider: Some(provider),
                    flush: Some(flush),
                },
            )
        }
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))?;
    Ok(telemetry)
}

type Flush = mpsc::Sender<oneshot::Sender<()>>;

fn tracer_provider(t: &TelemetryConfig) -> Result<(SdkTracerProvider, Flush), String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let client = reqwest::Client::builder()
        .timeout(t.export_timeout)
        .no_proxy()
        .build()
        .map_err(|e| format!("telemetry: HTTP client: {e}"))?;
    let headers = t
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(t.traces_url.clone())
        .with_timeout(t.export_timeout)
        .with_headers(headers)
        .with_http_client(ReqwestClient(client))
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let mut attrs = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    for (k, v) in &t.resource_attributes {
        attrs.push(KeyValue::new(k.clone(), v.clone()));
    }
    let resource = Resource::builder()
        .with_service_name(t.service_name.clone())
        .with_attributes(attrs)
        .build();
    exporter.set_resource(&resource);
    let (tx, rx) = mpsc::channel(t.max_queue_size);
    let (flush_tx, flush_rx) = mpsc::channel(1);
    tokio::spawn(export_loop(
        rx,
        flush_rx,
        exporter,
        t.max_export_batch_size,
        t.export_interval,
        t.export_timeout,
    ));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BoundedQueue { tx })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sampling_ratio,
        ))))
        .with_resource(resource)
        .build();
    Ok((provider, flush_tx))
}

/// Finished spans into a bounded queue; never blocks the request that ended them.
#[derive(Debug)]
struct BoundedQueue {
    tx: mpsc::Sender<SpanData>,
}

impl opentelemetry_sdk::trace::SpanProcessor for BoundedQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            COUNTERS.dropped.with_label_values(&["queue_full"]).inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Drain the queue: a batch is sent when full or `interval` after the last send; one
/// export at a time, each within `timeout`, so a slow collector fills the queue (and
/// drops are counted) instead of piling up exports.
async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    mut flush: mpsc::Receiver<oneshot::Sender<()>>,
    exporter: opentelemetry_otlp::SpanExporter,
    batch_size: usize,
    interval: Duration,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(batch_size);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = Failing::default();
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= batch_size {
                        send(&exporter, &mut batch, timeout, &mut failing).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    send(&exporter, &mut batch, timeout, &mut failing).await;
                }
            }
            asked = flush.recv() => {
                while let Ok(span) = rx.try_recv() {
                    batch.push(span);
                    if batch.len() >= batch_size {
                        send(&exporter, &mut batch, timeout, &mut failing).await;
                    }
                }
                if !batch.is_empty() {
                    send(&exporter, &mut batch, timeout, &mut failing).await;
                }
                match asked {
                    Some(done) => { let _ = done.send(()); }
                    None => break,
                }
            }
        }
    }
}

/// The collector's state as the export loop saw it: after a failed export, batches are
/// dropped (and counted) without being encoded or sent until `retry_at`, the wait doubling
/// from 1 s to 30 s while it keeps failing. Encoding a batch to protobuf is most of an
/// export's cost, so a collector that is down costs the gateway one attempt per wait.
#[derive(Debug, Default)]
struct Failing {
    /// Set while the collector is failing: no export before then.
    retry_at: Option<tokio::time::Instant>,
    wait: Duration,
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    failing: &mut Failing,
) {
    let n = batch.len() as u64;
    let spans = std::mem::take(batch);
    let now = tokio::time::Instant::now();
    if failing.retry_at.is_some_and(|at| now < at) {
        COUNTERS
            .dropped
            .with_label_values(&["export_failed"])
            .inc_by(n);
        return;
    }
    let result = match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    match result {
        Ok(()) => {
            COUNTERS.exported.inc_by(n);
            if failing.retry_at.is_some() {
                tracing::info!("trace export to the OTLP collector works again");
            }
            *failing = Failing::default();
        }
        Err(e) => {
            COUNTERS
                .dropped
                .with_label_values(&["export_failed"])
                .inc_by(n);
            let first = failing.retry_at.is_none();
            failing.wait = if first {
                FIRST_RETRY
            } else {
                (failing.wait * 2).min(LAST_RETRY)
            };
            failing.retry_at = Some(tokio::time::Instant::now() + failing.wait);
            // Once per outage, not once per batch.
            if first {
                tracing::warn!(
                    spans = n,
                    "trace export failed, spans dropped until it works again (next try in {} s): {e}",
                    failing.wait.as_secs()
                );
            }
        }
    }
}

/// The gateway's reqwest as the OTLP exporter's HTTP client.
#[derive(Debug)]
struct ReqwestClient(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // A collector's answer is a small protobuf (partial success); don't hold more.
        if resp.content_length().is_some_and(|n| n > 1 << 20) {
            return Err("OTLP collector answer larger than 1 MiB".into());
        }
        let body = resp.bytes().await?;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

// ---- spans of the request's way ----

/// `gen_ai.operation.name` of a request kind.
fn operation(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Chat => "chat",
        RequestKind::Completion => "text_completion",
        RequestKind::Embedding => "embeddings",
    }
}

/// `gen_ai.system` of a provider kind (the GenAI semantic conventions' values).
pub fn gen_ai_system(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Azure => "az.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Vertex => "gcp.vertex_ai",
        ProviderKind::Cohere => "cohere",
        ProviderKind::Groq => "groq",
        ProviderKind::Mistral => "mistral_ai",
        ProviderKind::Ollama => "ollama",
        ProviderKind::Custom => "openai",
    }
}

/// The span of one client request, continuing the caller's W3C `traceparent`.
pub fn request_span(kind: RequestKind, headers: &HeaderMap) -> Span {
    let span = tracing::trace_span!(
        target: TARGET,
        "request",
        otel.name = operation(kind),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_description = Empty,
        gen_ai.operation.name = operation(kind),
        gen_ai.system = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.server.time_to_first_token = Empty,
        gen_ai.prompt = Empty,
        gen_ai.completion = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        switchyard.request_id = Empty,
        switchyard.provider = Empty,
        switchyard.stream = Empty,
        switchyard.fallback_index = Empty,
    );
    if !span.is_disabled() {
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// What the resolve phase learnt: the request id and the model asked for.
pub fn resolved(span: &Span, request_id: &str, model: &str, stream: bool, prompt: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    span.record("switchyard.request_id", request_id);
    span.record("gen_ai.request.model", model);
    span.record("switchyard.stream", stream);
    if let Some(p) = prompt {
        span.record("gen_ai.prompt", p);
    }
}

/// The request's messages (or prompt, or input) as text for a span or the access log,
/// cut at [`MAX_TEXT`].
pub fn prompt_text(body: &serde_json::Map<String, Value>) -> Option<String> {
    let v = body
        .get("messages")
        .or_else(|| body.get("prompt"))
        .or_else(|| body.get("input"))?;
    Some(cut(v.to_string()))
}

/// An answer's choices as text, cut at [`MAX_TEXT`].
pub fn completion_text(body: &serde_json::Map<String, Value>) -> Option<String> {
    body.get("choices").map(|v| cut(v.to_string()))
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A complete answer's own model and text.
pub fn response(span: &Span, body: &serde_json::Map<String, Value>, record_text: bool) {
    if span.is_disabled() {
        return;
    }
    if let Some(m) = body.get("model").and_then(Value::as_str) {
        span.record("gen_ai.response.model", m);
    }
    if record_text {
        if let Some(t) = completion_text(body) {
            span.record("gen_ai.completion", t);
        }
    }
}

/// A stream committed at its first content chunk, `ttft` after the request arrived.
pub fn first_token(span: &Span, ttft: Duration) {
    span.record("gen_ai.server.time_to_first_token", ttft.as_secs_f64());
}

/// A stream chunk: the model the provider names in it.
pub fn stream_model(span: &Span, body: &serde_json::Map<String, Value>) {
    if let Some(m) = body.get("model").and_then(Value::as_str) {
        span.record("gen_ai.response.model", m);
    }
}

/// The span of one plugin hook call.
pub fn hook_span(hook: &'static str, plugin: &str) -> Span {
    // Named at creation: a started OpenTelemetry span keeps its name.
    let name = if enabled() {
        format!("{hook} {plugin}")
    } else {
        String::new()
    };
    let span = tracing::trace_span!(
        target: TARGET,
        "hook",
        otel.name = name.as_str(),
        otel.status_code = Empty,
        switchyard.plugin.name = plugin,
        switchyard.plugin.hook = hook,
        switchyard.plugin.outcome = Empty,
    );
    span
}

/// How a hook call ended: `continue`, `respond`, `reject`, `keep`, `replace`,
/// `guest_error`, `trap`, ...
pub fn hook_outcome(span: &Span, outcome: &str) {
    span.record("switchyard.plugin.outcome", outcome);
    if matches!(outcome, "guest_error" | "failed" | "reject") {
        span.record("otel.status_code", "ERROR");
    }
}

/// The wait for a queue place and a worker of `provider`.
pub fn queue_span(provider: &str) -> Span {
    tracing::trace_span!(
        target: TARGET,
        "queue_wait",
        switchyard.provider = provider
    )
}

/// One upstream call (`retry` 0 for the first).
pub fn attempt_span(
    provider: &str,
    kind: ProviderKind,
    req_kind: RequestKind,
    model: &str,
    key_index: Option<usize>,
    retry: u32,
) -> Span {
    let name = if enabled() {
        format!("{} {model}", operation(req_kind))
    } else {
        String::new()
    };
    let span = tracing::trace_span!(
        target: TARGET,
        "upstream",
        otel.name = name.as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        gen_ai.system = gen_ai_system(kind),
        gen_ai.operation.name = operation(req_kind),
        gen_ai.request.model = model,
        switchyard.provider = provider,
        switchyard.key_index = Empty,
        switchyard.retry = retry as i64,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        if let Some(i) = key_index {
            span.record("switchyard.key_index", i as i64);
        }
    }
    span
}

/// How an upstream call ended.
pub fn attempt_done<T>(span: &Span, result: &Result<T, GatewayError>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(_) => {
            span.record("http.response.status_code", 200i64);
        }
        Err(e) => {
            span.record("http.response.status_code", e.status.as_u16() as i64);
            span.record("error.type", error_type(e));
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", e.message.as_str());
        }
    }
}

fn error_type(e: &GatewayError) -> &str {
    e.code.as_deref().unwrap_or(e.fault.as_str())
}

/// Add the current span's context to an upstream request as `traceparent`.
pub fn inject(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    }
}

/// The end of one request, for its span and the access log.
pub struct Finished<'a> {
    pub span: &'a Span,
    pub access_log: bool,
    pub request_id: &'a str,
    pub kind: RequestKind,
    pub provider: &'a str,
    pub system: Option<ProviderKind>,
    pub model: &'a str,
    pub status: u16,
    pub error: Option<&'a GatewayError>,
    pub stream_end: Option<&'static str>,
    pub usage: Option<Usage>,
    pub latency: Duration,
    pub upstream: Duration,
    pub fallback_index: u32,
    pub prompt: Option<&'a str>,
}

/// Record how a request ended on its span, and write its access line if enabled.
///
/// Numbers go on spans as `i64`: `tracing-opentelemetry` turns a `u64` into text.
pub fn finished(f: Finished<'_>) {
    let span = f.span;
    if !span.is_disabled() {
        span.record("switchyard.provider", f.provider);
        span.record("switchyard.fallback_index", f.fallback_index as i64);
        if let Some(k) = f.system {
            span.record("gen_ai.system", gen_ai_system(k));
        }
        span.record("http.response.status_code", f.status as i64);
        if let Some(u) = f.usage {
            span.record("gen_ai.usage.input_tokens", u.prompt_tokens as i64);
            span.record("gen_ai.usage.output_tokens", u.completion_tokens as i64);
        }
        if let Some(e) = f.error {
            span.record("error.type", error_type(e));
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", e.message.as_str());
        } else if let Some(end) = f.stream_end.filter(|e| *e != "complete") {
            span.record("error.type", end);
            span.record("otel.status_code", "ERROR");
        }
        if !f.model.is_empty() {
            // The model is known only now, and the span has started (its children needed
            // its context): rename it through OpenTelemetry itself.
            span.context()
                .span()
                .update_name(format!("{} {}", operation(f.kind), f.model));
        }
    }
    if f.access_log {
        let latency_ms = f.latency.as_secs_f64() * 1000.0;
        let upstream_ms = f.upstream.as_secs_f64() * 1000.0;
        let (input_tokens, output_tokens) = f
            .usage
            .map(|u| (Some(u.prompt_tokens), Some(u.completion_tokens)))
            .unwrap_or((None, None));
        tracing::info!(
            target: ACCESS,
            request_id = f.request_id,
            kind = f.kind.as_str(),
            provider = f.provider,
            model = f.model,
            status = f.status,
            latency_ms,
            upstream_ms,
            fallback_index = f.fallback_index,
            stream_end = f.stream_end,
            input_tokens,
            output_tokens,
            error = f.error.map(error_type),
            prompt = f.prompt,
            "request"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_TEXT);
        let c = cut(s);
        assert!(c.len() <= MAX_TEXT + '…'.len_utf8());
        assert!(c.ends_with('…'));
    }

    #[test]
    fn spans_are_disabled_without_a_subscriber() {
        let span = request_span(RequestKind::Chat, &HeaderMap::new());
        assert!(span.is_disabled());
        let mut h = HeaderMap::new();
        inject(&mut h);
        assert!(h.is_empty());
    }
}
