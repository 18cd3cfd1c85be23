//! The mock upstream as a process, for `cargo xtask run` (the README's demo provider) and the
//! benchmarks: `mock-upstream --listen 127.0.0.1:8090 [--latency-ms N] [--reply-words N]`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard_tests::mock::{MockOptions, MockUpstream};

const USAGE: &str =
    "usage: mock-upstream [--listen ADDR (127.0.0.1:8090)] [--latency-ms N] [--reply-words N]";

fn main() -> Result<()> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8090).into();
    let mut options = MockOptions {
        record: false,
        ..MockOptions::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = v
                    .parse()
                    .with_context(|| format!("--listen {v}: not an address"))?;
            }
            "--latency-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .with_context(|| format!("--latency-ms {v}: not a number"))?;
                options.latency = Duration::from_millis(ms);
            }
            "--reply-words" => {
                let v = value()?;
                let n: usize = v
                    .parse()
                    .with_context(|| format!("--reply-words {v}: not a number"))?;
                options.reply = vec!["token"; n.max(1)].join(" ");
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let threads = std::env::var("MOCK_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mock = MockUpstream::bind(listen, options)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        println!("mock-upstream listening on {}", mock.url());
        tokio::signal::ctrl_c().await?;
        drop(mock);
        Ok(())
    })
}
