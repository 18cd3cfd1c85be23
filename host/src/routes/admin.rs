//! The admin side: `/metrics`, the detailed `/health` and the status page (`/`, `/ui`) are
//! for operators, not for whoever reaches the API. A middleware in front of every route
//! decides, by listener and config:
//!
//! - on the admin listener (`client.admin_listen`): admin paths only, behind
//!   `client.admin_token` when one is set;
//! - on the public listener: nothing of the admin side when `client.admin_listen` is set
//!   (404, as if absent); else behind `client.admin_token` when set; else open only when
//!   the gateway listens on a loopback address, and refused (403) when it listens beyond
//!   the machine with neither set.
//!
//! `/health` always answers: whoever may not see the details gets the liveness answer
//! (`{"status": ...}`), which is what load balancers need.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::access::SecretDigest;
use crate::config::Config;
use crate::error::GatewayError;

/// Which listener a router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `client.listen`: the API.
    Public,
    /// `client.admin_listen`.
    Admin,
}

/// Marks a request allowed to see the admin side (the detailed `/health`).
#[derive(Debug, Clone, Copy)]
pub struct AdminView;

/// How admin paths are guarded on one listener.
#[derive(Clone)]
pub struct AdminPolicy {
    listener: Listener,
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Open,
    Token(SecretDigest),
    /// Served on the admin listener only.
    Elsewhere,
    /// A public listener beyond loopback with no admin token or listener configured.
    Closed,
}

/// Whether `path` belongs to the admin side (besides `/health`). `/` and `/ui` are the
/// status page's.
pub fn is_admin_path(path: &str) -> bool {
    matches!(path, "/" | "/metrics" | "/ui") || path.starts_with("/ui/")
}

impl AdminPolicy {
    pub fn new(config: &Config, listener: Listener) -> AdminPolicy {
        let c = &config.client;
        let token = c.access.admin_token.clone();
        let mode = match (listener, token) {
            (Listener::Admin, Some(t)) => Mode::Token(t),
            (Listener::Admin, None) => Mode::Open,
            (Listener::Public, _) if c.access.admin_listen.is_some() => Mode::Elsewhere,
            (Listener::Public, Some(t)) => Mode::Token(t),
            (Listener::Public, None) if c.listen.ip().is_loopback() => Mode::Open,
            (Listener::Public, None) => Mode::Closed,
        };
        AdminPolicy { listener, mode }
    }

    /// May a request with `headers` see the admin side? Err: the refusal.
    fn decide(&self, headers: &HeaderMap, path: &str) -> Result<(), GatewayError> {
        match &self.mode {
            Mode::Open => Ok(()),
            Mode::Token(digest) => {
                let presented = headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes())
                    .and_then(|v| v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer ")))
                    .map(<[u8]>::trim_ascii);
                match presented {
                    Some(t) if digest.matches(t) => Ok(()),
                    Some(_) => Err(GatewayError::client(
                        StatusCode::UNAUTHORIZED,
                        "invalid_admin_token",
                        None,
                        format!("{path} needs the admin token (client.admin_token); the one sent is not it"),
                    )),
                    None => Err(GatewayError::client(
                        StatusCode::UNAUTHORIZED,
                        "missing_admin_token",
                        None,
                        format!("{path} needs the admin token: send 'Authorization: Bearer <client.admin_token>'"),
                    )),
                }
            }
            Mode::Elsewhere => Err(super::no_route(path)),
            Mode::Closed => Err(GatewayError::client(
                StatusCode::FORBIDDEN,
                "admin_not_exposed",
                None,
                format!(
                    "{path} is not served to the network: this gateway listens beyond loopback; set client.admin_listen (e.g. \"127.0.0.1:9090\") or client.admin_token"
                ),
            )),
        }
    }
}

/// The middleware in front of every route of a listener.
pub async fn guard(State(policy): State<AdminPolicy>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let health = path == "/health";
    let admin = is_admin_path(path);
    if policy.listener == Listener::Admin && !admin && !health {
        return GatewayError::client(
            StatusCode::NOT_FOUND,
            "unknown_url",
            None,
            format!(
                "the admin listener serves /health, /metrics and /ui; {path} is on the API listener (client.listen)"
            ),
        )
        .into_response();
    }
    if !admin && !health {
        return next.run(req).await;
    }
    let path = path.to_owned();
    match policy.decide(req.headers(), &path) {
        Ok(()) => {
            req.extensions_mut().insert(AdminView);
            next.run(req).await
        }
        // A wrong token is refused even on /health; no token gets the liveness answer.
        Err(e) if health && e.code.as_deref() != Some("invalid_admin_token") => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
