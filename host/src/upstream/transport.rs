//! Transport: one HTTP client per provider (its proxy, its timeouts, TCP_NODELAY), sending
//! authenticated requests and reading answers within a deadline and a size cap. Transport
//! failures become retryable upstream errors that say what happened, never a key (keys
//! travel in headers, which no error message names).

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};

use crate::config::{ProviderConfig, ProxyKind};
use crate::error::GatewayError;
use crate::providers::UpstreamRequest;

/// A provider's HTTP client.
pub struct Transport {
    client: reqwest::Client,
    provider: String,
}

/// An answer whose headers arrived.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: reqwest::Response,
}

/// The body of an answer as it arrives.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, GatewayError>> + Send>>;

impl Transport {
    pub fn new(config: &ProviderConfig) -> Result<Transport, String> {
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(config.network.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy();
        if let Some(proxy) = &config.proxy {
            let url = match proxy.kind {
                ProxyKind::Http => proxy.url.clone(),
                ProxyKind::Socks5 if proxy.url.starts_with("socks5") => proxy.url.clone(),
                ProxyKind::Socks5 => format!("socks5h://{}", proxy.url),
            };
            let mut p = reqwest::Proxy::all(&url)
                .map_err(|e| format!("providers.{}.proxy_config.url: {e}", config.name))?;
            if let Some(user) = &proxy.username {
                let pass = proxy.password.as_ref().map(|s| s.expose()).unwrap_or("");
                p = p.basic_auth(user, pass);
            }
            builder = builder.proxy(p);
        }
        let client = builder
            .build()
            .map_err(|e| format!("providers.{}: HTTP client: {e}", config.name))?;
        Ok(Transport {
            client,
            provider: config.name.clone(),
        })
    }

    /// The client itself, for credential layers that talk to token servers through the
    /// provider's proxy.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Send `req`; the answer's headers must arrive before `deadline`.
    pub async fn send(
        &self,
        req: UpstreamRequest,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Answer, GatewayError> {
        let send = self
            .client
            .request(req.method, &req.url)
            .headers(req.headers)
            .body(req.body)
            .send();
        let body = match tokio::time::timeout_at(deadline, send).await {
            Err(_) => return Err(self.timed_out(timeout)),
            Ok(Err(e)) => return Err(transport_error(&self.provider, &e)),
            Ok(Ok(r)) => r,
        };
        Ok(Answer {
            status: body.status(),
            headers: body.headers().clone(),
            body,
        })
    }

    fn timed_out(&self, timeout: Duration) -> GatewayError {
        GatewayError::upstream_unreachable(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "provider '{}' did not answer within {} s",
                self.provider,
                timeout.as_secs_f64()
            ),
        )
    }

    /// The whole body, at most `limit` bytes, before `deadline`.
    pub async fn read_body(
        &self,
        answer: Answer,
        limit: usize,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Bytes, GatewayError> {
        if answer
            .body
            .content_length()
            .is_some_and(|n| n > limit as u64)
        {
            return Err(too_large(&self.provider, limit));
        }
        let mut stream = answer.body.bytes_stream();
        let read = async {
            let mut buf = BytesMut::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| transport_error(&self.provider, &e))?;
                if buf.len() + chunk.len() > limit {
                    return Err(too_large(&self.provider, limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => Err(self.timed_out(timeout)),
            Ok(r) => r,
        }
    }

    /// The body as it arrives, for streams.
    pub fn body_stream(&self, answer: Answer) -> BodyStream {
        let provider = self.provider.clone();
        Box::pin(
            answer
                .body
                .bytes_stream()
                .map(move |r| r.map_err(|e| transport_error(&provider, &e))),
        )
    }
}

/// An answer larger than the gateway will hold in memory.
fn too_large(provider: &str, limit: usize) -> GatewayError {
    GatewayError::upstream(
        StatusCode::BAD_GATEWAY,
        format!(
            "provider '{provider}' answered with a body larger than {limit} bytes (client.max_response_body_bytes)"
        ),
    )
    .with_code("upstream_response_too_large")
    .retryable(false)
}

/// A failure to talk to the provider: 502, or 504 for timeouts; retryable.
pub fn transport_error(provider: &str, e: &reqwest::Error) -> GatewayError {
    let status = if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    // reqwest's Display names the URL, which never carries a key (keys go in headers).
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if !cause.is_empty() {
            cause.push_str(": ");
        }
        cause.push_str(&s.to_string());
        source = s.source();
    }
    GatewayError::upstream_unreachable(
        status,
        format!("provider '{provider}' unreachable: {cause}"),
    )
}
