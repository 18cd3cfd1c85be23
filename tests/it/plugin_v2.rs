//! WIT 0.2.0 plugins through HTTP, in a chain with 0.1.0 ones: upstream header edits (and
//! the refusal of credential headers), response headers, the read-set, and `stream-ended`
//! delivered once per stream, also when the client goes away. The `headers` fixture
//! (plugins/fixtures/headers) is the 0.2.0 plugin; `tagger` is 0.1.0.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};
use switchyard_tests::{require_plugin, TempDir};

use crate::harness::{metric, sse_events, user, Gateway};

/// A gateway with the 0.1.0 `tagger` before the 0.2.0 `headers` fixture, and an upstream
/// header (`x-team`) from the config for the fixture to remove. `headers_on_error` is the
/// fixture's policy.
async fn gateway(mock: &MockUpstream, headers_on_error: &str) -> Option<(Gateway, TempDir)> {
    let dir = TempDir::new("plugins-v2");
    dir.install(&require_plugin("tagger")?, "tagger.wasm");
    dir.install(&require_plugin("headers")?, "headers.wasm");
    let gw = Gateway::start(json!({
        "client": {"initial_pool_size": 2},
        "providers": {"openai": {
            "keys": [{"value": "sk-test-key-0001", "models": [], "weight": 1.0}],
            "network_config": {
                "base_url": format!("{}/v1", mock.url()),
                "extra_headers": {"x-team": "search", "x-keep": "kept"}
            }
        }},
        "plugins": {
            "directory": dir.path(),
            "watch": false,
            "entries": [
                {"name": "tagger", "file": "tagger.wasm", "on_error": "fail_closed",
                 "config": {"post": "tag"}},
                {"name": "headers", "file": "headers.wasm", "on_error": headers_on_error}
            ]
        }
    }))
    .await;
    Some((gw, dir))
}

async fn post(gw: &Gateway, body: Value, fixture: Option<&str>) -> reqwest::Response {
    let mut r = gw.client.post(gw.url("/v1/chat/completions")).json(&body);
    if let Some(f) = fixture {
        r = r.header("x-fixture", f);
    }
    r.send().await.unwrap()
}

/// How many streams ended each way, as the fixture counted them.
async fn ended(gw: &Gateway) -> String {
    let r = post(
        gw,
        json!({"model": "openai/gpt-4o", "messages": user("report")}),
        Some("report"),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.headers()["x-fixture-ended"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v0_1_and_v0_2_plugins_share_a_chain_and_edit_headers() {
    let mock = MockUpstream::start().await;
    let Some((gw, _dir)) = gateway(&mock, "fail_closed").await else {
        return;
    };
    let health = gw.get_text("/health").await;
    assert!(!health.contains("\"failed\""), "{health}");

    let r = post(
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user("echo:hello")}),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let body: Value = r.json().await.unwrap();
    // 0.1.0's tagger still works: its post-hook tagged the answer (its pre-hook the request).
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.ends_with("[A]"), "{body}");
    let sent = mock.received().pop().unwrap();
    assert!(sent.body.to_string().contains("[A]"), "{}", sent.body);
    // 0.2.0's edits reached the provider: set, removed, and the config's other header kept.
    assert_eq!(
        sent.header("x-plugin-set"),
        Some("v2"),
        "{:?}",
        sent.headers
    );
    assert_eq!(sent.header("x-team"), None, "{:?}", sent.headers);
    assert_eq!(sent.header("x-keep"), Some("kept"));
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-test-key-0001")
    );
    // Response headers from both of its hooks reach the client.
    assert_eq!(h["x-plugin-pre"], "v2");
    assert_eq!(h["x-plugin-post"], "v2");
    // It asked for headers only: no body JSON and no messages were built for it.
    assert_eq!(h["x-fixture-saw"], "body=0,messages=0");

    // A short-circuit carries the pre-hook's response headers too.
    assert!(ended(&gw).await.contains("complete=0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_credential_header_is_refused_per_on_error() {
    let mock = MockUpstream::start().await;
    let Some((closed, _d1)) = gateway(&mock, "fail_closed").await else {
        return;
    };
    let r = post(
        &closed,
        json!({"model": "openai/gpt-4o", "messages": user("x")}),
        Some("auth"),
    )
    .await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-switchyard-error"], "plugin");
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("headers") && msg.contains("Authorization"),
        "{msg}"
    );
    assert_eq!(mock.count(), 0, "a refused plugin's request never left");
    let failures = closed.get_text("/metrics").await;
    assert_eq!(
        metric(
            &failures,
            "switchyard_plugin_failures_total{kind=\"guest_error\",plugin=\"headers\"}"
        ),
        1.0,
        "{failures}"
    );
    // The gateway's own response headers are not a plugin's to add either.
    let r = post(
        &closed,
        json!({"model": "openai/gpt-4o", "messages": user("x")}),
        Some("response-auth"),
    )
    .await;
    assert_eq!(r.status(), 500);

    // fail_open: the plugin's answer is dropped, the request goes on with the real key.
    let Some((open, _d2)) = gateway(&mock, "fail_open").await else {
        return;
    };
    let r = post(
        &open,
        json!({"model": "openai/gpt-4o", "messages": user("x")}),
        Some("auth"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-plugin-pre").is_none());
    let sent = mock.received().pop().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-test-key-0001")
    );
    assert_eq!(sent.header("x-plugin-set"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ended_is_told_once_complete_or_client_gone() {
    let mock = MockUpstream::start().await;
    let Some((gw, _dir)) = gateway(&mock, "fail_closed").await else {
        return;
    };
    let stream = json!({"model": "openai/gpt-4o", "messages": user("echo:one two three four"), "stream": true});

    // A normal stream: `complete`, once.
    let r = post(&gw, stream.clone(), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plugin-pre"], "v2");
    let events = sse_events(r).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        ended(&gw).await,
        "complete=1,upstream_error=0,plugin_error=0,client_gone=0"
    );

    // The client reads the first chunk and goes away while the provider stalls.
    mock.push_behavior(Behavior::StallStream { after_chunks: 2 });
    let mut r = post(&gw, stream.clone(), None).await;
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());
    drop(r);
    // The gateway notices when its next write fails or the connection closes: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = ended(&gw).await;
    while !last.contains("client_gone=1") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = ended(&gw).await;
    }
    assert_eq!(
        last,
        "complete=1,upstream_error=0,plugin_error=0,client_gone=1"
    );

    // An upstream error after two content chunks (once the stream is committed) is told
    // as such.
    mock.push_behavior(Behavior::StreamError {
        after_chunks: 3,
        kind: None,
    });
    let r = post(&gw, stream, None).await;
    let _ = sse_events(r).await;
    assert_eq!(
        ended(&gw).await,
        "complete=1,upstream_error=1,plugin_error=0,client_gone=1"
    );
}
