//! Plugin state in Redis (`plugins.kv.backend: "redis"`) against a real `redis-server` on a
//! free port: two gateway processes share one rate limit exactly; a Redis that stops
//! mid-run leaves the requests to the plugin's `on_error` policy, shows on `/health` and
//! comes back by itself; a Redis that never answers does not hold a request past the
//! plugin's deadline. And the in-process store's cap (`max_bytes_per_plugin`) holds in the
//! real binary.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};
use switchyard_tests::redis::{RedisServer, SilentServer};
use switchyard_tests::{require_plugin, TempDir};

use crate::harness::{metric, openai_provider, user, Binary, Gateway};

fn rate_limit_dir() -> Option<TempDir> {
    let wasm = require_plugin("rate-limit")?;
    let dir = TempDir::new("plugins");
    dir.install(&wasm, "rate-limit.wasm");
    Some(dir)
}

/// One provider at `mock`, the rate-limit plugin with `rule`, and `kv` as the store.
fn config(mock: &MockUpstream, dir: &TempDir, entry: Value, kv: Value) -> Value {
    json!({
        "client": {"initial_pool_size": 4},
        "providers": {"openai": openai_provider(&mock.url())},
        "plugins": {
            "directory": dir.path(),
            "watch": false,
            "entries": [entry],
            "kv": kv
        }
    })
}

fn rate_limit(capacity: u32, on_error: &str, deadline_ms: u64) -> Value {
    json!({
        "name": "rate-limit", "file": "rate-limit.wasm",
        "on_error": on_error, "deadline_ms": deadline_ms,
        "config": {"rules": [
            {"name": "shared", "per": "client_key", "capacity": capacity, "refill_per_second": 0.001}
        ]}
    })
}

async fn post(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("client-shared")
        .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn health_of(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Poll `/health` of `base` until `f` holds; panics with the last answer after `limit`.
async fn until_health(base: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    loop {
        let h = health_of(&client, base).await;
        if f(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "/health never got there: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_exact_limit() {
    let (Some(redis), Some(dir)) = (RedisServer::start(), rate_limit_dir()) else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(10)));
    // Generous deadlines: 60 requests race on one bucket through compare-and-swap, each
    // retry a round trip, on two cores shared by two debug gateways and Redis.
    let kv = json!({"backend": "redis", "url": "env.SY_TEST_REDIS_URL", "key_prefix": "sy-shared:",
                    "command_timeout_ms": 2000, "pool_size": 2});
    let cfg = config(&mock, &dir, rate_limit(10, "fail_closed", 10_000), kv);
    let env = [("SY_TEST_REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(a) = Binary::start(cfg.clone(), &env, "info").await else {
        return;
    };
    let Some(b) = Binary::start(cfg, &env, "info").await else {
        return;
    };
    for bin in [&a, &b] {
        let h = until_health(&bin.base, Duration::from_secs(10), |h| {
            h["kv"]["up"] == true
        })
        .await;
        assert_eq!(h["kv"]["backend"], "redis", "{h}");
        assert!(
            !bin.log().contains(&redis.url()),
            "the Redis URL (a secret) reached the log"
        );
    }

    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let client = client.clone();
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        tasks.push(tokio::spawn(async move { post(&client, &base).await }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}\n{}\n{}", a.log(), b.log()),
        }
    }
    assert_eq!((ok, limited), (10, 50), "one bucket across both gateways");
    assert_eq!(mock.count(), 10, "refused requests reached the provider");
    // The bucket lives under the prefix and the plugin's name.
    let keys = redis.command(&["KEYS", "*"]).unwrap();
    assert!(
        keys.contains("sy-shared:rate-limit:bucket/shared/"),
        "keys in Redis: {keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_follows_on_error_and_recovers_by_itself() {
    let (Some(mut redis), Some(dir)) = (RedisServer::start(), rate_limit_dir()) else {
        return;
    };
    let mock = MockUpstream::start().await;
    let kv = json!({"backend": "redis", "url": redis.url(), "key_prefix": "sy-stop:",
                    "connect_timeout_ms": 200, "command_timeout_ms": 200});
    let open = Gateway::start(config(
        &mock,
        &dir,
        rate_limit(1000, "fail_open", 1000),
        kv.clone(),
    ))
    .await;
    let closed = Gateway::start(config(
        &mock,
        &dir,
        rate_limit(1000, "fail_closed", 1000),
        kv,
    ))
    .await;
    let client = reqwest::Client::new();
    for gw in [&open, &closed] {
        until_health(&gw.url(""), Duration::from_secs(10), |h| {
            h["kv"]["up"] == true && h["status"] == "ok"
        })
        .await;
        assert_eq!(post(&client, &gw.url("")).await.0, 200);
    }

    redis.stop();
    // Each gateway keeps serving; the policy decides what a kv failure means.
    for _ in 0..5 {
        let started = Instant::now();
        let (s, b) = post(&client, &open.url("")).await;
        assert_eq!(s, 200, "fail_open lets the request through: {b}");
        let (s, b) = post(&client, &closed.url("")).await;
        assert_eq!(s, 500, "fail_closed refuses: {b}");
        assert!(
            b["error"]["message"].as_str().unwrap_or("").contains("kv"),
            "{b}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a down Redis held requests for {:?}",
            started.elapsed()
        );
    }
    for gw in [&open, &closed] {
        let h = until_health(&gw.url(""), Duration::from_secs(10), |h| {
            h["kv"]["up"] == false
        })
        .await;
        assert_eq!(h["status"], "degraded", "{h}");
        assert!(h["kv"]["last_error"].is_string(), "{h}");
        let m = gw.get_text("/metrics").await;
        assert_eq!(metric(&m, "switchyard_kv_redis_up"), 0.0, "{m}");
        assert!(metric(&m, "switchyard_kv_redis_errors_total") >= 1.0, "{m}");
    }
    let m = closed.get_text("/metrics").await;
    assert!(
        metric(
            &m,
            "switchyard_plugin_failures_total{kind=\"kv_error\",plugin=\"rate-limit\"}"
        ) >= 5.0,
        "{m}"
    );

    // Back on the same port: both reconnect without being told.
    redis.restart();
    for gw in [&open, &closed] {
        until_health(&gw.url(""), Duration::from_secs(20), |h| {
            h["kv"]["up"] == true && h["status"] == "ok"
        })
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = post(&client, &closed.url("")).await;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {s} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&closed.get_text("/metrics").await, "switchyard_kv_redis_up"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_cannot_hold_a_request_past_the_deadline() {
    let Some(dir) = rate_limit_dir() else {
        return;
    };
    let silent = SilentServer::start().await;
    let mock = MockUpstream::start().await;
    // The command timeout is long; the plugin's 100 ms deadline is what must bound the wait.
    let kv = json!({"backend": "redis", "url": silent.url(),
                    "connect_timeout_ms": 5000, "command_timeout_ms": 5000});
    let open = Gateway::start(config(
        &mock,
        &dir,
        rate_limit(10, "fail_open", 100),
        kv.clone(),
    ))
    .await;
    let closed = Gateway::start(config(&mock, &dir, rate_limit(10, "fail_closed", 100), kv)).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (s, b) = post(&client, &open.url("")).await;
        let took = started.elapsed();
        assert_eq!(s, 200, "{b}");
        assert!(took < Duration::from_millis(1500), "held for {took:?}");
        let started = Instant::now();
        let (s, b) = post(&client, &closed.url("")).await;
        let took = started.elapsed();
        assert_eq!(s, 500, "{b}");
        assert!(took < Duration::from_millis(1500), "held for {took:?}");
    }
    let m = closed.get_text("/metrics").await;
    assert!(
        metric(
            &m,
            "switchyard_plugin_failures_total{kind=\"kv_error\",plugin=\"rate-limit\"}"
        ) >= 3.0,
        "{m}"
    );
    let h = until_health(&closed.url(""), Duration::from_secs(10), |h| {
        h["kv"]["up"] == false
    })
    .await;
    assert_eq!(h["status"], "degraded", "{h}");
}

/// The binary builds its in-process store from `plugins.kv.max_bytes_per_plugin`: a small
/// cap evicts buckets (a previous build ignored it and used the 16 MiB default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_honours_max_bytes_per_plugin() {
    let Some(dir) = rate_limit_dir() else {
        return;
    };
    let mock = MockUpstream::start().await;
    let cfg = config(
        &mock,
        &dir,
        rate_limit(5, "fail_open", 1000),
        json!({"max_bytes_per_plugin": 1000}),
    );
    let Some(bin) = Binary::start(cfg, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    // Each client's bucket is ~100 bytes charged: 30 of them cannot fit in 1000.
    for i in 0..30 {
        let r = client
            .post(bin.url("/v1/chat/completions"))
            .bearer_auth(format!("client-{i}"))
            .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = client
        .get(bin.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(
            &m,
            "switchyard_plugin_kv_evictions_total{plugin=\"rate-limit\"}"
        ) >= 10.0,
        "{m}"
    );
    let h = health_of(&client, &bin.base).await;
    assert_eq!(h["kv"]["backend"], "memory", "{h}");
    assert_eq!(h["kv"]["up"], true, "{h}");
}
