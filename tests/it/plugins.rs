//! Wasm plugins through HTTP: the example plugins (redact, rate-limit, metrics), the fixture
//! that short-circuits, rejects and recovers, the Python plugin, fault isolation and hot
//! reload under load. Components come from the test command's plugin build.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};
use switchyard_tests::{require_plugin, TempDir};

use crate::harness::{metric, openai_provider, sse_events, text_of, user, Gateway};

/// A plugins directory holding `files` (component name, installed file name).
fn plugin_dir(files: &[(&str, &str)]) -> Option<TempDir> {
    let dir = TempDir::new("plugins");
    for (component, file) in files {
        let path = require_plugin(component)?;
        dir.install(&path, file);
    }
    Some(dir)
}

/// A gateway config with one openai provider at `mock` and these plugin entries.
fn config(mock: &MockUpstream, dir: &TempDir, entries: Value, watch: bool) -> Value {
    json!({
        "client": {"initial_pool_size": 4},
        "providers": {"openai": openai_provider(&mock.url())},
        "plugins": {
            "directory": dir.path(),
            "watch": watch,
            "debounce_ms": 20,
            "entries": entries
        }
    })
}

async fn health(gw: &Gateway) -> Value {
    serde_json::from_str(&gw.get_text("/health").await).unwrap()
}

fn plugin_health<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} on /health: {h}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_cleans_requests_responses_and_split_stream_chunks() {
    let Some(dir) = plugin_dir(&[("redact", "redact.wasm")]) else {
        return;
    };
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(
        &mock,
        &dir,
        json!([{"name": "redact", "file": "redact.wasm", "on_error": "fail_closed"}]),
        false,
    ))
    .await;

    // The request is cleaned before it leaves; the echoed answer therefore is clean too.
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user(
            "echo:mail jane.doe@example.com or call +1 415 555 0100, card 4111 1111 1111 1111, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv")}))
        .await;
    assert_eq!(s, 200, "{b}");
    let sent = mock.received().pop().unwrap().body.to_string();
    for secret in [
        "jane.doe@example.com",
        "4111 1111 1111 1111",
        "sk-proj-Ab3dEf6h",
        "555 0100",
    ] {
        assert!(
            !sent.contains(secret),
            "{secret} reached the provider: {sent}"
        );
    }
    assert!(
        sent.contains("[REDACTED_EMAIL]") && sent.contains("[REDACTED_CARD]"),
        "{sent}"
    );
    let answer = b["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("[REDACTED_SECRET]"), "{answer}");
    // A number that fails the Luhn check is not a card.
    let (_, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:order 4111 1111 1111 1112")}))
        .await;
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "order 4111 1111 1111 1112"
    );

    // Responses: the provider's own answer is redacted on the way back.
    mock.push_behavior(Behavior::Normal);
    let mock2 = MockUpstream::start_with(switchyard_tests::mock::MockOptions {
        reply: "write to ops@corp.example or 4111 1111 1111 1111".into(),
        ..Default::default()
    })
    .await;
    let gw2 = Gateway::start(config(
        &mock2,
        &dir,
        json!([{"name": "redact", "file": "redact.wasm"}]),
        false,
    ))
    .await;
    let (_, b) = gw2
        .chat(json!({"model": "openai/gpt-4o", "messages": user("hi")}))
        .await;
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "write to [REDACTED_EMAIL] or [REDACTED_CARD]"
    );

    // Streams: the mock sends one word per chunk, so the card number arrives in four
    // chunks and the email in one; both must be caught.
    let resp = gw2
        .client
        .post(gw2.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "messages": user("hi"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = text_of(&sse_events(resp).await);
    assert_eq!(text, "write to [REDACTED_EMAIL] or [REDACTED_CARD]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_exactly_under_concurrency() {
    let Some(dir) = plugin_dir(&[("rate-limit", "rate-limit.wasm")]) else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(20)));
    let gw = Gateway::start(config(
        &mock,
        &dir,
        json!([{"name": "rate-limit", "file": "rate-limit.wasm", "config": {"rules": [
            {"name": "per-client", "per": "client_key", "capacity": 7, "refill_per_second": 0.01}
        ]}}]),
        false,
    ))
    .await;
    // 60 requests at once from one client: the pooled instances run in parallel, the
    // bucket lives in the shared kv store.
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth("client-one")
                .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = r.json().await.unwrap();
            (status, retry, body)
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                let secs: u64 = retry.expect("429 without Retry-After").parse().unwrap();
                assert!(secs >= 1, "Retry-After {secs}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, limited), (7, 53));
    assert_eq!(mock.count(), 7, "refused requests reached the provider");
    // Another client has its own bucket.
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("client-two")
        .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_plugin_exports_per_provider_and_model() {
    let Some(dir) = plugin_dir(&[("metrics", "metrics.wasm")]) else {
        return;
    };
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(
        &mock,
        &dir,
        json!([{"name": "metrics", "file": "metrics.wasm"}]),
        false,
    ))
    .await;
    for _ in 0..3 {
        let (s, _) = gw
            .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:a b c")}))
            .await;
        assert_eq!(s, 200);
    }
    mock.push_behavior(Behavior::Status {
        status: 400,
        body: None,
        retry_after: None,
    });
    let (s, _) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 400);
    let text = gw.get_text("/metrics").await;
    let plugin_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("switchyard_plugin_") && l.contains("plugin=\"metrics\""))
        .collect();
    assert!(!plugin_lines.is_empty(), "{text}");
    // Every line the plugin exports is labelled with the provider and model it saw.
    let requests: f64 = plugin_lines
        .iter()
        .filter(|l| l.contains("requests") && l.contains("gpt-4o") && l.contains("openai"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(requests, 4.0, "{}", plugin_lines.join("\n"));
    assert!(
        plugin_lines.iter().any(|l| l.contains("token")),
        "{}",
        plugin_lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_short_circuit_reject_and_recover() {
    let Some(dir) = plugin_dir(&[("tagger", "tagger.wasm")]) else {
        return;
    };
    let mock = MockUpstream::start().await;
    let start = |cfg: Value| {
        let mut c = config(
            &mock,
            &dir,
            json!([{"name": "tagger", "file": "tagger.wasm", "config": cfg}]),
            false,
        );
        c["providers"]["openai"]["network_config"]["max_retries"] = json!(0);
        Gateway::start(c)
    };

    // Pre-hook answers: the provider is never called.
    let gw = start(json!({"pre": "respond", "tag": "cached"})).await;
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "cached");
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(mock.count(), 0);
    drop(gw);

    // Pre-hook rejects: the plugin's status and message, marked as a plugin error.
    let gw = start(json!({"pre": "reject", "status": 403, "tag": "policy"})).await;
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-switchyard-error"], "plugin");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "tagger_rejected");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("policy"),
        "{b}"
    );
    assert_eq!(mock.count(), 0);
    drop(gw);

    // Pre-hook changes the request; post-hook changes the response.
    let gw = start(json!({"tag": "T"})).await;
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:hello")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "hello [T] [T]");
    drop(gw);

    // Post-hook turns an upstream error into an answer.
    let gw = start(json!({"pre": "continue", "post": "recover", "tag": "R"})).await;
    mock.push_behavior(Behavior::Status {
        status: 500,
        body: None,
        retry_after: None,
    });
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "recovered by R from 500"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_errors_follow_on_error_policy() {
    let Some(dir) = plugin_dir(&[("tagger", "tagger.wasm")]) else {
        return;
    };
    let mock = MockUpstream::start().await;
    for (policy, expect_ok) in [("fail_open", true), ("fail_closed", false)] {
        let gw = Gateway::start(config(
            &mock,
            &dir,
            json!([{"name": "tagger", "file": "tagger.wasm", "on_error": policy,
                    "config": {"pre": "error", "post": "error"}}]),
            false,
        ))
        .await;
        let r = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "openai/gpt-4o", "messages": user("echo:fine")}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        if expect_ok {
            assert_eq!(status, 200, "{policy}: {b}");
            assert_eq!(b["choices"][0]["message"]["content"], "fine");
        } else {
            assert!(status >= 500, "{policy}: {status} {b}");
            assert!(
                b["error"]["message"].as_str().unwrap().contains("tagger"),
                "{b}"
            );
        }
    }
}

/// Trap, endless loop, endless allocation: each instance is thrown away, the policy decides,
/// and the gateway goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_plugins_are_isolated() {
    let Some(dir) = plugin_dir(&[
        ("trap", "trap.wasm"),
        ("spin", "spin.wasm"),
        ("hog", "hog.wasm"),
    ]) else {
        return;
    };
    let mock = MockUpstream::start().await;
    for fixture in ["trap", "spin", "hog"] {
        for policy in ["fail_open", "fail_closed"] {
            let gw = Gateway::start(config(
                &mock,
                &dir,
                json!([{"name": fixture, "file": format!("{fixture}.wasm"), "on_error": policy,
                        "deadline_ms": 50, "memory_limit_mib": 16}]),
                false,
            ))
            .await;
            for round in 0..3 {
                let started = Instant::now();
                let r = gw
                    .client
                    .post(gw.url("/v1/chat/completions"))
                    .json(&json!({"model": "openai/gpt-4o", "messages": user("echo:still here")}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let b: Value = r.json().await.unwrap();
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{fixture}/{policy}: took {:?}",
                    started.elapsed()
                );
                if policy == "fail_open" {
                    assert_eq!(status, 200, "{fixture}/{policy} round {round}: {b}");
                    assert_eq!(b["choices"][0]["message"]["content"], "still here");
                } else {
                    assert!(status >= 500, "{fixture}/{policy}: {status} {b}");
                    let msg = b["error"]["message"].as_str().unwrap();
                    assert!(msg.contains(fixture), "{fixture}/{policy}: {b}");
                }
            }
            let text = gw.get_text("/metrics").await;
            let failures = metric(&text, "switchyard_plugin_failures_total{kind=");
            assert!(
                failures >= 3.0,
                "{fixture}/{policy}: failures not counted\n{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with("switchyard_plugin_failures_total")
                        && l.contains(&format!("plugin=\"{fixture}\""))),
                "{text}"
            );
            // The gateway itself is fine.
            assert_eq!(health(&gw).await["providers"][0]["available"], true);
        }
    }
}

/// Components that cannot serve (corrupt, another world, `init` fails) are refused at load,
/// shown on `/health` with the reason, and the gateway serves without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloadable_components_are_reported_not_fatal() {
    let Some(dir) = plugin_dir(&[
        ("other-world", "other-world.wasm"),
        ("init-fail", "init-fail.wasm"),
        ("tagger", "tagger.wasm"),
    ]) else {
        return;
    };
    std::fs::write(dir.path().join("corrupt.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(
        &mock,
        &dir,
        json!([
            {"name": "corrupt", "file": "corrupt.wasm"},
            {"name": "other-world", "file": "other-world.wasm"},
            {"name": "init-fail", "file": "init-fail.wasm"},
            {"name": "tagger", "file": "tagger.wasm", "config": {"tag": "ok"}},
            {"name": "bad-config", "file": "tagger.wasm", "config": {"pre": "sideways"}}
        ]),
        false,
    ))
    .await;
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:hi")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "hi [ok] [ok]");
    let h = health(&gw).await;
    for (name, needle) in [
        ("corrupt", "compile"),
        ("other-world", "switchyard"),
        ("init-fail", "init"),
        ("bad-config", "config.pre"),
    ] {
        let p = plugin_health(&h, name);
        assert_eq!(p["state"], "failed", "{name}: {p}");
        let err = p["last_error"].as_str().unwrap_or("");
        assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
    }
    assert_eq!(plugin_health(&h, "tagger")["state"], "ready");
}

/// The file is replaced 50 times while requests flow: none fails, and once the last swap is
/// in, every answer shows the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_loses_nothing() {
    let (Some(a), Some(b)) = (require_plugin("tagger"), require_plugin("tagger-b")) else {
        return;
    };
    let dir = TempDir::new("reload");
    dir.install(&a, "tagger.wasm");
    let mock = MockUpstream::start().await;
    let gw = Arc::new(
        Gateway::start(config(
            &mock,
            &dir,
            json!([{"name": "tagger", "file": "tagger.wasm", "on_error": "fail_closed"}]),
            true,
        ))
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let gw = gw.clone();
        let stop = stop.clone();
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (s, b) = gw
                    .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:v")}))
                    .await;
                let text = b["choices"][0]["message"]["content"].as_str().unwrap_or("");
                if s != 200 || !(text == "v [A] [A]" || text == "v [B] [B]") {
                    failures.push(format!("{s}: {b}"));
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    let versions: [PathBuf; 2] = [b.clone(), a.clone()];
    let mut swaps = 0;
    while swaps < 50 || done.load(Ordering::SeqCst) < 2_000 {
        dir.install(&versions[swaps % 2], "tagger.wasm");
        swaps += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(swaps < 2_000, "requests are not flowing");
    }
    // End on version B.
    if swaps % 2 == 0 {
        dir.install(&b, "tagger.wasm");
        swaps += 1;
    }
    let b_hash = {
        use std::fmt::Write;
        let bytes = std::fs::read(&b).unwrap();
        let digest = sha256(&bytes);
        digest[..8].iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = health(&gw).await;
        if plugin_health(&h, "tagger")["version"] == b_hash.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "version B never loaded: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    let total = done.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total >= 2_000, "only {total} requests");
    for _ in 0..20 {
        let (s, body) = gw
            .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:v")}))
            .await;
        assert_eq!(s, 200);
        assert_eq!(body["choices"][0]["message"]["content"], "v [B] [B]");
    }
    let metrics = gw.get_text("/metrics").await;
    let reloads = metric(
        &metrics,
        "switchyard_plugin_reloads_total{plugin=\"tagger\",result=\"ok\"}",
    );
    assert!(reloads >= 2.0, "reloads {reloads} after {swaps} swaps");
    eprintln!("hot reload: {swaps} swaps, {reloads} reloads, {total} requests, 0 failed");
}

/// SHA-256, for matching `/health`'s version of a component.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The example plugin written in Python (componentize-py) against the same WIT: proof that
/// the interface is language-neutral. It rejects blocked words and counts through imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_guards_words() {
    let Some(dir) = plugin_dir(&[("word_guard", "word_guard.wasm")]) else {
        return;
    };
    let mock = MockUpstream::start().await;
    let mut cfg = config(
        &mock,
        &dir,
        json!([{"name": "word-guard", "file": "word_guard.wasm", "on_error": "fail_closed",
                "deadline_ms": 200, "memory_limit_mib": 128,
                "config": {"blocked_words": ["forbidden"], "tag": "py"}}]),
        false,
    );
    cfg["client"]["initial_pool_size"] = json!(1);
    let gw = Gateway::start(cfg).await;
    let h = health(&gw).await;
    assert_eq!(plugin_health(&h, "word-guard")["state"], "ready", "{h}");
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:all good")}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "all good");
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("this is Forbidden talk")}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "blocked_word");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("forbidden"),
        "{b}"
    );
    assert_eq!(mock.count(), 1, "a blocked request reached the provider");
    let text = gw.get_text("/metrics").await;
    assert!(
        text.lines().any(
            |l| l.starts_with("switchyard_plugin_word_guard_requests_total")
                && l.contains("plugin=\"word-guard\"")
                && l.contains("result=\"blocked\"")
        ),
        "{text}"
    );
}
