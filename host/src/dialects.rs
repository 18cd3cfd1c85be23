//! Client dialects other than OpenAI Chat Completions: Anthropic Messages and OpenAI
//! Responses. Each is pure translation at the edge of the request's way, so the pipeline
//! (plugins, queues, keys, retries, fallbacks, the stream commit rule, accounting) runs
//! unchanged for them:
//!
//! - in `resolve`, the client's body → the unified (OpenAI chat) body, every problem named
//!   by its field path in the dialect's own style (`messages.2.content.0.type` for
//!   Anthropic, `input[1].content[0].type` for Responses);
//! - in `routes`, the unified response, stream chunks and errors → the dialect's shapes
//!   (Anthropic's message and event sequence, the Responses object and typed events).
//!
//! Nothing here does I/O or names the HTTP server.

use bytes::Bytes;
use serde_json::Value;

use crate::error::GatewayError;
use crate::schema::StreamChunk;

pub mod anthropic;
pub mod responses;

/// Writes one committed stream in a dialect's event format, from the unified chunks after
/// the chunk hooks. One per stream: it keeps the state the dialect's events need (open
/// content blocks, item ids, the stop reason, usage).
pub trait StreamWriter: Send {
    /// The frames for one chunk (possibly none).
    fn chunk(&mut self, chunk: &StreamChunk) -> Vec<Bytes>;
    /// The frames that close a stream that ended well.
    fn end(&mut self) -> Vec<Bytes>;
    /// The frames for a failure after the stream started; the stream ends after them.
    fn error(&mut self, e: &GatewayError) -> Vec<Bytes>;
}

/// One named Server-Sent Event: `event: NAME\ndata: JSON\n\n`.
pub fn sse_event(name: &str, data: &Value) -> Bytes {
    let json = serde_json::to_vec(data).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// How a JSON value is called in messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A 400 about field `path`: `path: what`.
pub(crate) fn bad(path: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_request(Some(path), format!("{path}: {what}"))
}

/// The choice 0 of a unified chunk or response, if any.
pub(crate) fn first_choice(body: &serde_json::Map<String, Value>) -> Option<&Value> {
    body.get("choices").and_then(Value::as_array).and_then(|c| {
        c.iter()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
    })
}
