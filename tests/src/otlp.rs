//! A local OTLP/HTTP trace receiver on 127.0.0.1: it takes `POST /v1/traces` with an
//! `ExportTraceServiceRequest` in protobuf (decoded with the `opentelemetry-proto` types),
//! keeps every span with its resource's attributes, and answers as a collector does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 2 server, 3 client, 1 internal.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub attributes: HashMap<String, Value>,
    pub resource: HashMap<String, Value>,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }
}

#[derive(Default)]
struct State {
    spans: Vec<ReceivedSpan>,
    requests: usize,
    headers: Vec<HashMap<String, String>>,
}

pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => panic!("OTLP receiver cannot bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("OTLP receiver has no address: {e}"),
        };
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpReceiver {
            addr,
            state,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT`, for `telemetry.otlp_endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    /// Export requests received.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// The headers of each export request.
    pub fn headers(&self) -> Vec<HashMap<String, String>> {
        self.lock().headers.clone()
    }

    /// The spans of the trace whose root span has `request_id`, once `want` of them arrived
    /// (or `None` at the deadline).
    pub async fn trace_of(
        &self,
        request_id: &str,
        want: usize,
        within: Duration,
    ) -> Option<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if let Some(root) = spans
                .iter()
                .find(|s| s.str("switchyard.request_id") == Some(request_id))
            {
                let trace: Vec<ReceivedSpan> = spans
                    .iter()
                    .filter(|s| s.trace_id == root.trace_id)
                    .cloned()
                    .collect();
                if trace.len() >= want {
                    return Some(trace);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => Value::String(s.clone()),
        Some(Any::BoolValue(b)) => Value::Bool(*b),
        Some(Any::IntValue(i)) => Value::from(*i),
        Some(Any::DoubleValue(d)) => Value::from(*d),
        Some(other) => Value::String(format!("{other:?}")),
        None => Value::Null,
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

async fn receive(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>, ct: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", hyper::header::HeaderValue::from_static(ct));
        Ok(r)
    };
    if req.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, b"not found".to_vec(), "text/plain");
    }
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let decoded = match ExportTraceServiceRequest::decode(body) {
        Ok(d) => d,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("not an ExportTraceServiceRequest: {e}").into_bytes(),
                "text/plain",
            )
        }
    };
    let mut spans = Vec::new();
    for rs in &decoded.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                spans.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: s.kind,
                    status: s.status.as_ref().map(|st| st.code).unwrap_or(0),
                    attributes: attrs(&s.attributes),
                    resource: resource.clone(),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                });
            }
        }
    }
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.requests += 1;
        st.headers.push(headers);
        st.spans.extend(spans);
    }
    let answer = ExportTraceServiceResponse {
        partial_success: None,
    };
    reply(
        StatusCode::OK,
        answer.encode_to_vec(),
        "application/x-protobuf",
    )
}
