//! The other client dialects through HTTP: Anthropic Messages (`/anthropic/v1/messages`,
//! `/v1/messages`) and OpenAI Responses (`/v1/responses`), driven by the official `anthropic`
//! and `openai` Python SDKs against OpenAI-format, Anthropic and Bedrock mocks; bare model
//! names and aliases; Anthropic-only fields reaching Anthropic unchanged; errors in each
//! dialect's shape; redaction on every dialect.

use std::process::Command;

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};

use crate::clouds;
use crate::harness::{openai_provider, Gateway};

fn anthropic_provider(base: &str, models: &[&str]) -> Value {
    json!({
        "keys": [{"value": "sk-ant-upstream-key", "models": models, "weight": 1.0}],
        "network_config": {"base_url": format!("{base}/v1")}
    })
}

fn python() -> Option<std::path::PathBuf> {
    match switchyard_tests::venv_python() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!(".venv with the SDKs is missing: run the test command (cargo xtask test)")
        }
        None => {
            eprintln!("skipped: no .venv (cargo xtask test creates it)");
            None
        }
    }
}

async fn run_script(python: std::path::PathBuf, script: &str, args: Vec<String>) -> String {
    let script = switchyard_tests::repo_root()
        .join("tests/python")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    stdout
}

const BEDROCK_CLAUDE: &str = "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0";

/// OpenAI-format, Anthropic and Bedrock behind one gateway, with a bare name
/// (`claude-3-5-haiku`, listed by the anthropic key) and an alias (`fast`).
async fn three_providers() -> (MockUpstream, MockUpstream, MockUpstream, Gateway) {
    let oa = MockUpstream::start().await;
    let an = MockUpstream::start().await;
    let aws = clouds::bedrock_mock().await;
    let gw = Gateway::start_with_env(
        json!({
            "client": {"model_aliases": {"fast": ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"]}},
            "providers": {
                "openai": openai_provider(&oa.url()),
                "anthropic": anthropic_provider(&an.url(), &["claude-3-5-haiku"]),
                "bedrock": clouds::bedrock(&aws.url()),
            }
        }),
        &[("TEST_AWS_SECRET", clouds::SECRET)],
    )
    .await;
    (oa, an, aws, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_reaches_openai_anthropic_bedrock_and_vertex() {
    use switchyard_tests::token_server::TokenServer;
    let Some(python) = python() else { return };
    let oa = MockUpstream::start().await;
    let an = MockUpstream::start().await;
    let aws = clouds::bedrock_mock().await;
    let (tokens, account) = TokenServer::with_account().await;
    let gcp = MockUpstream::start().await.with_token_server(&tokens);
    let gw = Gateway::start_with_env(
        json!({
            "client": {"model_aliases": {"fast": ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"]}},
            "providers": {
                "openai": openai_provider(&oa.url()),
                "anthropic": anthropic_provider(&an.url(), &["claude-3-5-haiku"]),
                "bedrock": clouds::bedrock(&aws.url()),
                "vertex": clouds::vertex(&gcp.url(), &account.json),
            }
        }),
        &[("TEST_AWS_SECRET", clouds::SECRET)],
    )
    .await;
    let models = [
        "openai/gpt-4o-mini",
        "claude-3-5-haiku",
        BEDROCK_CLAUDE,
        "vertex/claude-3-5-haiku@20241022",
        "fast",
    ];
    let mut args = vec![gw.url("/anthropic")];
    args.extend(models.iter().map(|m| m.to_string()));
    let stdout = run_script(python, "anthropic_sdk_check.py", args).await;
    assert_eq!(stdout.matches("anthropic ok").count(), 5, "{stdout}");
    assert!(stdout.contains("anthropic errors ok"), "{stdout}");
    // Each provider got its own wire format, with the gateway's key, not the client's.
    let to_anthropic = an.received();
    assert!(to_anthropic.iter().all(|r| r.path == "/v1/messages"));
    assert!(to_anthropic
        .iter()
        .all(|r| r.header("x-api-key") == Some("sk-ant-upstream-key")));
    assert!(oa
        .received()
        .iter()
        .all(|r| r.path == "/v1/chat/completions"));
    assert!(aws.received().iter().any(|r| r.path.contains("converse")));
    assert_eq!(aws.sigv4_failures(), 0);
    // Claude on Vertex gets the client's Anthropic body, model in the path.
    let to_vertex = gcp.received();
    assert!(to_vertex
        .iter()
        .any(|r| r.path.ends_with(":streamRawPredict")));
    assert!(to_vertex
        .iter()
        .all(|r| r.body.get("model").is_none() && r.body["anthropic_version"].is_string()));
    assert_eq!(gcp.bearer_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_python_sdk_reaches_openai_anthropic_and_bedrock() {
    let Some(python) = python() else { return };
    let (oa, an, aws, gw) = three_providers().await;
    let models = ["openai/gpt-4o-mini", "claude-3-5-haiku", BEDROCK_CLAUDE];
    let mut args = vec![gw.url("/v1")];
    args.extend(models.iter().map(|m| m.to_string()));
    let stdout = run_script(python, "responses_check.py", args).await;
    assert_eq!(stdout.matches("responses ok").count(), 3, "{stdout}");
    assert!(stdout.contains("responses errors ok"), "{stdout}");
    assert!(oa.count() > 0 && an.count() > 0 && aws.count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_only_fields_reach_anthropic_unchanged() {
    let an = MockUpstream::start().await;
    let oa = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {
        "anthropic": anthropic_provider(&an.url(), &[]),
        "openai": openai_provider(&oa.url()),
    }}))
    .await;
    let body = json!({
        "model": "anthropic/claude-sonnet-4",
        "max_tokens": 2000,
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "echo:cached", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    });
    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-ant-client")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "extended-cache-ttl-2025-04-11")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], "cached");
    let got = an.received().pop().unwrap();
    let mut expected = body.clone();
    expected["model"] = json!("claude-sonnet-4");
    assert_eq!(got.body, expected);
    assert_eq!(
        got.header("anthropic-beta"),
        Some("extended-cache-ttl-2025-04-11")
    );
    assert_eq!(got.header("x-api-key"), Some("sk-ant-upstream-key"));

    // To an OpenAI-format target a cache hint is dropped; a field only Anthropic serves is
    // refused in Anthropic's shape, naming it.
    let mut to_openai = json!({"model": "openai/gpt-4o", "max_tokens": 50,
        "messages": body["messages"].clone(), "system": body["system"].clone()});
    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .json(&to_openai)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = oa.received().pop().unwrap().body;
    assert!(!sent.to_string().contains("cache_control"), "{sent}");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    to_openai["thinking"] = body["thinking"].clone();
    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .json(&to_openai)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-switchyard-error"], "client");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("thinking: openai/gpt-4o cannot serve"),
        "{e}"
    );
}

/// The `(event, data)` frames of an SSE body.
async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let event = f
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_owned();
            let data = f
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (event, serde_json::from_str(data).unwrap_or(Value::Null))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialect_errors_in_their_own_shapes() {
    let oa = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"openai": {
        "keys": [{"value": "sk-test-key-0001", "models": [], "weight": 1.0}],
        "network_config": {"base_url": format!("{}/v1", oa.url()), "max_retries": 0}
    }}}))
    .await;
    let post = |path: &str, body: Value| gw.client.post(gw.url(path)).json(&body).send();

    let r = post(
        "/v1/messages",
        json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );
    // A provider's 429 keeps its status, in Anthropic's words.
    oa.push_behavior(Behavior::Status {
        status: 429,
        body: None,
        retry_after: Some("2".into()),
    });
    let r = post("/anthropic/v1/messages", json!({"model": "openai/gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})).await.unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    // The Responses route answers in OpenAI's shape with the param path.
    let r = post("/v1/responses", json!({"model": "openai/gpt-4o", "input": [{"role": "user", "content": [{"type": "input_video"}]}]})).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "input[0].content[0].type");
    assert_eq!(e["error"]["type"], "invalid_request_error");

    // A failure after the stream started is an `error` event, and the stream ends there.
    oa.push_behavior(Behavior::StreamError {
        after_chunks: 3,
        kind: None,
    });
    let r = post(
        "/v1/messages",
        json!({"model": "openai/gpt-4o", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "echo:one two three four five six"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let ev = events(r).await;
    let names: Vec<&str> = ev.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names[..2], ["message_start", "ping"]);
    assert_eq!(*names.last().unwrap(), "error", "{names:?}");
    assert!(!names.contains(&"message_stop"), "{names:?}");
    assert_eq!(ev.last().unwrap().1["type"], "error");
    assert!(ev.last().unwrap().1["error"]["type"].is_string());

    oa.push_behavior(Behavior::StreamError {
        after_chunks: 3,
        kind: None,
    });
    let r = post(
        "/v1/responses",
        json!({"model": "openai/gpt-4o", "stream": true,
        "input": "echo:one two three four five six"}),
    )
    .await
    .unwrap();
    let ev = events(r).await;
    assert_eq!(ev[0].0, "response.created");
    assert_eq!(ev.last().unwrap().0, "error");
    assert!(ev.iter().all(|(e, _)| e != "response.completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_names_and_aliases_with_fallback_in_every_dialect() {
    let oa = MockUpstream::start().await;
    let an = MockUpstream::start().await;
    let az = MockUpstream::start().await;
    let gw = Gateway::start(json!({
        "client": {"model_aliases": {"fast": ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"]}},
        "providers": {
            "openai": {"keys": [{"value": "sk-1", "models": ["gpt-4o-mini", "gpt-4o"]}],
                "network_config": {"base_url": format!("{}/v1", oa.url()), "max_retries": 0}},
            "groq": {"keys": [{"value": "gsk-1", "models": ["gpt-4o"]}],
                "network_config": {"base_url": format!("{}/v1", az.url())}},
            "anthropic": anthropic_provider(&an.url(), &["claude-3-5-haiku"]),
        }
    }))
    .await;
    let post = |path: &str, body: Value| gw.client.post(gw.url(path)).json(&body).send();
    // A bare name listed by one provider's keys goes there.
    let (s, b) = gw
        .chat(
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "echo:bare"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["extra_fields"]["provider"], "openai");
    // Listed by two: a 400 that names both.
    let (s, b) = gw
        .chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(s, 400);
    let m = b["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("\"openai/gpt-4o\"") && m.contains("\"groq/gpt-4o\""),
        "{m}"
    );
    assert_eq!(b["error"]["code"], "ambiguous_model");
    // Unknown: a 400 that lists what can be asked for, in the Anthropic shape there.
    let r = post(
        "/v1/messages",
        json!({"model": "gpt-9", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    let m = e["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("\"fast\"") && m.contains("\"claude-3-5-haiku\""),
        "{m}"
    );

    // The alias: its first target fails, its second answers, in all three dialects.
    oa.set_default_behavior(Behavior::Status {
        status: 503,
        body: None,
        retry_after: None,
    });
    let (s, b) = gw
        .chat(json!({"model": "fast", "messages": [{"role": "user", "content": "echo:via alias"}]}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["extra_fields"]["provider"], "anthropic");
    assert_eq!(b["extra_fields"]["fallback_index"], 1);
    let r = post("/v1/messages", json!({"model": "fast", "max_tokens": 20, "messages": [{"role": "user", "content": "echo:via alias"}]})).await.unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["content"][0]["text"], "via alias", "{b}");
    assert_eq!(b["extra_fields"]["provider"], "anthropic");
    let r = post(
        "/v1/responses",
        json!({"model": "fast", "input": "echo:via alias"}),
    )
    .await
    .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["output"][0]["content"][0]["text"], "via alias", "{b}");
    assert_eq!(b["extra_fields"]["provider"], "anthropic");
    // And /v1/models lists it.
    let models: Value = serde_json::from_str(&gw.get_text("/v1/models").await).unwrap();
    let fast = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "fast")
        .unwrap()
        .clone();
    assert_eq!(
        fast["targets"],
        json!(["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_sees_anthropic_and_responses_requests_and_streams() {
    let Some(redact) = switchyard_tests::require_plugin("redact") else {
        return;
    };
    let dir = switchyard_tests::TempDir::new("plugins");
    dir.install(&redact, "redact.wasm");
    let oa = MockUpstream::start().await;
    let an = MockUpstream::start().await;
    let gw = Gateway::start(json!({
        "client": {"initial_pool_size": 2},
        "providers": {"openai": openai_provider(&oa.url()), "anthropic": anthropic_provider(&an.url(), &[])},
        "plugins": {"directory": dir.path(), "watch": false,
            "entries": [{"name": "redact", "file": "redact.wasm", "on_error": "fail_closed"}]}
    }))
    .await;
    let secret = "echo:mail jane.doe@example.com or card 4111 1111 1111 1111";
    let post = |path: &str, body: Value| gw.client.post(gw.url(path)).json(&body).send();
    for (path, body) in [
        (
            "/v1/messages",
            json!({"model": "openai/gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": secret}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "openai/gpt-4o", "input": secret}),
        ),
    ] {
        let r = post(path, body.clone()).await.unwrap();
        assert_eq!(r.status(), 200);
        let answer = r.text().await.unwrap();
        let sent = oa.received().pop().unwrap().body.to_string();
        for s in ["jane.doe@example.com", "4111 1111 1111 1111"] {
            assert!(
                !sent.contains(s),
                "{path}: {s} reached the provider: {sent}"
            );
            assert!(!answer.contains(s), "{path}: {answer}");
        }
        assert!(answer.contains("[REDACTED_EMAIL]"), "{path}: {answer}");
    }
    // To Anthropic, whose requests otherwise go as the client wrote them, the plugin's
    // change is what goes.
    let r = post("/v1/messages", json!({"model": "anthropic/claude-sonnet-4", "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": secret, "cache_control": {"type": "ephemeral"}}]}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = an.received().pop().unwrap().body.to_string();
    assert!(
        !sent.contains("jane.doe@example.com") && sent.contains("[REDACTED_EMAIL]"),
        "{sent}"
    );

    // Streamed answers: the provider's own text is redacted chunk by chunk.
    let mock2 = MockUpstream::start_with(switchyard_tests::mock::MockOptions {
        reply: "write to ops@corp.example or 4111 1111 1111 1111".into(),
        ..Default::default()
    })
    .await;
    let gw2 = Gateway::start(json!({
        "client": {"initial_pool_size": 2},
        "providers": {"openai": openai_provider(&mock2.url())},
        "plugins": {"directory": dir.path(), "watch": false,
            "entries": [{"name": "redact", "file": "redact.wasm"}]}
    }))
    .await;
    let r = gw2
        .client
        .post(gw2.url("/v1/messages"))
        .json(
            &json!({"model": "openai/gpt-4o", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    let text: String = events(r)
        .await
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "write to [REDACTED_EMAIL] or [REDACTED_CARD]");
    let r = gw2
        .client
        .post(gw2.url("/v1/responses"))
        .json(&json!({"model": "openai/gpt-4o", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    let ev = events(r).await;
    let text: String = ev
        .iter()
        .filter(|(e, _)| e == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "write to [REDACTED_EMAIL] or [REDACTED_CARD]");
    let done = &ev.last().unwrap().1;
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_counts_every_dialect_in_one_bucket() {
    let Some(wasm) = switchyard_tests::require_plugin("rate-limit") else {
        return;
    };
    let dir = switchyard_tests::TempDir::new("plugins");
    dir.install(&wasm, "rate-limit.wasm");
    let oa = MockUpstream::start().await;
    let gw = Gateway::start(json!({
        "client": {"initial_pool_size": 2},
        "providers": {"openai": openai_provider(&oa.url())},
        "plugins": {"directory": dir.path(), "watch": false, "entries": [
            {"name": "rate-limit", "file": "rate-limit.wasm", "config": {"rules": [
                {"name": "per-client", "per": "client_key", "capacity": 3, "refill_per_second": 0.01}]}}]}
    }))
    .await;
    let user = json!([{"role": "user", "content": "x"}]);
    // The same key, as a bearer token (OpenAI SDKs) and as x-api-key (Anthropic SDKs).
    let chat = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("key-one")
        .json(&json!({"model": "openai/gpt-4o", "messages": user}));
    let messages = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "key-one")
        .json(&json!({"model": "openai/gpt-4o", "max_tokens": 5, "messages": user}));
    let responses = gw
        .client
        .post(gw.url("/v1/responses"))
        .bearer_auth("key-one")
        .json(&json!({"model": "openai/gpt-4o", "input": "x"}));
    for r in [chat, messages, responses] {
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "key-one")
        .json(&json!({"model": "openai/gpt-4o", "max_tokens": 5, "messages": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(oa.count(), 3);
}
