//! The unified request and response: OpenAI-shaped JSON plus the few fields the gateway
//! itself needs. Routes parse client bodies into these, plugins see and change them,
//! providers translate them to and from their wire formats.
//!
//! Bodies stay `serde_json::Map`s rather than fully typed structs: an OpenAI-compatible
//! upstream gets the client's fields through untouched (including ones we do not know),
//! and only the providers that need a different shape (Anthropic) look inside.

use serde_json::{Map, Value};

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

/// A provider and a model on it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl UnifiedRequest {
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
    pub fn from_openai(value: &Value) -> Option<Usage> {
        let obj = value.as_object()?;
        let get = |k: &str| obj.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
        let prompt_tokens = get("prompt_tokens");
        let completion_tokens = get("completion_tokens");
        let total = get("total_tokens");
        Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: if total == 0 {
                prompt_tokens + completion_tokens
            } else {
                total
            },
        })
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
}
