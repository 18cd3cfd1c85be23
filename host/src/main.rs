//! The `switchyard` binary: parse the command line, start logging, load the config, serve;
//! or run one of the `switchyard plugin` tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard::config::{validate::ProcessEnv, Config, LogFormat};
use switchyard::plugin_cli::{self, Lang, TestInputs};

/// jemalloc returns what a burst of large requests freed to the OS within seconds (glibc's
/// arenas kept it resident); the background thread does the purging off the request path.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An AI gateway: the OpenAI API in front of many LLM providers, with WebAssembly plugins.
#[derive(Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    /// Config file.
    #[arg(short, long, value_name = "PATH", default_value = "config.json")]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Log lines as `text` (colours only on a terminal) or `json` (one object per line);
    /// overrides `logging.format`.
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Tools for plugin authors (no gateway needed).
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Say what a component is: WIT version, hooks, imports, size, and whether this gateway
    /// loads it (exit status 1 if not).
    Inspect {
        file: PathBuf,
        /// The plugin's config (its `config` object, or a whole plugins.entries[] item),
        /// given to `init`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run a component's hooks offline with the gateway's runtime, limits and imports (an
    /// in-memory store, no network) and print what each returned, its logs, metrics and
    /// timings.
    Test {
        file: PathBuf,
        /// The plugin's config: its `config` object, or a whole plugins.entries[] item (then
        /// its deadline_ms and memory_limit_mib apply too).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The request body, OpenAI-shaped (chat, completion or embedding).
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// A provider response body for the post-hook.
        #[arg(long, value_name = "FILE")]
        response: Option<PathBuf>,
        /// Stream chunks for the chunk hook, one JSON object per line (`data: ` and
        /// `[DONE]` lines of an SSE capture are accepted).
        #[arg(long, value_name = "CHUNKS.jsonl")]
        stream: Option<PathBuf>,
        /// Hook deadline in milliseconds, unless the config entry gives one.
        #[arg(long, value_name = "MS")]
        deadline_ms: Option<u64>,
    },
    /// Write a new plugin project that builds into a loadable component.
    New {
        name: String,
        /// rust, python or js.
        #[arg(long, value_name = "LANG")]
        lang: Lang,
        /// Directory to write (default: NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The Rust SDK's directory (default: the one beside this gateway's sources).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Plugin(cmd)) = cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
            )
            .with_writer(std::io::stderr)
            .init();
        return plugin(cmd);
    }
    let path = cli.config;
    let (config, warnings) = match Config::load(&path, &ProcessEnv) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Logging follows the config (format, access log), so it starts once that is read.
    let telemetry = match switchyard::telemetry::init(&config, cli.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    if cli.check {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    let served = switchyard::serve_file(config, &path).await;
    telemetry.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    LogFormat::parse(s).ok_or_else(|| format!("{s:?}: expected text or json"))
}

fn plugin(cmd: PluginCommand) -> ExitCode {
    plugin_cli::use_default_compile_cache();
    let result = match cmd {
        PluginCommand::Inspect { file, config } => plugin_cli::read_options(config.as_deref())
            .and_then(|opts| plugin_cli::inspect(&file, &opts)),
        PluginCommand::Test {
            file,
            config,
            request,
            response,
            stream,
            deadline_ms,
        } => {
            let inputs = TestInputs {
                file,
                config,
                request,
                response,
                stream,
                deadline: deadline_ms.map(Duration::from_millis),
            };
            plugin_cli::test(&inputs)
        }
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            plugin_cli::new_project(&name, lang, dir.as_deref(), sdk.as_deref()).map(|s| (s, true))
        }
    };
    match result {
        Ok((text, ok)) => {
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("switchyard plugin: {e}");
            ExitCode::from(2)
        }
    }
}
