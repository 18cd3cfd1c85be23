//! A mock of Google's OAuth2 token endpoint on 127.0.0.1: `POST /token` with a JWT-bearer
//! assertion (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`),
//! checked as Google does ([`jwt::check`]), answered with `ya29.mock-<n>` access tokens.
//!
//! A [`MockUpstream`](crate::mock::MockUpstream) linked to it accepts on Vertex AI paths only
//! the tokens it issued that have not expired or been revoked. Tests can count requests,
//! change the lifetime of new tokens, refuse the next grants, slow answers down (to see
//! concurrent renewals coalesce) and revoke tokens (to force a 401 and a renewal).

pub mod jwt;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use rsa::RsaPublicKey;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::service_account::ServiceAccountFixture;
use jwt::Trusted;

/// The grant type of a service account's assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How the server refuses a grant it was told to refuse.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// 400 `{"error":"invalid_grant",...}`
    InvalidGrant,
    /// 401 `{"error":"invalid_client",...}` (a deleted or disabled key)
    InvalidClient,
    /// Any status and body.
    Custom { status: u16, body: String },
}

impl Refusal {
    fn reply(&self) -> (u16, String) {
        match self {
            Refusal::InvalidGrant => (
                400,
                json!({"error": "invalid_grant", "error_description": "Invalid grant: account not found"})
                    .to_string(),
            ),
            Refusal::InvalidClient => (
                401,
                json!({"error": "invalid_client", "error_description": "The OAuth client was not found."})
                    .to_string(),
            ),
            Refusal::Custom { status, body } => (*status, body.clone()),
        }
    }
}

/// A token the server handed out.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub client_email: String,
    /// The `expires_in` it was sent with.
    pub expires_in: u64,
    pub expires_at: Instant,
    pub revoked: bool,
}

impl IssuedToken {
    pub fn is_valid(&self) -> bool {
        !self.revoked && Instant::now() < self.expires_at
    }
}

#[derive(Default)]
struct Refusing {
    /// `None`: refuse every request; `Some(n)`: the next `n`.
    remaining: Option<usize>,
    how: Option<Refusal>,
}

pub(crate) struct TokenState {
    trusted: Mutex<Vec<Trusted>>,
    expires_in: AtomicU64,
    delay: Mutex<Duration>,
    refusing: Mutex<Refusing>,
    issued: Mutex<Vec<IssuedToken>>,
    claims: Mutex<Vec<Value>>,
    failure_reasons: Mutex<Vec<String>>,
    requests: AtomicUsize,
    successes: AtomicUsize,
    failures: AtomicUsize,
    in_flight: AtomicUsize,
    max_concurrent: AtomicUsize,
    audience: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenState {
    /// Whether `token` was issued here and is neither expired nor revoked.
    pub(crate) fn is_valid(&self, token: &str) -> bool {
        lock(&self.issued)
            .iter()
            .any(|t| t.access_token == token && t.is_valid())
    }
}

/// A running token server; stops accepting when dropped.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<TokenState>,
    accept: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    /// Start on a free port of 127.0.0.1, trusting no account yet (see [`TokenServer::trust`]).
    pub async fn start() -> TokenServer {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => panic!("token server cannot bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("token server has no address: {e}"),
        };
        let state = Arc::new(TokenState {
            trusted: Mutex::new(Vec::new()),
            expires_in: AtomicU64::new(3600),
            delay: Mutex::new(Duration::ZERO),
            refusing: Mutex::new(Refusing::default()),
            issued: Mutex::new(Vec::new()),
            claims: Mutex::new(Vec::new()),
            failure_reasons: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
            audience: format!("http://{addr}/token"),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        TokenServer {
            addr,
            state,
            accept,
        }
    }

    /// A server and a fresh service account it trusts, whose `token_uri` points at it.
    pub async fn with_account() -> (TokenServer, ServiceAccountFixture) {
        let server = TokenServer::start().await;
        let account = ServiceAccountFixture::generate(&server.token_uri());
        server.trust_account(&account);
        (server, account)
    }

    /// `http://127.0.0.1:PORT` (no path).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/token`: the `token_uri`, and the `aud` assertions must carry.
    pub fn token_uri(&self) -> String {
        self.state.audience.clone()
    }

    /// Accept assertions from `client_email` signed by `public_key` (and `kid`, if given).
    pub fn trust(&self, client_email: &str, public_key: RsaPublicKey, kid: Option<&str>) {
        lock(&self.state.trusted).push(Trusted {
            client_email: client_email.to_owned(),
            public_key,
            kid: kid.map(str::to_owned),
        });
    }

    pub fn trust_account(&self, account: &ServiceAccountFixture) {
        self.trust(
            &account.client_email,
            account.public_key.clone(),
            Some(&account.private_key_id),
        );
    }

    /// The `expires_in` of tokens issued from now on (default 3600).
    pub fn set_expires_in(&self, secs: u64) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Refuse the next `n` requests, whatever they carry.
    pub fn refuse_next(&self, n: usize, how: Refusal) {
        *lock(&self.state.refusing) = Refusing {
            remaining: Some(n),
            how: Some(how),
        };
    }

    /// Refuse every request until [`TokenServer::stop_refusing`].
    pub fn refuse_all(&self, how: Refusal) {
        *lock(&self.state.refusing) = Refusing {
            remaining: None,
            how: Some(how),
        };
    }

    pub fn stop_refusing(&self) {
        *lock(&self.state.refusing) = Refusing::default();
    }

    /// Revoke every token issued so far: the linked mock answers 401 to them.
    pub fn revoke_all(&self) {
        for t in lock(&self.state.issued).iter_mut() {
            t.revoked = true;
        }
    }

    /// Whether `token` was issued here and is neither expired nor revoked.
    pub fn is_valid(&self, token: &str) -> bool {
        self.state.is_valid(token)
    }

    /// Every token issued, oldest first.
    pub fn issued(&self) -> Vec<IssuedToken> {
        lock(&self.state.issued).clone()
    }

    /// The claims of every assertion that passed the checks, oldest first.
    pub fn accepted_claims(&self) -> Vec<Value> {
        lock(&self.state.claims).clone()
    }

    /// Why each refused request was refused (`error: description`), oldest first.
    pub fn failure_reasons(&self) -> Vec<String> {
        lock(&self.state.failure_reasons).clone()
    }

    /// Requests to `/token`, answered or not yet.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn successes(&self) -> usize {
        self.state.successes.load(Ordering::SeqCst)
    }

    pub fn failures(&self) -> usize {
        self.state.failures.load(Ordering::SeqCst)
    }

    /// The most token requests handled at once (1 when renewals coalesce).
    pub fn max_concurrent(&self) -> usize {
        self.state.max_concurrent.load(Ordering::SeqCst)
    }

    pub(crate) fn state(&self) -> Arc<TokenState> {
        self.state.clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<TokenState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Counted(Arc<TokenState>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<TokenState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/token" {
        return Ok(reply(404, json!({"error": "not_found"}).to_string()));
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_concurrent.fetch_max(now, Ordering::SeqCst);
    let _counted = Counted(state.clone());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, text) = grant(&state, &form(&body));
    Ok(reply(status, text))
}

/// The answer to one token request, counted as a success or a failure.
fn grant(state: &TokenState, form: &[(String, String)]) -> (u16, String) {
    let fail = |status: u16, error: &str, description: &str| {
        state.failures.fetch_add(1, Ordering::SeqCst);
        lock(&state.failure_reasons).push(format!("{error}: {description}"));
        (
            status,
            json!({"error": error, "error_description": description}).to_string(),
        )
    };
    {
        let mut refusing = lock(&state.refusing);
        if let Some(how) = refusing.how.clone() {
            let refuse = match &mut refusing.remaining {
                None => true,
                Some(0) => false,
                Some(n) => {
                    *n -= 1;
                    true
                }
            };
            if refuse {
                state.failures.fetch_add(1, Ordering::SeqCst);
                lock(&state.failure_reasons).push(format!("refused on purpose: {how:?}"));
                return how.reply();
            }
        }
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match field("grant_type") {
        Some(JWT_BEARER) => {}
        Some(other) => {
            return fail(
                400,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            )
        }
        None => {
            return fail(
                400,
                "invalid_request",
                "Missing required parameter: grant_type",
            )
        }
    }
    let Some(assertion) = field("assertion") else {
        return fail(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let trusted = lock(&state.trusted).clone();
    let claims = match jwt::check(assertion, &trusted, &state.audience, now) {
        Ok(c) => c,
        Err(refused) => return fail(400, refused.error, &refused.description),
    };
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let mut issued = lock(&state.issued);
    let access_token = format!("ya29.mock-{}", issued.len() + 1);
    issued.push(IssuedToken {
        access_token: access_token.clone(),
        client_email: claims["iss"].as_str().unwrap_or("").to_owned(),
        expires_in,
        expires_at: Instant::now() + Duration::from_secs(expires_in),
        revoked: false,
    });
    drop(issued);
    lock(&state.claims).push(claims);
    state.successes.fetch_add(1, Ordering::SeqCst);
    (
        200,
        json!({"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"})
            .to_string(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn post(server: &TokenServer, body: String) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(server.token_uri())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    fn form_body(assertion: &str) -> String {
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}")
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn issues_refuses_and_revokes() {
        let (server, sa) = TokenServer::with_account().await;
        let (status, body) = post(&server, form_body(&sa.sign_jwt(&sa.claims(now())))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["access_token"], "ya29.mock-1");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["token_type"], "Bearer");
        assert!(server.is_valid("ya29.mock-1"));

        let mut wrong = sa.claims(now());
        wrong["aud"] = json!("https://oauth2.googleapis.com/token");
        let (status, body) = post(&server, form_body(&sa.sign_jwt(&wrong))).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");

        server.set_expires_in(120);
        server.refuse_next(1, Refusal::InvalidClient);
        let good = form_body(&sa.sign_jwt(&sa.claims(now())));
        let (status, body) = post(&server, good.clone()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
        let (status, body) = post(&server, good).await;
        assert_eq!((status, body["expires_in"].as_u64()), (200, Some(120)));

        assert_eq!(server.requests(), 4);
        assert_eq!(server.successes(), 2);
        assert_eq!(server.failures(), 2);
        assert_eq!(server.issued().len(), 2);
        assert_eq!(server.accepted_claims()[0]["iss"], sa.client_email);
        server.revoke_all();
        assert!(!server.is_valid("ya29.mock-2"));
        let (status, _) = post(&server, "grant_type=password".into()).await;
        assert_eq!(status, 400);
    }
}
