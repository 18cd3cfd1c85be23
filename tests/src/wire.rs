//! What the mock answers, in each provider's wire format. Pure functions of the request, so
//! the same request always gets the same answer. OpenAI and Anthropic live here; Bedrock,
//! Vertex AI (Gemini) and Cohere each have a file of their own, sharing the reply rules below
//! (`echo:`, the `tool:NAME {json}` marker, tool results, limits), Anthropic's included.

pub mod bedrock;
pub mod cohere;
pub mod vertex;

use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

/// Which API a request path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAiChat,
    OpenAiCompletion,
    OpenAiEmbedding,
    OpenAiModels,
    AnthropicMessages,
    /// `POST /model/{modelId}/converse`
    BedrockConverse,
    /// `POST /model/{modelId}/converse-stream`
    BedrockConverseStream,
    /// `POST /model/{modelId}/invoke` (embeddings, or an Anthropic body)
    BedrockInvoke,
    /// Any other `/model/{modelId}/...`
    BedrockUnknown,
    /// `.../publishers/google/models/{m}:generateContent`
    GeminiGenerate,
    /// `.../publishers/google/models/{m}:streamGenerateContent`
    GeminiStream,
    /// `.../publishers/google/models/{m}:predict` (text embeddings)
    VertexEmbed,
    /// `.../publishers/anthropic/models/{m}:rawPredict`
    VertexClaude,
    /// `.../publishers/anthropic/models/{m}:streamRawPredict`
    VertexClaudeStream,
    /// Any other `/v1/projects/...` path
    VertexUnknown,
    /// `POST /v2/chat`
    CohereChat,
    /// `POST /v2/embed`
    CohereEmbed,
    Unknown,
}

/// Whose error bodies (and auth) a path gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Anthropic,
    Bedrock,
    Google,
    Cohere,
}

/// A classified path and what it names: the decoded model id (Bedrock, Vertex), project and
/// location (Vertex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub api: Api,
    pub model: Option<String>,
    pub project: Option<String>,
    pub location: Option<String>,
}

impl Route {
    /// Classify a raw (percent-encoded) path.
    pub fn of(path: &str) -> Route {
        let plain = |api| Route {
            api,
            model: None,
            project: None,
            location: None,
        };
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        if let Some(rest) = path.strip_prefix("/model/") {
            // The model id is one segment: an ARN's `/` arrives as `%2F`.
            let (id, op) = rest.split_once('/').unwrap_or((rest, ""));
            let api = match op.trim_end_matches('/') {
                "converse" => Api::BedrockConverse,
                "converse-stream" => Api::BedrockConverseStream,
                "invoke" => Api::BedrockInvoke,
                _ => Api::BedrockUnknown,
            };
            return Route {
                model: Some(decode(id)),
                ..plain(api)
            };
        }
        if path.starts_with("/v1/projects/") || path.starts_with("/v1beta1/projects/") {
            let segments: Vec<&str> = path.split('/').collect();
            let after = |name: &str| {
                segments
                    .iter()
                    .position(|s| *s == name)
                    .and_then(|i| segments.get(i + 1))
                    .map(|s| decode(s))
            };
            let publisher = after("publishers");
            let (model, method) = match after("models") {
                Some(m) => match m.rsplit_once(':') {
                    Some((model, method)) => (Some(model.to_owned()), method.to_owned()),
                    None => (Some(m), String::new()),
                },
                None => (None, String::new()),
            };
            let api = match (publisher.as_deref(), method.as_str()) {
                (Some("google"), "generateContent") => Api::GeminiGenerate,
                (Some("google"), "streamGenerateContent") => Api::GeminiStream,
                (Some("google"), "predict") => Api::VertexEmbed,
                (Some("anthropic"), "rawPredict") => Api::VertexClaude,
                (Some("anthropic"), "streamRawPredict") => Api::VertexClaudeStream,
                _ => Api::VertexUnknown,
            };
            return Route {
                api,
                model,
                project: after("projects"),
                location: after("locations"),
            };
        }
        match path.trim_end_matches('/') {
            "/v2/chat" => return plain(Api::CohereChat),
            "/v2/embed" => return plain(Api::CohereEmbed),
            _ => {}
        }
        plain(Api::of_openai_or_anthropic(path))
    }
}

impl Api {
    /// Classify a path: `/v1/chat/completions`, `/chat/completions`,
    /// `/openai/deployments/{d}/chat/completions` (Azure), `/v1/messages` (Anthropic),
    /// `/model/{id}/converse` (Bedrock), `/v1/projects/...` (Vertex AI), `/v2/chat` (Cohere) ...
    pub fn of(path: &str) -> Api {
        Route::of(path).api
    }

    fn of_openai_or_anthropic(path: &str) -> Api {
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Api::OpenAiChat
        } else if path.ends_with("/completions") {
            Api::OpenAiCompletion
        } else if path.ends_with("/embeddings") {
            Api::OpenAiEmbedding
        } else if path.ends_with("/models") {
            Api::OpenAiModels
        } else if path.ends_with("/messages") {
            Api::AnthropicMessages
        } else {
            Api::Unknown
        }
    }

    pub fn is_anthropic(self) -> bool {
        self.family() == Family::Anthropic
    }

    pub fn family(self) -> Family {
        match self {
            Api::AnthropicMessages | Api::VertexClaude | Api::VertexClaudeStream => {
                Family::Anthropic
            }
            Api::BedrockConverse
            | Api::BedrockConverseStream
            | Api::BedrockInvoke
            | Api::BedrockUnknown => Family::Bedrock,
            Api::GeminiGenerate | Api::GeminiStream | Api::VertexEmbed | Api::VertexUnknown => {
                Family::Google
            }
            Api::CohereChat | Api::CohereEmbed => Family::Cohere,
            Api::OpenAiChat
            | Api::OpenAiCompletion
            | Api::OpenAiEmbedding
            | Api::OpenAiModels
            | Api::Unknown => Family::OpenAi,
        }
    }

    /// Vertex AI paths, which take Google OAuth2 bearer tokens.
    pub fn is_vertex(self) -> bool {
        matches!(
            self,
            Api::GeminiGenerate
                | Api::GeminiStream
                | Api::VertexEmbed
                | Api::VertexClaude
                | Api::VertexClaudeStream
                | Api::VertexUnknown
        )
    }
}

/// The text of one message `content`: a string, or the text parts of a list of parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The last user message's text (chat and Anthropic), or the prompt (completions).
pub fn last_user_text(body: &Value) -> String {
    if let Some(prompt) = body.get("prompt") {
        return match prompt {
            Value::Array(items) => items.first().map(content_text).unwrap_or_default(),
            other => content_text(other),
        };
    }
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default()
}

/// The reply: what follows `echo:` in the last user text, else `default`.
pub fn reply_text(body: &Value, default: &str) -> String {
    echo_or(&last_user_text(body), default)
}

/// What follows `echo:` in `text`, else `default`.
pub fn echo_or(text: &str, default: &str) -> String {
    match text.find("echo:") {
        Some(at) => text[at + "echo:".len()..].trim().to_owned(),
        None => default.to_owned(),
    }
}

/// A rough token count: words.
pub fn tokens(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

fn prompt_tokens(body: &Value) -> u64 {
    let mut n = 0;
    if let Some(ms) = body.get("messages").and_then(Value::as_array) {
        n += ms
            .iter()
            .map(|m| tokens(&content_text(&m["content"])))
            .sum::<u64>();
    }
    if let Some(s) = body.get("system") {
        n += tokens(&content_text(s));
    }
    if let Some(p) = body.get("prompt") {
        n += tokens(&content_text(p));
    }
    n.max(1)
}

fn model(body: &Value) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_owned()
}

/// The reply split into stream deltas: the first word, then each following word with its
/// leading space, so the deltas concatenate to the reply.
pub fn deltas(reply: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, word) in reply.split(' ').enumerate() {
        out.push(if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        });
    }
    out
}

// ---- Reply rules shared by Bedrock, Gemini and Cohere ----

/// A deterministic embedding of `text` with `dims` values in [-1, 1): a hash of the text,
/// rotated per position (the first 8 are the OpenAI mock's vector).
pub fn embedding(text: &str, dims: usize) -> Vec<f64> {
    let seed = text
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31) ^ b as u32);
    (0..dims as u32)
        .map(|k| {
            let h = seed.rotate_left((k % 8) * 4) ^ (k / 8).wrapping_mul(0x9E37_79B9);
            ((h % 2000) as f64 / 1000.0) - 1.0
        })
        .collect()
}

/// A call of a declared tool, asked for by `tool:NAME {json}` in the last user text.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The JSON after the name (`{}` when there is none).
    pub input: Value,
}

/// `tool:NAME {json}` in `text`, when `NAME` is one of `declared`.
pub fn tool_marker(text: &str, declared: &[&str]) -> Option<ToolCall> {
    let at = text.find("tool:")?;
    let rest = text[at + "tool:".len()..].trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '{')
        .unwrap_or(rest.len());
    let name = &rest[..end];
    if !declared.contains(&name) {
        return None;
    }
    // The JSON may be followed by more text: read one value and stop.
    let input = serde_json::Deserializer::from_str(rest[end..].trim_start())
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    Some(ToolCall {
        name: name.to_owned(),
        input,
    })
}

/// What the last message of a conversation is, for the reply rules.
pub enum Last {
    /// The last user message's text.
    User(String),
    /// The text of the tool result(s) the last message carries.
    ToolResult(String),
}

/// Why a text reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    End,
    MaxTokens,
    StopSequence,
}

/// What the model "says".
pub enum Turn {
    Text { text: String, finish: Finish },
    Tool(ToolCall),
}

/// The reply rules: after a tool result, `tool result: <its text>`; a `tool:NAME {json}`
/// marker naming a declared tool calls it; else `echo:` or `default`. Text is cut before the
/// first stop sequence, then to `max_tokens` words.
pub fn decide(
    last: Last,
    declared: &[&str],
    default: &str,
    max_tokens: Option<u64>,
    stops: &[&str],
) -> Turn {
    let text = match last {
        Last::ToolResult(result) => format!("tool result: {result}"),
        Last::User(user) => match tool_marker(&user, declared) {
            Some(call) => return Turn::Tool(call),
            None => echo_or(&user, default),
        },
    };
    let (text, finish) = limit(&text, max_tokens, stops);
    Turn::Text { text, finish }
}

fn limit(text: &str, max_tokens: Option<u64>, stops: &[&str]) -> (String, Finish) {
    let mut text = text.to_owned();
    let mut finish = Finish::End;
    if let Some(at) = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s))
        .min()
    {
        text.truncate(at);
        text = text.trim_end().to_owned();
        finish = Finish::StopSequence;
    }
    if let Some(max) = max_tokens {
        let words: Vec<&str> = text.split(' ').collect();
        if words.len() as u64 > max {
            text = words[..max as usize].join(" ");
            finish = Finish::MaxTokens;
        }
    }
    (text, finish)
}

/// Words in every `"text"` string of a request, anywhere in it: the prompt's token count.
pub fn text_tokens(body: &Value) -> u64 {
    fn walk(v: &Value, n: &mut u64) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) if k == "text" || k == "content" => {
                            *n += s.split_whitespace().count() as u64
                        }
                        other => walk(other, n),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, n)),
            _ => {}
        }
    }
    let mut n = 0;
    walk(body, &mut n);
    n.max(1)
}

/// A JSON text cut in two, so a stream sends tool arguments over more than one delta.
pub fn halves(json: &str) -> Vec<String> {
    let mut mid = json.len() / 2;
    while !json.is_char_boundary(mid) {
        mid += 1;
    }
    vec![json[..mid].to_owned(), json[mid..].to_owned()]
}

/// The text of a JSON tool result: a string as is, anything else as compact JSON.
pub fn result_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---- OpenAI ----

/// What an OpenAI-format model "does" beyond echoing: after `tool` messages it says
/// `tool result: <their text>`; `tool:NAME {json}` naming a declared function calls it.
pub enum OpenAiTurn {
    Text(String),
    Tool(ToolCall),
}

pub fn openai_turn(body: &Value, reply: &str) -> OpenAiTurn {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let results: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .map(|m| content_text(&m["content"]))
        .collect();
    if !results.is_empty() {
        let texts: Vec<String> = results.into_iter().rev().collect();
        return OpenAiTurn::Text(format!("tool result: {}", texts.join(" ")));
    }
    let declared: Vec<&str> = body
        .get("tools")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    match tool_marker(&last_user_text(body), &declared) {
        Some(call) => OpenAiTurn::Tool(call),
        None => OpenAiTurn::Text(reply.to_owned()),
    }
}

pub fn openai_chat(body: &Value, reply: &str) -> Value {
    let p = prompt_tokens(body);
    if let OpenAiTurn::Tool(call) = openai_turn(body, reply) {
        return json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 1_700_000_000u64,
            "model": model(body),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_mock01", "type": "function",
                    "function": {"name": call.name, "arguments": call.input.to_string()}}]},
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": p, "completion_tokens": 5, "total_tokens": p + 5}
        });
    }
    let reply = match openai_turn(body, reply) {
        OpenAiTurn::Text(t) => t,
        OpenAiTurn::Tool(_) => String::new(),
    };
    let reply = reply.as_str();
    let c = tokens(reply);
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model(body),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    })
}

pub fn openai_completion(body: &Value, reply: &str) -> Value {
    let p = prompt_tokens(body);
    let c = tokens(reply);
    json!({
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": 1_700_000_000u64,
        "model": model(body),
        "choices": [{"text": reply, "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    })
}

pub fn openai_embeddings(body: &Value) -> Value {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::Array(items)) => items.iter().map(content_text).collect(),
        Some(other) => vec![content_text(other)],
        None => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(
            |(i, text)| json!({"object": "embedding", "index": i, "embedding": embedding(text, 8)}),
        )
        .collect();
    let p: u64 = inputs.iter().map(|t| tokens(t)).sum();
    json!({
        "object": "list",
        "data": data,
        "model": model(body),
        "usage": {"prompt_tokens": p, "total_tokens": p}
    })
}

pub fn openai_models() -> Value {
    json!({"object": "list", "data": [
        {"id": "gpt-4o", "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"},
        {"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}
    ]})
}

/// The `data:` payloads of an OpenAI chat stream (without the final `[DONE]`).
pub fn openai_chat_stream(body: &Value, reply: &str) -> Vec<String> {
    let m = model(body);
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk",
            "created": 1_700_000_000u64, "model": m,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
        .to_string()
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let turn = openai_turn(body, reply);
    let reply = match &turn {
        OpenAiTurn::Text(t) => t.as_str(),
        OpenAiTurn::Tool(_) => "",
    };
    if let OpenAiTurn::Tool(call) = &turn {
        out.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_mock01", "type": "function",
                "function": {"name": call.name, "arguments": ""}}]}),
            Value::Null,
        ));
        for half in halves(&call.input.to_string()) {
            out.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": half}}]}),
                Value::Null,
            ));
        }
        out.push(chunk(json!({}), json!("tool_calls")));
    } else {
        for d in deltas(reply) {
            out.push(chunk(json!({"content": d}), Value::Null));
        }
        out.push(chunk(json!({}), json!("stop")));
    }
    if body["stream_options"]["include_usage"] == true {
        let p = prompt_tokens(body);
        let c = tokens(reply);
        out.push(
            json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk",
                "created": 1_700_000_000u64, "model": m, "choices": [],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            })
            .to_string(),
        );
    }
    out
}

/// An OpenAI error body.
pub fn openai_error(status: u16) -> Value {
    let (kind, code, message) = match status {
        400 => ("invalid_request_error", "bad_request", "Bad request"),
        401 => (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided",
        ),
        404 => (
            "invalid_request_error",
            "model_not_found",
            "Model not found",
        ),
        429 => (
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit reached for requests",
        ),
        _ => ("server_error", "server_error", "The server had an error"),
    };
    json!({"error": {"message": format!("{message} (mock {status})"), "type": kind, "param": null, "code": code}})
}

// ---- Anthropic ----

/// Whether the request asks for a tool call: tools are offered and the text says `use_tool`.
fn wants_tool(body: &Value) -> Option<&Value> {
    let tools = body.get("tools")?.as_array()?;
    if !last_user_text(body).contains("use_tool") {
        return None;
    }
    tools.first()
}

/// Tool input: every string property of the tool's schema gets the last word of the user's
/// text ("weather in Paris?" gives "Paris").
fn tool_input(body: &Value, tool: &Value) -> Value {
    let text = last_user_text(body);
    let word = text
        .split_whitespace()
        .last()
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_owned();
    let mut input = serde_json::Map::new();
    if let Some(props) = tool["input_schema"]["properties"].as_object() {
        for (name, schema) in props {
            if schema["type"] == "string" {
                input.insert(name.clone(), Value::String(word.clone()));
            }
        }
    }
    Value::Object(input)
}

/// What an Anthropic-format model "says": the shared rules (`tool:NAME {json}`, tool
/// results), plus the older `use_tool` marker that calls the first tool offered.
fn anthropic_turn(body: &Value, reply: &str) -> (Option<ToolCall>, String) {
    let declared: Vec<&str> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let last = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| ms.last());
    let results: Vec<String> = last
        .and_then(|m| m["content"].as_array())
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .map(|b| match &b["content"] {
                    Value::Array(_) => content_text(&b["content"]),
                    other => result_text(other),
                })
                .collect()
        })
        .unwrap_or_default();
    if !results.is_empty() {
        return (None, format!("tool result: {}", results.join(" ")));
    }
    if let Some(call) = tool_marker(&last_user_text(body), &declared) {
        return (Some(call), String::new());
    }
    if let Some(tool) = wants_tool(body) {
        let call = ToolCall {
            name: tool["name"].as_str().unwrap_or("").to_owned(),
            input: tool_input(body, tool),
        };
        return (Some(call), String::new());
    }
    (None, reply.to_owned())
}

pub fn anthropic_message(body: &Value, reply: &str) -> Value {
    let p = prompt_tokens(body);
    let (call, text) = anthropic_turn(body, reply);
    let (content, stop) = match call {
        Some(call) => (
            json!([
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_mock01", "name": call.name, "input": call.input}
            ]),
            "tool_use",
        ),
        None => (json!([{"type": "text", "text": text}]), "end_turn"),
    };
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model(body),
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": p, "output_tokens": tokens(&text)}
    })
}

/// `(event, data)` pairs of an Anthropic Messages stream.
pub fn anthropic_stream(body: &Value, reply: &str) -> Vec<(&'static str, String)> {
    let p = prompt_tokens(body);
    let (call, text) = anthropic_turn(body, reply);
    let text = if call.is_some() {
        "Let me check.".to_owned()
    } else {
        text
    };
    let mut out = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model(body),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": p, "output_tokens": 1}}})
            .to_string(),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}})
            .to_string(),
        ),
        ("ping", json!({"type": "ping"}).to_string()),
    ];
    for d in deltas(&text) {
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": d}})
            .to_string(),
        ));
    }
    out.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}).to_string(),
    ));
    let stop = match &call {
        Some(call) => {
            out.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block":
                    {"type": "tool_use", "id": "toolu_mock01", "name": call.name, "input": {}}})
                .to_string(),
            ));
            for part in halves(&call.input.to_string()) {
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1,
                           "delta": {"type": "input_json_delta", "partial_json": part}})
                    .to_string(),
                ));
            }
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}).to_string(),
            ));
            "tool_use"
        }
        None => "end_turn",
    };
    out.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": tokens(&text)}})
        .to_string(),
    ));
    out.push(("message_stop", json!({"type": "message_stop"}).to_string()));
    out
}

/// An Anthropic error body.
pub fn anthropic_error(status: u16) -> Value {
    let (kind, message) = match status {
        400 => ("invalid_request_error", "Bad request"),
        401 => ("authentication_error", "invalid x-api-key"),
        404 => ("not_found_error", "Model not found"),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        ),
        529 => ("overloaded_error", "Overloaded"),
        _ => ("api_error", "Internal server error"),
    };
    json!({"type": "error", "error": {"type": kind, "message": format!("{message} (mock {status})")}})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_deltas() {
        let body = json!({"messages": [{"role": "user", "content": "echo:one two"}]});
        assert_eq!(reply_text(&body, "d"), "one two");
        assert_eq!(deltas("one two").concat(), "one two");
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "echo:x"}]}]});
        assert_eq!(reply_text(&parts, "d"), "x");
        assert_eq!(reply_text(&json!({}), "d"), "d");
    }

    #[test]
    fn paths() {
        assert_eq!(Api::of("/v1/chat/completions"), Api::OpenAiChat);
        assert_eq!(
            Api::of("/openai/deployments/x/chat/completions"),
            Api::OpenAiChat
        );
        assert_eq!(Api::of("/v1/completions"), Api::OpenAiCompletion);
        assert_eq!(Api::of("/v1/messages"), Api::AnthropicMessages);
    }

    #[test]
    fn anthropic_tool_call() {
        let body = json!({"messages": [{"role": "user", "content": "use_tool: weather in Paris?"}],
            "tools": [{"name": "get_weather", "input_schema": {"properties": {"city": {"type": "string"}}}}]});
        let m = anthropic_message(&body, "x");
        assert_eq!(m["content"][1]["input"]["city"], "Paris");
        assert_eq!(m["stop_reason"], "tool_use");
    }
}
