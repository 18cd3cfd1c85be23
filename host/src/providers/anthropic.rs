//! Anthropic's Messages API. Sits behind [`build`](super::build) for `anthropic` providers:
//! chat requests are translated to `/messages` bodies, and answers, stream events and
//! errors back to the OpenAI shape, so clients and plugins only ever see OpenAI JSON. The
//! translation is `pub(crate)` because Claude on Vertex AI ([`vertex`](super::vertex))
//! speaks the same format behind another address.

// Helpers return the `GatewayError` the `Provider` trait returns; errors are the cold
// path, and boxing them here would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::providers::openai::{build_upstream_error, error_text, parse_object, to_bytes};
use crate::providers::{Auth, Frame, Provider, StreamDecoder, StreamEvent, UpstreamRequest};
use crate::schema::{Dialect, RequestKind, StreamChunk, UnifiedRequest, UnifiedResponse, Usage};

/// Anthropic requires `max_tokens`; OpenAI clients usually leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// One Anthropic provider.
pub struct Anthropic {
    name: String,
    base_url: String,
    version: HeaderValue,
}

impl Anthropic {
    pub fn new(cfg: &ProviderConfig) -> Self {
        Anthropic {
            name: cfg.name.clone(),
            base_url: cfg.network.base_url.clone(),
            // Validation does not look at the version's characters; a bad one falls back to
            // the default rather than failing every request.
            version: HeaderValue::from_str(&cfg.anthropic_version)
                .unwrap_or_else(|_| HeaderValue::from_static("2023-06-01")),
        }
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kind: RequestKind) -> bool {
        kind == RequestKind::Chat
    }

    fn auth(&self) -> Auth {
        Auth::Header {
            name: HeaderName::from_static("x-api-key"),
            prefix: "",
        }
    }

    fn build_request(&self, req: &UnifiedRequest) -> Result<UpstreamRequest, GatewayError> {
        if req.kind != RequestKind::Chat {
            return Err(GatewayError::bad_request(
                None,
                format!(
                    "provider {} does not support {} requests",
                    self.name,
                    req.kind.as_str()
                ),
            ));
        }
        let body = anthropic_body(req)?;
        let mut up =
            UpstreamRequest::post_json(format!("{}/messages", self.base_url), to_bytes(&body)?);
        up.headers.insert("anthropic-version", self.version.clone());
        if req.ingress.dialect == Dialect::Anthropic {
            for (name, value) in &req.ingress.headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    up.headers.insert(n, v);
                }
            }
        }
        Ok(up)
    }

    fn parse_response(
        &self,
        req: &UnifiedRequest,
        body: &[u8],
    ) -> Result<UnifiedResponse, GatewayError> {
        let msg = parse_object(&self.name, body)?;
        Ok(UnifiedResponse::ok(from_anthropic(&msg, &req.target.model)))
    }

    fn stream_decoder(&self, req: &UnifiedRequest) -> Box<dyn StreamDecoder> {
        Box::new(AnthropicStreamDecoder::new(&self.name, &req.target.model))
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        parse_anthropic_error(status, headers, body)
    }
}

/// A non-2xx Anthropic answer (`{"type": "error", "error": {"type", "message"}}`) as an
/// error that keeps its status, message and type. Shared with Claude on Vertex AI.
pub(crate) fn parse_anthropic_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> GatewayError {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let error_type = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let message = message.unwrap_or_else(|| error_text(status, body));
    build_upstream_error(status, headers, message, error_type, None, None)
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI chat → Anthropic messages

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(Some(param), message)
}

/// Fields [`to_anthropic`] writes (or leaves out on purpose) from the unified body.
const MODELLED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
];

/// The `/messages` body for `req`. A request that came in as Anthropic Messages is sent as
/// the client wrote it (model and `stream` set by the gateway), so what the unified body
/// does not model (`cache_control`, `thinking`, `top_k`, server tools) arrives unchanged;
/// once a plugin changed the request, the unified body is translated and only the
/// top-level unmodelled fields are carried over.
pub(crate) fn anthropic_body(req: &UnifiedRequest) -> Result<Map<String, Value>, GatewayError> {
    let native = match &req.ingress.native {
        Some(n) if req.ingress.dialect == Dialect::Anthropic => n,
        _ => return to_anthropic(req),
    };
    if req.ingress.edited {
        let mut out = to_anthropic(req)?;
        for (k, v) in native.iter() {
            if !MODELLED.contains(&k.as_str()) && !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        return Ok(out);
    }
    let mut out = (**native).clone();
    out.insert("model".into(), Value::String(req.target.model.clone()));
    if req.stream {
        out.insert("stream".into(), Value::Bool(true));
    } else {
        out.remove("stream");
    }
    Ok(out)
}

/// Translate an OpenAI chat body to an Anthropic `/messages` body. Claude on Vertex AI
/// sends the same body, with the model moved to the URL.
pub(crate) fn to_anthropic(req: &UnifiedRequest) -> Result<Map<String, Value>, GatewayError> {
    let src = &req.body;
    let mut out = Map::new();
    out.insert("model".into(), Value::String(req.target.model.clone()));

    let messages = match src.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(bad("messages", "`messages` must be an array")),
        None => return Err(bad("messages", "`messages` is required")),
    };
    let (system, messages) = translate_messages(messages)?;
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n")));
    }
    out.insert("messages".into(), Value::Array(messages));

    let max_tokens = match src
        .get("max_tokens")
        .filter(|v| !v.is_null())
        .map(|v| ("max_tokens", v))
        .or_else(|| {
            src.get("max_completion_tokens")
                .filter(|v| !v.is_null())
                .map(|v| ("max_completion_tokens", v))
        }) {
        Some((param, v)) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(param, format!("`{param}` must be a positive integer")))?,
        None => DEFAULT_MAX_TOKENS,
    };
    out.insert("max_tokens".into(), max_tokens.into());

    for field in ["temperature", "top_p"] {
        match src.get(field) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => {
                out.insert(field.into(), v.clone());
            }
            Some(_) => return Err(bad(field, format!("`{field}` must be a number"))),
        }
    }

    match src.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            let mut seqs = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let s = s
                    .as_str()
                    .ok_or_else(|| bad(&format!("stop[{i}]"), "stop sequences must be strings"))?;
                seqs.push(Value::String(s.to_owned()));
            }
            if !seqs.is_empty() {
                out.insert("stop_sequences".into(), Value::Array(seqs));
            }
        }
        Some(_) => {
            return Err(bad(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    }

    if let Some(n) = src.get("n").and_then(Value::as_u64) {
        if n != 1 {
            return Err(bad(
                "n",
                "Anthropic models return one choice; `n` must be 1",
            ));
        }
    }

    if req.stream {
        out.insert("stream".into(), Value::Bool(true));
    }

    if let Some(user) = src.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }

    if let Some(tools) = src.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| bad("tools", "`tools` must be an array"))?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(translate_tools(tools)?));
        }
    }

    let mut tool_choice = match src.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(v) => Some(translate_tool_choice(v)?),
    };
    if src.get("parallel_tool_calls") == Some(&Value::Bool(false)) && out.contains_key("tools") {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        // Anthropic rejects the flag on `none`, where it means nothing anyway.
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(choice) = tool_choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(out)
}

/// System prompt parts and the merged user/assistant messages.
fn translate_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    // (role, content blocks); consecutive same-role messages share one entry because
    // Anthropic requires user and assistant turns to alternate.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let msg = msg
            .as_object()
            .ok_or_else(|| bad(&at, "each message must be an object"))?;
        let role = msg
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{at}.role"), "each message needs a string `role`"))?;
        let content = msg.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = text_only(content, &format!("{at}.content"))?;
                system.push(text);
                continue;
            }
            "user" => {
                if content.is_null() {
                    return Err(bad(
                        &format!("{at}.content"),
                        "user messages need `content`",
                    ));
                }
                ("user", content_blocks(content, &format!("{at}.content"))?)
            }
            "assistant" => {
                let mut blocks = content_blocks(content, &format!("{at}.content"))?;
                if let Some(calls) = msg.get("tool_calls").filter(|v| !v.is_null()) {
                    blocks.extend(tool_use_blocks(calls, &format!("{at}.tool_calls"))?);
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = msg
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad(
                            &format!("{at}.tool_call_id"),
                            "tool messages need a string `tool_call_id`",
                        )
                    })?;
                let text = if content.is_null() {
                    String::new()
                } else {
                    text_only(content, &format!("{at}.content"))?
                };
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                )
            }
            other => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("unsupported role `{other}` for Anthropic"),
                ))
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .filter(|(_, blocks)| !blocks.is_empty())
        .map(|(role, blocks)| json!({"role": role, "content": blocks}))
        .collect();
    if messages.is_empty() {
        return Err(bad(
            "messages",
            "at least one user or assistant message is required",
        ));
    }
    Ok((system, messages))
}

/// Text of a string or an array of text parts (system and tool messages).
pub(crate) fn text_only(content: &Value, at: &str) -> Result<String, GatewayError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part.get("text").and_then(Value::as_str) {
                    Some(t) if part.get("type").and_then(Value::as_str) == Some("text") => {
                        texts.push(t)
                    }
                    _ => {
                        return Err(bad(
                            &format!("{at}[{j}]"),
                            "only text parts are allowed here",
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(bad(
            at,
            "content must be a string or an array of text parts",
        )),
    }
}

/// Content blocks of a user or assistant message. Empty text is dropped: Anthropic
/// rejects empty text blocks, and assistants with tool calls often send `""`.
fn content_blocks(content: &Value, at: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pat = format!("{at}[{j}]");
                let kind = part
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&format!("{pat}.type"), "content parts need a `type`"))?;
                match kind {
                    "text" => {
                        let text = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                            bad(&format!("{pat}.text"), "text parts need a string `text`")
                        })?;
                        if !text.is_empty() {
                            blocks.push(json!({"type": "text", "text": text}));
                        }
                    }
                    "image_url" => blocks.push(image_block(part, &pat)?),
                    other => {
                        return Err(bad(
                            &format!("{pat}.type"),
                            format!("content part type `{other}` is not supported by Anthropic"),
                        ))
                    }
                }
            }
            Ok(blocks)
        }
        _ => Err(bad(at, "content must be a string or an array of parts")),
    }
}

fn image_block(part: &Value, at: &str) -> Result<Value, GatewayError> {
    let image = part.get("image_url");
    let url = image
        .and_then(|i| i.get("url"))
        .or(image)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{at}.image_url.url"), "image parts need a `url`"))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let media_type = meta.strip_suffix(";base64").filter(|m| !m.is_empty());
        return match media_type {
            Some(media_type) if !data.is_empty() => Ok(json!({
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            })),
            _ => Err(bad(
                &format!("{at}.image_url.url"),
                "data URLs must look like `data:image/png;base64,<data>`",
            )),
        };
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(bad(
        &format!("{at}.image_url.url"),
        "image URLs must be http(s) or base64 data URLs",
    ))
}

fn tool_use_blocks(calls: &Value, at: &str) -> Result<Vec<Value>, GatewayError> {
    let calls = calls
        .as_array()
        .ok_or_else(|| bad(at, "`tool_calls` must be an array"))?;
    let mut blocks = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let cat = format!("{at}[{j}]");
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{cat}.id"), "tool calls need a string `id`"))?;
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad(
                    &format!("{cat}.function.name"),
                    "tool calls need a function name",
                )
            })?;
        let input = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
                bad(
                    &format!("{cat}.function.arguments"),
                    format!("tool call arguments are not valid JSON: {e}"),
                )
            })?,
            // Some clients send the arguments already parsed.
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(bad(
                    &format!("{cat}.function.arguments"),
                    "tool call arguments must be a JSON string",
                ))
            }
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

fn translate_tools(tools: &[Value]) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("tools[{i}].type"),
                "only `function` tools are supported by Anthropic",
            ));
        }
        let f = tool.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("tools[{i}].function.name"), "tools need a name"))?;
        let mut t = Map::new();
        t.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = f.and_then(|f| f.get("description")).and_then(Value::as_str) {
            t.insert("description".into(), Value::String(d.to_owned()));
        }
        let schema = f
            .and_then(|f| f.get("parameters"))
            .filter(|p| p.is_object())
            .cloned()
            // Anthropic requires a schema; OpenAI allows tools without parameters.
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        t.insert("input_schema".into(), schema);
        out.push(Value::Object(t));
    }
    Ok(out)
}

fn translate_tool_choice(choice: &Value) -> Result<Value, GatewayError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            other => Err(bad("tool_choice", format!("unknown tool_choice `{other}`"))),
        },
        Value::Object(obj) => obj
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|name| json!({"type": "tool", "name": name}))
            .ok_or_else(|| {
                bad(
                    "tool_choice.function.name",
                    "tool_choice needs a function name",
                )
            }),
        _ => Err(bad(
            "tool_choice",
            "`tool_choice` must be a string or an object",
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Response: Anthropic message → OpenAI chat.completion

/// Seconds since the epoch, for `created`; Cohere's answers have no timestamp either.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        None => Value::Null,
        Some("max_tokens") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("refusal") => "content_filter".into(),
        // end_turn, stop_sequence, pause_turn and reasons newer than this code.
        Some(_) => "stop".into(),
    }
}

/// OpenAI usage from Anthropic's. Cached input counts as prompt tokens, as OpenAI counts
/// it: Anthropic reports cache reads and writes separately from `input_tokens`.
fn usage_of(u: Option<&Value>) -> (u32, u32) {
    let get = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let input = get("input_tokens")
        .saturating_add(get("cache_creation_input_tokens"))
        .saturating_add(get("cache_read_input_tokens"));
    (input, get("output_tokens"))
}

fn usage_value(prompt: u32, completion: u32) -> Value {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
    }
    .to_openai()
}

pub(crate) fn from_anthropic(msg: &Map<String, Value>, fallback_model: &str) -> Map<String, Value> {
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for block in msg
        .get("content")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                has_text = true;
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": input.to_string(),
                    },
                }));
            }
            // thinking and other blocks have no OpenAI chat equivalent.
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if has_text {
            Value::String(text)
        } else {
            Value::Null
        },
    );
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let (prompt, completion) = usage_of(msg.get("usage"));
    let model = msg
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(fallback_model);
    let out = json!({
        "id": msg.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(msg.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage_value(prompt, completion),
    });
    match out {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Streaming: Anthropic events → OpenAI chunks

/// Keeps what Anthropic sends once (id, model, input tokens) to stamp on every chunk, and
/// maps content block indexes to OpenAI tool call indexes.
pub(crate) struct AnthropicStreamDecoder {
    provider: String,
    id: String,
    model: String,
    created: u64,
    input_tokens: u32,
    output_tokens: u32,
    /// Content block index → tool call index, for `input_json_delta`s.
    tool_blocks: HashMap<u64, usize>,
}

impl AnthropicStreamDecoder {
    pub(crate) fn new(provider: &str, model: &str) -> Self {
        AnthropicStreamDecoder {
            provider: provider.to_owned(),
            id: String::new(),
            model: model.to_owned(),
            created: now_secs(),
            input_tokens: 0,
            output_tokens: 0,
            tool_blocks: HashMap::new(),
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> StreamEvent {
        self.chunk_body(json!({
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }))
    }

    fn chunk_body(&self, extra: Value) -> StreamEvent {
        let mut body = Map::new();
        body.insert("id".into(), Value::String(self.id.clone()));
        body.insert("object".into(), "chat.completion.chunk".into());
        body.insert("created".into(), self.created.into());
        body.insert("model".into(), Value::String(self.model.clone()));
        if let Value::Object(extra) = extra {
            body.extend(extra);
        }
        StreamEvent::Chunk(StreamChunk { body })
    }

    fn stream_error(&self, err: Option<&Value>) -> GatewayError {
        let error_type = err
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let message = err
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map_or_else(
                || format!("provider {} reported an error mid-stream", self.provider),
                str::to_owned,
            );
        // The stream already answered 200; the status the same error would have had
        // up front decides retryability and what the client sees if nothing was sent yet.
        let status = match error_type.as_deref() {
            Some("overloaded_error") => {
                StatusCode::from_u16(529).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Some("rate_limit_error") => StatusCode::TOO_MANY_REQUESTS,
            Some("api_error") => StatusCode::INTERNAL_SERVER_ERROR,
            Some("invalid_request_error") => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        build_upstream_error(status, &HeaderMap::new(), message, error_type, None, None)
    }
}

impl StreamDecoder for AnthropicStreamDecoder {
    fn decode(&mut self, frame: &Frame) -> Result<Vec<StreamEvent>, GatewayError> {
        let frame = frame.sse(&self.provider)?;
        let (event, data) = (frame.event.as_str(), frame.data.as_str());
        if data.trim().is_empty() {
            return Ok(vec![StreamEvent::Skip]);
        }
        let ev = parse_object(&self.provider, data.as_bytes())?;
        // Every event's data repeats its name in `type`; trust it over the SSE field, which
        // proxies sometimes drop.
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or(event);
        let out = match kind {
            "message_start" => {
                let msg = ev.get("message");
                if let Some(id) = msg.and_then(|m| m.get("id")).and_then(Value::as_str) {
                    id.clone_into(&mut self.id);
                }
                if let Some(model) = msg.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    model.clone_into(&mut self.model);
                }
                let (input, output) = usage_of(msg.and_then(|m| m.get("usage")));
                self.input_tokens = input;
                self.output_tokens = output;
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            "content_block_start" => {
                let block = ev.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let tool_index = self.tool_blocks.len();
                        self.tool_blocks.insert(index, tool_index);
                        let b = block.unwrap_or(&Value::Null);
                        vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": tool_index,
                                "id": b.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {
                                    "name": b.get("name").cloned().unwrap_or(Value::Null),
                                    "arguments": "",
                                },
                            }]}),
                            Value::Null,
                        )]
                    }
                    Some("text") => match block
                        .and_then(|b| b.get("text"))
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        Some(t) => vec![self.chunk(json!({"content": t}), Value::Null)],
                        None => vec![StreamEvent::Skip],
                    },
                    _ => vec![StreamEvent::Skip],
                }
            }
            "content_block_delta" => {
                let delta = ev.get("delta");
                let text = |k: &str| {
                    delta
                        .and_then(|d| d.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                };
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        vec![self.chunk(json!({"content": text("text")}), Value::Null)]
                    }
                    Some("input_json_delta") => {
                        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                        match self.tool_blocks.get(&index) {
                            Some(&tool_index) => vec![self.chunk(
                                json!({"tool_calls": [{
                                    "index": tool_index,
                                    "function": {"arguments": text("partial_json")},
                                }]}),
                                Value::Null,
                            )],
                            None => vec![StreamEvent::Skip],
                        }
                    }
                    // thinking and signature deltas have no OpenAI chat equivalent.
                    _ => vec![StreamEvent::Skip],
                }
            }
            "message_delta" => {
                let usage = ev.get("usage");
                if let Some(n) = usage
                    .and_then(|u| u.get("output_tokens"))
                    .and_then(Value::as_u64)
                {
                    self.output_tokens = u32::try_from(n).unwrap_or(u32::MAX);
                }
                // Newer API versions report (possibly updated) input counts here too.
                if usage.and_then(|u| u.get("input_tokens")).is_some() {
                    self.input_tokens = usage_of(usage).0;
                }
                match ev
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    Some(reason) => vec![self.chunk(json!({}), finish_reason(Some(reason)))],
                    None => vec![StreamEvent::Skip],
                }
            }
            "message_stop" => vec![
                self.chunk_body(json!({
                    "choices": [],
                    "usage": usage_value(self.input_tokens, self.output_tokens),
                })),
                StreamEvent::Done,
            ],
            "error" => return Err(self.stream_error(ev.get("error"))),
            // ping, content_block_stop and event types newer than this code.
            _ => vec![StreamEvent::Skip],
        };
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::providers::openai::tests::{provider_config, request};
    use crate::providers::sse;
    use crate::upstream::framing::sse::SseParser;
    use http::header::{AUTHORIZATION, RETRY_AFTER};
    use std::time::Duration;

    fn anthropic() -> Anthropic {
        Anthropic::new(&provider_config(
            ProviderKind::Anthropic,
            "https://api.anthropic.com/v1",
        ))
    }

    fn translate(body: Value) -> Result<Value, GatewayError> {
        let req = request(RequestKind::Chat, "anthropic", body);
        let up = anthropic().build_request(&req)?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    #[test]
    fn anthropic_requests_go_as_written_until_a_plugin_edits_them() {
        let native = json!({"model": "claude-x", "max_tokens": 10, "top_k": 3,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]});
        let mut req = request(
            RequestKind::Chat,
            "anthropic",
            json!({"model": "claude-sonnet-4", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        );
        req.ingress = crate::schema::Ingress {
            dialect: Dialect::Anthropic,
            native: Some(std::sync::Arc::new(native.as_object().unwrap().clone())),
            headers: vec![("anthropic-beta".into(), "prompt-caching-2024-07-31".into())],
            edited: false,
            raw: None,
        };
        let up = anthropic().build_request(&req).unwrap();
        let mut expected = native.clone();
        expected["model"] = json!("claude-sonnet-4");
        assert_eq!(serde_json::from_slice::<Value>(&up.body).unwrap(), expected);
        assert_eq!(up.headers["anthropic-beta"], "prompt-caching-2024-07-31");
        // A plugin changed the text: the unified body is what goes, with the top-level
        // fields it does not model.
        req.body["messages"][0]["content"][0]["text"] = json!("[REDACTED]");
        req.ingress.edited = true;
        let body: Value =
            serde_json::from_slice(&anthropic().build_request(&req).unwrap().body).unwrap();
        assert_eq!(
            body["messages"][0]["content"][0],
            json!({"type": "text", "text": "[REDACTED]"})
        );
        assert_eq!(body["top_k"], 3);
        assert_eq!(body["thinking"]["budget_tokens"], 1024);
        assert_eq!(body["model"], "claude-sonnet-4");
    }

    #[test]
    fn supports_chat_only() {
        let a = anthropic();
        assert!(a.supports(RequestKind::Chat));
        assert!(!a.supports(RequestKind::Completion));
        assert!(!a.supports(RequestKind::Embedding));
        let req = request(RequestKind::Embedding, "anthropic", json!({"model": "m"}));
        assert_eq!(
            a.build_request(&req).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn request_headers_and_url() {
        let req = request(
            RequestKind::Chat,
            "anthropic",
            json!({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}),
        );
        let a = anthropic();
        let up = a.build_request(&req).unwrap();
        assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
        assert!(matches!(a.auth(), Auth::Header { name, prefix: "" } if name == "x-api-key"));
        assert_eq!(up.headers["anthropic-version"], "2023-06-01");
        assert_eq!(up.headers["content-type"], "application/json");
        assert!(up.headers.get(AUTHORIZATION).is_none());
    }

    #[test]
    fn simple_translation() {
        let body = translate(json!({
            "model": "claude-sonnet-4",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "there"}]},
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-1",
            "stream": true,
            "frequency_penalty": 1,
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4",
                "system": "Be brief.\nBe kind.",
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "text", "text": "there"},
                ]}],
                "max_tokens": 4096,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "stream": true,
                "metadata": {"user_id": "u-1"},
            })
        );
    }

    #[test]
    fn max_tokens_sources() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let b = translate(json!({"model": "m", "messages": msgs, "max_tokens": 10})).unwrap();
        assert_eq!(b["max_tokens"], 10);
        let b = translate(json!({"model": "m", "messages": msgs, "max_completion_tokens": 20}))
            .unwrap();
        assert_eq!(b["max_tokens"], 20);
        let e = translate(json!({"model": "m", "messages": msgs, "max_tokens": -1})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let b = translate(json!({"model": "m", "messages": msgs, "stop": ["a", "b"]})).unwrap();
        assert_eq!(b["stop_sequences"], json!(["a", "b"]));
    }

    #[test]
    fn images_tools_and_tool_results() {
        let body = translate(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "time"}},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        }))
        .unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
                    {"type": "text", "text": "thanks"},
                ]},
            ])
        );
        assert_eq!(
            body["tools"],
            json!([
                {"name": "weather", "description": "Weather by city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "time", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn tool_choice_forms() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        for (choice, expected) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (json!("required"), json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!({"type": "tool", "name": "f"}),
            ),
        ] {
            let b =
                translate(json!({"model": "m", "messages": msgs, "tool_choice": choice})).unwrap();
            assert_eq!(b["tool_choice"], expected);
        }
        let e = translate(json!({"model": "m", "messages": msgs, "tool_choice": "sometimes"}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let cases = [
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": "hi"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"content": "c"}]}),
                "messages[2].role",
            ),
            (json!({"model": "m", "messages": [1]}), "messages[0]"),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}], "tools": [{"type": "code_interpreter"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}], "n": 2}),
                "n",
            ),
        ];
        for (body, param) in cases {
            let e = translate(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn response_translation() {
        let req = request(RequestKind::Chat, "anthropic", json!({"model": "claude"}));
        let body = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [
                {"type": "text", "text": "Let me check. "},
                {"type": "text", "text": "One moment."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 30},
        });
        let resp = anthropic()
            .parse_response(&req, body.to_string().as_bytes())
            .unwrap();
        let b = Value::Object(resp.body);
        assert_eq!(b["id"], "msg_01");
        assert_eq!(b["object"], "chat.completion");
        assert!(b["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(b["model"], "claude-sonnet-4-20250514");
        let choice = &b["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], "Let me check. One moment.");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_1");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        assert_eq!(
            resp.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 30,
                total_tokens: 42
            })
        );

        for (reason, expected) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
        ] {
            let body = json!({"id": "m", "content": [], "stop_reason": reason, "usage": {}});
            let resp = anthropic()
                .parse_response(&req, body.to_string().as_bytes())
                .unwrap();
            assert_eq!(resp.body["choices"][0]["finish_reason"], expected);
            assert_eq!(resp.body["choices"][0]["message"]["content"], Value::Null);
            assert_eq!(resp.body["model"], "claude");
        }

        let e = anthropic().parse_response(&req, b"<html>").unwrap_err();
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
    }

    /// A recorded-style stream: text, then a tool call whose arguments arrive in pieces.
    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-20250514\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn stream_decoding_with_tool_use() {
        let req = request(
            RequestKind::Chat,
            "anthropic",
            json!({"model": "claude", "stream": true}),
        );
        let mut d = anthropic().stream_decoder(&req);
        let mut parser = SseParser::default();
        let mut chunks = Vec::new();
        let mut done = false;
        for frame in parser.push(STREAM.as_bytes()).unwrap() {
            for ev in d.decode(&crate::providers::Frame::Sse(frame)).unwrap() {
                match ev {
                    StreamEvent::Chunk(c) => {
                        assert!(!done, "chunk after Done");
                        chunks.push(Value::Object(c.body));
                    }
                    StreamEvent::Done => done = true,
                    StreamEvent::Skip => {}
                }
            }
        }
        assert!(done);
        for c in &chunks {
            assert_eq!(c["id"], "msg_1");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "claude-sonnet-4-20250514");
            assert!(c["created"].is_u64());
        }
        let deltas: Vec<(Value, Value)> = chunks
            .iter()
            .filter(|c| !c["choices"].as_array().unwrap().is_empty())
            .map(|c| {
                assert_eq!(c["choices"][0]["index"], 0);
                (
                    c["choices"][0]["delta"].clone(),
                    c["choices"][0]["finish_reason"].clone(),
                )
            })
            .collect();
        assert_eq!(
            deltas,
            vec![
                (json!({"role": "assistant", "content": ""}), Value::Null),
                (json!({"content": "Checking"}), Value::Null),
                (
                    json!({"tool_calls": [{"index": 0, "id": "toolu_9", "type": "function",
                        "function": {"name": "weather", "arguments": ""}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                    Value::Null
                ),
                (json!({}), json!("tool_calls")),
            ]
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 25, "completion_tokens": 42, "total_tokens": 67})
        );
    }

    #[test]
    fn stream_errors() {
        let req = request(RequestKind::Chat, "anthropic", json!({"model": "claude"}));
        let mut d = anthropic().stream_decoder(&req);
        assert!(matches!(
            &d.decode(&sse("ping", r#"{"type":"ping"}"#)).unwrap()[..],
            [StreamEvent::Skip]
        ));
        let e = d
            .decode(&sse(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ))
            .unwrap_err();
        assert_eq!(e.message, "Overloaded");
        assert_eq!(e.type_str(), "overloaded_error");
        assert_eq!(e.status.as_u16(), 529);
        assert!(e.retryable);
        assert_eq!(e.fault, crate::error::Fault::Upstream);

        let e = d
            .decode(&sse("content_block_delta", "{not json"))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
    }

    #[test]
    fn error_parsing() {
        let a = anthropic();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("12"));
        let status = StatusCode::from_u16(529).unwrap();
        let e = a.parse_error(
            status,
            &headers,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.status.as_u16(), 529);
        assert_eq!(e.message, "Overloaded");
        assert_eq!(e.type_str(), "overloaded_error");
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(12)));

        let e = a.parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#,
        );
        assert!(!e.retryable);
        assert_eq!(e.type_str(), "invalid_request_error");
        assert_eq!(e.message, "max_tokens: too big");

        let e = a.parse_error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"upstream connect error",
        );
        assert!(e.retryable);
        assert_eq!(e.message, "upstream connect error");
    }
}
