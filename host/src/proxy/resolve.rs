//! Resolve: the client's body parsed into the unified request, with the target provider
//! and model and the fallback list, every problem named by its field.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::dialects;
use crate::error::GatewayError;
use crate::plugins::HookContext;
use crate::schema::{Dialect, Ingress, RawField, RequestKind, Target, UnifiedRequest};

use super::validate::{json_type, validate_lean, Lean};

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
    resolve_with(kind, body, &Catalog::default())
}

/// [`resolve`] with model names looked up in `catalog` (aliases, bare names).
pub fn resolve_with(
    kind: RequestKind,
    body: &[u8],
    catalog: &Catalog,
) -> Result<(UnifiedRequest, Vec<Target>), GatewayError> {
    resolve_map(kind, parse_object(body)?, catalog)
}

/// [`resolve_with`] without a tree of the request's big field (`messages`, or a list of
/// `prompt`s or `input`s): it stays a slice of `body` ([`RawField`]), validated one element
/// at a time, until something needs it parsed ([`UnifiedRequest::materialize`]). Errors are
/// the same as for a parsed body.
pub fn resolve_lean(
    kind: RequestKind,
    body: &Bytes,
    catalog: &Catalog,
) -> Result<(UnifiedRequest, Vec<Target>), GatewayError> {
    if let Some((map, raw)) = parse_lean(kind, body) {
        match resolve_parts(kind, map, raw, catalog) {
            Ok(r) => return Ok(r),
            Err(Lean::Invalid(e)) => return Err(e),
            Err(Lean::Unreadable) => {}
        }
    }
    // Not an object, not JSON, or nested too deeply to check piecewise: the whole body
    // parsed as a tree, which names the problem as ever.
    resolve_map(kind, parse_object(body)?, catalog)
}

/// The field of `kind` that can be large.
fn big_field(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Chat => "messages",
        RequestKind::Completion => "prompt",
        RequestKind::Embedding => "input",
    }
}

/// The body's top-level fields parsed, its big field (when a list) kept as a slice of
/// `body`; `None` when the body is not a JSON object.
fn parse_lean(kind: RequestKind, body: &Bytes) -> Option<(Map<String, Value>, Option<RawField>)> {
    struct Top {
        key: &'static str,
    }
    impl<'de> serde::de::Visitor<'de> for Top {
        type Value = (Map<String, Value>, Option<&'de RawValue>);

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut fields: A,
        ) -> Result<Self::Value, A::Error> {
            let mut map = Map::new();
            let mut raw = None;
            while let Some(k) = fields.next_key::<String>()? {
                if k != self.key {
                    let v: Value = fields.next_value()?;
                    map.insert(k, v);
                    continue;
                }
                // As in a parsed body, the last of duplicate keys wins.
                let v: &'de RawValue = fields.next_value()?;
                if v.get().starts_with('[') {
                    map.remove(self.key);
                    raw = Some(v);
                } else {
                    raw = None;
                    let v: Value =
                        serde_json::from_str(v.get()).map_err(serde::de::Error::custom)?;
                    map.insert(k, v);
                }
            }
            Ok((map, raw))
        }
    }
    let key = big_field(kind);
    let mut de = serde_json::Deserializer::from_slice(body);
    let (map, raw) = serde::Deserializer::deserialize_map(&mut de, Top { key }).ok()?;
    de.end().ok()?;
    let raw = raw.map(|v| RawField {
        key,
        json: body.slice_ref(v.get().as_bytes()),
    });
    Some((map, raw))
}

/// What a model name can stand for: `client.model_aliases`, and for a bare name the
/// providers whose keys list it. Built once from the config.
#[derive(Debug, Default)]
pub struct Catalog {
    aliases: HashMap<String, Vec<Target>>,
    /// A listed model → the providers whose keys list it, in config order.
    listed: HashMap<String, Vec<String>>,
    /// Configured provider names; empty means no config is known (every prefix is taken
    /// as a provider).
    providers: Vec<String>,
}

impl Catalog {
    pub fn new(config: &Config) -> Catalog {
        let mut listed: HashMap<String, Vec<String>> = HashMap::new();
        for p in &config.providers {
            for m in p.listed_models() {
                listed.entry(m.to_owned()).or_default().push(p.name.clone());
            }
        }
        Catalog {
            aliases: config
                .client
                .model_aliases
                .iter()
                .map(|(name, targets)| {
                    let t = targets
                        .iter()
                        .map(|(provider, model)| Target {
                            provider: provider.clone(),
                            model: model.clone(),
                        })
                        .collect();
                    (name.clone(), t)
                })
                .collect(),
            listed,
            providers: config.providers.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// The targets `model` stands for (an alias may stand for several: the first is the
    /// primary, the rest its fallbacks). `param` names the field in errors.
    fn lookup(
        &self,
        provider: Option<&str>,
        model: &str,
        param: &str,
    ) -> Result<Vec<Target>, GatewayError> {
        if let Some(p) = provider {
            return Ok(vec![Target {
                provider: p.to_owned(),
                model: model.to_owned(),
            }]);
        }
        if let Some(targets) = self.aliases.get(model) {
            return Ok(targets.clone());
        }
        let split = model
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty());
        if let Some((p, m)) = split {
            if self.providers.is_empty() || self.providers.iter().any(|c| c == p) {
                return Ok(vec![Target {
                    provider: p.to_owned(),
                    model: m.to_owned(),
                }]);
            }
        }
        match self.listed.get(model).map(Vec::as_slice) {
            Some([one]) => Ok(vec![Target {
                provider: one.clone(),
                model: model.to_owned(),
            }]),
            Some(many) if !many.is_empty() => {
                let choices: Vec<String> =
                    many.iter().map(|p| format!("\"{p}/{model}\"")).collect();
                Err(GatewayError::bad_request(
                    Some(param),
                    format!(
                        "'{param}' is \"{model}\", which the keys of several providers list: write one of {}, or add an alias for it to client.model_aliases",
                        choices.join(", ")
                    ),
                )
                .with_code("ambiguous_model"))
            }
            _ => match split {
                // An unknown provider prefix: the upstream side says it is not configured.
                Some((p, m)) => Ok(vec![Target {
                    provider: p.to_owned(),
                    model: m.to_owned(),
                }]),
                None => Err(self.unknown(model, param)),
            },
        }
    }

    fn unknown(&self, model: &str, param: &str) -> GatewayError {
        let mut choices: Vec<String> = self.aliases.keys().map(|a| format!("\"{a}\"")).collect();
        choices.sort_unstable();
        let mut listed: Vec<String> = self.listed.keys().map(|m| format!("\"{m}\"")).collect();
        listed.sort_unstable();
        choices.extend(listed);
        let known = if choices.is_empty() {
            String::new()
        } else {
            format!("; names served without a provider: {}", choices.join(", "))
        };
        GatewayError::bad_request(
            Some(param),
            format!(
                "'{param}' is \"{model}\", which names no provider and no alias: write \"provider/model\" (e.g. \"openai/{model}\") or give 'provider'{known}"
            ),
        )
        .with_code("model_not_found")
    }

    /// Aliases and the targets they stand for, for `/v1/models`.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &[Target])> {
        self.aliases.iter().map(|(a, t)| (a.as_str(), t.as_slice()))
    }
}

/// resolve for an Anthropic Messages body: checked and translated with Anthropic's field
/// paths, then resolved like a chat request. `native(target)` says whether a target speaks
/// Anthropic's format itself: then the client's body (and its `anthropic-beta` header) is
/// kept for it, and fields only Anthropic serves are allowed.
pub fn resolve_anthropic(
    body: &[u8],
    catalog: &Catalog,
    headers: &HeaderMap,
    native: impl Fn(&Target) -> bool,
) -> Result<(UnifiedRequest, Vec<Target>), GatewayError> {
    let mut src = parse_object(body)?;
    let translated = dialects::anthropic::to_unified(&src)?;
    let (mut req, fallbacks) = resolve_map(RequestKind::Chat, translated.body, catalog)?;
    req.ingress.dialect = Dialect::Anthropic;
    let primary = native(&req.target);
    if let Some((path, why)) = translated.native_only {
        if !primary {
            return Err(GatewayError::bad_request(
                Some(&path),
                format!(
                    "{path}: {} cannot serve this field ({why}); send it to an Anthropic-format provider (anthropic, or Claude on vertex)",
                    req.target
                ),
            ));
        }
    }
    if primary || fallbacks.iter().any(&native) {
        for k in dialects::anthropic::GATEWAY_FIELDS {
            src.remove(*k);
        }
        req.ingress.native = Some(std::sync::Arc::new(src));
        req.ingress.headers = headers
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| ("anthropic-beta".to_owned(), v.to_owned()))
            .collect();
    }
    Ok((req, fallbacks))
}

/// resolve for an OpenAI Responses body: translated with the Responses field paths, then
/// resolved like a chat request.
pub fn resolve_responses(
    body: &[u8],
    catalog: &Catalog,
) -> Result<(UnifiedRequest, Vec<Target>), GatewayError> {
    let src = parse_object(body)?;
    let (mut req, fallbacks) = resolve_map(
        RequestKind::Chat,
        dialects::responses::to_unified(&src)?,
        catalog,
    )?;
    req.ingress.dialect = Dialect::Responses;
    Ok((req, fallbacks))
}

/// The body as a JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            "request body is empty; expected a JSON object".to_owned()
        } else {
            format!("request body is not valid JSON: {e}")
        };
        GatewayError::bad_request(None, what).with_code("invalid_json")
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(GatewayError::bad_request(
            None,
            format!(
                "the request body must be a JSON object, got {}",
                json_type(&other)
            ),
        )
        .with_code("invalid_json")),
    }
}

/// resolve for a parsed OpenAI-shaped body.
pub fn resolve_map(
    kind: RequestKind,
    map: Map<String, Value>,
    catalog: &Catalog,
) -> Result<(UnifiedRequest, Vec<Target>), GatewayError> {
    resolve_parts(kind, map, None, catalog).map_err(|e| match e {
        Lean::Invalid(e) => e,
        // Only a raw field can be unreadable, and there is none.
        Lean::Unreadable => GatewayError::bad_request(None, "request body is not readable JSON"),
    })
}

/// resolve for the top-level fields `map` and the big field `raw` kept as bytes.
fn resolve_parts(
    kind: RequestKind,
    mut map: Map<String, Value>,
    raw: Option<RawField>,
    catalog: &Catalog,
) -> Result<(UnifiedRequest, Vec<Target>), Lean> {
    let model = match map.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(GatewayError::bad_request(
                Some("model"),
                "'model' is required: write \"provider/model\" (e.g. \"openai/gpt-4o-mini\") or give 'provider' and 'model'",
            ).into())
        }
        Some(other) => {
            return Err(GatewayError::bad_request(
                Some("model"),
                format!("'model' must be a string, got {}", json_type(other)),
            ).into())
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
            )
            .into())
        }
    };
    let mut targets = catalog
        .lookup(provider_field.as_deref(), &model, "model")?
        .into_iter();
    let Some(target) = targets.next() else {
        return Err(catalog.unknown(&model, "model").into());
    };
    let mut fallbacks: Vec<Target> = targets.collect();
    match map.remove("fallbacks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                fallbacks.extend(parse_fallback(i, item, catalog)?);
            }
        }
        Some(other) => {
            return Err(GatewayError::bad_request(
                Some("fallbacks"),
                format!("'fallbacks' must be a list, got {}", json_type(&other)),
            )
            .into())
        }
    }
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(GatewayError::bad_request(
                Some("stream"),
                format!("'stream' must be a boolean, got {}", json_type(other)),
            )
            .into())
        }
    };
    if stream && kind == RequestKind::Embedding {
        return Err(
            GatewayError::bad_request(Some("stream"), "embeddings cannot be streamed").into(),
        );
    }
    validate_lean(kind, &map, raw.as_ref())?;
    map.insert("model".to_owned(), Value::String(target.model.clone()));
    Ok((
        UnifiedRequest {
            kind,
            target,
            stream,
            body: map,
            ingress: Ingress {
                raw,
                ..Default::default()
            },
        },
        fallbacks,
    ))
}

fn parse_fallback(i: usize, item: &Value, catalog: &Catalog) -> Result<Vec<Target>, GatewayError> {
    let param = format!("fallbacks[{i}]");
    match item {
        Value::String(s) => catalog.lookup(None, s, &param),
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
            catalog.lookup(provider, model, &format!("{param}.model"))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod catalog_tests {
    use super::*;
    use std::path::Path;

    fn catalog() -> Catalog {
        let env: HashMap<String, String> = HashMap::new();
        let (cfg, _) = Config::from_json(
            r#"{"client": {"model_aliases": {"fast": ["groq/llama-3.1-8b-instant", "openai/gpt-4o-mini"], "smart": "openai/gpt-4o"}},
                "providers": {
                  "openai": {"keys": [{"value": "k", "models": ["gpt-4o-mini", "gpt-4o"]}]},
                  "azure": {"keys": [{"value": "k", "models": ["gpt-4o-mini"]}], "meta_config": {"endpoint": "https://x.openai.azure.com", "api_version": "2024-10-21"}},
                  "groq": {"keys": [{"value": "k", "models": ["llama-3.1-8b-instant"]}]},
                  "anthropic": {"keys": [{"value": "k", "models": ["claude-3-5-haiku"]}]}
                }}"#,
            Path::new("."),
            &env,
        )
        .unwrap();
        Catalog::new(&cfg)
    }

    fn chat(model: &str, extra: &str) -> String {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]{extra}}}"#)
    }

    #[test]
    fn bare_names_aliases_and_their_errors() {
        let c = catalog();
        let (r, f) = resolve_with(
            RequestKind::Chat,
            chat("claude-3-5-haiku", "").as_bytes(),
            &c,
        )
        .unwrap();
        assert_eq!(r.target.to_string(), "anthropic/claude-3-5-haiku");
        assert!(f.is_empty());
        // An alias is the primary and its fallbacks, before the request's own.
        let (r, f) = resolve_with(
            RequestKind::Chat,
            chat("fast", r#","fallbacks":["smart"]"#).as_bytes(),
            &c,
        )
        .unwrap();
        assert_eq!(r.target.to_string(), "groq/llama-3.1-8b-instant");
        assert_eq!(r.body["model"], "llama-3.1-8b-instant");
        let f: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert_eq!(f, ["openai/gpt-4o-mini", "openai/gpt-4o"]);
        // provider/model is untouched.
        let (r, _) = resolve_with(
            RequestKind::Chat,
            chat("azure/gpt-4o-mini", "").as_bytes(),
            &c,
        )
        .unwrap();
        assert_eq!(r.target.provider, "azure");
        let e =
            resolve_with(RequestKind::Chat, chat("gpt-4o-mini", "").as_bytes(), &c).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert_eq!(e.code.as_deref(), Some("ambiguous_model"));
        assert!(
            e.message.contains("\"openai/gpt-4o-mini\"")
                && e.message.contains("\"azure/gpt-4o-mini\""),
            "{}",
            e.message
        );
        let e = resolve_with(RequestKind::Chat, chat("gpt-5", "").as_bytes(), &c).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("model_not_found"));
        assert!(
            e.message.contains("\"fast\"") && e.message.contains("\"claude-3-5-haiku\""),
            "{}",
            e.message
        );
        let e = resolve_with(
            RequestKind::Chat,
            chat("smart", r#","fallbacks":["nothing"]"#).as_bytes(),
            &c,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("fallbacks[0]"));
    }

    #[test]
    fn anthropic_requests_keep_their_body_for_native_targets() {
        let c = catalog();
        let body = br#"{"model":"anthropic/claude-3-5-haiku","max_tokens":10,"top_k":3,
            "messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "anthropic-beta",
            http::HeaderValue::from_static("prompt-caching-2024-07-31"),
        );
        let (r, _) = resolve_anthropic(body, &c, &h, |t| t.provider == "anthropic").unwrap();
        assert_eq!(r.ingress.dialect, Dialect::Anthropic);
        let native = r.ingress.native.as_ref().unwrap();
        assert_eq!(native["top_k"], 3);
        assert_eq!(
            r.ingress.headers,
            [(
                "anthropic-beta".to_owned(),
                "prompt-caching-2024-07-31".to_owned()
            )]
        );
        assert!(!r.body.contains_key("top_k"));
        // Elsewhere a field only Anthropic serves is refused, by its path.
        let body = br#"{"model":"openai/gpt-4o","max_tokens":10,"top_k":3,"messages":[{"role":"user","content":"hi"}]}"#;
        let e = resolve_anthropic(body, &c, &h, |t| t.provider == "anthropic").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_k"));
        assert!(
            e.message.starts_with("top_k: openai/gpt-4o cannot serve"),
            "{}",
            e.message
        );
        // Nothing native in the chain: the original is not kept.
        let body = br#"{"model":"openai/gpt-4o","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
        let (r, _) = resolve_anthropic(body, &c, &h, |t| t.provider == "anthropic").unwrap();
        assert!(r.ingress.native.is_none());
    }
}

/// The lean path: the big field kept as the client's bytes, validated piecewise, spliced.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod lean_tests {
    use super::*;
    use crate::providers::openai::openai_body;

    fn lean(kind: RequestKind, body: &str) -> Result<UnifiedRequest, GatewayError> {
        resolve_lean(
            kind,
            &Bytes::copy_from_slice(body.as_bytes()),
            &Catalog::default(),
        )
        .map(|(r, _)| r)
    }

    /// The error the tree path gives for the same body.
    fn tree(kind: RequestKind, body: &str) -> Result<UnifiedRequest, GatewayError> {
        let map = parse_object(body.as_bytes())?;
        resolve_map(kind, map, &Catalog::default()).map(|(r, _)| r)
    }

    #[test]
    fn upstream_gets_the_clients_messages_byte_for_byte() {
        // Odd spacing, escapes and number spellings a round trip through a tree would change.
        let messages = r#"[ {"role":"user", "content":"caf\u00e9 \"quoted\"", "x_part": 1.50e0},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]} ]"#;
        let body = format!(
            r#"{{"model": "openai/gpt-4o", "fallbacks": ["groq/llama"], "x_unknown": {{"keep": [1, 2]}}, "messages": {messages}, "temperature": 0.5}}"#
        );
        let req = lean(RequestKind::Chat, &body).unwrap();
        assert!(req.is_lean());
        assert!(!req.body.contains_key("messages"));
        let out = openai_body(&req, &[]).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.ends_with(&format!(r#","messages":{messages}}}"#)),
            "{text}"
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["x_unknown"], serde_json::json!({"keep": [1, 2]}));
        assert_eq!(v["temperature"], 0.5);
        assert!(v.get("fallbacks").is_none() && v.get("provider").is_none());
        // The same request parsed as a tree says the same.
        let mut full = req.clone();
        full.materialize().unwrap();
        assert!(!full.is_lean());
        assert_eq!(v, Value::Object(full.body.clone()));
        assert_eq!(
            v,
            serde_json::from_slice::<Value>(&openai_body(&full, &[]).unwrap()).unwrap()
        );
    }

    #[test]
    fn splice_with_stream_options_and_without_fields() {
        let req = lean(
            RequestKind::Completion,
            r#"{"model": "a/b", "stream": true, "prompt": ["x", [1, 2]]}"#,
        )
        .unwrap();
        assert!(req.is_lean());
        let out = openai_body(&req, &["model", "stream"]).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"stream_options": {"include_usage": true}, "prompt": ["x", [1, 2]]})
        );
        // Only the raw field left.
        let req = lean(
            RequestKind::Embedding,
            r#"{"model": "a/b", "input": ["x"]}"#,
        )
        .unwrap();
        let out = openai_body(&req, &["model"]).unwrap();
        assert_eq!(&out[..], br#"{"input":["x"]}"#);
    }

    #[test]
    fn only_lists_stay_raw_and_the_last_duplicate_wins() {
        let req = lean(
            RequestKind::Completion,
            r#"{"model": "a/b", "prompt": "one"}"#,
        )
        .unwrap();
        assert!(!req.is_lean());
        assert_eq!(req.body["prompt"], "one");
        let req = lean(
            RequestKind::Chat,
            r#"{"model": "a/b", "messages": "x", "messages": [{"role": "user", "content": "y"}]}"#,
        )
        .unwrap();
        assert!(req.is_lean());
        assert!(!req.body.contains_key("messages"));
        let e = lean(
            RequestKind::Chat,
            r#"{"model": "a/b", "messages": [{"role": "user", "content": "y"}], "messages": 3}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn errors_are_those_of_a_parsed_body() {
        let deep = format!(
            r#"{{"model": "a/b", "messages": [{{"role": "user", "content": {}1{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let cases: Vec<(RequestKind, String)> = vec![
            (RequestKind::Chat, r#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "x"}, {"role": "user", "content": {"text": "x"}}]}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": ["mail jane@example.com"]}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": [{"role": "robot", "content": "x"}]}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": [{"role": "user", "content": "x", "name": 7}]}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": [{"role": "user", "content": 3}]}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": []}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": "hi"}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b"}"#.into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#.into()),
            (RequestKind::Chat, r#"{"messages": [{"role": "user", "content": "x"}]}"#.into()),
            (RequestKind::Chat, "{\"model\": \"a/b\",\n \"messages\": [}".into()),
            (RequestKind::Chat, r#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}]} trailing"#.into()),
            (RequestKind::Chat, r#"[{"model": "a/b"}]"#.into()),
            (RequestKind::Chat, "".into()),
            (RequestKind::Chat, deep),
            (RequestKind::Completion, r#"{"model": "a/b", "prompt": []}"#.into()),
            (RequestKind::Completion, r#"{"model": "a/b"}"#.into()),
            (RequestKind::Embedding, r#"{"model": "a/b", "input": ["x", {"a": 1}]}"#.into()),
            (RequestKind::Embedding, r#"{"model": "a/b", "input": [1, 2, -3]}"#.into()),
        ];
        for (kind, body) in cases {
            let short = &body[..body.len().min(80)];
            let e = lean(kind, &body).unwrap_err();
            let want = tree(kind, &body).unwrap_err();
            assert_eq!(e.status, want.status, "{short}");
            assert_eq!(e.param, want.param, "{short}");
            assert_eq!(e.message, want.message, "{short}");
            assert_eq!(e.code, want.code, "{short}");
        }
        let e = lean(RequestKind::Chat, r#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "x"}, {"role": "user", "content": {"text": "x"}}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[2].content"));
        assert!(
            e.message
                .starts_with("messages[2].content must be a string or a list of parts"),
            "{}",
            e.message
        );
    }

    #[test]
    fn good_requests_resolve_alike() {
        for (kind, body) in [
            (
                RequestKind::Chat,
                r#"{"model": "a/b", "stream": true, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}"#,
            ),
            (
                RequestKind::Completion,
                r#"{"model": "a/b", "prompt": [[1, 2], [3]]}"#,
            ),
            (
                RequestKind::Embedding,
                r#"{"model": "a/b", "input": ["x", "y"], "dimensions": 8}"#,
            ),
        ] {
            let mut l = lean(kind, body).unwrap();
            assert!(l.is_lean(), "{body}");
            l.materialize().unwrap();
            let t = tree(kind, body).unwrap();
            assert_eq!(l.body, t.body, "{body}");
            assert_eq!(l.stream, t.stream);
            assert_eq!(l.target, t.target);
        }
    }
}
