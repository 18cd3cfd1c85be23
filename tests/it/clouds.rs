//! AWS Bedrock, Google Vertex AI and Cohere through the gateway, against mocks that speak
//! their wire formats and check their auth independently: the Bedrock mock recomputes every
//! SigV4 signature, the Vertex mock accepts only live tokens of a token server that checks
//! the JWT's RS256 signature with the test's public key.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};
use switchyard_tests::sigv4::AwsExpect;
use switchyard_tests::token_server::{Refusal, TokenServer};

use crate::harness::{eventually, metric, sse_events, text_of, user, Gateway};

pub const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const SESSION: &str = "FwoGZXIvYXdzEJr-session-token-for-tests-0123456789";
pub const COHERE_KEY: &str = "co-test-key-0123456789abcdef";

pub async fn bedrock_mock() -> MockUpstream {
    MockUpstream::start()
        .await
        .with_aws(AwsExpect::new(AKID, SECRET, "us-east-1").with_session_token(SESSION))
}

pub fn bedrock(base: &str) -> Value {
    json!({
        "keys": [{"value": AKID, "models": [], "weight": 1.0}],
        "meta_config": {"region": "us-east-1", "secret_access_key": "env.TEST_AWS_SECRET", "session_token": SESSION},
        "network_config": {"base_url": base}
    })
}

pub fn vertex(base: &str, credentials: &str) -> Value {
    json!({
        "meta_config": {"project_id": "mock-project", "location": "us-central1", "auth_credentials": credentials},
        "network_config": {"base_url": base}
    })
}

pub fn cohere(base: &str) -> Value {
    json!({
        "keys": [{"value": COHERE_KEY, "models": [], "weight": 1.0}],
        "network_config": {"base_url": base}
    })
}

const ENV: &[(&str, &str)] = &[("TEST_AWS_SECRET", SECRET)];

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// A tool call round trip: the model calls `weather`, the client answers, the model uses it.
async fn tool_round_trip(gw: &Gateway, model: &str) {
    let (s, b) = gw
        .chat(json!({"model": model, "tools": weather_tool(),
            "messages": user("tool:weather {\"city\": \"Paris\"}")}))
        .await;
    assert_eq!(s, 200, "{b}");
    let choice = &b["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{b}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let id = call["id"].as_str().unwrap().to_owned();
    let (s, b) = gw
        .chat(
            json!({"model": model, "tools": weather_tool(), "messages": [
                {"role": "user", "content": "tool:weather {\"city\": \"Paris\"}"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": id, "content": "sunny, 24 C"},
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let text = b["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("sunny, 24 C"), "{b}");
}

async fn stream_text(gw: &Gateway, body: Value) -> (Vec<String>, String) {
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let text = text_of(&events);
    (events, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_chat_stream_tools_and_embeddings_signed() {
    let mock = bedrock_mock().await;
    let gw =
        Gateway::start_with_env(json!({"providers": {"bedrock": bedrock(&mock.url())}}), ENV).await;
    let model = "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0";

    let (s, b) = gw.chat(json!({"model": model, "max_tokens": 64,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "echo:hello from bedrock"}]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "hello from bedrock");
    assert_eq!(b["object"], "chat.completion");
    assert!(b["usage"]["total_tokens"].as_u64().unwrap() > 0, "{b}");
    let got = mock.received().pop().unwrap();
    assert_eq!(
        got.path,
        "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    );
    assert_eq!(
        got.model.as_deref(),
        Some("anthropic.claude-3-5-sonnet-20241022-v2:0")
    );
    assert_eq!(got.body["system"], json!([{"text": "be brief"}]));
    assert_eq!(got.body["inferenceConfig"]["maxTokens"], 64);
    assert!(got.header("x-amz-security-token").is_some());

    let (events, text) = stream_text(
        &gw,
        json!({"model": model, "stream": true,
        "messages": user("echo:one two three four")}),
    )
    .await;
    assert_eq!(text.trim(), "one two three four");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|c| c["usage"].is_object())
        .unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(mock
        .received()
        .last()
        .unwrap()
        .path
        .ends_with("/converse-stream"));

    tool_round_trip(&gw, model).await;

    let r = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "bedrock/amazon.titan-embed-text-v2:0", "input": "embed me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["object"], "list");
    assert!(!e["data"][0]["embedding"].as_array().unwrap().is_empty());
    assert_eq!(mock.received().pop().unwrap().body["inputText"], "embed me");
    // Every request above was signed, and the mock's own computation agreed.
    assert_eq!(mock.sigv4_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_errors_exceptions_and_bad_signatures() {
    let mock = bedrock_mock().await;
    let mut p = bedrock(&mock.url());
    p["network_config"]["max_retries"] = json!(1);
    p["network_config"]["retry_backoff_initial"] = json!(1);
    p["network_config"]["retry_backoff_max"] = json!(2);
    let gw = Gateway::start_with_env(json!({"providers": {"bedrock": p}}), ENV).await;
    let model = "bedrock/meta.llama3-1-70b-instruct-v1:0";

    // Throttled once, then served: retried like any 429.
    mock.push_behavior(Behavior::Error {
        status: 429,
        kind: "ThrottlingException".into(),
    });
    let (s, b) = gw
        .chat(json!({"model": model, "messages": user("echo:after throttle")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["extra_fields"]["attempts"], 2);

    // Validation errors are the client's, kept as Bedrock said them, not retried.
    mock.push_behavior(Behavior::Error {
        status: 400,
        kind: "ValidationException".into(),
    });
    let n = mock.count();
    let (s, b) = gw
        .chat(json!({"model": model, "messages": user("x")}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["type"], "ValidationException");
    assert_eq!(mock.count(), n + 1);

    // An exception inside the stream before any content is retried like an HTTP error.
    mock.push_behavior(Behavior::StreamError {
        after_chunks: 0,
        kind: Some("throttlingException".into()),
    });
    let (_, text) = stream_text(
        &gw,
        json!({"model": model, "stream": true, "messages": user("echo:second try")}),
    )
    .await;
    assert_eq!(text.trim(), "second try");

    // A corrupted frame after content is a stream error, never garbage passed on.
    mock.push_behavior(Behavior::CorruptFrame { after_chunks: 3 });
    mock.push_behavior(Behavior::CorruptFrame { after_chunks: 3 });
    let (events, _) = stream_text(
        &gw,
        json!({"model": model, "stream": true, "messages": user("echo:a b c d e f g")}),
    )
    .await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("CRC"),
        "{last}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert_eq!(mock.sigv4_failures(), 0);

    // The wrong secret: the mock's recomputed signature differs, and the answer says so
    // without a trace of either secret.
    let wrong = Gateway::start_with_env(
        json!({"providers": {"bedrock": bedrock(&mock.url())}}),
        &[("TEST_AWS_SECRET", "not-the-right-secret-key-0000000000000")],
    )
    .await;
    let (s, b) = wrong
        .chat(json!({"model": model, "messages": user("x")}))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["type"], "InvalidSignatureException");
    assert!(mock.sigv4_failures() >= 1);
    let text = b.to_string();
    assert!(
        !text.contains("not-the-right-secret") && !text.contains(SECRET),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_gemini_and_claude_with_one_token_for_many_calls() {
    let (tokens, account) = TokenServer::with_account().await;
    let mock = MockUpstream::start().await.with_token_server(&tokens);
    let gw =
        Gateway::start(json!({"providers": {"vertex": vertex(&mock.url(), &account.json)}})).await;

    let calls = (0..100).map(|i| {
        gw.chat(json!({"model": "vertex/gemini-2.0-flash", "messages": user(&format!("echo:call {i}"))}))
    });
    for (s, b) in futures_util::future::join_all(calls).await {
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(tokens.requests(), 1, "100 calls share one token");
    let got = mock.received().pop().unwrap();
    assert_eq!(got.project.as_deref(), Some("mock-project"));
    assert_eq!(got.location.as_deref(), Some("us-central1"));
    assert!(got
        .path
        .ends_with("/publishers/google/models/gemini-2.0-flash:generateContent"));
    let claims = tokens.accepted_claims().pop().unwrap();
    assert_eq!(claims["iss"], account.client_email);

    let (_, text) = stream_text(
        &gw,
        json!({"model": "vertex/gemini-2.0-flash", "stream": true,
        "messages": user("echo:streamed from gemini")}),
    )
    .await;
    assert_eq!(text.trim(), "streamed from gemini");
    tool_round_trip(&gw, "vertex/gemini-2.0-flash").await;

    // Claude on Vertex: Anthropic's format behind rawPredict.
    let (s, b) = gw.chat(json!({"model": "vertex/claude-3-5-haiku@20241022", "messages": user("echo:claude here")})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "claude here");
    let got = mock.received().pop().unwrap();
    assert!(
        got.path.contains("/publishers/anthropic/models/"),
        "{}",
        got.path
    );
    assert!(got.path.ends_with(":rawPredict"));
    assert_eq!(got.body["anthropic_version"], "vertex-2023-10-16");
    let (_, text) = stream_text(
        &gw,
        json!({"model": "vertex/claude-3-5-haiku@20241022", "stream": true,
        "messages": user("echo:claude streams")}),
    )
    .await;
    assert_eq!(text.trim(), "claude streams");

    let r = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "vertex/text-embedding-005", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["data"].as_array().unwrap().len(), 2);

    // A safety block is a clear error with Google's reason.
    let (s, b) = gw
        .chat(json!({"model": "vertex/gemini-2.0-flash", "messages": user("unsafe: how to")}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("SAFETY"),
        "{b}"
    );
    assert_eq!(tokens.requests(), 1);
    assert_eq!(mock.bearer_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_tokens_renew_near_expiry_on_401_and_refusals_are_clear() {
    let (tokens, account) = TokenServer::with_account().await;
    // A two-second token is renewed at half its life.
    tokens.set_expires_in(2);
    let mock = MockUpstream::start().await.with_token_server(&tokens);
    let gw =
        Gateway::start(json!({"providers": {"vertex": vertex(&mock.url(), &account.json)}})).await;
    let (s, _) = gw
        .chat(json!({"model": "vertex/gemini-2.0-flash", "messages": user("x")}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(tokens.requests(), 1);
    let started = std::time::Instant::now();
    let mut renewed = false;
    while started.elapsed() < Duration::from_secs(10) {
        let (s, b) = gw
            .chat(json!({"model": "vertex/gemini-2.0-flash", "messages": user("x")}))
            .await;
        assert_eq!(s, 200, "{b}");
        if tokens.requests() == 2 {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the token was not renewed before it expired");
    assert_eq!(
        mock.bearer_failures(),
        0,
        "a request went out with an expired token"
    );

    // The provider revokes the token: one 401, one renewal, one retry, and the client sees
    // a success.
    tokens.set_expires_in(3600);
    let before = tokens.requests();
    tokens.revoke_all();
    let (s, b) = gw
        .chat(json!({"model": "vertex/gemini-2.0-flash", "messages": user("echo:after revoke")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(tokens.requests(), before + 1);
    assert_eq!(mock.bearer_failures(), 1);

    // The token server refuses: an error naming the provider and Google's reason.
    tokens.revoke_all();
    tokens.refuse_all(Refusal::InvalidGrant);
    let (s, b) = gw
        .chat(json!({"model": "vertex/gemini-2.0-flash", "messages": user("x")}))
        .await;
    assert_eq!(s, 502, "{b}");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("vertex") && msg.contains("invalid_grant"),
        "{msg}"
    );
    assert!(!b.to_string().contains("BEGIN PRIVATE KEY"));
    let health: Value = gw
        .client
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state = health["providers"][0]["credentials"][0].as_str().unwrap();
    assert!(
        state.contains("Google OAuth2") && state.contains("failed"),
        "{state}"
    );
    tokens.stop_refusing();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohere_chat_stream_tools_and_embed() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"cohere": cohere(&mock.url())}})).await;
    let (s, b) = gw
        .chat(json!({"model": "cohere/command-r-plus", "messages": user("echo:hello cohere")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "hello cohere");
    let got = mock.received().pop().unwrap();
    assert_eq!(got.path, "/v2/chat");
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {COHERE_KEY}").as_str())
    );
    // Cohere's `tokens` count, not its `billed_units` (the mock makes them differ).
    let billed = got.body["messages"].as_array().unwrap().len();
    assert!(billed > 0);

    let (events, text) = stream_text(
        &gw,
        json!({"model": "cohere/command-r-plus", "stream": true,
        "messages": user("echo:streamed by cohere")}),
    )
    .await;
    assert_eq!(text.trim(), "streamed by cohere");
    assert_eq!(events.last().unwrap(), "[DONE]");
    tool_round_trip(&gw, "cohere/command-r-plus").await;

    let r = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "cohere/embed-english-v3.0", "input": ["x", "y", "z"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["data"].as_array().unwrap().len(), 3);
    assert_eq!(
        mock.received().pop().unwrap().body["input_type"],
        "search_document"
    );
    assert_eq!(mock.key_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_throttled_falls_back_to_vertex() {
    let aws = bedrock_mock().await;
    aws.set_default_behavior(Behavior::Error {
        status: 429,
        kind: "ThrottlingException".into(),
    });
    let (tokens, account) = TokenServer::with_account().await;
    let gcp = MockUpstream::start().await.with_token_server(&tokens);
    let gw = Gateway::start_with_env(
        json!({"providers": {"bedrock": bedrock(&aws.url()), "vertex": vertex(&gcp.url(), &account.json)}}),
        ENV,
    )
    .await;
    let (s, b) = gw
        .chat(
            json!({"model": "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0",
            "fallbacks": ["vertex/gemini-2.0-flash"], "messages": user("echo:served by vertex")}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "served by vertex");
    assert_eq!(b["extra_fields"]["provider"], "vertex");
    assert_eq!(b["extra_fields"]["fallback_index"], 1);
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_fallbacks_total{from_provider=\"bedrock\",to_provider=\"vertex\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cloud_secret_leaks_and_health_says_credential_state() {
    let aws = bedrock_mock().await;
    let (tokens, account) = TokenServer::with_account().await;
    let gcp = MockUpstream::start().await.with_token_server(&tokens);
    let co = MockUpstream::start().await;
    let gw = Gateway::start_with_env(
        json!({"providers": {"bedrock": bedrock(&aws.url()), "vertex": vertex(&gcp.url(), &account.json),
               "cohere": cohere(&co.url())}}),
        ENV,
    )
    .await;
    let mut seen = String::new();
    for (model, mock) in [
        ("bedrock/amazon.nova-pro-v1:0", &aws),
        ("vertex/gemini-2.0-flash", &gcp),
        ("cohere/command-r", &co),
    ] {
        let (s, b) = gw
            .chat(json!({"model": model, "messages": user("x")}))
            .await;
        assert_eq!(s, 200, "{model}: {b}");
        seen.push_str(&b.to_string());
        // Errors too: the provider refusing the request.
        mock.push_behavior(Behavior::Status {
            status: 403,
            body: None,
            retry_after: None,
        });
        let (s, b) = gw
            .chat(json!({"model": model, "messages": user("x")}))
            .await;
        assert_eq!(s, 403, "{model}: {b}");
        seen.push_str(&b.to_string());
    }
    assert!(eventually(Duration::from_secs(5), || !tokens.issued().is_empty()).await);
    let health = gw.get_text("/health").await;
    let metrics = gw.get_text("/metrics").await;
    seen.push_str(&health);
    seen.push_str(&metrics);
    let issued: Vec<String> = tokens
        .issued()
        .into_iter()
        .map(|t| t.access_token)
        .collect();
    for secret in [SECRET, SESSION, COHERE_KEY, "BEGIN PRIVATE KEY"]
        .into_iter()
        .chain(issued.iter().map(String::as_str))
    {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    let h: Value = serde_json::from_str(&health).unwrap();
    let states: Vec<String> = h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["credentials"][0].as_str().unwrap().to_owned())
        .collect();
    assert!(
        states[0].starts_with("AWS SigV4, access key ****MPLE, region us-east-1"),
        "{states:?}"
    );
    assert!(
        states[1].starts_with("Google OAuth2: token valid for"),
        "{states:?}"
    );
    assert_eq!(states[2], "static key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cloud_secret_in_the_log_even_at_trace() {
    let aws = bedrock_mock().await;
    let (tokens, account) = TokenServer::with_account().await;
    let gcp = MockUpstream::start().await.with_token_server(&tokens);
    let co = MockUpstream::start().await;
    let Some(gw) = crate::harness::Binary::start(
        json!({"providers": {"bedrock": bedrock(&aws.url()), "vertex": vertex(&gcp.url(), &account.json),
               "cohere": cohere(&co.url())}}),
        ENV,
        "trace,wasmtime=warn,cranelift=warn",
    )
    .await
    else {
        return;
    };
    let client = reqwest::Client::new();
    for (model, mock) in [
        ("bedrock/amazon.nova-pro-v1:0", &aws),
        ("vertex/gemini-2.0-flash", &gcp),
        ("cohere/command-r", &co),
    ] {
        mock.push_behavior(Behavior::Status {
            status: 500,
            body: None,
            retry_after: None,
        });
        for stream in [false, true] {
            let r = client
                .post(gw.url("/v1/chat/completions"))
                .json(&json!({"model": model, "stream": stream, "messages": user("x")}))
                .send()
                .await
                .unwrap();
            let _ = r.bytes().await;
        }
    }
    tokens.revoke_all();
    let _ = client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "vertex/gemini-2.0-flash", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    let log = gw.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "nothing logged at trace:\n{log}"
    );
    let issued: Vec<String> = tokens
        .issued()
        .into_iter()
        .map(|t| t.access_token)
        .collect();
    assert!(issued.len() >= 2);
    for secret in [SECRET, SESSION, COHERE_KEY, "BEGIN PRIVATE KEY"]
        .into_iter()
        .chain(issued.iter().map(String::as_str))
    {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}
