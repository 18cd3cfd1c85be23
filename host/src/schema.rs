//! The unified request and response: OpenAI-shaped JSON plus the few fields the gateway
//! itself needs. Routes parse client bodies into these, plugins see and change them,
//! providers translate them to and from their wire formats.
//!
//! Bodies stay `serde_json::Map`s rather than fully typed structs: an OpenAI-compatible
//! upstream gets the client's fields through untouched (including ones we do not know),
//! and only the providers that need a different shape (Anthropic) look inside.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// Which OpenAI endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Chat,
    Completion,
    Embedding,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Chat => "chat",
            RequestKind::Completion => "completion",
            RequestKind::Embedding => "embedding",
        }
    }

    /// The OpenAI path suffix for this kind (`/chat/completions`, ...).
    pub fn openai_path(self) -> &'static str {
        match self {
            RequestKind::Chat => "/chat/completions",
            RequestKind::Completion => "/completions",
            RequestKind::Embedding => "/embeddings",
        }
    }
}

/// The API dialect a client spoke. Everything inside the gateway is the unified
/// (OpenAI-shaped) request; the dialect decides how the body was read at the edge and how the
/// answer is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// OpenAI Chat Completions, Completions, Embeddings.
    #[default]
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::Responses => "responses",
        }
    }
}

/// How a request came in, beyond its unified body: the dialect, and for a provider that
/// speaks that same dialect natively, the client's own body and headers, so fields the
/// unified request does not model (Anthropic's `cache_control`, `thinking`, beta headers)
/// reach it unchanged.
#[derive(Debug, Clone, Default)]
pub struct Ingress {
    pub dialect: Dialect,
    /// The client's body as parsed (kept only when a target speaks the dialect natively).
    pub native: Option<Arc<Map<String, Value>>>,
    /// Client headers to pass to a native provider (`anthropic-beta`).
    pub headers: Vec<(String, String)>,
    /// A plugin changed the request: the native body no longer says what it is, so the
    /// provider translates the unified body instead (top-level unmodelled fields still kept).
    pub edited: bool,
    /// What plugins' pre-hooks asked for with headers (WIT 0.2.0), for this attempt.
    pub plugin_headers: PluginHeaders,
    /// The request's big field (`messages`, `prompt`, `input`) as the client's bytes, not yet
    /// in `body`; see [`UnifiedRequest::materialize`].
    pub raw: Option<RawField>,
}

/// A plugin's change to the headers of the request to the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderEdit {
    Set(http::HeaderName, http::HeaderValue),
    Remove(http::HeaderName),
}

/// Header changes plugins asked for, already checked against the reserved names.
#[derive(Debug, Clone, Default)]
pub struct PluginHeaders {
    /// Applied, in order, to the request to the provider (before its credentials).
    pub upstream: Vec<HeaderEdit>,
    /// Added to the client's response.
    pub response: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// One top-level field of the client's body kept as its JSON text, a slice of the body
/// itself (no copy). A 10 MiB body of many tiny messages is hundreds of MiB as a tree of
/// `Value`s; an OpenAI-compatible upstream gets these bytes spliced into its body instead,
/// and only code that reads the field parses it ([`UnifiedRequest::materialize`]). It was
/// validated element by element when the request was resolved.
#[derive(Clone)]
pub struct RawField {
    /// The field's name.
    pub key: &'static str,
    /// Its JSON value, as the client wrote it.
    pub json: Bytes,
}

impl std::fmt::Debug for RawField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawField({}: {} bytes)", self.key, self.json.len())
    }
}

/// A provider and a model on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// A client request after parsing, ready for plugins and providers.
#[derive(Debug, Clone)]
pub struct UnifiedRequest {
    pub kind: RequestKind,
    /// Where this attempt goes. Plugins may change it.
    pub target: Target,
    /// `stream: true` in the body.
    pub stream: bool,
    /// The OpenAI-shaped body without the gateway's own fields (`provider`, `fallbacks`);
    /// `model` holds the bare model name of `target`.
    pub body: Map<String, Value>,
    /// The dialect it came in and what a native provider may use of the original.
    pub ingress: Ingress,
}

impl UnifiedRequest {
    /// Parse the field still kept as bytes ([`Ingress::raw`]) into `body`, for everything
    /// that reads the request's content: plugins, translating providers, prompt recording.
    /// Nothing to do after the first call.
    pub fn materialize(&mut self) -> Result<(), GatewayError> {
        let Some(raw) = self.ingress.raw.take() else {
            return Ok(());
        };
        let value: Value = serde_json::from_slice(&raw.json).map_err(|e| {
            GatewayError::gateway(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!(
                    "could not parse '{}' of a request already validated: {e}",
                    raw.key
                ),
            )
        })?;
        self.body.insert(raw.key.to_owned(), value);
        Ok(())
    }

    /// Whether a field of the body is still kept as bytes (see [`UnifiedRequest::materialize`]).
    pub fn is_lean(&self) -> bool {
        self.ingress.raw.is_some()
    }

    /// Point this request at `target`, keeping `body.model` in step.
    pub fn set_target(&mut self, target: Target) {
        self.body
            .insert("model".to_owned(), Value::String(target.model.clone()));
        self.target = target;
    }
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    /// Read an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`, `total_tokens`).
    /// Counts beyond `u32` (no real answer has them) saturate rather than wrap.
    pub fn from_openai(value: &Value) -> Option<Usage> {
        let obj = value.as_object()?;
        let get = |k: &str| {
            obj.get(k)
                .and_then(Value::as_u64)
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        Some(Usage::new(
            get("prompt_tokens"),
            get("completion_tokens"),
            get("total_tokens"),
        ))
    }

    /// Usage from its parts; a `total` of 0 (not reported) is the sum.
    pub fn new(prompt_tokens: u32, completion_tokens: u32, total: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: if total == 0 {
                prompt_tokens.saturating_add(completion_tokens)
            } else {
                total
            },
        }
    }

    pub fn to_openai(self) -> Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        })
    }
}

/// A complete (non-streaming) response in the OpenAI shape.
#[derive(Debug, Clone)]
pub struct UnifiedResponse {
    /// HTTP status for the client (200 unless a plugin changed it).
    pub status: u16,
    /// OpenAI-shaped body (`chat.completion`, `text_completion` or `list` of embeddings).
    pub body: Map<String, Value>,
    pub usage: Option<Usage>,
}

impl UnifiedResponse {
    /// OpenAI's `encoding_format: base64`: every embedding given as numbers becomes its
    /// little-endian `f32`s in base64. Done here for every provider, since only OpenAI's own
    /// API makes it (the OpenAI Python SDK asks for it by default).
    pub fn embeddings_to_base64(&mut self) {
        use base64::Engine;
        let Some(Value::Array(data)) = self.body.get_mut("data") else {
            return;
        };
        for item in data {
            if let Some(e @ Value::Array(_)) = item.get_mut("embedding") {
                let bytes: Vec<u8> = e
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|v| (v.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
                    .collect();
                *e = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
    }

    pub fn ok(body: Map<String, Value>) -> Self {
        let usage = body.get("usage").and_then(Usage::from_openai);
        UnifiedResponse {
            status: 200,
            body,
            usage,
        }
    }
}

/// One OpenAI-shaped stream chunk (`chat.completion.chunk` or `text_completion`).
#[derive(Debug, Clone)]
pub struct StreamChunk {
    pub body: Map<String, Value>,
}

impl StreamChunk {
    /// The usage this chunk carries, if any.
    pub fn usage(&self) -> Option<Usage> {
        self.body.get("usage").and_then(Usage::from_openai)
    }

    /// Whether the chunk carries anything for the client beyond bookkeeping: text, a tool
    /// call, a refusal, a finish reason or the usage. A stream is committed at its first
    /// such chunk (an opening `{"role": "assistant", "content": ""}` is not one).
    pub fn has_content(&self) -> bool {
        if self.body.get("usage").is_some_and(|u| !u.is_null()) {
            return true;
        }
        let Some(choices) = self.body.get("choices").and_then(Value::as_array) else {
            return false;
        };
        let non_empty = |v: Option<&Value>| match v {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Null) | None => false,
            Some(_) => true,
        };
        choices.iter().any(|c| {
            let delta = c.get("delta");
            non_empty(c.get("finish_reason"))
                || non_empty(c.get("text"))
                || non_empty(delta.and_then(|d| d.get("content")))
                || non_empty(delta.and_then(|d| d.get("tool_calls")))
                || non_empty(delta.and_then(|d| d.get("refusal")))
                || non_empty(delta.and_then(|d| d.get("function_call")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(v: Value) -> StreamChunk {
        match v {
            Value::Object(body) => StreamChunk { body },
            _ => StreamChunk { body: Map::new() },
        }
    }

    #[test]
    fn content_chunks() {
        let opening = chunk(
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
        );
        assert!(!opening.has_content());
        assert!(!chunk(json!({"choices": []})).has_content());
        for c in [
            json!({"choices": [{"delta": {"content": "hi"}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
            json!({"choices": [{"text": "hi"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 1}}),
        ] {
            assert!(chunk(c.clone()).has_content(), "{c}");
        }
    }

    #[test]
    fn embeddings_as_base64() {
        let Value::Object(body) = json!({"object": "list", "data": [
            {"object": "embedding", "index": 0, "embedding": [1.0, 2.0]},
            {"object": "embedding", "index": 1, "embedding": "AAAAPwAAoL8AAEBA"},
        ]}) else {
            unreachable!()
        };
        let mut r = UnifiedResponse::ok(body);
        r.embeddings_to_base64();
        assert_eq!(r.body["data"][0]["embedding"], "AACAPwAAAEA=");
        // Already base64 (OpenAI made it): left as it is.
        assert_eq!(r.body["data"][1]["embedding"], "AAAAPwAAoL8AAEBA");
    }

    #[test]
    fn usage_saturates() {
        let u = Usage::from_openai(&json!({"prompt_tokens": u64::MAX, "completion_tokens": 5}))
            .unwrap_or_default();
        assert_eq!(u.prompt_tokens, u32::MAX);
        assert_eq!(u.total_tokens, u32::MAX);
    }
}
