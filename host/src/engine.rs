//! The engine: per-provider queues, workers, key choice, the upstream HTTP call and its
//! retries. Sits after the pre-hooks on the request's way; the proxy hands it one target at
//! a time (fallbacks are the proxy's business, because each attempt runs the hooks again).
//!
//! A provider's queue is a FIFO semaphore of `concurrency + buffer_size` places and its
//! workers are `concurrency` permits of a second one. That is Bifrost's bounded channel
//! drained by `concurrency` goroutines, without a hop to a worker task: the request's own
//! task does the call once it holds a worker permit. So a client that disconnects drops its
//! future, which drops its queue place or its upstream call, with no extra signalling.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, KeyConfig, ProviderConfig, ProxyKind};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::providers::{self, sse::SseParser, Provider, StreamEvent};
use crate::schema::{StreamChunk, UnifiedRequest, UnifiedResponse};

/// Longest `Retry-After` the engine will sleep for before retrying the same target.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A stream of OpenAI-shaped chunks from one upstream call.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChunk, GatewayError>> + Send>>;

/// What the upstream answered.
pub enum Answer {
    Full(UnifiedResponse),
    Stream(ChunkStream),
}

/// How a request was served, for `extra_fields` and metrics.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Index into the provider's configured keys (`None` for keyless providers).
    pub key_index: Option<usize>,
    /// Upstream calls made (1 + retries).
    pub attempts: u32,
    /// Time spent in upstream calls and retry backoff.
    pub upstream: Duration,
}

/// One configured provider at run time.
pub struct ProviderRuntime {
    pub config: ProviderConfig,
    pub provider: Box<dyn Provider>,
    client: reqwest::Client,
    /// Places in the queue, including the ones held by requests being served.
    admission: Arc<Semaphore>,
    /// Worker permits.
    workers: Arc<Semaphore>,
}

impl ProviderRuntime {
    fn new(config: ProviderConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(config.network.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy();
        if let Some(proxy) = &config.proxy {
            let url = match proxy.kind {
                ProxyKind::Http => proxy.url.clone(),
                ProxyKind::Socks5 if proxy.url.starts_with("socks5") => proxy.url.clone(),
                ProxyKind::Socks5 => format!("socks5h://{}", proxy.url),
            };
            let mut p = reqwest::Proxy::all(&url)
                .map_err(|e| format!("providers.{}.proxy_config.url: {e}", config.name))?;
            if let Some(user) = &proxy.username {
                let pass = proxy.password.as_ref().map(|s| s.expose()).unwrap_or("");
                p = p.basic_auth(user, pass);
            }
            builder = builder.proxy(p);
        }
        let client = builder
            .build()
            .map_err(|e| format!("providers.{}: HTTP client: {e}", config.name))?;
        Ok(ProviderRuntime {
            provider: providers::build(&config),
            client,
            admission: Arc::new(Semaphore::new(config.concurrency + config.buffer_size)),
            workers: Arc::new(Semaphore::new(config.concurrency)),
            config,
        })
    }

    /// Whether the provider can serve anything (false: every key's env variable is unset).
    pub fn available(&self) -> bool {
        !self.config.requires_key() || !self.config.keys.is_empty()
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        let admitted =
            self.config.concurrency + self.config.buffer_size - self.admission.available_permits();
        let working = self.config.concurrency - self.workers.available_permits();
        admitted.saturating_sub(working)
    }

    /// Weighted random choice among the keys that serve `model`.
    pub fn pick_key(&self, model: &str) -> Result<Option<(usize, &KeyConfig)>, GatewayError> {
        let serving = || {
            self.config
                .keys
                .iter()
                .enumerate()
                .filter(|(_, k)| k.serves(model))
        };
        let total: f64 = serving().map(|(_, k)| k.weight).sum();
        if total <= 0.0 {
            return if self.config.keys.is_empty() && !self.config.requires_key() {
                Ok(None)
            } else {
                Err(self.no_key_error(model))
            };
        }
        let mut point = rand::rng().random_range(0.0..total);
        let mut last = None;
        for (i, key) in serving() {
            if point < key.weight {
                return Ok(Some((i, key)));
            }
            point -= key.weight;
            last = Some((i, key));
        }
        // Floating-point rounding can leave `point` a hair above the last weight.
        Ok(last)
    }

    fn no_key_error(&self, model: &str) -> GatewayError {
        let name = &self.config.name;
        if self.config.keys.is_empty() {
            let message = if self.config.missing_env.is_empty() {
                format!("provider '{name}' has no API key configured")
            } else {
                format!(
                    "provider '{name}' has no usable API key: set the environment variable {} and restart the gateway",
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
        } else {
            let mut e = GatewayError::client(
                StatusCode::NOT_FOUND,
                "model_not_found",
                Some("model"),
                format!("model '{model}' is not served by provider '{name}': no configured key lists it"),
            );
            e.allow_fallbacks = true;
            e
        }
    }
}

/// Holds a queue place and a worker; gauges follow its life.
struct WorkerGuard {
    _admission: OwnedSemaphorePermit,
    _worker: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    provider: String,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.metrics
            .in_flight
            .with_label_values(&[self.provider.as_str()])
            .dec();
    }
}

/// Every provider's runtime.
pub struct Engine {
    providers: HashMap<String, Arc<ProviderRuntime>>,
    order: Vec<String>,
    drop_excess: bool,
    queue_timeout: Option<Duration>,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Engine, String> {
        let mut providers = HashMap::new();
        let mut order = Vec::new();
        for p in &config.providers {
            order.push(p.name.clone());
            providers.insert(p.name.clone(), Arc::new(ProviderRuntime::new(p.clone())?));
        }
        Ok(Engine {
            providers,
            order,
            drop_excess: config.client.drop_excess_requests,
            queue_timeout: config.client.queue_timeout,
            metrics,
        })
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderRuntime>> {
        self.providers.get(name)
    }

    /// Providers in config order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<ProviderRuntime>> {
        self.order.iter().filter_map(|n| self.providers.get(n))
    }

    /// Check that `req` can go to its target at all, before any plugin or queue.
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
        let guard = self.admit(rt).await?;
        self.call(rt, req, guard).await
    }

    async fn admit(&self, rt: &Arc<ProviderRuntime>) -> Result<WorkerGuard, GatewayError> {
        let cfg = &rt.config;
        let name = cfg.name.as_str();
        let admission = match rt.admission.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if self.drop_excess => {
                self.metrics
                    .dropped
                    .with_label_values(&[name, "queue_full"])
                    .inc();
                return Err(queue_full(cfg, "request dropped: queue is full"));
            }
            Err(_) => {
                let wait = self.queue_timeout.unwrap_or(cfg.network.request_timeout);
                match tokio::time::timeout(wait, rt.admission.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        self.metrics
                            .dropped
                            .with_label_values(&[name, "queue_timeout"])
                            .inc();
                        return Err(queue_full(
                            cfg,
                            &format!(
                                "request dropped: waited {} ms for a place in the full queue",
                                wait.as_millis()
                            ),
                        ));
                    }
                }
            }
        };
        let depth = self.metrics.queue_depth.with_label_values(&[name]);
        depth.inc();
        // The queue place is held while waiting, so the wait is bounded by the queue length.
        let worker = rt.workers.clone().acquire_owned().await;
        depth.dec();
        let worker = worker.map_err(|_| {
            GatewayError::gateway(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down",
            )
        })?;
        self.metrics.in_flight.with_label_values(&[name]).inc();
        Ok(WorkerGuard {
            _admission: admission,
            _worker: worker,
            metrics: self.metrics.clone(),
            provider: name.to_owned(),
        })
    }

    async fn call(
        &self,
        rt: &Arc<ProviderRuntime>,
        req: &UnifiedRequest,
        guard: WorkerGuard,
    ) -> Result<(Answer, Served), GatewayError> {
        let net = &rt.config.network;
        let labels = [rt.config.name.as_str(), req.target.model.as_str()];
        let mut served = Served::default();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let key = rt.pick_key(&req.target.model)?;
            served.key_index = key.map(|(i, _)| i);
            served.attempts = attempt + 1;
            let call_started = Instant::now();
            let result = self.attempt(rt, req, key.map(|(_, k)| k)).await;
            self.metrics
                .upstream_duration
                .with_label_values(&labels)
                .observe(call_started.elapsed().as_secs_f64());
            match result {
                Ok(Attempt::Full(resp)) => {
                    served.upstream = started.elapsed();
                    return Ok((Answer::Full(resp), served));
                }
                Ok(Attempt::Stream(upstream)) => {
                    served.upstream = started.elapsed();
                    let stream = chunk_stream(rt, req, upstream, guard, self.metrics.clone());
                    return Ok((Answer::Stream(stream), served));
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
                    self.metrics.retries.with_label_values(&labels).inc();
                    tokio::time::sleep(delay).await;
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

    async fn attempt(
        &self,
        rt: &ProviderRuntime,
        req: &UnifiedRequest,
        key: Option<&KeyConfig>,
    ) -> Result<Attempt, GatewayError> {
        let net = &rt.config.network;
        let up = rt.provider.build_request(req, key.map(|k| &k.value))?;
        let mut builder = rt.client.post(&up.url).headers(up.headers).body(up.body);
        for (name, value) in &net.extra_headers {
            builder = builder.header(name, value);
        }
        let timeout = net.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            GatewayError::upstream_unreachable(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "provider '{}' did not answer within {} s",
                    rt.config.name,
                    timeout.as_secs_f64()
                ),
            )
        };
        let response = match tokio::time::timeout_at(deadline, builder.send()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(transport_error(&rt.config.name, &e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if req.stream && status.is_success() {
            return Ok(Attempt::Stream(response));
        }
        let headers = response.headers().clone();
        let body = match tokio::time::timeout_at(deadline, response.bytes()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(transport_error(&rt.config.name, &e)),
            Ok(Ok(b)) => b,
        };
        if !status.is_success() {
            let mut e = rt.provider.parse_error(status, &headers, &body);
            // Providers echo the key they were sent ("Incorrect API key provided: sk-...");
            // it must not reach the client or the log.
            if let Some(k) = key {
                e.message = scrub_secret(&e.message, k.value.expose());
            }
            return Err(e);
        }
        rt.provider.parse_response(req, &body).map(Attempt::Full)
    }
}

/// `text` with every occurrence of `secret` replaced by a mask that keeps its last four
/// characters (as OpenAI does), so an operator can still tell which key was meant.
pub fn scrub_secret(text: &str, secret: &str) -> String {
    if secret.len() < 4 || !text.contains(secret) {
        return text.to_owned();
    }
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    text.replace(secret, &format!("****{tail}"))
}

enum Attempt {
    Full(UnifiedResponse),
    Stream(reqwest::Response),
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

fn transport_error(provider: &str, e: &reqwest::Error) -> GatewayError {
    let status = if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    // reqwest's Display names the URL, which never carries a key (keys go in headers).
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if !cause.is_empty() {
            cause.push_str(": ");
        }
        cause.push_str(&s.to_string());
        source = s.source();
    }
    GatewayError::upstream_unreachable(
        status,
        format!("provider '{provider}' unreachable: {cause}"),
    )
}

/// Exponential backoff with jitter: attempt `n` sleeps a random time in
/// `[max(initial, b/2), b]` with `b = min(max, initial * 2^n)`; a longer `Retry-After` wins.
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

/// Decode an upstream SSE body into OpenAI chunks. The stream owns the worker guard, so the
/// worker is busy until the stream ends or the client goes away.
fn chunk_stream(
    rt: &Arc<ProviderRuntime>,
    req: &UnifiedRequest,
    upstream: reqwest::Response,
    guard: WorkerGuard,
    metrics: Arc<Metrics>,
) -> ChunkStream {
    let idle = rt.config.network.stream_idle_timeout;
    let name = rt.config.name.clone();
    let decoder = rt.provider.stream_decoder(req);
    let stream = async_stream(upstream.bytes_stream(), idle, name, decoder);
    let chunks = metrics
        .stream_chunks
        .with_label_values(&[rt.config.name.as_str()]);
    Box::pin(stream.map(move |item| {
        let _hold = &guard;
        if item.is_ok() {
            chunks.inc();
        }
        item
    }))
}

/// The SSE loop as a `Stream`: bytes in, chunks out, with an idle timeout between reads.
fn async_stream<B>(
    body: B,
    idle: Duration,
    provider: String,
    decoder: Box<dyn providers::StreamDecoder>,
) -> impl Stream<Item = Result<StreamChunk, GatewayError>> + Send
where
    B: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    struct State<B> {
        body: B,
        parser: SseParser,
        decoder: Box<dyn providers::StreamDecoder>,
        pending: std::collections::VecDeque<StreamChunk>,
        done: bool,
        provider: String,
    }

    impl<B> State<B> {
        fn decode(&mut self, frames: Vec<providers::sse::SseFrame>) -> Result<(), GatewayError> {
            for frame in frames {
                for ev in self.decoder.decode(&frame.event, &frame.data)? {
                    match ev {
                        StreamEvent::Chunk(c) => self.pending.push_back(c),
                        StreamEvent::Done => self.done = true,
                        StreamEvent::Skip => {}
                    }
                }
            }
            Ok(())
        }
    }

    let state = State {
        body,
        parser: SseParser::default(),
        decoder,
        pending: Default::default(),
        done: false,
        provider,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(chunk) = st.pending.pop_front() {
                return Some((Ok(chunk), st));
            }
            if st.done {
                return None;
            }
            match tokio::time::timeout(idle, st.body.next()).await {
                Err(_) => {
                    st.done = true;
                    let e = GatewayError::upstream_unreachable(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "provider '{}' stream stalled: no data for {} s",
                            st.provider,
                            idle.as_secs_f64()
                        ),
                    );
                    return Some((Err(e), st));
                }
                Ok(Some(Ok(bytes))) => {
                    let frames = st.parser.push(&bytes);
                    if let Err(e) = st.decode(frames) {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
                Ok(Some(Err(e))) => {
                    st.done = true;
                    let e = transport_error(&st.provider, &e);
                    return Some((Err(e), st));
                }
                Ok(None) => {
                    let tail: Vec<_> = st.parser.finish().into_iter().collect();
                    let res = st.decode(tail);
                    // A stream that ends without [DONE] is over all the same.
                    st.done = true;
                    if let Err(e) = res {
                        return Some((Err(e), st));
                    }
                }
            }
        }
    })
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

    fn runtime(keys: &[(&str, &[&str], f64)]) -> ProviderRuntime {
        use crate::config::{NetworkConfig, ProviderKind, Secret};
        let keys = keys
            .iter()
            .map(|(v, models, weight)| KeyConfig {
                value: Secret::new(*v),
                models: models.iter().map(|m| m.to_string()).collect(),
                weight: *weight,
            })
            .collect();
        ProviderRuntime::new(ProviderConfig {
            name: "openai".into(),
            kind: ProviderKind::OpenAi,
            keys,
            missing_env: vec![],
            network: NetworkConfig {
                base_url: "http://127.0.0.1:1/v1".into(),
                extra_headers: vec![],
                request_timeout: Duration::from_secs(1),
                stream_idle_timeout: Duration::from_secs(1),
                max_retries: 0,
                retry_backoff_initial: Duration::from_millis(1),
                retry_backoff_max: Duration::from_millis(2),
            },
            concurrency: 1,
            buffer_size: 1,
            proxy: None,
            azure: None,
            anthropic_version: "2023-06-01".into(),
        })
        .unwrap()
    }

    #[test]
    fn key_shares_follow_weights_over_10000_picks() {
        let rt = runtime(&[
            ("a", &[], 0.5),
            ("b", &["gpt-4o"], 0.3),
            ("c", &[], 0.2),
            ("d", &["other"], 10.0),
        ]);
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            let (i, _) = rt.pick_key("gpt-4o").unwrap().unwrap();
            counts[i] += 1;
        }
        assert_eq!(
            counts[3], 0,
            "a key that does not list the model was picked"
        );
        for (i, want) in [(0, 0.5), (1, 0.3), (2, 0.2)] {
            let share = counts[i] as f64 / 10_000.0;
            assert!(
                (share - want).abs() < 0.02,
                "key {i}: share {share}, weight {want}"
            );
        }
    }

    #[test]
    fn no_key_for_model_is_404_and_missing_env_is_named() {
        let rt = runtime(&[("a", &["gpt-4o"], 1.0)]);
        let e = rt.pick_key("gpt-5").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let mut rt = runtime(&[]);
        rt.config.missing_env = vec!["OPENAI_API_KEY".into()];
        let e = rt.pick_key("gpt-4o").unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("OPENAI_API_KEY"));
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let d = backoff(
            0,
            Duration::from_millis(10),
            Duration::from_millis(20),
            Some(Duration::from_secs(2)),
        );
        assert_eq!(d, Duration::from_secs(2));
    }
}
