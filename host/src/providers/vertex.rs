//! Google Vertex AI. Sits behind [`build`](super::build) for `vertex` providers and owns
//! the addresses (`{base}/v1/projects/{project}/locations/{location}/publishers/...`) and
//! the choice of wire format per model: Google's models speak Gemini's `generateContent`
//! ([`gemini`](super::gemini)), Claude models (`claude...`) speak Anthropic's Messages
//! format through `rawPredict` ([`anthropic`](super::anthropic)), and text embeddings go
//! to `predict`. The credentials layer adds the OAuth2 bearer token of the service
//! account afterwards ([`Auth::GoogleOAuth`]).
//!
//! Completions (`/v1/completions`) are not offered: Vertex has no prompt-completion
//! endpoint for these models, and faking one out of chat would hand back chat answers
//! under another name.

// Helpers return the `GatewayError` the `Provider` trait returns; errors are the cold
// path, and boxing them here would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::config::{ProviderConfig, ProviderSettings};
use crate::error::GatewayError;
use crate::providers::anthropic::{
    anthropic_body, from_anthropic, parse_anthropic_error, AnthropicStreamDecoder,
};
use crate::providers::gemini::{from_gemini, parse_google_error, to_gemini, GeminiStreamDecoder};
use crate::providers::openai::{malformed, parse_object, to_bytes};
use crate::providers::{
    encode_path_segment, Auth, Framing, Provider, StreamDecoder, UpstreamRequest,
};
use crate::schema::{RequestKind, UnifiedRequest, UnifiedResponse, Usage};

/// The `anthropic_version` Vertex AI's Claude endpoints take in the body.
const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// One Vertex AI project and location.
pub struct Vertex {
    name: String,
    base_url: String,
    project: String,
    location: String,
    anthropic_version: String,
}

impl Vertex {
    pub fn new(cfg: &ProviderConfig) -> Self {
        // Validation requires Vertex settings; without them (a provider built by hand) the
        // project is empty and requests say so instead of panicking.
        let (project, location) = match &cfg.settings {
            ProviderSettings::Vertex(v) => (v.project_id.clone(), v.location.clone()),
            _ => (String::new(), "us-central1".to_owned()),
        };
        // `anthropic_version` defaults to the Messages API header value, which Vertex
        // refuses; only a version meant for Vertex replaces Vertex's own.
        let anthropic_version = if cfg.anthropic_version.starts_with("vertex-") {
            cfg.anthropic_version.clone()
        } else {
            VERTEX_ANTHROPIC_VERSION.to_owned()
        };
        Vertex {
            name: cfg.name.clone(),
            base_url: cfg.network.base_url.trim_end_matches('/').to_owned(),
            project,
            location,
            anthropic_version,
        }
    }

    /// `{base}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}`.
    pub fn url(&self, publisher: &str, model: &str, method: &str) -> String {
        format!(
            "{}/v1/projects/{}/locations/{}/publishers/{publisher}/models/{}:{method}",
            self.base_url,
            encode_path_segment(&self.project),
            encode_path_segment(&self.location),
            encode_path_segment(model),
        )
    }

    fn unsupported(&self, what: &str) -> GatewayError {
        GatewayError::bad_request(
            None,
            format!("provider {} does not support {what}", self.name),
        )
    }
}

/// Claude models on Vertex are Anthropic's (`claude-sonnet-4@20250514`).
fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

impl Provider for Vertex {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kind: RequestKind) -> bool {
        matches!(kind, RequestKind::Chat | RequestKind::Embedding)
    }

    fn auth(&self) -> Auth {
        Auth::GoogleOAuth
    }

    fn framing(&self) -> Framing {
        Framing::Sse
    }

    fn build_request(&self, req: &UnifiedRequest) -> Result<UpstreamRequest, GatewayError> {
        if self.project.is_empty() {
            return Err(GatewayError::gateway(
                StatusCode::INTERNAL_SERVER_ERROR,
                "provider_misconfigured",
                format!(
                    "provider {} has no Vertex AI project (meta_config.project_id)",
                    self.name
                ),
            ));
        }
        let model = req.target.model.as_str();
        let (url, body) = match req.kind {
            RequestKind::Completion => return Err(self.unsupported("completion requests")),
            RequestKind::Embedding if is_claude(model) => {
                return Err(self.unsupported("embeddings with Claude models"))
            }
            RequestKind::Embedding => {
                (self.url("google", model, "predict"), to_predict(&req.body)?)
            }
            RequestKind::Chat if is_claude(model) => {
                let mut body = anthropic_body(req)?;
                // The model is in the URL; Vertex refuses it in the body.
                body.remove("model");
                body.insert(
                    "anthropic_version".into(),
                    self.anthropic_version.clone().into(),
                );
                let method = if req.stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                };
                (self.url("anthropic", model, method), body)
            }
            RequestKind::Chat => {
                let method = if req.stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                (self.url("google", model, method), to_gemini(req)?)
            }
        };
        Ok(UpstreamRequest::post_json(url, to_bytes(&body)?))
    }

    fn parse_response(
        &self,
        req: &UnifiedRequest,
        body: &[u8],
    ) -> Result<UnifiedResponse, GatewayError> {
        let msg = parse_object(&self.name, body)?;
        let model = req.target.model.as_str();
        let out = match req.kind {
            RequestKind::Embedding => from_predict(&self.name, &msg, model)?,
            _ if is_claude(model) => from_anthropic(&msg, model),
            _ => from_gemini(&self.name, &msg, model)?,
        };
        Ok(UnifiedResponse::ok(out))
    }

    fn stream_decoder(&self, req: &UnifiedRequest) -> Box<dyn StreamDecoder> {
        let model = req.target.model.as_str();
        if is_claude(model) {
            Box::new(AnthropicStreamDecoder::new(&self.name, model))
        } else {
            Box::new(GeminiStreamDecoder::new(&self.name, model))
        }
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        // Claude's errors come in Anthropic's shape (`"type": "error"`, a string
        // `error.type`), but quota and auth errors of the same paths are Vertex's own.
        let anthropic_shaped = serde_json::from_slice::<Value>(body).is_ok_and(|v| {
            v.get("type").and_then(Value::as_str) == Some("error")
                || v.get("error").is_some_and(|e| {
                    e.get("type").is_some_and(Value::is_string) && e.get("status").is_none()
                })
        });
        if anthropic_shaped {
            parse_anthropic_error(status, headers, body)
        } else {
            parse_google_error(status, headers, body)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Embeddings: OpenAI /embeddings ↔ Vertex text embeddings `predict`

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(Some(param), message)
}

/// Cohere-style `input_type`s some clients send, as Vertex task types.
fn task_type(value: &str) -> String {
    match value {
        "search_query" | "query" => "RETRIEVAL_QUERY".to_owned(),
        "search_document" | "document" => "RETRIEVAL_DOCUMENT".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

/// `{"instances": [{"content", "task_type"?}], "parameters": {"outputDimensionality"}?}`.
fn to_predict(src: &Map<String, Value>) -> Result<Map<String, Value>, GatewayError> {
    let texts: Vec<&str> = match src.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(bad("input", "`input` must not be empty"))
        }
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => texts.push(s.as_str()),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(bad(
                            &format!("input[{i}]"),
                            "token arrays cannot be embedded by Vertex AI (it tokenizes \
                             itself); send the text",
                        ))
                    }
                    _ => {
                        return Err(bad(
                            &format!("input[{i}]"),
                            "`input` must be a string or an array of strings",
                        ))
                    }
                }
            }
            texts
        }
        Some(_) => {
            return Err(bad(
                "input",
                "`input` must be a string or an array of strings",
            ))
        }
        None => return Err(bad("input", "`input` is required")),
    };

    let task = match (src.get("task_type"), src.get("input_type")) {
        (Some(v), _) if !v.is_null() => Some(("task_type", v)),
        (_, Some(v)) if !v.is_null() => Some(("input_type", v)),
        _ => None,
    };
    let task = match task {
        None => None,
        Some((param, v)) => Some(
            v.as_str()
                .filter(|t| !t.is_empty())
                .map(task_type)
                .ok_or_else(|| bad(param, format!("`{param}` must be a string")))?,
        ),
    };

    match src.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "float" || f == "base64" => {}
        Some(_) => {
            return Err(bad(
                "encoding_format",
                "`encoding_format` must be `float` or `base64`",
            ))
        }
    }

    let instances: Vec<Value> = texts
        .into_iter()
        .map(|t| {
            let mut instance = Map::new();
            instance.insert("content".into(), t.into());
            if let Some(task) = &task {
                instance.insert("task_type".into(), task.clone().into());
            }
            Value::Object(instance)
        })
        .collect();
    let mut out = Map::new();
    out.insert("instances".into(), Value::Array(instances));
    match src.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let d = v
                .as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| bad("dimensions", "`dimensions` must be a positive integer"))?;
            out.insert("parameters".into(), json!({"outputDimensionality": d}));
        }
    }
    Ok(out)
}

/// `predictions[i].embeddings.{values, statistics.token_count}` as an OpenAI list.
fn from_predict(
    provider: &str,
    resp: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, GatewayError> {
    let predictions = resp
        .get("predictions")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(provider, "the answer holds no `predictions`"))?;
    let mut data = Vec::with_capacity(predictions.len());
    let mut tokens: u32 = 0;
    for (i, p) in predictions.iter().enumerate() {
        let embeddings = p.get("embeddings");
        let values = embeddings
            .and_then(|e| e.get("values"))
            .and_then(Value::as_array)
            .filter(|v| v.iter().all(Value::is_number))
            .ok_or_else(|| {
                malformed(
                    provider,
                    format!("predictions[{i}] holds no `embeddings.values` of numbers"),
                )
            })?;
        let stats = embeddings.and_then(|e| e.get("statistics"));
        // The predict API says `token_count`; the REST reference spells it `tokenCount`.
        let n = stats
            .and_then(|s| s.get("token_count").or_else(|| s.get("tokenCount")))
            .and_then(|n| {
                n.as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            })
            .unwrap_or(0);
        tokens = tokens.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        data.push(json!({"object": "embedding", "index": i, "embedding": values}));
    }
    let usage = Usage::new(tokens, 0, tokens);
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
    });
    Ok(match out {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{ProviderKind, VertexConfig};
    use crate::providers::openai::tests::{provider_config, request};
    use crate::providers::{Frame, StreamEvent};
    use crate::upstream::framing::sse::SseParser;
    use http::header::{AUTHORIZATION, RETRY_AFTER};
    use http::HeaderValue;
    use std::time::Duration;

    fn config(location: &str, base: &str) -> ProviderConfig {
        let mut cfg = provider_config(ProviderKind::Vertex, base);
        cfg.settings = ProviderSettings::Vertex(VertexConfig {
            project_id: "my-project".to_owned(),
            location: location.to_owned(),
            credentials: None,
        });
        cfg
    }

    fn vertex() -> Vertex {
        Vertex::new(&config(
            "us-central1",
            "https://us-central1-aiplatform.googleapis.com",
        ))
    }

    fn body_json(up: &UpstreamRequest) -> Value {
        serde_json::from_slice(&up.body).unwrap()
    }

    fn chat(model: &str, stream: bool) -> UnifiedRequest {
        request(
            RequestKind::Chat,
            "vertex",
            json!({"model": model, "stream": stream, "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ]}),
        )
    }

    #[test]
    fn contract_and_wiring() {
        let v = vertex();
        assert!(matches!(v.auth(), Auth::GoogleOAuth));
        assert_eq!(v.framing(), Framing::Sse);
        assert!(v.supports(RequestKind::Chat));
        assert!(v.supports(RequestKind::Embedding));
        assert!(!v.supports(RequestKind::Completion));
        let e = v
            .build_request(&request(
                RequestKind::Completion,
                "vertex",
                json!({"model": "gemini-2.5-flash", "prompt": "x"}),
            ))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);

        let built = crate::providers::build(&config("europe-west4", "http://127.0.0.1:9"));
        assert!(matches!(built.auth(), Auth::GoogleOAuth));
        let up = built.build_request(&chat("gemini-2.5-pro", false)).unwrap();
        assert_eq!(
            up.url,
            "http://127.0.0.1:9/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
        );
    }

    #[test]
    fn gemini_urls_and_body() {
        let v = vertex();
        let up = v.build_request(&chat("gemini-2.5-flash", false)).unwrap();
        assert_eq!(
            up.url,
            "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(up.method, http::Method::POST);
        assert_eq!(up.headers["content-type"], "application/json");
        assert!(up.headers.get(AUTHORIZATION).is_none());
        assert_eq!(
            body_json(&up),
            json!({
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            })
        );

        let up = v.build_request(&chat("gemini-2.5-flash", true)).unwrap();
        assert!(up
            .url
            .ends_with("/models/gemini-2.5-flash:streamGenerateContent?alt=sse"));

        // The global endpoint, and names that must not add path segments.
        let mut cfg = config("global", "https://aiplatform.googleapis.com");
        cfg.settings = ProviderSettings::Vertex(VertexConfig {
            project_id: "a/b".to_owned(),
            location: "global".to_owned(),
            credentials: None,
        });
        let up = Vertex::new(&cfg)
            .build_request(&chat("x/../y:z?w", false))
            .unwrap();
        assert_eq!(
            up.url,
            "https://aiplatform.googleapis.com/v1/projects/a%2Fb/locations/global/publishers/google/models/x%2F..%2Fy%3Az%3Fw:generateContent"
        );
    }

    #[test]
    fn missing_project_is_a_clear_error() {
        let v = Vertex::new(&provider_config(ProviderKind::Vertex, "http://x"));
        let e = v
            .build_request(&chat("gemini-2.5-flash", false))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.contains("project_id"), "{}", e.message);
    }

    #[test]
    fn claude_goes_to_raw_predict_in_anthropic_format() {
        let v = vertex();
        let up = v
            .build_request(&chat("claude-sonnet-4@20250514", false))
            .unwrap();
        assert_eq!(
            up.url,
            "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/publishers/anthropic/models/claude-sonnet-4%4020250514:rawPredict"
        );
        assert!(up.headers.get("anthropic-version").is_none());
        assert_eq!(
            body_json(&up),
            json!({
                "system": "Be brief.",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_tokens": 4096,
                "anthropic_version": "vertex-2023-10-16",
            })
        );

        let up = v
            .build_request(&chat("claude-sonnet-4@20250514", true))
            .unwrap();
        assert!(up.url.ends_with(":streamRawPredict"));
        let body = body_json(&up);
        assert_eq!(body["stream"], true);
        assert!(body.get("model").is_none());

        // The Messages API's default version is not Vertex's; a Vertex one is kept.
        let mut cfg = config("us-east5", "https://us-east5-aiplatform.googleapis.com");
        cfg.anthropic_version = "vertex-2099-01-01".to_owned();
        let up = Vertex::new(&cfg)
            .build_request(&chat("claude-opus-4@20250514", false))
            .unwrap();
        assert_eq!(body_json(&up)["anthropic_version"], "vertex-2099-01-01");

        let e = v
            .build_request(&request(
                RequestKind::Embedding,
                "vertex",
                json!({"model": "claude-sonnet-4", "input": "x"}),
            ))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn claude_answers_and_streams_are_anthropic_shaped() {
        let v = vertex();
        let req = chat("claude-sonnet-4@20250514", false);
        let resp = v
            .parse_response(
                &req,
                br#"{"id":"msg_vrtx_01","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",
                    "content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,
                    "usage":{"input_tokens":10,"output_tokens":3}}"#,
            )
            .unwrap();
        assert_eq!(resp.body["id"], "msg_vrtx_01");
        assert_eq!(resp.body["choices"][0]["message"]["content"], "Hello!");
        assert_eq!(resp.body["choices"][0]["finish_reason"], "stop");
        assert_eq!(resp.usage.unwrap().total_tokens, 13);

        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_vrtx_02\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-20250514\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let mut d = v.stream_decoder(&chat("claude-sonnet-4@20250514", true));
        let mut parser = SseParser::default();
        let mut texts = String::new();
        let mut done = false;
        for frame in parser.push(stream.as_bytes()).unwrap() {
            for ev in d.decode(&Frame::Sse(frame)).unwrap() {
                match ev {
                    StreamEvent::Chunk(c) => {
                        if let Some(t) = c.body["choices"]
                            .get(0)
                            .and_then(|c| c["delta"]["content"].as_str())
                        {
                            texts.push_str(t);
                        }
                    }
                    StreamEvent::Done => done = true,
                    StreamEvent::Skip => {}
                }
            }
        }
        assert_eq!(texts, "Hi");
        assert!(done);
    }

    #[test]
    fn gemini_answers_and_streams() {
        let v = vertex();
        let req = chat("gemini-2.5-flash", false);
        let resp = v
            .parse_response(
                &req,
                br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello!"}]},"finishReason":"STOP"}],
                    "usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6},
                    "modelVersion":"gemini-2.5-flash","responseId":"abc"}"#,
            )
            .unwrap();
        assert_eq!(resp.body["choices"][0]["message"]["content"], "Hello!");
        assert_eq!(resp.usage.unwrap().total_tokens, 6);
        let e = v.parse_response(&req, b"<html>").unwrap_err();
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));

        let mut d = v.stream_decoder(&chat("gemini-2.5-flash", true));
        let ev = d
            .decode(&crate::providers::sse(
                "",
                r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]}}]}"#,
            ))
            .unwrap();
        match &ev[..] {
            [StreamEvent::Chunk(c)] => assert_eq!(c.body["choices"][0]["delta"]["content"], "Hi"),
            other => panic!("{other:?}"),
        }
    }

    fn embed(body: Value) -> Result<UpstreamRequest, GatewayError> {
        vertex().build_request(&request(RequestKind::Embedding, "vertex", body))
    }

    #[test]
    fn embedding_requests() {
        let up = embed(json!({"model": "text-embedding-005", "input": ["a", "b"],
            "dimensions": 256, "input_type": "search_query", "user": "u"}))
        .unwrap();
        assert_eq!(
            up.url,
            "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/publishers/google/models/text-embedding-005:predict"
        );
        assert_eq!(
            body_json(&up),
            json!({
                "instances": [
                    {"content": "a", "task_type": "RETRIEVAL_QUERY"},
                    {"content": "b", "task_type": "RETRIEVAL_QUERY"},
                ],
                "parameters": {"outputDimensionality": 256},
            })
        );
        let up = embed(json!({"model": "gemini-embedding-001", "input": "x",
            "task_type": "semantic_similarity", "encoding_format": "base64"}))
        .unwrap();
        assert_eq!(
            body_json(&up),
            json!({"instances": [{"content": "x", "task_type": "SEMANTIC_SIMILARITY"}]})
        );

        for (body, param) in [
            (json!({"model": "e"}), "input"),
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": [1, 2, 3]}), "input[0]"),
            (json!({"model": "e", "input": ["a", [1, 2]]}), "input[1]"),
            (json!({"model": "e", "input": 5}), "input"),
            (
                json!({"model": "e", "input": "a", "dimensions": 0}),
                "dimensions",
            ),
            (
                json!({"model": "e", "input": "a", "task_type": 3}),
                "task_type",
            ),
            (
                json!({"model": "e", "input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
        ] {
            let e = embed(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
        let e = embed(json!({"model": "e", "input": [[1, 2]]})).unwrap_err();
        assert!(e.message.contains("token arrays"), "{}", e.message);
    }

    /// A `predict` answer of `text-embedding-005`.
    const PREDICT: &[u8] = br#"{
        "predictions": [
            {"embeddings": {"statistics": {"truncated": false, "token_count": 6}, "values": [1.0, 2.0]}},
            {"embeddings": {"statistics": {"truncated": false, "token_count": 4.0}, "values": [0.5, -1.25, 3.0]}}
        ],
        "metadata": {"billableCharacterCount": 40}
    }"#;

    #[test]
    fn embedding_responses() {
        let v = vertex();
        let req = request(
            RequestKind::Embedding,
            "vertex",
            json!({"model": "text-embedding-005", "input": ["a", "b"]}),
        );
        let resp = v.parse_response(&req, PREDICT).unwrap();
        assert_eq!(
            Value::Object(resp.body),
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [1.0, 2.0]},
                    {"object": "embedding", "index": 1, "embedding": [0.5, -1.25, 3.0]},
                ],
                "model": "text-embedding-005",
                "usage": {"prompt_tokens": 10, "total_tokens": 10},
            })
        );
        assert_eq!(resp.usage.unwrap().prompt_tokens, 10);

        for bad in [
            &br#"{"predictions": [{"embeddings": {}}]}"#[..],
            br#"{"predictions": [{"embeddings": {"values": [1.0, "x"]}}]}"#,
        ] {
            let e = v.parse_response(&req, bad).unwrap_err();
            assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
        }
        let e = v
            .parse_response(&req, br#"{"deployedModelId": "1"}"#)
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));

        let huge = br#"{"predictions": [
            {"embeddings": {"statistics": {"token_count": 4294967295}, "values": []}},
            {"embeddings": {"statistics": {"token_count": 99}, "values": []}}]}"#;
        let resp = v.parse_response(&req, huge).unwrap();
        assert_eq!(resp.usage.unwrap().total_tokens, u32::MAX);
    }

    #[test]
    fn errors_by_shape() {
        let v = vertex();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        let e = v.parse_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.type_str(), "RESOURCE_EXHAUSTED");
        assert_eq!(e.message, "Resource exhausted. Please try again later.");
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(5)));

        // Claude's own errors on rawPredict keep Anthropic's type.
        let e = v.parse_error(
            StatusCode::from_u16(529).unwrap(),
            &HeaderMap::new(),
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.type_str(), "overloaded_error");
        assert_eq!(e.message, "Overloaded");
        assert!(e.retryable);
        let e = v.parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#,
        );
        assert_eq!(e.type_str(), "invalid_request_error");
        assert!(!e.retryable);

        let e = v.parse_error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            br#"{"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}"#,
        );
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(!e.retryable);

        let e = v.parse_error(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert!(e.retryable);
        assert!(e.message.contains("503"));
    }
}
