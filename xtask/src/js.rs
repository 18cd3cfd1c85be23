//! The example JavaScript plugin (`plugins/js/app.js`): `@bytecodealliance/componentize-js`
//! from npm, installed into `plugins/js/node_modules` (nothing global), builds it into
//! `plugins/target/js/tier_router.wasm`. Plain `jco componentize` 1.35 fails here ("failed to
//! get path metadata"), so componentize-js is called directly, with the WIT as a relative
//! path; `-d http -d fetch-event` because the gateway links no `wasi:http`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use crate::tasks::{root, run_cmd};

const SRC: &str = "plugins/js";
const OUT: &str = "plugins/target/js/tier_router.wasm";

fn modified(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Install componentize-js locally (when `package.json` changed) and build the component
/// (when `app.js`, the WIT or the install changed). Returns its path.
pub fn build_js_plugin() -> Result<PathBuf> {
    let root = root();
    let src = root.join(SRC);
    let out = root.join(OUT);
    let installed = src.join("node_modules/.package-lock.json");
    if modified(&installed) < modified(&src.join("package.json")) {
        run_cmd(
            Command::new("npm")
                .current_dir(&src)
                .args(["install", "--no-audit", "--no-fund"]),
        )
        .context("npm install of @bytecodealliance/componentize-js (is node/npm installed?)")?;
    } else {
        eprintln!("+ {SRC}/node_modules is up to date");
    }
    let newest = modified(&src.join("app.js"))
        .max(modified(&root.join("wit/0.1.0/plugin.wit")))
        .max(modified(&installed));
    if out.exists() && modified(&out) > newest {
        eprintln!("+ {OUT} is up to date");
        return Ok(out);
    }
    let dir = out.parent().context("output has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join("tier_router.wasm.tmp");
    let started = Instant::now();
    run_cmd(
        Command::new(src.join("node_modules/.bin/componentize-js"))
            .current_dir(&src)
            .args([
                "app.js",
                "--wit",
                "../../wit/0.1.0",
                "--world-name",
                "plugin",
            ])
            .args(["-d", "http", "-d", "fetch-event", "-o"])
            .arg(&tmp),
    )?;
    std::fs::rename(&tmp, &out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "+ built {OUT} ({:.1} MB) in {:.0} s",
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}
