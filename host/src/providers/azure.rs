//! Azure OpenAI. Sits behind [`build`](super::build) for `azure` providers: the wire format
//! is OpenAI's, so responses, streams and errors go through the shared helpers in
//! [`openai`](super::openai); only the address (a deployment per model, an `api-version`
//! query) and the auth header (`api-key`) differ.

use http::{HeaderMap, StatusCode};

use http::HeaderName;

use crate::config::{AzureConfig, ProviderConfig};
use crate::error::GatewayError;
use crate::providers::openai::{
    openai_body, parse_openai_error, parse_openai_response, OpenAiStreamDecoder,
};
use crate::providers::{encode_path_segment, Auth, Provider, StreamDecoder, UpstreamRequest};
use crate::schema::{RequestKind, UnifiedRequest, UnifiedResponse};

/// Default `api-version` when the provider has no Azure settings.
const DEFAULT_API_VERSION: &str = "2024-10-21";

/// One Azure OpenAI resource.
pub struct Azure {
    name: String,
    azure: AzureConfig,
}

impl Azure {
    pub fn new(cfg: &ProviderConfig) -> Self {
        // Validation requires Azure settings; falling back to `base_url` keeps a provider
        // built by hand (tests, future callers) usable instead of panicking.
        let azure = cfg.azure().cloned().unwrap_or_else(|| AzureConfig {
            endpoint: cfg.network.base_url.clone(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            deployments: Default::default(),
        });
        Azure {
            name: cfg.name.clone(),
            azure,
        }
    }

    /// `{endpoint}/openai/deployments/{deployment}{path}?api-version={version}`.
    pub fn url(&self, kind: RequestKind, model: &str) -> String {
        let deployment = self
            .azure
            .deployments
            .get(model)
            .map_or(model, String::as_str);
        format!(
            "{}/openai/deployments/{}{}?api-version={}",
            self.azure.endpoint.trim_end_matches('/'),
            encode_path_segment(deployment),
            kind.openai_path(),
            encode_path_segment(&self.azure.api_version),
        )
    }
}

impl Provider for Azure {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, _kind: RequestKind) -> bool {
        true
    }

    fn auth(&self) -> Auth {
        Auth::Header {
            name: HeaderName::from_static("api-key"),
            prefix: "",
        }
    }

    fn splices_raw(&self) -> bool {
        true
    }

    fn build_request(&self, req: &UnifiedRequest) -> Result<UpstreamRequest, GatewayError> {
        // The deployment in the URL picks the model; some API versions reject a `model`
        // field that does not match it.
        Ok(UpstreamRequest::post_json(
            self.url(req.kind, &req.target.model),
            openai_body(req, &["model"])?,
        ))
    }

    fn parse_response(
        &self,
        _req: &UnifiedRequest,
        body: &[u8],
    ) -> Result<UnifiedResponse, GatewayError> {
        parse_openai_response(&self.name, body)
    }

    fn stream_decoder(&self, _req: &UnifiedRequest) -> Box<dyn StreamDecoder> {
        Box::new(OpenAiStreamDecoder::new(&self.name))
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        parse_openai_error(status, headers, body)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{ProviderKind, ProviderSettings};
    use crate::providers::openai::tests::{provider_config, request};
    use crate::providers::StreamEvent;
    use http::header::{AUTHORIZATION, RETRY_AFTER};
    use serde_json::{json, Value};
    use std::collections::HashMap;

    fn azure() -> Azure {
        let mut cfg = provider_config(ProviderKind::Azure, "");
        cfg.settings = ProviderSettings::Azure(AzureConfig {
            endpoint: "https://res.openai.azure.com".to_owned(),
            api_version: "2024-10-21".to_owned(),
            deployments: HashMap::from([("gpt-4o".to_owned(), "prod-4o".to_owned())]),
        });
        Azure::new(&cfg)
    }

    #[test]
    fn url_building() {
        let a = azure();
        assert_eq!(
            a.url(RequestKind::Chat, "gpt-4o"),
            "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            a.url(RequestKind::Embedding, "text-embedding-3-small"),
            "https://res.openai.azure.com/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            a.url(RequestKind::Completion, "a/b?c"),
            "https://res.openai.azure.com/openai/deployments/a%2Fb%3Fc/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn falls_back_to_base_url() {
        let a = Azure::new(&provider_config(
            ProviderKind::Azure,
            "https://fallback.example",
        ));
        assert_eq!(
            a.url(RequestKind::Chat, "m"),
            "https://fallback.example/openai/deployments/m/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn request_uses_api_key_and_drops_model() {
        let req = request(
            RequestKind::Chat,
            "azure",
            json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let a = azure();
        let up = a.build_request(&req).unwrap();
        assert!(up.url.contains("/deployments/prod-4o/"));
        assert!(matches!(a.auth(), Auth::Header { name, prefix: "" } if name == "api-key"));
        assert!(up.headers.get(AUTHORIZATION).is_none());
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert!(body.get("model").is_none());
        assert_eq!(body["messages"][0]["content"], "hi");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn responses_streams_and_errors_are_openai_shaped() {
        let a = azure();
        let req = request(RequestKind::Chat, "azure", json!({"model": "gpt-4o"}));
        let resp = a
            .parse_response(&req, br#"{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#)
            .unwrap();
        assert_eq!(resp.usage.unwrap().total_tokens, 2);

        let mut d = a.stream_decoder(&req);
        assert!(matches!(
            &d.decode(&crate::providers::sse("", "[DONE]")).unwrap()[..],
            [StreamEvent::Done]
        ));

        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, http::HeaderValue::from_static("3"));
        let e = a.parse_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded the rate limit"}}"#,
        );
        assert!(e.retryable);
        assert_eq!(e.code.as_deref(), Some("429"));
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(3)));
        assert!(e.message.starts_with("Requests to the"));
    }
}
