//! Google OAuth2 access tokens for a service account: how a request to Vertex AI proves who
//! sent it.
//!
//! One `TokenSource` per provider, shared (in an `Arc`) by all its requests: each request asks
//! it for a token just before it leaves and puts it in `authorization: Bearer`; a 401 from the
//! provider hands the token back through `invalidate`. The token comes from Google's token
//! endpoint in exchange for a JWT signed with the service account's RSA key (RFC 7523, the
//! "JWT bearer" grant), and is cached until shortly before it expires. Renewals are coalesced:
//! however many requests find the token stale at once, one token request goes out.
//!
//! The JWT is `jsonwebtoken`'s (RS256 with its pure-Rust RustCrypto backend); the token request
//! goes through the caller's `reqwest::Client`, so the provider's proxy and TLS settings apply.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::config::validate::signing_key as parse_key;
use crate::config::Secret;
pub use crate::config::{validate::parse_service_account, ServiceAccount};

/// A cached token is renewed once less than this much of its life is left (or half its life,
/// for a token that lives less than twice as long), so a request never leaves with a token that
/// expires on the way.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Bound on one token request, connection to answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The assertion's lifetime: Google accepts at most one hour.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// After a failed renewal while the old token is still valid, keep using it this long before
/// asking again, so an outage of the token server does not turn every request into a token
/// request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// A token answer is a few hundred bytes; do not read an endless one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An OAuth2 access token. Prints as `AccessToken(*****)`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Secret);

impl AccessToken {
    pub fn new(token: impl Into<String>) -> Self {
        AccessToken(Secret::new(token))
    }

    /// The token itself, for the `authorization: Bearer` header.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(*****)")
    }
}

/// Wall-clock time, injectable so tests can age a token without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Why no token could be had. None carries the private key, the assertion or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("cannot reach the token server {token_uri}: {reason}")]
    Unreachable { token_uri: String, reason: String },
    #[error(
        "the token server {token_uri} refused the service account's assertion: HTTP {status}{}",
        google_error(.error.as_deref(), .description.as_deref())
    )]
    Refused {
        token_uri: String,
        status: u16,
        /// Google's `error`, e.g. `invalid_grant`.
        error: Option<String>,
        /// Google's `error_description`, e.g. `Invalid JWT Signature.`
        description: Option<String>,
    },
    #[error("the token server {token_uri} answered without a usable token: {reason}")]
    BadAnswer { token_uri: String, reason: String },
    #[error("the service account key cannot sign: {reason}")]
    Key { reason: String },
}

fn google_error(error: Option<&str>, description: Option<&str>) -> String {
    match (error, description) {
        (Some(e), Some(d)) => format!(": {e}: {d}"),
        (Some(one), None) | (None, Some(one)) => format!(": {one}"),
        (None, None) => String::new(),
    }
}

/// Hands out access tokens for one service account and scope. `Send + Sync`: share it.
pub struct TokenSource {
    client_email: String,
    key_id: Option<String>,
    token_uri: String,
    scope: String,
    key: EncodingKey,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    request_timeout: Duration,
    /// Held for a few instructions at a time, never across an await.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: Option<Cached>,
    /// The renewal in flight, if any: everyone who finds the token stale awaits this one.
    renewal: Option<Arc<Renewal>>,
    last_failure: Option<(SystemTime, TokenError)>,
}

/// One renewal's shared result. The first caller to await it runs the token request; the
/// others wait for its result, success or failure (if that caller is cancelled, the next waiter
/// takes the request over).
type Renewal = OnceCell<Result<AccessToken, TokenError>>;

struct Cached {
    token: AccessToken,
    renew_at: SystemTime,
    expires_at: SystemTime,
}

impl TokenSource {
    /// `http`: the client to reach `token_uri` with (the provider's, so proxies and TLS
    /// settings apply); `scope` e.g. `https://www.googleapis.com/auth/cloud-platform`;
    /// `clock`: `Arc::new(SystemClock)` but in tests. Fails if the key cannot sign.
    pub fn new(
        sa: ServiceAccount,
        scope: &str,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TokenError> {
        let key = parse_key(sa.private_key.expose()).ok_or_else(|| TokenError::Key {
            reason: "\"private_key\" is not a PEM RSA private key".into(),
        })?;
        Ok(TokenSource {
            client_email: sa.client_email,
            key_id: sa.private_key_id,
            token_uri: sa.token_uri,
            scope: scope.to_string(),
            key,
            http,
            clock,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            state: Mutex::new(State::default()),
        })
    }

    /// Replaces `DEFAULT_REQUEST_TIMEOUT` for each token request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// A valid access token: the cached one while more than `RENEW_BEFORE` of its life is left,
    /// else a new one. Concurrent callers that find no fresh token share one token request.
    /// If that request fails while the cached token has not expired yet, the cached token is
    /// returned (and renewal is tried again after `RETRY_AFTER_FAILURE`).
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        let renewal = {
            let mut state = self.lock();
            let now = self.clock.now();
            if let Some(cached) = &state.current {
                let retry_later = state
                    .last_failure
                    .as_ref()
                    .is_some_and(|(at, _)| now < *at + RETRY_AFTER_FAILURE);
                if now < cached.renew_at || (retry_later && now < cached.expires_at) {
                    return Ok(cached.token.clone());
                }
            }
            state
                .renewal
                .get_or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let result = renewal.get_or_init(|| self.renew(&renewal)).await.clone();
        result.or_else(|error| {
            let state = self.lock();
            match &state.current {
                Some(cached) if self.clock.now() < cached.expires_at => Ok(cached.token.clone()),
                _ => Err(error),
            }
        })
    }

    /// The provider answered 401 with `token`: forget it so the next `token()` renews, but only
    /// if it is still the cached one, so that many 401s for one token cause one renewal.
    pub fn invalidate(&self, token: &AccessToken) {
        let mut state = self.lock();
        if state.current.as_ref().is_some_and(|c| c.token == *token) {
            state.current = None;
        }
    }

    /// For `/health`, in words: `no token yet`, `token valid for 54 min`,
    /// `last renewal failed 12 s ago: <reason>`, or a token's state and its last failure.
    pub fn state(&self) -> String {
        let state = self.lock();
        let now = self.clock.now();
        let token =
            state
                .current
                .as_ref()
                .map(|cached| match cached.expires_at.duration_since(now) {
                    Ok(left) => format!("token valid for {}", words(left)),
                    Err(past) => format!("token expired {} ago", words(past.duration())),
                });
        let failure = state.last_failure.as_ref().map(|(at, error)| {
            let ago = now.duration_since(*at).unwrap_or_default();
            format!("last renewal failed {} ago: {error}", words(ago))
        });
        match (token, failure) {
            (Some(token), Some(failure)) => format!("{token}; {failure}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "no token yet".into(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated (every update is one
        // assignment), so a poisoned lock is still good.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run one token request and record its outcome. Runs inside `renewal`'s cell.
    async fn renew(&self, renewal: &Arc<Renewal>) -> Result<AccessToken, TokenError> {
        let started = self.clock.now();
        let result = self.request_token(started).await;
        let mut state = self.lock();
        if state
            .renewal
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, renewal))
        {
            // Callers from now on see the outcome below instead of this finished renewal.
            state.renewal = None;
        }
        match result {
            Ok((token, lifetime)) => {
                // Counted from before the request was sent: the token cannot be younger.
                let renew_before = RENEW_BEFORE.min(lifetime / 2);
                state.current = Some(Cached {
                    token: token.clone(),
                    renew_at: started + lifetime - renew_before,
                    expires_at: started + lifetime,
                });
                state.last_failure = None;
                Ok(token)
            }
            Err(error) => {
                state.last_failure = Some((self.clock.now(), error.clone()));
                Err(error)
            }
        }
    }

    /// The signed JWT: header `{"alg":"RS256","typ":"JWT","kid":…}`, claims
    /// `{"iss","scope","aud","iat","exp"}`.
    fn assertion(&self, now: SystemTime) -> Result<String, TokenError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| TokenError::Key {
                reason: "the clock is before 1970".into(),
            })?
            .as_secs();
        let claims = Claims {
            iss: &self.client_email,
            scope: &self.scope,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| TokenError::Key {
            reason: e.to_string(),
        })
    }

    /// POST the assertion; the token and its lifetime.
    async fn request_token(&self, now: SystemTime) -> Result<(AccessToken, Duration), TokenError> {
        let assertion = self.assertion(now)?;
        let response = self
            .http
            .post(&self.token_uri)
            .timeout(self.request_timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = self.read_answer(response).await?;
        let answer: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let field = |name: &str| {
            answer
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        if !status.is_success() {
            return Err(TokenError::Refused {
                token_uri: self.token_uri.clone(),
                status: status.as_u16(),
                error: field("error").map(str::to_owned),
                description: field("error_description").map(str::to_owned),
            });
        }
        let bad_answer = |reason: &str| TokenError::BadAnswer {
            token_uri: self.token_uri.clone(),
            reason: reason.into(),
        };
        if answer.is_none() {
            return Err(bad_answer("the answer is not JSON"));
        }
        let token = field("access_token").ok_or_else(|| bad_answer("no \"access_token\""))?;
        let lifetime = answer
            .as_ref()
            .and_then(|a| a.get("expires_in"))
            .and_then(|v| v.as_u64())
            .filter(|&secs| secs > 0)
            .ok_or_else(|| bad_answer("no positive \"expires_in\""))?;
        Ok((AccessToken::new(token), Duration::from_secs(lifetime)))
    }

    async fn read_answer(&self, mut response: reqwest::Response) -> Result<Vec<u8>, TokenError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(TokenError::BadAnswer {
                    token_uri: self.token_uri.clone(),
                    reason: format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn unreachable(&self, error: reqwest::Error) -> TokenError {
        let reason = if error.is_timeout() {
            format!("no answer within {} s", self.request_timeout.as_secs_f64())
        } else {
            // reqwest's own message is terse ("error sending request"); the cause (refused,
            // DNS, TLS) is down the source chain. The URL is said once, by the variant.
            let error = error.without_url();
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                reason.push_str(": ");
                reason.push_str(&cause.to_string());
                source = cause.source();
            }
            reason
        };
        TokenError::Unreachable {
            token_uri: self.token_uri.clone(),
            reason,
        }
    }
}

/// `42 s`, `54 min`, `3 h`: what a person reads on a health page.
fn words(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 120 {
        format!("{secs} s")
    } else if secs < 120 * 60 {
        format!("{} min", secs / 60)
    } else {
        format!("{} h", secs / 3600)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::sha2::{Digest, Sha256};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    const EMAIL: &str = "gateway@my-project.iam.gserviceaccount.com";
    const KEY_ID: &str = "3f7c0d8a6b1e2f4a5c9d";
    const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

    /// An RSA-2048 key pair made once per test binary: the PKCS#8 PEM for the service account,
    /// the public half for the token server.
    fn key_pair() -> &'static (String, rsa::PublicKey) {
        static KEY: OnceLock<(String, rsa::PublicKey)> = OnceLock::new();
        KEY.get_or_init(|| {
            let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
            let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
            (pem, private.to_public_key())
        })
    }

    struct TestClock(Mutex<SystemTime>);

    impl TestClock {
        fn new() -> Arc<Self> {
            // A whole second, so `iat` is exact.
            Arc::new(TestClock(Mutex::new(
                UNIX_EPOCH + Duration::from_secs(1_760_000_000),
            )))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    #[derive(Clone)]
    struct Behaviour {
        /// Answer with this status and body instead of a token.
        answer: Option<(u16, String)>,
        delay: Duration,
        expires_in: u64,
    }

    /// A token server on 127.0.0.1:0 that checks each assertion as Google would: the form, the
    /// RS256 signature (with the `rsa` crate, not jsonwebtoken), the header and the claims.
    struct TokenServer {
        addr: SocketAddr,
        requests: AtomicUsize,
        behaviour: Mutex<Behaviour>,
        /// What was wrong with assertions; every test expects none.
        problems: Mutex<Vec<String>>,
        clock: Arc<TestClock>,
    }

    impl TokenServer {
        async fn start(clock: Arc<TestClock>) -> Arc<Self> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = Arc::new(TokenServer {
                addr: listener.local_addr().unwrap(),
                requests: AtomicUsize::new(0),
                behaviour: Mutex::new(Behaviour {
                    answer: None,
                    delay: Duration::ZERO,
                    expires_in: 3600,
                }),
                problems: Mutex::new(Vec::new()),
                clock,
            });
            let accepting = server.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let server = accepting.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.handle(request).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            server
        }

        fn uri(&self) -> String {
            format!("http://{}/token", self.addr)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        fn set(&self, change: impl FnOnce(&mut Behaviour)) {
            change(&mut self.behaviour.lock().unwrap());
        }

        async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
            let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
            let behaviour = self.behaviour.lock().unwrap().clone();
            let content_type = request
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let verdict = self.check(content_type.as_deref(), &body);
            tokio::time::sleep(behaviour.delay).await;
            let (status, answer) = if let Err(problem) = verdict {
                self.problems.lock().unwrap().push(problem);
                (400, r#"{"error":"invalid_grant"}"#.to_string())
            } else if let Some(answer) = behaviour.answer {
                answer
            } else {
                let answer = serde_json::json!({
                    "access_token": format!("ya29.token-{n}"),
                    "expires_in": behaviour.expires_in,
                    "token_type": "Bearer",
                });
                (200, answer.to_string())
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer)))
                .unwrap()
        }

        fn check(&self, content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
            if content_type != Some("application/x-www-form-urlencoded") {
                return Err(format!("content-type {content_type:?}"));
            }
            let form: std::collections::HashMap<String, String> =
                form_urlencoded::parse(body).into_owned().collect();
            if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
                return Err(format!("grant_type {:?}", form.get("grant_type")));
            }
            let assertion = form.get("assertion").ok_or("no assertion")?;
            let parts: Vec<&str> = assertion.split('.').collect();
            let [header, claims, signature] = parts[..] else {
                return Err(format!("{} parts", parts.len()));
            };
            let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string());
            let signed = format!("{header}.{claims}");
            key_pair()
                .1
                .verify(
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(signed.as_bytes()),
                    &decode(signature)?,
                )
                .map_err(|e| format!("signature: {e}"))?;
            let header: serde_json::Value =
                serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
            let expected_header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID});
            if header != expected_header {
                return Err(format!("header {header}"));
            }
            let claims: serde_json::Value =
                serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
            let now = self
                .clock
                .now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let expected_claims = serde_json::json!({
                "iss": EMAIL, "scope": SCOPE, "aud": self.uri(), "iat": now, "exp": now + 3600,
            });
            if claims != expected_claims {
                return Err(format!("claims {claims}, expected {expected_claims}"));
            }
            Ok(())
        }

        fn assert_no_problems(&self) {
            assert_eq!(*self.problems.lock().unwrap(), Vec::<String>::new());
        }
    }

    fn service_account(token_uri: String) -> ServiceAccount {
        ServiceAccount {
            client_email: EMAIL.into(),
            private_key: Secret::new(key_pair().0.clone()),
            private_key_id: Some(KEY_ID.into()),
            token_uri,
            project_id: Some("my-project".into()),
        }
    }

    fn client() -> reqwest::Client {
        // A proxy from the environment must not catch requests to 127.0.0.1.
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn setup() -> (Arc<TokenServer>, Arc<TestClock>, Arc<TokenSource>) {
        let clock = TestClock::new();
        let server = TokenServer::start(clock.clone()).await;
        let source = TokenSource::new(
            service_account(server.uri()),
            SCOPE,
            client(),
            clock.clone(),
        )
        .unwrap();
        (server, clock, Arc::new(source))
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_token_request() {
        let (server, _clock, source) = setup().await;
        server.set(|b| b.delay = Duration::from_millis(200));
        let tokens = futures_util::future::join_all((0..100).map(|_| source.token())).await;
        for token in tokens {
            assert_eq!(token.unwrap().expose(), "ya29.token-1");
        }
        assert_eq!(server.requests(), 1);
        // And cached afterwards.
        assert_eq!(source.token().await.unwrap().expose(), "ya29.token-1");
        assert_eq!(server.requests(), 1);
        server.assert_no_problems();
    }

    #[tokio::test]
    async fn concurrent_callers_on_threads_share_one_token_request() {
        let (server, _clock, source) = setup().await;
        server.set(|b| b.delay = Duration::from_millis(200));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { source.token().await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().expose(), "ya29.token-1");
        }
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn a_token_inside_the_renewal_window_is_renewed_once() {
        let (server, clock, source) = setup().await;
        assert_eq!(source.token().await.unwrap().expose(), "ya29.token-1");
        // 301 s of life left: still fresh.
        clock.advance(Duration::from_secs(3600 - 301));
        assert_eq!(source.token().await.unwrap().expose(), "ya29.token-1");
        assert_eq!(server.requests(), 1);
        // 299 s left: renewed, once for all concurrent callers.
        clock.advance(Duration::from_secs(2));
        server.set(|b| b.delay = Duration::from_millis(100));
        let tokens = futures_util::future::join_all((0..20).map(|_| source.token())).await;
        for token in tokens {
            assert_eq!(token.unwrap().expose(), "ya29.token-2");
        }
        assert_eq!(server.requests(), 2);
        server.assert_no_problems();
    }

    #[tokio::test]
    async fn a_short_lived_token_is_renewed_at_half_life() {
        let (server, clock, source) = setup().await;
        server.set(|b| b.expires_in = 60);
        source.token().await.unwrap();
        clock.advance(Duration::from_secs(29));
        assert_eq!(source.token().await.unwrap().expose(), "ya29.token-1");
        clock.advance(Duration::from_secs(2));
        assert_eq!(source.token().await.unwrap().expose(), "ya29.token-2");
    }

    #[tokio::test]
    async fn invalidating_the_current_token_renews_an_old_one_does_not() {
        let (server, _clock, source) = setup().await;
        let first = source.token().await.unwrap();
        source.invalidate(&first);
        let second = source.token().await.unwrap();
        assert_eq!(second.expose(), "ya29.token-2");
        assert_eq!(server.requests(), 2);
        // A late 401 for the first token changes nothing.
        source.invalidate(&first);
        assert_eq!(source.token().await.unwrap(), second);
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn concurrent_invalidations_of_one_token_cause_one_renewal() {
        let (server, _clock, source) = setup().await;
        let first = source.token().await.unwrap();
        server.set(|b| b.delay = Duration::from_millis(100));
        let retries = (0..50).map(|_| {
            let first = first.clone();
            let source = source.clone();
            async move {
                source.invalidate(&first);
                source.token().await
            }
        });
        for token in futures_util::future::join_all(retries).await {
            assert_eq!(token.unwrap().expose(), "ya29.token-2");
        }
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn a_refusal_names_the_status_and_googles_error_and_the_next_call_retries() {
        let (server, _clock, source) = setup().await;
        server.set(|b| {
            b.answer = Some((
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.into(),
            ))
        });
        let error = source.token().await.unwrap_err();
        assert_eq!(
            error,
            TokenError::Refused {
                token_uri: server.uri(),
                status: 400,
                error: Some("invalid_grant".into()),
                description: Some("Invalid JWT Signature.".into()),
            }
        );
        let message = error.to_string();
        assert_eq!(
            message,
            format!(
                "the token server {} refused the service account's assertion: HTTP 400: \
                 invalid_grant: Invalid JWT Signature.",
                server.uri()
            )
        );
        assert_eq!(
            source.state(),
            format!("last renewal failed 0 s ago: {message}")
        );

        server.set(|b| b.answer = None);
        assert_eq!(source.token().await.unwrap().expose(), "ya29.token-2");
        assert_eq!(server.requests(), 2);
        assert_eq!(source.state(), "token valid for 60 min");
        server.assert_no_problems();
    }

    #[tokio::test]
    async fn concurrent_callers_share_a_failure() {
        let (server, _clock, source) = setup().await;
        server.set(|b| {
            b.delay = Duration::from_millis(100);
            b.answer = Some((503, "upstream connect error".into()));
        });
        let results = futures_util::future::join_all((0..10).map(|_| source.token())).await;
        for result in results {
            assert!(
                matches!(
                    result,
                    Err(TokenError::Refused {
                        status: 503,
                        error: None,
                        ..
                    })
                ),
                "{result:?}"
            );
        }
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn a_failed_renewal_keeps_the_unexpired_token_and_retries_later() {
        let (server, clock, source) = setup().await;
        let first = source.token().await.unwrap();
        clock.advance(Duration::from_secs(3400));
        server.set(|b| b.answer = Some((500, r#"{"error":"internal_failure"}"#.into())));
        assert_eq!(source.token().await.unwrap(), first);
        assert_eq!(server.requests(), 2);
        assert!(
            source
                .state()
                .starts_with("token valid for 3 min; last renewal failed 0 s ago: "),
            "{}",
            source.state()
        );
        // Not again at once...
        assert_eq!(source.token().await.unwrap(), first);
        assert_eq!(server.requests(), 2);
        // ...but after a pause.
        clock.advance(RETRY_AFTER_FAILURE);
        assert_eq!(source.token().await.unwrap(), first);
        assert_eq!(server.requests(), 3);
        // Once expired, the failure is the caller's.
        clock.advance(Duration::from_secs(200));
        assert!(source.token().await.is_err());
        assert!(
            source
                .state()
                .starts_with("token expired 10 s ago; last renewal failed 0 s ago"),
            "{}",
            source.state()
        );
    }

    #[tokio::test]
    async fn answers_without_a_token_or_lifetime_are_errors() {
        let (server, _clock, source) = setup().await;
        for (answer, reason) in [
            (
                r#"{"token_type":"Bearer","expires_in":3599}"#,
                "no \"access_token\"",
            ),
            (
                r#"{"access_token":"ya29.x","token_type":"Bearer"}"#,
                "no positive \"expires_in\"",
            ),
            (
                r#"{"access_token":"ya29.x","expires_in":0}"#,
                "no positive \"expires_in\"",
            ),
            ("<html>ok</html>", "the answer is not JSON"),
        ] {
            server.set(|b| b.answer = Some((200, answer.into())));
            let error = source.token().await.unwrap_err();
            assert_eq!(
                error,
                TokenError::BadAnswer {
                    token_uri: server.uri(),
                    reason: reason.into()
                }
            );
            assert!(!error.to_string().contains("ya29"), "{error}");
        }
    }

    #[tokio::test]
    async fn a_slow_token_server_times_out() {
        let (server, _clock, _) = setup().await;
        let source = TokenSource::new(
            service_account(server.uri()),
            SCOPE,
            client(),
            server.clock.clone(),
        )
        .unwrap()
        .with_request_timeout(Duration::from_millis(200));
        server.set(|b| b.delay = Duration::from_secs(5));
        let error = source.token().await.unwrap_err();
        assert!(
            matches!(&error, TokenError::Unreachable { reason, .. } if reason == "no answer within 0.2 s"),
            "{error:?}"
        );
        server.set(|b| b.delay = Duration::ZERO);
        source.token().await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_token_server_says_why() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}/token", listener.local_addr().unwrap());
        drop(listener);
        let source = TokenSource::new(
            service_account(uri.clone()),
            SCOPE,
            client(),
            TestClock::new(),
        )
        .unwrap();
        let error = source.token().await.unwrap_err();
        let TokenError::Unreachable { token_uri, reason } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(token_uri, &uri);
        assert!(reason.to_lowercase().contains("connect"), "{reason}");
    }

    #[tokio::test]
    async fn state_in_words() {
        let (_server, clock, source) = setup().await;
        assert_eq!(source.state(), "no token yet");
        source.token().await.unwrap();
        assert_eq!(source.state(), "token valid for 60 min");
        clock.advance(Duration::from_secs(6 * 60));
        assert_eq!(source.state(), "token valid for 54 min");
        clock.advance(Duration::from_secs(53 * 60 + 30));
        assert_eq!(source.state(), "token valid for 30 s");
    }

    #[test]
    fn the_source_is_shareable_and_its_future_sendable() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<TokenSource>();
        let source = TokenSource::new(
            service_account("http://127.0.0.1:9/token".into()),
            SCOPE,
            client(),
            TestClock::new(),
        )
        .unwrap();
        send(&source.token());
    }

    /// Well-formed PKCS#1 ASN.1 (a SEQUENCE of three INTEGERs) that is no RSA key: accepted by
    /// the PEM parser, refused only when signing.
    const NOT_AN_RSA_KEY: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nMAkCAQACAQECAQE=\n-----END RSA PRIVATE KEY-----\n";

    #[test]
    fn a_key_that_cannot_sign_fails_at_construction() {
        let mut sa = service_account("http://127.0.0.1:9/token".into());
        sa.private_key = Secret::new(NOT_AN_RSA_KEY);
        let error = TokenSource::new(sa, SCOPE, client(), TestClock::new())
            .err()
            .unwrap();
        assert!(matches!(error, TokenError::Key { .. }), "{error:?}");
    }

    #[test]
    fn nothing_secret_prints() {
        let sa = service_account(crate::config::validate::DEFAULT_TOKEN_URI.into());
        let printed = format!("{sa:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert_eq!(
            format!("{:?}", AccessToken::new("ya29.secret")),
            "AccessToken(*****)"
        );
    }

    fn key_file(change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut file = serde_json::json!({
            "type": "service_account",
            "project_id": "my-project",
            "private_key_id": KEY_ID,
            "private_key": key_pair().0,
            "client_email": EMAIL,
            "client_id": "103958392742638101234",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com"
        });
        change(&mut file);
        serde_json::to_string_pretty(&file).unwrap()
    }

    #[test]
    fn parses_a_key_file() {
        let sa = parse_service_account(&key_file(|_| {})).unwrap();
        assert_eq!(sa.client_email, EMAIL);
        assert_eq!(sa.private_key.expose(), key_pair().0);
        assert_eq!(sa.private_key_id.as_deref(), Some(KEY_ID));
        assert_eq!(sa.token_uri, "https://oauth2.googleapis.com/token");
        assert_eq!(sa.project_id.as_deref(), Some("my-project"));

        let sa = parse_service_account(&key_file(|f| {
            let f = f.as_object_mut().unwrap();
            f.remove("token_uri");
            f.remove("private_key_id");
            f.remove("project_id");
        }))
        .unwrap();
        assert_eq!(sa.token_uri, crate::config::validate::DEFAULT_TOKEN_URI);
        assert_eq!(sa.private_key_id, None);
        assert_eq!(sa.project_id, None);
    }

    #[test]
    fn key_file_errors_name_the_problem_and_never_the_key() {
        let garbled_pem =
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n";
        let cases: Vec<(String, &str)> = vec![
            (
                "{\"type\": ".into(),
                "not JSON: EOF while parsing a value at line 1 column 9",
            ),
            ("[1, 2]".into(), "not a JSON object"),
            (
                "key.json".into(),
                "not JSON: expected value at line 1 column 1",
            ),
            (
                key_file(|f| f["type"] = "authorized_user".into()),
                "\"type\" is \"authorized_user\", expected \"service_account\"",
            ),
            (
                key_file(|f| {
                    f.as_object_mut().unwrap().remove("type");
                }),
                "missing \"type\"",
            ),
            (
                key_file(|f| {
                    f.as_object_mut().unwrap().remove("client_email");
                }),
                "missing \"client_email\"",
            ),
            (
                key_file(|f| f["client_email"] = "".into()),
                "missing \"client_email\"",
            ),
            (
                key_file(|f| {
                    f.as_object_mut().unwrap().remove("private_key");
                }),
                "missing \"private_key\"",
            ),
            (
                key_file(|f| f["client_email"] = 42.into()),
                "\"client_email\" is not a string",
            ),
            (
                key_file(|f| f["private_key"] = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".into()),
                "\"private_key\" is not a PEM RSA private key",
            ),
            (
                key_file(|f| f["private_key"] = garbled_pem.into()),
                "\"private_key\" is not a PEM RSA private key",
            ),
            (
                key_file(|f| f["private_key"] = NOT_AN_RSA_KEY.into()),
                "\"private_key\" is not a PEM RSA private key",
            ),
            (
                key_file(|f| f["token_uri"] = "oauth2.googleapis.com/token".into()),
                "\"token_uri\" \"oauth2.googleapis.com/token\" is not an http(s) URL",
            ),
        ];
        for (json, expected) in cases {
            let error = parse_service_account(&json).unwrap_err();
            assert_eq!(error, expected);
            assert!(
                !error.contains("MII") && !error.contains("bm90") && !error.contains("MAk"),
                "{error}"
            );
        }
    }
}
