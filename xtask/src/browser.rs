//! Headless Chromium for the status-page test: Debian's `chromium` package, installed with
//! apt-get when it is missing (CI runs as root on Debian).

use std::process::Command;

use anyhow::{bail, Result};

use crate::tasks::run_cmd;

/// Whether `name --version` runs and succeeds.
pub(crate) fn on_path(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Make sure `chromium` runs; install Debian's package if it does not.
pub fn ensure_chromium() -> Result<()> {
    if on_path("chromium") {
        eprintln!("+ chromium is installed");
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!("chromium is missing and there is no apt-get to install it; install Chromium and put `chromium` on PATH");
    }
    let install = || {
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_cmd(Command::new("apt-get").args(["update"]))?;
        install()?;
    }
    if !on_path("chromium") {
        bail!("apt-get installed chromium but `chromium --version` still fails");
    }
    Ok(())
}
