//! The WIT contract in Rust: the one place that runs `bindgen!` over `wit/plugin.wit`, the
//! host side of the plugin's imports (log, clock, kv, metrics), and the conversions between
//! the gateway's schema types and the WIT records a plugin sees.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Map, Value};

use super::runtime::HostState;
use crate::error::{Fault, GatewayError};
use crate::plugins::HookContext;
use crate::schema::{RequestKind, StreamChunk, Target, UnifiedRequest, UnifiedResponse, Usage};

/// Generated in its own module: the world re-exports WIT type names (`StreamChunk`, ...) that
/// clash with the schema's.
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        // A failing key-value backend traps the call (the WIT functions have no error to
        // give it), so the plugin's `on_error` policy decides; see `CallError::Kv`.
        imports: { "switchyard:plugin/kv": trappable },
    });
}

pub use generated::switchyard::plugin::types as wit;
use generated::switchyard::plugin::{clock, kv, log, metrics};
pub use generated::{Plugin, PluginPre};

// ---------------------------------------------------------------------------------------------
// Imports.

impl wit::Host for HostState {}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) {
        let p = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(plugin = p, "{message}"),
            log::Level::Debug => tracing::debug!(plugin = p, "{message}"),
            log::Level::Info => tracing::info!(plugin = p, "{message}"),
            log::Level::Warn => tracing::warn!(plugin = p, "{message}"),
            log::Level::Error => tracing::error!(plugin = p, "{message}"),
        }
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        now_ms()
    }
    fn monotonic_ns(&mut self) -> u64 {
        super::runtime::monotonic_ns()
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// A store failure of the backend traps; a refusal of the operation itself (`increment` of
/// a non-integer) is the plugin's to handle. Each operation may wait at most what is left of
/// the call's deadline.
fn kv_trap(e: super::kv::KvError) -> wasmtime::Error {
    wasmtime::Error::new(e)
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.kv.get(&key, self.time_left()).map_err(kv_trap)
    }
    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> wasmtime::Result<()> {
        self.kv
            .set(&key, value, ttl(ttl_ms), self.time_left())
            .map_err(kv_trap)
    }
    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, String>> {
        match self
            .kv
            .increment(&key, delta, ttl(ttl_ms), self.time_left())
        {
            Ok(n) => Ok(Ok(n)),
            Err(e) if !e.is_backend() => Ok(Err(e.to_string())),
            Err(e) => Err(kv_trap(e)),
        }
    }
    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<bool> {
        self.kv
            .compare_and_swap(
                &key,
                expected.as_deref(),
                value,
                ttl(ttl_ms),
                self.time_left(),
            )
            .map_err(kv_trap)
    }
    fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        self.kv.delete(&key, self.time_left()).map_err(kv_trap)
    }
}

impl metrics::Host for HostState {
    fn declare(
        &mut self,
        name: String,
        help: String,
        kind: metrics::MetricKind,
        label_names: Vec<String>,
        buckets: Option<Vec<f64>>,
    ) -> Result<metrics::MetricId, String> {
        let kind = match kind {
            metrics::MetricKind::Counter => super::metrics::Kind::Counter,
            metrics::MetricKind::Gauge => super::metrics::Kind::Gauge,
            metrics::MetricKind::Histogram => super::metrics::Kind::Histogram,
        };
        self.metrics
            .declare(&name, &help, kind, &label_names, buckets)
    }
    fn record_value(&mut self, id: metrics::MetricId, label_values: Vec<String>, value: f64) {
        self.metrics.record(id, &label_values, value)
    }
    fn set_gauge(&mut self, id: metrics::MetricId, label_values: Vec<String>, value: f64) {
        self.metrics.set_gauge(id, &label_values, value)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Requests.

fn kind_to_wit(k: RequestKind) -> wit::RequestKind {
    match k {
        RequestKind::Chat => wit::RequestKind::Chat,
        RequestKind::Completion => wit::RequestKind::Completion,
        RequestKind::Embedding => wit::RequestKind::Embedding,
    }
}

/// A message's text: the content string or its text parts joined with "\n".
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Strings of a `prompt` / `input` field (a string or an array of strings).
fn string_or_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Where in the body a text a plugin sees comes from, so a changed text goes back there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextAt {
    /// `messages[i].content` (a string, or its text parts).
    Content(usize),
    /// `messages[i].name`.
    Name(usize),
    /// `messages[i].tool_calls[j].function.arguments`.
    ToolArguments(usize, usize),
    /// `messages[i].function_call.arguments` (the legacy function call).
    FunctionArguments(usize),
    /// `prompt` (a string: 0) or `prompt[i]`.
    Prompt(usize),
    /// `input` (a string: 0) or `input[i]`.
    Input(usize),
}

/// Every text of the body that a provider receives, in the order plugins see them as
/// `messages`: for chat one entry per message (its role and content text), then one per
/// message `name` (role "name") and per tool-call or function-call `arguments` (role
/// "tool-arguments"); for completions each prompt string (role "user"); for embeddings
/// each input string (role "input"). A guard that reads `messages` therefore sees every
/// text, not only the contents.
fn text_slots(req: &UnifiedRequest) -> Vec<(&str, String, TextAt)> {
    match req.kind {
        RequestKind::Chat => {
            let Some(ms) = req.body.get("messages").and_then(Value::as_array) else {
                return Vec::new();
            };
            let mut out = Vec::with_capacity(ms.len());
            for (i, m) in ms.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                out.push((role, content_text(m.get("content")), TextAt::Content(i)));
            }
            for (i, m) in ms.iter().enumerate() {
                if let Some(n) = m.get("name").and_then(Value::as_str) {
                    out.push(("name", n.to_owned(), TextAt::Name(i)));
                }
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        if let Some(a) = c.pointer("/function/arguments").and_then(Value::as_str) {
                            out.push(("tool-arguments", a.to_owned(), TextAt::ToolArguments(i, j)));
                        }
                    }
                }
                if let Some(a) = m
                    .pointer("/function_call/arguments")
                    .and_then(Value::as_str)
                {
                    out.push(("tool-arguments", a.to_owned(), TextAt::FunctionArguments(i)));
                }
            }
            out
        }
        RequestKind::Completion => string_or_list(req.body.get("prompt"))
            .into_iter()
            .enumerate()
            .map(|(i, t)| ("user", t, TextAt::Prompt(i)))
            .collect(),
        RequestKind::Embedding => string_or_list(req.body.get("input"))
            .into_iter()
            .enumerate()
            .map(|(i, t)| ("input", t, TextAt::Input(i)))
            .collect(),
    }
}

fn messages_of(req: &UnifiedRequest) -> Vec<wit::Message> {
    text_slots(req)
        .into_iter()
        .map(|(role, text, _)| wit::Message {
            role: role.to_owned(),
            text,
        })
        .collect()
}

/// Write a plugin's changed text back where it came from.
fn set_text(body: &mut Map<String, Value>, at: TextAt, text: &str) {
    fn msg(body: &mut Map<String, Value>, i: usize) -> Option<&mut Value> {
        body.get_mut("messages")
            .and_then(Value::as_array_mut)
            .and_then(|a| a.get_mut(i))
    }
    let put = |slot: Option<&mut Value>| {
        if let Some(v @ Value::String(_)) = slot {
            *v = Value::String(text.to_owned());
        }
    };
    match at {
        TextAt::Content(i) => {
            if let Some(m) = msg(body, i) {
                set_content_text(m, text);
            }
        }
        TextAt::Name(i) => put(msg(body, i).and_then(|m| m.get_mut("name"))),
        TextAt::ToolArguments(i, j) => put(msg(body, i)
            .and_then(|m| m.get_mut("tool_calls"))
            .and_then(|c| c.get_mut(j))
            .and_then(|c| c.pointer_mut("/function/arguments"))),
        TextAt::FunctionArguments(i) => {
            put(msg(body, i).and_then(|m| m.pointer_mut("/function_call/arguments")))
        }
        TextAt::Prompt(i) => set_string_or_list(body.get_mut("prompt"), i, text),
        TextAt::Input(i) => set_string_or_list(body.get_mut("input"), i, text),
    }
}

fn u32_of(body: &Map<String, Value>, k: &str) -> Option<u32> {
    body.get(k).and_then(Value::as_u64).map(|v| v as u32)
}

fn params_of(req: &UnifiedRequest) -> wit::Params {
    let b = &req.body;
    wit::Params {
        max_tokens: u32_of(b, "max_tokens").or_else(|| u32_of(b, "max_completion_tokens")),
        temperature: b.get("temperature").and_then(Value::as_f64),
        top_p: b.get("top_p").and_then(Value::as_f64),
        n: u32_of(b, "n"),
        stream: req.stream,
        user: b.get("user").and_then(Value::as_str).map(str::to_owned),
    }
}

fn metadata_of(body: &Map<String, Value>) -> Vec<(String, String)> {
    body.get("metadata")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The WIT request for `req`; `body_json` is passed in so the caller serialises once.
pub fn request_to_wit(ctx: &HookContext, req: &UnifiedRequest, body_json: String) -> wit::Request {
    wit::Request {
        id: ctx.request_id.to_string(),
        kind: kind_to_wit(req.kind),
        provider: req.target.provider.clone(),
        model: req.target.model.clone(),
        messages: messages_of(req),
        params: params_of(req),
        client_key: ctx.client_key.to_string(),
        metadata: metadata_of(&req.body),
        headers: ctx
            .headers
            .iter()
            .map(|(n, v)| wit::Header {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
        attempt: ctx.attempt,
        body_json,
    }
}

pub fn request_info(ctx: &HookContext, req: &UnifiedRequest) -> wit::RequestInfo {
    wit::RequestInfo {
        id: ctx.request_id.to_string(),
        kind: kind_to_wit(req.kind),
        provider: req.target.provider.clone(),
        model: req.target.model.clone(),
        client_key: ctx.client_key.to_string(),
        attempt: ctx.attempt,
        received_at_ms: ctx.received_at_ms,
    }
}

fn set_content_text(msg: &mut Value, text: &str) {
    let Some(obj) = msg.as_object_mut() else {
        return;
    };
    match obj.get_mut("content") {
        Some(Value::Array(parts)) => {
            // Keep non-text parts (images) in place; the first text part carries the text.
            let mut seen = false;
            parts.retain_mut(|p| {
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    return true;
                }
                if seen {
                    return false;
                }
                seen = true;
                p["text"] = Value::String(text.to_owned());
                true
            });
            if !seen {
                parts.push(serde_json::json!({"type": "text", "text": text}));
            }
        }
        _ => {
            obj.insert("content".into(), Value::String(text.to_owned()));
        }
    }
}

fn set_string_or_list(slot: Option<&mut Value>, i: usize, text: &str) {
    match slot {
        Some(Value::String(s)) if i == 0 => *s = text.to_owned(),
        Some(Value::Array(a)) => {
            if let Some(x) = a.get_mut(i) {
                *x = Value::String(text.to_owned());
            }
        }
        _ => {}
    }
}

fn set_opt(body: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    match v {
        Some(v) => {
            body.insert(k.to_owned(), v);
        }
        None => {
            body.remove(k);
        }
    }
}

/// Apply a `continue-with` request onto `req`. `sent` is what the plugin was given, so only
/// the fields the plugin changed are written back (a body-json edit is not undone by the
/// unchanged typed fields).
pub fn apply_request(
    req: &mut UnifiedRequest,
    sent: &wit::Request,
    new: wit::Request,
) -> Result<(), String> {
    if new.body_json != sent.body_json {
        match serde_json::from_str::<Value>(&new.body_json) {
            Ok(Value::Object(m)) => {
                req.body = m;
                req.ingress.edited = true;
                if let Some(s) = req.body.get("stream").and_then(Value::as_bool) {
                    req.stream = s;
                }
            }
            _ => return Err("continue-with: body-json is not a JSON object".into()),
        }
    }
    req.set_target(Target {
        provider: new.provider,
        model: new.model,
    });
    let changed: Vec<(usize, &str)> = new
        .messages
        .iter()
        .enumerate()
        .filter(|(i, m)| sent.messages.get(*i).is_none_or(|s| s.text != m.text))
        .map(|(i, m)| (i, m.text.as_str()))
        .collect();
    if !changed.is_empty() {
        req.ingress.edited = true;
        let slots: Vec<TextAt> = text_slots(req).into_iter().map(|(_, _, at)| at).collect();
        for (i, text) in changed {
            if let Some(at) = slots.get(i) {
                set_text(&mut req.body, *at, text);
            }
        }
    }
    let (s, n) = (&sent.params, &new.params);
    if (s.max_tokens, s.temperature, s.top_p, s.n, &s.user)
        != (n.max_tokens, n.temperature, n.top_p, n.n, &n.user)
    {
        req.ingress.edited = true;
    }
    let b = &mut req.body;
    if s.max_tokens != n.max_tokens {
        let key = if b.contains_key("max_completion_tokens") && !b.contains_key("max_tokens") {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        set_opt(b, key, n.max_tokens.map(Value::from));
    }
    if s.temperature != n.temperature {
        set_opt(b, "temperature", n.temperature.map(Value::from));
    }
    if s.top_p != n.top_p {
        set_opt(b, "top_p", n.top_p.map(Value::from));
    }
    if s.n != n.n {
        set_opt(b, "n", n.n.map(Value::from));
    }
    if s.user != n.user {
        set_opt(b, "user", n.user.clone().map(Value::from));
    }
    if s.stream != n.stream {
        b.insert("stream".into(), Value::Bool(n.stream));
        req.stream = n.stream;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Responses and errors.

fn usage_to_wit(u: Usage) -> wit::Usage {
    wit::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    }
}

fn usage_from_wit(u: wit::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    }
}

fn choice_texts(body: &Map<String, Value>) -> Vec<String> {
    body.get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    c.pointer("/message/content")
                        .and_then(Value::as_str)
                        .or_else(|| c.get("text").and_then(Value::as_str))
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn apply_choice_texts(body: &mut Map<String, Value>, kind: RequestKind, texts: &[String]) {
    let Some(cs) = body.get_mut("choices").and_then(Value::as_array_mut) else {
        if kind == RequestKind::Embedding || texts.is_empty() {
            return;
        }
        let choices = texts
            .iter()
            .enumerate()
            .map(|(i, t)| choice_json(kind, i, t))
            .collect();
        body.insert("choices".into(), Value::Array(choices));
        return;
    };
    for (i, t) in texts.iter().enumerate() {
        match cs.get_mut(i) {
            Some(c) => {
                if kind == RequestKind::Completion || c.get("text").is_some() {
                    c["text"] = Value::String(t.clone());
                } else if let Some(m) = c.get_mut("message").and_then(Value::as_object_mut) {
                    m.insert("content".into(), Value::String(t.clone()));
                } else {
                    c["message"] = serde_json::json!({"role": "assistant", "content": t});
                }
            }
            None => cs.push(choice_json(kind, i, t)),
        }
    }
}

fn choice_json(kind: RequestKind, i: usize, t: &str) -> Value {
    if kind == RequestKind::Completion {
        serde_json::json!({"index": i, "text": t, "finish_reason": "stop"})
    } else {
        serde_json::json!({"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"})
    }
}

pub fn response_to_wit(
    req: &UnifiedRequest,
    resp: &UnifiedResponse,
    upstream_latency_us: u64,
) -> wit::Response {
    wit::Response {
        status: resp.status,
        provider: req.target.provider.clone(),
        model: req.target.model.clone(),
        choices: choice_texts(&resp.body),
        usage: resp.usage.map(usage_to_wit),
        upstream_latency_us,
        body_json: serde_json::to_string(&resp.body).unwrap_or_default(),
    }
}

/// A plugin's response as the gateway's. `base` is the response the plugin was shown (if
/// any): when the plugin did not touch `body-json`, that body is reused without a parse.
pub fn response_from_wit(
    req: &UnifiedRequest,
    r: wit::Response,
    base: Option<(&wit::Response, &UnifiedResponse)>,
) -> UnifiedResponse {
    let mut body = match base {
        Some((sent, orig)) if sent.body_json == r.body_json => orig.body.clone(),
        _ => match serde_json::from_str::<Value>(&r.body_json) {
            Ok(Value::Object(m)) => m,
            _ => {
                let mut m = Map::new();
                let object = match req.kind {
                    RequestKind::Chat => "chat.completion",
                    RequestKind::Completion => "text_completion",
                    RequestKind::Embedding => "list",
                };
                m.insert("object".into(), Value::from(object));
                m.insert("model".into(), Value::from(r.model.clone()));
                m.insert("created".into(), Value::from(now_ms() / 1000));
                m
            }
        },
    };
    let changed_texts = match base {
        Some((sent, _)) => sent.choices != r.choices,
        None => true,
    };
    if changed_texts {
        apply_choice_texts(&mut body, req.kind, &r.choices);
    }
    let usage = r.usage.map(usage_from_wit);
    if let Some(u) = usage {
        body.insert("usage".into(), u.to_openai());
    }
    UnifiedResponse {
        status: r.status,
        usage: usage.or_else(|| body.get("usage").and_then(Usage::from_openai)),
        body,
    }
}

pub fn error_to_wit(req: &UnifiedRequest, e: &GatewayError) -> wit::Error {
    wit::Error {
        status: e.status.as_u16(),
        kind: match e.fault {
            Fault::Client => wit::ErrorKind::Client,
            Fault::Upstream => wit::ErrorKind::Upstream,
            Fault::Plugin => wit::ErrorKind::Plugin,
            Fault::Gateway => wit::ErrorKind::Gateway,
        },
        message: e.message.clone(),
        code: e.code.as_ref().map(|c| c.to_string()),
        provider: req.target.provider.clone(),
        model: req.target.model.clone(),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub fn error_from_wit(plugin: &str, e: wit::Error) -> GatewayError {
    let mut g = GatewayError::plugin(plugin, status(e.status), e.message);
    g.fault = match e.kind {
        wit::ErrorKind::Client => Fault::Client,
        wit::ErrorKind::Upstream => Fault::Upstream,
        wit::ErrorKind::Plugin => Fault::Plugin,
        wit::ErrorKind::Gateway => Fault::Gateway,
    };
    if g.fault == Fault::Upstream {
        g.retryable = g.status == StatusCode::TOO_MANY_REQUESTS || g.status.is_server_error();
    }
    if let Some(c) = e.code {
        g = g.with_code(c);
    }
    g
}

pub fn rejection_to_error(plugin: &str, r: wit::Rejection) -> GatewayError {
    let mut g = GatewayError::plugin(plugin, status(r.status), r.message);
    if let Some(c) = r.code {
        g = g.with_code(c);
    }
    g.retry_after = r.retry_after_secs.map(|s| Duration::from_secs(s.into()));
    g.allow_fallbacks = r.allow_fallbacks;
    g
}

// ---------------------------------------------------------------------------------------------
// Stream chunks.

pub fn chunk_to_wit(chunk: &StreamChunk, sequence: u32, last: bool) -> wit::StreamChunk {
    let choices = chunk
        .body
        .get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| wit::ChunkChoice {
                    index: c
                        .get("index")
                        .and_then(Value::as_u64)
                        .map(|v| v as u32)
                        .unwrap_or(i as u32),
                    text: c
                        .pointer("/delta/content")
                        .and_then(Value::as_str)
                        .or_else(|| c.get("text").and_then(Value::as_str))
                        .map(str::to_owned),
                    finish_reason: c
                        .get("finish_reason")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default();
    wit::StreamChunk {
        sequence,
        choices,
        usage: chunk.usage().map(usage_to_wit),
        last,
        body_json: serde_json::to_string(&chunk.body).unwrap_or_default(),
    }
}

pub fn apply_chunk(
    chunk: &mut StreamChunk,
    kind: RequestKind,
    sent: &wit::StreamChunk,
    new: wit::StreamChunk,
) -> Result<(), String> {
    if new.body_json != sent.body_json {
        match serde_json::from_str::<Value>(&new.body_json) {
            Ok(Value::Object(m)) => chunk.body = m,
            _ => return Err("on-chunk: body-json is not a JSON object".into()),
        }
    }
    for (pos, c) in new.choices.iter().enumerate() {
        let before = sent.choices.iter().find(|s| s.index == c.index);
        if before.is_some_and(|b| b.text == c.text) {
            continue;
        }
        let text = c.text.clone().unwrap_or_default();
        let cs = match chunk.body.get_mut("choices").and_then(Value::as_array_mut) {
            Some(cs) => cs,
            None => {
                chunk
                    .body
                    .insert("choices".into(), Value::Array(Vec::new()));
                chunk.body["choices"].as_array_mut().expect("just inserted")
            }
        };
        let slot = cs
            .iter()
            .position(|x| x.get("index").and_then(Value::as_u64) == Some(c.index as u64))
            .or(if pos < cs.len() { Some(pos) } else { None });
        let target = match slot {
            Some(i) => &mut cs[i],
            None => {
                cs.push(serde_json::json!({"index": c.index, "finish_reason": c.finish_reason}));
                cs.last_mut().expect("just pushed")
            }
        };
        if kind == RequestKind::Completion || target.get("text").is_some() {
            target["text"] = Value::String(text);
        } else {
            match target.get_mut("delta").and_then(Value::as_object_mut) {
                Some(d) => {
                    d.insert("content".into(), Value::String(text));
                }
                None => target["delta"] = serde_json::json!({ "content": text }),
            }
        }
    }
    Ok(())
}
