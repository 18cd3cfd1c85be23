//! Plugins: the PreHook/PostHook chain around every provider call, run as WebAssembly
//! components (WIT world `switchyard:plugin/plugin@0.1.0`, see `wit/plugin.wit`).
//!
//! This module is the facade: nothing outside it names a wasmtime type. The proxy takes a
//! [`Chain`] snapshot from the [`PluginHost`] when a request arrives and uses it for the whole
//! request, so a hot reload never changes the plugins under a request in flight.
//!
//! Inside: `bindings` (the WIT contract and conversions), `runtime` (engine, compile cache,
//! instance pools), `kv` (the key-value import's store), `metrics` (plugin-declared metrics)
//! and `watcher` (debounced directory events). A failing plugin never takes the gateway
//! down: its instance is dropped and its `on_error` policy decides the request's fate.

use std::sync::Arc;
use std::time::Duration;

use crate::config::PluginsConfig;
use crate::error::GatewayError;
use crate::schema::{StreamChunk, UnifiedRequest, UnifiedResponse};

/// Per-request facts the hooks see besides the request itself.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// Unique id of the client request (same for every fallback attempt).
    pub request_id: Arc<str>,
    /// `ck-<16 hex>` of the client's bearer token, or `anonymous`.
    pub client_key: Arc<str>,
    /// Client headers, lower-case names, credentials removed.
    pub headers: Arc<[(String, String)]>,
    /// Unix milliseconds when the request arrived.
    pub received_at_ms: u64,
    /// 0 for the primary target, 1.. for fallbacks.
    pub attempt: u32,
}

/// What the pre-hooks decided.
#[derive(Debug)]
pub enum PreOutcome {
    /// Send the (possibly changed) request upstream.
    Continue,
    /// A plugin answered; do not call the provider.
    Respond(UnifiedResponse),
    /// A plugin refused (status, message, `allow_fallbacks` set by the plugin), or failed
    /// with `on_error: fail_closed`.
    Reject(GatewayError),
}

/// Health of one plugin, for `/health`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginHealth {
    pub name: String,
    pub file: String,
    /// First 16 hex digits of the SHA-256 of the serving component, if one is loaded.
    pub version: Option<String>,
    /// `ready`, `disabled`, `failed` (no version could be loaded), `degraded` (an old
    /// version serves because the newest failed to load), `unlisted` (file with no entry).
    pub state: String,
    pub last_error: Option<String>,
    pub loaded_at_ms: Option<u64>,
}

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum PluginStartError {
    #[error("plugins.directory {path}: {reason}")]
    Directory { path: String, reason: String },
    #[error("plugin runtime: {0}")]
    Runtime(String),
}

mod bindings;
mod kv;
mod metrics;
mod runtime;
mod watcher;

pub use kv::{KvStore, MemoryKv};

use std::sync::{Mutex, Weak};

use arc_swap::ArcSwap;
use http::StatusCode;

use crate::config::OnError;
use bindings::wit;
use metrics::{PluginMetrics, PluginMetricsCollector};
use runtime::{CallError, LoadedPlugin, PluginSpec, Runtime};

/// Everything a reload needs; shared with the watcher task (which holds it weakly, so
/// dropping the host stops the task).
struct Shared {
    chain: ArcSwap<Chain>,
    loader: Option<Loader>,
    health: Mutex<Vec<PluginHealth>>,
    /// One reload at a time: two overlapping reloads could swap in an older snapshot last.
    reload_lock: tokio::sync::Mutex<()>,
}

struct Loader {
    cfg: PluginsConfig,
    prewarm: usize,
    rt: Arc<Runtime>,
    collector: Arc<PluginMetricsCollector>,
    /// One store for the host; each plugin sees it through its own key prefix, so a
    /// reloaded plugin keeps its counters.
    kv: Arc<dyn KvStore>,
    plugin_metrics: Mutex<std::collections::HashMap<String, Arc<PluginMetrics>>>,
}

/// Owns the loaded plugins and swaps the chain on reload.
pub struct PluginHost {
    shared: Arc<Shared>,
    _watcher: Option<watcher::DirWatcher>,
}

impl PluginHost {
    /// A host with no plugins.
    pub fn disabled() -> Arc<PluginHost> {
        Arc::new(PluginHost {
            shared: Arc::new(Shared {
                chain: ArcSwap::from_pointee(Chain::default()),
                loader: None,
                health: Mutex::new(Vec::new()),
                reload_lock: tokio::sync::Mutex::new(()),
            }),
            _watcher: None,
        })
    }

    /// Load every enabled entry of `cfg` and start the watcher. Returns after the initial
    /// load; plugins that fail to load do not stop startup, they show as failed on health.
    pub async fn start(
        cfg: &PluginsConfig,
        initial_pool_size: usize,
        registry: &prometheus::Registry,
    ) -> Result<Arc<PluginHost>, PluginStartError> {
        Self::start_with_kv(cfg, initial_pool_size, registry, Arc::new(MemoryKv::new())).await
    }

    /// [`PluginHost::start`] with another key-value backend.
    pub async fn start_with_kv(
        cfg: &PluginsConfig,
        initial_pool_size: usize,
        registry: &prometheus::Registry,
        kv: Arc<dyn KvStore>,
    ) -> Result<Arc<PluginHost>, PluginStartError> {
        let max_mem = cfg
            .entries
            .iter()
            .map(|e| e.memory_limit_bytes)
            .max()
            .unwrap_or(64 << 20)
            .max(64 << 20);
        let rt = tokio::task::spawn_blocking(move || runtime::runtime(max_mem))
            .await
            .map_err(|e| PluginStartError::Runtime(e.to_string()))?
            .map_err(PluginStartError::Runtime)?;
        tracing::info!(pooling_allocator = rt.pooling, "plugin runtime ready");
        let collector = PluginMetricsCollector::new();
        collector.register(registry);
        let shared = Arc::new(Shared {
            chain: ArcSwap::from_pointee(Chain::default()),
            loader: Some(Loader {
                cfg: cfg.clone(),
                prewarm: initial_pool_size.min(cfg.max_instances),
                rt,
                collector,
                kv,
                plugin_metrics: Mutex::new(Default::default()),
            }),
            health: Mutex::new(Vec::new()),
            reload_lock: tokio::sync::Mutex::new(()),
        });
        if !cfg.directory.is_dir() {
            tracing::warn!(dir = %cfg.directory.display(), "plugins directory missing; configured plugins fail to load");
        }
        reload(&shared).await;
        let mut dir_watcher = None;
        if cfg.watch && cfg.directory.is_dir() {
            match watcher::watch(&cfg.directory, cfg.debounce) {
                Ok((w, mut rx)) => {
                    dir_watcher = Some(w);
                    let weak: Weak<Shared> = Arc::downgrade(&shared);
                    tokio::spawn(async move {
                        while let Some(ev) = rx.recv().await {
                            let Some(shared) = weak.upgrade() else { return };
                            tracing::info!(files = ?ev.files, "plugin files changed; reloading");
                            reload(&shared).await;
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "plugins directory not watched; no hot reload")
                }
            }
        }
        Ok(Arc::new(PluginHost {
            shared,
            _watcher: dir_watcher,
        }))
    }

    /// Reload everything from the directory now; returns once the new chain is in place.
    pub async fn reload_now(&self) {
        reload(&self.shared).await;
    }

    /// The chain to use for one request, start to finish.
    pub fn chain(&self) -> Arc<Chain> {
        self.shared.chain.load_full()
    }

    pub fn health(&self) -> Vec<PluginHealth> {
        self.shared
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn reload(shared: &Arc<Shared>) {
    if shared.loader.is_none() {
        return;
    }
    let _one = shared.reload_lock.lock().await;
    let s = shared.clone();
    // Compiling and instantiating take milliseconds to seconds: keep them off the runtime.
    let done = tokio::task::spawn_blocking(move || {
        let loader = s.loader.as_ref().expect("checked above");
        let current = s.chain.load_full();
        let (chain, health) = loader.reconcile(&current);
        s.chain.store(Arc::new(chain));
        *s.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
    })
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "plugin reload panicked; previous chain keeps serving");
    }
}

fn health(e: &crate::config::PluginEntry, state: &str) -> PluginHealth {
    PluginHealth {
        name: e.name.clone(),
        file: e.file.clone(),
        version: None,
        state: state.to_owned(),
        last_error: None,
        loaded_at_ms: None,
    }
}

fn version(p: &LoadedPlugin) -> String {
    runtime::hex(&p.hash[..8])
}

impl Loader {
    fn metrics_for(&self, name: &str) -> Arc<PluginMetrics> {
        self.plugin_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(PluginMetrics::new(name, self.collector.clone())))
            .clone()
    }

    fn count_reload(&self, name: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.collector
            .reloads
            .with_label_values(&[name, result])
            .inc();
    }

    /// The chain for the directory as it is now, reusing plugins whose bytes did not change.
    fn reconcile(&self, current: &Chain) -> (Chain, Vec<PluginHealth>) {
        let dir = &self.cfg.directory;
        let mut plugins = Vec::new();
        let mut out = Vec::new();
        for entry in &self.cfg.entries {
            let old = current
                .plugins
                .iter()
                .find(|p| p.entry.name == entry.name)
                .cloned();
            if !entry.enabled {
                out.push(health(entry, "disabled"));
                continue;
            }
            let bytes = match std::fs::read(dir.join(&entry.file)) {
                Ok(b) => b,
                Err(e) => {
                    let reason = if e.kind() == std::io::ErrorKind::NotFound {
                        if old.is_some() {
                            "file removed".to_owned()
                        } else {
                            format!("file not found: {}", dir.join(&entry.file).display())
                        }
                    } else {
                        format!("read {}: {e}", entry.file)
                    };
                    if old.is_some() {
                        tracing::warn!(plugin = %entry.name, "plugin file removed; plugin unloaded");
                    } else {
                        tracing::warn!(plugin = %entry.name, error = %reason, "plugin not loaded");
                    }
                    let mut h = health(entry, "failed");
                    h.last_error = Some(reason);
                    out.push(h);
                    continue;
                }
            };
            let hash = runtime::sha256(&bytes);
            if let Some(o) = old.as_ref().filter(|o| o.hash == hash) {
                let mut h = health(entry, "ready");
                h.version = Some(version(o));
                h.loaded_at_ms = Some(o.loaded_at_ms);
                out.push(h);
                plugins.push(o.clone());
                continue;
            }
            let spec = PluginSpec {
                entry: entry.clone(),
                kv: kv::ScopedKv::new(self.kv.clone(), &entry.name),
                metrics: self.metrics_for(&entry.name),
                max_instances: self.cfg.max_instances,
            };
            let started = std::time::Instant::now();
            match LoadedPlugin::load(self.rt.clone(), spec, &bytes, self.prewarm) {
                Ok(p) => {
                    self.count_reload(&entry.name, true);
                    let p = Arc::new(p);
                    tracing::info!(
                        plugin = %entry.name,
                        version = %version(&p),
                        hooks = ?p.hooks,
                        instances = p.pooled(),
                        ms = started.elapsed().as_millis() as u64,
                        "plugin loaded"
                    );
                    let mut h = health(entry, "ready");
                    h.version = Some(version(&p));
                    h.loaded_at_ms = Some(p.loaded_at_ms);
                    out.push(h);
                    plugins.push(p);
                }
                Err(reason) => {
                    self.count_reload(&entry.name, false);
                    tracing::warn!(plugin = %entry.name, error = %reason, "plugin failed to load");
                    let mut h = health(entry, "failed");
                    if let Some(o) = old {
                        h.state = "degraded".into();
                        h.version = Some(version(&o));
                        h.loaded_at_ms = Some(o.loaded_at_ms);
                        plugins.push(o);
                    }
                    h.last_error = Some(reason);
                    out.push(h);
                }
            }
        }
        // Components nobody configured are listed, not loaded: a stray file must not run.
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut unlisted: Vec<String> = rd
                .filter_map(|d| d.ok())
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".wasm"))
                .filter(|f| !self.cfg.entries.iter().any(|e| &e.file == f))
                .collect();
            unlisted.sort();
            for f in unlisted {
                out.push(PluginHealth {
                    name: f.trim_end_matches(".wasm").to_owned(),
                    file: f,
                    version: None,
                    state: "unlisted".into(),
                    last_error: None,
                    loaded_at_ms: None,
                });
            }
        }
        (Chain::new(plugins, Some(self.collector.clone())), out)
    }
}

/// An immutable, ordered set of loaded plugins.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<Arc<LoadedPlugin>>,
    collector: Option<Arc<PluginMetricsCollector>>,
    /// Per plugin, the call-time histograms of its pre, post and chunk hooks, resolved once
    /// so a call pays an atomic add, not a label lookup.
    timers: Vec<Option<[prometheus::Histogram; 3]>>,
    any_pre: bool,
}

const PRE: usize = 0;
const POST: usize = 1;
const CHUNK: usize = 2;

/// Per-stream state of the chunk hooks (each plugin's opaque `state` bytes).
#[derive(Default)]
pub struct StreamHookState {
    pub(crate) states: Vec<Vec<u8>>,
    pub(crate) sequence: u32,
}

fn plugin_failure(name: &str, reason: &str) -> GatewayError {
    GatewayError::plugin(
        name,
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("plugin {name} failed: {reason}"),
    )
}

impl Chain {
    fn new(
        plugins: Vec<Arc<LoadedPlugin>>,
        collector: Option<Arc<PluginMetricsCollector>>,
    ) -> Self {
        let any_pre = plugins.iter().any(|p| p.hooks.contains(wit::Hooks::PRE));
        let timers = plugins
            .iter()
            .map(|p| {
                collector.as_ref().map(|c| {
                    ["pre", "post", "chunk"]
                        .map(|hook| c.calls.with_label_values(&[&p.entry.name, hook]))
                })
            })
            .collect();
        Chain {
            plugins,
            collector,
            timers,
            any_pre,
        }
    }

    /// Run one hook call of plugin `i`, timed.
    fn timed<R>(
        &self,
        i: usize,
        hook: usize,
        f: impl FnOnce(&LoadedPlugin) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let p = &self.plugins[i];
        match self.timers.get(i).and_then(Option::as_ref) {
            Some(t) => {
                let started = std::time::Instant::now();
                let r = f(p);
                t[hook].observe(started.elapsed().as_secs_f64());
                r
            }
            None => f(p),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Names of the plugins in chain order.
    pub fn names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.entry.name.clone()).collect()
    }

    fn count(&self, p: &LoadedPlugin, kind: &str) {
        if let Some(c) = &self.collector {
            c.failures.with_label_values(&[&p.entry.name, kind]).inc();
        }
    }

    /// Log and count a trap or timeout; the error to answer with under `fail_closed`.
    fn call_failed(&self, p: &LoadedPlugin, e: &CallError) -> Option<GatewayError> {
        self.count(p, e.kind());
        tracing::warn!(plugin = %p.entry.name, kind = e.kind(), reason = e.reason(), on_error = ?p.entry.on_error, "plugin call failed; instance discarded");
        match p.entry.on_error {
            OnError::FailOpen => None,
            OnError::FailClosed => Some(plugin_failure(&p.entry.name, e.reason())),
        }
    }

    /// A hook returned an error (or a change the host cannot apply): counted and logged like
    /// a trap, and the plugin's `on_error` policy decides. A deliberate refusal is `reject`,
    /// not an error.
    fn guest_error(&self, p: &LoadedPlugin, msg: &str) -> Option<GatewayError> {
        self.count(p, "guest_error");
        tracing::warn!(plugin = %p.entry.name, error = msg, on_error = ?p.entry.on_error, "plugin returned an error");
        match p.entry.on_error {
            OnError::FailOpen => None,
            OnError::FailClosed => Some(plugin_failure(&p.entry.name, msg)),
        }
    }

    /// Run the pre-hooks in order. Returns the decision and how many plugins ran (their
    /// post-hooks run later, in reverse).
    pub fn pre_hooks(&self, ctx: &HookContext, req: &mut UnifiedRequest) -> (PreOutcome, usize) {
        if !self.any_pre {
            return (PreOutcome::Continue, self.plugins.len());
        }
        // Built lazily, once, and again only after a plugin changed the request.
        let mut sent: Option<wit::Request> = None;
        for (i, p) in self.plugins.iter().enumerate() {
            if !p.hooks.contains(wit::Hooks::PRE) {
                continue;
            }
            let wreq = sent.get_or_insert_with(|| {
                let body = serde_json::to_string(&req.body).unwrap_or_default();
                bindings::request_to_wit(ctx, req, body)
            });
            let span = crate::telemetry::hook_span("pre_hook", &p.entry.name);
            let called =
                span.in_scope(|| self.timed(i, PRE, |p| p.call(|b, s| b.call_pre_hook(s, wreq))));
            crate::telemetry::hook_outcome(
                &span,
                match &called {
                    Ok(Ok(wit::PreAction::Continue)) => "continue",
                    Ok(Ok(wit::PreAction::ContinueWith(_))) => "continue_with",
                    Ok(Ok(wit::PreAction::Respond(_))) => "respond",
                    Ok(Ok(wit::PreAction::Reject(_))) => "reject",
                    Ok(Err(_)) => "guest_error",
                    Err(_) => "failed",
                },
            );
            drop(span);
            match called {
                Ok(Ok(wit::PreAction::Continue)) => {}
                Ok(Ok(wit::PreAction::ContinueWith(new))) => {
                    match bindings::apply_request(req, wreq, new) {
                        Ok(()) => sent = None,
                        Err(msg) => {
                            if let Some(err) = self.guest_error(p, &msg) {
                                return (PreOutcome::Reject(err), i);
                            }
                        }
                    }
                }
                Ok(Ok(wit::PreAction::Respond(r))) => {
                    return (
                        PreOutcome::Respond(bindings::response_from_wit(req, r, None)),
                        i,
                    )
                }
                Ok(Ok(wit::PreAction::Reject(r))) => {
                    return (
                        PreOutcome::Reject(bindings::rejection_to_error(&p.entry.name, r)),
                        i,
                    )
                }
                Ok(Err(msg)) => {
                    if let Some(err) = self.guest_error(p, &msg) {
                        return (PreOutcome::Reject(err), i);
                    }
                }
                Err(e) => {
                    if let Some(err) = self.call_failed(p, &e) {
                        return (PreOutcome::Reject(err), i);
                    }
                }
            }
        }
        (PreOutcome::Continue, self.plugins.len())
    }

    /// Run the post-hooks of the first `ran` plugins in reverse order over `outcome`.
    pub fn post_hooks(
        &self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        ran: usize,
        upstream_latency: Duration,
        outcome: &mut Result<UnifiedResponse, GatewayError>,
    ) {
        let ran = ran.min(self.plugins.len());
        let plugins = &self.plugins[..ran];
        if !plugins.iter().any(|p| p.hooks.contains(wit::Hooks::POST)) {
            return;
        }
        let info = bindings::request_info(ctx, req);
        let latency_us = upstream_latency.as_micros() as u64;
        let mut sent: Option<wit::Outcome> = None;
        for (i, p) in plugins.iter().enumerate().rev() {
            if !p.hooks.contains(wit::Hooks::POST) {
                continue;
            }
            let wout = sent.get_or_insert_with(|| match &*outcome {
                Ok(r) => wit::Outcome::Response(bindings::response_to_wit(req, r, latency_us)),
                Err(e) => wit::Outcome::Error(bindings::error_to_wit(req, e)),
            });
            let span = crate::telemetry::hook_span("post_hook", &p.entry.name);
            let called = span.in_scope(|| {
                self.timed(i, POST, |p| p.call(|b, s| b.call_post_hook(s, &info, wout)))
            });
            crate::telemetry::hook_outcome(
                &span,
                match &called {
                    Ok(Ok(wit::PostAction::Keep)) => "keep",
                    Ok(Ok(wit::PostAction::Replace(_))) => "replace",
                    Ok(Err(_)) => "guest_error",
                    Err(_) => "failed",
                },
            );
            drop(span);
            match called {
                Ok(Ok(wit::PostAction::Keep)) => {}
                Ok(Ok(wit::PostAction::Replace(wit::Outcome::Response(r)))) => {
                    let new = match (&*outcome, &*wout) {
                        (Ok(orig), wit::Outcome::Response(before)) => {
                            bindings::response_from_wit(req, r, Some((before, orig)))
                        }
                        _ => bindings::response_from_wit(req, r, None),
                    };
                    *outcome = Ok(new);
                    sent = None;
                }
                Ok(Ok(wit::PostAction::Replace(wit::Outcome::Error(e)))) => {
                    *outcome = Err(bindings::error_from_wit(&p.entry.name, e));
                    sent = None;
                }
                Ok(Err(msg)) => {
                    if let Some(err) = self.guest_error(p, &msg) {
                        *outcome = Err(err);
                        sent = None;
                    }
                }
                Err(e) => {
                    if let Some(err) = self.call_failed(p, &e) {
                        *outcome = Err(err);
                        sent = None;
                    }
                }
            }
        }
    }

    /// Run the chunk hooks of the first `ran` plugins, in reverse order, over one chunk.
    /// `last` marks the final chunk before `[DONE]`.
    // The crate passes `GatewayError` by value everywhere; boxing it here alone would only
    // make the proxy unbox it.
    #[allow(clippy::result_large_err)]
    pub fn chunk_hooks(
        &self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        ran: usize,
        state: &mut StreamHookState,
        chunk: &mut StreamChunk,
        last: bool,
    ) -> Result<(), GatewayError> {
        let ran = ran.min(self.plugins.len());
        if !self.wants_chunks(ran) {
            return Ok(());
        }
        if state.states.len() < ran {
            state.states.resize(ran, Vec::new());
        }
        let seq = state.sequence;
        state.sequence = state.sequence.wrapping_add(1);
        let info = bindings::request_info(ctx, req);
        let mut sent: Option<wit::StreamChunk> = None;
        for (i, p) in self.plugins[..ran].iter().enumerate().rev() {
            if !p.hooks.contains(wit::Hooks::CHUNK) {
                continue;
            }
            let wchunk = sent.get_or_insert_with(|| bindings::chunk_to_wit(chunk, seq, last));
            let st = &state.states[i];
            match self.timed(i, CHUNK, |p| {
                p.call(|b, s| b.call_on_chunk(s, &info, wchunk, st))
            }) {
                Ok(Ok(out)) => {
                    state.states[i] = out.state;
                    if let wit::ChunkAction::Replace(new) = out.action {
                        match bindings::apply_chunk(chunk, req.kind, wchunk, new) {
                            Ok(()) => sent = None,
                            Err(msg) => {
                                if let Some(err) = self.guest_error(p, &msg) {
                                    return Err(err);
                                }
                            }
                        }
                    }
                }
                Ok(Err(msg)) => {
                    if let Some(err) = self.guest_error(p, &msg) {
                        return Err(err);
                    }
                }
                Err(e) => {
                    if let Some(err) = self.call_failed(p, &e) {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether any of the first `ran` plugins wants stream chunks.
    pub fn wants_chunks(&self, ran: usize) -> bool {
        self.plugins[..ran.min(self.plugins.len())]
            .iter()
            .any(|p| p.hooks.contains(wit::Hooks::CHUNK))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
