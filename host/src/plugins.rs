//! Plugins: the PreHook/PostHook chain around every provider call, run as WebAssembly
//! components (WIT worlds `switchyard:plugin/plugin@0.2.0` and `@0.1.0`, see `wit/`).
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
    /// `loading` (the first load is under way), `ready`, `disabled`, `failed` (no version
    /// could be loaded), `degraded` (an old version serves because the newest failed to
    /// load), `unlisted` (file with no entry).
    pub state: String,
    /// `fail_open` or `fail_closed`.
    pub on_error: &'static str,
    /// True while requests are refused because of this plugin: it is `fail_closed` and not
    /// loaded (loading, failed, file missing).
    pub blocks_requests: bool,
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
    #[error("plugins.kv: {0}")]
    Kv(String),
}

mod bindings;
mod kv;
mod metrics;
pub mod offline;
mod runtime;
mod watcher;

pub use kv::{KvError, KvHealth, KvStore, MemoryKv, RedisKv, NO_DEADLINE};

/// The store `plugins.kv` chooses: the in-process one capped by `max_bytes_per_plugin`
/// (evictions counted in `evictions` when given), or Redis, its metrics on `registry`.
pub fn kv_store(
    cfg: &PluginsConfig,
    registry: &prometheus::Registry,
    evictions: Option<prometheus::IntCounterVec>,
) -> Result<Arc<dyn KvStore>, PluginStartError> {
    Ok(match &cfg.kv_backend {
        crate::config::KvBackend::Memory => {
            Arc::new(MemoryKv::with_limit(cfg.kv_max_bytes_per_plugin, evictions))
        }
        crate::config::KvBackend::Redis(r) => {
            let kv = RedisKv::start(r, registry).map_err(PluginStartError::Kv)?;
            tracing::info!(
                key_prefix = %r.key_prefix,
                pool_size = r.pool_size,
                command_timeout_ms = r.command_timeout.as_millis() as u64,
                "plugin kv store on redis"
            );
            Arc::new(kv)
        }
    })
}

use std::sync::{Mutex, Weak};

use arc_swap::ArcSwap;
use http::StatusCode;

use crate::config::{OnError, PluginEntry};
use bindings::{wit, wit2, PreStep};
use http::{HeaderName, HeaderValue};
use metrics::{PluginMetrics, PluginMetricsCollector};
use runtime::{CallError, LoadedPlugin, PluginSpec, Runtime, WitVersion};

/// Everything a reload needs; shared with the watcher task (which holds it weakly, so
/// dropping the host stops the task).
struct Shared {
    chain: ArcSwap<Chain>,
    loader: Option<Loader>,
    health: Mutex<Vec<PluginHealth>>,
    /// One reload at a time: two overlapping reloads could swap in an older snapshot last.
    reload_lock: tokio::sync::Mutex<()>,
    /// True once the first load (started in the background) has finished.
    loaded: tokio::sync::watch::Sender<bool>,
}

struct Loader {
    /// Replaced by [`PluginHost::reconfigure`] (a config reload); read once per reload.
    cfg: ArcSwap<PluginsConfig>,
    /// `client.initial_pool_size`: instances pre-warmed are this, capped by `max_instances`.
    initial_pool_size: usize,
    rt: Arc<Runtime>,
    /// Compiled components by content hash; only versions the chain uses are kept.
    compiled: runtime::CompileCache,
    collector: Arc<PluginMetricsCollector>,
    /// One store for the host; each plugin sees it through its own key prefix, so a
    /// reloaded plugin keeps its counters.
    kv: Arc<dyn KvStore>,
    plugin_metrics: Mutex<std::collections::HashMap<String, Arc<PluginMetrics>>>,
}

/// Owns the loaded plugins and swaps the chain on reload.
pub struct PluginHost {
    shared: Arc<Shared>,
    /// The store the plugins (and the virtual keys' counters) use, for `/health`.
    kv: Option<Arc<dyn KvStore>>,
    _watcher: Option<watcher::DirWatcher>,
}

impl PluginHost {
    /// A host with no plugins.
    pub fn disabled() -> Arc<PluginHost> {
        Self::disabled_with(None)
    }

    /// A host with no plugins whose `/health` shows `kv` (the store the virtual keys count
    /// in).
    pub fn disabled_with(kv: Option<Arc<dyn KvStore>>) -> Arc<PluginHost> {
        Arc::new(PluginHost {
            kv,
            shared: Arc::new(Shared {
                chain: ArcSwap::from_pointee(Chain::default()),
                loader: None,
                health: Mutex::new(Vec::new()),
                reload_lock: tokio::sync::Mutex::new(()),
                loaded: tokio::sync::watch::channel(true).0,
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
        let host = Self::launch(cfg, initial_pool_size, registry, None).await?;
        host.wait_loaded().await;
        Ok(host)
    }

    /// [`PluginHost::start`] with another key-value backend.
    pub async fn start_with_kv(
        cfg: &PluginsConfig,
        initial_pool_size: usize,
        registry: &prometheus::Registry,
        kv: Arc<dyn KvStore>,
    ) -> Result<Arc<PluginHost>, PluginStartError> {
        let host = Self::launch(cfg, initial_pool_size, registry, Some(kv)).await?;
        host.wait_loaded().await;
        Ok(host)
    }

    /// Create the runtime and return at once; the plugins load in the background (Python
    /// and JavaScript components take seconds to compile). Until a plugin is ready it shows
    /// as `loading` on `/health`: a `fail_open` one is skipped, a `fail_closed` one makes
    /// requests fail with 503. `kv` defaults to the store `plugins.kv` chooses (see
    /// [`kv_store`]); [`PluginHost::kv`] hands it out.
    pub async fn launch(
        cfg: &PluginsConfig,
        initial_pool_size: usize,
        registry: &prometheus::Registry,
        kv: Option<Arc<dyn KvStore>>,
    ) -> Result<Arc<PluginHost>, PluginStartError> {
        let max_mem = cfg
            .entries
            .iter()
            .map(|e| e.memory_limit_bytes)
            .max()
            .unwrap_or(64 << 20)
            .max(64 << 20);
        let cache_dir = cfg.compile_cache.clone();
        let rt = tokio::task::spawn_blocking(move || runtime::runtime(max_mem, cache_dir))
            .await
            .map_err(|e| PluginStartError::Runtime(e.to_string()))?
            .map_err(PluginStartError::Runtime)?;
        tracing::info!(pooling_allocator = rt.pooling, compile_cache = ?rt.cache_dir, "plugin runtime ready");
        let collector = PluginMetricsCollector::new();
        collector.register(registry);
        let kv = match kv {
            Some(kv) => kv,
            None => kv_store(cfg, registry, Some(collector.kv_evictions.clone()))?,
        };
        let (loading_chain, loading_health) = loading(cfg, &collector);
        let shared = Arc::new(Shared {
            chain: ArcSwap::from_pointee(loading_chain),
            loader: Some(Loader {
                cfg: ArcSwap::from_pointee(cfg.clone()),
                initial_pool_size,
                rt,
                compiled: runtime::CompileCache::default(),
                collector,
                kv: kv.clone(),
                plugin_metrics: Mutex::new(Default::default()),
            }),
            health: Mutex::new(loading_health),
            reload_lock: tokio::sync::Mutex::new(()),
            loaded: tokio::sync::watch::channel(false).0,
        });
        if !cfg.directory.is_dir() {
            tracing::warn!(dir = %cfg.directory.display(), "plugins directory missing; configured plugins fail to load");
        }
        let first = shared.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            reload(&first).await;
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "initial plugin load finished"
            );
            first.loaded.send_replace(true);
        });
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
            kv: Some(kv),
            _watcher: dir_watcher,
        }))
    }

    /// Returns once the initial load (see [`PluginHost::launch`]) has finished.
    pub async fn wait_loaded(&self) {
        let mut rx = self.shared.loaded.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Whether the initial load has finished.
    pub fn is_loaded(&self) -> bool {
        *self.shared.loaded.borrow()
    }

    /// Reload everything from the directory now; returns once the new chain is in place.
    pub async fn reload_now(&self) {
        reload(&self.shared).await;
    }

    /// Apply the plugin entries of a reloaded config: per-plugin `config`, `on_error`,
    /// `order`, `enabled`, limits, added and removed entries, `max_instances` and
    /// `kv.max_bytes_per_plugin`. A plugin whose entry did not change keeps its instances;
    /// a changed one is loaded anew beside the old (which serves until the new is ready, and
    /// on if the new fails to load). Returns once the new chain serves. The directory,
    /// watcher, compile cache and key-value backend stay as they started (a restart changes
    /// them). False when this host runs no plugins at all (it started with no enabled
    /// entry): then nothing changes until a restart.
    pub async fn reconfigure(&self, cfg: &PluginsConfig) -> bool {
        let Some(loader) = &self.shared.loader else {
            return false;
        };
        let mut next = cfg.clone();
        let old = loader.cfg.load_full();
        next.directory = old.directory.clone();
        next.watch = old.watch;
        next.debounce = old.debounce;
        next.compile_cache = old.compile_cache.clone();
        next.kv_backend = old.kv_backend.clone();
        loader
            .kv
            .set_max_bytes_per_plugin(next.kv_max_bytes_per_plugin);
        loader.cfg.store(Arc::new(next));
        reload(&self.shared).await;
        true
    }

    /// Whether [`PluginHost::reconfigure`] can apply entries (the host runs plugins).
    pub fn reconfigurable(&self) -> bool {
        self.shared.loader.is_some()
    }

    /// The key-value store of this host, if it has one.
    pub fn kv(&self) -> Option<Arc<dyn KvStore>> {
        self.kv.clone()
    }

    /// The key-value backend's state, for `/health`.
    pub fn kv_health(&self) -> Option<KvHealth> {
        self.kv.as_ref().map(|kv| kv.health())
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

    /// How many compiled component versions the host keeps (those its chain uses).
    pub fn compiled_versions(&self) -> usize {
        self.shared.loader.as_ref().map_or(0, |l| l.compiled.len())
    }
}

/// The chain and health before the first load: every enabled entry is `loading`.
fn loading(
    cfg: &PluginsConfig,
    collector: &Arc<PluginMetricsCollector>,
) -> (Chain, Vec<PluginHealth>) {
    let mut unavailable = Vec::new();
    let mut out = Vec::new();
    for e in &cfg.entries {
        if !e.enabled {
            out.push(health(e, "disabled"));
            continue;
        }
        let mut h = health(e, "loading");
        if e.on_error == OnError::FailClosed {
            h.blocks_requests = true;
            unavailable.push(Unavailable {
                name: e.name.clone(),
                reason: "still loading".into(),
                loading: true,
            });
        }
        out.push(h);
    }
    let mut chain = Chain::new(Vec::new(), Some(collector.clone()));
    chain.unavailable = unavailable;
    (chain, out)
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
        let before = s.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (chain, health) = loader.reconcile(&current, &before, |partial, health| {
            // Only while plugins are still loading for the first time: a plugin that is
            // ready serves before a slow one behind it has compiled.
            s.chain.store(Arc::new(partial));
            *s.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
        });
        s.chain.store(Arc::new(chain));
        *s.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
        // Versions no chain uses any more are dropped; a request in flight on an older
        // chain keeps its own reference until it finishes.
        let keep: std::collections::HashSet<[u8; 32]> =
            s.chain.load().plugins.iter().map(|p| p.hash).collect();
        loader.compiled.retain(&keep);
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
        on_error: match e.on_error {
            OnError::FailOpen => "fail_open",
            OnError::FailClosed => "fail_closed",
        },
        blocks_requests: false,
        last_error: None,
        loaded_at_ms: None,
    }
}

fn version(p: &LoadedPlugin) -> String {
    runtime::hex(&p.hash[..8])
}

/// What one entry is after a reconcile step.
enum Slot {
    Ready(Arc<LoadedPlugin>),
    Missing(Option<Unavailable>),
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

    /// One entry as the directory has it now, reusing the serving version if its bytes did
    /// not change.
    fn entry_slot(
        &self,
        cfg: &PluginsConfig,
        entry: &PluginEntry,
        old: Option<Arc<LoadedPlugin>>,
    ) -> (Slot, PluginHealth) {
        let dir = &cfg.directory;
        let closed = |reason: &str, h: &mut PluginHealth| {
            if entry.on_error == OnError::FailClosed {
                h.blocks_requests = true;
                Some(Unavailable {
                    name: entry.name.clone(),
                    reason: reason.to_owned(),
                    loading: false,
                })
            } else {
                None
            }
        };
        if !entry.enabled {
            return (Slot::Missing(None), health(entry, "disabled"));
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
                let u = closed(&reason, &mut h);
                h.last_error = Some(reason);
                return (Slot::Missing(u), h);
            }
        };
        let hash = runtime::sha256(&bytes);
        // Same bytes and same settings: keep the serving instances. A changed entry (its
        // config, deadline, on_error, ...) is loaded anew, since `init` saw the old one.
        if let Some(o) = old.as_ref().filter(|o| {
            o.hash == hash && o.entry == *entry && o.max_instances() == cfg.max_instances
        }) {
            let mut h = health(entry, "ready");
            h.version = Some(version(o));
            h.loaded_at_ms = Some(o.loaded_at_ms);
            return (Slot::Ready(o.clone()), h);
        }
        let spec = PluginSpec {
            entry: entry.clone(),
            kv: kv::ScopedKv::new(self.kv.clone(), &entry.name),
            metrics: self.metrics_for(&entry.name),
            max_instances: cfg.max_instances,
        };
        let started = std::time::Instant::now();
        let prewarm = self.initial_pool_size.min(cfg.max_instances);
        match LoadedPlugin::load(self.rt.clone(), &self.compiled, spec, &bytes, prewarm) {
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
                (Slot::Ready(p), h)
            }
            Err(reason) => {
                self.count_reload(&entry.name, false);
                tracing::warn!(plugin = %entry.name, error = %reason, "plugin failed to load");
                let mut h = health(entry, "failed");
                let slot = match old {
                    Some(o) => {
                        h.state = "degraded".into();
                        h.version = Some(version(&o));
                        h.loaded_at_ms = Some(o.loaded_at_ms);
                        Slot::Ready(o)
                    }
                    None => Slot::Missing(closed(&format!("failed to load: {reason}"), &mut h)),
                };
                h.last_error = Some(reason);
                (slot, h)
            }
        }
    }

    /// The chain for the directory as it is now, reusing plugins whose bytes did not change.
    /// While entries are still `loading` (the first load), `progress` is given the chain
    /// after each entry, the entries not reached yet as they were.
    fn reconcile(
        &self,
        current: &Chain,
        before: &[PluginHealth],
        mut progress: impl FnMut(Chain, Vec<PluginHealth>),
    ) -> (Chain, Vec<PluginHealth>) {
        let first_load = before.iter().any(|h| h.state == "loading");
        let cfg = self.cfg.load_full();
        let mut slots: Vec<(Slot, PluginHealth)> = Vec::new();
        for (i, entry) in cfg.entries.iter().enumerate() {
            let old = current
                .plugins
                .iter()
                .find(|p| p.entry.name == entry.name)
                .cloned();
            slots.push(self.entry_slot(&cfg, entry, old));
            if first_load && i + 1 < cfg.entries.len() {
                let mut plugins = Vec::new();
                let mut unavailable = Vec::new();
                let mut out = Vec::new();
                for (slot, h) in &slots {
                    match slot {
                        Slot::Ready(p) => plugins.push(p.clone()),
                        Slot::Missing(u) => unavailable.extend(u.clone()),
                    }
                    out.push(h.clone());
                }
                for rest in &cfg.entries[i + 1..] {
                    unavailable.extend(
                        current
                            .unavailable
                            .iter()
                            .filter(|u| u.name == rest.name)
                            .cloned(),
                    );
                    plugins.extend(
                        current
                            .plugins
                            .iter()
                            .filter(|p| p.entry.name == rest.name)
                            .cloned(),
                    );
                    out.extend(before.iter().filter(|h| h.name == rest.name).cloned());
                }
                let mut chain = Chain::new(plugins, Some(self.collector.clone()));
                chain.unavailable = unavailable;
                progress(chain, out);
            }
        }
        let mut plugins = Vec::new();
        let mut unavailable = Vec::new();
        let mut out = Vec::new();
        for (slot, h) in slots {
            match slot {
                Slot::Ready(p) => plugins.push(p),
                Slot::Missing(u) => unavailable.extend(u),
            }
            out.push(h);
        }
        // Components nobody configured are listed, not loaded: a stray file must not run.
        if let Ok(rd) = std::fs::read_dir(&cfg.directory) {
            let mut unlisted: Vec<String> = rd
                .filter_map(|d| d.ok())
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".wasm"))
                .filter(|f| !cfg.entries.iter().any(|e| &e.file == f))
                .collect();
            unlisted.sort();
            for f in unlisted {
                out.push(PluginHealth {
                    name: f.trim_end_matches(".wasm").to_owned(),
                    file: f,
                    version: None,
                    state: "unlisted".into(),
                    on_error: "fail_open",
                    blocks_requests: false,
                    last_error: None,
                    loaded_at_ms: None,
                });
            }
        }
        let mut chain = Chain::new(plugins, Some(self.collector.clone()));
        chain.unavailable = unavailable;
        (chain, out)
    }
}

/// A `fail_closed` plugin that cannot serve: requests are refused while it is so.
#[derive(Debug, Clone)]
struct Unavailable {
    name: String,
    reason: String,
    loading: bool,
}

impl Unavailable {
    fn error(&self) -> GatewayError {
        let mut e = GatewayError::plugin(
            &self.name,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "plugin {} is configured fail_closed and is not loaded ({}); requests are refused until it is",
                self.name, self.reason
            ),
        )
        .with_code("plugin_unavailable");
        // Every target would meet the same plugin.
        e.allow_fallbacks = false;
        if self.loading {
            e.retry_after = Some(Duration::from_secs(1));
        }
        e
    }
}

/// An immutable, ordered set of loaded plugins.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<Arc<LoadedPlugin>>,
    /// `fail_closed` entries that are not loaded (loading, failed, file missing): while
    /// any is here, requests are refused with 503 naming it.
    unavailable: Vec<Unavailable>,
    collector: Option<Arc<PluginMetricsCollector>>,
    /// Per plugin, the call-time histograms of its pre, post and chunk hooks, resolved once
    /// so a call pays an atomic add, not a label lookup.
    timers: Vec<Option<[prometheus::Histogram; 3]>>,
    any_pre: bool,
}

const PRE: usize = 0;
const POST: usize = 1;
const CHUNK: usize = 2;

/// The WIT requests built for the pre-hooks so far, per version (and, for 0.2.0, per
/// read-set), so a chain builds each once and again only after a plugin changed the request.
#[derive(Default)]
struct SentRequest {
    v1: Option<wit::Request>,
    v2: Option<(bindings::Reads, wit2::Request)>,
}

impl SentRequest {
    /// The body as JSON: from a request already built, else serialised now.
    fn body(&self, req: &UnifiedRequest) -> String {
        self.v1
            .as_ref()
            .map(|r| r.body_json.clone())
            .or_else(|| {
                self.v2
                    .as_ref()
                    .filter(|(reads, _)| reads.body_json)
                    .map(|(_, r)| r.body_json.clone())
            })
            .unwrap_or_else(|| serde_json::to_string(&req.body).unwrap_or_default())
    }

    fn v1(&mut self, ctx: &HookContext, req: &UnifiedRequest) -> &wit::Request {
        if self.v1.is_none() {
            let body = self.body(req);
            self.v1 = Some(bindings::v1::request_to_wit(
                ctx,
                req,
                body,
                bindings::Reads::ALL,
            ));
        }
        self.v1.as_ref().expect("just built")
    }

    fn v2(
        &mut self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        reads: bindings::Reads,
    ) -> &wit2::Request {
        if self.v2.as_ref().is_none_or(|(r, _)| *r != reads) {
            // Only a plugin that reads the body pays for its JSON.
            let body = if reads.body_json {
                self.body(req)
            } else {
                String::new()
            };
            self.v2 = Some((reads, bindings::v2::request_to_wit(ctx, req, body, reads)));
        }
        &self.v2.as_ref().expect("just built").1
    }
}

/// How a streamed response ended, for the 0.2.0 post-hooks' `stream-ended`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEnding {
    Complete,
    UpstreamError(String),
    PluginError(String),
    ClientGone,
}

/// The end of one stream.
#[derive(Debug, Clone)]
pub struct StreamEnded {
    pub end: StreamEnding,
    pub status: u16,
    pub usage: Option<crate::schema::Usage>,
    pub chunks: u32,
}

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
            unavailable: Vec::new(),
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

    /// True when there is nothing to run and nothing that refuses requests.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty() && self.unavailable.is_empty()
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
    /// post-hooks run later, in reverse). Header changes of 0.2.0 plugins are left in
    /// `req.ingress.plugin_headers`.
    pub fn pre_hooks(&self, ctx: &HookContext, req: &mut UnifiedRequest) -> (PreOutcome, usize) {
        if let Some(u) = self.unavailable.first() {
            return (PreOutcome::Reject(u.error()), 0);
        }
        if !self.any_pre {
            return (PreOutcome::Continue, self.plugins.len());
        }
        let mut sent = SentRequest::default();
        for (i, p) in self.plugins.iter().enumerate() {
            if !p.hooks.contains(wit::Hooks::PRE) {
                continue;
            }
            let span = crate::telemetry::hook_span("pre_hook", &p.entry.name);
            let (label, step) = span.in_scope(|| self.pre_step(i, ctx, req, &mut sent));
            crate::telemetry::hook_outcome(&span, label);
            drop(span);
            match step {
                Ok(PreStep::Continue) => {}
                Ok(PreStep::Changed) => sent = SentRequest::default(),
                Ok(PreStep::Respond(r)) => return (PreOutcome::Respond(r), i),
                Ok(PreStep::Reject(e)) => return (PreOutcome::Reject(e), i),
                Ok(PreStep::GuestError(msg)) => {
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

    /// One plugin's pre-hook, in the WIT version it was built for.
    fn pre_step(
        &self,
        i: usize,
        ctx: &HookContext,
        req: &mut UnifiedRequest,
        sent: &mut SentRequest,
    ) -> (&'static str, Result<PreStep, CallError>) {
        let p = &self.plugins[i];
        match p.wit_version {
            WitVersion::V0_1 => {
                let wreq = sent.v1(ctx, req);
                match self.timed(i, PRE, |p| p.call1(|b, s| b.call_pre_hook(s, wreq))) {
                    Ok(Ok(action)) => {
                        let (label, step) =
                            bindings::v1::pre_step(req, wreq, action, &p.entry.name);
                        (label, Ok(step))
                    }
                    Ok(Err(msg)) => ("guest_error", Ok(PreStep::GuestError(msg))),
                    Err(e) => ("failed", Err(e)),
                }
            }
            WitVersion::V0_2 => {
                let wreq = sent.v2(ctx, req, p.reads);
                let out = match self.timed(i, PRE, |p| p.call2(|b, s| b.call_pre_hook(s, wreq))) {
                    Ok(Ok(out)) => out,
                    Ok(Err(msg)) => return ("guest_error", Ok(PreStep::GuestError(msg))),
                    Err(e) => return ("failed", Err(e)),
                };
                // A refused header refuses the plugin's whole answer: half of it could be
                // worse than none.
                let headers = bindings::v2::header_edits(out.upstream_headers).and_then(|up| {
                    bindings::v2::response_headers(out.response_headers).map(|resp| (up, resp))
                });
                let (upstream, response) = match headers {
                    Ok(h) => h,
                    Err(msg) => return ("guest_error", Ok(PreStep::GuestError(msg))),
                };
                let (label, step) = bindings::v2::pre_step(req, wreq, out.action, &p.entry.name);
                if matches!(step, PreStep::GuestError(_)) {
                    return (label, Ok(step));
                }
                let h = &mut req.ingress.plugin_headers;
                if matches!(step, PreStep::Continue | PreStep::Changed) {
                    h.upstream.extend(upstream);
                }
                h.response.extend(response);
                (label, Ok(step))
            }
        }
    }

    /// Run the post-hooks of the first `ran` plugins in reverse order over `outcome`.
    /// Returns the response headers 0.2.0 plugins added.
    pub fn post_hooks(
        &self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        ran: usize,
        upstream_latency: Duration,
        outcome: &mut Result<UnifiedResponse, GatewayError>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        let ran = ran.min(self.plugins.len());
        let plugins = &self.plugins[..ran];
        if !plugins.iter().any(|p| p.hooks.contains(wit::Hooks::POST)) {
            return headers;
        }
        let latency_us = upstream_latency.as_micros() as u64;
        let (mut info1, mut info2) = (None, None);
        let (mut sent1, mut sent2) = (None, None);
        for (i, p) in plugins.iter().enumerate().rev() {
            if !p.hooks.contains(wit::Hooks::POST) {
                continue;
            }
            let span = crate::telemetry::hook_span("post_hook", &p.entry.name);
            let name = &p.entry.name;
            // The decision applied, or the plugin's error, or the call's failure.
            let (label, step): (&str, Result<Result<bool, String>, CallError>) = match p.wit_version
            {
                WitVersion::V0_1 => {
                    let info = info1.get_or_insert_with(|| bindings::v1::request_info(ctx, req));
                    let wout = sent1.get_or_insert_with(|| {
                        bindings::v1::outcome_to_wit(req, outcome, latency_us)
                    });
                    let called = span.in_scope(|| {
                        self.timed(i, POST, |p| p.call1(|b, s| b.call_post_hook(s, info, wout)))
                    });
                    match called {
                        Ok(Ok(a)) => (
                            bindings::v1::post_label(&a),
                            Ok(bindings::v1::apply_post(req, outcome, wout, a, name)),
                        ),
                        Ok(Err(msg)) => ("guest_error", Ok(Err(msg))),
                        Err(e) => ("failed", Err(e)),
                    }
                }
                WitVersion::V0_2 => {
                    let info = info2.get_or_insert_with(|| bindings::v2::request_info(ctx, req));
                    let wout = sent2.get_or_insert_with(|| {
                        bindings::v2::outcome_to_wit(req, outcome, latency_us)
                    });
                    let called = span.in_scope(|| {
                        self.timed(i, POST, |p| p.call2(|b, s| b.call_post_hook(s, info, wout)))
                    });
                    match called {
                        Ok(Ok(out)) => match bindings::v2::response_headers(out.response_headers) {
                            Ok(h) => {
                                let label = bindings::v2::post_label(&out.action);
                                let applied =
                                    bindings::v2::apply_post(req, outcome, wout, out.action, name);
                                if applied.is_ok() {
                                    headers.extend(h);
                                }
                                (label, Ok(applied))
                            }
                            Err(msg) => ("guest_error", Ok(Err(msg))),
                        },
                        Ok(Err(msg)) => ("guest_error", Ok(Err(msg))),
                        Err(e) => ("failed", Err(e)),
                    }
                }
            };
            crate::telemetry::hook_outcome(&span, label);
            drop(span);
            let failed = match step {
                Ok(Ok(false)) => None,
                Ok(Ok(true)) => {
                    (sent1, sent2) = (None, None);
                    None
                }
                Ok(Err(msg)) => self.guest_error(p, &msg),
                Err(e) => self.call_failed(p, &e),
            };
            if let Some(err) = failed {
                *outcome = Err(err);
                (sent1, sent2) = (None, None);
            }
        }
        headers
    }

    /// Tell the 0.2.0 post-hooks of the first `ran` plugins, in reverse order, how a stream
    /// ended. Called exactly once per stream (see the proxy's stream state); nothing can be
    /// changed any more, so a failure is only counted and logged.
    pub fn stream_ended(
        &self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        ran: usize,
        end: &StreamEnded,
    ) {
        let ran = ran.min(self.plugins.len());
        if !self.wants_stream_end(ran) {
            return;
        }
        let info = bindings::v2::request_info(ctx, req);
        let out = bindings::v2::stream_ended(req, end);
        for (i, p) in self.plugins[..ran].iter().enumerate().rev() {
            if p.wit_version != WitVersion::V0_2 || !p.hooks.contains(wit::Hooks::POST) {
                continue;
            }
            let span = crate::telemetry::hook_span("post_hook", &p.entry.name);
            let called = span.in_scope(|| {
                self.timed(i, POST, |p| {
                    p.call2(|b, s| b.call_post_hook(s, &info, &out))
                })
            });
            crate::telemetry::hook_outcome(
                &span,
                match &called {
                    Ok(Ok(_)) => "stream_ended",
                    Ok(Err(_)) => "guest_error",
                    Err(_) => "failed",
                },
            );
            drop(span);
            match called {
                Ok(Ok(_)) => {}
                Ok(Err(msg)) => {
                    self.guest_error(p, &msg);
                }
                Err(e) => {
                    self.call_failed(p, &e);
                }
            }
        }
    }

    /// Whether any of the first `ran` plugins wants to see how a stream ended.
    pub fn wants_stream_end(&self, ran: usize) -> bool {
        self.plugins[..ran.min(self.plugins.len())]
            .iter()
            .any(|p| p.wit_version == WitVersion::V0_2 && p.hooks.contains(wit::Hooks::POST))
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
        let (mut info1, mut info2) = (None, None);
        let (mut sent1, mut sent2) = (None, None);
        for (i, p) in self.plugins[..ran].iter().enumerate().rev() {
            if !p.hooks.contains(wit::Hooks::CHUNK) {
                continue;
            }
            let st = &state.states[i];
            let kind = req.kind;
            let called = match p.wit_version {
                WitVersion::V0_1 => {
                    let info = info1.get_or_insert_with(|| bindings::v1::request_info(ctx, req));
                    let wchunk =
                        sent1.get_or_insert_with(|| bindings::v1::chunk_to_wit(chunk, seq, last));
                    self.timed(i, CHUNK, |p| {
                        p.call1(|b, s| b.call_on_chunk(s, info, wchunk, st))
                    })
                    .map(|r| {
                        r.map(|out| bindings::v1::apply_chunk_output(chunk, kind, wchunk, out))
                    })
                }
                WitVersion::V0_2 => {
                    let info = info2.get_or_insert_with(|| bindings::v2::request_info(ctx, req));
                    let wchunk =
                        sent2.get_or_insert_with(|| bindings::v2::chunk_to_wit(chunk, seq, last));
                    self.timed(i, CHUNK, |p| {
                        p.call2(|b, s| b.call_on_chunk(s, info, wchunk, st))
                    })
                    .map(|r| {
                        r.map(|out| bindings::v2::apply_chunk_output(chunk, kind, wchunk, out))
                    })
                }
            };
            match called {
                Ok(Ok((new_state, applied))) => {
                    state.states[i] = new_state;
                    match applied {
                        Ok(false) => {}
                        Ok(true) => (sent1, sent2) = (None, None),
                        Err(msg) => {
                            if let Some(err) = self.guest_error(p, &msg) {
                                return Err(err);
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
