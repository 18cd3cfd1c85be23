//! Config reload without a restart. The serving [`Gateway`] sits behind an [`ArcSwap`]: each
//! request takes the one that is current when it arrives and keeps it to its end, so
//! requests in flight finish on the config they started with, and requests already queued
//! at a provider stay in that provider's old queue (which its old workers drain) when a
//! queue is resized. A new config is validated in full first; if any of it is wrong,
//! nothing changes, and every problem (with its key path) goes to the log and `/health`.
//!
//! What applies: providers (added, removed, changed), their keys, network settings,
//! concurrency and buffer sizes, model aliases, virtual keys (their counts and budgets go
//! on in the same store), the client settings read per request, and the plugin entries
//! (per-plugin `config`, `on_error`, `order`, `enabled`, limits, added and removed
//! entries, `plugins.max_instances`, `plugins.kv.max_bytes_per_plugin`; see
//! [`crate::plugins::PluginHost::reconfigure`]). What needs a restart, and is said so in
//! the reload's notes: `client.listen`, the connection time limits, `client.max_in_flight`,
//! `client.admin_listen` / `admin_token`, `logging`, `telemetry`, `status_page`, and of
//! `plugins` the directory, watcher, compile cache and the key-value backend (`plugins.kv`
//! other than `max_bytes_per_plugin`): the store keeps its state and connections.
//!
//! Triggers: SIGHUP, and a change to the config file (its directory is watched, so editors
//! that replace the file by rename are seen), debounced.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use crate::config::validate::Env;
use crate::config::Config;
use crate::proxy::Gateway;
use crate::upstream::Upstream;

/// The gateway that is serving now, and how the last reload went.
pub struct Live {
    current: ArcSwap<Gateway>,
    status: Mutex<Status>,
    /// Serialises reloads: two triggers at once apply one after the other.
    lock: tokio::sync::Mutex<()>,
    /// SHA-256 of the file text last applied: the same text again is no reload.
    applied_text: Mutex<Option<[u8; 32]>>,
}

#[derive(Default)]
struct Status {
    /// 1 for the config the gateway started with, +1 per applied reload.
    generation: u64,
    last: Option<Attempt>,
}

struct Attempt {
    applied: bool,
    trigger: String,
    at_unix_ms: u64,
    /// Problems of a refused config, each `<key path>: <what>`.
    problems: Vec<String>,
    /// What an applied reload changed, and what it could not.
    notes: Vec<String>,
}

/// How one reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The new config serves new requests; the notes say what changed and what waits for a
    /// restart.
    Applied { generation: u64, notes: Vec<String> },
    /// The file's text is the one last applied (a SIGHUP reloads it all the same).
    Unchanged,
    /// The new config was refused; the running one keeps serving.
    Refused { problems: Vec<String> },
}

impl Live {
    pub fn new(gateway: Arc<Gateway>) -> Arc<Live> {
        Arc::new(Live {
            current: ArcSwap::new(gateway),
            status: Mutex::new(Status {
                generation: 1,
                last: None,
            }),
            lock: tokio::sync::Mutex::new(()),
            applied_text: Mutex::new(None),
        })
    }

    /// Remember the text of the file the gateway started from.
    pub fn started_from(&self, path: &Path) {
        if let Ok(bytes) = std::fs::read(path) {
            *self.applied_text.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest(&bytes));
        }
    }

    /// The gateway for a request arriving now.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read, validate and apply the config file at `path`.
    pub async fn reload_file(&self, path: &Path, env: &dyn Env, trigger: &str) -> Reloaded {
        let text = std::fs::read(path).map(|b| digest(&b)).ok();
        let same = text.is_some()
            && *self.applied_text.lock().unwrap_or_else(|e| e.into_inner()) == text
            && !self.refused_last();
        if same && trigger != "SIGHUP" {
            tracing::debug!(trigger, "config file text unchanged; nothing reloaded");
            return Reloaded::Unchanged;
        }
        let loaded = Config::load(path, env);
        let outcome = match loaded {
            Ok((config, warnings)) => {
                for w in warnings {
                    tracing::warn!(file = %path.display(), "{w}");
                }
                let r = self.apply(config, trigger).await;
                if matches!(r, Reloaded::Applied { .. }) {
                    *self.applied_text.lock().unwrap_or_else(|e| e.into_inner()) = text;
                }
                r
            }
            Err(e) => {
                let problems: Vec<String> = e
                    .problems
                    .iter()
                    .map(|p| format!("{}: {p}", e.file))
                    .collect();
                self.refused(trigger, problems.clone());
                Reloaded::Refused { problems }
            }
        };
        match &outcome {
            Reloaded::Applied { generation, notes } => {
                tracing::info!(trigger, generation, changes = ?notes, "config reloaded");
            }
            Reloaded::Unchanged => tracing::info!(trigger, "config unchanged; nothing reloaded"),
            Reloaded::Refused { problems } => {
                for p in problems {
                    tracing::error!(trigger, "config reload refused: {p}");
                }
                tracing::error!(
                    trigger,
                    problems = problems.len(),
                    "config reload refused; the running config keeps serving"
                );
            }
        }
        outcome
    }

    /// Apply an already validated `config`.
    pub async fn apply(&self, config: Config, trigger: &str) -> Reloaded {
        let _one = self.lock.lock().await;
        let old = self.current();
        let mut notes = differences(&old.config, &config);
        if notes.is_empty() {
            // Secrets print masked, so a changed key is not told apart: rebuild anyway.
            notes.push(
                "providers: rebuilt (no visible change; secret values may have changed)".to_owned(),
            );
        }
        let mut config = config;
        // Keep what cannot change without a restart, so that what the gateway reports is
        // what it does.
        keep_restart_only(&old.config.client, &mut config.client);
        let plugins = std::mem::replace(&mut config.plugins, old.config.plugins.clone());
        config.logging = old.config.logging.clone();
        config.telemetry = old.config.telemetry.clone();
        config.status_page = old.config.status_page;
        let upstream = match Upstream::new(&config, old.metrics.clone()) {
            Ok(u) => u,
            Err(e) => {
                let problems = vec![e];
                self.refused(trigger, problems.clone());
                return Reloaded::Refused { problems };
            }
        };
        // Plugins last: a config refused above must not have changed them.
        if plugin_entries_differ(&old.config.plugins, &plugins) {
            if old.plugins.reconfigure(&plugins).await {
                config.plugins = plugins;
                keep_plugins_restart_only(&old.config.plugins, &mut config.plugins);
            } else {
                notes.push(
                    "plugins.entries: changed, applies at the next restart (the gateway started with no enabled plugin)"
                        .to_owned(),
                );
            }
        }
        let access = old.access.reconfigured(&config, &old.metrics);
        let mut next = Gateway::new(
            Arc::new(config),
            upstream,
            old.plugins.clone(),
            old.metrics.clone(),
        );
        next.access = access;
        self.current.store(Arc::new(next));
        let mut st = self.status();
        st.generation += 1;
        st.last = Some(Attempt {
            applied: true,
            trigger: trigger.to_owned(),
            at_unix_ms: now_ms(),
            problems: Vec::new(),
            notes: notes.clone(),
        });
        Reloaded::Applied {
            generation: st.generation,
            notes,
        }
    }

    fn refused(&self, trigger: &str, problems: Vec<String>) {
        self.status().last = Some(Attempt {
            applied: false,
            trigger: trigger.to_owned(),
            at_unix_ms: now_ms(),
            problems,
            notes: Vec::new(),
        });
    }

    /// The `config` section of `/health`.
    pub fn health(&self) -> Value {
        let st = self.status();
        let last = st.last.as_ref().map(|a| {
            json!({
                "applied": a.applied,
                "trigger": a.trigger,
                "at_unix_ms": a.at_unix_ms,
                "problems": a.problems,
                "notes": a.notes,
            })
        });
        json!({"generation": st.generation, "last_reload": last})
    }

    /// True when the last reload was refused (the running config is older than the file).
    pub fn refused_last(&self) -> bool {
        self.status().last.as_ref().is_some_and(|a| !a.applied)
    }
}

/// Copy into `to` the client settings that only a restart changes (the listener, the
/// connection limits and `max_in_flight` are fixed when the server starts).
fn keep_restart_only(from: &crate::config::ClientConfig, to: &mut crate::config::ClientConfig) {
    to.listen = from.listen;
    to.max_in_flight = from.max_in_flight;
    to.header_read_timeout = from.header_read_timeout;
    to.idle_timeout = from.idle_timeout;
    to.write_timeout = from.write_timeout;
}

/// Copy into `to` the plugin settings that only a restart changes: the directory and its
/// watcher, the compile cache and the key-value backend.
fn keep_plugins_restart_only(
    from: &crate::config::PluginsConfig,
    to: &mut crate::config::PluginsConfig,
) {
    to.directory = from.directory.clone();
    to.watch = from.watch;
    to.debounce = from.debounce;
    to.compile_cache = from.compile_cache.clone();
    to.kv_backend = from.kv_backend.clone();
}

/// Whether the parts of `plugins` a reload applies differ.
fn plugin_entries_differ(
    old: &crate::config::PluginsConfig,
    new: &crate::config::PluginsConfig,
) -> bool {
    old.entries != new.entries
        || old.max_instances != new.max_instances
        || old.kv_max_bytes_per_plugin != new.kv_max_bytes_per_plugin
}

/// The notes for `plugins`: entries added, removed, changed or reordered, the limits that
/// apply, and the settings that wait for a restart.
fn plugin_differences(
    old: &crate::config::PluginsConfig,
    new: &crate::config::PluginsConfig,
    notes: &mut Vec<String>,
) {
    let names = |c: &crate::config::PluginsConfig| -> Vec<String> {
        c.entries.iter().map(|e| e.name.clone()).collect()
    };
    let (old_names, new_names) = (names(old), names(new));
    for n in new_names.iter().filter(|n| !old_names.contains(n)) {
        notes.push(format!("plugins.entries.{n}: added"));
    }
    for n in old_names.iter().filter(|n| !new_names.contains(n)) {
        notes.push(format!("plugins.entries.{n}: removed"));
    }
    for e in &new.entries {
        if old.entries.iter().any(|o| o.name == e.name && o != e) {
            notes.push(format!("plugins.entries.{}: changed", e.name));
        }
    }
    let kept: Vec<&String> = old_names.iter().filter(|n| new_names.contains(n)).collect();
    let kept_new: Vec<&String> = new_names.iter().filter(|n| old_names.contains(n)).collect();
    if kept != kept_new {
        notes.push("plugins.entries: order changed".to_owned());
    }
    if old.max_instances != new.max_instances {
        notes.push("plugins.max_instances: changed".to_owned());
    }
    if old.kv_max_bytes_per_plugin != new.kv_max_bytes_per_plugin {
        notes.push("plugins.kv.max_bytes_per_plugin: changed".to_owned());
    }
    for (key, changed) in [
        ("directory", old.directory != new.directory),
        ("watch", old.watch != new.watch),
        ("debounce_ms", old.debounce != new.debounce),
        ("compile_cache", old.compile_cache != new.compile_cache),
        ("kv", old.kv_backend != new.kv_backend),
    ] {
        if changed {
            let what = if key == "kv" {
                "plugins.kv: backend settings changed, apply at the next restart (the store keeps its state and connections)".to_owned()
            } else {
                format!("plugins.{key}: changed, applies at the next restart")
            };
            notes.push(what);
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What differs between the running config and a new one, in words, including the parts
/// that need a restart. Empty when nothing that matters changed.
fn differences(old: &Config, new: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let name = |p: &crate::config::ProviderConfig| p.name.clone();
    let old_names: Vec<String> = old.providers.iter().map(name).collect();
    let new_names: Vec<String> = new.providers.iter().map(name).collect();
    for n in new_names.iter().filter(|n| !old_names.contains(n)) {
        notes.push(format!("providers.{n}: added"));
    }
    for n in old_names.iter().filter(|n| !new_names.contains(n)) {
        notes.push(format!("providers.{n}: removed"));
    }
    for p in &new.providers {
        if let Some(o) = old.providers.iter().find(|o| o.name == p.name) {
            // Debug output covers every setting; secrets print masked, never in clear.
            if format!("{o:?}") != format!("{p:?}") {
                notes.push(format!("providers.{}: changed", p.name));
            }
        }
    }
    if old_names != new_names
        && notes
            .iter()
            .all(|n| !n.ends_with("added") && !n.ends_with("removed"))
    {
        notes.push("providers: order changed".to_owned());
    }
    let (oc, nc) = (&old.client, &new.client);
    let restart = |key: &str, notes: &mut Vec<String>| {
        notes.push(format!(
            "client.{key}: changed, applies at the next restart"
        ));
    };
    if oc.listen != nc.listen {
        restart("listen", &mut notes);
    }
    if oc.max_in_flight != nc.max_in_flight {
        restart("max_in_flight", &mut notes);
    }
    if oc.header_read_timeout != nc.header_read_timeout {
        restart("header_read_timeout_in_seconds", &mut notes);
    }
    if oc.idle_timeout != nc.idle_timeout {
        restart("idle_timeout_in_seconds", &mut notes);
    }
    if oc.write_timeout != nc.write_timeout {
        restart("write_timeout_in_seconds", &mut notes);
    }
    for (key, a, b) in [
        (
            "logging",
            format!("{:?}", old.logging),
            format!("{:?}", new.logging),
        ),
        (
            "telemetry",
            format!("{:?}", old.telemetry),
            format!("{:?}", new.telemetry),
        ),
        (
            "status_page",
            format!("{:?}", old.status_page),
            format!("{:?}", new.status_page),
        ),
    ] {
        if a != b {
            notes.push(format!("{key}: changed, applies at the next restart"));
        }
    }
    plugin_differences(&old.plugins, &new.plugins, &mut notes);
    let mut oc_rest = oc.clone();
    keep_restart_only(nc, &mut oc_rest);
    if format!("{oc_rest:?}") != format!("{nc:?}") {
        notes.push("client: changed".to_owned());
    }
    notes
}

/// Reload on SIGHUP and when the file at `path` changes, until `live` is dropped.
pub fn watch(live: &Arc<Live>, path: PathBuf, env: Arc<dyn Env>) {
    let weak = Arc::downgrade(live);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; config reload only on file change");
                return;
            };
            while hup.recv().await.is_some() {
                if tx.send("SIGHUP").await.is_err() {
                    return;
                }
            }
        });
    }
    let watcher = file_watcher(&path, tx);
    tokio::spawn(async move {
        let _watcher = watcher;
        while let Some(trigger) = rx.recv().await {
            let Some(live) = weak.upgrade() else { return };
            live.reload_file(&path, env.as_ref(), trigger).await;
        }
    });
}

/// Watch the file's directory; send once per burst of events that touch the file.
fn file_watcher(
    path: &Path,
    tx: tokio::sync::mpsc::Sender<&'static str>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = path.file_name()?.to_owned();
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev.paths.iter().any(|p| p.file_name() == Some(&file)) {
                let _ = raw_tx.send(());
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "config file not watched; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "config file not watched; reload with SIGHUP");
        return None;
    }
    tokio::spawn(async move {
        // Debounce: an editor's save is several events; reload once it has been quiet.
        while raw_rx.recv().await.is_some() {
            loop {
                match tokio::time::timeout(Duration::from_millis(200), raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send("file changed").await.is_err() {
                return;
            }
        }
    });
    Some(watcher)
}
