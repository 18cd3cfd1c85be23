//! A forwarding HTTP proxy on 127.0.0.1 for the gateway's `proxy_config` test: it takes
//! absolute-form requests (`POST http://host/path HTTP/1.1`), forwards them and counts them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub struct HttpProxy {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl HttpProxy {
    pub async fn start() -> HttpProxy {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => panic!("proxy cannot bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("proxy has no address: {e}"),
        };
        let count = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let c = count.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = c.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| forward(req, client.clone(), count.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpProxy {
            addr,
            count,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests forwarded so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn forward(
    req: Request<Incoming>,
    client: reqwest::Client,
    count: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let bad = |status: StatusCode, msg: String| {
        let mut r = Response::new(Full::new(Bytes::from(msg)));
        *r.status_mut() = status;
        Ok(r)
    };
    // Only absolute-form targets are proxy requests.
    if req.uri().scheme().is_none() {
        return bad(
            StatusCode::BAD_REQUEST,
            format!("proxy: not an absolute-form request: {}", req.uri()),
        );
    }
    count.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = client.request(parts.method, parts.uri.to_string());
    for (k, v) in &parts.headers {
        if k != "host" && k != "proxy-connection" && k != "proxy-authorization" {
            out = out.header(k, v);
        }
    }
    match out.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut r = Response::new(Full::new(bytes));
            *r.status_mut() = status;
            for (k, v) in &headers {
                if k != "transfer-encoding" && k != "content-length" && k != "connection" {
                    r.headers_mut().insert(k, v.clone());
                }
            }
            Ok(r)
        }
        Err(e) => bad(StatusCode::BAD_GATEWAY, format!("proxy: {e}")),
    }
}
