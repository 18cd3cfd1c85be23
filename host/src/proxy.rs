//! The request's way through the gateway, as named phases sharing one [`RequestCtx`]:
//!
//! accept → resolve → admit → (per target: pre-hooks → upstream → post-hooks) → respond
//! → finish
//!
//! The HTTP layer (`routes`) calls [`handle`] with the raw body and renders the
//! [`Outcome`] in the client's dialect; nothing here names the HTTP server, so a test can
//! drive the pipeline without one. Each target (the primary, then each fallback) runs the
//! hooks again, and the route is resolved after the pre-hooks, so a plugin that changes
//! the provider or model really reaches that provider's queue. When every target fails,
//! the error lists each attempt. `finish` (metrics) runs exactly once on every path, a
//! stream's included, whatever ends it: a guard does it when nothing else did.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::access::{Access, Caller, Clock};
use crate::config::Config;
use crate::error::{AttemptSummary, Fault, GatewayError};
use crate::metrics::{Metrics, ModelMetrics, ProviderMetrics, StreamEnd};
use crate::plugins::{
    Chain, HookContext, KvStore, PluginHost, PreOutcome, StreamEnded, StreamEnding, StreamHookState,
};
use crate::schema::{
    Dialect, RequestKind, StreamChunk, Target, UnifiedRequest, UnifiedResponse, Usage,
};
use crate::upstream::{Answer, ChunkStream, Served, Upstream};

mod resolve;
mod validate;

pub use resolve::{hook_context, hook_context_as, resolve, Catalog};

/// What every request shares: the config, the upstream side, the plugins, the metrics.
pub struct Gateway {
    pub config: Arc<Config>,
    pub upstream: Upstream,
    pub plugins: Arc<PluginHost>,
    pub metrics: Arc<Metrics>,
    /// Who may call: the virtual keys and their counters.
    pub access: Access,
    /// Handles for requests to providers that are not configured.
    unknown: Arc<ProviderMetrics>,
    /// Model aliases and bare model names.
    pub catalog: resolve::Catalog,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        upstream: Upstream,
        plugins: Arc<PluginHost>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway {
            unknown: Arc::new(metrics.unknown_provider()),
            catalog: resolve::Catalog::new(&config),
            access: Access::new(&config, &metrics),
            config,
            upstream,
            plugins,
            metrics,
        }
    }

    /// Count virtual keys' limits and budgets in `kv` (the plugins' store, so a shared
    /// backend shares them too) by `clock`.
    pub fn with_access_store(mut self, kv: Arc<dyn KvStore>, clock: Arc<dyn Clock>) -> Gateway {
        self.access = Access::with(&self.config, &self.metrics, kv, clock);
        self
    }

    /// `provider` as a metric label: configured providers only.
    fn provider_label<'a>(&self, provider: &'a str) -> &'a str {
        if self.upstream.provider(provider).is_some() {
            provider
        } else {
            crate::metrics::UNKNOWN
        }
    }

    /// The metric handles of `provider` (configured, else `unknown`).
    fn provider_metrics(&self, provider: &str) -> &Arc<ProviderMetrics> {
        match self.upstream.provider(provider) {
            Some(rt) => &rt.metrics,
            None => &self.unknown,
        }
    }
}

/// What the pipeline answers; the HTTP layer renders it in the client's dialect.
pub enum Outcome {
    /// A complete response.
    Response {
        response: UnifiedResponse,
        served: ServedBy,
    },
    /// A stream whose first content is there; the items follow.
    Stream {
        stream: OutStream,
        served: ServedBy,
    },
    Error(GatewayError),
}

/// The chunks of a committed stream, after the chunk hooks. An error item is the last.
pub type OutStream = Pin<Box<dyn Stream<Item = StreamItem> + Send>>;

pub enum StreamItem {
    Chunk(StreamChunk),
    /// The stream failed after it was committed: the client gets an error event and a clean
    /// end in its dialect.
    Error(GatewayError),
}

/// Who served a request and how: Bifrost's `extra_fields`.
#[derive(Debug, Clone)]
pub struct ServedBy {
    pub target: Target,
    pub key_index: Option<usize>,
    pub attempts: u32,
    pub fallback_index: u32,
    pub request_id: Arc<str>,
    pub latency: Duration,
    pub upstream_latency: Duration,
    /// Headers plugins added to the client's response (WIT 0.2.0).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl ServedBy {
    /// `extra_fields` of a response body.
    pub fn extra_fields(&self) -> Value {
        json!({
            "provider": self.target.provider,
            "model": self.target.model,
            "key_index": self.key_index,
            "attempts": self.attempts,
            "fallback_index": self.fallback_index,
            "request_id": &*self.request_id,
            "latency_ms": self.latency.as_secs_f64() * 1000.0,
            "upstream_latency_ms": self.upstream_latency.as_secs_f64() * 1000.0,
        })
    }
}

/// Everything one client request carries through the phases.
pub struct RequestCtx {
    pub hook: HookContext,
    pub received: Instant,
    /// Upstream time summed over attempts, to tell the gateway's own share.
    pub upstream: Duration,
    pub attempts: Vec<AttemptSummary>,
    /// Who is calling (authenticated by the HTTP layer).
    pub caller: Caller,
    pub kind: RequestKind,
    /// The request's trace span (disabled unless `telemetry` is on).
    pub span: tracing::Span,
    /// The client's messages, kept only when `logging.access_log_prompts` asks for them.
    pub prompt: Option<String>,
}

/// accept → ... → finish for one OpenAI-dialect request of `kind` from `caller` (see
/// [`Access::authenticate`]).
pub async fn handle(
    gw: &Gateway,
    caller: &Caller,
    kind: RequestKind,
    headers: &HeaderMap,
    body: Bytes,
) -> Outcome {
    handle_dialect(gw, Dialect::OpenAi, caller, kind, headers, body).await
}

/// [`handle`] for a request in `dialect`: only resolve differs (the body is translated to
/// the unified request there); every later phase is the same for every dialect.
pub async fn handle_dialect(
    gw: &Gateway,
    dialect: Dialect,
    caller: &Caller,
    kind: RequestKind,
    headers: &HeaderMap,
    body: Bytes,
) -> Outcome {
    // accept
    let mut ctx = RequestCtx {
        hook: hook_context_as(headers, caller.client_key.clone()),
        received: Instant::now(),
        upstream: Duration::ZERO,
        attempts: Vec::new(),
        caller: caller.clone(),
        kind,
        span: tracing::Span::current(),
        prompt: None,
    };
    if dialect != Dialect::OpenAi {
        // Plugins tell the dialect by this header (the WIT request kind stays `chat`).
        let mut h = ctx.hook.headers.to_vec();
        h.push((DIALECT_HEADER.to_owned(), dialect.as_str().to_owned()));
        ctx.hook.headers = h.into();
    }
    // resolve
    let chain = gw.plugins.chain();
    let log = &gw.config.logging;
    let record = gw
        .config
        .telemetry
        .as_ref()
        .is_some_and(|t| t.record_prompts);
    let wants_prompt = record || (log.access_log && log.access_log_prompts);
    let resolved = match dialect {
        // Without plugins or prompt recording nothing here reads the messages: they stay
        // the client's bytes, and an OpenAI-compatible provider gets them spliced into its
        // body (others parse them, see `run_target`).
        Dialect::OpenAi if chain.is_empty() && !wants_prompt => {
            resolve::resolve_lean(kind, &body, &gw.catalog)
        }
        Dialect::OpenAi => resolve::resolve_with(kind, &body, &gw.catalog),
        Dialect::Anthropic => {
            resolve::resolve_anthropic(&body, &gw.catalog, headers, |t| speaks_anthropic(gw, t))
        }
        Dialect::Responses => resolve::resolve_responses(&body, &gw.catalog),
    };
    let (req, fallbacks) = match resolved {
        Ok(r) => r,
        Err(e) => {
            Finish::new(gw, &ctx, &Target::default()).error(&e);
            return Outcome::Error(e);
        }
    };
    drop(body);
    // admit: the key may use every target, and is within its limits and budget; before
    // any plugin or provider sees the request.
    if let Err(r) = gw.access.admit(caller, &req.target, &fallbacks) {
        let e = GatewayError::from(r);
        Finish::new(gw, &ctx, &req.target).error(&e);
        return Outcome::Error(e);
    }
    {
        let text = wants_prompt
            .then(|| crate::telemetry::prompt_text(&req.body))
            .flatten();
        let on_span = text.as_deref().filter(|_| record);
        crate::telemetry::resolved(
            &ctx.span,
            &ctx.hook.request_id,
            &req.target.model,
            req.stream,
            on_span,
        );
        if log.access_log && log.access_log_prompts {
            ctx.prompt = text;
        }
    }
    // A fallback starts from the client's request again, not from what the hooks of the
    // previous target made of it; the copy is only made when there is a fallback.
    let original = (!fallbacks.is_empty()).then(|| req.clone());
    let mut targets = fallbacks.into_iter();
    let mut target = Some(req.target.clone());
    let mut last_err: Option<GatewayError> = None;
    let mut primary = Some(req);
    while let Some(t) = target.take() {
        let Some(mut req) = primary.take().or_else(|| original.clone()) else {
            break;
        };
        req.set_target(t.clone());
        ctx.hook.attempt = ctx.attempts.len() as u32;
        match run_target(gw, &chain, &mut ctx, req).await {
            Ok(out) => return out,
            Err(e) => {
                ctx.attempts.push(AttemptSummary {
                    provider: t.provider.clone(),
                    model: t.model.clone(),
                    status: e.status.as_u16(),
                    message: e.message.clone(),
                });
                let next = if e.allow_fallbacks {
                    targets.next()
                } else {
                    None
                };
                if let Some(n) = &next {
                    gw.metrics
                        .fallbacks
                        .with_label_values(&[
                            gw.provider_label(&t.provider),
                            gw.provider_label(&n.provider),
                        ])
                        .inc();
                    tracing::info!(
                        request_id = %ctx.hook.request_id, from = %t, to = %n,
                        "falling back after {}: {}", e.status, e.message
                    );
                }
                target = next;
                last_err = Some(e);
            }
        }
    }
    let mut err = last_err.unwrap_or_else(|| {
        GatewayError::gateway(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no target tried",
        )
    });
    let first = ctx
        .attempts
        .first()
        .map(|a| Target {
            provider: a.provider.clone(),
            model: a.model.clone(),
        })
        .unwrap_or_default();
    if ctx.attempts.len() > 1 {
        let list: Vec<String> = ctx
            .attempts
            .iter()
            .map(|a| format!("{}/{} ({})", a.provider, a.model, a.status))
            .collect();
        err.message = format!(
            "all {} targets failed: {}; last error: {}",
            ctx.attempts.len(),
            list.join(", "),
            err.message
        );
        err.attempts = std::mem::take(&mut ctx.attempts);
    }
    Finish::new(gw, &ctx, &first).error(&err);
    Outcome::Error(err)
}

/// The header plugins see on requests that came in another dialect than OpenAI's:
/// `anthropic` or `responses`.
pub const DIALECT_HEADER: &str = "x-switchyard-dialect";

/// Whether `target` is served in Anthropic's own format (an `anthropic` provider, or Claude
/// on Vertex AI), so an Anthropic request can reach it as the client wrote it.
fn speaks_anthropic(gw: &Gateway, target: &Target) -> bool {
    use crate::config::ProviderKind;
    match gw
        .upstream
        .provider(&target.provider)
        .map(|p| p.config.kind)
    {
        Some(ProviderKind::Anthropic) => true,
        Some(ProviderKind::Vertex) => target.model.starts_with("claude"),
        _ => false,
    }
}

/// One target: pre-hooks → upstream → post-hooks → respond.
async fn run_target(
    gw: &Gateway,
    chain: &Arc<Chain>,
    ctx: &mut RequestCtx,
    mut req: UnifiedRequest,
) -> Result<Outcome, GatewayError> {
    // pre-hooks (a request with plugins was resolved as a whole tree)
    let (pre, ran) = if chain.is_empty() {
        (PreOutcome::Continue, 0)
    } else {
        req.materialize()?;
        chain.pre_hooks(&ctx.hook, &mut req)
    };
    // A plugin may have changed the model: the key must be allowed that one too.
    if ran > 0 {
        ctx.caller
            .allows(&req.target, "model")
            .map_err(GatewayError::from)?;
    }
    // Only a provider that splices the client's bytes into its body takes them unparsed.
    if req.is_lean() && !gw.upstream.splices_raw(&req.target.provider) {
        req.materialize()?;
    }
    let (mut outcome, served) = match pre {
        // upstream: the route is resolved here, after the hooks
        PreOutcome::Continue => match gw.upstream.execute(&req).await {
            Ok((Answer::Full(mut resp), served)) => {
                if req.kind == RequestKind::Embedding
                    && req.body.get("encoding_format").and_then(Value::as_str) == Some("base64")
                {
                    resp.embeddings_to_base64();
                }
                (Ok(resp), Some(served))
            }
            Ok((Answer::Stream(stream), served)) => {
                ctx.upstream += served.upstream;
                return Ok(respond_stream(
                    gw,
                    chain.clone(),
                    ctx,
                    req,
                    ran,
                    stream,
                    served,
                ));
            }
            Err(e) => (Err(e), None),
        },
        PreOutcome::Respond(resp) => (Ok(resp), None),
        PreOutcome::Reject(e) => (Err(e), None),
    };
    let upstream = served.as_ref().map(|s| s.upstream).unwrap_or_default();
    ctx.upstream += upstream;
    // post-hooks
    let mut headers = std::mem::take(&mut req.ingress.plugin_headers.response);
    if ran > 0 {
        headers.extend(chain.post_hooks(&ctx.hook, &req, ran, upstream, &mut outcome));
    }
    // respond
    let response = match outcome {
        Ok(r) => r,
        Err(mut e) => {
            e.response_headers = headers;
            return Err(e);
        }
    };
    let served = served.unwrap_or_default();
    if served.attempts > 0 {
        // The provider answered for this model: it may have a metric label of its own.
        gw.provider_metrics(&req.target.provider)
            .learn(&req.target.model);
    }
    crate::telemetry::response(
        &ctx.span,
        &response.body,
        gw.config
            .telemetry
            .as_ref()
            .is_some_and(|t| t.record_prompts),
    );
    let mut finish = Finish::new(gw, ctx, &req.target);
    finish.status = response.status;
    finish.success(response.usage);
    let mut served = served_by(ctx, req.target, served);
    served.headers = headers;
    Ok(Outcome::Response { response, served })
}

fn served_by(ctx: &RequestCtx, target: Target, served: Served) -> ServedBy {
    ServedBy {
        target,
        key_index: served.key_index,
        attempts: served.attempts,
        fallback_index: ctx.hook.attempt,
        request_id: ctx.hook.request_id.clone(),
        latency: ctx.received.elapsed(),
        upstream_latency: served.upstream,
        headers: Vec::new(),
    }
}

/// The finish phase of one request: its metrics, recorded exactly once. A stream carries
/// it to its end; dropped unfinished (the client went away), it records that.
struct Finish {
    caller: Caller,
    provider: Arc<ProviderMetrics>,
    model: Arc<ModelMetrics>,
    received: Instant,
    /// Time outside the gateway so far (upstream calls and backoff).
    upstream: Duration,
    /// Set for streams: recorded as `client_gone` if dropped unfinished.
    stream: bool,
    done: bool,
    // For the request's span and access line (`telemetry`).
    span: tracing::Span,
    access_log: bool,
    request_id: Arc<str>,
    kind: RequestKind,
    target: Target,
    system: Option<crate::config::ProviderKind>,
    fallback_index: u32,
    prompt: Option<String>,
    status: u16,
}

impl Finish {
    fn new(gw: &Gateway, ctx: &RequestCtx, target: &Target) -> Finish {
        let provider = gw.provider_metrics(&target.provider).clone();
        let model = provider.model(&target.model);
        Finish {
            caller: ctx.caller.clone(),
            provider,
            model,
            received: ctx.received,
            upstream: ctx.upstream,
            stream: false,
            done: false,
            span: ctx.span.clone(),
            access_log: gw.config.logging.access_log,
            request_id: ctx.hook.request_id.clone(),
            kind: ctx.kind,
            target: target.clone(),
            system: gw
                .upstream
                .provider(&target.provider)
                .map(|p| p.config.kind),
            fallback_index: ctx.hook.attempt,
            prompt: ctx.prompt.clone(),
            status: 200,
        }
    }

    /// The request's span and access line.
    fn telemetry(
        &self,
        error: Option<&GatewayError>,
        end: Option<StreamEnd>,
        usage: Option<Usage>,
    ) {
        crate::telemetry::finished(crate::telemetry::Finished {
            span: &self.span,
            access_log: self.access_log,
            request_id: &self.request_id,
            kind: self.kind,
            provider: &self.target.provider,
            system: self.system,
            model: &self.target.model,
            status: error.map(|e| e.status.as_u16()).unwrap_or(self.status),
            error,
            stream_end: end.map(StreamEnd::as_str),
            usage,
            latency: self.received.elapsed(),
            upstream: self.upstream,
            fallback_index: self.fallback_index,
            prompt: self.prompt.as_deref(),
        });
    }

    fn overhead(&self, extra: Duration) {
        let own = self.received.elapsed().saturating_sub(self.upstream);
        let own = if self.stream { extra } else { own };
        self.provider.overhead.observe(own.as_secs_f64());
    }

    fn success(mut self, usage: Option<Usage>) {
        self.done = true;
        self.model
            .request_duration
            .observe(self.received.elapsed().as_secs_f64());
        self.model.finished(None);
        if let Some(u) = usage {
            self.model.tokens(u);
        }
        self.caller.finished(None, usage);
        self.overhead(Duration::ZERO);
        self.telemetry(None, None, usage);
    }

    fn error(mut self, e: &GatewayError) {
        self.done = true;
        self.model.finished(Some(e.fault));
        self.caller.finished(Some(e.fault), None);
        if e.fault == Fault::Gateway || e.status.is_server_error() {
            tracing::warn!(
                status = e.status.as_u16(),
                fault = e.fault.as_str(),
                "request failed: {}",
                e.message
            );
        }
        self.overhead(Duration::ZERO);
        self.telemetry(Some(e), None, None);
    }

    /// A stream ended: `own` is the gateway's share of its time (before the first chunk,
    /// and in chunk hooks since).
    fn stream_ended(&mut self, end: StreamEnd, usage: Option<Usage>, own: Duration) {
        if self.done {
            return;
        }
        self.done = true;
        self.model.stream_ended(end);
        let fault = match end {
            StreamEnd::Complete => None,
            StreamEnd::UpstreamError => Some(Fault::Upstream),
            StreamEnd::PluginError => Some(Fault::Plugin),
            // The client got what it asked for up to when it left.
            StreamEnd::ClientGone => Some(Fault::Client),
        };
        self.model.finished(fault);
        if let Some(u) = usage {
            self.model.tokens(u);
        }
        // The tokens of a stream count against the key whichever way it ended.
        self.caller.finished(fault, usage);
        self.overhead(own);
        self.telemetry(None, Some(end), usage);
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done && self.stream {
            self.stream_ended(StreamEnd::ClientGone, None, Duration::ZERO);
        }
    }
}

/// The committed stream: chunk hooks over every chunk, usage counted, how it ended
/// recorded.
fn respond_stream(
    gw: &Gateway,
    chain: Arc<Chain>,
    ctx: &RequestCtx,
    mut req: UnifiedRequest,
    ran: usize,
    upstream: ChunkStream,
    served: Served,
) -> Outcome {
    gw.provider_metrics(&req.target.provider)
        .learn(&req.target.model);
    let mut finish = Finish::new(gw, ctx, &req.target);
    finish.stream = true;
    crate::telemetry::first_token(&ctx.span, ctx.received.elapsed());
    // Time to the first chunk, as the client sees it.
    finish
        .model
        .request_duration
        .observe(ctx.received.elapsed().as_secs_f64());
    let hooks_on = ran > 0 && chain.wants_chunks(ran);
    let end_hooks = ran > 0 && chain.wants_stream_end(ran);
    let mut served = served_by(ctx, req.target.clone(), served);
    served.headers = std::mem::take(&mut req.ingress.plugin_headers.response);
    let st = StreamState {
        upstream,
        chain,
        hook: ctx.hook.clone(),
        req,
        ran,
        hooks_on,
        hooks: StreamHookState::default(),
        usage: None,
        template: None,
        own: ctx.received.elapsed().saturating_sub(ctx.upstream),
        finish,
        over: false,
        end_hooks,
        chunks: 0,
    };
    Outcome::Stream {
        stream: Box::pin(futures_util::stream::unfold(st, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        })),
        served,
    }
}

struct StreamState {
    upstream: ChunkStream,
    chain: Arc<Chain>,
    hook: HookContext,
    req: UnifiedRequest,
    ran: usize,
    hooks_on: bool,
    hooks: StreamHookState,
    usage: Option<Usage>,
    /// The first chunk's shape, for the empty last chunk the hooks may flush into.
    template: Option<Map<String, Value>>,
    /// The gateway's own time: before the stream, and in chunk hooks.
    own: Duration,
    finish: Finish,
    over: bool,
    /// Some plugin's post-hook wants `stream-ended`; cleared once it was told.
    end_hooks: bool,
    /// Chunks handed on to the client.
    chunks: u32,
}

/// However the stream ends (the client dropping it included), the plugins hear of it once.
impl Drop for StreamState {
    fn drop(&mut self) {
        self.plugins_end(StreamEnding::ClientGone);
    }
}

impl StreamState {
    async fn next(&mut self) -> Option<StreamItem> {
        if self.over {
            return None;
        }
        match self.upstream.next().await {
            Some(Ok(mut chunk)) => {
                if self.template.is_none() && !self.finish.span.is_disabled() {
                    crate::telemetry::stream_model(&self.finish.span, &chunk.body);
                }
                if let Some(u) = chunk.usage() {
                    self.usage = Some(u);
                }
                if self.hooks_on {
                    if self.template.is_none() {
                        self.template = Some(chunk.body.clone());
                    }
                    let started = Instant::now();
                    let r = self.chain.chunk_hooks(
                        &self.hook,
                        &self.req,
                        self.ran,
                        &mut self.hooks,
                        &mut chunk,
                        false,
                    );
                    self.own += started.elapsed();
                    if let Err(e) = r {
                        return Some(self.end(StreamEnd::PluginError, Some(e)));
                    }
                }
                self.chunks = self.chunks.saturating_add(1);
                Some(StreamItem::Chunk(chunk))
            }
            Some(Err(e)) => {
                tracing::warn!(request_id = %self.hook.request_id, "stream failed: {}", e.message);
                Some(self.end(StreamEnd::UpstreamError, Some(e)))
            }
            None => {
                self.over = true;
                // The hooks' last word: text they held back to catch a pattern split over
                // chunks.
                if self.hooks_on {
                    if let Some(mut last) = self.template.take().map(final_chunk) {
                        let started = Instant::now();
                        let r = self.chain.chunk_hooks(
                            &self.hook,
                            &self.req,
                            self.ran,
                            &mut self.hooks,
                            &mut last,
                            true,
                        );
                        self.own += started.elapsed();
                        match r {
                            Ok(()) if last.has_content() => {
                                self.chunks = self.chunks.saturating_add(1);
                                self.ended(StreamEnd::Complete, String::new());
                                return Some(StreamItem::Chunk(last));
                            }
                            Ok(()) => {}
                            Err(e) => return Some(self.end(StreamEnd::PluginError, Some(e))),
                        }
                    }
                }
                self.ended(StreamEnd::Complete, String::new());
                None
            }
        }
    }

    /// The 0.2.0 post-hooks' `stream-ended`, at most once.
    fn plugins_end(&mut self, end: StreamEnding) {
        if !std::mem::take(&mut self.end_hooks) {
            return;
        }
        let started = Instant::now();
        let ended = StreamEnded {
            end,
            status: self.finish.status,
            usage: self.usage,
            chunks: self.chunks,
        };
        self.chain
            .stream_ended(&self.hook, &self.req, self.ran, &ended);
        self.own += started.elapsed();
    }

    /// The plugins (once) and then the finish step hear how the stream ended.
    fn ended(&mut self, end: StreamEnd, message: String) {
        self.plugins_end(match end {
            StreamEnd::PluginError => StreamEnding::PluginError(message),
            StreamEnd::ClientGone => StreamEnding::ClientGone,
            StreamEnd::Complete => StreamEnding::Complete,
            StreamEnd::UpstreamError => StreamEnding::UpstreamError(message),
        });
        self.finish.stream_ended(end, self.usage, self.own);
    }

    fn end(&mut self, end: StreamEnd, e: Option<GatewayError>) -> StreamItem {
        self.over = true;
        let message = e.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        self.ended(end, message);
        StreamItem::Error(e.unwrap_or_else(|| {
            GatewayError::gateway(StatusCode::BAD_GATEWAY, "stream_failed", "stream failed")
        }))
    }
}

/// An empty chunk shaped like the stream's first one, on which plugins flush held text.
fn final_chunk(mut template: Map<String, Value>) -> StreamChunk {
    template.remove("usage");
    let text_key = if template.get("object").and_then(Value::as_str) == Some("text_completion") {
        "text"
    } else {
        "delta"
    };
    let choice = if text_key == "text" {
        json!({"index": 0, "text": "", "finish_reason": null})
    } else {
        json!({"index": 0, "delta": {}, "finish_reason": null})
    };
    template.insert("choices".to_owned(), Value::Array(vec![choice]));
    StreamChunk { body: template }
}
