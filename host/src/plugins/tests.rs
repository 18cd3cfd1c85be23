//! Tests of the plugin facade: WIT conversions always; real components when they exist
//! (`plugins/build/redact.wasm`, or any component at `$SWITCHYARD_TEST_PLUGIN` built against
//! the test contract described in `e2e_test_plugin`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::bindings::{v1 as bindings, wit, Reads};
use super::*;
use crate::config::{OnError, PluginEntry, PluginsConfig};
use crate::schema::{RequestKind, StreamChunk, Target, UnifiedRequest, UnifiedResponse};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn ctx() -> HookContext {
    HookContext {
        request_id: "req-1".into(),
        client_key: "ck-0123456789abcdef".into(),
        headers: vec![("x-team".to_owned(), "a".to_owned())].into(),
        received_at_ms: 1,
        attempt: 0,
    }
}

fn chat(body: Value) -> UnifiedRequest {
    UnifiedRequest {
        kind: RequestKind::Chat,
        target: Target {
            provider: "openai".into(),
            model: "gpt-4o".into(),
        },
        stream: false,
        body: obj(body),
        ingress: Default::default(),
    }
}

#[test]
fn request_round_trip_applies_only_changes() {
    let mut req = chat(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [
                {"type": "text", "text": "mail a@b.c"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "now"}
            ]}
        ],
        "max_completion_tokens": 10,
        "temperature": 0.5,
        "metadata": {"team": "a", "n": 3},
        "user": "u1"
    }));
    let body = serde_json::to_string(&req.body).unwrap();
    let sent = bindings::request_to_wit(&ctx(), &req, body, Reads::ALL);
    assert_eq!(sent.messages[1].text, "mail a@b.c\nnow");
    assert_eq!(sent.params.max_tokens, Some(10));
    assert_eq!(sent.params.user.as_deref(), Some("u1"));
    assert!(sent.metadata.contains(&("n".to_owned(), "3".to_owned())));
    assert_eq!(sent.headers[0].name, "x-team");
    let mut new = sent.clone();
    new.messages[1].text = "mail [EMAIL]".into();
    new.params.max_tokens = Some(20);
    new.params.temperature = None;
    new.model = "gpt-4o-mini".into();
    bindings::apply_request(&mut req, &sent, new).unwrap();
    assert_eq!(req.target.model, "gpt-4o-mini");
    assert_eq!(req.body["model"], "gpt-4o-mini");
    assert_eq!(req.body["messages"][0]["content"], "be nice");
    assert_eq!(
        req.body["messages"][1]["content"],
        json!([{"type": "text", "text": "mail [EMAIL]"}, {"type": "image_url", "image_url": {"url": "x"}}])
    );
    assert_eq!(req.body["max_completion_tokens"], 20);
    assert!(!req.body.contains_key("max_tokens"));
    assert!(!req.body.contains_key("temperature"));
}

#[test]
fn body_json_edit_is_reparsed_first() {
    let mut req = chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
    let sent = bindings::request_to_wit(
        &ctx(),
        &req,
        serde_json::to_string(&req.body).unwrap(),
        Reads::ALL,
    );
    let mut new = sent.clone();
    new.body_json =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "seed": 7})
            .to_string();
    bindings::apply_request(&mut req, &sent, new).unwrap();
    assert_eq!(req.body["seed"], 7);
    let mut bad = sent.clone();
    bad.body_json = "[1]".into();
    assert!(bindings::apply_request(&mut req, &sent, bad).is_err());
}

#[test]
fn completion_and_embedding_messages() {
    let mut req = chat(json!({"prompt": "hello", "input": ["a", "b"]}));
    req.kind = RequestKind::Completion;
    let w = bindings::request_to_wit(&ctx(), &req, String::new(), Reads::ALL);
    assert_eq!(w.messages.len(), 1);
    assert_eq!(w.messages[0].role, "user");
    let mut new = w.clone();
    new.messages[0].text = "bye".into();
    bindings::apply_request(&mut req, &w, new).unwrap();
    assert_eq!(req.body["prompt"], "bye");
    req.kind = RequestKind::Embedding;
    let w = bindings::request_to_wit(&ctx(), &req, String::new(), Reads::ALL);
    assert_eq!(
        w.messages
            .iter()
            .map(|m| m.role.as_str())
            .collect::<Vec<_>>(),
        ["input", "input"]
    );
    let mut new = w.clone();
    new.messages[1].text = "B".into();
    bindings::apply_request(&mut req, &w, new).unwrap();
    assert_eq!(req.body["input"], json!(["a", "B"]));
}

#[test]
fn response_and_error_conversions() {
    let req = chat(json!({}));
    let resp = UnifiedResponse::ok(obj(json!({
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    })));
    let w = bindings::response_to_wit(&req, &resp, 5);
    assert_eq!(w.choices, ["hi"]);
    assert_eq!(w.usage.unwrap().total_tokens, 3);
    let mut new = w.clone();
    new.choices = vec!["HI".into()];
    new.status = 201;
    let back = bindings::response_from_wit(&req, new, Some((&w, &resp)));
    assert_eq!(back.status, 201);
    assert_eq!(back.body["choices"][0]["message"]["content"], "HI");
    // A short-circuit with no body gets a minimal OpenAI body.
    let mut sc = w.clone();
    sc.body_json = String::new();
    sc.choices = vec!["cached".into()];
    let r = bindings::response_from_wit(&req, sc, None);
    assert_eq!(r.body["choices"][0]["message"]["content"], "cached");

    let rej = bindings::rejection_to_error(
        "rl",
        wit::Rejection {
            status: 429,
            message: "slow".into(),
            code: Some("rate_limit_exceeded".into()),
            retry_after_secs: Some(3),
            allow_fallbacks: false,
        },
    );
    assert_eq!(rej.status.as_u16(), 429);
    assert_eq!(rej.plugin.as_deref(), Some("rl"));
    assert_eq!(rej.retry_after, Some(Duration::from_secs(3)));
    assert!(!rej.allow_fallbacks);
    let e = bindings::error_from_wit(
        "p",
        wit::Error {
            status: 502,
            kind: wit::ErrorKind::Upstream,
            message: "bad".into(),
            code: None,
            provider: "openai".into(),
            model: "m".into(),
        },
    );
    assert_eq!(e.fault, crate::error::Fault::Upstream);
    assert!(e.retryable);
}

#[test]
fn chunk_conversion() {
    let mut chunk = StreamChunk {
        body: obj(
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "a@b"}, "finish_reason": null}]}),
        ),
    };
    let w = bindings::chunk_to_wit(&chunk, 3, false);
    assert_eq!(w.sequence, 3);
    assert_eq!(w.choices[0].text.as_deref(), Some("a@b"));
    let mut new = w.clone();
    new.choices[0].text = Some("[EMAIL]".into());
    bindings::apply_chunk(&mut chunk, RequestKind::Chat, &w, new).unwrap();
    assert_eq!(chunk.body["choices"][0]["delta"]["content"], "[EMAIL]");
}

#[test]
fn v2_header_edits_refuse_credentials_and_framing() {
    use super::bindings::{v2, wit2};
    use crate::schema::HeaderEdit;
    let set = |n: &str| {
        wit2::HeaderEdit::Set(wit2::Header {
            name: n.into(),
            value: "v".into(),
        })
    };
    let ok = v2::header_edits(vec![
        set("X-Team"),
        wit2::HeaderEdit::Remove("x-old".into()),
    ])
    .unwrap();
    assert_eq!(
        ok,
        vec![
            HeaderEdit::Set("x-team".parse().unwrap(), "v".parse().unwrap()),
            HeaderEdit::Remove("x-old".parse().unwrap()),
        ]
    );
    for bad in [
        "authorization",
        "Authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "anthropic-version",
        "host",
        "content-length",
        "x-amz-date",
        "bad name",
    ] {
        assert!(v2::header_edits(vec![set(bad)]).is_err(), "{bad} accepted");
        let remove = wit2::HeaderEdit::Remove(bad.into());
        assert!(
            v2::header_edits(vec![remove]).is_err(),
            "removing {bad} accepted"
        );
    }
    let h = |n: &str, v: &str| wit2::Header {
        name: n.into(),
        value: v.into(),
    };
    assert!(v2::response_headers(vec![h("x-cache", "hit")]).is_ok());
    assert!(v2::response_headers(vec![h("X-Switchyard-Error", "no")]).is_err());
    assert!(v2::response_headers(vec![h("content-type", "text/plain")]).is_err());
    assert!(v2::response_headers(vec![h("x-ok", "line\nbreak")]).is_err());
}

#[test]
fn v2_request_leaves_out_unread_parts() {
    use super::bindings::v2;
    let req = chat(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"team": "a"}}),
    );
    let none = Reads {
        body_json: false,
        messages: false,
        metadata: false,
        headers: false,
    };
    let w = v2::request_to_wit(&ctx(), &req, String::new(), none);
    assert!(w.messages.is_empty() && w.metadata.is_empty() && w.headers.is_empty());
    assert_eq!(w.body_json, "");
    assert_eq!(w.model, "gpt-4o");
    let all = v2::request_to_wit(&ctx(), &req, "{}".into(), Reads::ALL);
    assert_eq!(all.messages.len(), 1);
    assert_eq!(all.metadata, vec![("team".to_owned(), "a".to_owned())]);
    assert_eq!(all.headers.len(), 1);
    // A plugin that did not read the body and sends none back changes nothing.
    let mut changed = req.clone();
    v2::apply_request(&mut changed, &w, w.clone()).unwrap();
    assert_eq!(changed.body, req.body);
}

#[test]
fn empty_chain_fast_path() {
    let chain = Chain::default();
    let mut req = chat(json!({"messages": []}));
    let (out, ran) = chain.pre_hooks(&ctx(), &mut req);
    assert!(matches!(out, PreOutcome::Continue));
    assert_eq!(ran, 0);
    assert!(!chain.wants_chunks(5));
}

// ---------------------------------------------------------------------------------------------
// Real components.

fn entry(name: &str, file: &str) -> PluginEntry {
    PluginEntry {
        name: name.into(),
        file: file.into(),
        order: 0,
        enabled: true,
        config_json: "{}".into(),
        on_error: OnError::FailOpen,
        deadline: Duration::from_millis(50),
        memory_limit_bytes: 16 << 20,
        fresh_instance_after: 0,
    }
}

fn plugins_cfg(dir: &Path, entries: Vec<PluginEntry>) -> PluginsConfig {
    PluginsConfig {
        directory: dir.to_path_buf(),
        watch: false,
        debounce: Duration::from_millis(50),
        max_instances: 4,
        entries,
        ..PluginsConfig::default()
    }
}

/// A component the test command builds. Missing outside CI: the test is skipped, saying
/// so; missing under `CI` (what `cargo xtask test` runs): the test fails.
fn component(what: &str, path: Option<PathBuf>) -> Option<PathBuf> {
    let found = path.filter(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{what} is missing: the test command (cargo xtask test) builds it");
        }
        println!("skipped: {what} not built (cargo xtask build-plugins)");
    }
    found
}

/// `$SWITCHYARD_TEST_PLUGIN`, else the e2e fixture where the plugin build puts it.
fn e2e_wasm() -> Option<PathBuf> {
    let path = std::env::var_os("SWITCHYARD_TEST_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/fixtures/e2e.wasm")
        });
    component(
        "the e2e fixture (plugins/target/fixtures/e2e.wasm)",
        Some(path),
    )
}

fn fixture(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/fixtures")
        .join(format!("{name}.wasm"));
    component(&format!("plugins/target/fixtures/{name}.wasm"), Some(p))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn redact_wasm() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/build/redact.wasm");
    component("plugins/build/redact.wasm", Some(p))
}

#[test]
fn redact_plugin_redacts_email() {
    let Some(wasm) = redact_wasm() else {
        return;
    };
    let dir = wasm.parent().unwrap();
    let cfg = plugins_cfg(dir, vec![entry("redact", "redact.wasm")]);
    let rt = rt();
    let host = rt
        .block_on(PluginHost::start(&cfg, 2, &prometheus::Registry::new()))
        .unwrap();
    let h = host.health();
    assert_eq!(h[0].state, "ready", "{h:?}");
    let mut req = chat(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "write to jane.doe@example.com please"}]}),
    );
    let (out, _) = host.chain().pre_hooks(&ctx(), &mut req);
    assert!(matches!(out, PreOutcome::Continue), "{out:?}");
    let text = req.body["messages"][0]["content"].as_str().unwrap();
    assert!(!text.contains("jane.doe@example.com"), "{text}");
}

/// A component at `$SWITCHYARD_TEST_PLUGIN` whose pre-hook looks at the first message:
/// "spin" loops, "trap" panics, "err" returns Err, "reject" rejects 429, "grow" allocates
/// without end; otherwise words with '@' become "[EMAIL]". Its post-hook upper-cases choices
/// and its on-chunk appends `#<calls so far>` using the state bytes.
#[test]
fn e2e_test_plugin() {
    let Some(src) = e2e_wasm() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sy-plugins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&src, dir.join("t.wasm")).unwrap();
    std::fs::copy(&src, dir.join("stray.wasm")).unwrap();
    let mut closed = entry("closed", "t.wasm");
    closed.on_error = OnError::FailClosed;
    let mut bad = entry("bad", "t.wasm");
    bad.config_json = "{\"bad\": true}".into();
    let cfg = plugins_cfg(
        &dir,
        vec![
            entry("open", "t.wasm"),
            closed,
            bad,
            entry("gone", "none.wasm"),
        ],
    );
    let reg = prometheus::Registry::new();
    let rt = rt();
    let t0 = std::time::Instant::now();
    let host = rt.block_on(PluginHost::start(&cfg, 4, &reg)).unwrap();
    println!("start with 3 loads: {:?}", t0.elapsed());
    let states: Vec<(String, String)> = host
        .health()
        .into_iter()
        .map(|h| (h.name, h.state))
        .collect();
    assert_eq!(
        states,
        [
            ("open", "ready"),
            ("closed", "ready"),
            ("bad", "failed"),
            ("gone", "failed"),
            ("stray", "unlisted")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let chain = host.chain();
    assert_eq!(chain.names(), ["open", "closed"]);

    // Redaction through ContinueWith, by both plugins.
    let mut req =
        chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "mail a@b.c"}]}));
    let (out, ran) = chain.pre_hooks(&ctx(), &mut req);
    assert!(matches!(out, PreOutcome::Continue));
    assert_eq!(ran, 2);
    assert_eq!(req.body["messages"][0]["content"], "mail [EMAIL]");

    // Timing of a hot call.
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let mut r = chat(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}),
        );
        let _ = chain.pre_hooks(&ctx(), &mut r);
    }
    println!(
        "pre_hooks, 2 plugins, pooled: {:?} per request",
        t.elapsed() / n
    );

    // Post-hook: both upper-case (idempotent).
    let mut outcome = Ok(UnifiedResponse::ok(obj(
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}),
    )));
    chain.post_hooks(&ctx(), &req, ran, Duration::from_millis(3), &mut outcome);
    assert_eq!(
        outcome.unwrap().body["choices"][0]["message"]["content"],
        "OK"
    );

    // Chunks: state travels per plugin; both append.
    let mut st = StreamHookState::default();
    for i in 1..=2 {
        let mut c = StreamChunk {
            body: obj(json!({"choices": [{"index": 0, "delta": {"content": "x"}}]})),
        };
        chain
            .chunk_hooks(&ctx(), &req, ran, &mut st, &mut c, false)
            .unwrap();
        assert_eq!(
            c.body["choices"][0]["delta"]["content"],
            format!("x#{i}#{i}")
        );
    }

    // Deadline: fail_open skips, fail_closed rejects naming the plugin.
    let mut req =
        chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "spin"}]}));
    let t = std::time::Instant::now();
    let (out, _) = chain.pre_hooks(&ctx(), &mut req);
    println!("two 50 ms deadlines hit in {:?}", t.elapsed());
    match out {
        PreOutcome::Reject(e) => {
            assert_eq!(e.status.as_u16(), 500);
            assert!(e.message.contains("plugin closed failed"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // Trap, memory cap, guest error, rejection.
    for (text, status) in [("trap", 500), ("grow", 500), ("err", 500), ("reject", 429)] {
        let mut req =
            chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}));
        match chain.pre_hooks(&ctx(), &mut req).0 {
            PreOutcome::Reject(e) => assert_eq!(e.status.as_u16(), status, "{text}: {}", e.message),
            other => panic!("{text}: {other:?}"),
        }
    }
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&reg.gather())
        .unwrap();
    assert!(
        metrics.contains("switchyard_plugin_failures_total{kind=\"timeout\",plugin=\"open\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_plugin_failures_total{kind=\"trap\",plugin=\"open\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("switchyard_plugin_failures_total{kind=\"guest_error\",plugin=\"open\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "switchyard_plugin_call_duration_seconds_count{hook=\"pre\",plugin=\"open\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_plugin_reloads_total{plugin=\"bad\",result=\"error\"} 1"),
        "{metrics}"
    );

    // Hot reload: a broken file leaves the old version serving; deleting removes it.
    std::fs::write(dir.join("t.wasm"), b"not wasm").unwrap();
    rt.block_on(host.reload_now());
    let h = host.health();
    assert_eq!(h[0].state, "degraded", "{h:?}");
    assert!(h[0].last_error.is_some());
    assert_eq!(host.chain().names(), ["open", "closed"]);
    std::fs::copy(&src, dir.join("t.wasm")).unwrap();
    let t = std::time::Instant::now();
    rt.block_on(host.reload_now());
    println!(
        "reload of unchanged bytes (compile cache hit): {:?}",
        t.elapsed()
    );
    assert_eq!(host.health()[0].state, "ready");
    std::fs::remove_file(dir.join("t.wasm")).unwrap();
    rt.block_on(host.reload_now());
    let h = host.health();
    assert_eq!(h[0].state, "failed");
    assert_eq!(h[0].last_error.as_deref(), Some("file removed"));
    assert!(host.chain().names().is_empty());
    // "closed" is fail_closed: with its file gone, requests are refused and name it.
    assert!(!h[0].blocks_requests && h[1].blocks_requests, "{h:?}");
    let mut req = chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
    match host.chain().pre_hooks(&ctx(), &mut req).0 {
        PreOutcome::Reject(e) => {
            assert_eq!(e.status.as_u16(), 503);
            assert!(e.message.contains("plugin closed"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // The old chain a request holds keeps working.
    let mut req =
        chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x@y"}]}));
    assert!(matches!(
        chain.pre_hooks(&ctx(), &mut req).0,
        PreOutcome::Continue
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The watcher picks up a component dropped into the directory.
#[test]
fn e2e_watcher_hot_reload() {
    let Some(src) = e2e_wasm() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sy-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = plugins_cfg(&dir, vec![entry("w", "w.wasm")]);
    cfg.watch = true;
    let rt = rt();
    let host = rt
        .block_on(PluginHost::start(&cfg, 1, &prometheus::Registry::new()))
        .unwrap();
    assert_eq!(host.health()[0].state, "failed");
    std::fs::copy(&src, dir.join("w.wasm")).unwrap();
    let t = std::time::Instant::now();
    while host.chain().is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "file copied -> new chain in {:?} (debounce 50 ms)",
        t.elapsed()
    );
    assert_eq!(host.chain().names(), ["w"]);
    assert_eq!(host.health()[0].state, "ready");
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fail_closed` means closed: an entry whose file is missing or does not load refuses
/// every request with a 503 naming it, and `/health` says so; a `fail_open` one is skipped.
/// Needs no built component, so it always runs.
#[test]
fn fail_closed_plugin_that_never_loaded_refuses_requests() {
    let dir = std::env::temp_dir().join(format!("sy-closed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let mut broken = entry("guard", "broken.wasm");
    broken.on_error = OnError::FailClosed;
    let mut missing = entry("audit", "audit.wasm");
    missing.on_error = OnError::FailClosed;
    let open = entry("optional", "optional.wasm");
    let rt = rt();
    let reg = prometheus::Registry::new();

    // Only fail_open entries missing: requests pass.
    let host = rt
        .block_on(PluginHost::start(
            &plugins_cfg(&dir, vec![open.clone()]),
            1,
            &reg,
        ))
        .unwrap();
    let mut req = chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
    assert!(matches!(
        host.chain().pre_hooks(&ctx(), &mut req).0,
        PreOutcome::Continue
    ));
    assert!(!host.health()[0].blocks_requests);

    let host = rt
        .block_on(PluginHost::start(
            &plugins_cfg(&dir, vec![open, broken, missing]),
            1,
            &prometheus::Registry::new(),
        ))
        .unwrap();
    let chain = host.chain();
    assert!(
        !chain.is_empty(),
        "the proxy must not skip a chain that refuses"
    );
    match chain.pre_hooks(&ctx(), &mut req).0 {
        PreOutcome::Reject(e) => {
            assert_eq!(e.status.as_u16(), 503);
            assert_eq!(e.code.as_deref(), Some("plugin_unavailable"));
            assert_eq!(e.plugin.as_deref(), Some("guard"));
            assert!(!e.allow_fallbacks);
            assert!(
                e.message.contains("plugin guard is configured fail_closed and is not loaded (failed to load: compile"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    let h = host.health();
    let by = |n: &str| h.iter().find(|p| p.name == n).unwrap().clone();
    assert_eq!(by("guard").state, "failed");
    assert!(by("guard").blocks_requests);
    assert_eq!(by("guard").on_error, "fail_closed");
    assert!(by("audit").blocks_requests);
    assert!(by("audit")
        .last_error
        .as_deref()
        .unwrap()
        .contains("file not found"));
    assert!(!by("optional").blocks_requests);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before the first load finishes, every enabled entry is `loading`; a fail_closed one
/// refuses requests (503, Retry-After), a fail_open one is skipped.
#[test]
fn loading_chain_refuses_only_for_fail_closed_entries() {
    let mut closed = entry("guard", "guard.wasm");
    closed.on_error = OnError::FailClosed;
    let mut off = entry("off", "off.wasm");
    off.enabled = false;
    let collector = metrics::PluginMetricsCollector::new();
    let dir = std::env::temp_dir();
    let (chain, health) = loading(
        &plugins_cfg(&dir, vec![entry("open", "open.wasm"), off.clone()]),
        &collector,
    );
    assert!(chain.is_empty());
    assert_eq!(
        health.iter().map(|h| h.state.as_str()).collect::<Vec<_>>(),
        ["loading", "disabled"]
    );
    let (chain, health) = loading(
        &plugins_cfg(&dir, vec![entry("open", "open.wasm"), closed, off]),
        &collector,
    );
    assert!(health[1].blocks_requests && health[1].state == "loading");
    let mut req = chat(json!({"model": "gpt-4o", "messages": []}));
    match chain.pre_hooks(&ctx(), &mut req).0 {
        PreOutcome::Reject(e) => {
            assert_eq!(e.status.as_u16(), 503);
            assert!(
                e.message.contains("plugin guard") && e.message.contains("still loading"),
                "{}",
                e.message
            );
            assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("{other:?}"),
    }
}

/// Deploying version after version keeps only the versions in use compiled; a version
/// serving in degraded mode stays; an old version lives as long as a request holds it.
#[test]
fn only_versions_in_use_stay_compiled() {
    let (Some(a), Some(b)) = (fixture("tagger"), fixture("tagger-b")) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sy-versions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&a, dir.join("t.wasm")).unwrap();
    let rt = rt();
    let host = rt
        .block_on(PluginHost::start(
            &plugins_cfg(&dir, vec![entry("t", "t.wasm")]),
            1,
            &prometheus::Registry::new(),
        ))
        .unwrap();
    assert_eq!(host.compiled_versions(), 1);
    let held = host.chain();
    let first = Arc::downgrade(&held.plugins[0]);
    for (i, src) in [&b, &a, &b, &a, &b].into_iter().enumerate() {
        std::fs::copy(src, dir.join("t.wasm")).unwrap();
        rt.block_on(host.reload_now());
        assert_eq!(host.health()[0].state, "ready");
        assert_eq!(host.compiled_versions(), 1, "after deploy {i}");
    }
    // The chain a request took at the start still works, then goes with it.
    assert!(first.upgrade().is_some());
    drop(held);
    assert!(
        first.upgrade().is_none(),
        "an unused version stayed in memory"
    );
    // A broken deploy: the serving version stays (and stays compiled), nothing else.
    std::fs::write(dir.join("t.wasm"), b"not wasm").unwrap();
    rt.block_on(host.reload_now());
    assert_eq!(host.health()[0].state, "degraded");
    assert_eq!(host.compiled_versions(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Key-value failures and reconfiguration.

/// A store whose backend is down: every operation fails.
struct DownKv;

impl KvStore for DownKv {
    fn get(&self, _: &str, _: Duration) -> Result<Option<Vec<u8>>, KvError> {
        Err(KvError::Backend("connection refused".into()))
    }
    fn set(&self, _: &str, _: Vec<u8>, _: Option<Duration>, _: Duration) -> Result<(), KvError> {
        Err(KvError::Backend("connection refused".into()))
    }
    fn increment(&self, _: &str, _: i64, _: Option<Duration>, _: Duration) -> Result<i64, KvError> {
        Err(KvError::Backend("connection refused".into()))
    }
    fn compare_and_swap(
        &self,
        _: &str,
        _: Option<&[u8]>,
        _: Vec<u8>,
        _: Option<Duration>,
        _: Duration,
    ) -> Result<bool, KvError> {
        Err(KvError::Backend("connection refused".into()))
    }
    fn delete(&self, _: &str, _: Duration) -> Result<bool, KvError> {
        Err(KvError::Backend("connection refused".into()))
    }
}

fn rate_limit_wasm() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/build/rate-limit.wasm");
    component("plugins/build/rate-limit.wasm", Some(p))
}

fn rate_limit_entry(on_error: OnError, capacity: u32) -> PluginEntry {
    let mut e = entry("rate-limit", "rate-limit.wasm");
    e.on_error = on_error;
    e.config_json =
        format!(r#"{{"rules":[{{"name":"r","capacity":{capacity},"refill_per_second":0.001}}]}}"#);
    e
}

#[test]
fn a_failing_kv_backend_traps_the_call_and_on_error_decides() {
    let Some(wasm) = rate_limit_wasm() else {
        return;
    };
    let dir = wasm.parent().unwrap();
    let rt = rt();
    for (on_error, refused) in [(OnError::FailOpen, false), (OnError::FailClosed, true)] {
        let cfg = plugins_cfg(dir, vec![rate_limit_entry(on_error, 5)]);
        let reg = prometheus::Registry::new();
        let host = rt
            .block_on(PluginHost::start_with_kv(&cfg, 1, &reg, Arc::new(DownKv)))
            .unwrap();
        let mut req =
            chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
        let (out, _) = host.chain().pre_hooks(&ctx(), &mut req);
        match out {
            PreOutcome::Reject(e) if refused => {
                assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
                assert!(e.message.contains("kv"), "{}", e.message);
            }
            PreOutcome::Continue if !refused => {}
            other => panic!("{on_error:?}: {other:?}"),
        }
        let text = {
            use prometheus::Encoder;
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&reg.gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(
            text.contains(
                r#"switchyard_plugin_failures_total{kind="kv_error",plugin="rate-limit"} 1"#
            ),
            "{text}"
        );
    }
}

#[test]
fn reconfigure_applies_entries_and_keeps_unchanged_plugins() {
    let Some(wasm) = rate_limit_wasm() else {
        return;
    };
    let dir = wasm.parent().unwrap();
    let rt = rt();
    let cfg = plugins_cfg(dir, vec![rate_limit_entry(OnError::FailOpen, 1)]);
    let host = rt
        .block_on(PluginHost::start(&cfg, 1, &prometheus::Registry::new()))
        .unwrap();
    let first = host.chain();
    let pre = |host: &PluginHost| {
        let mut req =
            chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
        match host.chain().pre_hooks(&ctx(), &mut req).0 {
            PreOutcome::Continue => 200,
            PreOutcome::Reject(e) => e.status.as_u16(),
            PreOutcome::Respond(_) => 0,
        }
    };
    assert_eq!((pre(&host), pre(&host)), (200, 429));

    // The same entries: the serving version is kept as it is.
    assert!(rt.block_on(host.reconfigure(&cfg)));
    assert!(Arc::ptr_eq(&first.plugins[0], &host.chain().plugins[0]));

    // A new capacity and policy: loaded anew with the new config; the bucket's state is in
    // the store, so only the new capacity decides.
    let cfg2 = plugins_cfg(dir, vec![rate_limit_entry(OnError::FailClosed, 3)]);
    assert!(rt.block_on(host.reconfigure(&cfg2)));
    let h = host.health();
    assert_eq!(
        (h[0].state.as_str(), h[0].on_error),
        ("ready", "fail_closed"),
        "{h:?}"
    );
    assert!(!Arc::ptr_eq(&first.plugins[0], &host.chain().plugins[0]));
    assert_eq!(pre(&host), 429, "the bucket is empty until it refills");

    // Disabled, then removed.
    let mut off = rate_limit_entry(OnError::FailClosed, 3);
    off.enabled = false;
    assert!(rt.block_on(host.reconfigure(&plugins_cfg(dir, vec![off]))));
    assert_eq!(host.health()[0].state, "disabled");
    assert_eq!(pre(&host), 200);
    assert!(rt.block_on(host.reconfigure(&plugins_cfg(dir, vec![]))));
    assert!(host.chain().names().is_empty());
    // A host without plugins cannot take entries.
    assert!(!rt.block_on(PluginHost::disabled().reconfigure(&cfg)));
}
