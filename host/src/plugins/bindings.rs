//! The WIT contract in Rust: the one place that runs `bindgen!`, once per shipped version of
//! `switchyard:plugin` (`wit/0.1.0`, `wit/0.2.0`), the host side of the plugin's imports (log,
//! clock, kv, metrics), and the conversions between the gateway's schema types and the WIT
//! records a plugin sees.
//!
//! Every 0.1.0 record is unchanged in 0.2.0, so the conversions are written once
//! ([`conversions!`]) and instantiated for each version's types: a 0.1.0 plugin sees exactly
//! what it saw before 0.2.0 existed. What only 0.2.0 has (header edits, response headers,
//! the read-set, `stream-ended`) is in [`v2`].

use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};

use super::runtime::HostState;
use crate::error::{Fault, GatewayError};
use crate::plugins::HookContext;
use crate::schema::{
    HeaderEdit, RequestKind, StreamChunk, Target, UnifiedRequest, UnifiedResponse, Usage,
};

/// Generated in their own modules: a world re-exports WIT type names (`StreamChunk`, ...)
/// that clash with the schema's, and the two versions' names clash with each other.
mod generated_v1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "plugin",
        // A failing key-value backend traps the call (the WIT functions have no error to
        // give it), so the plugin's `on_error` policy decides; see `CallError::Kv`.
        imports: { "switchyard:plugin/kv": trappable },
    });
}
mod generated_v2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "plugin",
        // A failing key-value backend traps the call (the WIT functions have no error to
        // give it), so the plugin's `on_error` policy decides; see `CallError::Kv`.
        imports: { "switchyard:plugin/kv": trappable },
    });
}

pub use generated_v1::switchyard::plugin::types as wit;
pub use generated_v1::{Plugin, PluginPre};
pub use generated_v2::switchyard::plugin::types as wit2;
pub use generated_v2::{Plugin as Plugin2, PluginPre as PluginPre2};

/// The `switchyard:plugin` versions this host loads, newest first (the order it tries them).
pub const WIT_VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];

/// Which request parts a plugin reads (WIT 0.2.0 `request-parts`; a 0.1.0 plugin reads all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    pub body_json: bool,
    pub messages: bool,
    pub metadata: bool,
    pub headers: bool,
}

impl Reads {
    pub const ALL: Reads = Reads {
        body_json: true,
        messages: true,
        metadata: true,
        headers: true,
    };

    pub fn names(self) -> Vec<&'static str> {
        [
            (self.body_json, "body-json"),
            (self.messages, "messages"),
            (self.metadata, "metadata"),
            (self.headers, "headers"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Imports: the same host functions behind each version's interfaces.

macro_rules! host_imports {
    ($gen:ident) => {
        const _: () = {
            use $gen::switchyard::plugin::{clock, kv, log, metrics, types};

            impl types::Host for HostState {}

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

            impl kv::Host for HostState {
                fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
                    self.kv.get(&key, self.time_left()).map_err(kv_trap)
                }
                fn set(
                    &mut self,
                    key: String,
                    value: Vec<u8>,
                    ttl_ms: Option<u64>,
                ) -> wasmtime::Result<()> {
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
                fn record_value(
                    &mut self,
                    id: metrics::MetricId,
                    label_values: Vec<String>,
                    value: f64,
                ) {
                    self.metrics.record(id, &label_values, value)
                }
                fn set_gauge(
                    &mut self,
                    id: metrics::MetricId,
                    label_values: Vec<String>,
                    value: f64,
                ) {
                    self.metrics.set_gauge(id, &label_values, value)
                }
            }
        };
    };
}

host_imports!(generated_v1);
host_imports!(generated_v2);

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// A store failure of the backend traps; a refusal of the operation itself (`increment` of
/// a non-integer) is the plugin's to handle. Each operation may wait at most what is left of
/// the call's deadline.
fn kv_trap(e: super::kv::KvError) -> wasmtime::Error {
    wasmtime::Error::new(e)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Shared helpers (no WIT types).

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

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// What one pre-hook decided, applied as far as the request goes.
pub enum PreStep {
    Continue,
    /// A `continue-with` was applied: the WIT request must be built again.
    Changed,
    Respond(UnifiedResponse),
    Reject(GatewayError),
    /// The plugin's own error, or a change the host cannot apply.
    GuestError(String),
}

// ---------------------------------------------------------------------------------------------
// Conversions of the records every version shares, written once.

/// The conversions over the `wit` types in scope where it is invoked (`v1`, `v2`).
macro_rules! conversions {
    () => {
        fn kind_to_wit(k: RequestKind) -> wit::RequestKind {
            match k {
                RequestKind::Chat => wit::RequestKind::Chat,
                RequestKind::Completion => wit::RequestKind::Completion,
                RequestKind::Embedding => wit::RequestKind::Embedding,
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

        /// The WIT request for `req` with the parts in `reads` (the others empty); `body_json` is
        /// passed in so the caller serialises once ("" when not read).
        pub fn request_to_wit(
            ctx: &HookContext,
            req: &UnifiedRequest,
            body_json: String,
            reads: Reads,
        ) -> wit::Request {
            wit::Request {
                id: ctx.request_id.to_string(),
                kind: kind_to_wit(req.kind),
                provider: req.target.provider.clone(),
                model: req.target.model.clone(),
                messages: if reads.messages {
                    messages_of(req)
                } else {
                    Vec::new()
                },
                params: params_of(req),
                client_key: ctx.client_key.to_string(),
                metadata: if reads.metadata {
                    metadata_of(&req.body)
                } else {
                    Vec::new()
                },
                headers: if reads.headers {
                    ctx.headers
                        .iter()
                        .map(|(n, v)| wit::Header {
                            name: n.clone(),
                            value: v.clone(),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
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
        /// `pre-hook`'s decision applied to `req` (a `continue-with` is applied here), with
        /// its name for the hook's span.
        pub fn pre_step(
            req: &mut UnifiedRequest,
            sent: &wit::Request,
            action: wit::PreAction,
            plugin: &str,
        ) -> (&'static str, PreStep) {
            match action {
                wit::PreAction::Continue => ("continue", PreStep::Continue),
                wit::PreAction::ContinueWith(new) => (
                    "continue_with",
                    match apply_request(req, sent, new) {
                        Ok(()) => PreStep::Changed,
                        Err(msg) => PreStep::GuestError(msg),
                    },
                ),
                wit::PreAction::Respond(r) => (
                    "respond",
                    PreStep::Respond(response_from_wit(req, r, None)),
                ),
                wit::PreAction::Reject(r) => (
                    "reject",
                    PreStep::Reject(rejection_to_error(plugin, r)),
                ),
            }
        }

        /// What the post-hooks see of `outcome`.
        pub fn outcome_to_wit(
            req: &UnifiedRequest,
            outcome: &Result<UnifiedResponse, GatewayError>,
            latency_us: u64,
        ) -> wit::Outcome {
            match outcome {
                Ok(r) => wit::Outcome::Response(response_to_wit(req, r, latency_us)),
                Err(e) => wit::Outcome::Error(error_to_wit(req, e)),
            }
        }

        pub fn post_label(a: &wit::PostAction) -> &'static str {
            match a {
                wit::PostAction::Keep => "keep",
                wit::PostAction::Replace(_) => "replace",
            }
        }

        /// Apply a post-hook's decision; true when `outcome` changed. `sent` is what the
        /// plugin was shown.
        pub fn apply_post(
            req: &UnifiedRequest,
            outcome: &mut Result<UnifiedResponse, GatewayError>,
            sent: &wit::Outcome,
            action: wit::PostAction,
            plugin: &str,
        ) -> Result<bool, String> {
            match action {
                wit::PostAction::Keep => Ok(false),
                wit::PostAction::Replace(wit::Outcome::Response(r)) => {
                    let new = match (&*outcome, sent) {
                        (Ok(orig), wit::Outcome::Response(before)) => {
                            response_from_wit(req, r, Some((before, orig)))
                        }
                        _ => response_from_wit(req, r, None),
                    };
                    *outcome = Ok(new);
                    Ok(true)
                }
                wit::PostAction::Replace(wit::Outcome::Error(e)) => {
                    *outcome = Err(error_from_wit(plugin, e));
                    Ok(true)
                }
                #[allow(unreachable_patterns)]
                wit::PostAction::Replace(_) => {
                    Err("replace: only a response or an error can replace an outcome".into())
                }
            }
        }

        /// An `on-chunk` answer applied to `chunk`: the state to keep, and whether the chunk
        /// changed (or why the change cannot be applied).
        pub fn apply_chunk_output(
            chunk: &mut StreamChunk,
            kind: RequestKind,
            sent: &wit::StreamChunk,
            out: wit::ChunkOutput,
        ) -> (Vec<u8>, Result<bool, String>) {
            let applied = match out.action {
                wit::ChunkAction::Keep => Ok(false),
                wit::ChunkAction::Replace(new) => apply_chunk(chunk, kind, sent, new).map(|()| true),
            };
            (out.state, applied)
        }
    };
}

/// WIT 0.1.0.
pub mod v1 {
    use super::wit;
    #[allow(unused_imports)]
    use super::*;

    conversions!();
}

/// WIT 0.2.0: the shared conversions plus what only 0.2.0 has.
pub mod v2 {
    use super::wit2 as wit;
    #[allow(unused_imports)]
    use super::*;

    conversions!();

    impl From<wit::RequestParts> for Reads {
        fn from(p: wit::RequestParts) -> Reads {
            Reads {
                body_json: p.contains(wit::RequestParts::BODY_JSON),
                messages: p.contains(wit::RequestParts::MESSAGES),
                metadata: p.contains(wit::RequestParts::METADATA),
                headers: p.contains(wit::RequestParts::HEADERS),
            }
        }
    }

    /// 0.2.0's hook flags as the host's (0.1.0's, which are the same three).
    pub fn hooks(h: wit::Hooks) -> super::wit::Hooks {
        let mut out = super::wit::Hooks::empty();
        for (a, b) in [
            (wit::Hooks::PRE, super::wit::Hooks::PRE),
            (wit::Hooks::POST, super::wit::Hooks::POST),
            (wit::Hooks::CHUNK, super::wit::Hooks::CHUNK),
        ] {
            if h.contains(a) {
                out |= b;
            }
        }
        out
    }

    /// A plugin's upstream header edits, checked: an edit of a credential or framing
    /// header is refused (the whole list then is, and the call counts as the plugin's
    /// error).
    pub fn header_edits(edits: Vec<wit::HeaderEdit>) -> Result<Vec<HeaderEdit>, String> {
        edits
            .into_iter()
            .map(|e| match e {
                wit::HeaderEdit::Set(h) => {
                    let (n, v) = header(&h.name, &h.value, "upstream-headers")?;
                    Ok(HeaderEdit::Set(n, v))
                }
                wit::HeaderEdit::Remove(name) => {
                    let n = header_name(&name, "upstream-headers")?;
                    Ok(HeaderEdit::Remove(n))
                }
            })
            .collect()
    }

    /// A plugin's response headers, checked like [`header_edits`]; the gateway's own
    /// `x-switchyard-*` headers are refused too.
    pub fn response_headers(
        hs: Vec<wit::Header>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        hs.into_iter()
            .map(|h| {
                if h.name.to_ascii_lowercase().starts_with("x-switchyard-") {
                    return Err(format!(
                        "response-headers: {} is the gateway's own header",
                        h.name
                    ));
                }
                header(&h.name, &h.value, "response-headers")
            })
            .collect()
    }

    /// The `stream-ended` outcome.
    pub fn stream_ended(req: &UnifiedRequest, end: &crate::plugins::StreamEnded) -> wit::Outcome {
        use crate::plugins::StreamEnding;
        wit::Outcome::StreamEnded(wit::StreamEnded {
            end: match &end.end {
                StreamEnding::Complete => wit::StreamEnd::Complete,
                StreamEnding::UpstreamError(m) => wit::StreamEnd::UpstreamError(m.clone()),
                StreamEnding::PluginError(m) => wit::StreamEnd::PluginError(m.clone()),
                StreamEnding::ClientGone => wit::StreamEnd::ClientGone,
            },
            status: end.status,
            provider: req.target.provider.clone(),
            model: req.target.model.clone(),
            usage: end.usage.map(usage_to_wit),
            chunks: end.chunks,
        })
    }
}

/// Headers no plugin may set or remove: the provider's credentials and what the gateway
/// frames a request or response with.
const RESERVED_HEADERS: [&str; 16] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "anthropic-version",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "cookie",
    "set-cookie",
];

fn header_name(name: &str, what: &str) -> Result<HeaderName, String> {
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || lower.starts_with("x-amz-")
        || lower.starts_with(':')
    {
        return Err(format!("{what}: {name} may not be changed by a plugin"));
    }
    HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("{what}: {name:?} is not a header name"))
}

fn header(name: &str, value: &str, what: &str) -> Result<(HeaderName, HeaderValue), String> {
    let n = header_name(name, what)?;
    let v = HeaderValue::from_str(value)
        .map_err(|_| format!("{what}: the value of {name} is not a header value"))?;
    Ok((n, v))
}
