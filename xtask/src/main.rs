//! Build tasks. `cargo xtask test` is the CI entry point; `cargo xtask run` the quick start.

mod tasks;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => tasks::test(),
        Some("run") => tasks::run(&args[1..]),
        _ => bail!("usage: cargo xtask <test|run [CONFIG]>"),
    }
}
