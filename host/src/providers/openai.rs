//! STUB: being written.

use http::{HeaderMap, StatusCode};

use crate::config::{ProviderConfig, Secret};
use crate::error::GatewayError;
use crate::providers::{Provider, StreamDecoder, UpstreamRequest};
use crate::schema::{RequestKind, UnifiedRequest, UnifiedResponse};

pub struct OpenAiCompatible {
    name: String,
}

impl OpenAiCompatible {
    pub fn new(cfg: &ProviderConfig) -> Self {
        OpenAiCompatible { name: cfg.name.clone() }
    }
}

impl Provider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }
    fn supports(&self, _kind: RequestKind) -> bool {
        false
    }
    fn build_request(&self, _req: &UnifiedRequest, _key: Option<&Secret>) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::bad_request(None, "not implemented"))
    }
    fn parse_response(&self, _req: &UnifiedRequest, _body: &[u8]) -> Result<UnifiedResponse, GatewayError> {
        Err(GatewayError::bad_request(None, "not implemented"))
    }
    fn stream_decoder(&self, _req: &UnifiedRequest) -> Box<dyn StreamDecoder> {
        unimplemented!()
    }
    fn parse_error(&self, status: StatusCode, _headers: &HeaderMap, _body: &[u8]) -> GatewayError {
        GatewayError::upstream(status, "stub")
    }
}
