//! Build tasks. `cargo xtask test` is the CI entry point; `cargo xtask run` the quick start.

mod bench;
mod browser;
mod js;
mod memory;
mod peers;
mod plugins;
mod python;
mod redis;
mod tasks;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <command>
  run [CONFIG]      build the plugins, start the demo upstream and the gateway (config.json)
  test              everything CI checks: formatting, lints, plugin builds, every test
  build-plugins     build the example plugins (plugins/build) and the test fixtures
  python-plugin     build the example Python plugin (componentize-py, in .venv)
  check-new-projects  build what `switchyard plugin new` writes (rust, python) and load it
  js-plugin         build the example JavaScript plugin (componentize-js from npm, locally)
  bench [--quick]   overhead, throughput, memory and streaming figures beside nginx and crabllm -> docs/benchmarks.md
  bench-memory [--debug|--no-build|--bins DIR]  memory one ~9.4 MiB request (and 4 at once) costs -> docs/benchmarks.md";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => tasks::test(),
        Some("run") => tasks::run(&args[1..]),
        Some("build-plugins") => plugins::build_plugins(),
        Some("python-plugin") => {
            let wasm = python::build_python_plugin()?;
            println!("{}", wasm.display());
            Ok(())
        }
        Some("bench") => bench::bench(&args[1..]),
        Some("bench-memory") => memory::bench_memory(&args[1..]),
        Some("js-plugin") => {
            let wasm = js::build_js_plugin()?;
            println!("{}", wasm.display());
            Ok(())
        }
        Some("check-new-projects") => plugins::check_new_projects(&tasks::gateway_bin()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
