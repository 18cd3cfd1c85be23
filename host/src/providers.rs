//! Providers: the translation between the unified (OpenAI-shaped) request and each
//! provider's wire format. Sits between the engine's key choice and the HTTP call: the
//! engine picks a key, asks the provider for the upstream request, sends it (with retries),
//! and hands the answer back to the provider to translate.
//!
//! One trait, one file per provider. The OpenAI-compatible family (OpenAI, Groq, Mistral,
//! Ollama, custom servers) is one implementation with per-provider defaults. Adding a
//! provider is one new file and one line in [`build`].

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::config::{ProviderConfig, ProviderKind, Secret};
use crate::error::GatewayError;
use crate::schema::{RequestKind, StreamChunk, UnifiedRequest, UnifiedResponse};

pub mod anthropic;
pub mod azure;
pub mod openai;
pub mod sse;

/// An HTTP request ready to send upstream (POST).
#[derive(Debug)]
pub struct UpstreamRequest {
    pub url: String,
    /// Auth, content type and provider headers; `network_config.extra_headers` are added by
    /// the engine.
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a provider's stream decoder makes of one SSE event.
#[derive(Debug)]
pub enum StreamEvent {
    /// An OpenAI-shaped chunk for the client.
    Chunk(StreamChunk),
    /// The stream is over (`[DONE]`, `message_stop`).
    Done,
    /// Nothing for the client (pings, bookkeeping events).
    Skip,
}

/// Turns a provider's SSE events into OpenAI chunks; one per stream, so it may keep state
/// (Anthropic sends the message id and model once, then deltas).
pub trait StreamDecoder: Send {
    /// `event` is the SSE `event:` field (empty if absent), `data` the joined `data:` lines.
    fn decode(&mut self, event: &str, data: &str) -> Result<Vec<StreamEvent>, GatewayError>;
}

/// One provider implementation. All methods are pure translations: no I/O.
pub trait Provider: Send + Sync + 'static {
    /// The configured provider name (`openai`, `my-vllm`, ...).
    fn name(&self) -> &str;

    /// Whether this provider can serve `kind` at all (Anthropic has no embeddings).
    fn supports(&self, kind: RequestKind) -> bool;

    /// The upstream HTTP request for `req`, authenticated with `key` (`None` for keyless
    /// providers such as a local Ollama).
    fn build_request(
        &self,
        req: &UnifiedRequest,
        key: Option<&Secret>,
    ) -> Result<UpstreamRequest, GatewayError>;

    /// Translate a successful (2xx) non-streaming body to the OpenAI shape.
    fn parse_response(
        &self,
        req: &UnifiedRequest,
        body: &[u8],
    ) -> Result<UnifiedResponse, GatewayError>;

    /// A decoder for one streamed response to `req`.
    fn stream_decoder(&self, req: &UnifiedRequest) -> Box<dyn StreamDecoder>;

    /// Translate a non-2xx answer into an error that keeps the provider's status and
    /// message, classified as retryable or not (see [`is_retryable_status`]).
    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError;
}

/// Statuses worth retrying on the same target: 408, 429 and 5xx.
pub fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Build the provider implementation for one configured provider.
pub fn build(cfg: &ProviderConfig) -> Box<dyn Provider> {
    match cfg.kind {
        ProviderKind::Anthropic => Box::new(anthropic::Anthropic::new(cfg)),
        ProviderKind::Azure => Box::new(azure::Azure::new(cfg)),
        ProviderKind::OpenAi
        | ProviderKind::Groq
        | ProviderKind::Mistral
        | ProviderKind::Ollama
        | ProviderKind::Custom => Box::new(openai::OpenAiCompatible::new(cfg)),
    }
}

/// The public API address of each built-in provider, used when `network_config.base_url`
/// is not set. `None`: the provider needs a `base_url` (custom) or an endpoint (Azure).
pub fn default_base_url(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
        ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
        ProviderKind::Groq => Some("https://api.groq.com/openai/v1"),
        ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
        ProviderKind::Ollama => Some("http://localhost:11434/v1"),
        ProviderKind::Azure | ProviderKind::Custom => None,
    }
}
