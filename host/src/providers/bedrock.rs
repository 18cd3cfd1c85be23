//! AWS Bedrock. Sits behind [`build`](super::build) for `bedrock` providers: chat requests
//! become Converse calls (`/model/{id}/converse`, `/converse-stream`), embeddings become
//! InvokeModel calls (`/model/{id}/invoke`) in the Titan or Cohere body, and answers,
//! stream events and errors come back in the OpenAI shape. `/v1/completions` is not
//! offered: Converse is a chat API, and a prompt squeezed into one user turn would answer
//! in the chat template's voice rather than continue the text.
//!
//! The credentials layer signs the finished request (SigV4, service `bedrock`), and the
//! framing layer cuts streamed answers into CRC-checked event-stream messages; this file
//! only translates JSON.
//!
//! OpenAI fields with no Converse counterpart are decided one by one (see
//! `refuse_unsupported`): the ones a client relies on to read the answer (`n > 1`,
//! `logprobs`, JSON `response_format`, audio output, `logit_bias`) are refused with a 400;
//! sampling hints (`frequency_penalty`, `presence_penalty`, `seed`, `parallel_tool_calls`,
//! `user`, `stream_options`, ...) are dropped, because Converse has no field for them,
//! each model family names them differently, and refusing them would break an OpenAI
//! request that falls back to Bedrock; `top_k` goes to `additionalModelRequestFields`.

// Helpers return the `GatewayError` the `Provider` trait returns; errors are the cold
// path, and boxing them here would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use crate::config::{ProviderConfig, ProviderSettings};
use crate::error::GatewayError;
use crate::providers::openai::{build_upstream_error, error_text, parse_object, to_bytes};
use crate::providers::{
    encode_path_segment, Auth, EventMessage, Frame, Framing, Provider, StreamDecoder, StreamEvent,
    UpstreamRequest,
};
use crate::schema::{RequestKind, StreamChunk, UnifiedRequest, UnifiedResponse, Usage};

/// What Bedrock answers a ConverseStream call with.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// One Bedrock provider (one region, optionally one ARN prefix).
pub struct Bedrock {
    name: String,
    base_url: String,
    arn: Option<String>,
}

impl Bedrock {
    pub fn new(cfg: &ProviderConfig) -> Self {
        let settings = match &cfg.settings {
            ProviderSettings::Bedrock(b) => Some(b),
            _ => None,
        };
        // Validation fills `base_url` from the region; a config built by hand (tests,
        // future callers) may leave it empty, and the region still says where to go.
        let base_url = match settings {
            Some(b) if cfg.network.base_url.is_empty() => {
                format!("https://bedrock-runtime.{}.amazonaws.com", b.region)
            }
            _ => cfg.network.base_url.trim_end_matches('/').to_owned(),
        };
        Bedrock {
            name: cfg.name.clone(),
            base_url,
            arn: settings.and_then(|b| b.arn.clone()),
        }
    }

    /// `{base}/model/{id}/{operation}`. The id (`<arn>/<model>` with an ARN prefix) is one
    /// percent-encoded path segment: Bedrock reads `%2F` and `%3A` back, and a model name
    /// can not add segments or a query.
    fn url(&self, model: &str, operation: &str) -> String {
        let id = match &self.arn {
            Some(arn) => format!("{arn}/{model}"),
            None => model.to_owned(),
        };
        format!(
            "{}/model/{}/{operation}",
            self.base_url,
            encode_path_segment(&id)
        )
    }

    fn unsupported(&self, kind: RequestKind) -> GatewayError {
        GatewayError::bad_request(
            None,
            format!(
                "provider {} does not support {} requests (Bedrock serves chat completions and embeddings)",
                self.name,
                kind.as_str()
            ),
        )
    }
}

impl Provider for Bedrock {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kind: RequestKind) -> bool {
        matches!(kind, RequestKind::Chat | RequestKind::Embedding)
    }

    fn auth(&self) -> Auth {
        Auth::SigV4 { service: "bedrock" }
    }

    fn framing(&self) -> Framing {
        Framing::EventStream
    }

    fn build_request(&self, req: &UnifiedRequest) -> Result<UpstreamRequest, GatewayError> {
        let model = req.target.model.as_str();
        if model.is_empty() {
            return Err(bad("model", "a Bedrock model id is required"));
        }
        let (url, body, accept) = match req.kind {
            RequestKind::Chat => {
                let body = to_converse(req)?;
                if req.stream {
                    (self.url(model, "converse-stream"), body, EVENT_STREAM)
                } else {
                    (self.url(model, "converse"), body, "application/json")
                }
            }
            RequestKind::Embedding => {
                let family = embed_family(model)?;
                let body = to_embed(family, model, &req.body)?;
                (self.url(model, "invoke"), body, "application/json")
            }
            RequestKind::Completion => return Err(self.unsupported(req.kind)),
        };
        let mut up = UpstreamRequest::post_json(url, to_bytes(&body)?);
        up.headers.insert(ACCEPT, HeaderValue::from_static(accept));
        Ok(up)
    }

    fn parse_response(
        &self,
        req: &UnifiedRequest,
        body: &[u8],
    ) -> Result<UnifiedResponse, GatewayError> {
        let answer = parse_object(&self.name, body)?;
        let out = match req.kind {
            RequestKind::Chat => from_converse(&self.name, &answer, &req.target.model)?,
            RequestKind::Embedding => {
                let family = embed_family(&req.target.model)?;
                from_embed(&self.name, family, &answer, &req.target.model)?
            }
            RequestKind::Completion => return Err(self.unsupported(req.kind)),
        };
        Ok(UnifiedResponse::ok(out))
    }

    fn stream_decoder(&self, req: &UnifiedRequest) -> Box<dyn StreamDecoder> {
        Box::new(ConverseStreamDecoder::new(&self.name, &req.target.model))
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let obj = parsed.as_ref().and_then(Value::as_object);
        let message = obj
            .and_then(message_of)
            .unwrap_or_else(|| error_text(status, body));
        let error_type = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .and_then(aws_type_name)
            .or_else(|| {
                obj.and_then(|o| o.get("__type"))
                    .and_then(Value::as_str)
                    .and_then(aws_type_name)
            });
        aws_error(status, headers, message, error_type)
    }
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI chat → Converse

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(Some(param), message)
}

/// Translate an OpenAI chat body to a Converse body (the model is in the path, and the
/// endpoint says whether the answer streams, so neither is in the body).
fn to_converse(req: &UnifiedRequest) -> Result<Map<String, Value>, GatewayError> {
    let src = &req.body;
    let messages = match src.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(bad("messages", "`messages` must be an array")),
        None => return Err(bad("messages", "`messages` is required")),
    };
    refuse_unsupported(src)?;
    let conv = translate_messages(messages)?;
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(conv.messages));
    if !conv.system.is_empty() {
        out.insert("system".into(), Value::Array(conv.system));
    }
    let inference = inference_config(src)?;
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(extra) = additional_fields(src)? {
        out.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    if let Some(tools) = tool_config(src, conv.has_tool_blocks)? {
        out.insert("toolConfig".into(), tools);
    }
    Ok(out)
}

/// Refuse the OpenAI fields whose absence would change what the client reads back.
/// Everything else Converse cannot take is dropped (see the module docs for why).
fn refuse_unsupported(src: &Map<String, Value>) -> Result<(), GatewayError> {
    match src.get("n") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(1) => {}
            Some(_) => return Err(bad("n", "Bedrock models return one choice; `n` must be 1")),
            None => return Err(bad("n", "`n` must be a positive integer")),
        },
    }
    match src.get("logit_bias") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(_) => {
            return Err(bad(
                "logit_bias",
                "`logit_bias` is not supported by Bedrock: token ids are OpenAI tokenizer ids",
            ))
        }
    }
    if src.get("logprobs") == Some(&Value::Bool(true)) {
        return Err(bad(
            "logprobs",
            "Bedrock's Converse API does not return log probabilities",
        ));
    }
    match src.get("top_logprobs") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(0) => {}
        Some(_) => {
            return Err(bad(
                "top_logprobs",
                "Bedrock's Converse API does not return log probabilities",
            ))
        }
    }
    match src.get("response_format") {
        None | Some(Value::Null) => {}
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(other) => {
                return Err(bad(
                    "response_format.type",
                    format!("response_format `{other}` is not supported by Bedrock's Converse API; describe the format in the prompt or use a tool"),
                ))
            }
            None => {
                return Err(bad(
                    "response_format.type",
                    "`response_format` needs a string `type`",
                ))
            }
        },
    }
    if src.get("audio").is_some_and(|a| !a.is_null()) {
        return Err(bad(
            "audio",
            "Bedrock's Converse API does not answer with audio",
        ));
    }
    if let Some(Value::Array(m)) = src.get("modalities") {
        if m.iter().any(|x| x.as_str() == Some("audio")) {
            return Err(bad(
                "modalities",
                "Bedrock's Converse API does not answer with audio",
            ));
        }
    }
    Ok(())
}

/// `inferenceConfig`: the sampling fields every Converse model takes.
fn inference_config(src: &Map<String, Value>) -> Result<Map<String, Value>, GatewayError> {
    let mut out = Map::new();
    let max_tokens = src
        .get("max_tokens")
        .filter(|v| !v.is_null())
        .map(|v| ("max_tokens", v))
        .or_else(|| {
            src.get("max_completion_tokens")
                .filter(|v| !v.is_null())
                .map(|v| ("max_completion_tokens", v))
        });
    // Unlike Anthropic's API, Converse does not require a limit: left out, the model's
    // own maximum applies.
    if let Some((param, v)) = max_tokens {
        let n = v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(param, format!("`{param}` must be a positive integer")))?;
        out.insert("maxTokens".into(), n.into());
    }
    for (field, key) in [("temperature", "temperature"), ("top_p", "topP")] {
        match src.get(field) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => {
                out.insert(key.into(), v.clone());
            }
            Some(_) => return Err(bad(field, format!("`{field}` must be a number"))),
        }
    }
    match src.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stopSequences".into(), json!([s]));
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
                out.insert("stopSequences".into(), Value::Array(seqs));
            }
        }
        Some(_) => {
            return Err(bad(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    }
    Ok(out)
}

/// `additionalModelRequestFields`: model-native fields. Only `top_k`, which Anthropic and
/// Mistral models on Bedrock take under that name; a model without it answers with its own
/// validation error, which is better than sampling differently without a word.
fn additional_fields(src: &Map<String, Value>) -> Result<Option<Map<String, Value>>, GatewayError> {
    match src.get("top_k") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let k = v
                .as_u64()
                .ok_or_else(|| bad("top_k", "`top_k` must be a non-negative integer"))?;
            let mut out = Map::new();
            out.insert("top_k".into(), k.into());
            Ok(Some(out))
        }
    }
}

/// The translated conversation.
struct Conversation {
    system: Vec<Value>,
    messages: Vec<Value>,
    /// Whether any message holds a `toolUse` or `toolResult` block: Converse then needs
    /// the tool definitions even when the client said `tool_choice: "none"`.
    has_tool_blocks: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

fn translate_messages(messages: &[Value]) -> Result<Conversation, GatewayError> {
    let mut system = Vec::new();
    let mut has_tool_blocks = false;
    // Consecutive same-role messages share one turn because Converse requires user and
    // assistant turns to alternate (tool results are user turns).
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
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
        let cat = format!("{at}.content");
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = text_only(content, &cat)?;
                // Converse rejects blank system blocks.
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
                continue;
            }
            "user" => {
                if content.is_null() {
                    return Err(bad(&cat, "user messages need `content`"));
                }
                (Role::User, content_blocks(content, &cat, Role::User)?)
            }
            "assistant" => {
                let mut blocks = content_blocks(content, &cat, Role::Assistant)?;
                if let Some(calls) = msg.get("tool_calls").filter(|v| !v.is_null()) {
                    let uses = tool_use_blocks(calls, &format!("{at}.tool_calls"))?;
                    has_tool_blocks |= !uses.is_empty();
                    blocks.extend(uses);
                }
                (Role::Assistant, blocks)
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
                    text_only(content, &cat)?
                };
                has_tool_blocks = true;
                (
                    Role::User,
                    vec![json!({"toolResult": {"toolUseId": id, "content": [{"text": text}]}})],
                )
            }
            other => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("unsupported role `{other}` for Bedrock"),
                ))
            }
        };
        // An empty message (an assistant's `""`) is left out before merging, so the turns
        // around it still alternate.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(bad(
            "messages",
            "at least one user or assistant message with content is required",
        ));
    }
    let messages = turns
        .into_iter()
        .map(|(role, blocks)| json!({"role": role.as_str(), "content": blocks}))
        .collect();
    Ok(Conversation {
        system,
        messages,
        has_tool_blocks,
    })
}

/// Text of a string or an array of text parts (system and tool messages).
fn text_only(content: &Value, at: &str) -> Result<String, GatewayError> {
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

/// Content blocks of a user or assistant message. Empty text is dropped: Converse rejects
/// blank text blocks, and assistants with tool calls often send `""`.
fn content_blocks(content: &Value, at: &str, role: Role) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
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
                            blocks.push(json!({ "text": text }));
                        }
                    }
                    "image_url" if role == Role::User => blocks.push(image_block(part, &pat)?),
                    "image_url" => {
                        return Err(bad(
                            &format!("{pat}.type"),
                            "Bedrock takes images in user messages only",
                        ))
                    }
                    other => {
                        return Err(bad(
                            &format!("{pat}.type"),
                            format!("content part type `{other}` is not supported by Bedrock"),
                        ))
                    }
                }
            }
            Ok(blocks)
        }
        _ => Err(bad(at, "content must be a string or an array of parts")),
    }
}

/// An image block from an OpenAI `image_url` part. Converse takes the bytes inline (base64
/// in JSON) and never fetches a URL, so only data URLs can be translated.
fn image_block(part: &Value, at: &str) -> Result<Value, GatewayError> {
    let image = part.get("image_url");
    let uat = format!("{at}.image_url.url");
    let url = image
        .and_then(|i| i.get("url"))
        .or(image)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&uat, "image parts need a `url`"))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let Some(media_type) = meta.strip_suffix(";base64").filter(|m| !m.is_empty()) else {
            return Err(bad(
                &uat,
                "data URLs must look like `data:image/png;base64,<data>`",
            ));
        };
        let format = match media_type.to_ascii_lowercase().as_str() {
            "image/png" => "png",
            "image/jpeg" | "image/jpg" => "jpeg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => {
                return Err(bad(
                    &uat,
                    format!(
                    "image type `{media_type}` is not supported by Bedrock (png, jpeg, gif, webp)"
                ),
                ))
            }
        };
        if data.is_empty() {
            return Err(bad(&uat, "the data URL holds no image data"));
        }
        return Ok(json!({"image": {"format": format, "source": {"bytes": data}}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Err(bad(
            &uat,
            "Bedrock's Converse API does not fetch image URLs; send the image inline as a base64 data URL (`data:image/png;base64,...`)",
        ));
    }
    Err(bad(&uat, "image URLs must be base64 data URLs"))
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
        blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
    }
    Ok(blocks)
}

/// OpenAI's `tool_choice`, as far as Converse can say it.
enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

fn parse_tool_choice(choice: Option<&Value>) -> Result<Option<ToolChoice>, GatewayError> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(bad("tool_choice", format!("unknown tool_choice `{other}`"))),
        },
        Some(Value::Object(obj)) => obj
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|name| Some(ToolChoice::Function(name.to_owned())))
            .ok_or_else(|| {
                bad(
                    "tool_choice.function.name",
                    "tool_choice needs a function name",
                )
            }),
        Some(_) => Err(bad(
            "tool_choice",
            "`tool_choice` must be a string or an object",
        )),
    }
}

fn translate_tools(tools: Option<&Value>) -> Result<Vec<Value>, GatewayError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(bad("tools", "`tools` must be an array")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("tools[{i}].type"),
                "only `function` tools are supported by Bedrock",
            ));
        }
        let f = tool.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("tools[{i}].function.name"), "tools need a name"))?;
        let mut spec = Map::new();
        spec.insert("name".into(), Value::String(name.to_owned()));
        // Converse rejects an empty description.
        if let Some(d) = f
            .and_then(|f| f.get("description"))
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        {
            spec.insert("description".into(), Value::String(d.to_owned()));
        }
        let schema = f
            .and_then(|f| f.get("parameters"))
            .filter(|p| p.is_object())
            .cloned()
            // Converse requires a schema; OpenAI allows tools without parameters.
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        spec.insert("inputSchema".into(), json!({ "json": schema }));
        out.push(json!({ "toolSpec": spec }));
    }
    Ok(out)
}

/// `toolConfig` from `tools` and `tool_choice`.
///
/// `auto` sends no `toolChoice`: it is Converse's default, and models without tool
/// choice (Meta Llama, Cohere Command R) refuse the field even when it says `auto`.
/// `none` has no Converse form, so the tools are left out, which is the one way to
/// keep the model from calling them; but Converse refuses a conversation holding tool
/// calls or results without a `toolConfig`, so then the tools are sent (without a choice)
/// and the model may call one.
fn tool_config(
    src: &Map<String, Value>,
    has_tool_blocks: bool,
) -> Result<Option<Value>, GatewayError> {
    let tools = translate_tools(src.get("tools"))?;
    let choice = parse_tool_choice(src.get("tool_choice"))?;
    if tools.is_empty() {
        return match choice {
            Some(ToolChoice::Required | ToolChoice::Function(_)) => Err(bad(
                "tool_choice",
                "`tool_choice` asks for a tool call but `tools` is empty",
            )),
            _ => Ok(None),
        };
    }
    let tool_choice = match choice {
        None | Some(ToolChoice::Auto) => None,
        Some(ToolChoice::None) if !has_tool_blocks => return Ok(None),
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Function(name)) => {
            let declared = tools
                .iter()
                .any(|t| t["toolSpec"]["name"].as_str() == Some(name.as_str()));
            if !declared {
                return Err(bad(
                    "tool_choice.function.name",
                    format!("tool_choice names `{name}`, which is not in `tools`"),
                ));
            }
            Some(json!({"tool": {"name": name}}))
        }
    };
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(c) = tool_choice {
        config.insert("toolChoice".into(), c);
    }
    Ok(Some(Value::Object(config)))
}

// ---------------------------------------------------------------------------------------
// Response: Converse → OpenAI chat.completion

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Bedrock's answers carry no id (only the `x-amzn-requestid` header, which the provider
/// does not see); clients expect one.
fn completion_id() -> String {
    format!("chatcmpl-bedrock-{:032x}", rand::random::<u128>())
}

/// A 2xx answer that is JSON but not the shape Bedrock documents. Not retryable: the same
/// request would most likely get the same answer.
fn unexpected(provider: &str, what: &str) -> GatewayError {
    GatewayError::upstream(
        StatusCode::BAD_GATEWAY,
        format!("provider {provider} returned an answer the gateway cannot read: {what}"),
    )
    .with_code("upstream_malformed_response")
    .retryable(false)
}

fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        None => Value::Null,
        Some("max_tokens" | "model_context_window_exceeded") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("guardrail_intervened" | "content_filtered") => "content_filter".into(),
        // end_turn, stop_sequence and reasons newer than this code.
        Some(_) => "stop".into(),
    }
}

fn count(v: Option<&Value>) -> u32 {
    v.and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// OpenAI usage from Converse's `usage`. Cache reads and writes are reported apart from
/// `inputTokens` and count as prompt tokens, as OpenAI counts them; the total is never
/// less than the parts (whether `totalTokens` includes the cache differs by model).
fn usage_of(u: Option<&Value>) -> Usage {
    let get = |k: &str| count(u.and_then(|u| u.get(k)));
    let prompt = get("inputTokens")
        .saturating_add(get("cacheReadInputTokens"))
        .saturating_add(get("cacheWriteInputTokens"));
    let completion = get("outputTokens");
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: get("totalTokens").max(prompt.saturating_add(completion)),
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn from_converse(
    provider: &str,
    answer: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, GatewayError> {
    let content = answer
        .get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .ok_or_else(|| unexpected(provider, "no `output.message.content` array"))?;
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            has_text = true;
            text.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            let input = tool.get("input").cloned().unwrap_or_else(|| json!({}));
            tool_calls.push(json!({
                "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": tool.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": input.to_string(),
                },
            }));
        }
        // reasoningContent, citations and other blocks have no OpenAI chat equivalent.
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
    Ok(object(json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(answer.get("stopReason").and_then(Value::as_str)),
        }],
        "usage": usage_of(answer.get("usage")).to_openai(),
    })))
}

// ---------------------------------------------------------------------------------------
// Streaming: ConverseStream events → OpenAI chunks

/// Stamps one made-up id on every chunk (Bedrock sends none), and maps Converse content
/// block indexes to OpenAI tool call indexes (text blocks have indexes too, tool calls
/// count from 0).
struct ConverseStreamDecoder {
    provider: String,
    id: String,
    model: String,
    created: u64,
    /// Content block index → tool call index, for `toolUse` input deltas.
    tool_blocks: HashMap<u64, usize>,
}

impl ConverseStreamDecoder {
    fn new(provider: &str, model: &str) -> Self {
        ConverseStreamDecoder {
            provider: provider.to_owned(),
            id: completion_id(),
            model: model.to_owned(),
            created: now_secs(),
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
        body.extend(object(extra));
        StreamEvent::Chunk(StreamChunk { body })
    }

    fn event(&mut self, msg: &EventMessage) -> Result<Vec<StreamEvent>, GatewayError> {
        let Some(kind) = msg.event_type.as_deref() else {
            return Ok(vec![StreamEvent::Skip]);
        };
        let ev = if msg.payload.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            parse_object(&self.provider, &msg.payload)?
        };
        let index = || {
            ev.get("contentBlockIndex")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let out = match kind {
            "messageStart" => {
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            "contentBlockStart" => match ev.get("start").and_then(|s| s.get("toolUse")) {
                Some(tool) => {
                    let tool_index = self.tool_blocks.len();
                    self.tool_blocks.insert(index(), tool_index);
                    vec![self.chunk(
                        json!({"tool_calls": [{
                            "index": tool_index,
                            "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {
                                "name": tool.get("name").cloned().unwrap_or(Value::Null),
                                "arguments": "",
                            },
                        }]}),
                        Value::Null,
                    )]
                }
                None => vec![StreamEvent::Skip],
            },
            "contentBlockDelta" => {
                let delta = ev.get("delta");
                if let Some(t) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                    vec![self.chunk(json!({ "content": t }), Value::Null)]
                } else if let Some(input) = delta
                    .and_then(|d| d.get("toolUse"))
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                {
                    match self.tool_blocks.get(&index()) {
                        Some(&tool_index) => vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": tool_index,
                                "function": {"arguments": input},
                            }]}),
                            Value::Null,
                        )],
                        // Input for a block that never started as a tool call.
                        None => vec![StreamEvent::Skip],
                    }
                } else {
                    // reasoningContent and citation deltas have no OpenAI chat equivalent.
                    vec![StreamEvent::Skip]
                }
            }
            "messageStop" => vec![self.chunk(
                json!({}),
                finish_reason(Some(
                    ev.get("stopReason")
                        .and_then(Value::as_str)
                        .unwrap_or("end_turn"),
                )),
            )],
            // The last event: usage arrives after the stop reason.
            "metadata" => vec![
                self.chunk_body(json!({
                    "choices": [],
                    "usage": usage_of(ev.get("usage")).to_openai(),
                })),
                StreamEvent::Done,
            ],
            // contentBlockStop and event types newer than this code.
            _ => vec![StreamEvent::Skip],
        };
        Ok(out)
    }
}

impl StreamDecoder for ConverseStreamDecoder {
    fn decode(&mut self, frame: &Frame) -> Result<Vec<StreamEvent>, GatewayError> {
        let msg = match frame {
            Frame::Event(m) => m,
            Frame::Sse(_) => {
                return Err(unexpected(
                    &self.provider,
                    "Server-Sent Events where an AWS event-stream was expected",
                ))
            }
        };
        match msg.message_type.as_str() {
            "event" => self.event(msg),
            "exception" => {
                let message = exception_message(&msg.payload);
                Err(stream_error(
                    &self.provider,
                    msg.exception_type.as_deref(),
                    message,
                ))
            }
            "error" => Err(stream_error(
                &self.provider,
                msg.error_code.as_deref(),
                msg.error_message.clone().filter(|m| !m.is_empty()),
            )),
            // Message types newer than this code carry nothing for the client.
            _ => Ok(vec![StreamEvent::Skip]),
        }
    }
}

/// The message of an exception's JSON payload, or its text when it is not JSON. A
/// `modelStreamErrorException` may carry only the model's own `originalMessage`.
fn exception_message(payload: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(obj)) => message_of(&obj).or_else(|| {
            obj.get("originalMessage")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
        }),
        _ if payload.iter().all(u8::is_ascii_whitespace) => None,
        _ => Some(error_text(StatusCode::BAD_GATEWAY, payload)),
    }
}

/// An exception inside a stream, with the status the same exception has as an HTTP answer
/// (the stream already answered 200): it decides retryability, and what the client sees
/// when nothing was sent yet.
fn stream_error(provider: &str, kind: Option<&str>, message: Option<String>) -> GatewayError {
    let kind = kind.filter(|k| !k.is_empty());
    let lower = kind.map(str::to_ascii_lowercase);
    let status = match lower.as_deref() {
        Some("throttlingexception") => StatusCode::TOO_MANY_REQUESTS,
        Some("serviceunavailableexception") => StatusCode::SERVICE_UNAVAILABLE,
        Some("internalserverexception") => StatusCode::INTERNAL_SERVER_ERROR,
        Some("modelstreamerrorexception") => StatusCode::FAILED_DEPENDENCY,
        Some("validationexception") => StatusCode::BAD_REQUEST,
        Some("modeltimeoutexception") => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    // The stream names exceptions in lower camel case (`throttlingException`); HTTP
    // answers in upper (`ThrottlingException`). One spelling for clients and metrics.
    let error_type = kind.map(|k| {
        let mut chars = k.chars();
        chars.next().map_or_else(String::new, |c| {
            c.to_ascii_uppercase().to_string() + chars.as_str()
        })
    });
    let message = message.unwrap_or_else(|| {
        format!(
            "provider {provider} reported {} mid-stream",
            kind.unwrap_or("an error")
        )
    });
    aws_error(status, &HeaderMap::new(), message, error_type)
}

// ---------------------------------------------------------------------------------------
// Errors

/// `message` (most errors) or `Message` (some auth errors) of an AWS error body.
fn message_of(obj: &Map<String, Value>) -> Option<String> {
    obj.get("message")
        .or_else(|| obj.get("Message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}

/// The bare exception name of `x-amzn-errortype`
/// (`ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/`) or of a
/// body's `__type` (`com.amazon.coral.service#UnrecognizedClientException`).
fn aws_type_name(raw: &str) -> Option<String> {
    let name = raw.split(':').next().unwrap_or(raw);
    let name = name.rsplit('#').next().unwrap_or(name).trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Whether an AWS exception is worth retrying on the same target, where its name says
/// more than its status: ModelNotReadyException is a 429 that clears by itself, and a
/// proxy's 5xx around a ValidationException would not.
fn retryable_type(name: &str) -> Option<bool> {
    match name.to_ascii_lowercase().as_str() {
        "throttlingexception"
        | "serviceunavailableexception"
        | "modelnotreadyexception"
        | "internalserverexception"
        | "modeltimeoutexception"
        | "modelstreamerrorexception" => Some(true),
        "validationexception"
        | "accessdeniedexception"
        | "resourcenotfoundexception"
        | "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "expiredtokenexception" => Some(false),
        _ => None,
    }
}

fn aws_error(
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
    error_type: Option<String>,
) -> GatewayError {
    let retryable = error_type.as_deref().and_then(retryable_type);
    let e = build_upstream_error(status, headers, message, error_type, None, None);
    match retryable {
        Some(r) => e.retryable(r),
        None => e,
    }
}

// ---------------------------------------------------------------------------------------
// Embeddings: OpenAI → InvokeModel (Titan, Cohere) → OpenAI

/// The InvokeModel body families the gateway speaks; the model id says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedFamily {
    /// `amazon.titan-embed-*`: one text per call.
    Titan,
    /// `cohere.embed-*`: a list of texts per call.
    Cohere,
}

/// The family of an embedding model id, or a 400 for models whose body the gateway does
/// not know. Cross-region inference profiles put a geography first
/// (`us.cohere.embed-v4:0`).
fn embed_family(model: &str) -> Result<EmbedFamily, GatewayError> {
    let unprefixed = model.split_once('.').map(|(_, rest)| rest);
    for m in std::iter::once(model).chain(unprefixed) {
        if m.starts_with("amazon.titan-embed") {
            return Ok(EmbedFamily::Titan);
        }
        if m.starts_with("cohere.embed") {
            return Ok(EmbedFamily::Cohere);
        }
    }
    Err(bad(
        "model",
        format!("embedding model `{model}` is not supported on Bedrock; use an amazon.titan-embed-* or cohere.embed-* model"),
    ))
}

/// The texts of `input`. Token arrays are refused: Bedrock's embedding models take text.
fn embed_inputs(body: &Map<String, Value>) -> Result<Vec<&str>, GatewayError> {
    let items = match body.get("input") {
        None | Some(Value::Null) => return Err(bad("input", "`input` is required")),
        Some(Value::String(s)) => return Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(bad(
                "input",
                "`input` must be a string or an array of strings",
            ))
        }
    };
    if items.is_empty() {
        return Err(bad("input", "`input` must not be empty"));
    }
    if items.iter().any(|i| i.is_number() || i.is_array()) {
        return Err(bad(
            "input",
            "token arrays are not supported by Bedrock embedding models; send the text",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .ok_or_else(|| bad(&format!("input[{i}]"), "each input must be a string"))
        })
        .collect()
}

fn to_embed(
    family: EmbedFamily,
    model: &str,
    src: &Map<String, Value>,
) -> Result<Map<String, Value>, GatewayError> {
    let inputs = embed_inputs(src)?;
    match src.get("encoding_format") {
        None | Some(Value::Null) => {}
        // base64 is made from the floats by the gateway for every provider.
        Some(Value::String(f)) if f == "float" || f == "base64" => {}
        Some(_) => {
            return Err(bad(
                "encoding_format",
                "`encoding_format` must be `float` or `base64`",
            ))
        }
    }
    let dimensions = match src.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("dimensions", "`dimensions` must be a positive integer"))?,
        ),
    };
    let mut out = Map::new();
    match family {
        EmbedFamily::Titan => {
            let [text] = inputs[..] else {
                return Err(bad(
                    "input",
                    format!("Titan embedding models take one text per request and this one has {}; send one request per text, or use a cohere.embed-* model for lists", inputs.len()),
                ));
            };
            out.insert("inputText".into(), text.into());
            if let Some(n) = dimensions {
                if !model.contains("titan-embed-text-v2") {
                    return Err(bad(
                        "dimensions",
                        "`dimensions` is supported by amazon.titan-embed-text-v2 only among Titan models",
                    ));
                }
                out.insert("dimensions".into(), n.into());
            }
        }
        EmbedFamily::Cohere => {
            out.insert("texts".into(), json!(inputs));
            // Cohere's models need to know what the texts are for; OpenAI's API has no such
            // field, so a client may send Cohere's own, else documents are assumed.
            let input_type = match src.get("input_type") {
                None | Some(Value::Null) => "search_document",
                Some(Value::String(t)) => t.as_str(),
                Some(_) => return Err(bad("input_type", "`input_type` must be a string")),
            };
            out.insert("input_type".into(), input_type.into());
            if let Some(t) = src.get("truncate").and_then(Value::as_str) {
                out.insert("truncate".into(), t.into());
            }
            if let Some(n) = dimensions {
                if !model.contains("embed-v4") {
                    return Err(bad(
                        "dimensions",
                        "`dimensions` is supported by cohere.embed-v4 only among Cohere models",
                    ));
                }
                out.insert("output_dimension".into(), n.into());
            }
        }
    }
    Ok(out)
}

fn from_embed(
    provider: &str,
    family: EmbedFamily,
    answer: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, GatewayError> {
    // Float vectors, whether the answer lists them bare or by type
    // (`embeddingsByType.float`, Cohere's `embeddings.float`).
    let (vectors, tokens): (Vec<&Value>, u32) = match family {
        EmbedFamily::Titan => {
            let v = answer
                .get("embedding")
                .or_else(|| answer.get("embeddingsByType").and_then(|e| e.get("float")))
                .filter(|v| v.is_array())
                .ok_or_else(|| unexpected(provider, "no `embedding` array"))?;
            (vec![v], count(answer.get("inputTextTokenCount")))
        }
        EmbedFamily::Cohere => {
            let list = match answer.get("embeddings") {
                Some(Value::Array(list)) => list,
                Some(Value::Object(by_type)) => match by_type.get("float") {
                    Some(Value::Array(list)) => list,
                    _ => return Err(unexpected(provider, "no `embeddings.float` array")),
                },
                _ => return Err(unexpected(provider, "no `embeddings` array")),
            };
            // Bedrock's Cohere answers carry no token count; Cohere's own API puts one in
            // `meta.billed_units`, used when present.
            let tokens = count(
                answer
                    .get("meta")
                    .and_then(|m| m.get("billed_units"))
                    .and_then(|b| b.get("input_tokens")),
            );
            (list.iter().collect(), tokens)
        }
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Ok(object(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{BedrockConfig, ProviderKind};
    use crate::error::Fault;
    use crate::providers::openai::tests::{provider_config, request};
    use crate::providers::sse;
    use bytes::Bytes;
    use http::header::{AUTHORIZATION, RETRY_AFTER};
    use std::time::Duration;

    const BASE: &str = "https://bedrock-runtime.us-east-1.amazonaws.com";

    fn bedrock() -> Bedrock {
        Bedrock::new(&provider_config(ProviderKind::Bedrock, BASE))
    }

    fn bedrock_with(base_url: &str, arn: Option<&str>) -> Bedrock {
        let mut cfg = provider_config(ProviderKind::Bedrock, base_url);
        cfg.settings = ProviderSettings::Bedrock(BedrockConfig {
            region: "eu-west-3".to_owned(),
            secret_access_key: None,
            session_token: None,
            arn: arn.map(str::to_owned),
        });
        Bedrock::new(&cfg)
    }

    fn chat(body: Value) -> UnifiedRequest {
        request(RequestKind::Chat, "bedrock", body)
    }

    fn translate(body: Value) -> Result<Value, GatewayError> {
        let up = bedrock().build_request(&chat(body))?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    fn hi() -> Value {
        json!([{"role": "user", "content": "hi"}])
    }

    #[test]
    fn kinds_auth_and_framing() {
        let b = bedrock();
        assert!(b.supports(RequestKind::Chat));
        assert!(b.supports(RequestKind::Embedding));
        assert!(!b.supports(RequestKind::Completion));
        assert!(matches!(b.auth(), Auth::SigV4 { service: "bedrock" }));
        assert_eq!(b.framing(), Framing::EventStream);

        let req = request(
            RequestKind::Completion,
            "bedrock",
            json!({"model": "meta.llama3-1-70b-instruct-v1:0", "prompt": "Once"}),
        );
        let e = b.build_request(&req).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("completion"), "{}", e.message);
        let e = b.parse_response(&req, b"{}").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn urls_encode_the_model_id_as_one_segment() {
        let b = bedrock();
        let up = b
            .build_request(&chat(json!({
                "model": "anthropic.claude-3-5-sonnet-20241022-v2:0", "messages": hi(),
            })))
            .unwrap();
        assert_eq!(
            up.url,
            format!("{BASE}/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse")
        );
        assert_eq!(up.method, http::Method::POST);
        assert_eq!(up.headers["content-type"], "application/json");
        assert_eq!(up.headers["accept"], "application/json");
        // No credentials: the SigV4 layer signs the finished request.
        assert!(up.headers.get(AUTHORIZATION).is_none());

        let up = b
            .build_request(&chat(json!({
                "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0", "messages": hi(),
                "stream": true,
            })))
            .unwrap();
        assert_eq!(
            up.url,
            format!("{BASE}/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream")
        );
        assert_eq!(up.headers["accept"], "application/vnd.amazon.eventstream");
        // The endpoint, not the body, says whether the answer streams.
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert!(body.get("stream").is_none() && body.get("model").is_none());

        let arn = "arn:aws:bedrock:eu-west-3:123456789012:application-inference-profile";
        let b = bedrock_with("http://127.0.0.1:9", Some(arn));
        let up = b
            .build_request(&chat(
                json!({"model": "amazon.nova-pro-v1:0", "messages": hi()}),
            ))
            .unwrap();
        assert_eq!(
            up.url,
            "http://127.0.0.1:9/model/arn%3Aaws%3Abedrock%3Aeu-west-3%3A123456789012%3Aapplication-inference-profile%2Famazon.nova-pro-v1%3A0/converse"
        );

        // A model name cannot escape its segment.
        let up = bedrock()
            .build_request(&chat(json!({"model": "../x?y#z", "messages": hi()})))
            .unwrap();
        assert_eq!(up.url, format!("{BASE}/model/..%2Fx%3Fy%23z/converse"));

        // Without a base_url (a config built by hand) the region says where to go.
        let up = bedrock_with("", None)
            .build_request(&chat(json!({"model": "m", "messages": hi()})))
            .unwrap();
        assert_eq!(
            up.url,
            "https://bedrock-runtime.eu-west-3.amazonaws.com/model/m/converse"
        );

        let e = bedrock()
            .build_request(&chat(json!({"model": "", "messages": hi()})))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
    }

    #[test]
    fn simple_translation() {
        let body = translate(json!({
            "model": "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "system", "content": ""},
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "there"}, {"type": "text", "text": ""}]},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "still there?"},
            ],
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop": "END",
            "stream": false,
            // Dropped: no Converse field (module docs).
            "frequency_penalty": 0.5,
            "presence_penalty": 0.1,
            "seed": 7,
            "user": "u-1",
            "parallel_tool_calls": false,
            "stream_options": {"include_usage": true},
            "n": 1,
            "logprobs": false,
            "logit_bias": {},
            "response_format": {"type": "text"},
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "messages": [{"role": "user", "content": [
                    {"text": "hi"}, {"text": "there"}, {"text": "still there?"},
                ]}],
                "system": [{"text": "Be brief."}, {"text": "Be kind."}],
                "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
                "additionalModelRequestFields": {"top_k": 40},
            })
        );

        // No limits asked for: no inferenceConfig at all (the model's own maximum applies).
        let body = translate(json!({"model": "m", "messages": hi()})).unwrap();
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
        );

        let b = translate(json!({"model": "m", "messages": hi(), "max_tokens": 10, "max_completion_tokens": 20, "stop": ["a", "b"]})).unwrap();
        assert_eq!(
            b["inferenceConfig"],
            json!({"maxTokens": 10, "stopSequences": ["a", "b"]})
        );
    }

    #[test]
    fn images_tools_and_tool_results() {
        let body = translate(json!({
            "model": "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
                    {"type": "image_url", "image_url": "data:image/webp;base64,UklGRg=="},
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "tooluse_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "tooluse_2", "type": "function", "function": {"name": "time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "tooluse_2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "time", "description": "", "strict": true}},
            ],
            "tool_choice": "required",
        }))
        .unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [
                    {"text": "What is this and the weather?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                    {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
                    {"image": {"format": "webp", "source": {"bytes": "UklGRg=="}}},
                ]},
                {"role": "assistant", "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "tooluse_2", "name": "time", "input": {}}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}]}},
                    {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "noon"}]}},
                    {"text": "thanks"},
                ]},
            ])
        );
        assert_eq!(
            body["toolConfig"],
            json!({
                "tools": [
                    {"toolSpec": {"name": "weather", "description": "Weather by city", "inputSchema": {"json":
                        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}},
                    {"toolSpec": {"name": "time", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
                ],
                "toolChoice": {"any": {}},
            })
        );
    }

    #[test]
    fn tool_choice_forms() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let spec = json!([{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]);
        let config = |choice: Value| {
            translate(
                json!({"model": "m", "messages": hi(), "tools": tools, "tool_choice": choice}),
            )
            .unwrap()
            .get("toolConfig")
            .cloned()
        };
        // auto is Converse's default, and some models refuse an explicit toolChoice.
        assert_eq!(config(json!("auto")), Some(json!({"tools": spec})));
        assert_eq!(config(Value::Null), Some(json!({"tools": spec})));
        assert_eq!(
            config(json!("required")),
            Some(json!({"tools": spec, "toolChoice": {"any": {}}}))
        );
        assert_eq!(
            config(json!({"type": "function", "function": {"name": "f"}})),
            Some(json!({"tools": spec, "toolChoice": {"tool": {"name": "f"}}}))
        );
        // Converse has no "none": the tools stay out...
        assert_eq!(config(json!("none")), None);
        // ...unless the conversation holds tool blocks, which Converse refuses without them.
        let b = translate(json!({"model": "m", "tools": tools, "tool_choice": "none", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "done"},
        ]}))
        .unwrap();
        assert_eq!(b["toolConfig"], json!({"tools": spec}));

        // No tools: no toolConfig (Converse refuses an empty tool list).
        let b =
            translate(json!({"model": "m", "messages": hi(), "tools": [], "tool_choice": "auto"}))
                .unwrap();
        assert!(b.get("toolConfig").is_none());

        for (choice, param) in [
            (json!("sometimes"), "tool_choice"),
            (json!(3), "tool_choice"),
            (json!({"type": "function"}), "tool_choice.function.name"),
            (
                json!({"type": "function", "function": {"name": "g"}}),
                "tool_choice.function.name",
            ),
        ] {
            let e = translate(
                json!({"model": "m", "messages": hi(), "tools": tools, "tool_choice": choice}),
            )
            .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{choice}");
        }
        let e = translate(json!({"model": "m", "messages": hi(), "tool_choice": "required"}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let user = |content: Value| json!({"model": "m", "messages": [{"role": "user", "content": content}]});
        let with = |field: &str, v: Value| {
            let mut b = json!({"model": "m", "messages": hi()});
            b[field] = v;
            b
        };
        let cases = [
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": "hi"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": "only"}]}),
                "messages",
            ),
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
                json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                user(json!([{"type": "input_audio"}])),
                "messages[0].content[0].type",
            ),
            (
                user(json!([{"text": "no type"}])),
                "messages[0].content[0].type",
            ),
            (
                user(json!([{"type": "text"}])),
                "messages[0].content[0].text",
            ),
            (user(json!(5)), "messages[0].content"),
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]),
                ),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]),
                ),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}}])),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]),
                ),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {}}])),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}),
                "messages[1].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]}),
                "messages[0].tool_calls[0].id",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": {"id": "t"}}]}),
                "messages[0].tool_calls",
            ),
            (
                with("tools", json!([{"type": "code_interpreter"}])),
                "tools[0].type",
            ),
            (
                with("tools", json!([{"type": "function", "function": {}}])),
                "tools[0].function.name",
            ),
            (with("tools", json!({"type": "function"})), "tools"),
            (with("n", json!(2)), "n"),
            (with("n", json!("one")), "n"),
            (with("max_tokens", json!(-1)), "max_tokens"),
            (with("max_tokens", json!(0)), "max_tokens"),
            (
                with("max_completion_tokens", json!(1.5)),
                "max_completion_tokens",
            ),
            (with("temperature", json!("hot")), "temperature"),
            (with("top_p", json!([1])), "top_p"),
            (with("top_k", json!(-3)), "top_k"),
            (with("stop", json!(["a", 1])), "stop[1]"),
            (with("stop", json!({"a": 1})), "stop"),
            (with("logit_bias", json!({"50256": -100})), "logit_bias"),
            (with("logprobs", json!(true)), "logprobs"),
            (with("top_logprobs", json!(3)), "top_logprobs"),
            (
                with("response_format", json!({"type": "json_object"})),
                "response_format.type",
            ),
            (
                with(
                    "response_format",
                    json!({"type": "json_schema", "json_schema": {}}),
                ),
                "response_format.type",
            ),
            (
                with("response_format", json!("json")),
                "response_format.type",
            ),
            (with("audio", json!({"voice": "alloy"})), "audio"),
            (with("modalities", json!(["text", "audio"])), "modalities"),
        ];
        for (body, param) in cases {
            let e = translate(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.fault, Fault::Client, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }

        let e = translate(user(
            json!([{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]),
        ))
        .unwrap_err();
        assert!(e.message.contains("data URL"), "{}", e.message);
    }

    /// A Converse answer as documented: text, then a tool call.
    const ANSWER: &str = r#"{
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Let me check. "},
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "x"}}},
            {"text": "One moment."},
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "weather", "input": {"city": "Paris"}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 12, "outputTokens": 30, "totalTokens": 42},
        "metrics": {"latencyMs": 812}
    }"#;

    #[test]
    fn response_translation() {
        let model = "anthropic.claude-3-5-sonnet-20241022-v2:0";
        let req = chat(json!({"model": model}));
        let resp = bedrock().parse_response(&req, ANSWER.as_bytes()).unwrap();
        assert_eq!(resp.status, 200);
        let b = Value::Object(resp.body);
        let id = b["id"].as_str().unwrap();
        let hex = id.strip_prefix("chatcmpl-bedrock-").unwrap();
        assert!(
            hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(b["object"], "chat.completion");
        assert!(b["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(b["model"], model);
        let choice = &b["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], "Let me check. One moment.");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
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
        // Two answers, two ids.
        let again = bedrock().parse_response(&req, ANSWER.as_bytes()).unwrap();
        assert_ne!(again.body["id"], b["id"]);

        for (reason, expected) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
            ("something_new", "stop"),
        ] {
            let body = json!({"output": {"message": {"role": "assistant", "content": []}},
                "stopReason": reason, "usage": {"inputTokens": 1, "outputTokens": 0, "totalTokens": 1}});
            let resp = bedrock()
                .parse_response(&req, body.to_string().as_bytes())
                .unwrap();
            assert_eq!(resp.body["choices"][0]["finish_reason"], expected);
            assert_eq!(resp.body["choices"][0]["message"]["content"], Value::Null);
            assert!(resp.body["choices"][0]["message"]
                .get("tool_calls")
                .is_none());
        }
    }

    #[test]
    fn usage_counts_cache_and_saturates() {
        let u = usage_of(Some(&json!({
            "inputTokens": 10, "outputTokens": 5, "totalTokens": 15,
            "cacheReadInputTokens": 100, "cacheWriteInputTokens": 20,
        })));
        assert_eq!(u, Usage::new(130, 5, 135));
        let u = usage_of(Some(
            &json!({"inputTokens": u64::MAX, "outputTokens": 7, "totalTokens": 3}),
        ));
        assert_eq!(u.prompt_tokens, u32::MAX);
        assert_eq!(u.completion_tokens, 7);
        assert_eq!(u.total_tokens, u32::MAX);
        assert_eq!(usage_of(None), Usage::default());
        assert_eq!(
            usage_of(Some(&json!({"inputTokens": -1, "outputTokens": "x"}))),
            Usage::default()
        );
    }

    #[test]
    fn unreadable_answers_are_502s_not_panics() {
        let req = chat(json!({"model": "m"}));
        for body in [
            &b"<html>"[..],
            b"[1]",
            b"{}",
            br#"{"output": 5}"#,
            br#"{"output": {"message": {"content": "text"}}}"#,
        ] {
            let e = bedrock().parse_response(&req, body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_GATEWAY);
            assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
            assert!(!e.retryable);
        }
        // Odd blocks inside a readable answer are skipped, not fatal.
        let body = br#"{"output": {"message": {"content": [1, null, {"toolUse": 3}, {"text": 5}]}}, "stopReason": 9, "usage": []}"#;
        let resp = bedrock().parse_response(&req, body).unwrap();
        assert_eq!(resp.body["choices"][0]["finish_reason"], Value::Null);
    }

    fn event(event_type: &str, payload: &str) -> Frame {
        Frame::Event(EventMessage {
            message_type: "event".to_owned(),
            event_type: Some(event_type.to_owned()),
            payload: Bytes::from(payload.to_owned()),
            ..EventMessage::default()
        })
    }

    fn exception(exception_type: &str, payload: &str) -> Frame {
        Frame::Event(EventMessage {
            message_type: "exception".to_owned(),
            exception_type: Some(exception_type.to_owned()),
            payload: Bytes::from(payload.to_owned()),
            ..EventMessage::default()
        })
    }

    /// A ConverseStream answer as the event-stream layer hands it over: text, then two tool
    /// calls whose input arrives in pieces. Payloads are ConverseStreamOutput members as
    /// Bedrock sends them, padding field `p` included.
    fn stream_events() -> Vec<Frame> {
        vec![
            event(
                "messageStart",
                r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ","role":"assistant"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Checking"},"p":"abcdef"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":" now."},"p":"ab"}"#,
            ),
            event("contentBlockStop", r#"{"contentBlockIndex":0,"p":"abcd"}"#),
            event(
                "contentBlockStart",
                r#"{"contentBlockIndex":1,"p":"ab","start":{"toolUse":{"name":"weather","toolUseId":"tooluse_9"}}}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\": "}},"p":"a"}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}},"p":"a"}"#,
            ),
            event("contentBlockStop", r#"{"contentBlockIndex":1,"p":"abc"}"#),
            event(
                "contentBlockStart",
                r#"{"contentBlockIndex":2,"start":{"toolUse":{"name":"time","toolUseId":"tooluse_10"}}}"#,
            ),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{}"}}}"#,
            ),
            event("contentBlockStop", r#"{"contentBlockIndex":2}"#),
            event("messageStop", r#"{"p":"abcdefgh","stopReason":"tool_use"}"#),
            event(
                "metadata",
                r#"{"metrics":{"latencyMs":1234},"p":"abc","usage":{"inputTokens":25,"outputTokens":42,"totalTokens":67}}"#,
            ),
        ]
    }

    #[test]
    fn stream_decoding_with_tool_use() {
        let model = "anthropic.claude-3-5-sonnet-20241022-v2:0";
        let req = chat(json!({"model": model, "stream": true}));
        let mut d = bedrock().stream_decoder(&req);
        let mut chunks = Vec::new();
        let mut done = false;
        let mut committed_at = None;
        for frame in stream_events() {
            for ev in d.decode(&frame).unwrap() {
                match ev {
                    StreamEvent::Chunk(c) => {
                        assert!(!done, "chunk after Done");
                        if c.has_content() && committed_at.is_none() {
                            committed_at = Some(chunks.len());
                        }
                        chunks.push(Value::Object(c.body));
                    }
                    StreamEvent::Done => done = true,
                    StreamEvent::Skip => {}
                }
            }
        }
        assert!(done);
        // The opening role chunk does not commit the stream; the first text does.
        assert_eq!(committed_at, Some(1));
        let id = chunks[0]["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("chatcmpl-bedrock-"));
        for c in &chunks {
            assert_eq!(c["id"], id.as_str());
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], model);
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
                (json!({"content": " now."}), Value::Null),
                (
                    json!({"tool_calls": [{"index": 0, "id": "tooluse_9", "type": "function",
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
                (
                    json!({"tool_calls": [{"index": 1, "id": "tooluse_10", "type": "function",
                        "function": {"name": "time", "arguments": ""}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
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
    fn stream_skips_what_has_no_openai_form() {
        let req = chat(json!({"model": "m", "stream": true}));
        let mut d = bedrock().stream_decoder(&req);
        for frame in [
            event("contentBlockStop", r#"{"contentBlockIndex":0}"#),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"hmm"}}}"#,
            ),
            // Input for a block that never started as a tool call.
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":7,"delta":{"toolUse":{"input":"{}"}}}"#,
            ),
            event("contentBlockStart", r#"{"contentBlockIndex":0,"start":{}}"#),
            event("somethingNew", r#"{"x":1}"#),
            event("contentBlockStop", ""),
            Frame::Event(EventMessage {
                message_type: "event".to_owned(),
                ..EventMessage::default()
            }),
            Frame::Event(EventMessage {
                message_type: "ping".to_owned(),
                ..EventMessage::default()
            }),
        ] {
            assert!(
                matches!(&d.decode(&frame).unwrap()[..], [StreamEvent::Skip]),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn stream_exceptions_are_typed_errors() {
        let req = chat(json!({"model": "m", "stream": true}));
        for (kind, status, retryable) in [
            ("throttlingException", 429, true),
            ("serviceUnavailableException", 503, true),
            ("internalServerException", 500, true),
            ("modelStreamErrorException", 424, true),
            ("modelTimeoutException", 408, true),
            ("validationException", 400, false),
        ] {
            let mut d = bedrock().stream_decoder(&req);
            let e = d
                .decode(&exception(
                    kind,
                    r#"{"message":"Too many tokens, please wait before trying again."}"#,
                ))
                .unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{kind}");
            assert_eq!(e.retryable, retryable, "{kind}");
            assert_eq!(e.fault, Fault::Upstream);
            assert_eq!(
                e.message,
                "Too many tokens, please wait before trying again."
            );
            let upper = format!("{}{}", kind[..1].to_ascii_uppercase(), &kind[1..]);
            assert_eq!(e.type_str(), upper);
        }

        let mut d = bedrock().stream_decoder(&req);
        let e = d
            .decode(&exception(
                "modelStreamErrorException",
                r#"{"originalStatusCode":500}"#,
            ))
            .unwrap_err();
        assert!(
            e.message.contains("modelStreamErrorException"),
            "{}",
            e.message
        );
        let e = d
            .decode(&exception(
                "modelStreamErrorException",
                r#"{"originalStatusCode":500,"originalMessage":"model crashed"}"#,
            ))
            .unwrap_err();
        assert_eq!(e.message, "model crashed");
        assert!(e.retryable);
        let e = d
            .decode(&exception("mysteryException", "not json"))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(e.retryable);
        assert_eq!(e.message, "not json");
        let e = d.decode(&exception("", "")).unwrap_err();
        assert!(e.message.contains("an error"), "{}", e.message);

        let e = d
            .decode(&Frame::Event(EventMessage {
                message_type: "error".to_owned(),
                error_code: Some("ThrottlingException".to_owned()),
                error_message: Some("Rate exceeded".to_owned()),
                ..EventMessage::default()
            }))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retryable);
        assert_eq!(e.message, "Rate exceeded");
        assert_eq!(e.type_str(), "ThrottlingException");

        let e = d
            .decode(&event("contentBlockDelta", "{not json"))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
        assert!(!e.retryable);
        let e = d.decode(&event("messageStop", "[1]")).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));

        let e = d.decode(&sse("", "{}")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
    }

    fn embed(model: &str, extra: Value) -> Result<(String, Value), GatewayError> {
        let mut body = json!({"model": model});
        if let Value::Object(extra) = extra {
            body.as_object_mut().unwrap().extend(extra);
        }
        let up = bedrock().build_request(&request(RequestKind::Embedding, "bedrock", body))?;
        Ok((up.url, serde_json::from_slice(&up.body).unwrap()))
    }

    #[test]
    fn embedding_requests() {
        let (url, body) = embed(
            "amazon.titan-embed-text-v2:0",
            json!({"input": "hello", "dimensions": 256, "encoding_format": "float", "user": "u"}),
        )
        .unwrap();
        assert_eq!(
            url,
            format!("{BASE}/model/amazon.titan-embed-text-v2%3A0/invoke")
        );
        assert_eq!(body, json!({"inputText": "hello", "dimensions": 256}));

        for model in [
            "amazon.titan-embed-text-v1",
            "amazon.titan-embed-g1-text-02",
        ] {
            let (_, body) = embed(model, json!({"input": ["only one"]})).unwrap();
            assert_eq!(body, json!({"inputText": "only one"}));
            let e = embed(model, json!({"input": "x", "dimensions": 256})).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("dimensions"));
        }

        let e = embed("amazon.titan-embed-text-v2:0", json!({"input": ["a", "b"]})).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("input"));
        assert!(e.message.contains("one text per request"), "{}", e.message);

        let (url, body) = embed("cohere.embed-english-v3", json!({"input": ["a", "b"]})).unwrap();
        assert_eq!(url, format!("{BASE}/model/cohere.embed-english-v3/invoke"));
        assert_eq!(
            body,
            json!({"texts": ["a", "b"], "input_type": "search_document"})
        );
        let (_, body) = embed(
            "cohere.embed-multilingual-v3",
            json!({"input": "q", "input_type": "search_query", "truncate": "END"}),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"texts": ["q"], "input_type": "search_query", "truncate": "END"})
        );
        let (_, body) = embed(
            "us.cohere.embed-v4:0",
            json!({"input": "q", "dimensions": 512}),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"texts": ["q"], "input_type": "search_document", "output_dimension": 512})
        );

        for (model, extra, param) in [
            (
                "amazon.titan-embed-text-v2:0",
                json!({"input": [1, 2, 3]}),
                "input",
            ),
            (
                "cohere.embed-english-v3",
                json!({"input": [[1, 2], [3]]}),
                "input",
            ),
            ("cohere.embed-english-v3", json!({}), "input"),
            ("cohere.embed-english-v3", json!({"input": []}), "input"),
            (
                "cohere.embed-english-v3",
                json!({"input": {"a": 1}}),
                "input",
            ),
            (
                "cohere.embed-english-v3",
                json!({"input": ["a", null]}),
                "input[1]",
            ),
            (
                "cohere.embed-english-v3",
                json!({"input": "a", "input_type": 3}),
                "input_type",
            ),
            (
                "cohere.embed-english-v3",
                json!({"input": "a", "dimensions": 256}),
                "dimensions",
            ),
            (
                "cohere.embed-english-v3",
                json!({"input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                "amazon.titan-embed-text-v2:0",
                json!({"input": "a", "dimensions": 0}),
                "dimensions",
            ),
            ("amazon.nova-pro-v1:0", json!({"input": "a"}), "model"),
            (
                "openai.text-embedding-3-small",
                json!({"input": "a"}),
                "model",
            ),
        ] {
            let e = embed(model, extra.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{model} {extra}");
            assert_eq!(
                e.param.as_deref(),
                Some(param),
                "{model} {extra}: {}",
                e.message
            );
        }
        let e = embed("amazon.titan-embed-text-v2:0", json!({"input": [1, 2, 3]})).unwrap_err();
        assert!(e.message.contains("token arrays"), "{}", e.message);
    }

    #[test]
    fn embedding_responses() {
        let titan = request(
            RequestKind::Embedding,
            "bedrock",
            json!({"model": "amazon.titan-embed-text-v2:0"}),
        );
        let body = br#"{"embedding": [0.1, -0.2, 0.3], "inputTextTokenCount": 4, "embeddingsByType": {"float": [0.1, -0.2, 0.3]}}"#;
        let resp = bedrock().parse_response(&titan, body).unwrap();
        assert_eq!(
            Value::Object(resp.body),
            json!({
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}],
                "model": "amazon.titan-embed-text-v2:0",
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            })
        );
        assert_eq!(resp.usage, Some(Usage::new(4, 0, 4)));
        let resp = bedrock()
            .parse_response(
                &titan,
                br#"{"embeddingsByType": {"float": [1.0]}, "inputTextTokenCount": 1}"#,
            )
            .unwrap();
        assert_eq!(resp.body["data"][0]["embedding"], json!([1.0]));

        let cohere = request(
            RequestKind::Embedding,
            "bedrock",
            json!({"model": "cohere.embed-english-v3"}),
        );
        let body = br#"{"embeddings": [[0.016, -0.008], [0.046, -0.023]], "id": "1c62213a-1f15-46f1-ac62-36f6bbaf3972", "response_type": "embeddings_floats", "texts": ["hello world", "test text"]}"#;
        let resp = bedrock().parse_response(&cohere, body).unwrap();
        assert_eq!(
            Value::Object(resp.body),
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [0.016, -0.008]},
                    {"object": "embedding", "index": 1, "embedding": [0.046, -0.023]},
                ],
                "model": "cohere.embed-english-v3",
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            })
        );
        let body = br#"{"embeddings": {"float": [[0.5]]}, "id": "x", "response_type": "embeddings_by_type", "texts": ["a"], "meta": {"billed_units": {"input_tokens": 3}}}"#;
        let resp = bedrock().parse_response(&cohere, body).unwrap();
        assert_eq!(resp.body["data"][0]["embedding"], json!([0.5]));
        assert_eq!(resp.usage, Some(Usage::new(3, 0, 3)));

        for (req, body) in [
            (&titan, &br#"{"inputTextTokenCount": 1}"#[..]),
            (&titan, br#"{"embedding": 3}"#),
            (&cohere, br#"{"embeddings": {"int8": [[1]]}}"#),
            (&cohere, br#"{"embeddings": "x"}"#),
            (&cohere, b"nope"),
        ] {
            let e = bedrock().parse_response(req, body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_GATEWAY);
            assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
        }
    }

    #[test]
    fn error_parsing() {
        let b = bedrock();
        let headers = |t: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-amzn-errortype", HeaderValue::from_static(t));
            h
        };
        let mut h =
            headers("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/");
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let e = b.parse_error(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            e.message,
            "Too many requests, please wait before trying again."
        );
        assert_eq!(e.type_str(), "ThrottlingException");
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(e.fault, Fault::Upstream);

        for (status, kind, retryable) in [
            (429, "ModelNotReadyException", true),
            (500, "InternalServerException", true),
            (503, "ServiceUnavailableException", true),
            (408, "ModelTimeoutException", true),
            (400, "ValidationException", false),
            (403, "AccessDeniedException", false),
            (404, "ResourceNotFoundException", false),
            (403, "UnrecognizedClientException", false),
            (403, "InvalidSignatureException", false),
            (424, "ModelErrorException", false),
            // A proxy's 5xx does not make a validation error worth retrying.
            (502, "ValidationException", false),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let raw = format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/");
            let mut h = HeaderMap::new();
            h.insert("x-amzn-errortype", HeaderValue::from_str(&raw).unwrap());
            let e = b.parse_error(status, &h, br#"{"message":"nope"}"#);
            assert_eq!(e.status, status, "{kind}");
            assert_eq!(e.type_str(), kind);
            assert_eq!(e.retryable, retryable, "{kind}");
            assert_eq!(e.message, "nope");
        }

        // The body's `__type` when the header is missing; `Message` from auth errors.
        let e = b.parse_error(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            br#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","Message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!(e.type_str(), "UnrecognizedClientException");
        assert_eq!(
            e.message,
            "The security token included in the request is invalid."
        );
        assert!(!e.retryable);

        // The model id the client sent comes back in the message; the status is kept.
        let e = b.parse_error(
            StatusCode::BAD_REQUEST,
            &headers("ValidationException"),
            br#"{"message":"The provided model identifier is invalid."}"#,
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.type_str(), "ValidationException");

        let e = b.parse_error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"upstream connect error",
        );
        assert!(e.retryable);
        assert_eq!(e.message, "upstream connect error");
        assert_eq!(e.error_type, None);
        let e = b.parse_error(StatusCode::SERVICE_UNAVAILABLE, &headers(":"), b"");
        assert!(e.message.contains("503"), "{}", e.message);
        assert_eq!(e.error_type, None);
        assert!(e.retryable);
    }

    #[test]
    fn type_names() {
        assert_eq!(
            aws_type_name(
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
            )
            .as_deref(),
            Some("ThrottlingException")
        );
        assert_eq!(
            aws_type_name("com.amazon.coral.validate#ValidationException").as_deref(),
            Some("ValidationException")
        );
        assert_eq!(aws_type_name("  "), None);
        assert_eq!(aws_type_name(""), None);
    }
}
