//! Request errors, classified by who is at fault. The fault decides the HTTP status class,
//! the `switchyard_requests_total{outcome}` label and the `x-switchyard-error` header that
//! marks errors the gateway made (as opposed to a provider's own error passed through).
//!
//! Every error leaves as an OpenAI error body: `{"error": {"message", "type", "code",
//! "param"}}`. Startup and config errors are separate (`config::ConfigError`).

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong.
    Client,
    /// The provider failed or refused; status and message are the provider's.
    Upstream,
    /// A plugin rejected or failed the request.
    Plugin,
    /// The gateway could not serve it (queue full, timeout, no usable key, shutting down).
    Gateway,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Plugin => "plugin",
            Fault::Gateway => "gateway",
        }
    }
}

/// One target tried for a request, for the error that lists every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptSummary {
    pub provider: String,
    pub model: String,
    pub status: u16,
    pub message: String,
}

/// A request that could not be answered with a response.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub fault: Fault,
    pub status: StatusCode,
    pub message: String,
    /// OpenAI `error.type`; derived from status and fault when `None`.
    pub error_type: Option<String>,
    /// OpenAI `error.code`, e.g. `model_not_found`, `rate_limit_exceeded`.
    pub code: Option<Cow<'static, str>>,
    /// OpenAI `error.param`: the request field at fault.
    pub param: Option<String>,
    /// Sent as `Retry-After` (seconds) when set.
    pub retry_after: Option<Duration>,
    /// Whether the request's fallbacks may still be tried after this error.
    pub allow_fallbacks: bool,
    /// Whether the same target may be tried again (connect error, timeout, 429, 5xx).
    pub retryable: bool,
    /// The plugin that made this error, for plugin faults.
    pub plugin: Option<String>,
    /// Every target tried, when more than one was.
    pub attempts: Vec<AttemptSummary>,
    /// Headers plugins added to the client's response (WIT 0.2.0).
    pub response_headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl GatewayError {
    fn new(fault: Fault, status: StatusCode, message: impl Into<String>) -> Self {
        GatewayError {
            fault,
            status,
            message: message.into(),
            error_type: None,
            code: None,
            param: None,
            retry_after: None,
            allow_fallbacks: true,
            retryable: false,
            plugin: None,
            attempts: Vec::new(),
            response_headers: Vec::new(),
        }
    }

    /// A client error (4xx) about request field `param`.
    pub fn client(
        status: StatusCode,
        code: &'static str,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(Fault::Client, status, message);
        e.code = Some(Cow::Borrowed(code));
        e.param = param.map(str::to_owned);
        e.allow_fallbacks = false;
        e
    }

    /// 400 invalid_request_error for field `param`.
    pub fn bad_request(param: Option<&str>, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, "invalid_request", param, message)
    }

    /// An error the gateway made (queue full, timeout, no key, ...).
    pub fn gateway(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(Fault::Gateway, status, message);
        e.code = Some(Cow::Borrowed(code));
        e
    }

    /// A provider's error response, status and message kept.
    pub fn upstream(status: StatusCode, message: impl Into<String>) -> Self {
        let mut e = Self::new(Fault::Upstream, status, message);
        e.retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        e
    }

    /// A transport failure talking to a provider (connect error, reset, timeout):
    /// 502, or 504 for timeouts; retryable.
    pub fn upstream_unreachable(status: StatusCode, message: impl Into<String>) -> Self {
        let mut e = Self::new(Fault::Upstream, status, message);
        e.code = Some(Cow::Borrowed(if status == StatusCode::GATEWAY_TIMEOUT {
            "upstream_timeout"
        } else {
            "upstream_unreachable"
        }));
        e.retryable = true;
        e
    }

    /// An error made by plugin `plugin`.
    pub fn plugin(plugin: &str, status: StatusCode, message: impl Into<String>) -> Self {
        let mut e = Self::new(Fault::Plugin, status, message);
        e.plugin = Some(plugin.to_owned());
        e
    }

    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_type(mut self, error_type: impl Into<String>) -> Self {
        self.error_type = Some(error_type.into());
        self
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// OpenAI `error.type` for this error.
    pub fn type_str(&self) -> &str {
        if let Some(t) = &self.error_type {
            return t;
        }
        match (self.fault, self.status.as_u16()) {
            (_, 401) => "authentication_error",
            (_, 403) => "permission_error",
            (_, 404) => "not_found_error",
            (_, 413) => "invalid_request_error",
            (_, 429) => "rate_limit_error",
            (Fault::Client, _) => "invalid_request_error",
            (Fault::Plugin, s) if s < 500 => "invalid_request_error",
            (Fault::Upstream, _) => "upstream_error",
            _ => "server_error",
        }
    }

    /// The OpenAI error body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "error": {
                "message": self.message,
                "type": self.type_str(),
                "code": self.code,
                "param": self.param,
            }
        });
        if !self.attempts.is_empty() || self.plugin.is_some() {
            let attempts: Vec<Value> = self
                .attempts
                .iter()
                .map(|a| {
                    json!({"provider": a.provider, "model": a.model, "status": a.status, "message": a.message})
                })
                .collect();
            body["extra_fields"] = json!({ "attempts": attempts, "plugin": self.plugin });
        }
        body
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status,
            self.fault.as_str(),
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}

/// Header that marks an error the gateway made, with the fault as value.
pub const ERROR_HEADER: &str = "x-switchyard-error";

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.to_json())).into_response();
        let headers = resp.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.fault.as_str()));
        for (n, v) in &self.response_headers {
            headers.append(n.clone(), v.clone());
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(secs.max(1)),
            );
        }
        resp
    }
}
