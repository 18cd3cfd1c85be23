//! A mock LLM upstream on 127.0.0.1: OpenAI (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/models`), Azure OpenAI (`/openai/deployments/{d}/...`) and Anthropic
//! (`/v1/messages`), plain and streaming, with each provider's error bodies.
//!
//! The reply is what follows `echo:` in the last user message, else a fixed text. Tests queue
//! [`Behavior`]s to make the next requests fail in a given way, and read back what arrived.

use std::collections::VecDeque;
use std::convert::Infallible;
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

use crate::wire::{self, Api};

type Body = BoxBody<Bytes, Infallible>;

/// What the mock does with a request.
#[derive(Clone, Debug, Default)]
pub enum Behavior {
    /// Answer normally.
    #[default]
    Normal,
    /// Answer with this status; `body` replaces the provider's usual error body.
    Status {
        status: u16,
        body: Option<String>,
        retry_after: Option<String>,
    },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    ResetConnection,
    /// Answer 200 with a body that is not JSON.
    MalformedBody,
    /// Stream `after_chunks` events, then go silent with the connection open.
    StallStream { after_chunks: usize },
    /// Never answer (until the client goes away).
    Hang,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` if empty or not JSON).
    pub body: Value,
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
    if options.record {
        lock(&shared.received).push(ReceivedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
        });
    }
    let behavior = lock(&shared.queue)
        .pop_front()
        .unwrap_or_else(|| lock(&shared.default).clone());
    if !options.latency.is_zero() {
        tokio::time::sleep(options.latency).await;
    }
    let api = Api::of(parts.uri.path());
    match behavior {
        Behavior::Normal => Ok(answer(api, &body, &options, None, guard)),
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(answer(api, &body, &options, None, guard))
        }
        Behavior::Status {
            status,
            body: custom,
            retry_after,
        } => {
            let text = custom.unwrap_or_else(|| {
                if api.is_anthropic() {
                    wire::anthropic_error(status).to_string()
                } else {
                    wire::openai_error(status).to_string()
                }
            });
            let mut resp = json_response(status, text);
            if let Some(ra) = retry_after {
                if let Ok(v) = ra.parse() {
                    resp.headers_mut().insert("retry-after", v);
                }
            }
            Ok(resp)
        }
        Behavior::ResetConnection => Err(Reset),
        Behavior::MalformedBody => Ok(json_response(
            200,
            "{\"id\": \"chatcmpl-mock\", \"choi".into(),
        )),
        Behavior::StallStream { after_chunks } => {
            Ok(answer(api, &body, &options, Some(after_chunks), guard))
        }
        Behavior::Hang => {
            std::future::pending::<()>().await;
            Err(Reset)
        }
    }
}

fn json_response(status: u16, text: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A normal answer for `api`; `stall_after` cuts a stream short and leaves it open.
fn answer(
    api: Api,
    body: &Value,
    options: &MockOptions,
    stall_after: Option<usize>,
    guard: InFlight,
) -> Response<Body> {
    let reply = wire::reply_text(body, &options.reply);
    let streaming = body["stream"] == true || stall_after.is_some();
    if streaming && matches!(api, Api::OpenAiChat | Api::AnthropicMessages) {
        let frames: Vec<Bytes> = if api.is_anthropic() {
            wire::anthropic_stream(body, &reply)
                .into_iter()
                .map(|(event, data)| Bytes::from(format!("event: {event}\ndata: {data}\n\n")))
                .collect()
        } else {
            let mut f: Vec<Bytes> = wire::openai_chat_stream(body, &reply)
                .into_iter()
                .map(|d| Bytes::from(format!("data: {d}\n\n")))
                .collect();
            f.push(Bytes::from_static(b"data: [DONE]\n\n"));
            f
        };
        return stream_response(frames, stall_after, guard);
    }
    drop(guard);
    let value = match api {
        Api::OpenAiChat => wire::openai_chat(body, &reply),
        Api::OpenAiCompletion => wire::openai_completion(body, &reply),
        Api::OpenAiEmbedding => wire::openai_embeddings(body),
        Api::OpenAiModels => wire::openai_models(),
        Api::AnthropicMessages => wire::anthropic_message(body, &reply),
        Api::Unknown => return json_response(404, wire::openai_error(404).to_string()),
    };
    json_response(200, value.to_string())
}

/// An SSE response fed by a task; the request counts as in flight until the stream ends.
fn stream_response(
    frames: Vec<Bytes>,
    stall_after: Option<usize>,
    guard: InFlight,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _guard = guard;
        let limit = stall_after.unwrap_or(usize::MAX);
        for frame in frames.into_iter().take(limit) {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        if stall_after.is_some() {
            // Silent but open, until the client gives up.
            tx.closed().await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let frame = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(frame)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
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
