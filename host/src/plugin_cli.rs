//! `switchyard plugin …`: tools for plugin authors, off the request's way. `inspect` says what
//! a component is and whether this gateway loads it; `test` runs its hooks offline with the
//! real runtime (same limits and imports, an in-memory store, no network); `new` writes a
//! project that builds into a loadable component. `main` parses the command line and calls
//! these; each returns the text to print or an error message.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::config::{OnError, PluginEntry};
use crate::plugins::offline::{self, Offline};
use crate::plugins::{HookContext, PreOutcome, StreamHookState};
use crate::schema::{RequestKind, StreamChunk, UnifiedResponse};

mod template;

pub use template::Lang;

/// Limits and config a plugin is run with, as a config.json entry would give them.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The plugin's `config` object as JSON (`{}` when none).
    pub config_json: String,
    pub deadline: Duration,
    pub memory_limit_bytes: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            config_json: "{}".into(),
            deadline: Duration::from_millis(10),
            memory_limit_bytes: 64 << 20,
        }
    }
}

/// The tools share the gateway's default compilation cache
/// (`$XDG_CACHE_HOME/switchyard/wasmtime`, else `~/.cache/switchyard/wasmtime`);
/// `SWITCHYARD_COMPILE_CACHE=off` turns it off.
pub fn use_default_compile_cache() {
    let var = |k: &str| std::env::var(k).ok().filter(|v| Path::new(v).is_absolute());
    let dir = match std::env::var("SWITCHYARD_COMPILE_CACHE").as_deref() {
        Ok("off") => None,
        _ => var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|b| b.join("switchyard").join("wasmtime")),
    };
    offline::set_compile_cache(dir);
}

fn entry(file: &Path, opts: &RunOptions) -> PluginEntry {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-"))
        .unwrap_or_else(|| "plugin".into());
    PluginEntry {
        file: file.display().to_string(),
        name,
        order: 0,
        enabled: true,
        config_json: opts.config_json.clone(),
        // A trap, timeout or hook error is then reported as the failure it is, not
        // skipped as a fail_open gateway would.
        on_error: OnError::FailClosed,
        deadline: opts.deadline,
        memory_limit_bytes: opts.memory_limit_bytes,
        fresh_instance_after: 0,
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The `config` for the plugin from a file: either the plugin's config object itself, or a
/// whole config.json entry (`{"name": ..., "config": {...}, "deadline_ms": ...}`), whose
/// `config`, `deadline_ms` and `memory_limit_mib` are used.
pub fn read_options(path: Option<&Path>) -> Result<RunOptions, String> {
    let mut opts = RunOptions::default();
    let Some(path) = path else {
        return Ok(opts);
    };
    let v: Value = serde_json::from_slice(&read(path, "config")?)
        .map_err(|e| format!("config {}: not JSON: {e}", path.display()))?;
    let Value::Object(m) = &v else {
        return Err(format!("config {}: expected a JSON object", path.display()));
    };
    let is_entry = m.contains_key("config") && (m.contains_key("name") || m.contains_key("file"));
    if !is_entry {
        opts.config_json = v.to_string();
        return Ok(opts);
    }
    opts.config_json = m["config"].to_string();
    if let Some(ms) = m.get("deadline_ms").and_then(Value::as_u64) {
        opts.deadline = Duration::from_millis(ms.max(1));
    }
    if let Some(mib) = m.get("memory_limit_mib").and_then(Value::as_u64) {
        opts.memory_limit_bytes = usize::try_from(mib.max(1)).unwrap_or(usize::MAX / 2) << 20;
    }
    Ok(opts)
}

/// `plugin inspect FILE.wasm`: WIT version, hooks, imports, exports, size, loadable.
/// Returns the report and whether the component loads.
pub fn inspect(file: &Path, opts: &RunOptions) -> Result<(String, bool), String> {
    let bytes = read(file, "component")?;
    let i = offline::inspect(&bytes, &entry(file, opts));
    let mut out = String::new();
    let _ = writeln!(out, "file:      {}", file.display());
    let _ = writeln!(
        out,
        "size:      {} bytes ({:.1} KiB)",
        i.size_bytes,
        i.size_bytes as f64 / 1024.0
    );
    let _ = writeln!(out, "sha256:    {}", i.sha256);
    let wit = if i.wit_versions.is_empty() {
        "none (not a switchyard plugin)".to_owned()
    } else {
        i.wit_versions
            .iter()
            .map(|v| {
                let known = if offline::SUPPORTED_WIT.contains(&v.as_str()) {
                    ""
                } else {
                    " (not supported by this gateway)"
                };
                format!("switchyard:plugin@{v}{known}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "wit:       {wit}");
    let hooks = if i.hooks.is_empty() {
        "-".to_owned()
    } else {
        i.hooks.join(", ")
    };
    let _ = writeln!(out, "hooks:     {hooks}");
    if let Some(v) = i.loaded_as {
        let reads = if i.reads.is_empty() {
            "-".to_owned()
        } else {
            i.reads.join(", ")
        };
        let _ = writeln!(out, "reads:     {reads} (loaded as {v})");
    }
    let _ = writeln!(out, "imports:");
    for n in &i.imports {
        let _ = writeln!(out, "  {n}");
    }
    let _ = writeln!(out, "exports:");
    for n in &i.exports {
        let _ = writeln!(out, "  {n}");
    }
    let ok = i.loadable.is_ok();
    match &i.loadable {
        Ok(()) => {
            let _ = writeln!(
                out,
                "loadable:  yes (compiled, linked and init-ed in {} ms)",
                i.load_time.as_millis()
            );
        }
        Err(e) => {
            let _ = writeln!(out, "loadable:  no: {e}");
        }
    }
    Ok((out, ok))
}

/// Inputs of `plugin test`.
#[derive(Debug, Clone, Default)]
pub struct TestInputs {
    pub file: PathBuf,
    pub config: Option<PathBuf>,
    pub request: PathBuf,
    pub response: Option<PathBuf>,
    pub stream: Option<PathBuf>,
    /// Overrides the deadline per hook call.
    pub deadline: Option<Duration>,
}

/// Log lines the plugin wrote (through `log`, stdout/stderr, or the host about it).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

#[derive(Default)]
struct Fields {
    plugin: bool,
    message: String,
    extra: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "plugin" => self.plugin = true,
            other => {
                let _ = write!(self.extra, " {other}={value:?}");
            }
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "plugin" => self.plugin = true,
            other => {
                let _ = write!(self.extra, " {other}={value}");
            }
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut f = Fields::default();
        event.record(&mut f);
        if f.plugin {
            let line = format!("{:5} {}{}", event.metadata().level(), f.message, f.extra);
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }
}

fn kind_of(body: &Value) -> RequestKind {
    if body.get("messages").is_some() {
        RequestKind::Chat
    } else if body.get("prompt").is_some() {
        RequestKind::Completion
    } else if body.get("input").is_some() {
        RequestKind::Embedding
    } else {
        RequestKind::Chat
    }
}

fn json_file(path: &Path, what: &str) -> Result<Value, String> {
    serde_json::from_slice(&read(path, what)?)
        .map_err(|e| format!("{what} {}: not JSON: {e}", path.display()))
}

fn object(v: Value, path: &Path, what: &str) -> Result<serde_json::Map<String, Value>, String> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(format!("{what} {}: expected a JSON object", path.display())),
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `plugin test`: load the component, run its pre-hook over the request, its post-hook over
/// the response (the given one, or the pre-hook's own answer), its chunk hook over each line
/// of the stream, and report what each returned, the logs, the metrics and the timings.
/// Returns the report and whether every hook call succeeded (no trap, timeout or error).
pub fn test(inputs: &TestInputs) -> Result<(String, bool), String> {
    let mut opts = read_options(inputs.config.as_deref())?;
    if let Some(d) = inputs.deadline {
        opts.deadline = d;
    }
    let bytes = read(&inputs.file, "component")?;
    let request = json_file(&inputs.request, "request")?;
    let kind = kind_of(&request);
    let (mut req, _) = crate::proxy::resolve(kind, request.to_string().as_bytes())
        .map_err(|e| format!("request {}: {}", inputs.request.display(), e.message))?;
    let response = match &inputs.response {
        Some(p) => Some(object(json_file(p, "response")?, p, "response")?),
        None => None,
    };
    let chunks: Vec<serde_json::Map<String, Value>> = match &inputs.stream {
        Some(p) => {
            let text = String::from_utf8(read(p, "stream")?)
                .map_err(|_| format!("stream {}: not UTF-8", p.display()))?;
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let line = line.strip_prefix("data:").map(str::trim).unwrap_or(line);
                if line == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| format!("stream {} line {}: not JSON: {e}", p.display(), n + 1))?;
                out.push(object(v, p, "stream chunk")?);
            }
            out
        }
        None => Vec::new(),
    };

    let captured = Captured::default();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        captured.clone(),
    );
    let mut out = String::new();
    let mut ok = true;
    let entry = entry(&inputs.file, &opts);
    let name = entry.name.clone();
    let mut metrics_text = String::new();
    tracing::subscriber::with_default(subscriber, || -> Result<(), String> {
        let plugin =
            Offline::load(&bytes, entry).map_err(|e| format!("{name}: does not load: {e}"))?;
        let _ = writeln!(
            out,
            "loaded {name} ({} bytes) in {} ms; hooks: {}; deadline {} ms, memory limit {} MiB",
            bytes.len(),
            plugin.load_time.as_millis(),
            plugin.hooks().join(", "),
            opts.deadline.as_millis(),
            opts.memory_limit_bytes >> 20
        );
        let ctx = HookContext {
            request_id: "plugin-test".into(),
            client_key: "anonymous".into(),
            headers: Vec::new().into(),
            received_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            attempt: 0,
        };
        let before = Value::Object(req.body.clone());
        let mut answered = None;
        match plugin.pre_hook(&ctx, &mut req) {
            None => {
                let _ = writeln!(out, "\npre-hook: not requested by the plugin");
            }
            Some(call) => {
                let _ = write!(out, "\npre-hook ({}): ", us(call.took));
                match call.result {
                    PreOutcome::Continue => {
                        let now = Value::Object(req.body.clone());
                        if now == before {
                            let _ = writeln!(out, "continue (request unchanged)");
                        } else {
                            let _ = writeln!(
                                out,
                                "continue with a changed request ({}/{}):\n{}",
                                req.target.provider,
                                req.target.model,
                                pretty(&now)
                            );
                        }
                    }
                    PreOutcome::Respond(r) => {
                        let _ = writeln!(
                            out,
                            "respond (the provider is not called), status {}:\n{}",
                            r.status,
                            pretty(&Value::Object(r.body.clone()))
                        );
                        answered = Some(r);
                    }
                    PreOutcome::Reject(e) => {
                        if e.message.starts_with(&format!("plugin {name} failed")) {
                            ok = false;
                            let _ = writeln!(out, "FAILED: {}", e.message);
                        } else {
                            let _ = writeln!(
                                out,
                                "reject {} {}: {}{}",
                                e.status.as_u16(),
                                e.code.as_deref().unwrap_or("-"),
                                e.message,
                                e.retry_after
                                    .map(|d| format!(" (Retry-After: {} s)", d.as_secs()))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
            }
        }
        let post_input = response.map(UnifiedResponse::ok).or(answered);
        match post_input {
            None => {
                let _ = writeln!(
                    out,
                    "\npost-hook: not run (give --response, or a pre-hook that responds)"
                );
            }
            Some(resp) => {
                let mut outcome = Ok(resp);
                let before = outcome.as_ref().map(|r| Value::Object(r.body.clone())).ok();
                match plugin.post_hook(&ctx, &req, &mut outcome) {
                    None => {
                        let _ = writeln!(out, "\npost-hook: not requested by the plugin");
                    }
                    Some(call) => {
                        let _ = write!(out, "\npost-hook ({}): ", us(call.took));
                        match outcome {
                            Ok(r) if Some(Value::Object(r.body.clone())) == before => {
                                let _ = writeln!(out, "keep (response unchanged)");
                            }
                            Ok(r) => {
                                let _ = writeln!(
                                    out,
                                    "replace, status {}:\n{}",
                                    r.status,
                                    pretty(&Value::Object(r.body))
                                );
                            }
                            Err(e) => {
                                if e.message.starts_with(&format!("plugin {name} failed")) {
                                    ok = false;
                                    let _ = writeln!(out, "FAILED: {}", e.message);
                                } else {
                                    let _ = writeln!(
                                        out,
                                        "replace with an error {}: {}",
                                        e.status.as_u16(),
                                        e.message
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        if !chunks.is_empty() {
            let mut state = StreamHookState::default();
            let n = chunks.len();
            let mut total = Duration::ZERO;
            let mut calls = 0;
            let _ = writeln!(out, "\non-chunk, {n} chunks:");
            for (i, body) in chunks.into_iter().enumerate() {
                let mut chunk = StreamChunk { body };
                let before = Value::Object(chunk.body.clone());
                match plugin.chunk_hook(&ctx, &req, &mut state, &mut chunk, i + 1 == n) {
                    None => {
                        let _ = writeln!(out, "  not requested by the plugin");
                        break;
                    }
                    Some(call) => {
                        total += call.took;
                        calls += 1;
                        let now = Value::Object(chunk.body.clone());
                        match call.result {
                            Err(e) => {
                                ok = false;
                                let _ = writeln!(
                                    out,
                                    "  [{i}] FAILED ({}): {}",
                                    us(call.took),
                                    e.message
                                );
                            }
                            Ok(()) if now == before => {
                                let _ = writeln!(out, "  [{i}] keep ({})", us(call.took));
                            }
                            Ok(()) => {
                                let _ = writeln!(out, "  [{i}] replace ({}): {now}", us(call.took));
                            }
                        }
                    }
                }
            }
            if calls > 0 {
                let _ = writeln!(out, "  mean {} per chunk", us(total / calls));
            }
        }
        metrics_text = plugin.metrics_text();
        Ok(())
    })?;
    let logs = captured.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let _ = writeln!(out, "\nlogs ({}):", logs.len());
    for l in logs {
        let _ = writeln!(out, "  {l}");
    }
    // Only the plugin's own metrics and the host's per-plugin counters, without help lines.
    let _ = writeln!(out, "\nmetrics:");
    for l in metrics_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket{"))
    {
        let _ = writeln!(out, "  {l}");
    }
    Ok((out, ok))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `plugin new NAME --lang rust|python|js [--dir DIR]`: writes the project and returns what
/// to do next.
pub fn new_project(
    name: &str,
    lang: Lang,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<String, String> {
    template::write(name, lang, dir, sdk)
}
