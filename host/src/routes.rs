//! The HTTP surface: OpenAI-compatible endpoints plus `/health` and `/metrics`. Handlers are
//! thin: they take the raw body and hand it to `proxy::handle`. [`build_router`] is pure, so
//! router tests drive it with `oneshot` and no socket.

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::proxy;
use crate::schema::RequestKind;
use crate::server::AppState;

pub fn build_router(state: AppState) -> Router {
    let limit = state.config.client.max_request_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn body_error(state: &AppState, rejection: BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        GatewayError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            None,
            format!(
                "request body is larger than {} bytes (client.max_request_body_bytes)",
                state.config.client.max_request_body_bytes
            ),
        )
        .into_response()
    } else {
        GatewayError::bad_request(None, format!("could not read request body: {rejection}"))
            .into_response()
    }
}

async fn dispatch(
    state: AppState,
    kind: RequestKind,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => proxy::handle(&state, kind, &headers, body).await,
        Err(rejection) => body_error(&state, rejection),
    }
}

async fn chat(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    dispatch(s, RequestKind::Chat, h, body).await
}

async fn completions(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    dispatch(s, RequestKind::Completion, h, body).await
}

async fn embeddings(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    dispatch(s, RequestKind::Embedding, h, body).await
}

/// The models the config serves, as `provider/model`.
async fn models(State(state): State<AppState>) -> Json<Value> {
    let mut data = Vec::new();
    for p in state.engine.providers() {
        let mut names: Vec<&str> = p
            .config
            .keys
            .iter()
            .flat_map(|k| k.models.iter().map(String::as_str))
            .collect();
        if let Some(az) = &p.config.azure {
            names.extend(az.deployments.keys().map(String::as_str));
        }
        names.sort_unstable();
        names.dedup();
        let any = p.config.keys.iter().any(|k| k.models.is_empty()) || !p.config.requires_key();
        for m in names {
            data.push(json!({"id": format!("{}/{m}", p.config.name), "object": "model", "created": 0, "owned_by": p.config.name}));
        }
        if any {
            // Every model is allowed; say so without inventing names.
            data.push(json!({"id": format!("{}/*", p.config.name), "object": "model", "created": 0, "owned_by": p.config.name}));
        }
    }
    Json(json!({"object": "list", "data": data}))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let providers: Vec<Value> = state
        .engine
        .providers()
        .map(|p| {
            let reason = (!p.available())
                .then(|| format!("no usable API key: set {}", p.config.missing_env.join(", ")));
            json!({
                "name": p.config.name,
                "type": p.config.kind.as_str(),
                "available": p.available(),
                "reason": reason,
                "keys": p.config.keys.len(),
                "queue_depth": p.queue_depth(),
                "concurrency": p.config.concurrency,
                "buffer_size": p.config.buffer_size,
            })
        })
        .collect();
    let plugins = state.plugins.health();
    let degraded = providers.iter().any(|p| p["available"] == false)
        || plugins
            .iter()
            .any(|p| p.state != "ready" && p.state != "disabled");
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "providers": providers,
        "plugins": plugins,
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    GatewayError::client(
        StatusCode::NOT_FOUND,
        "unknown_url",
        None,
        format!("no route for {}; see /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models", uri.path()),
    )
    .into_response()
}
