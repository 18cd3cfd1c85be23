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
