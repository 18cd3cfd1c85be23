//! Resolve: the client's body parsed into the unified request, with the target provider
//! and model and the fallback list, every problem named by its field.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde_json::Value;

use crate::error::GatewayError;
use crate::plugins::HookContext;
use crate::schema::{RequestKind, Target, UnifiedRequest};

use super::validate::{json_type, validate};

/// Headers a plugin never sees.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// resolve: parse the body, find the target and the fallbacks.
pub fn resolve(
    kind: RequestKind,
    body: &[u8],
) -> Result<(UnifiedRequest, Vec<Target>), GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            "request body is empty; expected a JSON object".to_owned()
        } else {
            format!("request body is not valid JSON: {e}")
        };
        GatewayError::bad_request(None, what).with_code("invalid_json")
    })?;
    let mut map = match value {
        Value::Object(map) => map,
        other => {
            return Err(GatewayError::bad_request(
                None,
                format!(
                    "the request body must be a JSON object, got {}",
                    json_type(&other)
                ),
            )
            .with_code("invalid_json"))
        }
    };
    let model = match map.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(GatewayError::bad_request(
                Some("model"),
                "'model' is required: write \"provider/model\" (e.g. \"openai/gpt-4o-mini\") or give 'provider' and 'model'",
            ))
        }
        Some(other) => {
            return Err(GatewayError::bad_request(
                Some("model"),
                format!("'model' must be a string, got {}", json_type(other)),
            ))
        }
    };
    let provider_field = match map.remove("provider") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if !p.is_empty() => Some(p),
        Some(other) => {
            return Err(GatewayError::bad_request(
                Some("provider"),
                format!(
                    "'provider' must be a non-empty string, got {}",
                    json_type(&other)
                ),
            ))
        }
    };
    let target = parse_target(provider_field.as_deref(), &model, "model")?;
    let fallbacks = match map.remove("fallbacks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_fallback(i, item))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(GatewayError::bad_request(
                Some("fallbacks"),
                format!("'fallbacks' must be a list, got {}", json_type(&other)),
            ))
        }
    };
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(GatewayError::bad_request(
                Some("stream"),
                format!("'stream' must be a boolean, got {}", json_type(other)),
            ))
        }
    };
    if stream && kind == RequestKind::Embedding {
        return Err(GatewayError::bad_request(
            Some("stream"),
            "embeddings cannot be streamed",
        ));
    }
    validate(kind, &map)?;
    map.insert("model".to_owned(), Value::String(target.model.clone()));
    Ok((
        UnifiedRequest {
            kind,
            target,
            stream,
            body: map,
        },
        fallbacks,
    ))
}

fn parse_target(provider: Option<&str>, model: &str, param: &str) -> Result<Target, GatewayError> {
    match provider {
        Some(p) => Ok(Target {
            provider: p.to_owned(),
            model: model.to_owned(),
        }),
        None => match model.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok(Target {
                provider: p.to_owned(),
                model: m.to_owned(),
            }),
            _ => Err(GatewayError::bad_request(
                Some(param),
                format!(
                    "'{param}' is \"{model}\", which names no provider: write \"provider/model\" (e.g. \"openai/{model}\") or give 'provider'"
                ),
            )),
        },
    }
}

fn parse_fallback(i: usize, item: &Value) -> Result<Target, GatewayError> {
    let param = format!("fallbacks[{i}]");
    match item {
        Value::String(s) => parse_target(None, s, &param),
        Value::Object(o) => {
            let model = o.get("model").and_then(Value::as_str).ok_or_else(|| {
                GatewayError::bad_request(
                    Some(&format!("{param}.model")),
                    format!("'{param}.model' is required and must be a string"),
                )
            })?;
            let provider = match o.get("provider") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) => Some(p.as_str()),
                Some(other) => {
                    return Err(GatewayError::bad_request(
                        Some(&format!("{param}.provider")),
                        format!(
                            "'{param}.provider' must be a string, got {}",
                            json_type(other)
                        ),
                    ))
                }
            };
            parse_target(provider, model, &format!("{param}.model"))
        }
        other => Err(GatewayError::bad_request(
            Some(&param),
            format!(
                "'{param}' must be \"provider/model\" or {{\"provider\", \"model\"}}, got {}",
                json_type(other)
            ),
        )),
    }
}

/// The hook context of a request on an open gateway: the caller is known by a hash of
/// its token (see [`crate::access::anonymous_identity`]).
pub fn hook_context(headers: &HeaderMap) -> HookContext {
    hook_context_as(headers, crate::access::anonymous_identity(headers))
}

/// The hook context of a request whose caller plugins know as `client_key`.
pub fn hook_context_as(headers: &HeaderMap, client_key: Arc<str>) -> HookContext {
    let visible: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| !SECRET_HEADERS.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req-{:016x}", rand::random::<u64>()));
    HookContext {
        request_id: request_id.into(),
        client_key,
        headers: visible.into(),
        received_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        attempt: 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::{header, HeaderValue, StatusCode};

    #[test]
    fn resolves_provider_slash_model() {
        let (r, f) = resolve(
            RequestKind::Chat,
            br#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}],"fallbacks":["anthropic/claude",{"provider":"groq","model":"llama"}]}"#,
        )
        .unwrap();
        assert_eq!(r.target.provider, "openai");
        assert_eq!(r.body["model"], "gpt-4o");
        assert!(!r.body.contains_key("fallbacks"));
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].provider, "groq");
    }

    #[test]
    fn model_with_slash_and_provider_field() {
        let (r, _) = resolve(
            RequestKind::Chat,
            br#"{"provider":"groq","model":"meta/llama-3","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(r.target.model, "meta/llama-3");
        assert!(!r.body.contains_key("provider"));
    }

    #[test]
    fn malformed_json_says_where() {
        let e = resolve(
            RequestKind::Chat,
            b"{\"model\": \"a/b\",\n  \"messages\": [}",
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("line 2 column"), "{}", e.message);
    }

    #[test]
    fn missing_provider_is_explained() {
        let e = resolve(
            RequestKind::Chat,
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert!(e.message.contains("provider/model"));
    }

    #[test]
    fn bad_fallback_names_its_index() {
        let e = resolve(
            RequestKind::Chat,
            br#"{"model":"a/b","messages":[{"role":"user","content":"x"}],"fallbacks":["a/b", 3]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("fallbacks[1]"));
    }

    #[test]
    fn client_key_hides_the_token() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-secret"),
        );
        h.insert("x-team", HeaderValue::from_static("blue"));
        let ctx = hook_context(&h);
        assert!(ctx.client_key.starts_with("ck-") && ctx.client_key.len() == 19);
        assert!(ctx.headers.iter().all(|(n, _)| n != "authorization"));
        assert!(ctx
            .headers
            .iter()
            .any(|(n, v)| n == "x-team" && v == "blue"));
    }
}
