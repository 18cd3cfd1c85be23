//! `redis-server` for the shared key-value tests (`tests/it/redis_kv.rs`): Debian's
//! `redis-server` package, installed with apt-get when it is missing (CI runs as root on
//! Debian). The tests start and stop their own servers on free ports.

use std::process::Command;

use anyhow::{bail, Result};

use crate::browser::on_path;
use crate::tasks::run_cmd;

/// Make sure `redis-server` runs; install Debian's package if it does not.
pub fn ensure_redis_server() -> Result<()> {
    if on_path("redis-server") {
        eprintln!("+ redis-server is installed");
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!("redis-server is missing and there is no apt-get to install it; install Redis and put `redis-server` on PATH");
    }
    let install = || {
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "redis-server"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_cmd(Command::new("apt-get").args(["update"]))?;
        install()?;
    }
    if !on_path("redis-server") {
        bail!("apt-get installed redis-server but `redis-server --version` still fails");
    }
    Ok(())
}
