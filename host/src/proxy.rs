//! The request's way through the gateway, as named phases sharing one [`RequestCtx`]:
//!
//! accept → resolve route → (per target: pre-hooks → queue/upstream → post-hooks) → respond
//! → finish.
//!
//! Routes call [`handle`] with the raw body. Each target (the primary, then each fallback)
//! runs the hooks again, and the route is resolved after the pre-hooks, so a plugin that
//! changes the provider or model really reaches that provider's queue. When every target
//! fails, the error lists each attempt. `finish` (metrics) runs on every path.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::engine::{Answer, ChunkStream, Served};
use crate::error::{AttemptSummary, Fault, GatewayError};
use crate::plugins::{Chain, HookContext, PreOutcome, StreamHookState};
use crate::providers::sse;
use crate::schema::{RequestKind, StreamChunk, Target, UnifiedRequest, UnifiedResponse, Usage};
use crate::server::AppState;

/// Headers a plugin never sees.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// Everything one client request carries through the phases.
pub struct RequestCtx {
    pub hook: HookContext,
    pub received: Instant,
    /// Upstream time summed over attempts, to tell the gateway's own share.
    pub upstream: Duration,
    pub attempts: Vec<AttemptSummary>,
}

/// accept → ... → finish for one request of `kind`.
pub async fn handle(
    state: &AppState,
    kind: RequestKind,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let received = Instant::now();
    let (req, fallbacks) = match resolve(kind, &body) {
        Ok(r) => r,
        Err(e) => {
            finish_error(state, None, &e);
            return e.into_response();
        }
    };
    let mut ctx = RequestCtx {
        hook: hook_context(headers),
        received,
        upstream: Duration::ZERO,
        attempts: Vec::new(),
    };
    let chain = state.plugins.chain();
    let mut targets = std::iter::once(req.target.clone()).chain(fallbacks);
    let mut target = targets.next();
    let mut attempt = 0u32;
    let mut last_err: Option<GatewayError> = None;
    while let Some(t) = target.take() {
        let mut req = req.clone();
        req.set_target(t.clone());
        ctx.hook.attempt = attempt;
        match run_target(state, &chain, &mut ctx, req).await {
            Ok(resp) => return resp,
            Err(e) => {
                ctx.attempts.push(AttemptSummary {
                    provider: t.provider.clone(),
                    model: t.model.clone(),
                    status: e.status.as_u16(),
                    message: e.message.clone(),
                });
                let next = if e.allow_fallbacks {
                    targets.next()
                } else {
                    None
                };
                if let Some(n) = &next {
                    state
                        .metrics
                        .fallbacks
                        .with_label_values(&[t.provider.as_str(), n.provider.as_str()])
                        .inc();
                    tracing::info!(
                        request_id = %ctx.hook.request_id, from = %t, to = %n,
                        "falling back after {}: {}", e.status, e.message
                    );
                }
                target = next;
                last_err = Some(e);
                attempt += 1;
            }
        }
    }
    let mut err = last_err.unwrap_or_else(|| {
        GatewayError::gateway(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no target tried",
        )
    });
    if ctx.attempts.len() > 1 {
        let list: Vec<String> = ctx
            .attempts
            .iter()
            .map(|a| format!("{}/{} ({})", a.provider, a.model, a.status))
            .collect();
        err.message = format!(
            "all {} targets failed: {}; last error: {}",
            ctx.attempts.len(),
            list.join(", "),
            err.message
        );
        err.attempts = std::mem::take(&mut ctx.attempts);
    }
    finish_error(state, Some(&req.target), &err);
    overhead(state, &req.target.provider, &ctx);
    err.into_response()
}

/// One target: pre-hooks → queue/upstream → post-hooks → respond.
async fn run_target(
    state: &AppState,
    chain: &Arc<Chain>,
    ctx: &mut RequestCtx,
    mut req: UnifiedRequest,
) -> Result<Response, GatewayError> {
    // pre-hooks
    let (pre, ran) = if chain.is_empty() {
        (PreOutcome::Continue, 0)
    } else {
        chain.pre_hooks(&ctx.hook, &mut req)
    };
    let (mut outcome, served) = match pre {
        PreOutcome::Continue => {
            // resolve route (after the hooks) → queue/upstream
            match state.engine.execute(&req).await {
                Ok((Answer::Full(resp), served)) => (Ok(resp), Some(served)),
                Ok((Answer::Stream(stream), served)) => {
                    ctx.upstream += served.upstream;
                    return Ok(respond_stream(
                        state,
                        chain.clone(),
                        ctx,
                        req,
                        ran,
                        stream,
                        served,
                    ));
                }
                Err(e) => (Err(e), None),
            }
        }
        PreOutcome::Respond(resp) => (Ok(resp), None),
        PreOutcome::Reject(e) => (Err(e), None),
    };
    let upstream = served.as_ref().map(|s| s.upstream).unwrap_or_default();
    ctx.upstream += upstream;
    // post-hooks
    if ran > 0 {
        chain.post_hooks(&ctx.hook, &req, ran, upstream, &mut outcome);
    }
    // respond
    let resp = outcome?;
    finish_success(state, &req.target, resp.usage, ctx.received);
    overhead(state, &req.target.provider, ctx);
    Ok(respond_full(ctx, &req, resp, served.unwrap_or_default()))
}

/// resolve: parse the body, find the target and the fallbacks.
pub fn resolve(
    kind: RequestKind,
    body: &[u8],
) -> Result<(UnifiedRequest, Vec<Target>), GatewayError> {
    let mut map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            "request body is empty; expected a JSON object".to_owned()
        } else {
            format!("request body is not valid JSON: {e}")
        };
        GatewayError::bad_request(None, what).with_code("invalid_json")
    })?;
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
    let required = match kind {
        RequestKind::Chat => "messages",
        RequestKind::Completion => "prompt",
        RequestKind::Embedding => "input",
    };
    match map.get(required) {
        None | Some(Value::Null) => {
            return Err(GatewayError::bad_request(
                Some(required),
                format!("'{required}' is required"),
            ))
        }
        Some(Value::Array(a)) if kind == RequestKind::Chat && a.is_empty() => {
            return Err(GatewayError::bad_request(
                Some("messages"),
                "'messages' must not be empty",
            ))
        }
        Some(v) if kind == RequestKind::Chat && !v.is_array() => {
            return Err(GatewayError::bad_request(
                Some("messages"),
                format!("'messages' must be a list, got {}", json_type(v)),
            ))
        }
        _ => {}
    }
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

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn hook_context(headers: &HeaderMap) -> HookContext {
    let client_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|token| {
            let digest = Sha256::digest(token.trim().as_bytes());
            let mut s = String::with_capacity(19);
            s.push_str("ck-");
            for b in &digest[..8] {
                s.push_str(&format!("{b:02x}"));
            }
            s
        })
        .unwrap_or_else(|| "anonymous".to_owned());
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
        client_key: client_key.into(),
        headers: visible.into(),
        received_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        attempt: 0,
    }
}

/// Bifrost-style `extra_fields`: who served the request and how.
fn extra_fields(ctx: &RequestCtx, target: &Target, served: &Served) -> Value {
    json!({
        "provider": target.provider,
        "model": target.model,
        "key_index": served.key_index,
        "attempts": served.attempts,
        "fallback_index": ctx.hook.attempt,
        "request_id": &*ctx.hook.request_id,
        "latency_ms": ctx.received.elapsed().as_secs_f64() * 1000.0,
        "upstream_latency_ms": served.upstream.as_secs_f64() * 1000.0,
    })
}

fn respond_full(
    ctx: &RequestCtx,
    req: &UnifiedRequest,
    resp: UnifiedResponse,
    served: Served,
) -> Response {
    let mut body = resp.body;
    body.insert(
        "extra_fields".to_owned(),
        extra_fields(ctx, &req.target, &served),
    );
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::OK);
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&ctx.hook.request_id) {
        h.insert("x-request-id", v);
    }
    r
}

/// Stream chunks to the client as SSE, running the chunk hooks and counting tokens.
fn respond_stream(
    state: &AppState,
    chain: Arc<Chain>,
    ctx: &RequestCtx,
    req: UnifiedRequest,
    ran: usize,
    stream: ChunkStream,
    served: Served,
) -> Response {
    let metrics = state.metrics.clone();
    let hook = ctx.hook.clone();
    let received = ctx.received;
    let extra = extra_fields(ctx, &req.target, &served);
    let hooks_on = ran > 0 && chain.wants_chunks(ran);
    overhead(state, &req.target.provider, ctx);
    struct S {
        stream: ChunkStream,
        hooks: StreamHookState,
        usage: Option<Usage>,
        first: bool,
        finished: bool,
        template: Option<Map<String, Value>>,
    }
    let st = S {
        stream,
        hooks: StreamHookState::default(),
        usage: None,
        first: true,
        finished: false,
        template: None,
    };
    let body = futures_util::stream::unfold(st, move |mut st| {
        let chain = chain.clone();
        let metrics = metrics.clone();
        let hook = hook.clone();
        let req_target = req.target.clone();
        let req = req.clone();
        let extra = extra.clone();
        async move {
            if st.finished {
                return None;
            }
            let labels = [req_target.provider.as_str(), req_target.model.as_str()];
            match st.stream.next().await {
                Some(Ok(mut chunk)) => {
                    if st.first {
                        st.first = false;
                        metrics
                            .request_duration
                            .with_label_values(&labels)
                            .observe(received.elapsed().as_secs_f64());
                        chunk.body.insert("extra_fields".to_owned(), extra);
                    }
                    if let Some(u) = chunk.usage() {
                        st.usage = Some(u);
                    }
                    if hooks_on {
                        if st.template.is_none() {
                            st.template = Some(chunk.body.clone());
                        }
                        if let Err(e) =
                            chain.chunk_hooks(&hook, &req, ran, &mut st.hooks, &mut chunk, false)
                        {
                            st.finished = true;
                            return Some((Ok::<_, Infallible>(error_frame(&e)), st));
                        }
                    }
                    let bytes = Bytes::from(serde_json::to_vec(&chunk.body).unwrap_or_default());
                    Some((Ok(sse::encode_data(&bytes)), st))
                }
                Some(Err(e)) => {
                    tracing::warn!(request_id = %hook.request_id, "stream failed: {}", e.message);
                    st.finished = true;
                    finish_counts(&metrics, &req_target, e.fault.as_str(), None);
                    Some((Ok(error_frame(&e)), st))
                }
                None => {
                    st.finished = true;
                    let mut tail = Vec::new();
                    if hooks_on {
                        if let Some(mut last) = st.template.take().map(final_chunk) {
                            match chain.chunk_hooks(
                                &hook,
                                &req,
                                ran,
                                &mut st.hooks,
                                &mut last,
                                true,
                            ) {
                                Ok(()) if chunk_has_text(&last) => {
                                    let bytes = serde_json::to_vec(&last.body).unwrap_or_default();
                                    tail.extend_from_slice(&sse::encode_data(&bytes));
                                }
                                Ok(()) => {}
                                Err(e) => {
                                    tail.extend_from_slice(&error_frame(&e));
                                    return Some((Ok(Bytes::from(tail)), st));
                                }
                            }
                        }
                    }
                    tail.extend_from_slice(sse::DONE);
                    finish_counts(&metrics, &req_target, "success", st.usage);
                    Some((Ok(Bytes::from(tail)), st))
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&ctx.hook.request_id) {
        h.insert("x-request-id", v);
    }
    r
}

/// An empty chunk shaped like the stream's first one, on which plugins flush held text.
fn final_chunk(mut template: Map<String, Value>) -> StreamChunk {
    template.remove("usage");
    template.remove("extra_fields");
    let text_key = if template.get("object").and_then(Value::as_str) == Some("text_completion") {
        "text"
    } else {
        "delta"
    };
    let choice = if text_key == "text" {
        json!({"index": 0, "text": "", "finish_reason": null})
    } else {
        json!({"index": 0, "delta": {}, "finish_reason": null})
    };
    template.insert("choices".to_owned(), Value::Array(vec![choice]));
    StreamChunk { body: template }
}

fn chunk_has_text(chunk: &StreamChunk) -> bool {
    chunk
        .body
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                let t = c
                    .get("delta")
                    .and_then(|d| d.get("content"))
                    .or_else(|| c.get("text"))
                    .and_then(Value::as_str);
                t.is_some_and(|t| !t.is_empty())
            })
        })
}

fn error_frame(e: &GatewayError) -> Bytes {
    let bytes = serde_json::to_vec(&e.to_json()).unwrap_or_default();
    sse::encode_data(&bytes)
}

fn finish_success(state: &AppState, target: &Target, usage: Option<Usage>, received: Instant) {
    state
        .metrics
        .request_duration
        .with_label_values(&[target.provider.as_str(), target.model.as_str()])
        .observe(received.elapsed().as_secs_f64());
    finish_counts(&state.metrics, target, "success", usage);
}

fn finish_error(state: &AppState, target: Option<&Target>, e: &GatewayError) {
    let (p, m) = match target {
        Some(t) if state.engine.provider(&t.provider).is_some() => {
            (t.provider.as_str(), t.model.as_str())
        }
        // Unknown providers and models would make label values up to the client.
        _ => ("unknown", "unknown"),
    };
    let outcome = e.fault.as_str();
    state
        .metrics
        .requests
        .with_label_values(&[p, m, outcome])
        .inc();
    if e.fault == Fault::Gateway || e.status.is_server_error() {
        tracing::warn!(
            provider = p,
            model = m,
            status = e.status.as_u16(),
            "request failed: {}",
            e.message
        );
    }
}

fn finish_counts(
    metrics: &crate::metrics::Metrics,
    target: &Target,
    outcome: &str,
    usage: Option<Usage>,
) {
    let (p, m) = (target.provider.as_str(), target.model.as_str());
    metrics.requests.with_label_values(&[p, m, outcome]).inc();
    if let Some(u) = usage {
        metrics
            .tokens
            .with_label_values(&[p, m, "prompt"])
            .inc_by(u64::from(u.prompt_tokens));
        metrics
            .tokens
            .with_label_values(&[p, m, "completion"])
            .inc_by(u64::from(u.completion_tokens));
    }
}

fn overhead(state: &AppState, provider: &str, ctx: &RequestCtx) {
    let own = ctx.received.elapsed().saturating_sub(ctx.upstream);
    let label = if state.engine.provider(provider).is_some() {
        provider
    } else {
        "unknown"
    };
    state
        .metrics
        .overhead
        .with_label_values(&[label])
        .observe(own.as_secs_f64());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
