//! The `switchyard` binary: parse the command line, start logging, load the config, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use switchyard::config::{validate::ProcessEnv, Config};

/// jemalloc returns what a burst of large requests freed to the OS within seconds (glibc's
/// arenas kept it resident); the background thread does the purging off the request path.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage: switchyard [--config PATH] [--check]\n  --config PATH  config file (default: config.json)\n  --check        validate the config and exit";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    let mut path = PathBuf::from("config.json");
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => path = PathBuf::from(p),
                None => return usage_error("--config needs a path"),
            },
            "--check" => check = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let config = match Config::load(&path, &ProcessEnv) {
        Ok((config, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            config
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if check {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    match switchyard::serve_file(config, &path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("switchyard: {msg}\n{USAGE}");
    ExitCode::from(2)
}
