//! Config reload without a restart, on the real binary: a changed `config.json` (and SIGHUP)
//! applies providers, keys and queue sizes; requests in flight and queued finish on the
//! config they started with; an invalid file changes nothing and says why.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};

use crate::harness::{user, Binary};

fn provider(mock: &MockUpstream, key: &str, concurrency: usize) -> Value {
    json!({
        "keys": [{"value": key, "models": [], "weight": 1.0}],
        "network_config": {"base_url": format!("{}/v1", mock.url()), "max_retries": 0},
        "concurrency_and_buffer_size": {"concurrency": concurrency, "buffer_size": 10}
    })
}

/// Write `cfg` (keeping the port the binary listens on) over the binary's config file, by
/// rename as deployment tools do.
fn rewrite(bin: &Binary, mut cfg: Value) {
    let text = std::fs::read_to_string(&bin.config).unwrap();
    let old: Value = serde_json::from_str(&text).unwrap();
    cfg["client"]["listen"] = old["client"]["listen"].clone();
    let tmp = bin.config.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    std::fs::rename(&tmp, &bin.config).unwrap();
}

async fn health(client: &reqwest::Client, bin: &Binary) -> Value {
    client
        .get(bin.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait until `/health` satisfies `f`; panics with the last answer after `limit`.
async fn until(client: &reqwest::Client, bin: &Binary, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = health(client, bin).await;
        if f(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "never reached: {h}\n{}",
            bin.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn chat(client: &reqwest::Client, bin: &Binary, text: &str) -> (u16, Value) {
    let r = client
        .post(bin.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "messages": user(text)}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_without_a_restart() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    a.set_default_behavior(Behavior::Delay(Duration::from_millis(700)));
    let first = json!({"providers": {"openai": provider(&a, "sk-first-key-0001", 1)}});
    let Some(mut bin) = Binary::start(first, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    let h = health(&client, &bin).await;
    assert_eq!(h["config"]["generation"], 1, "{h}");

    // Four requests on the old config: one at the upstream, three queued (concurrency 1).
    let old_calls: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            let url = bin.url("/v1/chat/completions");
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .json(&json!({"model": "openai/gpt-4o", "messages": user(&format!("echo:old {i}"))}))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    until(&client, &bin, |h| {
        h["providers"][0]["queue_depth"].as_u64() == Some(3)
    })
    .await;

    // A new upstream, a new key and a bigger queue.
    rewrite(
        &bin,
        json!({"providers": {"openai": provider(&b, "sk-second-key-0002", 4)}}),
    );
    let h = until(&client, &bin, |h| h["config"]["generation"] == 2).await;
    let last = &h["config"]["last_reload"];
    assert_eq!(last["applied"], true, "{h}");
    assert_eq!(last["trigger"], "file changed", "{h}");
    assert!(
        last["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "providers.openai: changed"),
        "{h}"
    );
    assert_eq!(h["providers"][0]["concurrency"], 4, "{h}");
    let (s, body) = chat(&client, &bin, "echo:new").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(b.count(), 1);
    let got = &b.received()[0];
    assert_eq!(
        got.header("authorization"),
        Some("Bearer sk-second-key-0002")
    );
    // The old requests were neither dropped nor moved: all four answered by the old upstream.
    for c in old_calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(a.count(), 4);
    assert!(a
        .received()
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer sk-first-key-0001")));

    // An invalid file changes nothing, and says what is wrong where.
    rewrite(
        &bin,
        json!({"providers": {"openai": {
            "keys": [{"value": "sk-third", "models": [], "weight": 1.0}],
            "network_config": {"base_ulr": "http://127.0.0.1:9/v1"}
        }}}),
    );
    let h = until(&client, &bin, |h| {
        h["config"]["last_reload"]["applied"] == false
    })
    .await;
    assert_eq!(h["config"]["generation"], 2, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    let problems = h["config"]["last_reload"]["problems"].to_string();
    assert!(
        problems.contains("providers.openai.network_config") && problems.contains("base_ulr"),
        "{problems}"
    );
    assert!(!problems.contains("sk-third"), "{problems}");
    let (s, _) = chat(&client, &bin, "echo:still served").await;
    assert_eq!(s, 200);
    assert_eq!(b.count(), 2, "the running config keeps serving");
    assert!(bin.log().contains("config reload refused"), "{}", bin.log());

    // Fixed again, then SIGHUP reloads the same file once more.
    rewrite(
        &bin,
        json!({"providers": {"openai": provider(&a, "sk-first-key-0001", 2)}}),
    );
    a.set_default_behavior(Behavior::Normal);
    until(&client, &bin, |h| h["config"]["generation"] == 3).await;
    let pid = bin.child.id().unwrap().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    let h = until(&client, &bin, |h| h["config"]["generation"] == 4).await;
    assert_eq!(h["config"]["last_reload"]["trigger"], "SIGHUP", "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    let (s, _) = chat(&client, &bin, "echo:back").await;
    assert_eq!(s, 200);
    assert_eq!(a.count(), 5);
    // The process is still the one started at the beginning.
    assert!(bin.child.try_wait().unwrap().is_none());
}

/// The rate-limit plugin's entry with `rule` (a name and a capacity) and `extra` fields.
fn rate_limit_config(
    mock: &MockUpstream,
    dir: &switchyard_tests::TempDir,
    rule: (&str, u32),
    extra: Value,
) -> Value {
    let mut entry = json!({
        "name": "rate-limit", "file": "rate-limit.wasm", "deadline_ms": 1000,
        "config": {"rules": [
            {"name": rule.0, "per": "client_key", "capacity": rule.1, "refill_per_second": 0.001}
        ]}
    });
    for (k, v) in extra.as_object().unwrap() {
        entry[k] = v.clone();
    }
    json!({
        "client": {"initial_pool_size": 2},
        "providers": {"openai": provider(mock, "sk-plugin-key-0001", 4)},
        "plugins": {"directory": dir.path(), "watch": false, "entries": [entry]}
    })
}

fn plugin<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no plugin {name}: {h}"))
}

fn has_note(h: &Value, note: &str) -> bool {
    h["config"]["last_reload"]["notes"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n == note))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_entries_apply_without_a_restart() {
    let Some(wasm) = switchyard_tests::require_plugin("rate-limit") else {
        return;
    };
    let dir = switchyard_tests::TempDir::new("plugins");
    dir.install(&wasm, "rate-limit.wasm");
    let mock = MockUpstream::start().await;
    let first = rate_limit_config(&mock, &dir, ("first", 2), json!({}));
    let Some(bin) = Binary::start(first, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    let statuses = |n: usize| {
        let client = client.clone();
        let bin_url = bin.url("/v1/chat/completions");
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                let r = client
                    .post(&bin_url)
                    .json(&json!({"model": "openai/gpt-4o", "messages": user("x")}))
                    .send()
                    .await
                    .unwrap();
                out.push(r.status().as_u16());
            }
            out
        }
    };
    assert_eq!(statuses(3).await, [200, 200, 429]);

    // Disabled by a reload: requests pass, the plugin shows as disabled.
    rewrite(
        &bin,
        rate_limit_config(&mock, &dir, ("first", 2), json!({"enabled": false})),
    );
    let h = until(&client, &bin, |h| h["config"]["generation"] == 2).await;
    assert!(has_note(&h, "plugins.entries.rate-limit: changed"), "{h}");
    assert_eq!(plugin(&h, "rate-limit")["state"], "disabled", "{h}");
    assert_eq!(statuses(3).await, [200, 200, 200]);

    // Enabled again with another config and policy: init sees the new config (a new rule,
    // capacity 1), /health the new policy.
    rewrite(
        &bin,
        rate_limit_config(
            &mock,
            &dir,
            ("second", 1),
            json!({"on_error": "fail_closed", "order": 5}),
        ),
    );
    let h = until(&client, &bin, |h| h["config"]["generation"] == 3).await;
    let p = plugin(&h, "rate-limit");
    assert_eq!(p["state"], "ready", "{h}");
    assert_eq!(p["on_error"], "fail_closed", "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(statuses(2).await, [200, 429]);

    // The key-value backend waits for a restart, and says so.
    let mut cfg = rate_limit_config(
        &mock,
        &dir,
        ("second", 1),
        json!({"on_error": "fail_closed", "order": 5}),
    );
    cfg["plugins"]["kv"] = json!({"backend": "redis", "url": "redis://127.0.0.1:9"});
    rewrite(&bin, cfg);
    let h = until(&client, &bin, |h| h["config"]["generation"] == 4).await;
    assert!(
        has_note(
            &h,
            "plugins.kv: backend settings changed, apply at the next restart (the store keeps its state and connections)"
        ),
        "{h}"
    );
    assert_eq!(h["kv"]["backend"], "memory", "{h}");
    assert_eq!(
        statuses(1).await,
        [429],
        "the bucket lives on in the same store"
    );
}
