//! Providers: the translation between the unified (OpenAI-shaped) request and each
//! provider's wire format. The last stop on the request's way: the upstream side
//! (`upstream`) picks a key, asks the provider for the HTTP request, authenticates it with
//! the key's credentials, sends it with retries, cuts the answer's bytes into frames and
//! hands them back here to translate.
//!
//! The contract is pure translation, one file per provider: unified request → a complete
//! HTTP request (method, URL, headers, body) without credentials; answer bytes → unified
//! response, stream events, or a typed error (retryable or not). A provider never does I/O,
//! never sees a secret, and names how its requests are authenticated ([`Auth`]) and how its
//! streamed answers are framed ([`Framing`]); the layers that do that live in `upstream`.
//! The OpenAI-compatible family (OpenAI, Groq, Mistral, Ollama, custom servers) is one
//! implementation with per-provider defaults.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode};

use crate::config::{ProviderConfig, ProviderKind};
use crate::error::GatewayError;
use crate::schema::{RequestKind, StreamChunk, UnifiedRequest, UnifiedResponse};

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod cohere;
pub mod gemini;
pub mod openai;
pub mod vertex;

/// An HTTP request ready to be authenticated and sent upstream.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    /// The whole URL, path segments percent-encoded.
    pub url: String,
    /// Content type and provider headers; `network_config.extra_headers` and credentials
    /// are added by the upstream side (credentials last, so a signature covers everything).
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl UpstreamRequest {
    /// A JSON POST to `url`.
    pub fn post_json(url: String, body: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        UpstreamRequest {
            method: Method::POST,
            url,
            headers,
            body,
        }
    }
}

/// How a provider's requests are authenticated. The credentials layer applies it after
/// [`Provider::build_request`], with the chosen key.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The key in one header: `prefix` + key (`authorization: Bearer sk-...`,
    /// `x-api-key: ...`).
    Header {
        name: HeaderName,
        prefix: &'static str,
    },
    /// AWS Signature V4 over the final request, for `service` (`bedrock`).
    SigV4 { service: &'static str },
    /// A Google OAuth2 access token from the service account, as a bearer token.
    GoogleOAuth,
}

/// How a successful streamed answer's body is cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events.
    Sse,
    /// AWS's binary event-stream (`application/vnd.amazon.eventstream`), CRC-checked.
    EventStream,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    /// The `event:` field; empty when the frame had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// One AWS event-stream message, its CRCs checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventMessage {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: String,
    /// `:event-type` of events.
    pub event_type: Option<String>,
    /// `:exception-type` of exceptions (`throttlingException`, ...).
    pub exception_type: Option<String>,
    /// `:error-code` / `:error-message` of errors.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub payload: Bytes,
}

/// One frame of a streamed answer, as the framing layer cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Sse(SseFrame),
    Event(EventMessage),
}

impl Frame {
    /// The Server-Sent Event of a provider that streams SSE; an event-stream message there
    /// means the framing does not match the provider.
    pub fn sse(&self, provider: &str) -> Result<&SseFrame, GatewayError> {
        match self {
            Frame::Sse(f) => Ok(f),
            Frame::Event(_) => Err(GatewayError::upstream(
                StatusCode::BAD_GATEWAY,
                format!("provider {provider} sent an AWS event-stream where Server-Sent Events were expected"),
            )
            .with_code("upstream_malformed_response")
            .retryable(false)),
        }
    }
}

/// An SSE frame, for decoder tests.
#[cfg(test)]
pub fn sse(event: &str, data: &str) -> Frame {
    Frame::Sse(SseFrame {
        event: event.to_owned(),
        data: data.to_owned(),
    })
}

/// What a provider's stream decoder makes of one frame.
#[derive(Debug)]
pub enum StreamEvent {
    /// An OpenAI-shaped chunk for the client.
    Chunk(StreamChunk),
    /// The stream is over (`[DONE]`, `message_stop`).
    Done,
    /// Nothing for the client (pings, bookkeeping events).
    Skip,
}

/// Turns a provider's stream frames into OpenAI chunks; one per stream, so it may keep
/// state (Anthropic sends the message id and model once, then deltas). An error frame
/// becomes the same typed error an HTTP error would (retryable or not).
pub trait StreamDecoder: Send {
    fn decode(&mut self, frame: &Frame) -> Result<Vec<StreamEvent>, GatewayError>;
}

/// One provider implementation. All methods are pure translations: no I/O.
pub trait Provider: Send + Sync + 'static {
    /// The configured provider name (`openai`, `my-vllm`, ...).
    fn name(&self) -> &str;

    /// Whether this provider can serve `kind` at all (Anthropic has no embeddings).
    fn supports(&self, kind: RequestKind) -> bool;

    /// How requests are authenticated.
    fn auth(&self) -> Auth;

    /// How a streamed answer is framed (SSE unless the provider says otherwise).
    fn framing(&self) -> Framing {
        Framing::Sse
    }

    /// Whether [`Provider::build_request`] can take a request whose big field is still the
    /// client's bytes ([`crate::schema::RawField`]) and splice them into its body: true for
    /// the OpenAI wire format. Otherwise the request is materialized before it gets here.
    fn splices_raw(&self) -> bool {
        false
    }

    /// The upstream HTTP request for `req`, without credentials.
    fn build_request(&self, req: &UnifiedRequest) -> Result<UpstreamRequest, GatewayError>;

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
        ProviderKind::Bedrock => Box::new(bedrock::Bedrock::new(cfg)),
        ProviderKind::Vertex => Box::new(vertex::Vertex::new(cfg)),
        ProviderKind::OpenAi
        | ProviderKind::Groq
        | ProviderKind::Mistral
        | ProviderKind::Ollama
        | ProviderKind::Custom => Box::new(openai::OpenAiCompatible::new(cfg)),
        ProviderKind::Cohere => Box::new(cohere::Cohere::new(cfg)),
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters, so a model or deployment
/// name can not add path segments or a query to a URL.
pub fn encode_path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// Everything but `A-Z a-z 0-9 - . _ ~`.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(encode_path_segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(
            encode_path_segment("anthropic.claude-3-5-sonnet-20241022-v2:0"),
            "anthropic.claude-3-5-sonnet-20241022-v2%3A0"
        );
        assert_eq!(encode_path_segment("é"), "%C3%A9");
    }
}
