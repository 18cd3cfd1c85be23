//! `switchyard` as a command: the old flags still work, `--help` and `--version`, and the
//! `plugin inspect` / `plugin test` / `plugin new` tools on real components.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use switchyard_tests::{gateway_binary, require_plugin, TempDir};

fn switchyard() -> Option<Command> {
    match gateway_binary() {
        Some(b) => Some(Command::new(b)),
        None if std::env::var_os("CI").is_some() => {
            panic!("target/debug/switchyard is missing: run the test command (cargo xtask test)")
        }
        None => {
            eprintln!("skipped: build the switchyard binary first (cargo xtask test does)");
            None
        }
    }
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn write(dir: &TempDir, name: &str, v: &serde_json::Value) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

#[test]
fn command_line_flags_help_and_version() {
    let Some(mut c) = switchyard() else { return };
    let (out, text) = run(c.arg("--help"));
    assert!(out.status.success(), "{text}");
    for needle in ["--config", "--check", "plugin", "--version"] {
        assert!(text.contains(needle), "--help lacks {needle}: {text}");
    }
    let (out, text) = run(switchyard().unwrap().arg("--version"));
    assert!(out.status.success());
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    let (out, text) = run(switchyard().unwrap().args(["plugin", "--help"]));
    assert!(out.status.success());
    for needle in ["inspect", "test", "new"] {
        assert!(text.contains(needle), "{text}");
    }
    // The flags the binary always had.
    let dir = TempDir::new("cli");
    let cfg = write(&dir, "config.json", &json!({"providers": {}}));
    for flag in ["--config", "-c"] {
        let (out, text) = run(switchyard().unwrap().args([flag]).arg(&cfg).arg("--check"));
        assert!(out.status.success(), "{flag}: {text}");
        assert!(text.contains(": ok"), "{text}");
    }
    let bad = write(&dir, "bad.json", &json!({"client": {"max_in_flight": 0}}));
    let (out, text) = run(switchyard()
        .unwrap()
        .arg("--config")
        .arg(&bad)
        .arg("--check"));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("client.max_in_flight"), "{text}");
    let (out, text) = run(switchyard().unwrap().arg("--bogus"));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("--bogus"), "{text}");
}

#[test]
fn plugin_inspect_reports_a_v0_2_plugin_and_its_read_set() {
    let Some(headers) = require_plugin("headers") else {
        return;
    };
    let Some(mut c) = switchyard() else { return };
    let (out, text) = run(c.args(["plugin", "inspect"]).arg(&headers));
    assert!(out.status.success(), "{text}");
    for needle in [
        "wit:       switchyard:plugin@0.2.0",
        "hooks:     pre, post",
        "reads:     headers (loaded as 0.2.0)",
        "loadable:  yes",
    ] {
        assert!(text.contains(needle), "inspect lacks {needle:?}:\n{text}");
    }
    assert!(!text.contains("@0.1.0"), "{text}");
    // A 0.1.0 plugin reads everything.
    let Some(redact) = require_plugin("redact") else {
        return;
    };
    let (_, text) = run(switchyard()
        .unwrap()
        .args(["plugin", "inspect"])
        .arg(&redact));
    assert!(
        text.contains("reads:     body-json, messages, metadata, headers (loaded as 0.1.0)"),
        "{text}"
    );
}

#[test]
fn plugin_inspect_reports_version_hooks_imports_and_loadability() {
    let Some(redact) = require_plugin("redact") else {
        return;
    };
    let Some(mut c) = switchyard() else { return };
    let (out, text) = run(c.args(["plugin", "inspect"]).arg(&redact));
    assert!(out.status.success(), "{text}");
    for needle in [
        "wit:       switchyard:plugin@0.1.0",
        "hooks:     pre, post, chunk",
        "imports:\n  switchyard:plugin/types@0.1.0",
        "exports:\n  init\n  pre-hook\n  post-hook\n  on-chunk",
        "loadable:  yes",
        "bytes",
    ] {
        assert!(text.contains(needle), "inspect lacks {needle:?}:\n{text}");
    }
    // init refuses this config: not loadable, exit status 1, the reason shown.
    let dir = TempDir::new("inspect");
    let cfg = write(&dir, "c.json", &json!({"categories": ["ssn"]}));
    let (out, text) = run(switchyard()
        .unwrap()
        .args(["plugin", "inspect"])
        .arg(&redact)
        .arg("--config")
        .arg(&cfg));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("loadable:  no: init: config.categories[0]"),
        "{text}"
    );
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let (out, text) = run(switchyard().unwrap().args(["plugin", "inspect"]).arg(&junk));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("loadable:  no"), "{text}");
    let (out, text) = run(switchyard()
        .unwrap()
        .args(["plugin", "inspect"])
        .arg(dir.path().join("missing.wasm")));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("missing.wasm"), "{text}");
}

#[test]
fn plugin_test_runs_every_hook_offline() {
    let Some(redact) = require_plugin("redact") else {
        return;
    };
    let Some(mut c) = switchyard() else { return };
    let dir = TempDir::new("plugin-test");
    let cfg = write(
        &dir,
        "config.json",
        &json!({"name": "redact", "config": {}, "deadline_ms": 50}),
    );
    let req = write(
        &dir,
        "request.json",
        &json!({"model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "mail jane.doe@example.com"}]}),
    );
    let resp = write(
        &dir,
        "response.json",
        &json!({"object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ask ops@corp.example"}, "finish_reason": "stop"}]}),
    );
    let chunks: String = ["reach ", "me at a@", "example.com ", "bye"]
        .iter()
        .map(|t| format!("data: {}\n\n", json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]})))
        .chain(["data: [DONE]\n".to_owned()])
        .collect();
    let stream = dir.path().join("chunks.jsonl");
    std::fs::write(&stream, chunks).unwrap();
    let (out, text) = run(c
        .args(["plugin", "test"])
        .arg(&redact)
        .arg("--config")
        .arg(&cfg)
        .arg("--request")
        .arg(&req)
        .arg("--response")
        .arg(&resp)
        .arg("--stream")
        .arg(&stream));
    assert!(out.status.success(), "{text}");
    for needle in [
        "deadline 50 ms",
        "pre-hook (",
        "continue with a changed request",
        "mail [REDACTED_EMAIL]",
        "post-hook (",
        "ask [REDACTED_EMAIL]",
        "on-chunk, 4 chunks:",
        "mean ",
        "switchyard_plugin_call_duration_seconds_count{hook=\"pre\",plugin=\"redact\"} 1",
    ] {
        assert!(
            text.contains(needle),
            "plugin test lacks {needle:?}:\n{text}"
        );
    }
    assert!(!text.contains("jane.doe@example.com\""), "{text}");
    assert!(
        !text.contains("a@example.com"),
        "the split email got through the chunks:\n{text}"
    );
}

/// A guard in Python through the same tool: its rejection, its log line and its metric.
#[test]
fn plugin_test_shows_logs_and_metrics_of_a_python_plugin() {
    let Some(guard) = require_plugin("word_guard") else {
        return;
    };
    let Some(mut c) = switchyard() else { return };
    let dir = TempDir::new("plugin-test-py");
    let cfg = write(
        &dir,
        "config.json",
        &json!({"name": "word-guard", "deadline_ms": 500,
        "memory_limit_mib": 128, "config": {"blocked_words": ["forbidden"], "tag": "cli"}}),
    );
    let req = write(
        &dir,
        "request.json",
        &json!({"model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "a forbidden word"}]}),
    );
    let (out, text) = run(c
        .args(["plugin", "test"])
        .arg(&guard)
        .arg("--config")
        .arg(&cfg)
        .arg("--request")
        .arg(&req));
    assert!(out.status.success(), "{text}");
    for needle in [
        "reject 400 blocked_word: [cli] the request contains the blocked word 'forbidden'",
        "logs (",
        "WARN  [cli] request plugin-test blocked",
        "switchyard_plugin_word_guard_requests_total{plugin=\"word-guard\",result=\"blocked\",tag=\"cli\"} 1",
        "post-hook: not run",
    ] {
        assert!(text.contains(needle), "plugin test lacks {needle:?}:\n{text}");
    }
}

/// A hook that spins past its deadline is reported as a failure (exit status 1).
#[test]
fn plugin_test_reports_a_deadline() {
    let Some(e2e) = require_plugin("e2e") else {
        return;
    };
    let Some(mut c) = switchyard() else { return };
    let dir = TempDir::new("plugin-test-spin");
    let req = write(
        &dir,
        "request.json",
        &json!({"model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "spin"}]}),
    );
    let (out, text) = run(c
        .args(["plugin", "test"])
        .arg(&e2e)
        .arg("--request")
        .arg(&req)
        .arg("--deadline-ms")
        .arg("20"));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAILED: plugin e2e failed: deadline exceeded"),
        "{text}"
    );
    assert!(text.contains("kind=\"timeout\""), "{text}");
}

#[test]
fn plugin_new_writes_projects() {
    let Some(_) = switchyard() else { return };
    let dir = TempDir::new("plugin-new");
    for (lang, files) in [
        (
            "rust",
            &[
                "Cargo.toml",
                ".cargo/config.toml",
                "src/lib.rs",
                "README.md",
            ][..],
        ),
        ("python", &["app.py", "wit/plugin.wit", "README.md"][..]),
        (
            "js",
            &["app.js", "wit/plugin.wit", "package.json", "README.md"][..],
        ),
    ] {
        let root = dir.path().join(lang);
        let (out, text) = run(switchyard()
            .unwrap()
            .args(["plugin", "new", "my-guard", "--lang", lang, "--dir"])
            .arg(&root));
        assert!(out.status.success(), "{lang}: {text}");
        for f in files {
            assert!(Path::new(&root).join(f).is_file(), "{lang}: no {f}");
        }
        // Never over an existing project.
        let (out, text) = run(switchyard()
            .unwrap()
            .args(["plugin", "new", "my-guard", "--lang", lang, "--dir"])
            .arg(&root));
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("not empty"), "{text}");
    }
    let (out, text) = run(switchyard()
        .unwrap()
        .args(["plugin", "new", "x", "--lang", "cobol"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text.contains("cobol"), "{text}");
    let (out, text) = run(switchyard()
        .unwrap()
        .args(["plugin", "new", "Bad Name", "--lang", "rust", "--dir"])
        .arg(dir.path().join("bad")));
    assert_eq!(out.status.code(), Some(2));
    assert!(text.contains("plugin name"), "{text}");
}
