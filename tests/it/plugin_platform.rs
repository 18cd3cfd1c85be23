//! The plugin platform from outside: `fail_closed` plugins that are not loaded refuse
//! requests, redaction covers every text a provider receives, and plugins load after the
//! listener is up (with wasmtime's compilation cache making a restart fast).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::mock::MockUpstream;
use switchyard_tests::{require_plugin, TempDir};

use crate::harness::{openai_provider, user, Binary, Gateway};

fn plugin_health<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} on /health: {h}"))
}

fn config(mock: &MockUpstream, dir: &TempDir, entries: Value) -> Value {
    json!({
        "client": {"initial_pool_size": 2},
        "providers": {"openai": openai_provider(&mock.url())},
        "plugins": {"directory": dir.path(), "watch": false, "entries": entries}
    })
}

/// A fail_closed guard whose file is missing, or whose only version does not compile,
/// answers 503 naming it (the provider is never called) and `/health` says so; a
/// fail_open one in the same state is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_plugin_that_is_not_loaded_refuses_with_503() {
    let dir = TempDir::new("closed");
    std::fs::write(dir.path().join("guard.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(
        &mock,
        &dir,
        json!([
            {"name": "optional", "file": "optional.wasm"},
            {"name": "guard", "file": "guard.wasm", "on_error": "fail_closed"}
        ]),
    ))
    .await;
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "openai/gpt-4o", "messages": user("echo:hi"),
                      "fallbacks": ["openai/gpt-4o-mini"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-switchyard-error"], "plugin");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "plugin_unavailable", "{b}");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("plugin guard is configured fail_closed and is not loaded"),
        "{msg}"
    );
    assert_eq!(
        mock.count(),
        0,
        "a request passed a guard that is not loaded"
    );
    let h: Value = serde_json::from_str(&gw.get_text("/health").await).unwrap();
    assert_eq!(h["status"], "degraded");
    let guard = plugin_health(&h, "guard");
    assert_eq!(guard["state"], "failed", "{guard}");
    assert_eq!(guard["blocks_requests"], true, "{guard}");
    assert!(guard["last_error"].as_str().unwrap().contains("compile"));
    let optional = plugin_health(&h, "optional");
    assert_eq!(optional["blocks_requests"], false, "{optional}");

    // Without the broken guard, the missing fail_open plugin is skipped.
    let gw = Gateway::start(config(
        &mock,
        &dir,
        json!([{"name": "optional", "file": "optional.wasm"}]),
    ))
    .await;
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("echo:hi")}))
        .await;
    assert_eq!(s, 200, "{b}");
}

/// Every text a provider receives passes through what PreHooks see, and redact (fail_closed)
/// cleans each: message text and text parts, `name`, tool-call arguments, tool results,
/// the legacy `prompt` and embedding `input`. The mock records what reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_covers_every_text_a_provider_receives() {
    let Some(wasm) = require_plugin("redact") else {
        return;
    };
    let dir = TempDir::new("redact-shapes");
    dir.install(&wasm, "redact.wasm");
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(
        &mock,
        &dir,
        json!([{"name": "redact", "file": "redact.wasm", "on_error": "fail_closed"}]),
    ))
    .await;
    let email = "jane.doe@example.com";
    let call = |args: &str| {
        json!([{"id": "call_1", "type": "function",
                "function": {"name": "send_mail", "arguments": args}}])
    };
    let chat = "/v1/chat/completions";
    let cases = [
        (
            chat,
            "message text",
            json!({"model": "openai/gpt-4o", "messages": user(&format!("mail {email} now"))}),
        ),
        (
            chat,
            "text part",
            json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hello"}, {"type": "text", "text": format!("mail {email}")}]}]}),
        ),
        (
            chat,
            "system message",
            json!({"model": "openai/gpt-4o", "messages": [
            {"role": "system", "content": format!("the user is {email}")}, {"role": "user", "content": "hi"}]}),
        ),
        (
            chat,
            "name",
            json!({"model": "openai/gpt-4o", "messages": [
            {"role": "user", "name": email, "content": "hi"}]}),
        ),
        (
            chat,
            "tool-call arguments",
            json!({"model": "openai/gpt-4o", "messages": [
            {"role": "user", "content": "write to her"},
            {"role": "assistant", "content": null, "tool_calls": call(&json!({"to": email}).to_string())},
            {"role": "tool", "tool_call_id": "call_1", "content": "sent"}]}),
        ),
        (
            chat,
            "tool result",
            json!({"model": "openai/gpt-4o", "messages": [
            {"role": "user", "content": "who is it"},
            {"role": "assistant", "content": null, "tool_calls": call("{}")},
            {"role": "tool", "tool_call_id": "call_1", "content": format!("the owner is {email}")}]}),
        ),
        (
            chat,
            "tool result parts",
            json!({"model": "openai/gpt-4o", "messages": [
            {"role": "user", "content": "who is it"},
            {"role": "assistant", "content": null, "tool_calls": call("{}")},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": format!("owner {email}")}]}]}),
        ),
        (
            "/v1/completions",
            "legacy prompt",
            json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": format!("mail {email}")}),
        ),
        (
            "/v1/completions",
            "prompt list",
            json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": ["hi", format!("mail {email}")]}),
        ),
        (
            "/v1/embeddings",
            "embedding input",
            json!({"model": "openai/text-embedding-3-small", "input": format!("mail {email}")}),
        ),
        (
            "/v1/embeddings",
            "embedding input list",
            json!({"model": "openai/text-embedding-3-small", "input": ["hi", format!("mail {email}")]}),
        ),
    ];
    for (path, what, body) in cases {
        let before = mock.count();
        let r = gw
            .client
            .post(gw.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{what}: {text}");
        assert_eq!(
            mock.count(),
            before + 1,
            "{what}: the provider was not called"
        );
        let sent = mock.received().pop().unwrap().body.to_string();
        assert!(
            !sent.contains(email),
            "{what}: the email reached the provider: {sent}"
        );
        assert!(sent.contains("[REDACTED_EMAIL]"), "{what}: {sent}");
    }
}

/// A Python component takes seconds to compile. The gateway listens at once with the
/// plugin `loading` on /health (fail_closed: 503 naming it meanwhile), serves once it is
/// ready, and a restart with the same component finds the compiled code in wasmtime's
/// cache (`plugins.compile_cache`): it listens in under a second and is ready far sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_plugins_load_after_the_listener_and_the_cache_makes_restarts_fast() {
    let Some(wasm) = require_plugin("word_guard") else {
        return;
    };
    let dir = TempDir::new("startup");
    dir.install(&wasm, "word_guard.wasm");
    let cache = TempDir::new("compile-cache");
    let mock = MockUpstream::start().await;
    let mut cfg = config(
        &mock,
        &dir,
        json!([{"name": "word-guard", "file": "word_guard.wasm", "on_error": "fail_closed",
                "deadline_ms": 200, "memory_limit_mib": 128,
                "config": {"blocked_words": ["forbidden"]}}]),
    );
    cfg["client"]["initial_pool_size"] = json!(1);
    cfg["plugins"]["compile_cache"] = json!(cache.path());
    let client = reqwest::Client::new();

    let mut figures = Vec::new();
    for run in ["cold", "cached"] {
        let t0 = Instant::now();
        let Some(gw) = Binary::start_listening(cfg.clone(), &[], "info").await else {
            return;
        };
        let listen = t0.elapsed();
        let mut seen_loading = false;
        let ready = loop {
            let h: Value = client
                .get(gw.url("/health"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let p = plugin_health(&h, "word-guard").clone();
            if p["state"] == "ready" {
                break t0.elapsed();
            }
            assert_eq!(p["state"], "loading", "{run}: {p}\n{}", gw.log());
            if !seen_loading {
                seen_loading = true;
                assert_eq!(p["blocks_requests"], true, "{p}");
                let r = client
                    .post(gw.url("/v1/chat/completions"))
                    .json(&json!({"model": "openai/gpt-4o", "messages": user("echo:hi")}))
                    .send()
                    .await
                    .unwrap();
                // The load may finish in between; then the request is served.
                if r.status() != 200 {
                    assert_eq!(r.status(), 503);
                    let b: Value = r.json().await.unwrap();
                    let msg = b["error"]["message"].as_str().unwrap();
                    assert!(
                        msg.contains("plugin word-guard") && msg.contains("still loading"),
                        "{msg}"
                    );
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "{run}: not ready:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "openai/gpt-4o", "messages": user("forbidden words")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{run}: the guard does not serve");
        eprintln!("{run} start: listening after {listen:?}, plugin ready after {ready:?}");
        figures.push((listen, ready, seen_loading));
        drop(gw);
    }
    let (cold_listen, cold_ready, cold_loading) = figures[0];
    let (warm_listen, warm_ready, _) = figures[1];
    assert!(
        cold_loading,
        "the cold start never showed the plugin loading"
    );
    assert!(
        cold_listen < Duration::from_secs(3),
        "cold start listened after {cold_listen:?}"
    );
    assert!(
        warm_listen < Duration::from_secs(1),
        "restart listened after {warm_listen:?}"
    );
    assert!(
        warm_ready * 2 < cold_ready,
        "the compile cache did not help: cold {cold_ready:?}, cached {warm_ready:?}"
    );
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_some(),
        "nothing in the compile cache"
    );
}

/// The example plugin written in JavaScript (componentize-js) against the same WIT routes
/// requests by tier: from the body's `metadata`, else from a header; the provider sees the
/// routed model. Its per-call cost is printed from the gateway's own histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_plugin_routes_by_tier() {
    let Some(wasm) = require_plugin("tier_router") else {
        return;
    };
    let dir = TempDir::new("js");
    dir.install(&wasm, "tier_router.wasm");
    let mock = MockUpstream::start().await;
    let mut cfg = config(
        &mock,
        &dir,
        json!([{"name": "tier-router", "file": "tier_router.wasm", "on_error": "fail_closed",
                "deadline_ms": 200, "memory_limit_mib": 128,
                "config": {"routes": {"premium": "gpt-4o", "free": "gpt-4o-mini"}}}]),
    );
    cfg["client"]["initial_pool_size"] = json!(1);
    let gw = Gateway::start(cfg).await;
    let h: Value = serde_json::from_str(&gw.get_text("/health").await).unwrap();
    assert_eq!(plugin_health(&h, "tier-router")["state"], "ready", "{h}");
    let (s, b) = gw
        .chat(
            json!({"model": "openai/any-model", "messages": user("echo:hi"),
                     "metadata": {"tier": "free"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(mock.received().pop().unwrap().body["model"], "gpt-4o-mini");
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-tier", "premium")
        .json(&json!({"model": "openai/any-model", "messages": user("echo:hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.received().pop().unwrap().body["model"], "gpt-4o");
    let n = 50;
    for _ in 0..n {
        let (s, _) = gw
            .chat(json!({"model": "openai/any-model", "messages": user("echo:hi")}))
            .await;
        assert_eq!(s, 200);
    }
    assert_eq!(mock.received().pop().unwrap().body["model"], "any-model");
    let text = gw.get_text("/metrics").await;
    assert!(
        text.contains(
            "switchyard_plugin_tier_router_routed_total{plugin=\"tier-router\",tier=\"free\"} 1"
        ),
        "{text}"
    );
    let sum = crate::harness::metric(
        &text,
        "switchyard_plugin_call_duration_seconds_sum{hook=\"pre\",plugin=\"tier-router\"}",
    );
    let count = crate::harness::metric(
        &text,
        "switchyard_plugin_call_duration_seconds_count{hook=\"pre\",plugin=\"tier-router\"}",
    );
    assert_eq!(count, (n + 2) as f64);
    eprintln!(
        "JavaScript plugin: {:.1} MB, {:.0} µs per pre-hook call (mean of {count})",
        wasm.metadata().unwrap().len() as f64 / 1e6,
        sum / count * 1e6
    );
}
