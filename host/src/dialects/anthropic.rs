//! Anthropic's Messages API as a client dialect (`POST /v1/messages`,
//! `POST /anthropic/v1/messages`): the request read into the unified chat body, the answer,
//! its stream events and errors written back in Anthropic's shapes, so the official
//! `anthropic` SDKs work by changing only their base URL.
//!
//! Fields the unified body cannot carry (`cache_control`, `thinking`, `top_k`, server tools,
//! documents) are kept in the client's original body, which an Anthropic-format target gets
//! instead of a re-translation (see `providers::anthropic::anthropic_body`). Elsewhere a
//! cache hint is dropped (it changes no answer) and a thinking block of an earlier turn is
//! left out; a request that needs the others is refused with the field's path.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{bad, first_choice, json_type, sse_event, StreamWriter};
use crate::error::GatewayError;
use crate::schema::{StreamChunk, UnifiedResponse, Usage};

type Checked<T> = Result<T, GatewayError>;

/// The unified body of an Anthropic request, and the first field that only an
/// Anthropic-format target can serve (its path and why), if any.
#[derive(Debug)]
pub struct Translated {
    pub body: Map<String, Value>,
    pub native_only: Option<(String, String)>,
}

/// Gateway fields (not Anthropic's) that are read from the body like on the OpenAI routes.
pub const GATEWAY_FIELDS: &[&str] = &["provider", "fallbacks"];

/// Read an Anthropic Messages request into the unified chat body, checking every field the
/// gateway reads (Anthropic's own rules: `max_tokens` required, roles `user`/`assistant`).
pub fn to_unified(src: &Map<String, Value>) -> Checked<Translated> {
    let mut t = Translator::default();
    let mut out = Map::new();
    match src.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {
            out.insert("model".into(), Value::String(m.clone()));
        }
        None | Some(Value::Null) => return Err(bad("model", "Field required")),
        Some(other) => {
            return Err(bad(
                "model",
                format!("must be a non-empty string, got {}", json_type(other)),
            ))
        }
    }
    for k in GATEWAY_FIELDS {
        if let Some(v) = src.get(*k) {
            out.insert((*k).to_owned(), v.clone());
        }
    }
    match src.get("max_tokens") {
        None | Some(Value::Null) => return Err(bad("max_tokens", "Field required")),
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|v| v >= 1 && v <= u64::from(u32::MAX)) =>
        {
            out.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        Some(other) => {
            return Err(bad(
                "max_tokens",
                format!(
                    "must be a whole number from 1 to {}, got {}",
                    u32::MAX,
                    describe(other)
                ),
            ))
        }
    }
    let mut messages = Vec::new();
    match src.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                let at = format!("system.{i}");
                let b = object(&at, b)?;
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(string(&format!("{at}.text"), b.get("text"))?),
                    Some(other) => {
                        return Err(bad(
                            &format!("{at}.type"),
                            format!("system blocks must be of type 'text', got '{other}'"),
                        ))
                    }
                    None => return Err(bad(&format!("{at}.type"), "Field required")),
                }
            }
            if !texts.is_empty() {
                messages.push(json!({"role": "system", "content": texts.join("\n")}));
            }
        }
        Some(other) => {
            return Err(bad(
                "system",
                format!(
                    "must be a string or a list of text blocks, got {}",
                    json_type(other)
                ),
            ))
        }
    }
    let list = match src.get("messages") {
        None | Some(Value::Null) => return Err(bad("messages", "Field required")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(bad("messages", "at least one message is required"))
        }
        Some(Value::Array(m)) => m,
        Some(other) => {
            return Err(bad(
                "messages",
                format!("must be a list of messages, got {}", json_type(other)),
            ))
        }
    };
    for (i, m) in list.iter().enumerate() {
        t.message(&format!("messages.{i}"), m, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));

    for key in ["temperature", "top_p"] {
        match src.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
                out.insert(key.into(), Value::Number(n.clone()));
            }
            Some(other) => {
                return Err(bad(
                    key,
                    format!("must be a number, got {}", json_type(other)),
                ))
            }
        }
    }
    match src.get("top_k") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.is_u64() => {
            t.native("top_k", "OpenAI-style APIs have no top_k")
        }
        Some(other) => {
            return Err(bad(
                "top_k",
                format!("must be a non-negative integer, got {}", describe(other)),
            ))
        }
    }
    match src.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, s) in items.iter().enumerate() {
                if !s.is_string() {
                    return Err(bad(
                        &format!("stop_sequences.{i}"),
                        format!("must be a string, got {}", json_type(s)),
                    ));
                }
            }
            if !items.is_empty() {
                out.insert("stop".into(), Value::Array(items.clone()));
            }
        }
        Some(other) => {
            return Err(bad(
                "stop_sequences",
                format!("must be a list of strings, got {}", json_type(other)),
            ))
        }
    }
    match src.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("stream".into(), Value::Bool(*b));
        }
        Some(other) => {
            return Err(bad(
                "stream",
                format!("must be a boolean, got {}", json_type(other)),
            ))
        }
    }
    match src.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => match m.get("user_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(u)) => {
                out.insert("user".into(), Value::String(u.clone()));
            }
            Some(other) => {
                return Err(bad(
                    "metadata.user_id",
                    format!("must be a string, got {}", json_type(other)),
                ))
            }
        },
        Some(other) => {
            return Err(bad(
                "metadata",
                format!("must be an object, got {}", json_type(other)),
            ))
        }
    }
    let has_tools = t.tools(src.get("tools"), &mut out)?;
    t.tool_choice(src.get("tool_choice"), has_tools, &mut out)?;
    for key in ["thinking", "service_tier", "container", "mcp_servers"] {
        if src.get(key).is_some_and(|v| !v.is_null()) {
            t.native(key, "it is an Anthropic feature");
        }
    }
    Ok(Translated {
        body: out,
        native_only: t.native_only,
    })
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => json_type(other).to_owned(),
    }
}

fn object<'a>(at: &str, v: &'a Value) -> Checked<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| bad(at, format!("must be an object, got {}", json_type(v))))
}

fn string(at: &str, v: Option<&Value>) -> Checked<String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(bad(at, "Field required")),
        Some(other) => Err(bad(
            at,
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

#[derive(Default)]
struct Translator {
    native_only: Option<(String, String)>,
}

impl Translator {
    fn native(&mut self, path: &str, why: &str) {
        if self.native_only.is_none() {
            self.native_only = Some((path.to_owned(), why.to_owned()));
        }
    }

    fn message(&mut self, at: &str, m: &Value, out: &mut Vec<Value>) -> Checked<()> {
        let m = object(at, m)?;
        let role = match m.get("role") {
            Some(Value::String(r)) if r == "user" || r == "assistant" => r.as_str(),
            Some(Value::String(r)) => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("must be 'user' or 'assistant', got '{r}' (the system prompt is the top-level 'system' field)"),
                ))
            }
            None | Some(Value::Null) => return Err(bad(&format!("{at}.role"), "Field required")),
            Some(other) => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("must be a string, got {}", json_type(other)),
                ))
            }
        };
        let content_at = format!("{at}.content");
        let blocks = match m.get("content") {
            Some(Value::String(s)) => {
                out.push(json!({"role": role, "content": s}));
                return Ok(());
            }
            Some(Value::Array(b)) if b.is_empty() && role == "user" => {
                return Err(bad(
                    &content_at,
                    "user messages must have at least one content block",
                ))
            }
            Some(Value::Array(b)) => b,
            None | Some(Value::Null) => return Err(bad(&content_at, "Field required")),
            Some(other) => {
                return Err(bad(
                    &content_at,
                    format!(
                        "must be a string or a list of content blocks, got {}",
                        json_type(other)
                    ),
                ))
            }
        };
        let mut parts: Vec<Value> = Vec::new();
        let mut tool_calls: Vec<Value> = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let bat = format!("{content_at}.{j}");
            let b = object(&bat, b)?;
            let kind = match b.get("type") {
                Some(Value::String(k)) => k.as_str(),
                None | Some(Value::Null) => {
                    return Err(bad(&format!("{bat}.type"), "Field required"))
                }
                Some(other) => {
                    return Err(bad(
                        &format!("{bat}.type"),
                        format!("must be a string, got {}", json_type(other)),
                    ))
                }
            };
            match (role, kind) {
                (_, "text") => {
                    let text = string(&format!("{bat}.text"), b.get("text"))?;
                    parts.push(json!({"type": "text", "text": text}));
                }
                ("user", "image") => parts.push(image(&bat, b)?),
                ("user", "tool_result") => {
                    let id = string(&format!("{bat}.tool_use_id"), b.get("tool_use_id"))?;
                    let (text, images) = tool_result_content(&bat, b.get("content"))?;
                    let text = if b.get("is_error") == Some(&Value::Bool(true)) {
                        format!("Error: {text}")
                    } else {
                        text
                    };
                    // A tool message answers the assistant's call; what the user says next
                    // follows it, so text written before the result moves after it.
                    out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                    parts.extend(images);
                }
                ("assistant", "tool_use") => {
                    let id = string(&format!("{bat}.id"), b.get("id"))?;
                    let name = string(&format!("{bat}.name"), b.get("name"))?;
                    let input = match b.get("input") {
                        Some(v @ Value::Object(_)) => v.to_string(),
                        None | Some(Value::Null) => "{}".to_owned(),
                        Some(other) => {
                            return Err(bad(
                                &format!("{bat}.input"),
                                format!("must be an object, got {}", json_type(other)),
                            ))
                        }
                    };
                    tool_calls.push(json!({"id": id, "type": "function",
                        "function": {"name": name, "arguments": input}}));
                }
                // The model's own reasoning from an earlier turn: only Claude reads it back.
                ("assistant", "thinking" | "redacted_thinking") => {}
                ("user", "document" | "search_result")
                | ("assistant", "server_tool_use" | "web_search_tool_result") => {
                    self.native(
                        &format!("{bat}.type"),
                        "only Anthropic models read this block",
                    );
                }
                (_, other) => {
                    let allowed = if role == "user" {
                        "'text', 'image', 'tool_result' or 'document'"
                    } else {
                        "'text', 'tool_use', 'thinking' or 'redacted_thinking'"
                    };
                    return Err(bad(
                        &format!("{bat}.type"),
                        format!("{role} content blocks must be {allowed}, got '{other}'"),
                    ));
                }
            }
        }
        if role == "assistant" {
            let text: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("");
            let mut msg = Map::new();
            msg.insert("role".into(), "assistant".into());
            msg.insert(
                "content".into(),
                if text.is_empty() && !tool_calls.is_empty() {
                    Value::Null
                } else {
                    Value::String(text)
                },
            );
            if !tool_calls.is_empty() {
                msg.insert("tool_calls".into(), Value::Array(tool_calls));
            }
            out.push(Value::Object(msg));
        } else if !parts.is_empty() || !blocks.iter().any(|b| b["type"] == "tool_result") {
            out.push(json!({"role": "user", "content": parts}));
        }
        Ok(())
    }

    fn tools(&mut self, tools: Option<&Value>, out: &mut Map<String, Value>) -> Checked<bool> {
        let list = match tools {
            None | Some(Value::Null) => return Ok(false),
            Some(Value::Array(l)) => l,
            Some(other) => {
                return Err(bad(
                    "tools",
                    format!("must be a list of tools, got {}", json_type(other)),
                ))
            }
        };
        let mut translated = Vec::with_capacity(list.len());
        for (i, tool) in list.iter().enumerate() {
            let at = format!("tools.{i}");
            let tool = object(&at, tool)?;
            match tool.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(k)) if k == "custom" => {}
                Some(Value::String(k)) => {
                    // web_search_20250305, bash_20250124, text_editor_...: run by Anthropic.
                    self.native(
                        &format!("{at}.type"),
                        &format!("'{k}' is a tool Anthropic runs itself"),
                    );
                    continue;
                }
                Some(other) => {
                    return Err(bad(
                        &format!("{at}.type"),
                        format!("must be a string, got {}", json_type(other)),
                    ))
                }
            }
            let name = string(&format!("{at}.name"), tool.get("name"))?;
            let schema = match tool.get("input_schema") {
                Some(s @ Value::Object(_)) => s.clone(),
                None | Some(Value::Null) => {
                    return Err(bad(&format!("{at}.input_schema"), "Field required"))
                }
                Some(other) => {
                    return Err(bad(
                        &format!("{at}.input_schema"),
                        format!("must be a JSON schema object, got {}", json_type(other)),
                    ))
                }
            };
            let mut f = Map::new();
            f.insert("name".into(), Value::String(name));
            match tool.get("description") {
                None | Some(Value::Null) => {}
                Some(Value::String(d)) => {
                    f.insert("description".into(), Value::String(d.clone()));
                }
                Some(other) => {
                    return Err(bad(
                        &format!("{at}.description"),
                        format!("must be a string, got {}", json_type(other)),
                    ))
                }
            }
            f.insert("parameters".into(), schema);
            translated.push(json!({"type": "function", "function": f}));
        }
        let any = !translated.is_empty();
        if any {
            out.insert("tools".into(), Value::Array(translated));
        }
        Ok(any)
    }

    fn tool_choice(
        &mut self,
        choice: Option<&Value>,
        has_tools: bool,
        out: &mut Map<String, Value>,
    ) -> Checked<()> {
        let c = match choice {
            None | Some(Value::Null) => return Ok(()),
            Some(v) => object("tool_choice", v)?,
        };
        let mapped = match c.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = string("tool_choice.name", c.get("name"))?;
                json!({"type": "function", "function": {"name": name}})
            }
            Some(other) => {
                return Err(bad(
                    "tool_choice.type",
                    format!("must be 'auto', 'any', 'tool' or 'none', got '{other}'"),
                ))
            }
            None => return Err(bad("tool_choice.type", "Field required")),
        };
        match c.get("disable_parallel_tool_use") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(d)) => {
                if *d && has_tools {
                    out.insert("parallel_tool_calls".into(), Value::Bool(false));
                }
            }
            Some(other) => {
                return Err(bad(
                    "tool_choice.disable_parallel_tool_use",
                    format!("must be a boolean, got {}", json_type(other)),
                ))
            }
        }
        if has_tools || mapped == "none" {
            out.insert("tool_choice".into(), mapped);
        }
        Ok(())
    }
}

/// An image block as an OpenAI `image_url` part (a data URL for base64 sources).
fn image(at: &str, b: &Map<String, Value>) -> Checked<Value> {
    let src_at = format!("{at}.source");
    let src = match b.get("source") {
        Some(s) => object(&src_at, s)?,
        None => return Err(bad(&src_at, "Field required")),
    };
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = string(&format!("{src_at}.media_type"), src.get("media_type"))?;
            let data = string(&format!("{src_at}.data"), src.get("data"))?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => string(&format!("{src_at}.url"), src.get("url"))?,
        Some(other) => {
            return Err(bad(
                &format!("{src_at}.type"),
                format!("must be 'base64' or 'url', got '{other}'"),
            ))
        }
        None => return Err(bad(&format!("{src_at}.type"), "Field required")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result's text, and its images as user parts (a tool message carries text only).
fn tool_result_content(at: &str, content: Option<&Value>) -> Checked<(String, Vec<Value>)> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(s)) => Ok((s.clone(), Vec::new())),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                let bat = format!("{at}.content.{k}");
                let b = object(&bat, b)?;
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(string(&format!("{bat}.text"), b.get("text"))?),
                    Some("image") => images.push(image(&bat, b)?),
                    Some(other) => {
                        return Err(bad(
                            &format!("{bat}.type"),
                            format!("tool result blocks must be 'text' or 'image', got '{other}'"),
                        ))
                    }
                    None => return Err(bad(&format!("{bat}.type"), "Field required")),
                }
            }
            Ok((texts.join("\n"), images))
        }
        Some(other) => Err(bad(
            &format!("{at}.content"),
            format!(
                "must be a string or a list of blocks, got {}",
                json_type(other)
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Answers: unified chat.completion → Anthropic message

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn tool_input(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            serde_json::from_str(s).unwrap_or_else(|_| json!({}))
        }
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

/// The unified response as an Anthropic `message`; `model` is the one the client asked
/// for when the answer names none.
pub fn response(resp: &UnifiedResponse, model: &str) -> Map<String, Value> {
    let body = &resp.body;
    let choice = first_choice(body);
    let msg = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    match msg.and_then(|m| m.get("content")) {
        Some(Value::String(s)) if !s.is_empty() => content.push(json!({"type": "text", "text": s})),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    content.push(json!({"type": "text", "text": t}));
                }
            }
        }
        _ => {}
    }
    for call in msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let f = call.get("function");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": f.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
            "input": tool_input(f.and_then(|f| f.get("arguments"))),
        }));
    }
    let usage = resp.usage.unwrap_or_default();
    let out = json!({
        "id": message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": body.get("model").and_then(Value::as_str).unwrap_or(model),
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    });
    match out {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The upstream's id when it has one (an Anthropic `msg_...` stays as it was).
fn message_id(id: Option<&Value>) -> String {
    match id.and_then(Value::as_str) {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!("msg_{:016x}", rand::random::<u64>()),
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// Anthropic's `error.type` for an error: the provider's own when it was an Anthropic type,
/// else the one Anthropic uses for the status.
pub fn error_type(e: &GatewayError) -> &'static str {
    const ANTHROPIC: &[&str] = &[
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    ];
    if let Some(t) = e.error_type.as_deref() {
        if let Some(known) = ANTHROPIC.iter().find(|k| **k == t) {
            return known;
        }
    }
    match e.status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}}`, plus the gateway's attempts when
/// there were several.
pub fn error_body(e: &GatewayError) -> Value {
    let mut body = json!({
        "type": "error",
        "error": {"type": error_type(e), "message": e.message},
    });
    if let Some(extra) = e.to_json().get("extra_fields") {
        body["extra_fields"] = extra.clone();
    }
    body
}

// ---------------------------------------------------------------------------------------
// Streams: unified chunks → Anthropic's event sequence

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u32),
    /// A tool_use block and the OpenAI tool call index it carries.
    Tool(u32, u64),
}

/// `message_start`, `ping`, then per content block `content_block_start`,
/// `content_block_delta`s (`text_delta`, `input_json_delta`) and `content_block_stop`, then
/// `message_delta` (stop reason and usage) and `message_stop`; `error` after a failure.
pub struct AnthropicStream {
    model: String,
    started: bool,
    open: Option<Open>,
    next_index: u32,
    /// OpenAI tool call index → its content block index.
    tools: HashMap<u64, u32>,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
}

impl AnthropicStream {
    pub fn new(model: &str) -> Self {
        AnthropicStream {
            model: model.to_owned(),
            started: false,
            open: None,
            next_index: 0,
            tools: HashMap::new(),
            stop_reason: None,
            usage: None,
        }
    }

    fn start(&mut self, chunk: Option<&StreamChunk>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let body = chunk.map(|c| &c.body);
        let model = body
            .and_then(|b| b.get("model"))
            .and_then(Value::as_str)
            .unwrap_or(&self.model)
            .to_owned();
        out.push(sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(body.and_then(|b| b.get("id"))),
                "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
        out.push(sse_event("ping", &json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some(Open::Text(i) | Open::Tool(i, _)) = self.open.take() {
            out.push(sse_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            ));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<Bytes>) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                let i = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(Open::Text(i));
                i
            }
        };
        out.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        let n = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let f = call.get("function");
        let index = match self.tools.get(&n) {
            Some(&i) => i,
            None => {
                let i = self.open_block(
                    json!({"type": "tool_use",
                        "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": f.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default(),
                        "input": {}}),
                    out,
                );
                self.tools.insert(n, i);
                self.open = Some(Open::Tool(i, n));
                i
            }
        };
        if let Some(args) = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            out.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
            ));
        }
    }
}

impl StreamWriter for AnthropicStream {
    fn chunk(&mut self, chunk: &StreamChunk) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(Some(chunk), &mut out);
        if let Some(u) = chunk.usage() {
            self.usage = Some(u);
        }
        let Some(choice) = first_choice(&chunk.body) else {
            return out;
        };
        let delta = choice.get("delta");
        if let Some(t) = delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.text(t, &mut out);
        }
        for call in delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
        {
            self.tool_call(call, &mut out);
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason(Some(f)));
        }
        out
    }

    fn end(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(None, &mut out);
        self.close(&mut out);
        let u = self.usage.unwrap_or_default();
        out.push(sse_event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens}}),
        ));
        out.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        out
    }

    fn error(&mut self, e: &GatewayError) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(None, &mut out);
        out.push(sse_event("error", &error_body(e)));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use http::StatusCode;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn translate(v: Value) -> Result<Translated, GatewayError> {
        to_unified(&obj(v))
    }

    /// `(event, data)` of each SSE frame.
    pub(crate) fn frames(bytes: &[Bytes]) -> Vec<(String, Value)> {
        bytes
            .iter()
            .map(|b| {
                let s = std::str::from_utf8(b).unwrap();
                let event = s.lines().next().unwrap().strip_prefix("event: ").unwrap();
                let data = s.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
                assert!(s.ends_with("\n\n"));
                (event.to_owned(), serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    fn chunk(v: Value) -> StreamChunk {
        StreamChunk { body: obj(v) }
    }

    #[test]
    fn request_in_every_shape() {
        let t = translate(json!({
            "model": "openai/gpt-4o-mini",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Be kind."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"at": "x"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}]},
                    {"type": "text", "text": "so?"},
                ]},
            ],
            "tools": [{"name": "look", "description": "Look", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "metadata": {"user_id": "u-1"},
            "stream": true,
            "fallbacks": ["anthropic/claude"],
        }))
        .unwrap();
        assert!(t.native_only.is_none());
        assert_eq!(
            Value::Object(t.body),
            json!({
                "model": "openai/gpt-4o-mini",
                "fallbacks": ["anthropic/claude"],
                "max_tokens": 100,
                "messages": [
                    {"role": "system", "content": "Be brief.\nBe kind."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is here?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    ]},
                    {"role": "assistant", "content": "Let me look.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": "{\"at\":\"x\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
                    {"role": "user", "content": [{"type": "text", "text": "so?"}]},
                ],
                "temperature": 0.5,
                "top_p": 0.9,
                "stop": ["END"],
                "stream": true,
                "user": "u-1",
                "tools": [{"type": "function", "function": {"name": "look", "description": "Look", "parameters": {"type": "object"}}}],
                "tool_choice": "required",
                "parallel_tool_calls": false,
            })
        );
    }

    #[test]
    fn tool_result_alone_is_only_a_tool_message() {
        let t = translate(json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42", "is_error": true}]},
        ]}))
        .unwrap();
        assert_eq!(
            t.body["messages"],
            json!([{"role": "tool", "tool_call_id": "t", "content": "Error: 42"}])
        );
    }

    #[test]
    fn errors_name_the_field_path() {
        let cases = [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (json!({"max_tokens": 1, "messages": []}), "model"),
            (
                json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [
                {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": [{"type": "video", "url": "x"}]}]}),
                "messages.2.content.0.type",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
                "messages.0.role",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": []}]}),
                "messages.0.content",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
                "messages.0.content.0.source.media_type",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "i", "input": {}}]}]}),
                "messages.0.content.0.name",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "system": [{"type": "image"}]}),
                "system.0.type",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "t"}]}),
                "tools.0.input_schema",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "some"}}),
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "stop_sequences": ["a", 1]}),
                "stop_sequences.1",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "metadata": {"user_id": 7}}),
                "metadata.user_id",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                "temperature",
            ),
        ];
        for (body, path) in cases {
            let e = translate(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(path), "{body}: {}", e.message);
            assert!(e.message.starts_with(&format!("{path}: ")), "{}", e.message);
            assert_eq!(error_body(&e)["error"]["type"], "invalid_request_error");
        }
    }

    #[test]
    fn anthropic_only_fields_are_noted() {
        let base =
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
        for (extra, path) in [
            (json!({"top_k": 5}), "top_k"),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}),
                "thinking",
            ),
            (
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools.0.type",
            ),
        ] {
            let mut body = base.clone();
            for (k, v) in obj(extra) {
                body[k] = v;
            }
            let t = translate(body).unwrap();
            assert_eq!(t.native_only.unwrap().0, path);
            assert!(!t.body.contains_key("top_k") && !t.body.contains_key("thinking"));
        }
        assert!(translate(base).unwrap().native_only.is_none());
    }

    #[test]
    fn answer_as_a_message() {
        let resp = UnifiedResponse::ok(obj(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"at\":\"x\"}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14},
        })));
        assert_eq!(
            Value::Object(response(&resp, "fallback")),
            json!({
                "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "look", "input": {"at": "x"}},
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 4},
            })
        );
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(stop_reason(Some(finish)), stop);
        }
    }

    #[test]
    fn stream_follows_anthropics_event_sequence() {
        let mut w = AnthropicStream::new("m");
        let mut out = Vec::new();
        let c = |delta: Value, finish: Value| {
            chunk(json!({"id": "chatcmpl-9", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
        };
        for ch in [
            c(json!({"role": "assistant", "content": ""}), Value::Null),
            c(json!({"content": "Hel"}), Value::Null),
            c(json!({"content": "lo"}), Value::Null),
            c(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "look", "arguments": ""}}]}),
                Value::Null,
            ),
            c(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"at\":"}}]}),
                Value::Null,
            ),
            c(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"x\"}"}}]}),
                Value::Null,
            ),
            c(json!({}), json!("tool_calls")),
            chunk(
                json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}),
            ),
        ] {
            out.extend(w.chunk(&ch));
        }
        out.extend(w.end());
        let f = frames(&out);
        let names: Vec<&str> = f.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        for (event, data) in &f {
            assert_eq!(data["type"], event.as_str());
        }
        assert_eq!(f[0].1["message"]["id"], "msg_chatcmpl-9");
        assert_eq!(f[0].1["message"]["model"], "gpt-4o-mini");
        assert_eq!(
            f[2].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            f[3].1["delta"],
            json!({"type": "text_delta", "text": "Hel"})
        );
        assert_eq!(
            f[6].1["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "look", "input": {}})
        );
        assert_eq!(f[6].1["index"], 1);
        assert_eq!(
            f[7].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"at\":"})
        );
        assert_eq!(f[9].1["index"], 1);
        assert_eq!(
            f[10].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 7, "output_tokens": 3}})
        );
    }

    #[test]
    fn stream_error_after_start_is_an_error_event() {
        let mut w = AnthropicStream::new("m");
        let mut out = w.chunk(&chunk(
            json!({"choices": [{"index": 0, "delta": {"content": "a"}}]}),
        ));
        let e = GatewayError::upstream(StatusCode::TOO_MANY_REQUESTS, "slow down");
        out.extend(w.error(&e));
        let f = frames(&out);
        let (event, data) = f.last().unwrap();
        assert_eq!(event, "error");
        assert_eq!(
            data,
            &json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
        // An empty stream still opens and closes the message.
        let names: Vec<String> = frames(&AnthropicStream::new("m").end())
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        assert_eq!(
            names,
            ["message_start", "ping", "message_delta", "message_stop"]
        );
    }

    #[test]
    fn error_types_by_status() {
        for (status, t) in [
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
        ] {
            let e = GatewayError::upstream(StatusCode::from_u16(status).unwrap(), "x");
            assert_eq!(error_type(&e), t, "{status}");
        }
        let e = GatewayError::upstream(StatusCode::BAD_GATEWAY, "x").with_type("overloaded_error");
        assert_eq!(error_type(&e), "overloaded_error");
    }
}
