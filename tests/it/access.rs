//! Who may call, through HTTP: virtual keys (allowed, missing, wrong, forbidden model),
//! requests per minute exact under concurrency, token budgets counted from plain and
//! streamed usage and reset by an injected clock, what plugins see, secrets kept out of
//! every answer and log, and the admin side on its own listener or behind a token.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard::access::ManualClock;
use switchyard::plugins::MemoryKv;
use switchyard::server::{gateway_with, Server};
use switchyard_tests::mock::{Behavior, MockUpstream};
use switchyard_tests::require_plugin;

use crate::harness::{config, metric, openai_provider, sse_events, text_of, user, Binary, Gateway};

const SECRET_A: &str = "vk-team-a-7c41e9b03d5f2a86";
const SECRET_B: &str = "vk-team-b-1f8d2c6a9e07b354";
/// 2026-12-02T15:00:00Z
const T0: u64 = 1_796_223_600_000;

fn keys(extra_a: Value) -> Value {
    let mut a = json!({"name": "team-a", "secret": "env.TEAM_A_KEY",
                       "models": ["openai/gpt-4o-mini", "groq/*"]});
    a.as_object_mut()
        .unwrap()
        .extend(extra_a.as_object().unwrap().clone());
    json!([a, {"name": "team-b", "secret": SECRET_B, "models": ["*"]}])
}

fn cfg(mock: &MockUpstream, extra_a: Value) -> Value {
    json!({
        "client": {"virtual_keys": keys(extra_a)},
        "providers": {"openai": openai_provider(&mock.url()), "groq": openai_provider(&mock.url())}
    })
}

const ENV: &[(&str, &str)] = &[("TEAM_A_KEY", SECRET_A)];

/// A gateway counting limits by `clock`.
async fn start_at(cfg: Value, clock: Arc<ManualClock>) -> Gateway {
    let gw = gateway_with(config(cfg, ENV), Arc::new(MemoryKv::new()), clock)
        .await
        .unwrap();
    let gw = Gateway::from_server(Server::bind_gateway(gw).await.unwrap());
    gw.plugins.wait_loaded().await;
    gw
}

async fn post(
    gw: &Gateway,
    key: Option<(&str, &str)>,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = gw.client.post(gw.url("/v1/chat/completions")).json(&body);
    if let Some((header, value)) = key {
        req = req.header(header, value);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

fn bearer(secret: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {secret}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_let_in_refuse_and_name_the_key() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start_with_env(cfg(&mock, json!({})), ENV).await;
    let chat = |model: &str| json!({"model": model, "messages": user("echo:hi there")});

    let b = bearer(SECRET_A).unwrap();
    let (s, _, body) = post(&gw, Some((b.0, &b.1)), chat("openai/gpt-4o-mini")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "hi there");
    // The Anthropic SDK's header works the same; a `provider/*` pattern allows any model.
    let (s, _, body) = post(
        &gw,
        Some(("x-api-key", SECRET_A)),
        chat("groq/llama-3.1-8b"),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // The provider got the gateway's own key, never the client's.
    assert!(mock
        .received()
        .iter()
        .all(|r| r.headers.iter().all(|(_, v)| !v.contains(SECRET_A))));

    let (s, h, body) = post(&gw, None, chat("openai/gpt-4o-mini")).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "missing_api_key");
    assert_eq!(h["x-switchyard-error"], "client");
    let wrong = format!("{SECRET_A}x");
    let (s, _, body) = post(
        &gw,
        Some(("authorization", &format!("Bearer {wrong}"))),
        chat("openai/gpt-4o-mini"),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(!body.to_string().contains(&wrong));

    let (s, _, body) = post(&gw, Some((b.0, &b.1)), chat("openai/gpt-4o")).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert_eq!(
        body["error"]["message"],
        "key 'team-a' may not use model 'openai/gpt-4o'; it may use: openai/gpt-4o-mini, groq/*"
    );
    // A forbidden fallback is refused before anything is sent.
    let (s, _, body) = post(
        &gw,
        Some((b.0, &b.1)),
        json!({"model": "openai/gpt-4o-mini", "messages": user("x"), "fallbacks": ["openai/o1"]}),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(body["error"]["param"], "fallbacks[0]");
    assert_eq!(mock.count(), 2, "refused requests reached the provider");

    // /v1/models needs a key too, and lists what the key may use.
    let r = gw.client.get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(SECRET_A)
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = r.json::<Value>().await.unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        ["groq/*", "openai/gpt-4o-mini"],
        "openai/* is not team-a's"
    );

    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"switchyard_key_requests_total{key="team-a",outcome="success"}"#
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"switchyard_key_rejections_total{key="team-a",reason="model_not_allowed"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"switchyard_auth_failures_total{reason="missing_key"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"switchyard_auth_failures_total{reason="invalid_key"}"#
        ),
        1.0
    );
    assert!(
        metric(
            &metrics,
            r#"switchyard_key_tokens_total{key="team-a",type="completion"}"#
        ) >= 4.0
    );
    assert!(!metrics.contains(SECRET_A) && !metrics.contains(SECRET_B));
    let health = gw.get_text("/health").await;
    assert!(health.contains(r#""mode":"virtual_keys""#), "{health}");
    assert!(!health.contains(SECRET_A) && !health.contains(SECRET_B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gateway_says_so() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let (s, _, _) = post(
        &gw,
        None,
        json!({"model": "openai/gpt-4o", "messages": user("x")}),
    )
    .await;
    assert_eq!(s, 200);
    let health: Value = serde_json::from_str(&gw.get_text("/health").await).unwrap();
    assert_eq!(health["access"]["mode"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_exact_under_concurrency() {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(20)));
    let clock = Arc::new(ManualClock::at(T0));
    let gw = start_at(cfg(&mock, json!({"requests_per_minute": 7})), clock.clone()).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(SECRET_A)
                .json(&json!({"model": "openai/gpt-4o-mini", "messages": user("x")}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, retry, r.json::<Value>().await.unwrap())
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(body["error"]["code"], "rate_limit_exceeded");
                assert!(body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("key 'team-a' is over its limit of 7 requests per minute"));
                // The whole minute's count fades into the next: 60 s plus 1/7 of a minute.
                assert_eq!(retry.as_deref(), Some("69"), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, limited), (7, 33));
    assert_eq!(mock.count(), 7);
    // Another key has its own count.
    let (s, _, _) = post(
        &gw,
        Some(("x-api-key", SECRET_B)),
        json!({"model": "openai/gpt-4o", "messages": user("x")}),
    )
    .await;
    assert_eq!(s, 200);
    // Two minutes later the key has its 7 again.
    clock.advance(Duration::from_secs(120));
    for _ in 0..7 {
        let (s, _, body) = post(
            &gw,
            Some(("x-api-key", SECRET_A)),
            json!({"model": "openai/gpt-4o-mini", "messages": user("x")}),
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"switchyard_key_rejections_total{key="team-a",reason="requests_per_minute"}"#
        ),
        33.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budget_counts_plain_and_streamed_usage_and_resets() {
    let mock = MockUpstream::start().await;
    let clock = Arc::new(ManualClock::at(T0));
    let gw = start_at(
        cfg(
            &mock,
            json!({"token_budget": {"tokens": 20, "period": "day"}}),
        ),
        clock.clone(),
    )
    .await;
    // The mock counts words: 4 prompt tokens and 4 completion tokens per request.
    let body = |stream: bool| json!({"model": "openai/gpt-4o-mini", "stream": stream, "messages": user("echo:one two three four")});
    let (s, _, b) = post(&gw, Some(("x-api-key", SECRET_A)), body(false)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["usage"]["total_tokens"], 8);
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(SECRET_A)
        .json(&body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(text_of(&sse_events(r).await).trim(), "one two three four");
    // 16 of 20 used: the next may start (and goes over) ...
    let (s, _, b) = post(&gw, Some(("x-api-key", SECRET_A)), body(false)).await;
    assert_eq!(s, 200, "{b}");
    // ... and the one after that is refused before it reaches the provider.
    let before = mock.count();
    let (s, h, b) = post(&gw, Some(("x-api-key", SECRET_A)), body(true)).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"]["code"], "token_budget_exceeded");
    assert_eq!(
        b["error"]["message"],
        "key 'team-a' has used its daily token budget (24 of 20 tokens); it resets at 2026-12-03T00:00:00Z"
    );
    assert_eq!(h["retry-after"], (9 * 3600).to_string().as_str());
    assert_eq!(mock.count(), before);
    // Other keys are not touched by team-a's budget.
    let (s, _, _) = post(&gw, Some(("x-api-key", SECRET_B)), body(false)).await;
    assert_eq!(s, 200);
    // The next day, the budget is whole again.
    clock.advance(Duration::from_secs(9 * 3600));
    let (s, _, b) = post(&gw, Some(("x-api-key", SECRET_A)), body(false)).await;
    assert_eq!(s, 200, "{b}");
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"switchyard_key_tokens_total{key="team-a",type="prompt"}"#
        ),
        16.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"switchyard_key_rejections_total{key="team-a",reason="token_budget"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_refuse_with_retry_after() {
    let mock = MockUpstream::start().await;
    let clock = Arc::new(ManualClock::at(T0));
    let gw = start_at(cfg(&mock, json!({"tokens_per_minute": 10})), clock.clone()).await;
    let body = json!({"model": "openai/gpt-4o-mini", "messages": user("echo:one two three four")});
    let (s, _, _) = post(&gw, Some(("x-api-key", SECRET_A)), body.clone()).await;
    assert_eq!(s, 200);
    let (s, _, _) = post(&gw, Some(("x-api-key", SECRET_A)), body.clone()).await;
    assert_eq!(s, 200, "8 of 10 tokens used: one more may start");
    let (s, h, b) = post(&gw, Some(("x-api-key", SECRET_A)), body.clone()).await;
    assert_eq!(s, 429);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 10 tokens per minute"),
        "{b}"
    );
    let secs: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((60..=120).contains(&secs), "{secs}");
    clock.advance(Duration::from_secs(secs));
    let (s, _, b) = post(&gw, Some(("x-api-key", SECRET_A)), body).await;
    assert_eq!(s, 200, "after Retry-After: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_see_the_key_name_as_client_key() {
    let Some(path) = require_plugin("rate-limit") else {
        return;
    };
    let dir = switchyard_tests::TempDir::new("plugins");
    dir.install(&path, "rate-limit.wasm");
    let mock = MockUpstream::start().await;
    let mut c = cfg(&mock, json!({}));
    c["client"]["initial_pool_size"] = json!(2);
    c["plugins"] = json!({"directory": dir.path(), "watch": false, "entries": [
        {"name": "rate-limit", "file": "rate-limit.wasm", "config": {"rules": [
            {"name": "team-a-only", "match": {"client_key": "team-a"}, "per": "global",
             "capacity": 1, "refill_per_second": 0.001}
        ]}}
    ]});
    let gw = Gateway::start_with_env(c, ENV).await;
    let body = json!({"model": "openai/gpt-4o-mini", "messages": user("x")});
    let (s, _, _) = post(&gw, Some(("x-api-key", SECRET_A)), body.clone()).await;
    assert_eq!(s, 200);
    let (s, _, b) = post(&gw, Some(("x-api-key", SECRET_A)), body.clone()).await;
    assert_eq!(
        s, 429,
        "the plugin's rule for client key 'team-a' applies: {b}"
    );
    for _ in 0..3 {
        let (s, _, _) = post(&gw, Some(("x-api-key", SECRET_B)), body.clone()).await;
        assert_eq!(s, 200, "team-b is not team-a");
    }
    assert!(mock
        .received()
        .iter()
        .all(|r| !r.body.to_string().contains(SECRET_A)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_debug_logs_answers_metrics_and_health() {
    let mock = MockUpstream::start().await;
    let Some(bin) =
        Binary::start(cfg(&mock, json!({"requests_per_minute": 2})), ENV, "debug").await
    else {
        return;
    };
    let client = reqwest::Client::new();
    let mut seen = String::new();
    for (key, model) in [
        (SECRET_A, "openai/gpt-4o-mini"),
        (SECRET_A, "openai/gpt-4o"),
        (SECRET_A, "openai/gpt-4o-mini"),
        (SECRET_A, "openai/gpt-4o-mini"),
        (SECRET_B, "openai/gpt-4o"),
        ("vk-team-a-7c41e9b03d5f2a8", "openai/gpt-4o"),
    ] {
        for stream in [false, true] {
            let r = client
                .post(bin.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": model, "stream": stream, "messages": user("echo:hello")}))
                .send()
                .await
                .unwrap();
            seen.push_str(&format!("{:?}", r.headers()));
            seen.push_str(&r.text().await.unwrap());
        }
    }
    seen.push_str(
        &client
            .get(bin.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    seen.push_str(
        &client
            .get(bin.url("/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        seen.contains("team-a") && seen.contains("rate_limit_exceeded"),
        "{seen}"
    );
    let log = bin.log();
    assert!(log.contains("DEBUG"), "the log is at debug level:\n{log}");
    for secret in [SECRET_A, SECRET_B, "vk-team-a-7c41e9b03d5f2a8"] {
        assert!(!seen.contains(secret), "{secret} in an answer:\n{seen}");
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_serves_the_admin_side_and_the_public_one_does_not() {
    let mock = MockUpstream::start().await;
    let mut c = cfg(&mock, json!({}));
    c["client"]["admin_listen"] = json!("127.0.0.1:0");
    let gw = Gateway::start_with_env(c, ENV).await;
    let admin = gw.admin.expect("admin listener bound");
    let client = &gw.client;
    let r = client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404, "no /metrics on the public listener");
    let r = client.get(gw.url("/ui")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let live: Value = client
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        live,
        json!({"status": "ok"}),
        "the public /health is liveness only"
    );

    let r = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("switchyard_requests_total"));
    let detail: Value = client
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["access"]["mode"], "virtual_keys");
    assert!(detail["providers"].is_array());
    // The API is not served on the admin listener.
    let r = client
        .post(format!("http://{admin}/v1/chat/completions"))
        .bearer_auth(SECRET_A)
        .json(&json!({"model": "openai/gpt-4o-mini", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(mock.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_metrics_and_health_details() {
    let mock = MockUpstream::start().await;
    let mut c = cfg(&mock, json!({}));
    c["client"]["admin_token"] = json!("env.ADMIN_TOKEN");
    let gw = Gateway::start_with_env(
        c,
        &[
            ("TEAM_A_KEY", SECRET_A),
            ("ADMIN_TOKEN", "adm-3b9f0c2e71d84a56e0f1"),
        ],
    )
    .await;
    let client = &gw.client;
    let r = client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_admin_token");
    // A virtual key is not the admin token.
    let r = client
        .get(gw.url("/metrics"))
        .bearer_auth(SECRET_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(gw.url("/metrics"))
        .bearer_auth("adm-3b9f0c2e71d84a56e0f1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let live: Value = client
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live, json!({"status": "ok"}));
    let r = client
        .get(gw.url("/health"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let detail: Value = client
        .get(gw.url("/health"))
        .bearer_auth("adm-3b9f0c2e71d84a56e0f1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(detail["providers"].is_array(), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_admin_side_is_closed_by_default() {
    let mock = MockUpstream::start().await;
    let mut c = config(cfg(&mock, json!({})), ENV);
    c.client.listen = "0.0.0.0:0".parse().unwrap();
    let server = Server::bind(c).await.unwrap();
    let port = server.local_addr().port();
    let gw = Gateway::from_server(server);
    let base = format!("http://127.0.0.1:{port}");
    let r = gw
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client.admin_listen"),
        "{body}"
    );
    let live: Value = gw
        .client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live, json!({"status": "ok"}));
    let r = gw
        .client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(SECRET_A)
        .json(&json!({"model": "openai/gpt-4o-mini", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the API is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_with_a_virtual_key() {
    let Some(python) = switchyard_tests::venv_python() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                ".venv with the openai package is missing: run the test command (cargo xtask test)"
            );
        }
        eprintln!("skipped: no .venv (cargo xtask test creates it)");
        return;
    };
    let mock = MockUpstream::start().await;
    let mut c = cfg(&mock, json!({"requests_per_minute": 3}));
    c["client"]["virtual_keys"][1]["token_budget"] = json!({"tokens": 10, "period": "day"});
    let gw = Gateway::start_with_env(c, ENV).await;
    let script = switchyard_tests::repo_root().join("tests/python/virtual_keys_check.py");
    let base = gw.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([base.as_str(), SECRET_A, SECRET_B])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    for line in [
        "allowed ok",
        "stream ok",
        "wrong key ok",
        "forbidden model ok",
        "rate limit ok",
        "budget ok",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
}
