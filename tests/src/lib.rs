//! Test support for Switchyard: a mock LLM upstream that speaks the OpenAI, Azure OpenAI and
//! Anthropic wire formats (plain, streaming and errors) and can be told to misbehave, a
//! forwarding HTTP proxy, and paths to the artefacts the test command builds.

pub mod mock;
pub mod proxy;
mod wire;

use std::path::PathBuf;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The `switchyard` binary built by the test command (`target/debug/switchyard`), if present.
pub fn gateway_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug").join("switchyard");
    bin.is_file().then_some(bin)
}

/// The virtualenv's Python (`.venv/bin/python`) if the test command created it with `openai`.
pub fn venv_python() -> Option<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let has_openai = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    has_openai.then_some(python)
}

/// A built plugin component: `plugins/build/<name>.wasm` for the example plugins, or
/// `plugins/target/fixtures/<name>.wasm` for the fault fixtures.
pub fn plugin_component(name: &str) -> Option<PathBuf> {
    let root = repo_root();
    [
        root.join("plugins/build").join(format!("{name}.wasm")),
        root.join("plugins/target/fixtures")
            .join(format!("{name}.wasm")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}
