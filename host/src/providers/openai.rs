//! The OpenAI-compatible family: OpenAI, Groq, Mistral, Ollama and custom servers. Sits
//! behind [`build`](super::build) for every provider that speaks OpenAI's wire format, so
//! requests go through nearly untouched. The response, stream and error helpers here are
//! `pub(crate)` because Azure speaks the same format, and the error-body and
//! `Retry-After` helpers are shared with Anthropic.

// Helpers return the `GatewayError` the `Provider` trait returns; errors are the cold
// path, and boxing them here would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::providers::{
    is_retryable_status, Auth, Frame, Provider, StreamDecoder, StreamEvent, UpstreamRequest,
};
use crate::schema::{RequestKind, StreamChunk, UnifiedRequest, UnifiedResponse};

/// Longest provider error text (non-JSON bodies) kept in a message, in characters.
const MAX_ERROR_TEXT: usize = 500;

/// One OpenAI-compatible provider.
pub struct OpenAiCompatible {
    name: String,
    base_url: String,
}

impl OpenAiCompatible {
    pub fn new(cfg: &ProviderConfig) -> Self {
        OpenAiCompatible {
            name: cfg.name.clone(),
            base_url: cfg.network.base_url.clone(),
        }
    }
}

impl Provider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, _kind: RequestKind) -> bool {
        true
    }

    fn auth(&self) -> Auth {
        Auth::Header {
            name: AUTHORIZATION,
            prefix: "Bearer ",
        }
    }

    fn splices_raw(&self) -> bool {
        true
    }

    fn build_request(&self, req: &UnifiedRequest) -> Result<UpstreamRequest, GatewayError> {
        Ok(UpstreamRequest::post_json(
            format!("{}{}", self.base_url, req.kind.openai_path()),
            openai_body(req, &[])?,
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

/// The client's body for an OpenAI-shaped upstream, serialised straight from the request
/// (no copy of it: a 10 MiB body of many small messages is hundreds of MiB as a tree), and
/// a field still kept as the client's bytes ([`crate::schema::RawField`]) spliced in as
/// they are, last. Streams of chat and completions ask for a final usage chunk, because
/// usage is what metrics and budgets count; a client's own `stream_options` win. `without`
/// names fields the upstream must not get (Azure's `model`).
pub(crate) fn openai_body(req: &UnifiedRequest, without: &[&str]) -> Result<Bytes, GatewayError> {
    let extra = (req.stream
        && matches!(req.kind, RequestKind::Chat | RequestKind::Completion)
        && !req.body.contains_key("stream_options"))
    .then(|| serde_json::json!({"include_usage": true}));
    struct Body<'a> {
        map: &'a Map<String, Value>,
        without: &'a [&'a str],
        extra: Option<Value>,
        /// Written from the raw field instead.
        raw_key: Option<&'static str>,
    }
    impl serde::Serialize for Body<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let kept = self
                .map
                .iter()
                .filter(|(k, _)| {
                    !self.without.contains(&k.as_str()) && self.raw_key != Some(k.as_str())
                })
                .map(|(k, v)| (k.as_str(), v));
            s.collect_map(kept.chain(self.extra.as_ref().map(|v| ("stream_options", v))))
        }
    }
    let raw = req.ingress.raw.as_ref();
    let raw_key = raw.map(|r| r.key);
    let raw_len = raw.map_or(0, |r| r.key.len() + r.json.len() + 4);
    let mut out = Vec::with_capacity(1024 + raw_len);
    serde_json::to_writer(
        &mut out,
        &Body {
            map: &req.body,
            without,
            extra,
            raw_key,
        },
    )
    .map_err(serialize_error)?;
    if let Some(raw) = raw {
        // `{...}` becomes `{...,"key":<raw>}`; the key is one of ours, nothing to escape.
        out.pop();
        if out.len() > 1 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(raw.key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(&raw.json);
        out.push(b'}');
    }
    Ok(Bytes::from(out))
}

fn serialize_error(e: serde_json::Error) -> GatewayError {
    GatewayError::gateway(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        format!("could not serialize the upstream request: {e}"),
    )
}

pub(crate) fn to_bytes(body: &Map<String, Value>) -> Result<Bytes, GatewayError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(serialize_error)
}

/// A 2xx body (or stream event) that the gateway cannot read. Not retryable: the same
/// request would most likely get the same answer.
pub(crate) fn malformed(provider: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::upstream(
        StatusCode::BAD_GATEWAY,
        format!("provider {provider} returned a body that was not valid JSON: {what}"),
    )
    .with_code("upstream_malformed_response")
    .retryable(false)
}

/// Parse a provider body that must be a JSON object.
pub(crate) fn parse_object(
    provider: &str,
    body: &[u8],
) -> Result<Map<String, Value>, GatewayError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(provider, "expected a JSON object")),
        Err(e) => Err(malformed(provider, e)),
    }
}

/// A non-streaming OpenAI answer, passed through.
pub(crate) fn parse_openai_response(
    provider: &str,
    body: &[u8],
) -> Result<UnifiedResponse, GatewayError> {
    parse_object(provider, body).map(UnifiedResponse::ok)
}

/// Decoder for OpenAI streams: every `data:` is a chunk until `[DONE]`.
pub(crate) struct OpenAiStreamDecoder {
    provider: String,
}

impl OpenAiStreamDecoder {
    pub(crate) fn new(provider: &str) -> Self {
        OpenAiStreamDecoder {
            provider: provider.to_owned(),
        }
    }
}

impl StreamDecoder for OpenAiStreamDecoder {
    fn decode(&mut self, frame: &Frame) -> Result<Vec<StreamEvent>, GatewayError> {
        let data = frame.sse(&self.provider)?.data.trim();
        if data == "[DONE]" {
            return Ok(vec![StreamEvent::Done]);
        }
        if data.is_empty() {
            return Ok(vec![StreamEvent::Skip]);
        }
        let body = parse_object(&self.provider, data.as_bytes())?;
        // OpenAI reports failures that happen after the 200 as a chunk holding only an
        // error object; passing it on as a chunk would look like an empty success.
        if !body.contains_key("choices") {
            if let Some(err) = body.get("error") {
                let (message, error_type, code, param) = openai_error_fields(err);
                return Err(build_upstream_error(
                    StatusCode::BAD_GATEWAY,
                    &HeaderMap::new(),
                    message.unwrap_or_else(|| "the provider's stream reported an error".into()),
                    error_type,
                    code,
                    param,
                ));
            }
        }
        Ok(vec![StreamEvent::Chunk(StreamChunk { body })])
    }
}

type ErrorFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// `message`, `type`, `code`, `param` of an OpenAI `error` value (object or string).
fn openai_error_fields(err: &Value) -> ErrorFields {
    match err {
        Value::String(s) => (Some(s.clone()), None, None, None),
        Value::Object(obj) => (
            obj.get("message").and_then(value_text),
            obj.get("type").and_then(value_text),
            obj.get("code").and_then(value_text),
            obj.get("param").and_then(value_text),
        ),
        _ => (None, None, None, None),
    }
}

/// A field as text; providers disagree on whether `code` is a string or a number.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-2xx OpenAI-shaped answer as an error that keeps the provider's status, message,
/// type, code and param.
pub(crate) fn parse_openai_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> GatewayError {
    let parsed = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => {
            if let Some(err) = obj.get("error") {
                Some(openai_error_fields(err))
            } else {
                obj.get("message").and_then(value_text).map(|m| {
                    (
                        Some(m),
                        obj.get("type").and_then(value_text),
                        obj.get("code").and_then(value_text),
                        obj.get("param").and_then(value_text),
                    )
                })
            }
        }
        _ => None,
    };
    let (message, error_type, code, param) = parsed.unwrap_or((None, None, None, None));
    let message = message.unwrap_or_else(|| error_text(status, body));
    build_upstream_error(status, headers, message, error_type, code, param)
}

/// The error every provider's `parse_error` ends in.
pub(crate) fn build_upstream_error(
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
    error_type: Option<String>,
    code: Option<String>,
    param: Option<String>,
) -> GatewayError {
    let mut e = GatewayError::upstream(status, message)
        .retryable(is_retryable_status(status))
        .with_retry_after(retry_after(headers));
    if let Some(t) = error_type {
        e = e.with_type(t);
    }
    if let Some(c) = code {
        e = e.with_code(c);
    }
    e.param = param;
    e
}

/// A body that is not a recognised error object, as a message: its text, cut to
/// [`MAX_ERROR_TEXT`] characters so an HTML error page does not flood the client.
pub(crate) fn error_text(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!(
            "provider answered HTTP {} with an empty body",
            status.as_u16()
        );
    }
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// How long the provider asks us to wait: `Retry-After` in seconds or as an HTTP-date, or
/// OpenAI's `retry-after-ms`.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(v) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Ok(secs) = v.parse::<f64>() {
            return seconds(secs);
        }
        if let Some(at) = parse_http_date(v) {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
            return Some(Duration::from_secs(at.saturating_sub(now)));
        }
    }
    let ms = headers.get("retry-after-ms")?.to_str().ok()?.trim();
    seconds(ms.parse::<f64>().ok()? / 1000.0)
}

/// A wait the provider asked for, in seconds; absurd values (`1e30`, negative, NaN) mean
/// nothing usable, and a day is more than anyone will wait.
fn seconds(secs: f64) -> Option<Duration> {
    if !(secs.is_finite() && secs >= 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(86_400.0)).ok()
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only
/// HTTP-date form servers may send today.
fn parse_http_date(s: &str) -> Option<u64> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split_ascii_whitespace();
    let day: u64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let days = u64::try_from(days).ok()?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{NetworkConfig, ProviderKind, ProviderSettings};
    use crate::providers::sse;
    use crate::schema::Target;
    use http::HeaderValue;
    use serde_json::json;

    pub(crate) fn provider_config(kind: ProviderKind, base_url: &str) -> ProviderConfig {
        ProviderConfig {
            name: kind.as_str().to_owned(),
            kind,
            keys: Vec::new(),
            missing_env: Vec::new(),
            network: NetworkConfig {
                base_url: base_url.to_owned(),
                extra_headers: Vec::new(),
                request_timeout: Duration::from_secs(30),
                stream_idle_timeout: Duration::from_secs(30),
                max_retries: 0,
                retry_backoff_initial: Duration::from_millis(500),
                retry_backoff_max: Duration::from_secs(5),
            },
            concurrency: 1,
            buffer_size: 1,
            proxy: None,
            settings: ProviderSettings::None,
            anthropic_version: "2023-06-01".to_owned(),
        }
    }

    pub(crate) fn request(kind: RequestKind, provider: &str, body: Value) -> UnifiedRequest {
        let body = body.as_object().unwrap().clone();
        UnifiedRequest {
            kind,
            target: Target {
                provider: provider.to_owned(),
                model: body["model"].as_str().unwrap_or("m").to_owned(),
            },
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            body,
            ingress: Default::default(),
        }
    }

    fn openai() -> OpenAiCompatible {
        OpenAiCompatible::new(&provider_config(
            ProviderKind::OpenAi,
            "https://api.openai.com/v1",
        ))
    }

    fn body_json(r: &UpstreamRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn chat_request_passes_through_with_bearer() {
        let req = request(
            RequestKind::Chat,
            "openai",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "x_unknown": 1}),
        );
        let p = openai();
        let up = p.build_request(&req).unwrap();
        assert_eq!(up.url, "https://api.openai.com/v1/chat/completions");
        assert!(up.headers.get(AUTHORIZATION).is_none());
        assert!(
            matches!(p.auth(), Auth::Header { name, prefix: "Bearer " } if name == AUTHORIZATION)
        );
        assert_eq!(up.headers[http::header::CONTENT_TYPE], "application/json");
        assert_eq!(body_json(&up), Value::Object(req.body.clone()));
    }

    #[test]
    fn keyless_and_paths() {
        let p = OpenAiCompatible::new(&provider_config(
            ProviderKind::Ollama,
            "http://localhost:11434/v1",
        ));
        for (kind, path) in [
            (RequestKind::Completion, "/completions"),
            (RequestKind::Embedding, "/embeddings"),
        ] {
            assert!(p.supports(kind));
            let up = p
                .build_request(&request(kind, "ollama", json!({"model": "llama3"})))
                .unwrap();
            assert_eq!(up.url, format!("http://localhost:11434/v1{path}"));
            assert!(up.headers.get(AUTHORIZATION).is_none());
        }
    }

    #[test]
    fn streams_ask_for_usage_unless_client_chose() {
        let p = openai();
        let req = request(
            RequestKind::Chat,
            "openai",
            json!({"model": "gpt-4o", "stream": true, "messages": []}),
        );
        let up = p.build_request(&req).unwrap();
        assert_eq!(
            body_json(&up)["stream_options"],
            json!({"include_usage": true})
        );

        let req = request(
            RequestKind::Chat,
            "openai",
            json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": false}}),
        );
        let up = p.build_request(&req).unwrap();
        assert_eq!(
            body_json(&up)["stream_options"],
            json!({"include_usage": false})
        );

        let req = request(
            RequestKind::Embedding,
            "openai",
            json!({"model": "e", "stream": true}),
        );
        let up = p.build_request(&req).unwrap();
        assert!(body_json(&up).get("stream_options").is_none());
    }

    #[test]
    fn absurd_retry_after_values_do_not_panic() {
        for (name, v, want) in [
            ("retry-after", "1e30", Some(Duration::from_secs(86_400))),
            ("retry-after", "-3", None),
            ("retry-after", "NaN", None),
            ("retry-after-ms", "1e300", Some(Duration::from_secs(86_400))),
            ("retry-after-ms", "inf", None),
            ("retry-after-ms", "1500", Some(Duration::from_millis(1500))),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(v));
            assert_eq!(retry_after(&h), want, "{name}: {v}");
        }
    }

    #[test]
    fn response_parsing() {
        let req = request(RequestKind::Chat, "openai", json!({"model": "m"}));
        let body = br#"{"id":"c1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        let resp = openai().parse_response(&req, body).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body["id"], "c1");
        assert_eq!(resp.usage.unwrap().total_tokens, 7);

        let err = openai().parse_response(&req, b"{\"id\": ").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(err.code.as_deref(), Some("upstream_malformed_response"));
        assert!(!err.retryable);
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        assert!(err.message.contains("line 1"), "{}", err.message);

        let err = openai().parse_response(&req, b"[1]").unwrap_err();
        assert_eq!(err.code.as_deref(), Some("upstream_malformed_response"));
    }

    #[test]
    fn stream_decoding() {
        let req = request(RequestKind::Chat, "openai", json!({"model": "m"}));
        let mut d = openai().stream_decoder(&req);
        let ev = d
            .decode(&sse(
                "",
                r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            ))
            .unwrap();
        match &ev[..] {
            [StreamEvent::Chunk(c)] => assert_eq!(c.body["choices"][0]["delta"]["content"], "hi"),
            other => panic!("{other:?}"),
        }
        let ev = d
            .decode(&sse(
                "",
                r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            ))
            .unwrap();
        match &ev[..] {
            [StreamEvent::Chunk(c)] => assert_eq!(c.usage().unwrap().total_tokens, 3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &d.decode(&sse("", "[DONE]")).unwrap()[..],
            [StreamEvent::Done]
        ));
        let err = d.decode(&sse("", "{oops")).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(err.code.as_deref(), Some("upstream_malformed_response"));

        let err = d
            .decode(&sse(
                "",
                r#"{"error":{"message":"boom","type":"server_error"}}"#,
            ))
            .unwrap_err();
        assert_eq!(err.message, "boom");
        assert_eq!(err.type_str(), "server_error");
    }

    #[test]
    fn error_parsing() {
        let p = openai();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded","param":null}}"#;
        let e = p.parse_error(StatusCode::TOO_MANY_REQUESTS, &headers, body);
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.message, "Rate limit reached");
        assert_eq!(e.type_str(), "requests");
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.param, None);
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.fault, crate::error::Fault::Upstream);

        let body = br#"{"error":{"message":"bad model","type":"invalid_request_error","code":"model_not_found","param":"model"}}"#;
        let e = p.parse_error(StatusCode::NOT_FOUND, &HeaderMap::new(), body);
        assert!(!e.retryable);
        assert_eq!(e.param.as_deref(), Some("model"));
        assert_eq!(e.retry_after, None);

        let e = p.parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"error":"nope"}"#,
        );
        assert_eq!(e.message, "nope");
        assert_eq!(e.error_type, None);

        let e = p.parse_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &HeaderMap::new(),
            br#"{"message":"mistral says no","code":3001}"#,
        );
        assert_eq!(e.message, "mistral says no");
        assert_eq!(e.code.as_deref(), Some("3001"));

        let e = p.parse_error(StatusCode::REQUEST_TIMEOUT, &HeaderMap::new(), b"");
        assert!(e.retryable);
        assert!(e.message.contains("408"));

        let html = format!("<html>{}</html>", "x".repeat(2000));
        let e = p.parse_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), html.as_bytes());
        assert!(e.retryable);
        assert!(e.message.starts_with("<html>xx"));
        assert_eq!(e.message.chars().count(), MAX_ERROR_TEXT + 3);
    }

    #[test]
    fn retry_after_forms() {
        let h = |name: &'static str, v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(name, HeaderValue::from_static(v));
            m
        };
        assert_eq!(retry_after(&h("retry-after", "0")), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&h("retry-after", "1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&h("retry-after-ms", "250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&h("retry-after", "soon")), None);
        // A date in the past means "now".
        assert_eq!(
            retry_after(&h("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);

        let future = SystemTime::now() + Duration::from_secs(120);
        let secs = future.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let date = format_http_date(secs);
        let mut m = HeaderMap::new();
        m.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let got = retry_after(&m).unwrap().as_secs();
        assert!((118..=120).contains(&got), "{date} -> {got}");
    }

    /// Inverse of `parse_http_date`, to test with dates relative to now.
    fn format_http_date(secs: u64) -> String {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // civil_from_days (Howard Hinnant).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "Mon, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
            MONTHS[(m - 1) as usize],
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}
