//! One plugin outside the gateway, for `switchyard plugin inspect` and `switchyard plugin
//! test`: the same runtime (engine, limits, imports), an in-memory key-value store and a
//! private metrics registry, no listener and no network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use super::kv::{MemoryKv, ScopedKv};
use super::metrics::{PluginMetrics, PluginMetricsCollector};
use super::runtime::{self, CompileCache, LoadedPlugin, PluginSpec};
use super::{bindings::wit, Chain, HookContext, PreOutcome, StreamHookState};
use crate::config::PluginEntry;
use crate::error::GatewayError;
use crate::schema::{StreamChunk, UnifiedRequest, UnifiedResponse};

/// What `plugin inspect` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub size_bytes: usize,
    pub sha256: String,
    /// `switchyard:plugin` versions the component imports or exports (normally one).
    pub wit_versions: Vec<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The hooks `init` asked for (with the config given), when it loaded.
    pub hooks: Vec<&'static str>,
    /// The version this gateway loads it as, when it loaded.
    pub loaded_as: Option<&'static str>,
    /// The request parts `init` said the plugin reads (all, for 0.1.0), when it loaded.
    pub reads: Vec<&'static str>,
    /// Whether this gateway can load it, and why not.
    pub loadable: Result<(), String>,
    pub load_time: Duration,
}

/// The WIT versions this gateway loads.
pub const SUPPORTED_WIT: &[&str] = &super::bindings::WIT_VERSIONS;

fn hook_names(h: wit::Hooks) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (flag, name) in [
        (wit::Hooks::PRE, "pre"),
        (wit::Hooks::POST, "post"),
        (wit::Hooks::CHUNK, "chunk"),
    ] {
        if h.contains(flag) {
            out.push(name);
        }
    }
    out
}

/// The compilation cache the tools use: [`set_compile_cache`], else none.
static CACHE_DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Use wasmtime's compilation cache in `dir` for the tools (call before the first load), so
/// a Python or JavaScript component is compiled once, not at every `plugin test`.
pub fn set_compile_cache(dir: Option<std::path::PathBuf>) {
    let _ = CACHE_DIR.set(dir);
}

fn shared_runtime(entry: &PluginEntry) -> Result<Arc<runtime::Runtime>, String> {
    let cache = CACHE_DIR.get().cloned().flatten();
    runtime::runtime(entry.memory_limit_bytes.max(64 << 20), cache)
}

/// Describe the component in `bytes`; `entry` gives the config and limits `init` runs with.
pub fn inspect(bytes: &[u8], entry: &PluginEntry) -> Inspection {
    let started = Instant::now();
    let mut out = Inspection {
        size_bytes: bytes.len(),
        sha256: runtime::hex(&runtime::sha256(bytes)),
        wit_versions: Vec::new(),
        imports: Vec::new(),
        exports: Vec::new(),
        hooks: Vec::new(),
        loaded_as: None,
        reads: Vec::new(),
        loadable: Ok(()),
        load_time: Duration::ZERO,
    };
    let rt = match shared_runtime(entry) {
        Ok(rt) => rt,
        Err(e) => {
            out.loadable = Err(format!("plugin runtime: {e}"));
            return out;
        }
    };
    let component = match Component::new(rt.engine(), bytes) {
        Ok(c) => c,
        Err(e) => {
            out.loadable = Err(format!(
                "not a WebAssembly component this runtime compiles: {e:#}"
            ));
            return out;
        }
    };
    let ty = component.component_type();
    out.imports = ty.imports(rt.engine()).map(|(n, _)| n.to_owned()).collect();
    out.exports = ty.exports(rt.engine()).map(|(n, _)| n.to_owned()).collect();
    for name in out.imports.iter().chain(&out.exports) {
        if let Some(v) = name
            .strip_prefix("switchyard:plugin/")
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, v)| v.to_owned())
        {
            if !out.wit_versions.contains(&v) {
                out.wit_versions.push(v);
            }
        }
    }
    match Offline::load(bytes, entry.clone()) {
        Ok(p) => {
            out.hooks = hook_names(p.plugin.hooks);
            out.loaded_as = Some(p.plugin.wit_version.as_str());
            out.reads = p.plugin.reads.names();
        }
        Err(e) => out.loadable = Err(e),
    }
    out.load_time = started.elapsed();
    out
}

/// One hook call's result, for printing.
#[derive(Debug)]
pub struct Call<T> {
    pub result: T,
    pub took: Duration,
}

/// A loaded plugin with its own store and metrics.
pub struct Offline {
    plugin: Arc<LoadedPlugin>,
    chain: Chain,
    registry: prometheus::Registry,
    pub load_time: Duration,
}

impl Offline {
    /// Compile, link and `init` (one instance), as the gateway would.
    pub fn load(bytes: &[u8], entry: PluginEntry) -> Result<Offline, String> {
        let started = Instant::now();
        let rt = shared_runtime(&entry)?;
        let collector = PluginMetricsCollector::new();
        let registry = prometheus::Registry::new();
        collector.register(&registry);
        let kv = Arc::new(MemoryKv::with_limit(
            crate::config::DEFAULT_KV_MAX_BYTES_PER_PLUGIN,
            Some(collector.kv_evictions.clone()),
        ));
        let spec = PluginSpec {
            kv: ScopedKv::new(kv, &entry.name),
            metrics: Arc::new(PluginMetrics::new(&entry.name, collector.clone())),
            entry,
            max_instances: 1,
        };
        let plugin = Arc::new(LoadedPlugin::load(
            rt,
            &CompileCache::default(),
            spec,
            bytes,
            1,
        )?);
        let chain = Chain::new(vec![plugin.clone()], Some(collector));
        Ok(Offline {
            plugin,
            chain,
            registry,
            load_time: started.elapsed(),
        })
    }

    pub fn hooks(&self) -> Vec<&'static str> {
        hook_names(self.plugin.hooks)
    }

    /// The pre-hook over `req` (changed in place when the plugin changes it).
    pub fn pre_hook(
        &self,
        ctx: &HookContext,
        req: &mut UnifiedRequest,
    ) -> Option<Call<PreOutcome>> {
        if !self.plugin.hooks.contains(wit::Hooks::PRE) {
            return None;
        }
        let t = Instant::now();
        let (result, _) = self.chain.pre_hooks(ctx, req);
        Some(Call {
            result,
            took: t.elapsed(),
        })
    }

    /// The post-hook over `outcome` (changed in place).
    pub fn post_hook(
        &self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        outcome: &mut Result<UnifiedResponse, GatewayError>,
    ) -> Option<Call<()>> {
        if !self.plugin.hooks.contains(wit::Hooks::POST) {
            return None;
        }
        let t = Instant::now();
        self.chain
            .post_hooks(ctx, req, 1, Duration::from_millis(1), outcome);
        Some(Call {
            result: (),
            took: t.elapsed(),
        })
    }

    /// The chunk hook over one chunk of a stream (`state` carries over between chunks).
    pub fn chunk_hook(
        &self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        state: &mut StreamHookState,
        chunk: &mut StreamChunk,
        last: bool,
    ) -> Option<Call<Result<(), GatewayError>>> {
        if !self.plugin.hooks.contains(wit::Hooks::CHUNK) {
            return None;
        }
        let t = Instant::now();
        let result = self.chain.chunk_hooks(ctx, req, 1, state, chunk, last);
        Some(Call {
            result,
            took: t.elapsed(),
        })
    }

    /// The metrics the plugin declared and the host's metrics about it, Prometheus text.
    pub fn metrics_text(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
