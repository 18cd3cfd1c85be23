//! The HTTP surface, the only code that names axum: OpenAI-compatible endpoints, Anthropic
//! Messages (`/v1/messages`, `/anthropic/v1/messages`), OpenAI Responses (`/v1/responses`),
//! plus `/health` and `/metrics`. Handlers take the raw body, hand it to [`proxy::handle`] and
//! render the [`Outcome`] in the client's dialect (JSON with `extra_fields`, or Server-Sent
//! Events). A panic while handling a request becomes a 500 in the same shape, counted on
//! `/metrics`, and the gateway keeps serving. [`build_router`] is pure, so router tests
//! drive it with `oneshot` and no socket. The caller is authenticated from the headers
//! before the body is read ([`crate::access`]); the admin side (`/metrics`, the detailed
//! `/health`, the status page) is guarded per listener by [`admin`].

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::access::Caller;
use crate::dialects::{self, StreamWriter};
use crate::error::GatewayError;
use crate::proxy::{self, Gateway, Outcome, ServedBy, StreamItem};
use crate::reload::Live;
use crate::schema::{Dialect, RequestKind, UnifiedResponse};

/// The terminating frame of an OpenAI stream.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// `resp` whose body holds `guard` until it has been sent (or dropped with the connection):
/// how a request's place among `client.max_in_flight` and its connection's "busy" mark
/// last as long as its answer, streams included.
pub fn hold<G: Send + Sync + Unpin + 'static>(resp: Response, guard: G) -> Response {
    resp.map(|body| {
        Body::new(Held {
            body,
            _guard: guard,
        })
    })
}

struct Held<G> {
    body: Body,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What the handlers share: the gateway current when the request arrived (it keeps it to
/// its end, whatever a config reload does meanwhile), the reload state, and the places of
/// `client.max_in_flight`.
#[derive(Clone)]
struct Http {
    gw: Arc<Gateway>,
    live: Arc<Live>,
    in_flight: Arc<Semaphore>,
}

/// The router's state; each request's [`Http`] is taken from it when the request arrives.
#[derive(Clone)]
struct AppState {
    live: Arc<Live>,
    in_flight: Arc<Semaphore>,
}

impl FromRef<AppState> for Http {
    fn from_ref(s: &AppState) -> Http {
        Http {
            gw: s.live.current(),
            live: s.live.clone(),
            in_flight: s.in_flight.clone(),
        }
    }
}

pub mod admin;

pub use admin::Listener;

/// The router of the public listener (`client.listen`) for a gateway whose config never
/// reloads.
pub fn build_router(gw: Arc<Gateway>) -> Router {
    build_live_router(Live::new(gw), Listener::Public)
}

/// The router of the admin listener (`client.admin_listen`): `/health`, `/metrics`, `/ui`.
pub fn build_admin_router(gw: Arc<Gateway>) -> Router {
    build_live_router(Live::new(gw), Listener::Admin)
}

/// The router of `listener` over `live`: every request is served by the gateway current
/// when it arrives. The admin policy is the one of the config the gateway started with.
pub fn build_live_router(live: Arc<Live>, listener: Listener) -> Router {
    let current = live.current();
    let policy = admin::AdminPolicy::new(&current.config, listener);
    let state = AppState {
        in_flight: Arc::new(Semaphore::new(current.config.client.max_in_flight)),
        live,
    };
    let status_page = current.config.status_page;
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/messages", post(anthropic_messages))
        .route("/anthropic/v1/messages", post(anthropic_messages))
        .route("/v1/responses", post(responses))
        .route("/responses", post(responses))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    // The status page, unless `status_page.enabled` is false.
    let router = if status_page {
        router.route("/ui", get(ui)).route("/", get(ui))
    } else {
        router
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(policy, admin::guard))
}

/// The request body, within `client.max_request_body_bytes` and
/// `client.body_read_timeout_in_seconds`.
async fn read_body(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<Bytes, GatewayError> {
    let client = &gw.config.client;
    let limit = client.max_request_body_bytes;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    match tokio::time::timeout(client.body_read_timeout, collect(body, length, limit)).await {
        Ok(read) => read,
        Err(_) => Err(GatewayError::client(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            None,
            format!(
                "the request body did not arrive within {} s (client.body_read_timeout_in_seconds)",
                client.body_read_timeout.as_secs()
            ),
        )),
    }
}

/// The body in one buffer, sized by `Content-Length` when there is one: a large body is
/// neither grown by doubling nor gathered in pieces and copied once more at the end. A body
/// that arrives in one piece is that piece, uncopied.
async fn collect(
    mut body: Body,
    length: Option<usize>,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    use http_body_util::BodyExt;
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::bad_request(None, format!("could not read the request body: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let have = first.as_ref().map_or(buf.len(), Bytes::len);
        if have + data.len() > limit {
            return Err(too_large(limit));
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.reserve_exact(length.unwrap_or(0).max(f.len() + data.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

fn too_large(limit: usize) -> GatewayError {
    GatewayError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        None,
        format!("request body is larger than {limit} bytes (client.max_request_body_bytes)"),
    )
}

/// Every gateway-wide place is taken.
fn busy(gw: &Gateway) -> GatewayError {
    GatewayError::gateway(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!(
            "the gateway is handling its limit of {} requests (client.max_in_flight); retry shortly",
            gw.config.client.max_in_flight
        ),
    )
    .with_retry_after(Some(std::time::Duration::from_secs(1)))
}

async fn dispatch(http: Http, kind: RequestKind, headers: HeaderMap, body: Body) -> Response {
    dispatch_in(http, Dialect::OpenAi, kind, headers, body).await
}

/// One request in `dialect`, answered in that dialect's shapes, errors included.
async fn dispatch_in(
    http: Http,
    dialect: Dialect,
    kind: RequestKind,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let gw = &http.gw;
    // Who is calling, from the headers alone: a client without a valid key is turned
    // away before its body is read.
    let caller = match gw.access.authenticate(&headers) {
        Ok(c) => c,
        Err(r) => return dialect_error(dialect, r.into()),
    };
    let Ok(place) = http.in_flight.clone().try_acquire_owned() else {
        gw.metrics.rejected_overloaded.inc();
        return dialect_error(dialect, busy(gw));
    };
    let body = match read_body(gw, &headers, body).await {
        Ok(body) => body,
        Err(e) => return dialect_error(dialect, e),
    };
    let span = crate::telemetry::request_span(kind, &headers);
    let handled = AssertUnwindSafe(tracing::Instrument::instrument(
        proxy::handle_dialect(gw, dialect, &caller, kind, &headers, body),
        span,
    ))
    .catch_unwind()
    .await;
    let resp = match handled {
        Ok(outcome) => render(dialect, outcome),
        Err(panic) => {
            gw.metrics.panics.inc();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(panic = %what, "request handler panicked; answered 500");
            dialect_error(
                dialect,
                GatewayError::gateway(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the gateway failed while handling this request; it has been logged",
                ),
            )
        }
    };
    hold(resp, place)
}

/// An outcome in the client's dialect.
fn render(dialect: Dialect, mut outcome: Outcome) -> Response {
    let extra = match &mut outcome {
        Outcome::Response { served, .. } | Outcome::Stream { served, .. } => {
            std::mem::take(&mut served.headers)
        }
        Outcome::Error(_) => Vec::new(),
    };
    let mut resp = render_outcome(dialect, outcome);
    for (n, v) in extra {
        resp.headers_mut().append(n, v);
    }
    resp
}

fn render_outcome(dialect: Dialect, outcome: Outcome) -> Response {
    match (dialect, outcome) {
        (Dialect::OpenAi, outcome) => render_openai(outcome),
        (d, Outcome::Error(e)) => dialect_error(d, e),
        (Dialect::Anthropic, Outcome::Response { response, served }) => {
            let mut body = dialects::anthropic::response(&response, &served.target.model);
            dialect_json(&mut body, response.status, &served)
        }
        (Dialect::Anthropic, Outcome::Stream { stream, served }) => dialect_sse(
            stream,
            Box::new(dialects::anthropic::AnthropicStream::new(
                &served.target.model,
            )),
            &served.request_id,
        ),
        (Dialect::Responses, Outcome::Response { response, served }) => {
            let mut body = dialects::responses::response(&response, &served.target.model);
            dialect_json(&mut body, response.status, &served)
        }
        (Dialect::Responses, Outcome::Stream { stream, served }) => dialect_sse(
            stream,
            Box::new(dialects::responses::ResponsesStream::new(
                &served.target.model,
            )),
            &served.request_id,
        ),
    }
}

/// A dialect's JSON answer, with the gateway's `extra_fields`.
fn dialect_json(body: &mut Map<String, Value>, status: u16, served: &ServedBy) -> Response {
    body.insert("extra_fields".to_owned(), served.extra_fields());
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    request_id(h, &served.request_id);
    r
}

/// A committed stream written by a dialect's [`StreamWriter`].
fn dialect_sse(stream: proxy::OutStream, writer: Box<dyn StreamWriter>, id: &str) -> Response {
    let frames = futures_util::stream::unfold(
        (stream, writer, false),
        |(mut stream, mut writer, over)| async move {
            if over {
                return None;
            }
            let (frames, over) = match stream.next().await {
                Some(StreamItem::Chunk(chunk)) => (writer.chunk(&chunk), false),
                Some(StreamItem::Error(e)) => (writer.error(&e), true),
                None => (writer.end(), true),
            };
            Some((frames, (stream, writer, over)))
        },
    )
    .flat_map(|frames| futures_util::stream::iter(frames.into_iter().map(Ok::<_, Infallible>)));
    sse_response(Body::from_stream(frames), id)
}

/// An error in the dialect's shape, status and gateway headers as for OpenAI.
fn dialect_error(dialect: Dialect, e: GatewayError) -> Response {
    match dialect {
        Dialect::OpenAi | Dialect::Responses => openai_error(e, None),
        Dialect::Anthropic => {
            let body = dialects::anthropic::error_body(&e);
            let mut r = e.into_response();
            *r.body_mut() = Body::from(serde_json::to_vec(&body).unwrap_or_default());
            r
        }
    }
}

async fn responses(State(http): State<Http>, h: HeaderMap, body: Body) -> Response {
    dispatch_in(http, Dialect::Responses, RequestKind::Chat, h, body).await
}

async fn anthropic_messages(State(http): State<Http>, h: HeaderMap, body: Body) -> Response {
    dispatch_in(http, Dialect::Anthropic, RequestKind::Chat, h, body).await
}

/// An outcome as OpenAI's API would answer it.
fn render_openai(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Response { response, served } => openai_json(response, &served),
        Outcome::Stream { stream, served } => openai_sse(stream, &served),
        Outcome::Error(e) => openai_error(e, None),
    }
}

fn openai_json(resp: UnifiedResponse, served: &ServedBy) -> Response {
    let mut body = resp.body;
    body.insert("extra_fields".to_owned(), served.extra_fields());
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::OK);
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    request_id(h, &served.request_id);
    r
}

/// One `data: <json>\n\n` frame.
fn sse_data(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The stream as OpenAI's SSE: `extra_fields` on the first chunk, `[DONE]` after a stream
/// that ended well, an error event (and no `[DONE]`) after one that failed.
fn openai_sse(stream: proxy::OutStream, served: &ServedBy) -> Response {
    let extra = Some(served.extra_fields());
    let frames = futures_util::stream::unfold(
        (stream, extra, false),
        |(mut stream, mut extra, over)| async move {
            if over {
                return None;
            }
            let (bytes, over) = match stream.next().await {
                Some(StreamItem::Chunk(mut chunk)) => {
                    if let Some(extra) = extra.take() {
                        chunk.body.insert("extra_fields".to_owned(), extra);
                    }
                    (
                        sse_data(&serde_json::to_vec(&chunk.body).unwrap_or_default()),
                        false,
                    )
                }
                Some(StreamItem::Error(e)) => (
                    sse_data(&serde_json::to_vec(&e.to_json()).unwrap_or_default()),
                    true,
                ),
                None => (Bytes::from_static(DONE), true),
            };
            Some((Ok::<_, Infallible>(bytes), (stream, extra, over)))
        },
    );
    sse_response(Body::from_stream(frames), &served.request_id)
}

fn sse_response(body: Body, id: &str) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    request_id(h, id);
    r
}

fn request_id(h: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-request-id", v);
    }
}

/// An error in OpenAI's shape.
fn openai_error(e: GatewayError, id: Option<&str>) -> Response {
    let mut r = e.into_response();
    if let Some(id) = id {
        request_id(r.headers_mut(), id);
    }
    r
}

async fn chat(State(http): State<Http>, h: HeaderMap, body: Body) -> Response {
    dispatch(http, RequestKind::Chat, h, body).await
}

async fn completions(State(http): State<Http>, h: HeaderMap, body: Body) -> Response {
    dispatch(http, RequestKind::Completion, h, body).await
}

async fn embeddings(State(http): State<Http>, h: HeaderMap, body: Body) -> Response {
    dispatch(http, RequestKind::Embedding, h, body).await
}

/// The models the config serves, as `provider/model`; with virtual keys, those the
/// caller's key may use.
async fn models(State(Http { gw, .. }): State<Http>, headers: HeaderMap) -> Response {
    let caller = match gw.access.authenticate(&headers) {
        Ok(c) => c,
        Err(r) => return openai_error(r.into(), None),
    };
    let may = |provider: &str, model: &str| caller_may(&caller, provider, model);
    let mut data = Vec::new();
    for p in gw.upstream.providers() {
        let cfg = &p.config;
        let any = cfg.keys.iter().any(|k| k.models.is_empty()) || cfg.keys.is_empty();
        for m in cfg.listed_models() {
            if !may(&cfg.name, m) {
                continue;
            }
            data.push(json!({"id": format!("{}/{m}", cfg.name), "object": "model", "created": 0, "owned_by": cfg.name}));
        }
        if any && may(&cfg.name, "*") {
            // Every model is allowed; say so without inventing names.
            data.push(json!({"id": format!("{}/*", cfg.name), "object": "model", "created": 0, "owned_by": cfg.name}));
        }
    }
    // The models a key names, which the providers' lists may not.
    if let Some(k) = &caller.key {
        for p in &k.config.models {
            if let crate::config::access::ModelPattern::Exact { provider, model } = p {
                let id = format!("{provider}/{model}");
                if !data.iter().any(|d| d["id"] == id.as_str()) {
                    data.push(
                        json!({"id": id, "object": "model", "created": 0, "owned_by": provider}),
                    );
                }
            }
        }
    }
    let mut aliases: Vec<_> = gw.catalog.aliases().collect();
    aliases.sort_unstable_by_key(|(a, _)| *a);
    for (alias, targets) in aliases {
        if !targets.first().is_none_or(|t| may(&t.provider, &t.model)) {
            continue;
        }
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        data.push(json!({"id": alias, "object": "model", "created": 0, "owned_by": "switchyard", "targets": targets}));
    }
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Whether `caller` may use `model` of `provider`; `*` stands for every model, which only
/// a `*` or `provider/*` pattern allows.
fn caller_may(caller: &Caller, provider: &str, model: &str) -> bool {
    use crate::config::access::ModelPattern;
    let Some(k) = &caller.key else { return true };
    k.config.models.iter().any(|p| match p {
        ModelPattern::Any => true,
        ModelPattern::Provider(p) => p == provider,
        ModelPattern::Exact { .. } => model != "*" && p.matches(provider, model),
    })
}

/// `/health`: the liveness answer for everyone, the details for the admin side.
async fn health(
    State(Http { gw, live, .. }): State<Http>,
    view: Option<Extension<admin::AdminView>>,
) -> Json<Value> {
    let providers: Vec<Value> = gw
        .upstream
        .providers()
        .map(|p| {
            let reason = (!p.available()).then(|| {
                format!(
                    "no usable credentials: set {}",
                    p.config.missing_env.join(", ")
                )
            });
            json!({
                "name": p.config.name,
                "type": p.config.kind.as_str(),
                "available": p.available(),
                "reason": reason,
                "keys": p.config.keys.len(),
                "masked_keys": p.config.keys.iter().map(|k| crate::status_page::mask(k.value.expose())).collect::<Vec<_>>(),
                "credentials": p.credential_states(),
                "queue_depth": p.queue_depth(),
                "in_flight": p.in_flight(),
                "concurrency": p.config.concurrency,
                "buffer_size": p.config.buffer_size,
            })
        })
        .collect();
    let plugins = gw.plugins.health();
    let kv = gw.plugins.kv_health();
    let degraded = providers.iter().any(|p| p["available"] == false)
        || plugins
            .iter()
            .any(|p| p.state != "ready" && p.state != "disabled")
        || kv.as_ref().is_some_and(|k| !k.up)
        || live.refused_last();
    let status = if degraded { "degraded" } else { "ok" };
    if view.is_none() {
        return Json(json!({ "status": status }));
    }
    Json(json!({
        "status": status,
        "access": {
            "mode": if gw.access.required() { "virtual_keys" } else { "open" },
            "virtual_keys": gw.access.key_count(),
        },
        "providers": providers,
        "plugins": plugins,
        "kv": kv,
        "config": live.health(),
    }))
}

async fn metrics(State(Http { gw, .. }): State<Http>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

/// The live status page: one self-contained HTML page polling `/health` and `/metrics`.
async fn ui() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::status_page::HTML,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    no_route(uri.path()).into_response()
}

fn no_route(path: &str) -> GatewayError {
    GatewayError::client(
        StatusCode::NOT_FOUND,
        "unknown_url",
        None,
        format!("no route for {path}; see /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages, /v1/responses, /v1/models"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    GatewayError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}
