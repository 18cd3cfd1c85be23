//! The new behaviors on the older paths, and the older behaviors on the new paths.

use std::time::Duration;

use serde_json::json;

use super::{post, sse_events};
use crate::mock::{Behavior, MockUpstream};

#[tokio::test]
async fn openai_and_anthropic_stream_errors() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "gpt-4o", "stream": true,
        "messages": [{"role": "user", "content": "echo:a b c"}]});
    mock.push_behavior(Behavior::StreamError {
        after_chunks: 2,
        kind: None,
    });
    let (_, _, out) = post(&format!("{}/v1/chat/completions", mock.url()), &body, &[]).await;
    let events = sse_events(&out);
    assert_eq!(events.len(), 3);
    assert!(events[2].1.starts_with("{\"error\""));

    mock.push_behavior(Behavior::CorruptFrame { after_chunks: 1 });
    let (_, _, out) = post(&format!("{}/v1/messages", mock.url()), &body, &[]).await;
    let events = sse_events(&out);
    assert_eq!(events.len(), 2);
    assert!(serde_json::from_str::<serde_json::Value>(&events[1].1).is_err());
}

#[tokio::test]
async fn reset_mid_stream_and_mid_body() {
    let mock = MockUpstream::start().await;
    let client = reqwest::Client::new();
    let converse = format!(
        "{}/model/amazon.nova-pro-v1%3A0/converse-stream",
        mock.url()
    );
    let body = json!({"messages": [{"role": "user", "content": [{"text": "echo:a b c"}]}]});
    mock.push_behavior(Behavior::ResetMidStream { after_chunks: 2 });
    let resp = client
        .post(&converse)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "the body must end in an error");

    mock.push_behavior(Behavior::ResetMidStream { after_chunks: 0 });
    let plain = format!("{}/v2/embed", mock.url());
    let resp = client
        .post(&plain)
        .header("authorization", "Bearer k")
        .body(json!({"model": "m", "texts": ["a"]}).to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.is_err());
    // The mock keeps serving.
    let resp = client
        .post(&plain)
        .header("authorization", "Bearer k")
        .body(json!({"model": "m", "texts": ["a"]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn older_behaviors_on_new_paths() {
    let mock = MockUpstream::start().await;
    let client = reqwest::Client::new();
    let url = format!(
        "{}/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        mock.url()
    );
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "echo:a b c"}]}]});

    mock.push_behavior(Behavior::ResetConnection);
    assert!(client
        .post(&url)
        .body(body.to_string())
        .send()
        .await
        .is_err());

    mock.push_behavior(Behavior::MalformedBody);
    let resp = client
        .post(&url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&resp.bytes().await.unwrap()).is_err());

    // Stalled after one chunk: the first chunk arrives, then nothing.
    mock.push_behavior(Behavior::StallStream { after_chunks: 1 });
    let mut resp = client
        .post(&url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let next = tokio::time::timeout(Duration::from_millis(200), resp.chunk()).await;
    assert!(next.is_err(), "the stream must stall");
    drop(resp);

    mock.push_behavior(Behavior::Hang);
    let hung = tokio::time::timeout(
        Duration::from_millis(200),
        client.post(&url).body(body.to_string()).send(),
    )
    .await;
    assert!(hung.is_err());

    mock.push_behavior(Behavior::Delay(Duration::from_millis(50)));
    let started = std::time::Instant::now();
    let resp = client
        .post(&url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
}
