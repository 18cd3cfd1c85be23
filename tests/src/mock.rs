//! A mock LLM upstream on 127.0.0.1, one server for every provider, chosen by path:
//!
//! - OpenAI: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`;
//!   Azure OpenAI: `/openai/deployments/{d}/...`; Anthropic: `/v1/messages`.
//! - AWS Bedrock Runtime: `/model/{modelId}/converse`, `/converse-stream` (binary
//!   event-stream), `/invoke` (Titan and Cohere embeddings). The model id is decoded and
//!   recorded. With [`MockUpstream::with_aws`] every request's SigV4 signature is recomputed.
//! - Vertex AI: `/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`,
//!   `:streamGenerateContent` (`?alt=sse`, else a JSON array), `:predict` (embeddings), and
//!   `.../publishers/anthropic/models/{m}:rawPredict` / `:streamRawPredict` (Claude). With
//!   [`MockUpstream::with_token_server`] only live tokens of that server are accepted.
//! - Cohere v2: `/v2/chat` (plain and SSE stream), `/v2/embed`; needs a bearer key.
//!
//! Replies are deterministic. The text is what follows `echo:` in the last user message,
//! else [`MockOptions::reply`]. On OpenAI chat, Bedrock, Gemini and Cohere:
//! - `tool:NAME {"json": "args"}` in the last user text, with a tool `NAME` declared, makes
//!   the model call it with those arguments (Bedrock `toolUse` after a text block, stop
//!   reason `tool_use`; Gemini a `functionCall` part, `STOP`; Cohere `tool_calls` with a
//!   `tool_plan`, `TOOL_CALL`). Streams split the arguments' JSON over two deltas.
//! - When the last message carries tool results, the reply is `tool result: <their text>`
//!   (JSON results as compact JSON), so a round trip is visible.
//! - `maxTokens`/`maxOutputTokens`/`max_tokens` cut the reply to that many words, and stop
//!   sequences cut before the first match, with the matching finish reason.
//! - Gemini: `unsafe:` blocks the prompt (`promptFeedback.blockReason: SAFETY`, no
//!   candidates); `unsafe-candidate:` blocks the answer (`finishReason: SAFETY`, no content).
//! - Anthropic (and Claude on Vertex) follow the same rules, and `use_tool` with tools
//!   offered calls the first tool.
//!
//! Tests queue [`Behavior`]s to make the next requests fail in a given way, and read back
//! what arrived ([`MockUpstream::received`]).

mod answer;
mod auth;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::sigv4::{AwsExpect, SignedRequest};
use crate::token_server::{TokenServer, TokenState};
use crate::wire::{Family, Route};
use answer::Answer;

type Body = BoxBody<Bytes, Reset>;

/// What the mock does with a request.
#[derive(Clone, Debug, Default)]
pub enum Behavior {
    /// Answer normally.
    #[default]
    Normal,
    /// Answer with this status and the provider's error body for it (Bedrock: the exception
    /// for the status in `x-amzn-errortype`); `body` replaces the body.
    Status {
        status: u16,
        body: Option<String>,
        retry_after: Option<String>,
    },
    /// Answer with this status and a named error: a Bedrock exception (`ModelNotReadyException`),
    /// an Anthropic or OpenAI error `type`, a Google `status` (`RESOURCE_EXHAUSTED`).
    Error { status: u16, kind: String },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    ResetConnection,
    /// Answer 200 with a body that is not JSON.
    MalformedBody,
    /// Stream `after_chunks` events, then go silent with the connection open.
    StallStream { after_chunks: usize },
    /// Stream `after_chunks` events, then the provider's in-stream error, then end: OpenAI a
    /// `data: {"error":..}` chunk, Anthropic `event: error` (`overloaded_error`; with
    /// `after_chunks: 0` the early overload), Bedrock an exception message
    /// (`throttlingException`), Gemini an `{"error":..}` chunk (`INTERNAL`), Cohere a
    /// `message-end` with `finish_reason: ERROR`. `kind` overrides the error's type.
    StreamError {
        after_chunks: usize,
        kind: Option<String>,
    },
    /// Stream `after_chunks` events, then one that cannot be decoded (event-stream: a flipped
    /// byte so the message CRC fails; SSE: the JSON cut in half), then end.
    CorruptFrame { after_chunks: usize },
    /// Send `after_chunks` events (for a JSON answer: half the body), then drop the
    /// connection mid-body.
    ResetMidStream { after_chunks: usize },
    /// Never answer (until the client goes away).
    Hang,
    /// Fail `percent` % of requests, chosen by a fixed pseudo-random sequence over the
    /// mock's request count (so a run is repeatable): in turn a 500, a 503, a 429 without
    /// `Retry-After`, a 502, and a reset connection. The rest answer normally.
    Flaky { percent: u8 },
    /// Answer 200 with a chunked JSON body of `bytes` bytes (no `content-length`), padding
    /// inside the message text.
    Oversize { bytes: usize },
    /// Send the answer's headers, then `delay` between each of its frames (a JSON answer in
    /// 64-byte pieces).
    Trickle { delay: Duration },
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    /// The path as it arrived (still percent-encoded).
    pub path: String,
    pub query: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` if empty or not JSON).
    pub body: Value,
    /// The model the path names, decoded (Bedrock `modelId`, Vertex `models/{m}`).
    pub model: Option<String>,
    /// Vertex AI's `projects/{p}` and `locations/{l}`.
    pub project: Option<String>,
    pub location: Option<String>,
    /// Why the mock refused the request's credentials, if it did.
    pub auth_error: Option<String>,
}

impl ReceivedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the mock is set up.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Added to every answer (before the first byte).
    pub latency: Duration,
    /// The reply when the request has no `echo:`.
    pub reply: String,
    /// Keep every request for [`MockUpstream::received`] (off for long benchmark runs).
    pub record: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            latency: Duration::ZERO,
            reply: "Hello from mock".to_owned(),
            record: true,
        }
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Behavior>>,
    default: Mutex<Behavior>,
    received: Mutex<Vec<ReceivedRequest>>,
    count: AtomicUsize,
    in_flight: AtomicUsize,
    max_concurrent: AtomicUsize,
    aws: Mutex<Option<AwsExpect>>,
    tokens: Mutex<Option<Arc<TokenState>>>,
    sigv4_failures: AtomicUsize,
    bearer_failures: AtomicUsize,
    key_failures: AtomicUsize,
    /// Requests seen by [`Behavior::Flaky`].
    flaky: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running mock upstream; stops accepting when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Start on a free port of 127.0.0.1 with default options.
    pub async fn start() -> MockUpstream {
        Self::start_with(MockOptions::default()).await
    }

    pub async fn start_with(options: MockOptions) -> MockUpstream {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        match Self::bind(addr, options).await {
            Ok(m) => m,
            Err(e) => panic!("mock upstream cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// Start on `addr`.
    pub async fn bind(addr: SocketAddr, options: MockOptions) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let options = Arc::new(options);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), options));
        Ok(MockUpstream {
            addr,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT` (no path).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next request (after those already queued) behaves like this.
    pub fn push_behavior(&self, b: Behavior) {
        lock(&self.shared.queue).push_back(b);
    }

    /// Requests with nothing queued behave like this.
    pub fn set_default_behavior(&self, b: Behavior) {
        *lock(&self.shared.default) = b;
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.received).clone()
    }

    /// How many requests arrived (failed ones included).
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever handled at once.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_concurrent.load(Ordering::SeqCst)
    }

    /// Check the SigV4 signature of every Bedrock request against these credentials;
    /// refusals answer 403 as AWS does and count in [`MockUpstream::sigv4_failures`].
    pub fn with_aws(self, expect: AwsExpect) -> MockUpstream {
        *lock(&self.shared.aws) = Some(expect);
        self
    }

    /// Accept on Vertex AI paths only `Authorization: Bearer` tokens that `server` issued and
    /// that have not expired or been revoked ([`TokenServer::revoke_all`]); others get
    /// Google's 401 and count in [`MockUpstream::bearer_failures`].
    pub fn with_token_server(self, server: &TokenServer) -> MockUpstream {
        *lock(&self.shared.tokens) = Some(server.state());
        self
    }

    /// Bedrock requests refused for their signature or credentials.
    pub fn sigv4_failures(&self) -> usize {
        self.shared.sigv4_failures.load(Ordering::SeqCst)
    }

    /// Vertex AI requests refused for their bearer token.
    pub fn bearer_failures(&self) -> usize {
        self.shared.bearer_failures.load(Ordering::SeqCst)
    }

    /// Cohere requests refused for lacking an API key.
    pub fn key_failures(&self) -> usize {
        self.shared.key_failures.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, options: Arc<MockOptions>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, shared.clone(), options.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_concurrent.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The error that makes hyper close the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock: connection reset on purpose")
    }
}

impl std::error::Error for Reset {}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    options: Arc<MockOptions>,
) -> Result<Response<Body>, Reset> {
    let guard = InFlight::new(shared.clone());
    let (parts, incoming) = req.into_parts();
    let bytes = incoming
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    shared.count.fetch_add(1, Ordering::SeqCst);
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let route = Route::of(path);
    let aws = lock(&shared.aws).clone();
    let tokens = lock(&shared.tokens).clone();
    // Header copies cost the benchmark runs (no recording, no credentials) for nothing.
    let needs_headers =
        options.record || aws.is_some() || tokens.is_some() || route.api.family() == Family::Cohere;
    let headers: Vec<(String, String)> = if needs_headers {
        parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let method = parts.method.as_str();
    let signed = SignedRequest {
        method,
        path,
        query,
        headers: &headers,
        body: &bytes,
    };
    let demands = auth::Demands {
        aws: aws.as_ref(),
        tokens: tokens.as_deref(),
    };
    let refusal = auth::check(route.api, &signed, &demands);
    if let Some(r) = &refusal {
        let counter = match r.check {
            auth::Check::SigV4 => &shared.sigv4_failures,
            auth::Check::Bearer => &shared.bearer_failures,
            auth::Check::ApiKey => &shared.key_failures,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    if options.record {
        lock(&shared.received).push(ReceivedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: body.clone(),
            model: route.model.clone(),
            project: route.project.clone(),
            location: route.location.clone(),
            auth_error: refusal.as_ref().map(|r| r.reason.clone()),
        });
    }
    if !options.latency.is_zero() {
        tokio::time::sleep(options.latency).await;
    }
    if let Some(r) = refusal {
        return Ok(render(&route, r.answer, Cut::None, guard));
    }
    let behavior = lock(&shared.queue)
        .pop_front()
        .unwrap_or_else(|| lock(&shared.default).clone());
    let normal = |cut: Cut| {
        let kind = match &cut {
            Cut::Error(_, kind) => kind.as_deref(),
            _ => None,
        };
        let force_stream = !matches!(cut, Cut::None | Cut::Reset(_));
        answer::normal(&route, query, &body, &options.reply, force_stream, kind)
    };
    match behavior {
        Behavior::Normal => Ok(render(&route, normal(Cut::None), Cut::None, guard)),
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(render(&route, normal(Cut::None), Cut::None, guard))
        }
        Behavior::Status {
            status,
            body: custom,
            retry_after,
        } => {
            let mut resp = render(
                &route,
                answer::error(route.api, status, None, custom),
                Cut::None,
                guard,
            );
            if let Some(ra) = retry_after {
                if let Ok(v) = ra.parse() {
                    resp.headers_mut().insert("retry-after", v);
                }
            }
            Ok(resp)
        }
        Behavior::Error { status, kind } => Ok(render(
            &route,
            answer::error(route.api, status, Some(&kind), None),
            Cut::None,
            guard,
        )),
        Behavior::ResetConnection => Err(Reset),
        Behavior::MalformedBody => Ok(json_response(
            200,
            "{\"id\": \"chatcmpl-mock\", \"choi".into(),
        )),
        Behavior::StallStream { after_chunks } => {
            let cut = Cut::Stall(after_chunks);
            Ok(render(&route, normal(cut.clone()), cut, guard))
        }
        Behavior::StreamError { after_chunks, kind } => {
            let cut = Cut::Error(after_chunks, kind);
            Ok(render(&route, normal(cut.clone()), cut, guard))
        }
        Behavior::CorruptFrame { after_chunks } => {
            let cut = Cut::Corrupt(after_chunks);
            Ok(render(&route, normal(cut.clone()), cut, guard))
        }
        Behavior::ResetMidStream { after_chunks } => {
            let cut = Cut::Reset(after_chunks);
            Ok(render(&route, normal(cut.clone()), cut, guard))
        }
        Behavior::Hang => {
            std::future::pending::<()>().await;
            Err(Reset)
        }
        Behavior::Flaky { percent } => {
            let n = shared.flaky.fetch_add(1, Ordering::SeqCst) as u64;
            let roll = splitmix64(n);
            if roll % 100 >= u64::from(percent) {
                return Ok(render(&route, normal(Cut::None), Cut::None, guard));
            }
            let status = match (roll / 100) % 5 {
                0 => 500,
                1 => 503,
                2 => 429,
                3 => 502,
                _ => return Err(Reset),
            };
            Ok(render(
                &route,
                answer::error(route.api, status, None, None),
                Cut::None,
                guard,
            ))
        }
        Behavior::Oversize { bytes } => Ok(oversize(bytes, guard)),
        Behavior::Trickle { delay } => {
            let answer = normal(Cut::None);
            Ok(trickle(answer, delay, guard))
        }
    }
}

/// SplitMix64: a fixed, well-spread sequence from a counter.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 200 JSON chat answer of about `bytes` bytes, sent chunked in 64 KiB pieces.
fn oversize(bytes: usize, guard: InFlight) -> Response<Body> {
    let head = r#"{"id":"chatcmpl-big","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":""#;
    let tail = r#""}}]}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut frames = vec![Bytes::from_static(head.as_bytes())];
    let piece = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut left = pad;
    while left > 0 {
        let n = left.min(piece.len());
        frames.push(piece.slice(..n));
        left -= n;
    }
    frames.push(Bytes::from_static(tail.as_bytes()));
    let mut resp = stream_response(frames, Cut::None, None, guard);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The answer with `delay` before each frame (JSON: each 64-byte piece).
fn trickle(answer: Answer, delay: Duration, guard: InFlight) -> Response<Body> {
    let (frames, content_type, status) = match answer {
        Answer::Json { status, body, .. } => (
            Bytes::from(body.into_bytes())
                .chunks(64)
                .map(Bytes::copy_from_slice)
                .collect::<Vec<_>>(),
            "application/json",
            status,
        ),
        Answer::Stream(s) => (s.frames.clone(), s.content_type, 200),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Reset>>(1);
    tokio::spawn(async move {
        let _guard = guard;
        for f in frames {
            tokio::time::sleep(delay).await;
            if tx.send(Ok(f)).await.is_err() {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map(Frame::data), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// Where a stream stops being normal: after `n` frames it stalls, sends the provider's
/// error, sends a corrupted frame, or drops the connection.
#[derive(Clone, Debug)]
enum Cut {
    None,
    Stall(usize),
    Error(usize, Option<String>),
    Corrupt(usize),
    Reset(usize),
}

impl Cut {
    fn after(&self) -> Option<usize> {
        match self {
            Cut::None => None,
            Cut::Stall(n) | Cut::Error(n, _) | Cut::Corrupt(n) | Cut::Reset(n) => Some(*n),
        }
    }
}

fn json_response(status: u16, text: String) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// The HTTP response for an answer; a JSON answer cut by `ResetMidStream` sends half its body.
fn render(route: &Route, answer: Answer, cut: Cut, guard: InFlight) -> Response<Body> {
    let mut resp = match answer {
        Answer::Json {
            status,
            body,
            headers,
        } => {
            let mut resp = match cut {
                Cut::Reset(_) => {
                    let half = Bytes::from(body[..body.len() / 2].to_owned().into_bytes());
                    let mut r = stream_response(vec![half], Cut::Reset(1), None, guard);
                    *r.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    r.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    r
                }
                _ => {
                    drop(guard);
                    json_response(status, body)
                }
            };
            for (name, value) in headers {
                if let Ok(v) = value.parse() {
                    resp.headers_mut().insert(name, v);
                }
            }
            resp
        }
        Answer::Stream(stream) => {
            let content_type = stream.content_type;
            let mut resp = stream_response(Vec::new(), cut, Some(stream), guard);
            resp.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static(content_type),
            );
            resp
        }
    };
    if route.api.family() == Family::Bedrock {
        resp.headers_mut().insert(
            "x-amzn-requestid",
            hyper::header::HeaderValue::from_static("6f1b1e3c-0000-4000-8000-00000000mock"),
        );
    }
    resp
}

/// A body fed by a task; the request counts as in flight until the body ends. `frames` (or
/// the stream's frames) go out up to the cut, then what the cut says.
fn stream_response(
    frames: Vec<Bytes>,
    cut: Cut,
    stream: Option<answer::Stream>,
    guard: InFlight,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Reset>>(16);
    tokio::spawn(async move {
        let _guard = guard;
        let frames = match &stream {
            Some(s) => s.frames.clone(),
            None => frames,
        };
        let limit = cut.after().unwrap_or(usize::MAX);
        for frame in frames.iter().take(limit) {
            if tx.send(Ok(frame.clone())).await.is_err() {
                return;
            }
        }
        let tail = match (&cut, &stream) {
            (Cut::Stall(_), _) => {
                // Silent but open, until the client gives up.
                tx.closed().await;
                return;
            }
            (Cut::Error(..), Some(s)) => Some(Ok(s.error.clone())),
            (Cut::Corrupt(n), Some(s)) => frames.get(*n).map(|f| Ok(s.corrupt(f))),
            (Cut::Reset(_), _) => Some(Err(Reset)),
            _ => None,
        };
        if let Some(item) = tail {
            if item.is_err() && limit > 0 {
                // Let what was sent reach the wire first: hyper drops unflushed frames when
                // the body fails, which would make a mid-stream reset a reset before it.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = tx.send(item).await;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map(Frame::data), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(body)));
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
