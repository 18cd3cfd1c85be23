//! Queues, keys, retries, fallbacks, timeouts, cancellation and proxies, observed at the
//! mock upstream.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};
use switchyard_tests::proxy::HttpProxy;

use crate::harness::{eventually, metric, openai_provider, user, Gateway};

fn provider(base: &str, extra: Value) -> Value {
    let mut p = openai_provider(base);
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

async fn flood(gw: &Gateway, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_with_503_in_drop_mode() {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(300)));
    let gw = Gateway::start(json!({
        "client": {"drop_excess_requests": true},
        "providers": {"openai": provider(&mock.url(), json!({"concurrency_and_buffer_size": {"concurrency": 2, "buffer_size": 3}}))}
    }))
    .await;
    let statuses = flood(&gw, 12).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let dropped = statuses.iter().filter(|s| **s == 503).count();
    // concurrency + buffer_size = 5 are admitted; the rest are refused at once.
    assert_eq!(ok, 5, "{statuses:?}");
    assert_eq!(dropped, 7, "{statuses:?}");
    assert!(
        mock.max_concurrent() <= 2,
        "concurrency exceeded: {}",
        mock.max_concurrent()
    );
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_dropped_requests_total{provider=\"openai\",reason=\"queue_full\"}"
        ),
        7.0
    );
    let (s, b) = {
        mock.set_default_behavior(Behavior::Delay(Duration::from_millis(300)));
        let g = &gw;
        let all = futures_util::future::join_all(
            (0..8).map(|_| g.chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))),
        )
        .await;
        all.into_iter().find(|(s, _)| *s == 503).unwrap()
    };
    assert_eq!(s, 503);
    assert_eq!(b["error"]["code"], "queue_full");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_waits_in_blocking_mode() {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(100)));
    let gw = Gateway::start(json!({
        "providers": {"openai": provider(&mock.url(), json!({"concurrency_and_buffer_size": {"concurrency": 2, "buffer_size": 3}}))}
    }))
    .await;
    let statuses = flood(&gw, 12).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(mock.count(), 12);
    assert!(mock.max_concurrent() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_weighted_and_filtered_by_model() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"openai": {
        "keys": [
            {"value": "k-heavy", "models": ["gpt-4o"], "weight": 3.0},
            {"value": "k-light", "models": ["gpt-4o"], "weight": 1.0},
            {"value": "k-mini-only", "models": ["gpt-4o-mini"], "weight": 100.0}
        ],
        "network_config": {"base_url": format!("{}/v1", mock.url())}
    }}}))
    .await;
    let n = 400;
    for _ in 0..n {
        let (s, _) = gw
            .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
            .await;
        assert_eq!(s, 200);
    }
    let keys: Vec<String> = mock
        .received()
        .into_iter()
        .filter_map(|r| {
            r.headers
                .into_iter()
                .find(|(k, _)| k == "authorization")
                .map(|(_, v)| v)
        })
        .collect();
    assert!(
        !keys.iter().any(|k| k.ends_with("k-mini-only")),
        "model filter ignored"
    );
    let heavy = keys.iter().filter(|k| k.ends_with("k-heavy")).count() as f64 / n as f64;
    // 400 draws: 0.75 ± 0.09 is > 4 standard deviations wide. The 10,000-draw 2% check is a
    // unit test of the selection itself.
    assert!((heavy - 0.75).abs() < 0.09, "heavy share {heavy}");
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["extra_fields"]["key_index"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_5xx_with_backoff_then_succeeds() {
    let mock = MockUpstream::start().await;
    for _ in 0..2 {
        mock.push_behavior(Behavior::Status {
            status: 503,
            body: None,
            retry_after: None,
        });
    }
    let gw = Gateway::start(
        json!({"providers": {"openai": provider(&mock.url(), json!({"network_config": {
        "base_url": format!("{}/v1", mock.url()), "max_retries": 3,
        "retry_backoff_initial": 100, "retry_backoff_max": 1000}}))}}),
    )
    .await;
    let start = Instant::now();
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    let took = start.elapsed();
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["extra_fields"]["attempts"], 3);
    assert_eq!(mock.count(), 3);
    // Backoffs: attempt 0 in [100, 100] ms, attempt 1 in [100, 200] ms.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_retries_total{model=\"gpt-4o\",provider=\"openai\"}"
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried_and_retries_run_out() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Status {
        status: 400,
        body: None,
        retry_after: None,
    });
    let gw = Gateway::start(
        json!({"providers": {"openai": provider(&mock.url(), json!({"network_config": {
        "base_url": format!("{}/v1", mock.url()), "max_retries": 2,
        "retry_backoff_initial": 10, "retry_backoff_max": 20}}))}}),
    )
    .await;
    let (s, _) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(mock.count(), 1, "a 400 was retried");
    mock.set_default_behavior(Behavior::Status {
        status: 500,
        body: None,
        retry_after: None,
    });
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 500);
    assert_eq!(mock.count(), 4, "1 + 2 retries expected");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after 3 attempts"),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Status {
        status: 429,
        body: None,
        retry_after: Some("1".into()),
    });
    let gw = Gateway::start(
        json!({"providers": {"openai": provider(&mock.url(), json!({"network_config": {
        "base_url": format!("{}/v1", mock.url()), "max_retries": 1,
        "retry_backoff_initial": 10, "retry_backoff_max": 20}}))}}),
    )
    .await;
    let start = Instant::now();
    let (s, _) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(mock.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_second_provider_and_lists_attempts_when_all_fail() {
    let primary = MockUpstream::start().await;
    let secondary = MockUpstream::start().await;
    primary.set_default_behavior(Behavior::Status {
        status: 503,
        body: None,
        retry_after: None,
    });
    let gw = Gateway::start(json!({"providers": {
        "openai": openai_provider(&primary.url()),
        "anthropic": {"keys": [{"value": "sk-ant", "models": [], "weight": 1.0}],
                      "network_config": {"base_url": format!("{}/v1", secondary.url())}}
    }}))
    .await;
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x"),
                     "fallbacks": [{"provider": "anthropic", "model": "claude-3-5-haiku"}]}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["extra_fields"]["provider"], "anthropic");
    assert_eq!(b["extra_fields"]["fallback_index"], 1);
    assert_eq!(primary.count(), 1);
    assert_eq!(secondary.received()[0].path, "/v1/messages");
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_fallbacks_total{from_provider=\"openai\",to_provider=\"anthropic\"}"
        ),
        1.0
    );

    secondary.set_default_behavior(Behavior::Status {
        status: 529,
        body: None,
        retry_after: None,
    });
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x"), "fallbacks": ["anthropic/claude-3-5-haiku"]}))
        .await;
    assert_eq!(s, 529, "{b}");
    let attempts = b["extra_fields"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["provider"], "openai");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[1]["status"], 529);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_gives_504() {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Hang);
    let gw = Gateway::start(
        json!({"providers": {"openai": provider(&mock.url(), json!({"network_config": {
        "base_url": format!("{}/v1", mock.url()), "default_request_timeout_in_seconds": 1}}))}}),
    )
    .await;
    let start = Instant::now();
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 504, "{b}");
    assert_eq!(b["error"]["code"], "upstream_timeout");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_malformed_upstreams_are_errors_not_hangs() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    mock.push_behavior(Behavior::ResetConnection);
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 502, "{b}");
    assert_eq!(b["error"]["code"], "upstream_unreachable");
    mock.push_behavior(Behavior::MalformedBody);
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 502, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream_call() {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Hang);
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let client = gw.client.clone();
    let url = gw.url("/v1/chat/completions");
    let call = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
            .send()
            .await
    });
    assert!(eventually(Duration::from_secs(5), || mock.in_flight() == 1).await);
    call.abort();
    assert!(
        eventually(Duration::from_secs(5), || mock.in_flight() == 0).await,
        "upstream call still open after the client left"
    );
    // The gauge is decremented when the cancelled request's guard drops, which may be a
    // moment after the upstream connection closed: poll it, with a deadline.
    let start = Instant::now();
    let mut metrics = gw.get_text("/metrics").await;
    while metric(&metrics, "switchyard_in_flight{provider=\"openai\"}") != 0.0
        && start.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        metrics = gw.get_text("/metrics").await;
    }
    assert!(
        metrics.contains("switchyard_in_flight{provider=\"openai\"}"),
        "no in-flight gauge for openai: {metrics}"
    );
    assert_eq!(
        metric(&metrics, "switchyard_in_flight{provider=\"openai\"}"),
        0.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_configured_http_proxy() {
    let mock = MockUpstream::start().await;
    let proxy = HttpProxy::start().await;
    let gw = Gateway::start(json!({"providers": {"openai": provider(&mock.url(), json!({
        "proxy_config": {"type": "http", "url": proxy.url()}}))}}))
    .await;
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:via proxy")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "via proxy");
    assert_eq!(proxy.count(), 1);
    assert_eq!(mock.count(), 1);
}
