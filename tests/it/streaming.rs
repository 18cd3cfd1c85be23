//! `stream: true`: SSE end to end, translated from each provider's streaming format.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};

use crate::harness::{metric, openai_provider, sse_events, text_of, user, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_passes_through_with_usage() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "messages": user("echo:one two three"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(text_of(&events).trim(), "one two three");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["extra_fields"]["provider"], "openai");
    // The gateway asked for usage so it can count tokens.
    assert_eq!(
        mock.received()[0].body["stream_options"]["include_usage"],
        true
    );
    let metrics = gw.get_text("/metrics").await;
    assert!(
        metric(
            &metrics,
            "switchyard_tokens_total{model=\"gpt-4o\",provider=\"openai\",type=\"completion\"}"
        ) > 0.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_becomes_openai_chunks() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"anthropic": {
        "keys": [{"value": "sk-ant", "models": [], "weight": 1.0}],
        "network_config": {"base_url": format!("{}/v1", mock.url())}
    }}}))
    .await;
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "anthropic/claude-3-5-haiku", "messages": user("echo:streamed reply"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(text_of(&events).trim(), "streamed reply");
    let parsed: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    assert!(parsed
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(parsed
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert!(parsed
        .iter()
        .any(|c| c["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_ends_with_an_error_frame() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::StallStream { after_chunks: 2 });
    let gw = Gateway::start(json!({"providers": {"openai": {
        "keys": [{"value": "k", "models": [], "weight": 1.0}],
        "network_config": {"base_url": format!("{}/v1", mock.url()), "stream_idle_timeout_in_seconds": 1}
    }}}))
    .await;
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "messages": user("x"), "stream": true}))
        .send()
        .await
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), sse_events(resp))
        .await
        .unwrap();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stalled"),
        "{last}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_before_stream_is_a_json_error() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Status {
        status: 429,
        body: None,
        retry_after: Some("7".into()),
    });
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "messages": user("x"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}
