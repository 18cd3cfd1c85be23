//! Python tooling: the repository's virtualenv (`.venv`, with the `openai` SDK for the
//! integration tests and `componentize-py` for plugins) and the example Python plugin
//! (`plugins/python/`), built into `plugins/target/python/word_guard.wasm`.
//!
//! The output stays out of `plugins/build/` on purpose: that is the directory a running
//! gateway watches, and an 18 MB component appearing there would be loaded (or listed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use crate::tasks::{root, run_cmd};

/// The pinned requirements, relative to the repository root.
const REQUIREMENTS: &str = "tests/python/requirements.txt";
/// Written into the venv after a successful install; holds the requirements it installed.
const STAMP: &str = ".switchyard-requirements";
/// The example plugin: its source directory, its module (`app.py`) and the output's name.
const PLUGIN_SRC: &str = "plugins/python";
const PLUGIN_MODULE: &str = "app";
const PLUGIN_NAME: &str = "word_guard";
/// Where the component goes (under `plugins/target/`, which git ignores).
const PLUGIN_OUT: &str = "plugins/target/python";

pub fn venv_bin(venv: &Path, tool: &str) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join(format!("{tool}.exe"))
    } else {
        venv.join("bin").join(tool)
    }
}

/// Create `<repo>/.venv` if it is missing and install the pinned requirements into it,
/// unless the stamp says exactly these requirements are installed already. Returns the
/// venv's `python`. `$PYTHON` (default `python3`) creates the venv.
pub fn ensure_venv() -> Result<PathBuf> {
    let root = root();
    let venv = root.join(".venv");
    let python = venv_bin(&venv, "python");
    let req_path = root.join(REQUIREMENTS);
    let requirements = std::fs::read_to_string(&req_path)
        .with_context(|| format!("cannot read {}", req_path.display()))?;
    if !python.exists() {
        let base = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
        run_cmd(Command::new(base).args(["-m", "venv"]).arg(&venv))
            .context("cannot create .venv (is python3 with the venv module installed?)")?;
    }
    let stamp = venv.join(STAMP);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        eprintln!("+ .venv is up to date with {REQUIREMENTS}");
        return Ok(python);
    }
    let started = Instant::now();
    run_cmd(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&req_path),
    )?;
    std::fs::write(&stamp, &requirements)
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    eprintln!(
        "+ .venv: {REQUIREMENTS} installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(python)
}

/// Build the example Python plugin with componentize-py from the venv. Skipped when the
/// component is newer than every `.py` file of the plugin, the WIT and the requirements
/// (which pin componentize-py). Returns the component's path.
pub fn build_python_plugin() -> Result<PathBuf> {
    let root = root();
    let src = root.join(PLUGIN_SRC);
    let out_dir = root.join(PLUGIN_OUT);
    let out = out_dir.join(format!("{PLUGIN_NAME}.wasm"));
    let mut newest = newest_file(&src, "py")?;
    newest = newest.max(newest_file(&root.join("wit/0.1.0"), "wit")?);
    newest = newest.max(modified(&root.join(REQUIREMENTS))?);
    if out.exists() && modified(&out)? > newest {
        eprintln!(
            "+ {} is up to date",
            out.strip_prefix(&root).unwrap_or(&out).display()
        );
        return Ok(out);
    }
    ensure_venv()?;
    let componentize = venv_bin(&root.join(".venv"), "componentize-py");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    // Write beside the output and rename, so nobody ever reads a half-written component.
    let tmp = out_dir.join(format!("{PLUGIN_NAME}.wasm.tmp"));
    let started = Instant::now();
    run_cmd(
        Command::new(&componentize)
            .current_dir(&root)
            .args([
                "-d",
                "wit/0.1.0",
                "-w",
                "plugin",
                "componentize",
                PLUGIN_MODULE,
                "-p",
            ])
            .arg(PLUGIN_SRC)
            .arg("-o")
            .arg(&tmp),
    )?;
    std::fs::rename(&tmp, &out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "+ built {} ({:.1} MB) in {:.0} s",
        out.strip_prefix(&root).unwrap_or(&out).display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn modified(path: &Path) -> Result<SystemTime> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot stat {}", path.display()))
}

/// The latest modification time of the files ending in `.{ext}` under `dir`
/// (`__pycache__` and hidden directories left out).
fn newest_file(dir: &Path, ext: &str) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if !name.starts_with('.') && name != "__pycache__" {
                newest = newest.max(newest_file(&path, ext)?);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            newest = newest.max(modified(&path)?);
        }
    }
    Ok(newest)
}
