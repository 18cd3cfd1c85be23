//! Cohere v2: chat plain and streaming, embed, errors, the API key's presence.

use serde_json::{json, Value};

use super::{json, post, sse_events};
use crate::mock::{Behavior, MockUpstream};

const KEY: (&str, &str) = ("authorization", "Bearer co-test-key");

#[tokio::test]
async fn chat_stream_embed_and_errors() {
    let mock = MockUpstream::start().await;
    let chat = format!("{}/v2/chat", mock.url());
    let body = json!({"model": "command-r-plus", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "echo:hello cohere"}]});
    let (status, _, out) = post(&chat, &body, &[KEY]).await;
    assert_eq!(status, 200);
    let v = json(&out);
    assert_eq!(v["message"]["content"][0]["text"], "hello cohere");
    assert_eq!(v["finish_reason"], "COMPLETE");
    assert_eq!(
        mock.received()[0].header("authorization"),
        Some("Bearer co-test-key")
    );

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let (status, headers, out) = post(&chat, &streaming, &[KEY]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = sse_events(&out);
    assert_eq!(events[0].0, "message-start");
    assert_eq!(events.last().unwrap().0, "message-end");
    for (event, data) in &events {
        assert_eq!(serde_json::from_str::<Value>(data).unwrap()["type"], *event);
    }

    mock.push_behavior(Behavior::StreamError {
        after_chunks: 2,
        kind: None,
    });
    let (_, _, out) = post(&chat, &streaming, &[KEY]).await;
    let events = sse_events(&out);
    assert_eq!(events.len(), 3);
    assert!(events[2].1.contains("\"ERROR\""));

    let (status, _, out) = post(&chat, &body, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(json(&out)["message"], "no api key supplied");
    assert_eq!(mock.key_failures(), 1);

    mock.push_behavior(Behavior::Status {
        status: 429,
        body: None,
        retry_after: Some("3".into()),
    });
    let (status, headers, out) = post(&chat, &body, &[KEY]).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3");
    assert!(json(&out)["message"].is_string());

    let (status, _, out) = post(
        &format!("{}/v2/embed", mock.url()),
        &json!({"model": "embed-english-v3.0", "texts": ["a"], "input_type": "search_query", "embedding_types": ["float"]}),
        &[KEY],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&out)["embeddings"]["float"][0]
            .as_array()
            .unwrap()
            .len(),
        8
    );
}
