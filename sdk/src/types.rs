//! The WIT records and variants, re-exported at the crate root, with a few constructors.

pub use crate::bindings::switchyard::plugin::types::{
    ChunkAction, ChunkChoice, ChunkOutput, Error, ErrorKind, Header, Hooks, Message, Outcome,
    Params, PostAction, PreAction, Rejection, Request, RequestInfo, RequestKind, Response,
    StreamChunk, Usage,
};

impl Rejection {
    /// A refusal with `status` and `message`; no code, no `Retry-After`, no fallbacks.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
            code: None,
            retry_after_secs: None,
            allow_fallbacks: false,
        }
    }

    /// The OpenAI-style error code, e.g. `"rate_limit_exceeded"`.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sent as the `Retry-After` header.
    pub fn retry_after_secs(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Let the gateway still try the request's fallback targets.
    pub fn allow_fallbacks(mut self) -> Self {
        self.allow_fallbacks = true;
        self
    }
}

impl From<Rejection> for PreAction {
    fn from(r: Rejection) -> Self {
        PreAction::Reject(r)
    }
}

impl Request {
    /// The last message with `role` (e.g. `"user"`), for editing before `continue-with`.
    pub fn last_message_mut(&mut self, role: &str) -> Option<&mut Message> {
        self.messages.iter_mut().rev().find(|m| m.role == role)
    }

    /// The value of header `name` (lower case), if the client sent it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// The value of metadata key `key`, if the request body's `metadata` had it.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Outcome {
    /// HTTP status the client will get.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Response(r) => r.status,
            Outcome::Error(e) => e.status,
        }
    }

    /// Provider that answered or failed (after fallbacks).
    pub fn provider(&self) -> &str {
        match self {
            Outcome::Response(r) => &r.provider,
            Outcome::Error(e) => &e.provider,
        }
    }

    /// Model that answered or failed (after fallbacks).
    pub fn model(&self) -> &str {
        match self {
            Outcome::Response(r) => &r.model,
            Outcome::Error(e) => &e.model,
        }
    }
}

impl ChunkOutput {
    /// Pass the chunk on unchanged and keep `state` for the next chunk.
    pub fn keep(state: Vec<u8>) -> Self {
        ChunkOutput {
            action: ChunkAction::Keep,
            state,
        }
    }

    /// Pass `chunk` on instead and keep `state` for the next chunk.
    pub fn replace(chunk: StreamChunk, state: Vec<u8>) -> Self {
        ChunkOutput {
            action: ChunkAction::Replace(chunk),
            state,
        }
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestKind::Chat => "chat",
            RequestKind::Completion => "completion",
            RequestKind::Embedding => "embedding",
        })
    }
}

impl ErrorKind {
    /// `client`, `upstream`, `plugin` or `gateway`: a low-cardinality metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Client => "client",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Gateway => "gateway",
        }
    }
}
