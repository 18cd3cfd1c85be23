//! The `switchyard` binary: parse the command line, start logging, load the config, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use switchyard::config::{validate::ProcessEnv, Config, LogFormat};

/// jemalloc returns what a burst of large requests freed to the OS within seconds (glibc's
/// arenas kept it resident); the background thread does the purging off the request path.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage: switchyard [--config PATH] [--check] [--log-format text|json]\n  --config PATH  config file (default: config.json)\n  --check        validate the config and exit\n  --log-format   text (default) or json: one JSON object per line (overrides logging.format)";

#[tokio::main]
async fn main() -> ExitCode {
    let mut log_format = None;
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
            "--log-format" => match args.next().as_deref().map(LogFormat::parse) {
                Some(Some(f)) => log_format = Some(f),
                _ => return usage_error("--log-format needs text or json"),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let (config, warnings) = match Config::load(&path, &ProcessEnv) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match switchyard::telemetry::init(&config, log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    if check {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    let served = switchyard::serve(config).await;
    telemetry.shutdown().await;
    match served {
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
