//! Cohere's v2 API (`/v2/chat`, `/v2/embed`). Sits behind [`build`](super::build) for
//! `cohere` providers: OpenAI chat and embedding bodies are translated to Cohere's, and
//! answers, stream events and errors back to the OpenAI shape, so clients and plugins only
//! ever see OpenAI JSON.
//!
//! Cohere's chat messages are close to OpenAI's (same roles, same `tool_calls` shape), so
//! most of the work is renaming (`top_p` → `p`, `stop` → `stop_sequences`) and refusing
//! what Cohere cannot do: `n > 1`, log probabilities, `logit_bias`, forcing one function
//! among several, turning parallel tool calls off. Some things are dropped on purpose and
//! said so here: `user`, `metadata`, `store`, `service_tier` and `stream_options` (Cohere
//! always reports usage, and the gateway always passes it on) on requests, a message's
//! `name`; and on answers the model's tool plan and thinking (OpenAI chat has no field for
//! either), citations and Cohere's billed-unit details. Completions are not served:
//! Cohere's v2 API has no raw-prompt endpoint, and wrapping a prompt as a chat turn would
//! answer a different question than the client asked.

// Helpers return the `GatewayError` the `Provider` trait returns; errors are the cold
// path, and boxing them here would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::providers::anthropic::now_secs;
use crate::providers::openai::{build_upstream_error, error_text, parse_object, to_bytes};
use crate::providers::{Auth, Frame, Provider, StreamDecoder, StreamEvent, UpstreamRequest};
use crate::schema::{RequestKind, StreamChunk, UnifiedRequest, UnifiedResponse, Usage};

/// Cohere embeds at most this many texts per call.
const MAX_EMBED_TEXTS: usize = 96;

/// `input_type` when the client sends none: OpenAI has no such field, and Cohere's v3+
/// embedding models require it. Documents are what most embedding calls index.
const DEFAULT_INPUT_TYPE: &str = "search_document";

/// One Cohere provider.
pub struct Cohere {
    name: String,
    base_url: String,
}

impl Cohere {
    pub fn new(cfg: &ProviderConfig) -> Self {
        Cohere {
            name: cfg.name.clone(),
            base_url: cfg.network.base_url.clone(),
        }
    }
}

impl Provider for Cohere {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kind: RequestKind) -> bool {
        matches!(kind, RequestKind::Chat | RequestKind::Embedding)
    }

    fn auth(&self) -> Auth {
        Auth::Header {
            name: AUTHORIZATION,
            prefix: "Bearer ",
        }
    }

    fn build_request(&self, req: &UnifiedRequest) -> Result<UpstreamRequest, GatewayError> {
        let (path, body) = match req.kind {
            RequestKind::Chat => ("/v2/chat", to_chat(req)?),
            RequestKind::Embedding => ("/v2/embed", to_embed(req)?),
            RequestKind::Completion => return Err(self.unsupported(req.kind)),
        };
        Ok(UpstreamRequest::post_json(
            format!("{}{path}", self.base_url),
            to_bytes(&body)?,
        ))
    }

    fn parse_response(
        &self,
        req: &UnifiedRequest,
        body: &[u8],
    ) -> Result<UnifiedResponse, GatewayError> {
        let body = parse_object(&self.name, body)?;
        let out = match req.kind {
            RequestKind::Chat => from_chat(&self.name, &body, &req.target.model)?,
            RequestKind::Embedding => from_embed(&self.name, body, &req.target.model)?,
            RequestKind::Completion => return Err(self.unsupported(req.kind)),
        };
        Ok(UnifiedResponse::ok(out))
    }

    fn stream_decoder(&self, req: &UnifiedRequest) -> Box<dyn StreamDecoder> {
        Box::new(CohereStreamDecoder::new(&self.name, &req.target.model))
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        let message = error_message(body).unwrap_or_else(|| error_text(status, body));
        match status.as_u16() {
            // "A request or response contains a deny-listed token": about the content, so
            // the same request fails the same way. A 400, because 498 means nothing to
            // OpenAI clients (and to some proxies, an expired token).
            498 => build_upstream_error(
                StatusCode::BAD_REQUEST,
                headers,
                message,
                None,
                Some("cohere_invalid_token".into()),
                None,
            ),
            // "Cancelled by the user": the gateway is the user and did not cancel (it would
            // not be reading the answer), so something between Cohere's front and its
            // model gave up. A provider failure, worth another try.
            499 => build_upstream_error(
                StatusCode::BAD_GATEWAY,
                headers,
                message,
                None,
                Some("cohere_request_cancelled".into()),
                None,
            ),
            // "The requested feature is not implemented": the one 5xx that does not pass.
            501 => {
                build_upstream_error(status, headers, message, None, None, None).retryable(false)
            }
            _ => build_upstream_error(status, headers, message, None, None, None),
        }
    }
}

impl Cohere {
    fn unsupported(&self, kind: RequestKind) -> GatewayError {
        GatewayError::bad_request(
            None,
            format!(
                "provider {} does not support {} requests",
                self.name,
                kind.as_str()
            ),
        )
    }
}

/// The message of a Cohere error body, `{"id": "...", "message": "..."}`; an OpenAI-style
/// `{"error": ...}` from a proxy in front of it is read too.
fn error_message(body: &[u8]) -> Option<String> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    text(obj.get("message"))
        .or_else(|| text(obj.get("error")))
        .or_else(|| text(obj.get("error").and_then(|e| e.get("message"))))
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI chat → Cohere v2 chat

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(Some(param), message)
}

/// A field that is absent or `null`, which OpenAI clients use interchangeably.
fn field<'a>(src: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    src.get(key).filter(|v| !v.is_null())
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Translate an OpenAI chat body to a Cohere `/v2/chat` body.
fn to_chat(req: &UnifiedRequest) -> Result<Map<String, Value>, GatewayError> {
    let src = &req.body;
    refuse_unsupported(src)?;
    let mut out = Map::new();
    out.insert("model".into(), Value::String(req.target.model.clone()));

    let messages = match src.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(bad("messages", "`messages` must be an array")),
        None => return Err(bad("messages", "`messages` is required")),
    };
    out.insert(
        "messages".into(),
        Value::Array(translate_messages(messages)?),
    );

    let max_tokens = field(src, "max_tokens")
        .map(|v| ("max_tokens", v))
        .or_else(|| field(src, "max_completion_tokens").map(|v| ("max_completion_tokens", v)));
    if let Some((param, v)) = max_tokens {
        let n = v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(param, format!("`{param}` must be a positive integer")))?;
        out.insert("max_tokens".into(), n.into());
    }

    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "p"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ] {
        match field(src, from) {
            None => {}
            Some(v @ Value::Number(_)) => {
                out.insert(to.into(), v.clone());
            }
            Some(_) => return Err(bad(from, format!("`{from}` must be a number"))),
        }
    }

    if let Some(seed) = field(src, "seed") {
        let seed = seed
            .as_u64()
            .ok_or_else(|| bad("seed", "`seed` must be a non-negative integer for Cohere"))?;
        out.insert("seed".into(), seed.into());
    }

    if let Some(stops) = stop_sequences(src)? {
        out.insert("stop_sequences".into(), stops);
    }

    let tools: Vec<&Value> = match field(src, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools.iter().collect(),
        Some(_) => return Err(bad("tools", "`tools` must be an array")),
    };
    if !tools.is_empty() {
        let (tools, strict) = translate_tools(&tools)?;
        out.insert("tools".into(), Value::Array(tools));
        if strict {
            out.insert("strict_tools".into(), Value::Bool(true));
        }
    }
    if let Some(choice) = tool_choice(src, &tools)? {
        out.insert("tool_choice".into(), choice.into());
    }

    if let Some(format) = field(src, "response_format") {
        if let Some(format) = response_format(format)? {
            out.insert("response_format".into(), format);
        }
    }

    if req.stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(out)
}

/// OpenAI features Cohere has no way to honour, refused rather than quietly ignored: the
/// client would get an answer that looks like what it asked for and is not.
fn refuse_unsupported(src: &Map<String, Value>) -> Result<(), GatewayError> {
    if let Some(n) = field(src, "n") {
        if n.as_u64() != Some(1) {
            return Err(bad("n", "Cohere models return one choice; `n` must be 1"));
        }
    }
    if field(src, "logprobs").is_some_and(|v| v != &Value::Bool(false)) {
        return Err(bad(
            "logprobs",
            "log probabilities are not available for Cohere models through this gateway",
        ));
    }
    if field(src, "top_logprobs").is_some() {
        return Err(bad(
            "top_logprobs",
            "log probabilities are not available for Cohere models through this gateway",
        ));
    }
    if field(src, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        return Err(bad("logit_bias", "Cohere does not support `logit_bias`"));
    }
    if src.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(bad(
            "parallel_tool_calls",
            "Cohere cannot turn parallel tool calls off; leave `parallel_tool_calls` unset",
        ));
    }
    if let Some(modalities) = field(src, "modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            return Err(bad("modalities", "Cohere models answer with text only"));
        }
    }
    for (key, message) in [
        ("audio", "Cohere models answer with text only"),
        ("prediction", "Cohere does not support predicted outputs"),
        (
            "reasoning_effort",
            "Cohere's reasoning is not set through `reasoning_effort`",
        ),
        ("web_search_options", "Cohere has no built-in web search"),
        (
            "functions",
            "use `tools`: legacy `functions` are not translated for Cohere",
        ),
        (
            "function_call",
            "use `tool_choice`: legacy `function_call` is not translated for Cohere",
        ),
    ] {
        if field(src, key).is_some() {
            return Err(bad(key, message));
        }
    }
    Ok(())
}

fn stop_sequences(src: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    match field(src, "stop") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(list)) => {
            for (i, s) in list.iter().enumerate() {
                if !s.is_string() {
                    return Err(bad(&format!("stop[{i}]"), "stop sequences must be strings"));
                }
            }
            Ok((!list.is_empty()).then(|| Value::Array(list.clone())))
        }
        Some(_) => Err(bad(
            "stop",
            "`stop` must be a string or an array of strings",
        )),
    }
}

fn translate_messages(messages: &[Value]) -> Result<Vec<Value>, GatewayError> {
    if messages.is_empty() {
        return Err(bad("messages", "at least one message is required"));
    }
    let mut out = Vec::with_capacity(messages.len());
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
        let content_at = format!("{at}.content");
        let translated = match role {
            "system" | "developer" => {
                if content.is_null() {
                    return Err(bad(&content_at, "system messages need `content`"));
                }
                json!({"role": "system", "content": text_content(content, &content_at)?})
            }
            "user" => {
                if content.is_null() {
                    return Err(bad(&content_at, "user messages need `content`"));
                }
                json!({"role": "user", "content": user_content(content, &content_at)?})
            }
            "assistant" => assistant_message(msg, &at)?,
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
                let content = if content.is_null() {
                    Value::String(String::new())
                } else {
                    text_content(content, &content_at)?
                };
                json!({"role": "tool", "tool_call_id": id, "content": content})
            }
            other => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("unsupported role `{other}` for Cohere"),
                ))
            }
        };
        out.push(translated);
    }
    Ok(out)
}

/// A string, or an array of text parts as Cohere text items (system and tool messages,
/// which take nothing else).
fn text_content(content: &Value, at: &str) -> Result<Value, GatewayError> {
    match content {
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| text_part(part, &format!("{at}[{j}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Err(bad(
            at,
            "content must be a string or an array of text parts",
        )),
    }
}

fn text_part(part: &Value, at: &str) -> Result<Value, GatewayError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("{at}.text"), "text parts need a string `text`"))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some(other) => Err(bad(
            &format!("{at}.type"),
            format!("content part type `{other}` is not allowed here; only `text` is"),
        )),
        None => Err(bad(&format!("{at}.type"), "content parts need a `type`")),
    }
}

/// A user message's content: text and images. Images go through as Cohere's `image_url`
/// items, which vision models (Command A Vision, Aya Vision, Command A+) read and text-only
/// models refuse with their own 400: which models see is Cohere's to say, not a list here.
fn user_content(content: &Value, at: &str) -> Result<Value, GatewayError> {
    let Value::Array(parts) = content else {
        return match content {
            Value::String(s) => Ok(Value::String(s.clone())),
            _ => Err(bad(at, "content must be a string or an array of parts")),
        };
    };
    let mut items = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let pat = format!("{at}[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("image_url") => items.push(image_item(part, &pat)?),
            Some("text") | None => items.push(text_part(part, &pat)?),
            Some(other) => {
                return Err(bad(
                    &format!("{pat}.type"),
                    format!("content part type `{other}` is not supported by Cohere"),
                ))
            }
        }
    }
    Ok(Value::Array(items))
}

fn image_item(part: &Value, at: &str) -> Result<Value, GatewayError> {
    let image = part.get("image_url");
    let url = image
        .and_then(|i| i.get("url"))
        .or(image)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{at}.image_url.url"), "image parts need a `url`"))?;
    if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("data:")) {
        return Err(bad(
            &format!("{at}.image_url.url"),
            "image URLs must be http(s) or base64 data URLs",
        ));
    }
    let mut image_url = Map::new();
    image_url.insert("url".into(), Value::String(url.to_owned()));
    match image.and_then(|i| i.get("detail")).filter(|d| !d.is_null()) {
        None => {}
        Some(Value::String(d)) => {
            image_url.insert("detail".into(), Value::String(d.clone()));
        }
        Some(_) => {
            return Err(bad(
                &format!("{at}.image_url.detail"),
                "`detail` must be a string",
            ))
        }
    }
    Ok(json!({"type": "image_url", "image_url": image_url}))
}

fn assistant_message(msg: &Map<String, Value>, at: &str) -> Result<Value, GatewayError> {
    let mut out = Map::new();
    out.insert("role".into(), "assistant".into());
    let content_at = format!("{at}.content");
    match msg.get("content").unwrap_or(&Value::Null) {
        // Assistants that call tools often send `""` or nothing.
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        content => {
            out.insert("content".into(), text_content(content, &content_at)?);
        }
    }
    if let Some(calls) = msg.get("tool_calls").filter(|v| !v.is_null()) {
        let calls = tool_calls(calls, &format!("{at}.tool_calls"))?;
        if !calls.is_empty() {
            out.insert("tool_calls".into(), Value::Array(calls));
        }
    }
    Ok(Value::Object(out))
}

/// OpenAI tool calls in Cohere's (identical) shape, checked, with arguments as the JSON
/// string both expect.
fn tool_calls(calls: &Value, at: &str) -> Result<Vec<Value>, GatewayError> {
    let calls = calls
        .as_array()
        .ok_or_else(|| bad(at, "`tool_calls` must be an array"))?;
    let mut out = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let cat = format!("{at}[{j}]");
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{cat}.id"), "tool calls need a string `id`"))?;
        match call.get("type").filter(|t| !t.is_null()) {
            None => {}
            Some(t) if t == "function" => {}
            Some(_) => {
                return Err(bad(
                    &format!("{cat}.type"),
                    "only `function` tool calls are supported by Cohere",
                ))
            }
        }
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
        let args_at = format!("{cat}.function.arguments");
        let arguments = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(Value::String(s)) if s.trim().is_empty() => "{}".to_owned(),
            Some(Value::String(s)) => {
                serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|e| {
                    bad(
                        &args_at,
                        format!("tool call arguments are not valid JSON: {e}"),
                    )
                })?;
                s.clone()
            }
            // Some clients send the arguments already parsed.
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => {
                return Err(bad(&args_at, "tool call arguments must be a JSON string"));
            }
        };
        out.push(json!({
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }));
    }
    Ok(out)
}

/// Cohere tools and whether they are strict. Cohere's `strict_tools` covers every tool of
/// a request, so OpenAI's per-function `strict` must agree across them.
fn translate_tools(tools: &[&Value]) -> Result<(Vec<Value>, bool), GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    let mut strict = None;
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("tools[{i}].type"),
                "only `function` tools are supported by Cohere",
            ));
        }
        let f = tool.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("tools[{i}].function.name"), "tools need a name"))?;
        let mut function = Map::new();
        function.insert("name".into(), Value::String(name.to_owned()));
        match f
            .and_then(|f| f.get("description"))
            .filter(|d| !d.is_null())
        {
            None => {}
            Some(Value::String(d)) => {
                function.insert("description".into(), Value::String(d.clone()));
            }
            Some(_) => {
                return Err(bad(
                    &format!("tools[{i}].function.description"),
                    "`description` must be a string",
                ))
            }
        }
        let parameters = match f.and_then(|f| f.get("parameters")).filter(|p| !p.is_null()) {
            Some(p @ Value::Object(_)) => p.clone(),
            // Cohere requires a schema; OpenAI allows tools without parameters.
            None => json!({"type": "object", "properties": {}}),
            Some(_) => {
                return Err(bad(
                    &format!("tools[{i}].function.parameters"),
                    "`parameters` must be a JSON schema object",
                ))
            }
        };
        function.insert("parameters".into(), parameters);
        let this_strict = f.and_then(|f| f.get("strict")) == Some(&Value::Bool(true));
        if *strict.get_or_insert(this_strict) != this_strict {
            return Err(bad(
                &format!("tools[{i}].function.strict"),
                "Cohere makes all of a request's tools strict or none; set `strict` the same on every tool",
            ));
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok((out, strict.unwrap_or(false)))
}

/// Cohere's `tool_choice`: `REQUIRED`, `NONE`, or left out for auto.
fn tool_choice(
    src: &Map<String, Value>,
    tools: &[&Value],
) -> Result<Option<&'static str>, GatewayError> {
    let required = || {
        if tools.is_empty() {
            Err(bad(
                "tool_choice",
                "`tool_choice` asks for a tool call but the request has no `tools`",
            ))
        } else {
            Ok(Some("REQUIRED"))
        }
    };
    match field(src, "tool_choice") {
        None => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(None),
            // Without tools there is nothing to refrain from.
            "none" if tools.is_empty() => Ok(None),
            "none" => Ok(Some("NONE")),
            "required" => required(),
            other => Err(bad("tool_choice", format!("unknown tool_choice `{other}`"))),
        },
        Some(Value::Object(obj)) => {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        "`tool_choice` must be `auto`, `none`, `required` or a function",
                    )
                })?;
            // Forcing the only tool there is, is forcing a tool call: that Cohere can do.
            let only = match tools {
                [tool] => tool
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str),
                _ => None,
            };
            if only == Some(name) {
                return required();
            }
            Err(bad(
                "tool_choice",
                format!(
                    "Cohere cannot force one function among several; use `required` or send only `{name}` in `tools`"
                ),
            ))
        }
        Some(_) => Err(bad(
            "tool_choice",
            "`tool_choice` must be a string or an object",
        )),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, GatewayError> {
    let kind = format
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("response_format.type", "`response_format` needs a `type`"))?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            match format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .filter(|s| !s.is_null())
            {
                None => Ok(Some(json!({"type": "json_object"}))),
                Some(schema @ Value::Object(_)) => {
                    Ok(Some(json!({"type": "json_object", "json_schema": schema})))
                }
                Some(_) => Err(bad(
                    "response_format.json_schema.schema",
                    "the schema must be a JSON object",
                )),
            }
        }
        other => Err(bad(
            "response_format.type",
            format!("response format `{other}` is not supported by Cohere"),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI embeddings → Cohere v2 embed

fn to_embed(req: &UnifiedRequest) -> Result<Map<String, Value>, GatewayError> {
    let src = &req.body;
    let texts = match field(src, "input") {
        None => return Err(bad("input", "`input` is required")),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(bad("input", "`input` must not be empty"));
            }
            if list.len() > MAX_EMBED_TEXTS {
                return Err(bad(
                    "input",
                    format!(
                        "Cohere embeds at most {MAX_EMBED_TEXTS} texts per request, got {}",
                        list.len()
                    ),
                ));
            }
            for (i, item) in list.iter().enumerate() {
                match item {
                    Value::String(_) => {}
                    Value::Number(_) | Value::Array(_) => {
                        return Err(bad(
                            &format!("input[{i}]"),
                            "Cohere embeds text; token arrays are not supported",
                        ))
                    }
                    _ => return Err(bad(&format!("input[{i}]"), "inputs must be strings")),
                }
            }
            list.clone()
        }
        Some(_) => {
            return Err(bad(
                "input",
                "`input` must be a string or an array of strings",
            ))
        }
    };
    let input_type = match field(src, "input_type") {
        None => DEFAULT_INPUT_TYPE.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("input_type", "`input_type` must be a string")),
    };
    match field(src, "encoding_format") {
        None => {}
        // base64 is made from the floats by the gateway for every provider.
        Some(v) if v == "float" || v == "base64" => {}
        Some(_) => {
            return Err(bad(
                "encoding_format",
                "`encoding_format` must be `float` or `base64`",
            ))
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::String(req.target.model.clone()));
    out.insert("texts".into(), Value::Array(texts));
    out.insert("input_type".into(), Value::String(input_type));
    out.insert("embedding_types".into(), json!(["float"]));
    if let Some(d) = field(src, "dimensions") {
        let d = d
            .as_u64()
            .filter(|d| *d > 0)
            .ok_or_else(|| bad("dimensions", "`dimensions` must be a positive integer"))?;
        out.insert("output_dimension".into(), d.into());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Response: Cohere → OpenAI

/// A token count. Cohere documents counts as JSON numbers, and its SDKs read them as
/// floats; either form saturates at `u32::MAX`.
fn count(v: Option<&Value>) -> u32 {
    let Some(n) = v.and_then(Value::as_number) else {
        return 0;
    };
    match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => u32::try_from(u).unwrap_or(u32::MAX),
        // `as` saturates, and NaN becomes 0.
        (None, Some(f)) if f > 0.0 => f as u32,
        _ => 0,
    }
}

/// Usage from Cohere's `usage`: the model's own `tokens`, or the `billed_units` when an
/// answer has only those.
fn usage_of(u: Option<&Value>) -> Usage {
    let tokens = u.and_then(|u| u.get("tokens"));
    let billed = u.and_then(|u| u.get("billed_units"));
    let get = |k: &str| {
        count(
            tokens
                .and_then(|t| t.get(k))
                .or_else(|| billed.and_then(|b| b.get(k))),
        )
    };
    Usage::new(get("input_tokens"), get("output_tokens"), 0)
}

fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "TOOL_CALL" => "tool_calls",
        // COMPLETE, STOP_SEQUENCE and reasons newer than this code.
        _ => "stop",
    }
}

/// The error a failed generation is, if `reason` says it failed. The answer was a 200, so
/// the status is the one the same failure would have had up front: an internal error (502)
/// or a timeout (504), both worth another try.
fn generation_error(reason: &str, detail: Option<&str>) -> Option<GatewayError> {
    match reason {
        "ERROR" => Some(failed_generation(detail)),
        "TIMEOUT" => Some(upstream_failure(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            detail,
            "Cohere stopped with finish_reason TIMEOUT: the generation took longer than it allows",
        )),
        _ => None,
    }
}

/// A generation Cohere reports as failed (`finish_reason: ERROR`, an error mid-stream).
fn failed_generation(detail: Option<&str>) -> GatewayError {
    upstream_failure(
        StatusCode::BAD_GATEWAY,
        "upstream_generation_error",
        detail,
        "Cohere stopped with finish_reason ERROR: the generation failed",
    )
}

/// Cohere's own words when it gave any, else `fallback`.
fn upstream_failure(
    status: StatusCode,
    code: &str,
    detail: Option<&str>,
    fallback: &str,
) -> GatewayError {
    let message = detail
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(fallback)
        .to_owned();
    build_upstream_error(
        status,
        &HeaderMap::new(),
        message,
        None,
        Some(code.to_owned()),
        None,
    )
}

/// An OpenAI tool call from a Cohere one (the same shape, arguments kept a string).
fn openai_tool_call(call: &Value) -> Value {
    let function = call.get("function");
    let arguments = match function.and_then(|f| f.get("arguments")) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    };
    json!({
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": function.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
            "arguments": arguments,
        },
    })
}

fn from_chat(
    provider: &str,
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, GatewayError> {
    let reason = body.get("finish_reason").and_then(Value::as_str);
    if let Some(e) = reason.and_then(|r| generation_error(r, None)) {
        return Err(e);
    }
    let msg = body
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| {
            GatewayError::upstream(
                StatusCode::BAD_GATEWAY,
                format!("provider {provider} answered without a `message`"),
            )
            .with_code("upstream_malformed_response")
            .retryable(false)
        })?;
    let mut text = String::new();
    let mut has_text = false;
    for item in msg
        .get("content")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        // Thinking items have no OpenAI chat equivalent.
        if item.get("type").and_then(Value::as_str) == Some("text") {
            if let Some(t) = item.get("text").and_then(Value::as_str) {
                has_text = true;
                text.push_str(t);
            }
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
    let calls: Vec<Value> = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(openai_tool_call)
        .collect();
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(into_map(json!({
        "id": body.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": now_secs(),
        // Cohere does not echo the model.
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": reason.map_or(Value::Null, |r| finish_reason(r).into()),
        }],
        "usage": usage_of(body.get("usage")).to_openai(),
    })))
}

/// A Cohere embed answer as an OpenAI list. The vectors are moved, not copied: they are
/// most of the body.
fn from_embed(
    provider: &str,
    mut body: Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, GatewayError> {
    let floats = match body.remove("embeddings") {
        Some(Value::Object(mut by_type)) => by_type.remove("float"),
        // `embeddings_floats` answers (no `embedding_types`) are the bare list.
        Some(list @ Value::Array(_)) => Some(list),
        _ => None,
    };
    let Some(Value::Array(floats)) = floats else {
        return Err(GatewayError::upstream(
            StatusCode::BAD_GATEWAY,
            format!("provider {provider} answered without float embeddings"),
        )
        .with_code("upstream_malformed_response")
        .retryable(false));
    };
    let data: Vec<Value> = floats
        .into_iter()
        .enumerate()
        .map(|(i, embedding)| json!({"object": "embedding", "index": i, "embedding": embedding}))
        .collect();
    let tokens = count(
        body.get("meta")
            .and_then(|m| m.get("billed_units"))
            .and_then(|b| b.get("input_tokens")),
    );
    Ok(into_map(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

// ---------------------------------------------------------------------------------------
// Streaming: Cohere events → OpenAI chunks

/// Keeps the reply id Cohere sends once to stamp on every chunk, and maps Cohere's
/// tool-call indexes to OpenAI's (0, 1, 2, ... in order of appearance): Cohere numbers
/// tool calls from 0 today, but nothing promises it, and an OpenAI client indexes its
/// accumulated calls by them.
struct CohereStreamDecoder {
    provider: String,
    id: String,
    model: String,
    created: u64,
    tool_calls: HashMap<u64, usize>,
    /// The tool call argument deltas without an `index` belong to.
    last_tool: Option<usize>,
    started_tools: usize,
}

impl CohereStreamDecoder {
    fn new(provider: &str, model: &str) -> Self {
        CohereStreamDecoder {
            provider: provider.to_owned(),
            id: String::new(),
            model: model.to_owned(),
            created: now_secs(),
            tool_calls: HashMap::new(),
            last_tool: None,
            started_tools: 0,
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
        body.extend(into_map(extra));
        StreamEvent::Chunk(StreamChunk { body })
    }

    fn malformed_stream(&self, what: &str) -> GatewayError {
        GatewayError::upstream(
            StatusCode::BAD_GATEWAY,
            format!(
                "provider {} sent a stream the gateway cannot read: {what}",
                self.provider
            ),
        )
        .with_code("upstream_malformed_response")
        .retryable(false)
    }

    fn tool_call_start(&mut self, ev: &Map<String, Value>) -> Vec<StreamEvent> {
        let call = message_of(ev).and_then(|m| m.get("tool_calls"));
        // The reference has one call per event; tolerate a list of one.
        let call = match call {
            Some(Value::Array(list)) => list.first(),
            other => other,
        };
        let call = call.unwrap_or(&Value::Null);
        let index = self.started_tools;
        self.started_tools += 1;
        if let Some(i) = ev.get("index").and_then(Value::as_u64) {
            self.tool_calls.insert(i, index);
        }
        self.last_tool = Some(index);
        let mut tool_call = into_map(openai_tool_call(call));
        tool_call.insert("index".into(), index.into());
        vec![self.chunk(json!({"tool_calls": [tool_call]}), Value::Null)]
    }

    fn tool_call_delta(&self, ev: &Map<String, Value>) -> Result<Vec<StreamEvent>, GatewayError> {
        let target = match ev.get("index").and_then(Value::as_u64) {
            Some(i) => self.tool_calls.get(&i).copied(),
            None => self.last_tool,
        };
        let Some(index) = target else {
            return Err(
                self.malformed_stream("tool call arguments for a tool call that never started")
            );
        };
        let arguments = message_of(ev)
            .and_then(|m| m.get("tool_calls"))
            .and_then(|c| c.get("function"))
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if arguments.is_empty() {
            return Ok(vec![StreamEvent::Skip]);
        }
        Ok(vec![self.chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
            Value::Null,
        )])
    }

    fn message_end(&self, ev: &Map<String, Value>) -> Result<Vec<StreamEvent>, GatewayError> {
        let delta = ev.get("delta");
        let reason = delta
            .and_then(|d| d.get("finish_reason"))
            .and_then(Value::as_str);
        let detail = delta.and_then(|d| d.get("error")).and_then(Value::as_str);
        if let Some(e) = reason.and_then(|r| generation_error(r, detail)) {
            return Err(e);
        }
        // An error with a finish reason that does not say so is still an error.
        if detail.is_some_and(|d| !d.trim().is_empty()) {
            return Err(failed_generation(detail));
        }
        let usage = usage_of(delta.and_then(|d| d.get("usage")));
        let mut out = Vec::with_capacity(3);
        if let Some(reason) = reason {
            out.push(self.chunk(json!({}), finish_reason(reason).into()));
        }
        out.push(self.chunk_body(json!({"choices": [], "usage": usage.to_openai()})));
        out.push(StreamEvent::Done);
        Ok(out)
    }
}

/// `delta.message` of a stream event.
fn message_of(ev: &Map<String, Value>) -> Option<&Value> {
    ev.get("delta").and_then(|d| d.get("message"))
}

impl StreamDecoder for CohereStreamDecoder {
    fn decode(&mut self, frame: &Frame) -> Result<Vec<StreamEvent>, GatewayError> {
        let frame = frame.sse(&self.provider)?;
        let data = frame.data.trim();
        // Cohere's SDKs stop at a `[DONE]`; `message-end` has already said Done by then.
        if data == "[DONE]" {
            return Ok(vec![StreamEvent::Done]);
        }
        if data.is_empty() {
            return Ok(vec![StreamEvent::Skip]);
        }
        let ev = parse_object(&self.provider, data.as_bytes())?;
        // The data repeats the event name in `type`; trust it over the SSE field, which
        // proxies sometimes drop.
        let kind = ev
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(frame.event.as_str());
        let out = match kind {
            "message-start" => {
                if let Some(id) = ev.get("id").and_then(Value::as_str) {
                    id.clone_into(&mut self.id);
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            // Thinking blocks carry `thinking` instead of `text`, and are skipped with it.
            "content-start" | "content-delta" => match message_of(&ev)
                .and_then(|m| m.get("content"))
                .and_then(|c| c.get("text"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                Some(t) => vec![self.chunk(json!({"content": t}), Value::Null)],
                None => vec![StreamEvent::Skip],
            },
            "tool-call-start" => self.tool_call_start(&ev),
            "tool-call-delta" => self.tool_call_delta(&ev)?,
            "message-end" => self.message_end(&ev)?,
            // Not in Cohere's v2 reference, but an error event must not pass for success.
            "error" => {
                let detail = ev
                    .get("message")
                    .or_else(|| ev.get("error"))
                    .and_then(Value::as_str);
                return Err(failed_generation(detail));
            }
            // The tool plan is the model's reasoning before it calls tools: OpenAI chat has
            // no field for it, and as content it would read as the answer. content-end,
            // tool-call-end, citation-start/end, debug and event types newer than this
            // code carry nothing for the client either.
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
    use crate::error::Fault;
    use crate::providers::openai::tests::{provider_config, request};
    use crate::providers::sse;
    use crate::upstream::framing::sse::SseParser;
    use http::header::RETRY_AFTER;
    use http::HeaderValue;
    use std::time::Duration;

    fn cohere() -> Cohere {
        Cohere::new(&provider_config(
            ProviderKind::Cohere,
            "https://api.cohere.com",
        ))
    }

    fn translate(body: Value) -> Result<Value, GatewayError> {
        let req = request(RequestKind::Chat, "cohere", body);
        let up = cohere().build_request(&req)?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    fn embed_body(body: Value) -> Result<Value, GatewayError> {
        let req = request(RequestKind::Embedding, "cohere", body);
        let up = cohere().build_request(&req)?;
        assert_eq!(up.url, "https://api.cohere.com/v2/embed");
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    fn user_hi() -> Value {
        json!([{"role": "user", "content": "hi"}])
    }

    #[test]
    fn supports_chat_and_embeddings_only() {
        let c = cohere();
        assert!(c.supports(RequestKind::Chat));
        assert!(c.supports(RequestKind::Embedding));
        assert!(!c.supports(RequestKind::Completion));
        let req = request(
            RequestKind::Completion,
            "cohere",
            json!({"model": "command-a-03-2025", "prompt": "Once"}),
        );
        let e = c.build_request(&req).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("completion"), "{}", e.message);
    }

    #[test]
    fn build_wires_cohere() {
        let cfg = provider_config(ProviderKind::Cohere, "http://127.0.0.1:9");
        let p = crate::providers::build(&cfg);
        assert!(!p.supports(RequestKind::Completion));
        let req = request(
            RequestKind::Chat,
            "cohere",
            json!({"model": "command-a-03-2025", "messages": user_hi()}),
        );
        assert_eq!(
            p.build_request(&req).unwrap().url,
            "http://127.0.0.1:9/v2/chat"
        );
    }

    #[test]
    fn request_url_and_auth() {
        let req = request(
            RequestKind::Chat,
            "cohere",
            json!({"model": "command-a-03-2025", "messages": user_hi()}),
        );
        let c = cohere();
        let up = c.build_request(&req).unwrap();
        assert_eq!(up.method, http::Method::POST);
        assert_eq!(up.url, "https://api.cohere.com/v2/chat");
        assert_eq!(up.headers["content-type"], "application/json");
        assert!(up.headers.get(AUTHORIZATION).is_none());
        assert!(
            matches!(c.auth(), Auth::Header { name, prefix: "Bearer " } if name == AUTHORIZATION)
        );
        assert_eq!(c.framing(), crate::providers::Framing::Sse);
    }

    #[test]
    fn simple_translation() {
        let body = translate(json!({
            "model": "command-a-03-2025",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": "hi", "name": "ann"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]},
            ],
            "max_completion_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "seed": 7,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.1,
            "stream": true,
            "user": "u-1",
            "stream_options": {"include_usage": true},
            "n": 1,
            "logprobs": false,
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "command-a-03-2025",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": [{"type": "text", "text": "again"}]},
                ],
                "max_tokens": 100,
                "temperature": 0.2,
                "p": 0.9,
                "stop_sequences": ["END"],
                "seed": 7,
                "frequency_penalty": 0.5,
                "presence_penalty": 0.1,
                "stream": true,
            })
        );

        let b = translate(
            json!({"model": "m", "messages": user_hi(), "max_tokens": 10, "stop": ["a", "b"]}),
        )
        .unwrap();
        assert_eq!(b["max_tokens"], 10);
        assert_eq!(b["stop_sequences"], json!(["a", "b"]));
        assert!(b.get("stream").is_none());
        let b =
            translate(json!({"model": "m", "messages": user_hi(), "stop": [], "max_tokens": null}))
                .unwrap();
        assert!(b.get("stop_sequences").is_none());
        assert!(b.get("max_tokens").is_none());
    }

    #[test]
    fn images_tools_and_tool_results() {
        let body = translate(json!({
            "model": "command-a-vision-07-2025",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://cohere.com/favicon-32x32.png", "detail": "auto"}},
                ]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "get_weather_p1t92w7gfgq7", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Madrid\"}"}},
                    {"id": "get_time_1", "function": {"name": "get_time", "arguments": {"tz": "CET"}}},
                    {"id": "get_date_1", "type": "function", "function": {"name": "get_date"}},
                ]},
                {"role": "tool", "tool_call_id": "get_weather_p1t92w7gfgq7", "content": "{\"temperature\": 24}"},
                {"role": "tool", "tool_call_id": "get_time_1", "content": [{"type": "text", "text": "noon"}]},
                {"role": "tool", "tool_call_id": "get_date_1", "content": null},
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
                {"type": "function", "function": {"name": "get_time"}},
                {"type": "function", "function": {"name": "get_date", "parameters": null}},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": true,
        }))
        .unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://cohere.com/favicon-32x32.png", "detail": "auto"}},
                ]},
                {"role": "assistant", "tool_calls": [
                    {"id": "get_weather_p1t92w7gfgq7", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Madrid\"}"}},
                    {"id": "get_time_1", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}},
                    {"id": "get_date_1", "type": "function", "function": {"name": "get_date", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "get_weather_p1t92w7gfgq7", "content": "{\"temperature\": 24}"},
                {"role": "tool", "tool_call_id": "get_time_1", "content": [{"type": "text", "text": "noon"}]},
                {"role": "tool", "tool_call_id": "get_date_1", "content": ""},
            ])
        );
        assert_eq!(
            body["tools"],
            json!([
                {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
                {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
                {"type": "function", "function": {"name": "get_date", "parameters": {"type": "object", "properties": {}}}},
            ])
        );
        assert_eq!(body["tool_choice"], "REQUIRED");
        assert!(body.get("strict_tools").is_none());
        assert!(body.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn tool_choice_forms() {
        let one = json!([{"type": "function", "function": {"name": "f"}}]);
        let two = json!([
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "g"}},
        ]);
        let forced = json!({"type": "function", "function": {"name": "f"}});
        for (tools, choice, expected) in [
            (one.clone(), json!("auto"), Value::Null),
            (one.clone(), json!("none"), json!("NONE")),
            (one.clone(), json!("required"), json!("REQUIRED")),
            (one.clone(), Value::Null, Value::Null),
            // Forcing the only tool is a required tool call.
            (one.clone(), forced.clone(), json!("REQUIRED")),
            (json!([]), json!("none"), Value::Null),
        ] {
            let b = translate(
                json!({"model": "m", "messages": user_hi(), "tools": tools, "tool_choice": choice}),
            )
            .unwrap();
            assert_eq!(
                b.get("tool_choice").cloned().unwrap_or(Value::Null),
                expected,
                "{choice}"
            );
        }
        for (tools, choice) in [
            (two, forced),
            (json!([]), json!("required")),
            (one.clone(), json!("sometimes")),
            (one.clone(), json!({"type": "allowed_tools"})),
            (one, json!(3)),
        ] {
            let e = translate(
                json!({"model": "m", "messages": user_hi(), "tools": tools, "tool_choice": choice}),
            )
            .unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                e.param.as_deref(),
                Some("tool_choice"),
                "{choice}: {}",
                e.message
            );
        }
    }

    #[test]
    fn strict_tools_all_or_none() {
        let strict = |s: bool| json!({"type": "function", "function": {"name": "f", "strict": s}});
        let b = translate(
            json!({"model": "m", "messages": user_hi(), "tools": [strict(true), strict(true)]}),
        )
        .unwrap();
        assert_eq!(b["strict_tools"], true);
        assert!(b["tools"][0]["function"].get("strict").is_none());
        let b = translate(json!({"model": "m", "messages": user_hi(), "tools": [strict(false)]}))
            .unwrap();
        assert!(b.get("strict_tools").is_none());
        let e = translate(
            json!({"model": "m", "messages": user_hi(), "tools": [strict(true), strict(false)]}),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[1].function.strict"));
    }

    #[test]
    fn response_formats() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        for (format, expected) in [
            (json!({"type": "text"}), Value::Null),
            (
                json!({"type": "json_object"}),
                json!({"type": "json_object"}),
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}}),
                json!({"type": "json_object", "json_schema": schema}),
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "anything"}}),
                json!({"type": "json_object"}),
            ),
        ] {
            let b =
                translate(json!({"model": "m", "messages": user_hi(), "response_format": format}))
                    .unwrap();
            assert_eq!(
                b.get("response_format").cloned().unwrap_or(Value::Null),
                expected
            );
        }
        for (format, param) in [
            (json!({"type": "xml"}), "response_format.type"),
            (json!({}), "response_format.type"),
            (
                json!({"type": "json_schema", "json_schema": {"schema": "x"}}),
                "response_format.json_schema.schema",
            ),
        ] {
            let e =
                translate(json!({"model": "m", "messages": user_hi(), "response_format": format}))
                    .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param));
        }
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let cases = [
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": "hi"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (json!({"model": "m", "messages": [1]}), "messages[0]"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"content": "c"}]}),
                "messages[2].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": 3}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x", "detail": 1}}]}]}),
                "messages[0].content[0].image_url.detail",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": {}}]}),
                "messages[0].tool_calls",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]}),
                "messages[0].tool_calls[0].id",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "t", "type": "custom", "function": {"name": "f"}}]}]}),
                "messages[0].tool_calls[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {}}]}]}),
                "messages[0].tool_calls[0].function.name",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": 3}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "tools": {}}),
                "tools",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "tools": [{"type": "code_interpreter"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "tools": [{"type": "function", "function": {}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}),
                "tools[0].function.parameters",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "tools": [{"type": "function", "function": {"name": "f", "description": 1}}]}),
                "tools[0].function.description",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "max_tokens": 0}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "max_completion_tokens": "5"}),
                "max_completion_tokens",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "top_p": true}),
                "top_p",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "seed": -1}),
                "seed",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "stop": 5}),
                "stop",
            ),
            (
                json!({"model": "m", "messages": user_hi(), "stop": ["a", 1]}),
                "stop[1]",
            ),
        ];
        for (body, param) in cases {
            let e = translate(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.fault, Fault::Client, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn unsupported_features_are_refused() {
        for (extra, param) in [
            (json!({"n": 2}), "n"),
            (json!({"n": "1"}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"parallel_tool_calls": false}), "parallel_tool_calls"),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (json!({"audio": {"voice": "alloy"}}), "audio"),
            (
                json!({"prediction": {"type": "content", "content": "x"}}),
                "prediction",
            ),
            (json!({"reasoning_effort": "low"}), "reasoning_effort"),
            (json!({"web_search_options": {}}), "web_search_options"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"function_call": "auto"}), "function_call"),
        ] {
            let mut body = json!({"model": "m", "messages": user_hi()});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let e = translate(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{extra}");
            assert_eq!(e.param.as_deref(), Some(param), "{extra}");
            assert!(e.message.contains("Cohere"), "{extra}: {}", e.message);
        }
        // Values that ask for nothing Cohere lacks pass.
        let b = translate(
            json!({"model": "m", "messages": user_hi(), "logit_bias": {},
            "modalities": ["text"], "parallel_tool_calls": true, "top_logprobs": null}),
        )
        .unwrap();
        assert!(b.get("logit_bias").is_none());
    }

    /// Cohere's reference answer for a tool-calling request (a reasoning model: thinking
    /// content, two tool calls), with a text item added.
    #[test]
    fn response_translation() {
        let req = request(
            RequestKind::Chat,
            "cohere",
            json!({"model": "command-a-reasoning-08-2025"}),
        );
        let body = json!({
            "id": "9e5f00aa-bf1e-481a-abe3-0eceac18c3ec",
            "message": {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I will first find the sales summary for 29th September 2023."},
                    {"type": "text", "text": "Let me check. "},
                    {"type": "text", "text": "One moment."},
                ],
                "tool_plan": "I will look up the sales.",
                "tool_calls": [
                    {"id": "query_daily_sales_report_hgxxmkby3wta", "type": "function",
                     "function": {"name": "query_daily_sales_report", "arguments": "{\"day\": \"2023-09-29\"}"}},
                    {"id": "query_product_catalog_rpg0z5h8yyz2", "type": "function",
                     "function": {"name": "query_product_catalog", "arguments": "{\"category\": \"Electronics\"}"}},
                ],
                "citations": [],
            },
            "finish_reason": "TOOL_CALL",
            "usage": {
                "billed_units": {"input_tokens": 127, "output_tokens": 69},
                "tokens": {"input_tokens": 1032, "output_tokens": 124},
            },
        });
        let resp = cohere()
            .parse_response(&req, body.to_string().as_bytes())
            .unwrap();
        assert_eq!(resp.status, 200);
        let b = Value::Object(resp.body);
        assert_eq!(b["id"], "9e5f00aa-bf1e-481a-abe3-0eceac18c3ec");
        assert_eq!(b["object"], "chat.completion");
        assert_eq!(b["model"], "command-a-reasoning-08-2025");
        assert!(b["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            b["choices"],
            json!([{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check. One moment.",
                    "tool_calls": [
                        {"id": "query_daily_sales_report_hgxxmkby3wta", "type": "function",
                         "function": {"name": "query_daily_sales_report", "arguments": "{\"day\": \"2023-09-29\"}"}},
                        {"id": "query_product_catalog_rpg0z5h8yyz2", "type": "function",
                         "function": {"name": "query_product_catalog", "arguments": "{\"category\": \"Electronics\"}"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }])
        );
        assert_eq!(
            b["usage"],
            json!({"prompt_tokens": 1032, "completion_tokens": 124, "total_tokens": 1156})
        );
        assert_eq!(resp.usage, Some(Usage::new(1032, 124, 1156)));

        for (reason, expected) in [
            ("COMPLETE", "stop"),
            ("STOP_SEQUENCE", "stop"),
            ("MAX_TOKENS", "length"),
            ("TOOL_CALL", "tool_calls"),
            ("SOMETHING_NEW", "stop"),
        ] {
            let body = json!({"id": "c14c80c3", "finish_reason": reason,
                "message": {"role": "assistant", "content": []}});
            let resp = cohere()
                .parse_response(&req, body.to_string().as_bytes())
                .unwrap();
            assert_eq!(resp.body["choices"][0]["finish_reason"], expected);
            assert_eq!(resp.body["choices"][0]["message"]["content"], Value::Null);
            assert!(resp.body["choices"][0]["message"]
                .get("tool_calls")
                .is_none());
            assert_eq!(resp.usage, Some(Usage::new(0, 0, 0)));
        }

        // Only billed units (older answers): counted from those.
        let body = json!({"id": "x", "finish_reason": "COMPLETE",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "LLMs stand for Large Language Models"}]},
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 26.0}}});
        let resp = cohere()
            .parse_response(&req, body.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            resp.body["choices"][0]["message"]["content"],
            "LLMs stand for Large Language Models"
        );
        assert_eq!(resp.usage, Some(Usage::new(5, 26, 31)));
    }

    #[test]
    fn failed_generations_are_errors() {
        let req = request(RequestKind::Chat, "cohere", json!({"model": "m"}));
        for (reason, status, code) in [
            (
                "ERROR",
                StatusCode::BAD_GATEWAY,
                "upstream_generation_error",
            ),
            ("TIMEOUT", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        ] {
            let body = json!({"id": "x", "finish_reason": reason,
                "message": {"role": "assistant", "content": [{"type": "text", "text": "partial"}]}});
            let e = cohere()
                .parse_response(&req, body.to_string().as_bytes())
                .unwrap_err();
            assert_eq!(e.status, status);
            assert_eq!(e.code.as_deref(), Some(code));
            assert_eq!(e.fault, Fault::Upstream);
            assert!(e.retryable);
            assert!(e.message.contains(reason), "{}", e.message);
        }
    }

    #[test]
    fn malformed_responses() {
        let req = request(RequestKind::Chat, "cohere", json!({"model": "m"}));
        for body in [
            &b"<html>"[..],
            b"[1]",
            b"{\"id\": ",
            br#"{"id": "x", "finish_reason": "COMPLETE"}"#,
        ] {
            let e = cohere().parse_response(&req, body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_GATEWAY);
            assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
            assert!(!e.retryable);
        }
        let req = request(RequestKind::Embedding, "cohere", json!({"model": "m"}));
        let e = cohere()
            .parse_response(&req, br#"{"id": "x", "embeddings": {"int8": [[1]]}}"#)
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
        let req = request(RequestKind::Completion, "cohere", json!({"model": "m"}));
        assert!(cohere().parse_response(&req, b"{}").is_err());
    }

    /// Feed `sse` text through the real SSE parser and the decoder.
    fn decode_stream(text: &str) -> (Vec<Value>, bool) {
        let req = request(
            RequestKind::Chat,
            "cohere",
            json!({"model": "command-a-03-2025", "stream": true}),
        );
        let mut d = cohere().stream_decoder(&req);
        let mut parser = SseParser::default();
        let mut chunks = Vec::new();
        let mut done = false;
        for frame in parser.push(text.as_bytes()).unwrap() {
            for ev in d.decode(&Frame::Sse(frame)).unwrap() {
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
        (chunks, done)
    }

    fn deltas(chunks: &[Value]) -> Vec<(Value, Value)> {
        chunks
            .iter()
            .filter(|c| !c["choices"].as_array().unwrap().is_empty())
            .map(|c| {
                assert_eq!(c["choices"][0]["index"], 0);
                (
                    c["choices"][0]["delta"].clone(),
                    c["choices"][0]["finish_reason"].clone(),
                )
            })
            .collect()
    }

    /// Cohere's reference text stream (`event:` names and `type`s as documented).
    const TEXT_STREAM: &str = concat!(
        "event: message-start\n",
        "data: {\"id\":\"29f14a5a-11de-4cae-9800-25e4747408ea\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n",
        "event: content-start\n",
        "data: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n",
        "event: content-delta\n",
        "data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"LL\"}}},\"logprobs\":null}\n\n",
        "event: content-delta\n",
        "data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Ms\"}}}}\n\n",
        "event: content-end\n",
        "data: {\"type\":\"content-end\",\"index\":0}\n\n",
        "event: message-end\n",
        "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":26},\"tokens\":{\"input_tokens\":71,\"output_tokens\":26}}}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn stream_decoding_text() {
        let (chunks, done) = decode_stream(TEXT_STREAM);
        assert!(done);
        for c in &chunks {
            assert_eq!(c["id"], "29f14a5a-11de-4cae-9800-25e4747408ea");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "command-a-03-2025");
            assert!(c["created"].is_u64());
        }
        assert_eq!(
            deltas(&chunks),
            vec![
                (json!({"role": "assistant", "content": ""}), Value::Null),
                (json!({"content": "LL"}), Value::Null),
                (json!({"content": "Ms"}), Value::Null),
                (json!({}), json!("stop")),
            ]
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 71, "completion_tokens": 26, "total_tokens": 97})
        );
    }

    /// Cohere's reference tool-calling stream: a tool plan, then two calls whose arguments
    /// arrive in pieces; the SSE `event:` lines are left out (proxies drop them).
    const TOOL_STREAM: &str = concat!(
        "data: {\"type\":\"message-start\",\"id\":\"fba98ad3-e5a1-413c-a8de-84fbf9baabf7\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n",
        "data: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will search for the weather.\"}}}\n\n",
        "data: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_p1t92w7gfgq7\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\n    \\\"\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"location\\\": \\\"Madrid\\\"}\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-end\",\"index\":0}\n\n",
        "data: {\"type\":\"tool-call-start\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_ay6nmvjgp9vn\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-delta\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"location\\\": \\\"Brasilia\\\"}\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-end\",\"index\":1}\n\n",
        "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{\"input_tokens\":37.0,\"output_tokens\":28.0},\"tokens\":{\"input_tokens\":913.0,\"output_tokens\":83.0}}}}\n\n",
    );

    #[test]
    fn stream_decoding_with_tool_calls() {
        let (chunks, done) = decode_stream(TOOL_STREAM);
        assert!(done);
        assert_eq!(
            deltas(&chunks),
            vec![
                (json!({"role": "assistant", "content": ""}), Value::Null),
                (
                    json!({"tool_calls": [{"index": 0, "id": "get_weather_p1t92w7gfgq7", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\n    \""}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "location\": \"Madrid\"}"}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 1, "id": "get_weather_ay6nmvjgp9vn", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"location\": \"Brasilia\"}"}}]}),
                    Value::Null
                ),
                (json!({}), json!("tool_calls")),
            ]
        );
        let last = chunks.last().unwrap();
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 913, "completion_tokens": 83, "total_tokens": 996})
        );
    }

    #[test]
    fn stream_tool_indexes_are_renumbered() {
        // Cohere's indexes are its own: whatever they are, OpenAI's count 0, 1, ...
        let stream = concat!(
            "data: {\"type\":\"message-start\",\"id\":\"m\"}\n\n",
            "data: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"thinking\",\"thinking\":\"hmm\"}}}}\n\n",
            "data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"thinking\":\" more\"}}}}\n\n",
            "data: {\"type\":\"tool-call-start\",\"index\":3,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}}}}\n\n",
            "data: {\"type\":\"tool-call-start\",\"index\":7,\"delta\":{\"message\":{\"tool_calls\":[{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"g\"}}]}}}\n\n",
            "data: {\"type\":\"tool-call-delta\",\"index\":3,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"x\"}}}}}\n\n",
            "data: {\"type\":\"tool-call-delta\",\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"y\"}}}}}\n\n",
            "data: {\"type\":\"citation-start\",\"index\":0,\"delta\":{\"message\":{\"citations\":{\"start\":0,\"end\":1,\"text\":\"x\",\"sources\":[]}}}}\n\n",
            "data: {\"type\":\"citation-end\",\"index\":0}\n\n",
            "data: {\"type\":\"debug\",\"prompt\":\"...\"}\n\n",
            "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\"}}\n\n",
        );
        let (chunks, done) = decode_stream(stream);
        assert!(done);
        let tool_deltas: Vec<Value> = deltas(&chunks)
            .into_iter()
            .filter_map(|(d, _)| d.get("tool_calls").cloned())
            .collect();
        assert_eq!(
            tool_deltas,
            vec![
                json!([{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]),
                json!([{"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": ""}}]),
                json!([{"index": 0, "function": {"arguments": "x"}}]),
                // No index: the call that started last.
                json!([{"index": 1, "function": {"arguments": "y"}}]),
            ]
        );
        // Thinking is not content.
        assert!(deltas(&chunks)
            .iter()
            .all(|(d, _)| d.get("content").is_none_or(|c| c == "")));
        assert_eq!(
            chunks.last().unwrap()["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
    }

    #[test]
    fn stream_errors() {
        let req = request(RequestKind::Chat, "cohere", json!({"model": "m"}));
        let decoder = || cohere().stream_decoder(&req);

        let e = decoder()
            .decode(&sse(
                "message-end",
                r#"{"type":"message-end","delta":{"error":"internal error while generating","finish_reason":"ERROR","usage":{}}}"#,
            ))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.message, "internal error while generating");
        assert_eq!(e.code.as_deref(), Some("upstream_generation_error"));
        assert!(e.retryable);
        assert_eq!(e.fault, Fault::Upstream);

        let e = decoder()
            .decode(&sse(
                "",
                r#"{"type":"message-end","delta":{"finish_reason":"ERROR"}}"#,
            ))
            .unwrap_err();
        assert!(e.message.contains("ERROR"), "{}", e.message);

        let e = decoder()
            .decode(&sse(
                "",
                r#"{"type":"message-end","delta":{"finish_reason":"TIMEOUT"}}"#,
            ))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(e.retryable);

        // An error message with a finish reason that does not admit it.
        let e = decoder()
            .decode(&sse(
                "",
                r#"{"type":"message-end","delta":{"error":"boom","finish_reason":"COMPLETE"}}"#,
            ))
            .unwrap_err();
        assert_eq!(e.message, "boom");

        let e = decoder()
            .decode(&sse("error", r#"{"message":"overloaded"}"#))
            .unwrap_err();
        assert_eq!(e.message, "overloaded");
        assert!(e.retryable);

        let e = decoder()
            .decode(&sse("content-delta", "{not json"))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
        assert!(!e.retryable);

        let e = decoder()
            .decode(&sse(
                "",
                r#"{"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{"}}}}}"#,
            ))
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));

        let e = decoder()
            .decode(&Frame::Event(crate::providers::EventMessage::default()))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);

        let mut d = decoder();
        assert!(matches!(
            &d.decode(&sse("", "")).unwrap()[..],
            [StreamEvent::Skip]
        ));
        assert!(matches!(
            &d.decode(&sse("", "[DONE]")).unwrap()[..],
            [StreamEvent::Done]
        ));
    }

    #[test]
    fn junk_never_panics() {
        let req = request(RequestKind::Chat, "cohere", json!({"model": "m"}));
        let junk = [
            "null",
            "1",
            "[]",
            "\"s\"",
            "{}",
            r#"{"type":null}"#,
            r#"{"type":5}"#,
            r#"{"type":"message-start","id":5,"delta":null}"#,
            r#"{"type":"content-delta","delta":{"message":{"content":{"text":5}}}}"#,
            r#"{"type":"content-delta","delta":{"message":"x"}}"#,
            r#"{"type":"tool-call-start","index":-1,"delta":{"message":{"tool_calls":5}}}"#,
            r#"{"type":"tool-call-start","index":18446744073709551615}"#,
            r#"{"type":"tool-call-delta","delta":{"message":{"tool_calls":[]}}}"#,
            r#"{"type":"message-end","delta":{"finish_reason":7,"usage":{"tokens":{"input_tokens":1e300,"output_tokens":-4}}}}"#,
            r#"{"type":"message-end","delta":"x"}"#,
            r#"{"type":"error","error":{"nested":true}}"#,
        ];
        let mut d = cohere().stream_decoder(&req);
        for data in junk {
            let _ = d.decode(&sse("", data));
        }
        let bodies = [
            "null",
            "{}",
            r#"{"message":5}"#,
            r#"{"message":{"content":"x","tool_calls":{}}}"#,
            r#"{"message":{"content":[5,{"type":"text","text":5}],"tool_calls":[5,{"function":5}]},"finish_reason":5,"usage":{"tokens":5}}"#,
        ];
        for body in bodies {
            let _ = cohere().parse_response(&req, body.as_bytes());
            let ereq = request(RequestKind::Embedding, "cohere", json!({"model": "m"}));
            let _ = cohere().parse_response(&ereq, body.as_bytes());
            for status in [400, 429, 498, 499, 500, 501, 599] {
                let _ = cohere().parse_error(
                    StatusCode::from_u16(status).unwrap(),
                    &HeaderMap::new(),
                    body.as_bytes(),
                );
            }
        }
        for body in [
            json!({"model": "m", "messages": [null, {"role": 1}]}),
            json!({"model": "m", "input": [null]}),
        ] {
            let _ = translate(body.clone());
            let _ = embed_body(body);
        }
    }

    #[test]
    fn usage_saturates() {
        let big = json!({"tokens": {"input_tokens": u64::MAX, "output_tokens": 1e300}});
        assert_eq!(
            usage_of(Some(&big)),
            Usage::new(u32::MAX, u32::MAX, u32::MAX)
        );
        let odd = json!({"tokens": {"input_tokens": -3, "output_tokens": "5"}, "billed_units": {"output_tokens": 9}});
        // A count that is not one reads as 0 rather than failing the answer; a missing
        // one falls back to the billed units.
        assert_eq!(usage_of(Some(&odd)), Usage::new(0, 0, 0));
        let partial = json!({"tokens": {"input_tokens": 4}, "billed_units": {"output_tokens": 9}});
        assert_eq!(usage_of(Some(&partial)), Usage::new(4, 9, 13));
        assert_eq!(usage_of(None), Usage::new(0, 0, 0));
    }

    #[test]
    fn embed_request() {
        let b = embed_body(
            json!({"model": "embed-v4.0", "input": ["hello", "goodbye"], "dimensions": 256,
            "encoding_format": "float", "user": "u-1"}),
        )
        .unwrap();
        assert_eq!(
            b,
            json!({
                "model": "embed-v4.0",
                "texts": ["hello", "goodbye"],
                "input_type": "search_document",
                "embedding_types": ["float"],
                "output_dimension": 256,
            })
        );
        let b = embed_body(
            json!({"model": "embed-v4.0", "input": "hello", "input_type": "search_query"}),
        )
        .unwrap();
        assert_eq!(b["texts"], json!(["hello"]));
        assert_eq!(b["input_type"], "search_query");
        assert!(b.get("output_dimension").is_none());

        let too_many: Vec<String> = (0..=MAX_EMBED_TEXTS).map(|i| i.to_string()).collect();
        for (body, param) in [
            (json!({"model": "e"}), "input"),
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": 5}), "input"),
            (json!({"model": "e", "input": too_many}), "input"),
            (json!({"model": "e", "input": [1, 2, 3]}), "input[0]"),
            (json!({"model": "e", "input": ["a", [1, 2]]}), "input[1]"),
            (
                json!({"model": "e", "input": ["a", {"text": "b"}]}),
                "input[1]",
            ),
            (
                json!({"model": "e", "input": "a", "input_type": 1}),
                "input_type",
            ),
            (
                json!({"model": "e", "input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"model": "e", "input": "a", "dimensions": 0}),
                "dimensions",
            ),
        ] {
            let e = embed_body(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    /// Cohere's reference embed answer (vectors shortened).
    #[test]
    fn embed_response() {
        let req = request(
            RequestKind::Embedding,
            "cohere",
            json!({"model": "embed-v4.0"}),
        );
        let body = json!({
            "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
            "texts": ["hello", "goodbye"],
            "embeddings": {"float": [[0.016296387, -0.008354187], [-0.04699707, 0.00013196468]]},
            "meta": {
                "api_version": {"version": "2", "is_experimental": true},
                "warnings": ["You are using an experimental version"],
                "billed_units": {"input_tokens": 2},
            },
            "response_type": "embeddings_by_type",
        });
        let resp = cohere()
            .parse_response(&req, body.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            Value::Object(resp.body),
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [0.016296387, -0.008354187]},
                    {"object": "embedding", "index": 1, "embedding": [-0.04699707, 0.00013196468]},
                ],
                "model": "embed-v4.0",
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            })
        );
        assert_eq!(resp.usage, Some(Usage::new(2, 0, 2)));

        let body = json!({"id": "x", "response_type": "embeddings_floats", "embeddings": [[0.5]]});
        let resp = cohere()
            .parse_response(&req, body.to_string().as_bytes())
            .unwrap();
        assert_eq!(resp.body["data"][0]["embedding"], json!([0.5]));
        assert_eq!(resp.usage, Some(Usage::new(0, 0, 0)));
    }

    #[test]
    fn error_parsing() {
        let c = cohere();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let e = c.parse_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"id":"1a2b","message":"You are using a Trial key, which is limited to 10 API calls / minute."}"#,
        );
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            e.message,
            "You are using a Trial key, which is limited to 10 API calls / minute."
        );
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.fault, Fault::Upstream);
        assert_eq!(e.type_str(), "rate_limit_error");

        for status in [400, 401, 403, 404, 422] {
            let e = c.parse_error(
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                br#"{"message":"invalid api token"}"#,
            );
            assert_eq!(e.status.as_u16(), status);
            assert_eq!(e.message, "invalid api token");
            assert!(!e.retryable, "{status}");
        }
        for status in [500, 503, 504] {
            let e = c.parse_error(
                StatusCode::from_u16(status).unwrap(),
                &headers,
                br#"{"message":"internal server error"}"#,
            );
            assert_eq!(e.status.as_u16(), status);
            assert!(e.retryable, "{status}");
            assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        }

        let e = c.parse_error(
            StatusCode::from_u16(498).unwrap(),
            &HeaderMap::new(),
            br#"{"message":"blocked input: please adjust your prompt and try again"}"#,
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code.as_deref(), Some("cohere_invalid_token"));
        assert_eq!(
            e.message,
            "blocked input: please adjust your prompt and try again"
        );
        assert!(!e.retryable);

        let e = c.parse_error(
            StatusCode::from_u16(499).unwrap(),
            &HeaderMap::new(),
            br#"{"message":"request cancelled"}"#,
        );
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code.as_deref(), Some("cohere_request_cancelled"));
        assert!(e.retryable);

        let e = c.parse_error(
            StatusCode::NOT_IMPLEMENTED,
            &HeaderMap::new(),
            br#"{"message":"not implemented"}"#,
        );
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        assert!(!e.retryable);

        let e = c.parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"error":{"message":"from a proxy"}}"#,
        );
        assert_eq!(e.message, "from a proxy");

        let e = c.parse_error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"upstream connect error",
        );
        assert!(e.retryable);
        assert_eq!(e.message, "upstream connect error");
        let e = c.parse_error(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert!(e.message.contains("503"), "{}", e.message);
    }
}
