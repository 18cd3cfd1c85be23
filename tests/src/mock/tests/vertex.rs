//! Vertex AI: Gemini plain and streaming, Claude on Vertex, embeddings, errors, and the
//! bearer tokens of a linked token server (401 after revocation).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{json, post, sse_events};
use crate::mock::{Behavior, MockUpstream};
use crate::token_server::TokenServer;

fn base(mock: &MockUpstream, publisher: &str, model: &str, method: &str) -> String {
    format!(
        "{}/v1/projects/my-proj/locations/us-central1/publishers/{publisher}/models/{model}:{method}",
        mock.url()
    )
}

fn gemini_body(text: &str) -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "tools": [{"functionDeclarations": [{"name": "lookup", "description": "d", "parameters": {"type": "object"}}]}],
        "generationConfig": {"maxOutputTokens": 50, "temperature": 0.2}
    })
}

#[tokio::test]
async fn gemini_plain_stream_and_blocks() {
    let mock = MockUpstream::start().await;
    let url = base(&mock, "google", "gemini-2.0-flash-001", "generateContent");
    let (status, _, body) = post(&url, &gemini_body("echo:hi gemini"), &[]).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "hi gemini"
    );
    assert_eq!(v["modelVersion"], "gemini-2.0-flash-001");
    let r = &mock.received()[0];
    assert_eq!(
        (
            r.project.as_deref(),
            r.location.as_deref(),
            r.model.as_deref()
        ),
        (
            Some("my-proj"),
            Some("us-central1"),
            Some("gemini-2.0-flash-001")
        )
    );

    let (_, _, body) = post(&url, &gemini_body("tool:lookup {\"q\":\"x\"}"), &[]).await;
    let v = json(&body);
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["q"],
        "x"
    );

    let (_, _, body) = post(&url, &gemini_body("unsafe: something"), &[]).await;
    assert_eq!(json(&body)["promptFeedback"]["blockReason"], "SAFETY");

    let stream = format!(
        "{}?alt=sse",
        base(
            &mock,
            "google",
            "gemini-2.0-flash-001",
            "streamGenerateContent"
        )
    );
    let (status, headers, body) = post(&stream, &gemini_body("echo:a b c"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(String::from_utf8_lossy(&body).contains("\r\n\r\n"));
    let chunks: Vec<Value> = sse_events(&body)
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[2]["usageMetadata"]["candidatesTokenCount"], 3);

    // Without alt=sse: one JSON array.
    let array = base(
        &mock,
        "google",
        "gemini-2.0-flash-001",
        "streamGenerateContent",
    );
    let (_, _, body) = post(&array, &gemini_body("echo:a b"), &[]).await;
    assert_eq!(json(&body).as_array().unwrap().len(), 2);

    mock.push_behavior(Behavior::StreamError {
        after_chunks: 1,
        kind: Some("RESOURCE_EXHAUSTED".into()),
    });
    let (_, _, body) = post(&stream, &gemini_body("echo:a b c"), &[]).await;
    let events = sse_events(&body);
    assert_eq!(events.len(), 2);
    let err: Value = serde_json::from_str(&events[1].1).unwrap();
    assert_eq!(err["error"]["code"], 429);
}

#[tokio::test]
async fn claude_on_vertex_embeddings_and_errors() {
    let mock = MockUpstream::start().await;
    let claude = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
        "messages": [{"role": "user", "content": "echo:from claude"}]});
    let url = base(
        &mock,
        "anthropic",
        "claude-3-5-sonnet-v2@20241022",
        "rawPredict",
    );
    let (status, _, body) = post(&url, &claude, &[]).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["content"][0]["text"], "from claude");
    assert_eq!(v["model"], "claude-3-5-sonnet-v2@20241022");

    let stream = base(
        &mock,
        "anthropic",
        "claude-3-5-sonnet-v2@20241022",
        "streamRawPredict",
    );
    let mut streaming = claude.clone();
    streaming["stream"] = json!(true);
    let (_, _, body) = post(&stream, &streaming, &[]).await;
    let events = sse_events(&body);
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events.last().unwrap().0, "message_stop");

    mock.push_behavior(Behavior::StreamError {
        after_chunks: 0,
        kind: None,
    });
    let (_, _, body) = post(&stream, &streaming, &[]).await;
    let events = sse_events(&body);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "error");
    assert!(events[0].1.contains("overloaded_error"));

    let (status, _, _) = post(&url, &json!({"messages": []}), &[]).await;
    assert_eq!(status, 400, "anthropic_version is required");

    mock.push_behavior(Behavior::Status {
        status: 429,
        body: None,
        retry_after: None,
    });
    let (status, _, body) = post(&url, &claude, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(json(&body)["error"]["type"], "rate_limit_error");

    let embed = base(&mock, "google", "text-embedding-005", "predict");
    let (_, _, body) = post(
        &embed,
        &json!({"instances": [{"content": "a"}, {"content": "b"}]}),
        &[],
    )
    .await;
    assert_eq!(json(&body)["predictions"].as_array().unwrap().len(), 2);

    mock.push_behavior(Behavior::Status {
        status: 429,
        body: None,
        retry_after: None,
    });
    let (status, _, body) = post(&embed, &json!({"instances": []}), &[]).await;
    assert_eq!(status, 429);
    assert_eq!(json(&body)["error"]["status"], "RESOURCE_EXHAUSTED");
}

/// Get a token from the token server as the gateway would.
async fn fetch_token(
    server: &TokenServer,
    account: &crate::service_account::ServiceAccountFixture,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
        account.sign_jwt(&account.claims(now))
    );
    let resp = reqwest::Client::new()
        .post(server.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bearer_tokens_of_the_linked_server() {
    let (server, account) = TokenServer::with_account().await;
    let mock = MockUpstream::start().await.with_token_server(&server);
    let url = base(&mock, "google", "gemini-2.0-flash-001", "generateContent");

    let (status, _, body) = post(&url, &gemini_body("hi"), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"]["status"], "UNAUTHENTICATED");

    // A behavior queued before a refused request is kept for the next one.
    mock.push_behavior(Behavior::Status {
        status: 503,
        body: None,
        retry_after: None,
    });
    let token = fetch_token(&server, &account).await;
    let bearer = format!("Bearer {token}");
    let (status, _, _) = post(&url, &gemini_body("hi"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 503);
    let (status, _, _) = post(&url, &gemini_body("hi"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 200);

    server.revoke_all();
    let (status, _, _) = post(&url, &gemini_body("hi"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 401);
    let fresh = format!("Bearer {}", fetch_token(&server, &account).await);
    let (status, _, _) = post(&url, &gemini_body("hi"), &[("authorization", &fresh)]).await;
    assert_eq!(status, 200);
    assert_eq!(mock.bearer_failures(), 2);
    assert_eq!(server.successes(), 2);

    // Expired: a token issued with no lifetime is dead at once.
    server.set_expires_in(0);
    let dead = format!("Bearer {}", fetch_token(&server, &account).await);
    let (status, _, _) = post(&url, &gemini_body("hi"), &[("authorization", &dead)]).await;
    assert_eq!(status, 401);
}
