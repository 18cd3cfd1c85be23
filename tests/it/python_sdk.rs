//! The official `openai` Python SDK against the gateway, changing only `base_url`.

use std::process::Command;

use serde_json::json;
use switchyard_tests::mock::MockUpstream;

use crate::harness::{openai_provider, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_plain_and_streaming() {
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
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let script = switchyard_tests::repo_root().join("tests/python/openai_sdk_check.py");
    let base = gw.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(base).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("plain ok") && stdout.contains("stream ok"),
        "{stdout}"
    );
}

/// The same SDK against Bedrock, Vertex AI and Cohere: plain, streaming, a tool call round
/// trip (plain and streamed) and embeddings, with nothing else changed on the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_reaches_bedrock_vertex_and_cohere() {
    use crate::clouds;
    use switchyard_tests::token_server::TokenServer;
    let python = match switchyard_tests::venv_python() {
        Some(p) => p,
        None if std::env::var_os("CI").is_some() => {
            panic!(
                ".venv with the openai package is missing: run the test command (cargo xtask test)"
            )
        }
        None => {
            eprintln!("skipped: no .venv (cargo xtask test creates it)");
            return;
        }
    };
    let aws = clouds::bedrock_mock().await;
    let (tokens, account) = TokenServer::with_account().await;
    let gcp = MockUpstream::start().await.with_token_server(&tokens);
    let co = MockUpstream::start().await;
    let gw = Gateway::start_with_env(
        json!({"providers": {
            "bedrock": clouds::bedrock(&aws.url()),
            "vertex": clouds::vertex(&gcp.url(), &account.json),
            "cohere": clouds::cohere(&co.url()),
        }}),
        &[("TEST_AWS_SECRET", clouds::SECRET)],
    )
    .await;
    let script = switchyard_tests::repo_root().join("tests/python/clouds_check.py");
    let base = gw.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .args([
                "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0",
                "vertex/gemini-2.0-flash",
                "vertex/claude-3-5-haiku@20241022",
                "cohere/command-r-plus",
                "--embed",
                "bedrock/amazon.titan-embed-text-v2:0",
                "bedrock/cohere.embed-english-v3",
                "vertex/text-embedding-005",
                "cohere/embed-english-v3.0",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.matches("chat ok").count(), 4, "{stdout}");
    assert_eq!(stdout.matches("embed ok").count(), 4, "{stdout}");
    assert_eq!(aws.sigv4_failures(), 0);
    assert_eq!(gcp.bearer_failures(), 0);
}
