//! Graceful shutdown: stop accepting, finish what is in flight, exit 0.

use std::time::Duration;

use serde_json::json;
use switchyard_tests::mock::{Behavior, MockUpstream};

use crate::harness::{eventually, openai_provider, user, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_shutdown() {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(500)));
    let mut gw =
        Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        calls.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    assert!(eventually(Duration::from_secs(5), || mock.in_flight() == 3).await);
    let server = gw.shutdown();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), 200);
    }
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    // No longer accepting.
    assert!(reqwest::get(gw.url("/health")).await.is_err());
}

/// The real binary, SIGTERM, exit status 0 after the in-flight request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(700)));
    let cfg = json!({
        "client": {"shutdown_timeout_in_seconds": 10},
        "providers": {"openai": openai_provider(&mock.url())}
    });
    let Some(mut gw) = crate::harness::Binary::start(cfg, &[], "info").await else {
        return;
    };
    let base = gw.base.clone();
    let client = reqwest::Client::new();
    let call = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .post(format!("{base}/v1/chat/completions"))
                .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    assert!(eventually(Duration::from_secs(5), || mock.in_flight() == 1).await);
    let pid = gw.child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(call.await.unwrap().unwrap(), 200);
    let status = tokio::time::timeout(Duration::from_secs(10), gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
}
