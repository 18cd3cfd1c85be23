//! The wasmtime side of plugins: one process-wide `Engine` (pooling allocator, epoch
//! interruption ticked every millisecond), a compile cache keyed by the SHA-256 of the
//! component bytes, and per plugin an `InstancePre` plus a pool of ready instances.
//!
//! A trap poisons its `Store`, so an instance that trapped or hit its deadline is dropped,
//! never pooled again. Each instance has its own `Store` with a memory cap and a WASI context
//! that grants nothing; its stdout/stderr go to the log with the plugin's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Store, StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, wit, Plugin, Plugin2, PluginPre, PluginPre2, Reads};
use super::kv::ScopedKv;
use super::metrics::PluginMetrics;
use crate::config::PluginEntry;

/// Epoch tick period: deadlines are counted in these.
const TICK: Duration = Duration::from_millis(1);
/// Instances created at load. Pre-warming all `max_instances` (64 by default) for every plugin
/// costs tens of MiB of touched linear memory for instances that mostly sit idle; the pool
/// grows on demand up to `max_instances` instead.
pub const PREWARM_CAP: usize = 8;
/// Time allowed for `init` (it may parse config, declare metrics; Python guests are slow).
const INIT_DEADLINE: Duration = Duration::from_secs(2);

/// What an instance's store carries: the plugin's identity and the host import state.
pub struct HostState {
    pub(super) plugin: Arc<str>,
    pub(super) kv: ScopedKv,
    pub(super) metrics: Arc<PluginMetrics>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    budget: CallBudget,
}

/// The CPU deadline of the call in progress.
///
/// Epoch ticks measure wall time, and on a busy machine (two cores shared with a reload's
/// compilation, say) a hook can be descheduled past a 10 ms wall deadline while using far less
/// CPU. So the epoch deadline is only the first check: when it passes, the thread's CPU clock
/// is read and the call gets more ticks; it is stopped once it has burnt another half of its
/// deadline in CPU after that point (a guest that spins is stopped at about 1.5x its deadline),
/// or when the wall clock passes `wall_cap`. The hot path pays one `Instant::now()` per call
/// and no system call.
struct CallBudget {
    deadline: Duration,
    wall_cap: Duration,
    started: Instant,
    /// Thread CPU time when the wall deadline first passed in this call.
    cpu_mark: Option<Duration>,
}

impl CallBudget {
    fn new(deadline: Duration) -> CallBudget {
        CallBudget {
            deadline,
            wall_cap: (deadline * 20).max(Duration::from_secs(1)),
            started: Instant::now(),
            cpu_mark: None,
        }
    }

    fn start(&mut self, deadline: Duration) {
        *self = CallBudget::new(deadline);
    }

    /// Called on each epoch deadline during the call.
    fn on_deadline(&mut self) -> wasmtime::UpdateDeadline {
        if self.started.elapsed() >= self.wall_cap {
            return wasmtime::UpdateDeadline::Interrupt;
        }
        let cpu = cpu_time::ThreadTime::now().as_duration();
        let mark = *self.cpu_mark.get_or_insert(cpu);
        if cpu.saturating_sub(mark) >= self.deadline / 2 {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Continue(1)
        }
    }
}

impl HostState {
    /// What is left of the call's deadline (wall time): the most a key-value operation may
    /// wait, so a slow backend cannot hold the request past the plugin's deadline.
    pub(super) fn time_left(&self) -> Duration {
        self.budget
            .deadline
            .saturating_sub(self.budget.started.elapsed())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

static START: OnceLock<Instant> = OnceLock::new();

pub fn monotonic_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The engine and the linker with every import.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// Whether the pooling allocator is in use (false: fell back to on-demand).
    pub pooling: bool,
    /// wasmtime's on-disk compilation cache, when one is in use.
    pub cache_dir: Option<PathBuf>,
}

static RUNTIME: OnceLock<Result<Arc<Runtime>, String>> = OnceLock::new();

/// The process-wide runtime. The first call sizes the pool's memory slots from
/// `max_memory_bytes` and sets the compilation cache directory; later calls share it
/// (per-instance caps are still enforced by `StoreLimits`, so a smaller later limit is
/// fine).
pub fn runtime(
    max_memory_bytes: usize,
    cache_dir: Option<PathBuf>,
) -> Result<Arc<Runtime>, String> {
    RUNTIME
        .get_or_init(|| Runtime::new(max_memory_bytes, cache_dir).map(Arc::new))
        .clone()
}

/// wasmtime's compilation cache in `dir` (created if missing). `Component::new` then looks
/// up the compiled code by the component's bytes, the compiler settings and wasmtime's
/// version before compiling, so a restart with unchanged components skips the compile
/// (seconds for Python and JavaScript components). No `unsafe` deserialisation is involved.
fn disk_cache(dir: &Path) -> Result<wasmtime::Cache, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("plugins.compile_cache {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("plugins.compile_cache {}: {e}", dir.display()))?;
    let mut c = wasmtime::CacheConfig::new();
    c.with_directory(dir);
    wasmtime::Cache::new(c).map_err(|e| format!("plugins.compile_cache: {e:#}"))
}

/// Compiled components of one host by content hash. The host keeps only the versions its
/// chain uses ([`CompileCache::retain`] after each reload), so deploying version after
/// version does not keep every one of them in memory.
#[derive(Default)]
pub struct CompileCache {
    map: Mutex<HashMap<[u8; 32], Component>>,
}

impl CompileCache {
    /// Compile `bytes`, or reuse the component compiled from the same bytes before.
    fn get_or_compile(
        &self,
        rt: &Runtime,
        hash: [u8; 32],
        bytes: &[u8],
    ) -> Result<Component, String> {
        if let Some(c) = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
        {
            return Ok(c.clone());
        }
        let component = Component::new(&rt.engine, bytes).map_err(|e| format!("compile: {e:#}"))?;
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, component.clone());
        Ok(component)
    }

    /// Drop every version not in `keep`.
    pub fn retain(&self, keep: &std::collections::HashSet<[u8; 32]>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|h, _| keep.contains(h));
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn base_config(max_memory: usize) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    // Reserve only what the cap allows: with thousands of slots a 4 GiB reservation each
    // would exhaust the address space. Explicit bounds checks are the price.
    c.memory_reservation(max_memory as u64);
    c.memory_guard_size(64 * 1024);
    c.memory_reservation_for_growth(0);
    c
}

impl Runtime {
    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    fn new(max_memory_bytes: usize, cache_dir: Option<PathBuf>) -> Result<Runtime, String> {
        let max_memory = max_memory_bytes.max(1 << 20);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(1000)
            .total_core_instances(2000)
            .total_memories(1000)
            .total_tables(2000)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
            .table_elements(100_000)
            .max_memory_size(max_memory)
            .max_unused_warm_slots(100);
        // A cache that cannot be set up costs start-up time, not correctness: warn and go on.
        let cache = cache_dir.as_deref().and_then(|d| match disk_cache(d) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no compilation cache; components are compiled at every start");
                None
            }
        });
        let cache_dir = cache.as_ref().and(cache_dir);
        let config = |pooling: bool| {
            let mut c = base_config(max_memory);
            if pooling {
                c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()));
            }
            c.cache(cache.clone());
            c
        };
        let (engine, pooling) = match Engine::new(&config(true)) {
            Ok(e) => (e, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; plugins use on-demand allocation");
                let e = Engine::new(&config(false)).map_err(|e| e.to_string())?;
                (e, false)
            }
        };
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| e.to_string())?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;
        Plugin2::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                ticker.increment_epoch();
            })
            .map_err(|e| e.to_string())?;
        Ok(Runtime {
            engine,
            linker,
            pooling,
            cache_dir,
        })
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Guest stdout/stderr to the log.

#[derive(Clone)]
struct LogOutput {
    plugin: Arc<str>,
    stream: &'static str,
}

impl wasmtime_wasi::cli::IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI p3 guests use this; the gateway links p2 only.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for LogOutput {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for LogOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(plugin = &*self.plugin, stream = self.stream, "{line}");
        }
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

// ---------------------------------------------------------------------------------------------
// Loaded plugins.

/// Why a hook call produced no answer.
#[derive(Debug)]
pub enum CallError {
    Trap(String),
    Timeout(String),
    /// The key-value backend failed under the call (unreachable, too slow for the deadline).
    Kv(String),
}

impl CallError {
    /// The `kind` label of `switchyard_plugin_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout(_) => "timeout",
            CallError::Kv(_) => "kv_error",
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            CallError::Trap(r) | CallError::Timeout(r) | CallError::Kv(r) => r,
        }
    }
}

fn classify(e: wasmtime::Error) -> CallError {
    if let Some(kv) = e.downcast_ref::<super::kv::KvError>() {
        CallError::Kv(format!("kv: {kv}"))
    } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        CallError::Timeout("deadline exceeded".into())
    } else {
        CallError::Trap(format!("{e:#}"))
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    uses: u64,
}

/// An instance's exports, in the WIT version its component was built for.
pub enum Bindings {
    V1(Plugin),
    V2(Plugin2),
}

enum Pre {
    V1(PluginPre<HostState>),
    V2(PluginPre2<HostState>),
}

/// The `switchyard:plugin` version a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    V0_1,
    V0_2,
}

impl WitVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "0.1.0",
            WitVersion::V0_2 => "0.2.0",
        }
    }
}

/// What a plugin needs from the host besides its bytes.
#[derive(Clone)]
pub struct PluginSpec {
    pub entry: PluginEntry,
    pub kv: ScopedKv,
    pub metrics: Arc<PluginMetrics>,
    pub max_instances: usize,
}

/// One version of one plugin, ready to serve: immutable apart from its instance pool.
pub struct LoadedPlugin {
    pub name: Arc<str>,
    pub entry: PluginEntry,
    /// Full SHA-256 of the component bytes.
    pub hash: [u8; 32],
    pub hooks: wit::Hooks,
    /// The request parts it reads (all, for 0.1.0).
    pub reads: Reads,
    pub wit_version: WitVersion,
    pub loaded_at_ms: u64,
    spec: PluginSpec,
    rt: Arc<Runtime>,
    pre: Pre,
    pool: Mutex<Vec<Instance>>,
}

impl LoadedPlugin {
    /// Compile (or reuse), link, instantiate `prewarm` instances (at least one) and `init`
    /// each. Blocking: call off the request path.
    pub fn load(
        rt: Arc<Runtime>,
        compiled: &CompileCache,
        spec: PluginSpec,
        bytes: &[u8],
        prewarm: usize,
    ) -> Result<LoadedPlugin, String> {
        let hash = sha256(bytes);
        let component = compiled.get_or_compile(&rt, hash, bytes)?;
        let ipre = rt
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("link: {e:#}"))?;
        // The newest version first; a component that matches neither names what 0.1.0
        // lacks, the version most tools still build.
        let pre = match PluginPre2::new(ipre.clone()) {
            Ok(p) => Pre::V2(p),
            Err(_) => Pre::V1(
                PluginPre::new(ipre).map_err(|e| format!("not a switchyard plugin: {e:#}"))?,
            ),
        };
        let wit_version = match pre {
            Pre::V1(_) => WitVersion::V0_1,
            Pre::V2(_) => WitVersion::V0_2,
        };
        let mut p = LoadedPlugin {
            name: spec.entry.name.as_str().into(),
            entry: spec.entry.clone(),
            hash,
            hooks: wit::Hooks::empty(),
            reads: Reads::ALL,
            wit_version,
            loaded_at_ms: super::bindings::now_ms(),
            spec,
            rt,
            pre,
            pool: Mutex::new(Vec::new()),
        };
        let (first, (hooks, reads)) = p.instantiate()?;
        p.hooks = hooks;
        p.reads = reads;
        let mut pool = vec![first];
        for _ in 1..prewarm.clamp(1, PREWARM_CAP) {
            pool.push(p.instantiate()?.0);
        }
        p.pool = Mutex::new(pool);
        Ok(p)
    }

    /// A new instance with `init` called on it.
    fn instantiate(&self) -> Result<(Instance, (wit::Hooks, Reads)), String> {
        let state = HostState {
            plugin: self.name.clone(),
            kv: self.spec.kv.clone(),
            metrics: self.spec.metrics.clone(),
            // Nothing granted: no preopens, env, args or sockets; stdin is empty.
            wasi: WasiCtx::builder()
                .stdout(LogOutput {
                    plugin: self.name.clone(),
                    stream: "stdout",
                })
                .stderr(LogOutput {
                    plugin: self.name.clone(),
                    stream: "stderr",
                })
                .build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.entry.memory_limit_bytes)
                .trap_on_grow_failure(true)
                .build(),
            budget: CallBudget::new(INIT_DEADLINE),
        };
        let mut store = Store::new(&self.rt.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().budget.on_deadline()));
        store.set_epoch_deadline(ticks(INIT_DEADLINE));
        let config = &self.entry.config_json;
        let (bindings, init) = match &self.pre {
            Pre::V1(pre) => {
                let b = pre
                    .instantiate(&mut store)
                    .map_err(|e| format!("instantiate: {e:#}"))?;
                let init = b
                    .call_init(&mut store, config)
                    .map(|r| r.map(|h| (h, Reads::ALL)));
                (Bindings::V1(b), init)
            }
            Pre::V2(pre) => {
                let b = pre
                    .instantiate(&mut store)
                    .map_err(|e| format!("instantiate: {e:#}"))?;
                let init = b
                    .call_init(&mut store, config)
                    .map(|r| r.map(|i| (bindings::v2::hooks(i.hooks), i.reads.into())));
                (Bindings::V2(b), init)
            }
        };
        let hooks = match init {
            Ok(Ok(h)) => h,
            Ok(Err(msg)) => return Err(format!("init: {msg}")),
            Err(e) => return Err(format!("init: {}", classify(e).reason())),
        };
        Ok((
            Instance {
                store,
                bindings,
                uses: 0,
            },
            hooks,
        ))
    }

    /// Run `f` on a pooled (or new) instance under the plugin's deadline.
    pub fn call<R>(
        &self,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut inst = match pooled {
            Some(i) => i,
            None => self.instantiate().map_err(CallError::Trap)?.0,
        };
        inst.store.data_mut().budget.start(self.entry.deadline);
        inst.store.set_epoch_deadline(ticks(self.entry.deadline));
        match f(&inst.bindings, &mut inst.store) {
            Ok(r) => {
                inst.uses += 1;
                let fresh = self.entry.fresh_instance_after;
                if fresh == 0 || inst.uses < fresh {
                    let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                    if pool.len() < self.spec.max_instances {
                        pool.push(inst);
                    }
                }
                Ok(r)
            }
            // The store is poisoned: drop the instance with it.
            Err(e) => Err(classify(e)),
        }
    }

    /// [`LoadedPlugin::call`] on a 0.1.0 plugin.
    pub fn call1<R>(
        &self,
        f: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call(|b, s| match b {
            Bindings::V1(b) => f(b, s),
            Bindings::V2(_) => Err(wasmtime::Error::msg("not a 0.1.0 instance")),
        })
    }

    /// [`LoadedPlugin::call`] on a 0.2.0 plugin.
    pub fn call2<R>(
        &self,
        f: impl FnOnce(&Plugin2, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call(|b, s| match b {
            Bindings::V2(b) => f(b, s),
            Bindings::V1(_) => Err(wasmtime::Error::msg("not a 0.2.0 instance")),
        })
    }

    /// The pool cap this version was loaded with (`plugins.max_instances`).
    pub fn max_instances(&self) -> usize {
        self.spec.max_instances
    }

    pub fn pooled(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Epoch ticks for `d`, plus one because the current tick may be nearly over.
fn ticks(d: Duration) -> u64 {
    (d.as_micros().div_ceil(TICK.as_micros()) as u64).max(1) + 1
}
