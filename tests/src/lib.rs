//! Test support for Switchyard: a mock LLM upstream that speaks the OpenAI, Azure OpenAI,
//! Anthropic, AWS Bedrock, Vertex AI (Gemini, Claude) and Cohere wire formats (plain,
//! streaming and errors), checks SigV4 signatures and Google access tokens, and can be told to
//! misbehave; a mock Google OAuth2 token server with service-account fixtures; a forwarding
//! HTTP proxy; and paths to the artefacts the test command builds.

pub mod eventstream;
pub mod mock;
pub mod otlp;
pub mod proxy;
pub mod redis;
pub mod service_account;
pub mod sigv4;
pub mod token_server;
pub mod wire;

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
/// `plugins/target/fixtures/<name>.wasm` for the fault fixtures, or
/// `plugins/target/python/<name>.wasm` for the Python example.
pub fn plugin_component(name: &str) -> Option<PathBuf> {
    let root = repo_root();
    [
        root.join("plugins/build").join(format!("{name}.wasm")),
        root.join("plugins/target/fixtures")
            .join(format!("{name}.wasm")),
        root.join("plugins/target/python")
            .join(format!("{name}.wasm")),
        root.join("plugins/target/js").join(format!("{name}.wasm")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// A plugin component the test command builds, or `None` outside CI when it has not been
/// built (run `cargo xtask test`, or `cargo xtask build-plugins`). Under CI a missing
/// component is a failure, not a skip.
pub fn require_plugin(name: &str) -> Option<PathBuf> {
    let found = plugin_component(name);
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("plugin component {name}.wasm is missing: the test command builds it");
        }
        eprintln!("skipped: {name}.wasm not built (cargo xtask build-plugins)");
    }
    found
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Copy `from` into the directory as `name`, atomically (write aside, then rename), as a
    /// deployment would.
    pub fn install(&self, from: &std::path::Path, name: &str) {
        let tmp = self.0.join(format!(".{name}.partial"));
        let done = std::fs::copy(from, &tmp).and_then(|_| std::fs::rename(&tmp, self.0.join(name)));
        if let Err(e) = done {
            panic!("cannot install {} as {name}: {e}", from.display());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Headless Chromium (`chromium` on PATH, Debian's package, which the test command
/// installs), or `None` outside CI when it is missing. Under CI a missing browser fails.
pub fn require_chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    match found {
        Some(b) => Some(PathBuf::from(b)),
        None if std::env::var_os("CI").is_some() => {
            panic!("chromium is missing: the test command installs it (cargo xtask test)")
        }
        None => {
            eprintln!("skipped: chromium not installed (cargo xtask test installs it)");
            None
        }
    }
}
