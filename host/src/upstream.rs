//! The upstream side: everything between the pre-hooks and a provider. The proxy hands it
//! one target at a time (fallbacks are the proxy's business, because each target runs the
//! hooks again); it takes a place in the provider's queue (`queue`), a worker, a key
//! (`keys`), has the provider build the request, authenticates it (`credentials`), sends
//! it (`transport`) with retries, and decodes the answer, cutting streamed bodies into
//! frames first (`framing`).
//!
//! Streams follow the commit rule: a streamed answer is handed back only once its first
//! content chunk arrived (or it ended). Before that, any failure (an HTTP error, a reset,
//! an idle timeout, an error event) is an ordinary failed attempt: retried, then reported
//! so the proxy can fall back.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use http::StatusCode;
use prometheus::IntCounter;
use rand::Rng;

use crate::config::{Config, ProviderConfig};
use crate::error::GatewayError;
use crate::metrics::{Metrics, ProviderMetrics};
use crate::providers::{self, Frame, Provider, StreamDecoder, StreamEvent};
use crate::schema::{StreamChunk, UnifiedRequest, UnifiedResponse};

pub mod credentials;
pub mod framing;
mod keys;
mod queue;
mod transport;

use credentials::Credential;
use framing::FrameDecoder;
use queue::{Place, Queue, Refused, Worker};
use transport::{BodyStream, Transport};

/// Longest `Retry-After` the upstream side will sleep for before retrying the same target.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A stream of OpenAI-shaped chunks from one upstream call.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChunk, GatewayError>> + Send>>;

/// What the upstream answered.
pub enum Answer {
    Full(UnifiedResponse),
    /// A stream whose first content chunk arrived (or that ended without any).
    Stream(ChunkStream),
}

/// How a request was served, for `extra_fields` and metrics.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Index into the provider's configured keys (`None` for keyless providers).
    pub key_index: Option<usize>,
    /// Upstream calls made (1 + retries).
    pub attempts: u32,
    /// Time spent in upstream calls and retry backoff, to the first content of a stream.
    pub upstream: Duration,
}

/// Sizes the upstream side holds in memory at most.
#[derive(Debug, Clone, Copy)]
struct Limits {
    response_body: usize,
    stream_event: usize,
}

/// One configured provider at run time.
pub struct ProviderRuntime {
    pub config: ProviderConfig,
    pub provider: Box<dyn Provider>,
    /// The credential of each configured key, in `config.keys` order.
    credentials: Vec<Credential>,
    /// The credential of requests that use no key (keyless providers, Vertex).
    keyless: Credential,
    transport: Transport,
    queue: Queue,
    pub metrics: Arc<ProviderMetrics>,
}

impl ProviderRuntime {
    fn new(config: ProviderConfig, metrics: &Arc<Metrics>) -> Result<Self, String> {
        let provider = providers::build(&config);
        let transport = Transport::new(&config)?;
        let auth = provider.auth();
        let credentials = config
            .keys
            .iter()
            .map(|k| Credential::new(&config, &auth, Some(k), transport.client()))
            .collect::<Result<Vec<_>, _>>()?;
        let keyless = Credential::new(&config, &auth, None, transport.client())?;
        let name = config.name.as_str();
        Ok(ProviderRuntime {
            queue: Queue::new(
                name,
                config.concurrency,
                config.buffer_size,
                metrics.queue_depth.with_label_values(&[name]),
                metrics.in_flight.with_label_values(&[name]),
            ),
            metrics: Arc::new(metrics.provider(&config)),
            provider,
            credentials,
            keyless,
            transport,
            config,
        })
    }

    /// Whether the provider can serve anything (false: an `env.` variable it needs is unset).
    pub fn available(&self) -> bool {
        self.settings_ok() && (!self.config.requires_key() || !self.config.keys.is_empty())
    }

    /// Settings whose secrets resolved (Bedrock's secret key, Vertex's service account).
    fn settings_ok(&self) -> bool {
        use crate::config::ProviderSettings;
        match &self.config.settings {
            ProviderSettings::Bedrock(b) => b.secret_access_key.is_some(),
            ProviderSettings::Vertex(v) => v.credentials.is_some(),
            ProviderSettings::None | ProviderSettings::Azure(_) => true,
        }
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue.waiting()
    }

    /// Requests holding a worker.
    pub fn in_flight(&self) -> usize {
        self.queue.working()
    }

    /// Each credential's state in words, for `/health`.
    pub fn credential_states(&self) -> Vec<String> {
        if self.credentials.is_empty() {
            vec![self.keyless.state()]
        } else {
            self.credentials.iter().map(Credential::state).collect()
        }
    }

    /// The key for one attempt at `model`: its index (`None` for keyless requests) and
    /// credential.
    pub fn pick_key(&self, model: &str) -> Result<(Option<usize>, &Credential), GatewayError> {
        if !self.available() {
            return Err(self.unavailable());
        }
        if self.config.keys.is_empty() {
            return Ok((None, &self.keyless));
        }
        match keys::pick(self.config.keys.iter(), model) {
            // Vertex keys only choose models; the service account authenticates.
            Some(i) if !self.config.requires_key() => Ok((Some(i), &self.keyless)),
            Some(i) => Ok((Some(i), &self.credentials[i])),
            None => Err(self.no_key_for(model)),
        }
    }

    fn unavailable(&self) -> GatewayError {
        let name = &self.config.name;
        let message = if self.config.missing_env.is_empty() {
            format!("provider '{name}' has no API key configured")
        } else {
            format!(
                "provider '{name}' has no usable credentials: set the environment variable {} and restart the gateway",
                self.config.missing_env.join(", ")
            )
        };
        let mut e = GatewayError::gateway(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            message,
        );
        e.allow_fallbacks = true;
        e
    }

    fn no_key_for(&self, model: &str) -> GatewayError {
        let mut e = GatewayError::client(
            StatusCode::NOT_FOUND,
            "model_not_found",
            Some("model"),
            format!(
                "model '{model}' is not served by provider '{}': no configured key lists it",
                self.config.name
            ),
        );
        e.allow_fallbacks = true;
        e
    }

    /// One attempt: build, authenticate, send, decode. A 401 on a renewable credential
    /// (an OAuth2 token) renews it and sends once more.
    async fn attempt(
        &self,
        req: &UnifiedRequest,
        credential: &Credential,
        limits: Limits,
    ) -> Result<Answer, GatewayError> {
        let net = &self.config.network;
        let mut base = self.provider.build_request(req)?;
        for (name, value) in &net.extra_headers {
            base.headers.insert(name.clone(), value.clone());
        }
        // Plugins' edits come after the config's, and the credentials after both (a plugin
        // cannot name a credential header: see `plugins::bindings`).
        for edit in &req.ingress.plugin_headers.upstream {
            match edit {
                crate::schema::HeaderEdit::Set(n, v) => {
                    base.headers.insert(n.clone(), v.clone());
                }
                crate::schema::HeaderEdit::Remove(n) => {
                    base.headers.remove(n);
                }
            }
        }
        crate::telemetry::inject(&mut base.headers);
        let timeout = net.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut renewed = false;
        let answer = loop {
            let mut up = base.clone();
            let applied = credential.apply(&mut up).await?;
            let answer = self.transport.send(up, deadline, timeout).await?;
            if answer.status == StatusCode::UNAUTHORIZED && credential.renewable() && !renewed {
                tracing::info!(provider = %self.config.name, "401 from the provider: renewing the access token once");
                credential.invalidate(&applied);
                renewed = true;
                continue;
            }
            break answer;
        };
        let status = answer.status;
        if !status.is_success() {
            let headers = answer.headers.clone();
            // An error body is for a message: a few KiB of it is plenty.
            let body = self
                .transport
                .read_body(answer, limits.response_body.min(1 << 20), deadline, timeout)
                .await?;
            let mut e = self.provider.parse_error(status, &headers, &body);
            // Providers echo the key they were sent ("Incorrect API key provided: sk-...");
            // it must not reach the client or the log.
            e.message = credential.scrub(&e.message);
            return Err(e);
        }
        if !req.stream {
            let body = self
                .transport
                .read_body(answer, limits.response_body, deadline, timeout)
                .await?;
            return self.provider.parse_response(req, &body).map(Answer::Full);
        }
        let mut stream = Decoding {
            body: self.transport.body_stream(answer),
            frames: FrameDecoder::new(self.provider.framing(), limits.stream_event),
            decoder: self.provider.stream_decoder(req),
            pending: VecDeque::new(),
            done: false,
            idle: net.stream_idle_timeout,
            provider: self.config.name.clone(),
        };
        stream.prime().await?;
        Ok(Answer::Stream(Box::pin(stream.into_stream())))
    }
}

/// Every provider's runtime.
pub struct Upstream {
    providers: HashMap<String, Arc<ProviderRuntime>>,
    order: Vec<String>,
    drop_excess: bool,
    queue_timeout: Option<Duration>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Upstream, String> {
        let mut providers = HashMap::new();
        let mut order = Vec::new();
        for p in &config.providers {
            order.push(p.name.clone());
            providers.insert(
                p.name.clone(),
                Arc::new(ProviderRuntime::new(p.clone(), &metrics)?),
            );
        }
        Ok(Upstream {
            providers,
            order,
            drop_excess: config.client.drop_excess_requests,
            queue_timeout: config.client.queue_timeout,
            limits: Limits {
                response_body: config.client.max_response_body_bytes,
                stream_event: config.client.max_stream_event_bytes,
            },
            metrics,
        })
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderRuntime>> {
        self.providers.get(name)
    }

    /// Whether `provider` takes a request whose big field is still bytes (see
    /// [`Provider::splices_raw`]); an unknown one reads nothing of it.
    pub fn splices_raw(&self, provider: &str) -> bool {
        self.providers
            .get(provider)
            .is_none_or(|p| p.provider.splices_raw())
    }

    /// Providers in config order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<ProviderRuntime>> {
        self.order.iter().filter_map(|n| self.providers.get(n))
    }

    /// Check that `req` can go to its target at all, before any queue.
    pub fn check_route(&self, req: &UnifiedRequest) -> Result<&Arc<ProviderRuntime>, GatewayError> {
        let name = &req.target.provider;
        let rt = self.providers.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = self.order.iter().map(String::as_str).collect();
            known.sort_unstable();
            let mut e = GatewayError::client(
                StatusCode::BAD_REQUEST,
                "unknown_provider",
                Some("model"),
                format!(
                    "unknown provider '{name}'; configured providers: {}",
                    known.join(", ")
                ),
            );
            e.allow_fallbacks = true;
            e
        })?;
        if !rt.provider.supports(req.kind) {
            let mut e = GatewayError::client(
                StatusCode::BAD_REQUEST,
                "unsupported_request",
                Some("model"),
                format!(
                    "provider '{name}' does not support {} requests",
                    req.kind.as_str()
                ),
            );
            e.allow_fallbacks = true;
            return Err(e);
        }
        Ok(rt)
    }

    /// Serve `req` on its target: queue, key, upstream call with retries.
    pub async fn execute(&self, req: &UnifiedRequest) -> Result<(Answer, Served), GatewayError> {
        let rt = self.check_route(req)?;
        // Fail before queueing when no key can serve the model.
        rt.pick_key(&req.target.model)?;
        let wait = crate::telemetry::queue_span(&rt.config.name);
        let place = tracing::Instrument::instrument(self.admit(rt), wait.clone()).await?;
        self.call(rt, req, place, wait).await
    }

    async fn admit(&self, rt: &ProviderRuntime) -> Result<Place, GatewayError> {
        let cfg = &rt.config;
        let wait = self.queue_timeout.unwrap_or(cfg.network.request_timeout);
        match rt.queue.admit(self.drop_excess, wait).await {
            Ok(place) => Ok(place),
            Err(refused) => {
                let (reason, what) = match refused {
                    Refused::Full => ("queue_full", "request dropped: queue is full".to_owned()),
                    Refused::Timeout(wait) => (
                        "queue_timeout",
                        format!(
                            "request dropped: waited {} ms for a place in the full queue",
                            wait.as_millis()
                        ),
                    ),
                };
                self.metrics
                    .dropped
                    .with_label_values(&[rt.queue.name(), reason])
                    .inc();
                Err(queue_full(cfg, &what))
            }
        }
    }

    /// Attempts with retries on one target. The worker is given back while sleeping
    /// before a retry, so a backoff (up to a minute of `Retry-After`) holds no slot.
    async fn call(
        &self,
        rt: &ProviderRuntime,
        req: &UnifiedRequest,
        place: Place,
        queue_wait: tracing::Span,
    ) -> Result<(Answer, Served), GatewayError> {
        let net = &rt.config.network;
        let mut served = Served::default();
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut worker =
            tracing::Instrument::instrument(rt.queue.worker(&place), queue_wait).await?;
        // Recorded once the outcome is known: a model the provider answered for gets its
        // own label first (see `metrics`).
        let mut durations = Vec::with_capacity(1);
        let record = |durations: &[Duration], learn: bool| {
            if learn {
                rt.metrics.learn(&req.target.model);
            }
            let m = rt.metrics.model(&req.target.model);
            for d in durations {
                m.upstream_duration.observe(d.as_secs_f64());
            }
            m.retries.inc_by(durations.len().saturating_sub(1) as u64);
        };
        loop {
            let (key_index, credential) = rt.pick_key(&req.target.model)?;
            served.key_index = key_index;
            served.attempts = attempt + 1;
            let call_started = Instant::now();
            let span = crate::telemetry::attempt_span(
                &rt.config.name,
                rt.config.kind,
                req.kind,
                &req.target.model,
                key_index,
                attempt,
            );
            let result = tracing::Instrument::instrument(
                rt.attempt(req, credential, self.limits),
                span.clone(),
            )
            .await;
            crate::telemetry::attempt_done(&span, &result);
            drop(span);
            durations.push(call_started.elapsed());
            if !matches!(&result, Err(e) if e.retryable && attempt < net.max_retries) {
                record(&durations, result.is_ok());
            }
            match result {
                Ok(Answer::Full(resp)) => {
                    served.upstream = started.elapsed();
                    return Ok((Answer::Full(resp), served));
                }
                Ok(Answer::Stream(stream)) => {
                    served.upstream = started.elapsed();
                    let held = Held {
                        stream,
                        _place: place,
                        _worker: worker,
                        chunks: rt.metrics.stream_chunks.clone(),
                    };
                    return Ok((Answer::Stream(Box::pin(held)), served));
                }
                Err(e) if e.retryable && attempt < net.max_retries => {
                    let delay = backoff(
                        attempt,
                        net.retry_backoff_initial,
                        net.retry_backoff_max,
                        e.retry_after,
                    );
                    tracing::debug!(
                        provider = %rt.config.name, model = %req.target.model, attempt,
                        status = e.status.as_u16(), delay_ms = delay.as_millis() as u64,
                        "retrying upstream call: {}", e.message
                    );
                    drop(worker);
                    tokio::time::sleep(delay).await;
                    worker = rt.queue.worker(&place).await?;
                    attempt += 1;
                }
                Err(mut e) => {
                    if attempt > 0 {
                        e.message = format!("{} (after {} attempts)", e.message, attempt + 1);
                    }
                    return Err(e);
                }
            }
        }
    }
}

fn queue_full(cfg: &ProviderConfig, what: &str) -> GatewayError {
    let mut e = GatewayError::gateway(
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_full",
        format!(
            "{what} for provider '{}' (concurrency {}, buffer_size {})",
            cfg.name, cfg.concurrency, cfg.buffer_size
        ),
    );
    e.retry_after = Some(Duration::from_secs(1));
    e
}

/// Exponential backoff with jitter: attempt `n` sleeps a random time in
/// `[max(initial, b/2), b]` with `b = min(max, initial * 2^n)`; a longer `Retry-After` wins,
/// up to [`MAX_RETRY_AFTER`].
pub fn backoff(
    attempt: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let low = initial.max(exp / 2).min(exp);
    let jittered = if exp > low {
        rand::rng().random_range(low..=exp)
    } else {
        exp
    };
    match retry_after {
        Some(after) => jittered.max(after.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// A stream that holds its queue place and worker until it ends or the client goes away.
struct Held {
    stream: ChunkStream,
    _place: Place,
    _worker: Worker,
    chunks: IntCounter,
}

impl Stream for Held {
    type Item = Result<StreamChunk, GatewayError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = self.stream.poll_next_unpin(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &item {
            self.chunks.inc();
        }
        item
    }
}

/// A streamed body being decoded: bytes → frames → chunks, with an idle timeout between
/// reads.
struct Decoding {
    body: BodyStream,
    frames: FrameDecoder,
    decoder: Box<dyn StreamDecoder>,
    pending: VecDeque<StreamChunk>,
    done: bool,
    idle: Duration,
    provider: String,
}

impl Decoding {
    /// Read until a chunk with content is pending or the stream is over. An error before
    /// that is the attempt's.
    async fn prime(&mut self) -> Result<(), GatewayError> {
        while !self.done && !self.pending.iter().any(StreamChunk::has_content) {
            self.read().await?;
        }
        Ok(())
    }

    /// One read from the body, decoded.
    async fn read(&mut self) -> Result<(), GatewayError> {
        match tokio::time::timeout(self.idle, self.body.next()).await {
            Err(_) => {
                self.done = true;
                Err(GatewayError::upstream_unreachable(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "provider '{}' stream stalled: no data for {} s",
                        self.provider,
                        self.idle.as_secs_f64()
                    ),
                ))
            }
            Ok(Some(Ok(bytes))) => {
                let frames = self.frames.push(&self.provider, &bytes);
                self.decode(frames)
            }
            Ok(Some(Err(e))) => {
                self.done = true;
                Err(e)
            }
            Ok(None) => {
                let tail = self.frames.finish(&self.provider);
                // A stream that ends without [DONE] is over all the same.
                let r = self.decode(tail);
                self.done = true;
                r
            }
        }
    }

    fn decode(&mut self, frames: Result<Vec<Frame>, GatewayError>) -> Result<(), GatewayError> {
        let frames = frames.inspect_err(|_| self.done = true)?;
        for frame in frames {
            let events = self
                .decoder
                .decode(&frame)
                .inspect_err(|_| self.done = true)?;
            for ev in events {
                match ev {
                    StreamEvent::Chunk(c) => self.pending.push_back(c),
                    StreamEvent::Done => self.done = true,
                    StreamEvent::Skip => {}
                }
            }
        }
        Ok(())
    }

    fn into_stream(self) -> impl Stream<Item = Result<StreamChunk, GatewayError>> + Send {
        futures_util::stream::unfold(self, |mut st| async move {
            loop {
                if let Some(chunk) = st.pending.pop_front() {
                    return Some((Ok(chunk), st));
                }
                if st.done {
                    return None;
                }
                if let Err(e) = st.read().await {
                    return Some((Err(e), st));
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for attempt in 0..8 {
            let exp = (initial * (1 << attempt)).min(max);
            for _ in 0..100 {
                let d = backoff(attempt, initial, max, None);
                assert!(
                    d >= initial.min(exp) && d <= exp,
                    "attempt {attempt}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let d = backoff(
            0,
            Duration::from_millis(10),
            Duration::from_millis(20),
            Some(Duration::from_secs(2)),
        );
        assert_eq!(d, Duration::from_secs(2));
        let d = backoff(
            0,
            Duration::from_millis(10),
            Duration::from_millis(20),
            Some(Duration::from_secs(3600)),
        );
        assert_eq!(d, MAX_RETRY_AFTER);
    }

    fn runtime(keys: &[(&str, &[&str], f64)]) -> ProviderRuntime {
        use crate::config::{KeyConfig, ProviderKind, Secret};
        use crate::providers::openai::tests::provider_config;
        let mut cfg = provider_config(ProviderKind::OpenAi, "http://127.0.0.1:1/v1");
        cfg.keys = keys
            .iter()
            .map(|(v, models, weight)| KeyConfig {
                value: Secret::new(*v),
                models: models.iter().map(|m| m.to_string()).collect(),
                weight: *weight,
            })
            .collect();
        ProviderRuntime::new(cfg, &Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn no_key_for_model_is_404_and_missing_env_is_named() {
        let rt = runtime(&[("a", &["gpt-4o"], 1.0)]);
        let e = rt.pick_key("gpt-5").err().unwrap();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(rt.pick_key("gpt-4o").unwrap().0, Some(0));
        let mut rt = runtime(&[]);
        rt.config.missing_env = vec!["OPENAI_API_KEY".into()];
        let e = rt.pick_key("gpt-4o").err().unwrap();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("OPENAI_API_KEY"));
    }
}
