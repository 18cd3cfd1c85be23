//! `cargo xtask test` (the CI entry point) and `cargo xtask run` (the quick start).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Run `cmd`, echoing it, and fail loudly on a non-zero exit.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Everything CI checks: format, lints, plugin builds, every test.
pub fn test() -> Result<()> {
    let started = Instant::now();
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // Components the tests load: the example plugins, the fault fixtures, the Python plugin
    // (and the virtualenv with the official `openai` SDK the SDK tests drive).
    crate::plugins::build_plugins()?;
    crate::python::ensure_venv()?;
    crate::python::build_python_plugin()?;
    crate::js::build_js_plugin()?;
    // The status-page test drives a real browser.
    crate::browser::ensure_chromium()?;
    // The shared key-value tests start real Redis servers.
    crate::redis::ensure_redis_server()?;
    crate::plugins::lint_plugins()?;
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The SIGTERM test runs the real binary.
    run_cmd(cargo().args(["build", "--package", "switchyard", "--bin", "switchyard"]))?;
    crate::plugins::test_plugins()?;
    crate::plugins::check_new_projects(&gateway_bin())?;
    let e2e = root().join("plugins/target/fixtures/e2e.wasm");
    run_cmd(
        cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .env("SWITCHYARD_TEST_PLUGIN", &e2e),
    )?;
    eprintln!(
        "xtask test: all green in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The debug gateway binary `cargo build` writes (the tests that run the binary use it too).
pub fn gateway_bin() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("debug/switchyard")
}

/// The gateway and the mock upstream, optimised (`target/release`).
pub fn build_release_bins() -> Result<()> {
    run_cmd(cargo().args([
        "build",
        "--release",
        "--package",
        "switchyard",
        "--package",
        "switchyard-tests",
        "--bins",
    ]))
}

/// Kills the child when dropped, so Ctrl-C on `run` takes the mock down too.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Build the plugins, start the demo upstream on 127.0.0.1:8090 and the gateway with
/// `config.json` in the foreground.
pub fn run(args: &[String]) -> Result<()> {
    crate::plugins::build_plugins()?;
    build_release_bins()?;
    let target = root().join("target/release");
    eprintln!("+ starting the demo upstream (mock-upstream) on 127.0.0.1:8090");
    let mock = Guard(
        Command::new(target.join("mock-upstream"))
            .args(["--listen", "127.0.0.1:8090"])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start mock-upstream")?,
    );
    wait_for_port("127.0.0.1:8090", Duration::from_secs(10))?;
    let config = args
        .first()
        .cloned()
        .unwrap_or_else(|| "config.json".into());
    let mut gateway = Command::new(target.join("switchyard"));
    gateway.current_dir(root()).args(["--config", &config]);
    let result = run_cmd(&mut gateway);
    drop(mock);
    result
}

pub fn wait_for_port(addr: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after {} s", limit.as_secs())
}
