//! Plugins: the PreHook/PostHook chain around every provider call, run as WebAssembly
//! components (WIT world `switchyard:plugin/plugin@0.1.0`, see `wit/plugin.wit`).
//!
//! This module is the facade: nothing outside it names a wasmtime type. The proxy takes a
//! [`Chain`] snapshot from the [`PluginHost`] when a request arrives and uses it for the whole
//! request, so a hot reload never changes the plugins under a request in flight.
//!
//! STUB: the runtime (wasmtime engine, pools, limits, kv, metrics, watcher) lands behind
//! this API; until then the chain is empty.

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

/// Owns the loaded plugins and swaps the chain on reload.
pub struct PluginHost {
    chain: arc_swap::ArcSwap<Chain>,
}

impl PluginHost {
    /// A host with no plugins.
    pub fn disabled() -> Arc<PluginHost> {
        Arc::new(PluginHost {
            chain: arc_swap::ArcSwap::from_pointee(Chain::default()),
        })
    }

    /// Load every enabled entry of `cfg` and start the watcher.
    pub async fn start(
        cfg: &PluginsConfig,
        initial_pool_size: usize,
        registry: &prometheus::Registry,
    ) -> Result<Arc<PluginHost>, PluginStartError> {
        let _ = (cfg, initial_pool_size, registry);
        Ok(Self::disabled())
    }

    /// The chain to use for one request, start to finish.
    pub fn chain(&self) -> Arc<Chain> {
        self.chain.load_full()
    }

    pub fn health(&self) -> Vec<PluginHealth> {
        Vec::new()
    }
}

/// An immutable, ordered set of loaded plugins.
#[derive(Default)]
pub struct Chain {}

/// Per-stream state of the chunk hooks (each plugin's opaque `state` bytes).
#[derive(Default)]
pub struct StreamHookState {
    pub(crate) states: Vec<Vec<u8>>,
    pub(crate) sequence: u32,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        true
    }

    /// Run the pre-hooks in order. Returns the decision and how many plugins ran (their
    /// post-hooks run later, in reverse).
    pub fn pre_hooks(&self, ctx: &HookContext, req: &mut UnifiedRequest) -> (PreOutcome, usize) {
        let _ = (ctx, req);
        (PreOutcome::Continue, 0)
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
        let _ = (ctx, req, ran, upstream_latency, outcome);
    }

    /// Run the chunk hooks of the first `ran` plugins, in reverse order, over one chunk.
    /// `last` marks the final chunk before `[DONE]`.
    pub fn chunk_hooks(
        &self,
        ctx: &HookContext,
        req: &UnifiedRequest,
        ran: usize,
        state: &mut StreamHookState,
        chunk: &mut StreamChunk,
        last: bool,
    ) -> Result<(), GatewayError> {
        let _ = (ctx, req, ran, state, chunk, last);
        Ok(())
    }

    /// Whether any of the first `ran` plugins wants stream chunks.
    pub fn wants_chunks(&self, ran: usize) -> bool {
        let _ = ran;
        false
    }
}
