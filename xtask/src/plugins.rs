//! The Rust plugins (`plugins/`, their own cargo workspace): build them as WebAssembly
//! components and run their native unit tests.
//!
//! Outputs:
//! - `plugins/build/<name>.wasm`: the gateway's plugins (`metrics`, `rate-limit`, `redact`),
//!   the directory `config.json` points the gateway at (and that it watches).
//! - `plugins/target/fixtures/<name>.wasm`: the fault fixtures of the host's tests (`trap`,
//!   `spin`, `hog`, `init-fail`, `other-world`, `tagger`, `tagger-b`, `e2e`, `headers`). Not in
//!   `plugins/build/`, where a watching gateway would list them.
//!
//! Packages built for WIT 0.2.0 ([`V0_2_PACKAGES`]) are built in a cargo invocation of their
//! own: the SDK's `v0_1` and `v0_2` features exclude each other on wasm32, and cargo unifies
//! features over the packages of one invocation.
//!
//! The wasm32 target comes from rustup when it can (`rustup target add`, with a timeout: the
//! distribution server has been seen hanging), else from Debian's packages, whose std is
//! built from source with `-Z build-std` (`RUSTC_BOOTSTRAP=1`). Set
//! `SWITCHYARD_WASM_TOOLCHAIN=rustup` or `=debian` to force one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::tasks::{root, run_cmd};

const TARGET: &str = "wasm32-unknown-unknown";
/// How long `rustup target add` may take before the Debian route is tried.
const RUSTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Debian packages of the fallback route. `rust-lld` is a link to `lld-22`, which nothing
/// pulls in, so it is named.
const DEBIAN_PACKAGES: [&str; 5] = [
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-llvm",
    "lld-22",
];

/// (cargo library name, file name) of the gateway's plugins.
const PLUGINS: [(&str, &str); 3] = [
    ("metrics", "metrics"),
    ("rate_limit", "rate-limit"),
    ("redact", "redact"),
];
/// Cargo packages built against `switchyard:plugin@0.2.0` (the rest use 0.1.0).
const V0_2_PACKAGES: [&str; 2] = ["metrics", "headers"];
/// (cargo library name, file name) of the test fixtures.
const FIXTURES: [(&str, &str); 9] = [
    ("e2e", "e2e"),
    ("headers", "headers"),
    ("hog", "hog"),
    ("init_fail", "init-fail"),
    ("other_world", "other-world"),
    ("spin", "spin"),
    ("tagger", "tagger"),
    ("tagger_b", "tagger-b"),
    ("trap", "trap"),
];

/// Where the wasm32 standard library comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Toolchain {
    /// rustup's `rust-std` for wasm32-unknown-unknown.
    Rustup,
    /// Debian's `rustc-web`, building std from `rust-web-src`.
    Debian,
}

fn plugins_dir() -> PathBuf {
    root().join("plugins")
}

/// The plugins workspace's target directory (never the host's `target/`).
fn target_dir() -> PathBuf {
    plugins_dir().join("target")
}

/// Where the fixtures are copied.
fn fixtures_dir() -> PathBuf {
    target_dir().join("fixtures")
}

/// Build every plugin and fixture in release and copy the components into place. Cargo
/// skips the work when nothing changed; unchanged outputs are not rewritten, so a watching
/// gateway does not reload for nothing.
pub fn build_plugins() -> Result<()> {
    let started = Instant::now();
    let toolchain = ensure_wasm_target()?;
    // The 0.1.0 packages (the whole workspace but the 0.2.0 ones), then the 0.2.0 ones.
    let mut v0_1 = vec!["--workspace".to_owned()];
    v0_1.extend(V0_2_PACKAGES.iter().map(|p| format!("--exclude={p}")));
    let v0_2: Vec<String> = V0_2_PACKAGES
        .iter()
        .map(|p| format!("--package={p}"))
        .collect();
    for packages in [v0_1, v0_2] {
        let mut cmd = cargo(toolchain);
        cmd.args(["build", "--release", "--target", TARGET, "--target-dir"])
            .arg(target_dir())
            .args(&packages);
        if toolchain == Toolchain::Debian {
            cmd.args(["-Z", "build-std=std,panic_abort"]);
        }
        run_cmd(&mut cmd)?;
    }

    let out = target_dir().join(TARGET).join("release");
    let build = plugins_dir().join("build");
    for (lib, name) in PLUGINS {
        install(
            &out.join(format!("{lib}.wasm")),
            &build.join(format!("{name}.wasm")),
        )?;
    }
    let fixtures = fixtures_dir();
    for (lib, name) in FIXTURES {
        install(
            &out.join(format!("{lib}.wasm")),
            &fixtures.join(format!("{name}.wasm")),
        )?;
    }
    eprintln!(
        "xtask build-plugins: {} plugins in {}, {} fixtures in {} ({:.1} s)",
        PLUGINS.len(),
        build.display(),
        FIXTURES.len(),
        fixtures.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Run the plugins' and the SDK's unit tests natively (for the host's target triple).
pub fn test_plugins() -> Result<()> {
    let host = host_triple()?;
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(plugins_dir())
        .args(["test", "--target", &host, "--target-dir"])
        .arg(target_dir());
    run_cmd(&mut cmd)?;
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(root().join("sdk"))
        .args(["test", "--all-features", "--target-dir"])
        .arg(target_dir().join("sdk"));
    run_cmd(&mut cmd)
}

fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The command that builds the plugins workspace with `toolchain`.
fn cargo(toolchain: Toolchain) -> Command {
    let mut cmd = match toolchain {
        Toolchain::Rustup => Command::new(cargo_program()),
        Toolchain::Debian => {
            let mut c = Command::new("/usr/bin/cargo");
            // Debian's rustc, and its wasm-component-ld / rust-lld, before rustup's.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![PathBuf::from("/usr/bin")];
            dirs.extend(std::env::split_paths(&path));
            c.env("PATH", std::env::join_paths(dirs).unwrap_or(path))
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTDOC");
            c
        }
    };
    // `.cargo/config.toml` there sets the target and the linker (wasm-component-ld).
    cmd.current_dir(plugins_dir());
    cmd
}

/// Make sure the wasm32 target can be built, and say which route is taken.
fn ensure_wasm_target() -> Result<Toolchain> {
    match std::env::var("SWITCHYARD_WASM_TOOLCHAIN").as_deref() {
        Ok("rustup") => {
            eprintln!("xtask: wasm toolchain forced to rustup (SWITCHYARD_WASM_TOOLCHAIN)");
            if !rustup_has_target()? && !rustup_add_target()? {
                bail!("rustup could not install {TARGET}");
            }
            return Ok(Toolchain::Rustup);
        }
        Ok("debian") => {
            eprintln!("xtask: wasm toolchain forced to Debian (SWITCHYARD_WASM_TOOLCHAIN)");
            ensure_debian()?;
            return Ok(Toolchain::Debian);
        }
        Ok(other) => bail!("SWITCHYARD_WASM_TOOLCHAIN={other}: expected rustup or debian"),
        Err(_) => {}
    }
    match rustup_has_target() {
        Ok(true) => {
            eprintln!("xtask: building plugins with rustup's {TARGET} target (installed)");
            return Ok(Toolchain::Rustup);
        }
        Ok(false) => {
            eprintln!(
                "xtask: {TARGET} is not installed; trying `rustup target add` ({} s limit)",
                RUSTUP_TIMEOUT.as_secs()
            );
            match rustup_add_target() {
                Ok(true) => {
                    eprintln!("xtask: building plugins with rustup's {TARGET} target");
                    return Ok(Toolchain::Rustup);
                }
                Ok(false) => {}
                Err(e) => eprintln!("xtask: rustup target add failed: {e:#}"),
            }
        }
        Err(e) => eprintln!("xtask: rustup not usable: {e:#}"),
    }
    eprintln!(
        "xtask: falling back to Debian's rustc-web (std built with -Z build-std; \
         RUSTC_BOOTSTRAP=1 /usr/bin/cargo)"
    );
    ensure_debian()?;
    Ok(Toolchain::Debian)
}

fn rustup_has_target() -> Result<bool> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run rustup")?;
    if !out.status.success() {
        bail!("rustup target list failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET))
}

/// `rustup target add`, polled so a hanging download cannot stall the build. False on a
/// failure or timeout.
fn rustup_add_target() -> Result<bool> {
    eprintln!("+ rustup target add {TARGET}");
    let mut child = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start rustup")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                eprintln!("xtask: rustup target add failed with {status}");
            }
            return Ok(status.success());
        }
        if started.elapsed() > RUSTUP_TIMEOUT {
            eprintln!(
                "xtask: rustup target add still running after {} s; giving up on it",
                RUSTUP_TIMEOUT.as_secs()
            );
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn debian_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\\n"])
        .args(DEBIAN_PACKAGES)
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            o.status.success()
                && s.lines().count() == DEBIAN_PACKAGES.len()
                && s.lines().all(|l| l.ends_with(" installed"))
        })
        .unwrap_or(false)
}

fn ensure_debian() -> Result<()> {
    if debian_installed() {
        eprintln!(
            "xtask: Debian packages present: {}",
            DEBIAN_PACKAGES.join(" ")
        );
        return Ok(());
    }
    eprintln!(
        "xtask: installing Debian packages {} (about 30 s)",
        DEBIAN_PACKAGES.join(" ")
    );
    run_cmd(Command::new("apt-get").arg("update"))
        .context("apt-get update (the Debian route needs root)")?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(DEBIAN_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install")?;
    Ok(())
}

fn host_triple() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("cannot run {rustc} -vV"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host triple")
}

/// A component starts with the wasm magic and version 0x0d, layer 1 (a core module has
/// version 1, layer 0): catch a linker that did not componentize.
fn is_component(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm") && bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00])
}

/// Copy `from` to `to` unless it is already there, through a temporary file and a rename so
/// a watching gateway never reads half a file.
fn install(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
    if !is_component(&bytes) {
        bail!(
            "{} is not a WebAssembly component (is the linker wasm-component-ld?)",
            from.display()
        );
    }
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = to.parent().context("output path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("plugin")
    ));
    std::fs::write(&tmp, &bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("rename to {}", to.display()))?;
    eprintln!("  {} ({} KB)", to.display(), bytes.len().div_ceil(1024));
    Ok(())
}

/// `cargo fmt --check` and `cargo clippy -D warnings` for the SDK and the plugins workspace
/// (natively: the wasm-only glue is the SDK's macro, exercised by every plugin build).
pub fn lint_plugins() -> Result<()> {
    let host = host_triple()?;
    for dir in [plugins_dir(), root().join("sdk")] {
        let mut fmt = Command::new(cargo_program());
        fmt.current_dir(&dir)
            .args(["fmt", "--all", "--", "--check"]);
        run_cmd(&mut fmt)?;
        let mut clippy = Command::new(cargo_program());
        clippy
            .current_dir(&dir)
            .args(["clippy", "--all-targets", "--target", &host, "--target-dir"])
            .arg(target_dir().join("lint"))
            .args(["--", "-D", "warnings"]);
        run_cmd(&mut clippy)?;
    }
    Ok(())
}

/// `switchyard plugin new` must write projects that build and load as they are: write a Rust
/// and a Python one with the gateway binary `bin`, build each with the same toolchains as
/// the example plugins, and check with `switchyard plugin inspect` and `plugin test` that
/// the component loads and refuses a request with its blocked word.
pub fn check_new_projects(bin: &Path) -> Result<()> {
    let work = target_dir().join("new-projects");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let config = work.join("config.json");
    std::fs::write(
        &config,
        r#"{"name": "my-guard", "deadline_ms": 500, "memory_limit_mib": 128, "config": {"blocked_words": ["secret"]}}"#,
    )?;
    let request = work.join("request.json");
    std::fs::write(
        &request,
        r#"{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "a Secret plan"}]}"#,
    )?;
    let check = |wasm: &Path| -> Result<()> {
        run_cmd(Command::new(bin).args(["plugin", "inspect"]).arg(wasm))?;
        let out = Command::new(bin)
            .args(["plugin", "test"])
            .arg(wasm)
            .arg("--config")
            .arg(&config)
            .arg("--request")
            .arg(&request)
            .output()
            .context("cannot run switchyard plugin test")?;
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("{text}");
        if !out.status.success() || !text.contains("reject 400 blocked_word") {
            bail!(
                "{} does not refuse a blocked word:\n{text}{}",
                wasm.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };

    let rust = work.join("rust");
    run_cmd(
        Command::new(bin)
            .args(["plugin", "new", "my-guard", "--lang", "rust", "--dir"])
            .arg(&rust),
    )?;
    let toolchain = ensure_wasm_target()?;
    let mut cmd = cargo(toolchain);
    // The project's own .cargo/config.toml (target, linker) applies from its directory;
    // the shared target directory reuses the example plugins' compiled dependencies.
    cmd.current_dir(&rust)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir().join("new-rust"));
    if toolchain == Toolchain::Debian {
        cmd.args(["-Z", "build-std=std,panic_abort"]);
    }
    run_cmd(&mut cmd)?;
    check(
        &target_dir()
            .join("new-rust")
            .join(TARGET)
            .join("release/my_guard.wasm"),
    )?;

    let componentize = crate::python::venv_bin(&root().join(".venv"), "componentize-py");
    if componentize.is_file() {
        let py = work.join("python");
        run_cmd(
            Command::new(bin)
                .args(["plugin", "new", "my-guard", "--lang", "python", "--dir"])
                .arg(&py),
        )?;
        run_cmd(Command::new(&componentize).current_dir(&py).args([
            "-d",
            "wit",
            "-w",
            "plugin",
            "componentize",
            "app",
            "-o",
            "my_guard.wasm",
        ]))?;
        check(&py.join("my_guard.wasm"))?;
    } else {
        bail!(
            "{} is missing: the test command creates .venv first",
            componentize.display()
        );
    }
    eprintln!("xtask: `switchyard plugin new` projects (rust, python) build and load");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_header() {
        assert!(is_component(b"\0asm\x0d\0\x01\0rest"));
        assert!(!is_component(b"\0asm\x01\0\0\0rest"));
        assert!(!is_component(b"\0as"));
    }
}
