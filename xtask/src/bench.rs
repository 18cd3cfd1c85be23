//! `cargo xtask bench`: the gateway's overhead, throughput, memory and streaming rate against
//! the project's own mock upstream, measured with `oha` (installed from crates.io into
//! `build/tools`), and written to `docs/benchmarks.md`.
//!
//! Five targets in one run: (a) the mock directly, (n) nginx as a plain reverse proxy in front
//! of it, (r) crabllm (another Rust LLM gateway) in front of it, (b) the gateway with no
//! plugins, (c) the gateway with the three example plugins (metrics, rate-limit, redact) on
//! every request. The peers are set up by `peers.rs`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::tasks::{build_release_bins, root, run_cmd, wait_for_port, Guard};

/// `oha` pinned: the figures must be comparable between runs.
const OHA_VERSION: &str = "1.16.0";
pub(crate) const MOCK_ADDR: &str = "127.0.0.1:18090";
const PLAIN_GW: &str = "127.0.0.1:18081";
const PLUGIN_GW: &str = "127.0.0.1:18082";
const NGINX_PLAIN: &str = "127.0.0.1:18083";
const NGINX_STREAM: &str = "127.0.0.1:18084";
const CRABLLM: &str = "127.0.0.1:18085";
const TRACED_GW: &str = "127.0.0.1:18086";
/// Where row (t) sends its traces: a port nothing listens on, so every export is refused.
const DEAD_COLLECTOR: &str = "http://127.0.0.1:18099";
/// Tokens per streamed answer in the streaming runs.
const STREAM_WORDS: usize = 20;

/// Run lengths; `--quick` shortens them for a smoke run.
struct Plan {
    warmup: Duration,
    closed: Duration,
    connections: u32,
    one_conn_requests: u32,
    one_conn_streams: u32,
    open_rate: u32,
    open: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                warmup: Duration::from_secs(1),
                closed: Duration::from_secs(3),
                connections: 32,
                one_conn_requests: 2_000,
                one_conn_streams: 200,
                open_rate: 2_000,
                open: Duration::from_secs(3),
            }
        } else {
            Plan {
                warmup: Duration::from_secs(3),
                closed: Duration::from_secs(15),
                connections: 32,
                one_conn_requests: 20_000,
                one_conn_streams: 2_000,
                open_rate: 5_000,
                open: Duration::from_secs(15),
            }
        }
    }
}

/// What one target measured.
#[derive(Default, Clone)]
struct Figures {
    closed_rps: f64,
    one_p50_us: f64,
    one_p99_us: f64,
    open_p50_us: f64,
    open_p99_us: f64,
    open_rps: f64,
    errors: u64,
    stream_rps: f64,
    chunks_per_answer: f64,
    /// Streamed answers one after another on one keep-alive connection, as SDK clients send
    /// them: p50 of the whole answer and of the time to its first chunk, in µs.
    stream_one_p50_us: f64,
    stream_ttfc_p50_us: f64,
    peak_rss_mib: Option<f64>,
    /// Mean of the gateway's own `switchyard_gateway_overhead_seconds`.
    self_overhead_us: Option<f64>,
    /// Row (t): spans exported and dropped, from the gateway's `/metrics`.
    spans: Option<SpanCounts>,
}

#[derive(Default, Clone, Copy)]
struct SpanCounts {
    exported: f64,
    dropped: f64,
}

/// Summary of one oha run.
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

pub fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let plan = Plan::new(quick);
    let started = Instant::now();
    crate::plugins::build_plugins()?;
    build_release_bins()?;
    let oha = ensure_oha()?;
    let out_dir = root().join("build/bench");
    std::fs::create_dir_all(&out_dir)?;
    let release = root().join("target/release");

    eprintln!("+ starting mock-upstream on {MOCK_ADDR}");
    let _mock = Guard(
        Command::new(release.join("mock-upstream"))
            .args(["--listen", MOCK_ADDR])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start mock-upstream")?,
    );
    wait_for_port(MOCK_ADDR, Duration::from_secs(10))?;
    let _stream_mock = Guard(
        Command::new(release.join("mock-upstream"))
            .args([
                "--listen",
                "127.0.0.1:18091",
                "--reply-words",
                &STREAM_WORDS.to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the streaming mock-upstream")?,
    );
    wait_for_port("127.0.0.1:18091", Duration::from_secs(10))?;

    if std::net::TcpStream::connect(DEAD_COLLECTOR.trim_start_matches("http://")).is_ok() {
        bail!("row (t) needs nothing listening on {DEAD_COLLECTOR}, but something answers there");
    }
    let plain_cfg = out_dir.join("gateway-plain.json");
    std::fs::write(&plain_cfg, gateway_config(PLAIN_GW, false, ""))?;
    let plugin_cfg = out_dir.join("gateway-plugins.json");
    std::fs::write(&plugin_cfg, gateway_config(PLUGIN_GW, true, ""))?;
    let traced_cfg = out_dir.join("gateway-traced.json");
    std::fs::write(
        &traced_cfg,
        gateway_config(TRACED_GW, false, &traced_telemetry()),
    )?;

    let body_path = out_dir.join("chat.json");
    std::fs::write(&body_path, CHAT_BODY)?;
    let direct_body = out_dir.join("chat-direct.json");
    std::fs::write(
        &direct_body,
        CHAT_BODY.replace("mock/gpt-4o-mini", "gpt-4o-mini"),
    )?;
    let stream_body = out_dir.join("stream.json");
    std::fs::write(
        &stream_body,
        CHAT_BODY
            .replace("\"stream\": false", "\"stream\": true")
            .replace("mock/gpt-4o-mini", "mockstream/gpt-4o-mini"),
    )?;
    let stream_direct = out_dir.join("stream-direct.json");
    std::fs::write(
        &stream_direct,
        CHAT_BODY
            .replace("\"stream\": false", "\"stream\": true")
            .replace("mock/gpt-4o-mini", "gpt-4o-mini"),
    )?;

    let mut rows: Vec<(&str, Figures)> = Vec::new();
    let direct_url = format!("http://{MOCK_ADDR}/v1/chat/completions");
    eprintln!("== (a) mock upstream directly");
    let mut a = measure(&oha, &plan, &direct_url, &direct_body)?;
    stream_run(
        &oha,
        &plan,
        "http://127.0.0.1:18091/v1/chat/completions",
        &stream_direct,
        &mut a,
    )?;
    rows.push(("(a) mock directly", a));

    let upstreams = crate::peers::Upstreams {
        plain: MOCK_ADDR,
        stream: "127.0.0.1:18091",
    };
    {
        let (nginx, version) = crate::peers::start_nginx(&upstreams, NGINX_PLAIN, NGINX_STREAM)?;
        let label = "(n) nginx reverse proxy";
        eprintln!("== {label} ({version})");
        let url = format!("http://{NGINX_PLAIN}/v1/chat/completions");
        crate::peers::check_answers(&url, &direct_body)?;
        let mut f = measure(&oha, &plan, &url, &direct_body)?;
        let stream_url = format!("http://{NGINX_STREAM}/v1/chat/completions");
        stream_run(&oha, &plan, &stream_url, &stream_direct, &mut f)?;
        drop(nginx);
        rows.push((label, f));
    }
    {
        let crab = crate::peers::start_crabllm(&upstreams, CRABLLM)?;
        let pid = crab.0.id();
        let label = "(r) crabllm 0.0.25";
        eprintln!("== {label}");
        let url = format!("http://{CRABLLM}/v1/chat/completions");
        crate::peers::check_answers(&url, &direct_body)?;
        let crab_stream = out_dir.join("stream-crabllm.json");
        std::fs::write(
            &crab_stream,
            CHAT_BODY
                .replace("\"stream\": false", "\"stream\": true")
                .replace("mock/gpt-4o-mini", "stream-model"),
        )?;
        let mut f = measure(&oha, &plan, &url, &direct_body)?;
        stream_run(&oha, &plan, &url, &crab_stream, &mut f)?;
        f.peak_rss_mib = peak_rss_mib(pid);
        drop(crab);
        rows.push((label, f));
    }

    for (label, cfg, addr, traced) in [
        ("(b) gateway, no plugins", &plain_cfg, PLAIN_GW, false),
        ("(c) gateway, 3 Wasm plugins", &plugin_cfg, PLUGIN_GW, false),
        (
            "(t) gateway, no plugins, traces to a collector that is down",
            &traced_cfg,
            TRACED_GW,
            true,
        ),
    ] {
        eprintln!("== {label}");
        let gw = start_gateway(&release, cfg, addr)?;
        let pid = gw.0.id();
        let url = format!("http://{addr}/v1/chat/completions");
        let mut f = measure(&oha, &plan, &url, &body_path)?;
        stream_run(&oha, &plan, &url, &stream_body, &mut f)?;
        f.peak_rss_mib = peak_rss_mib(pid);
        f.self_overhead_us = Some(overhead_metric_mean_us(addr)?);
        if traced {
            f.spans = Some(span_counts(addr)?);
        }
        drop(gw);
        rows.push((label, f));
    }

    let report = render(&rows, &plan, &oha, quick)?;
    println!("{report}");
    let docs = root().join("docs");
    std::fs::create_dir_all(&docs)?;
    // `cargo xtask bench-memory` owns one section of the file: keep it.
    let old = std::fs::read_to_string(docs.join("benchmarks.md")).unwrap_or_default();
    let report = match crate::memory::section_of(&old) {
        Some(memory) => crate::memory::replace_section(&report, memory),
        None => report,
    };
    std::fs::write(docs.join("benchmarks.md"), &report)?;
    eprintln!(
        "xtask bench: wrote docs/benchmarks.md in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const CHAT_BODY: &str = r#"{"model": "mock/gpt-4o-mini", "stream": false, "max_tokens": 64, "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Write one line about gateways. My email is not here and neither is a card number."}]}"#;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// `build/tools/bin/oha`, installed from crates.io on first use.
fn ensure_oha() -> Result<PathBuf> {
    let tools = root().join("build/tools");
    let bin = tools.join("bin/oha");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(OHA_VERSION))
        .unwrap_or(false);
    if !installed {
        eprintln!("+ installing the load generator oha {OHA_VERSION} from crates.io (a few minutes, once)");
        run_cmd(cargo().args([
            "install",
            "--locked",
            "--version",
            OHA_VERSION,
            "--root",
            &tools.to_string_lossy(),
            "oha",
        ]))?;
    }
    Ok(bin)
}

/// A gateway config in front of the two mocks; `extra` is inserted as top-level sections
/// (ending with a comma), e.g. row (t)'s `telemetry`.
pub(crate) fn gateway_config(listen: &str, plugins: bool, extra: &str) -> String {
    let plugin_dir = root().join("plugins/build");
    let entries = if plugins {
        r#"[
      {"name": "metrics", "file": "metrics.wasm"},
      {"name": "rate-limit", "file": "rate-limit.wasm",
       "config": {"rules": [{"match": {}, "per": "client_key", "capacity": 1000000000, "refill_per_second": 1000000000}]}},
      {"name": "redact", "file": "redact.wasm"}
    ]"#
    } else {
        "[]"
    };
    format!(
        r#"{{
  "client": {{"listen": "{listen}", "initial_pool_size": 64, "drop_excess_requests": false}},
  "providers": {{
    "mock": {{"type": "custom", "keys": [],
              "network_config": {{"base_url": "http://{MOCK_ADDR}/v1", "max_retries": 0}},
              "concurrency_and_buffer_size": {{"concurrency": 256, "buffer_size": 4096}}}},
    "mockstream": {{"type": "custom", "keys": [],
              "network_config": {{"base_url": "http://127.0.0.1:18091/v1", "max_retries": 0}},
              "concurrency_and_buffer_size": {{"concurrency": 256, "buffer_size": 4096}}}}
  }},
{extra}  "plugins": {{"directory": "{}", "watch": false, "entries": {entries}}}
}}
"#,
        plugin_dir.display()
    )
}

/// Row (t): tracing on, every request sampled, exporting to [`DEAD_COLLECTOR`]: what an
/// outage of the collector costs requests.
fn traced_telemetry() -> String {
    format!(
        "  \"telemetry\": {{\"otlp_endpoint\": \"{DEAD_COLLECTOR}\", \"sampling_ratio\": 1.0}},\n"
    )
}

pub(crate) fn start_gateway(release: &Path, cfg: &Path, addr: &str) -> Result<Guard> {
    let child: Child = Command::new(release.join("switchyard"))
        .current_dir(root())
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start switchyard")?;
    let guard = Guard(child);
    wait_for_port(addr, Duration::from_secs(30))?;
    Ok(guard)
}

/// Closed loop, one connection, open loop; for the gateway, every answer must be a 200.
fn measure(oha: &Path, plan: &Plan, url: &str, body: &Path) -> Result<Figures> {
    // Warm up connections, pools and caches.
    oha_run(oha, url, body, &["-c", "8", "-z", &secs(plan.warmup)])?;
    let closed = closed_loop(oha, plan, url, body)?;
    let one = oha_run(
        oha,
        url,
        body,
        &["-c", "1", "-n", &plan.one_conn_requests.to_string()],
    )?;
    let open = oha_run(
        oha,
        url,
        body,
        &[
            "-c",
            &plan.connections.to_string(),
            "-q",
            &plan.open_rate.to_string(),
            "-z",
            &secs(plan.open),
            "--latency-correction",
        ],
    )?;
    Ok(Figures {
        closed_rps: closed.rps,
        one_p50_us: one.p50_us,
        one_p99_us: one.p99_us,
        open_p50_us: open.p50_us,
        open_p99_us: open.p99_us,
        open_rps: open.rps,
        errors: closed.errors + one.errors + open.errors,
        ..Figures::default()
    })
}

/// `plan.connections` connections, each sending its next request when the last is answered.
fn closed_loop(oha: &Path, plan: &Plan, url: &str, body: &Path) -> Result<Run> {
    let conns = plan.connections.to_string();
    oha_run(oha, url, body, &["-c", &conns, "-z", &secs(plan.closed)])
}

/// Streaming answers of `STREAM_WORDS` tokens: answers/s at `plan.connections`, SSE events
/// per answer, and answer / first-chunk latency on one keep-alive connection.
fn stream_run(oha: &Path, plan: &Plan, url: &str, body: &Path, f: &mut Figures) -> Result<()> {
    let run = closed_loop(oha, plan, url, body)?;
    f.stream_rps = run.rps;
    f.errors += run.errors;
    // Count the events of one answer with curl-free std: a raw HTTP/1.1 request.
    f.chunks_per_answer = count_sse_events(url, body)?;
    let (whole, first) = keep_alive_streams(url, body, plan.one_conn_streams)?;
    f.stream_one_p50_us = whole;
    f.stream_ttfc_p50_us = first;
    Ok(())
}

/// Send `n` streaming requests one after another on one keep-alive connection and return the
/// p50 of the whole answer and of the time to its first `data:` event, in µs. oha cannot
/// tell the first chunk apart, hence this small HTTP/1.1 client (chunked bodies only, which
/// is how every server here streams).
fn keep_alive_streams(url: &str, body: &Path, n: u32) -> Result<(f64, f64)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let rest = url.strip_prefix("http://").context("url")?;
    let (host, path) = rest.split_once('/').context("url path")?;
    let payload = std::fs::read(body)?;
    let stream = std::net::TcpStream::connect(host)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut request = format!(
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    request.extend_from_slice(&payload);
    let (mut whole, mut first) = (Vec::new(), Vec::new());
    let mut line = String::new();
    for i in 0..n {
        let sent = Instant::now();
        writer.write_all(&request)?;
        let mut chunked = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("{url}: connection closed after {i} streamed answers");
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if l.starts_with("connection: close") {
                bail!("{url}: the server closes the connection after each stream");
            }
            chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
        }
        if !chunked {
            bail!("{url}: the streamed answer is not chunked");
        }
        let mut seen_data = None;
        let mut chunk = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .with_context(|| format!("{url}: bad chunk size {line:?}"))?;
            chunk.resize(size + 2, 0);
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            if seen_data.is_none() && chunk.windows(5).any(|w| w == b"data:") {
                seen_data = Some(sent.elapsed());
            }
        }
        whole.push(sent.elapsed());
        first.push(seen_data.context("a streamed answer without data: events")?);
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Ok((p50(&mut whole), p50(&mut first)))
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn oha_run(oha: &Path, url: &str, body: &Path, extra: &[&str]) -> Result<Run> {
    let out = Command::new(oha)
        .args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .args(["-H", "content-type: application/json", "-D"])
        .arg(body)
        .args(extra)
        .arg(url)
        .output()
        .context("cannot run oha")?;
    if !out.status.success() {
        bail!(
            "oha {} failed: {}",
            extra.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_oha(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("oha {} printed no usable JSON", extra.join(" ")))
}

/// The fields we need from oha's JSON summary (latencies are in seconds there).
fn parse_oha(text: &str) -> Result<Run> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let num = |ptr: &str| -> Result<f64> {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("no {ptr} in oha output"))
    };
    // oha counts any answer as a success; for us only a 200 is.
    let mut answers = 0u64;
    let mut ok = 0u64;
    if let Some(codes) = v["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            answers += n;
            if code == "200" {
                ok += n;
            }
        }
    }
    let transport_errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                // `-z` stops the run with requests in flight; those are not failures.
                .filter(|(k, _)| !k.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(Run {
        rps: num("/summary/requestsPerSec")?,
        p50_us: num("/latencyPercentiles/p50")? * 1e6,
        p99_us: num("/latencyPercentiles/p99")? * 1e6,
        errors: answers - ok + transport_errors,
    })
}

/// Send one streaming request and count its `data:` events (including `[DONE]`).
fn count_sse_events(url: &str, body: &Path) -> Result<f64> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("url")?;
    let (host, path) = rest.split_once('/').context("url path")?;
    let payload = std::fs::read(body)?;
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    )?;
    s.write_all(&payload)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text.matches("data: ").count() as f64)
}

/// VmHWM (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Sum of a counter over all its label sets in a `/metrics` text.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics_text(addr: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// Spans the gateway exported and dropped; with the collector down every span must be
/// accounted as dropped (none silently lost, none exported).
fn span_counts(addr: &str) -> Result<SpanCounts> {
    let text = metrics_text(addr)?;
    let c = SpanCounts {
        exported: counter_sum(&text, "switchyard_trace_spans_exported_total"),
        dropped: counter_sum(&text, "switchyard_trace_spans_dropped_total"),
    };
    eprintln!(
        "   /metrics: {} spans exported, {} dropped",
        c.exported, c.dropped
    );
    if c.dropped == 0.0 {
        bail!("row (t): the collector is down, yet {addr} counted no dropped span");
    }
    Ok(c)
}

/// The gateway exports its own overhead histogram: make sure it saw the run, and return its
/// mean in µs (time in the gateway excluding the upstream call, over every request of the run).
fn overhead_metric_mean_us(addr: &str) -> Result<f64> {
    let text = metrics_text(addr)?;
    let count = text
        .lines()
        .find(|l| l.starts_with("switchyard_gateway_overhead_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let sum = text
        .lines()
        .find(|l| l.starts_with("switchyard_gateway_overhead_seconds_sum"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    if count == 0.0 {
        bail!("switchyard_gateway_overhead_seconds on {addr} counted nothing");
    }
    let mean_us = sum / count * 1e6;
    eprintln!(
        "   /metrics: switchyard_gateway_overhead_seconds mean {mean_us:.1} µs over {count} requests"
    );
    Ok(mean_us)
}

fn version_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("PRETTY_NAME=")).map(|l| {
                l.trim_start_matches("PRETTY_NAME=")
                    .trim_matches('"')
                    .to_owned()
            })
        })
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}, {os}")
}

/// `x / y`, or 0 when `y` measured nothing.
fn ratio(x: f64, y: f64) -> f64 {
    if y > 0.0 {
        x / y
    } else {
        0.0
    }
}

fn render(rows: &[(&str, Figures)], plan: &Plan, oha: &Path, quick: bool) -> Result<String> {
    let direct = rows.first().map(|r| r.1.clone()).unwrap_or_default();
    let mut md = String::new();
    writeln!(md, "# Benchmarks")?;
    writeln!(md)?;
    writeln!(
        md,
        "Produced by `cargo xtask bench{}` on {}.",
        if quick { " --quick" } else { "" },
        machine()
    )?;
    writeln!(
        md,
        "Versions: switchyard {}, {}, wasmtime 48, load generator {}.",
        env!("CARGO_PKG_VERSION"),
        version_of("rustc", &["--version"]),
        version_of(&oha.to_string_lossy(), &["--version"])
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Everything runs on one machine: load generator, gateway and mock upstream share its cores, \
         so absolute figures are lower than on separate hosts; the ratios taken in one run are what to compare."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| target | closed loop req/s ({} conns) | ratio to (a) | p50 / p99 at 1 conn (µs) | added p50 at 1 conn (µs) | gateway's own overhead, mean (µs) | open loop {} req/s: p50 / p99 (µs) | stream answers/s ({STREAM_WORDS} tokens) | chunks/s | stream at 1 keep-alive conn: answer / first chunk p50 (µs) | peak RSS (MiB) | non-200 |",
        plan.connections, plan.open_rate
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for (label, f) in rows {
        let ratio = ratio(f.closed_rps, direct.closed_rps);
        let added = if label.starts_with("(a)") {
            "—".to_owned()
        } else {
            format!("{:.1}", f.one_p50_us - direct.one_p50_us)
        };
        writeln!(
            md,
            "| {label} | {:.0} | {ratio:.2}× | {:.1} / {:.1} | {added} | {} | {:.1} / {:.1} ({:.0}/s) | {:.0} | {:.0} | {:.0} / {:.0} | {} | {} |",
            f.closed_rps,
            f.one_p50_us,
            f.one_p99_us,
            f.self_overhead_us
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "—".into()),
            f.open_p50_us,
            f.open_p99_us,
            f.open_rps,
            f.stream_rps,
            f.stream_rps * f.chunks_per_answer,
            f.stream_one_p50_us,
            f.stream_ttfc_p50_us,
            f.peak_rss_mib
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "—".into()),
            f.errors
        )?;
    }
    writeln!(md)?;
    let find = |p: &str| rows.iter().find(|r| r.0.starts_with(p)).map(|r| &r.1);
    if let (Some(n), Some(r), Some(b), Some(c)) =
        (find("(n)"), find("(r)"), find("(b)"), find("(c)"))
    {
        writeln!(
            md,
            "Ratios within this run (the issue's targets in brackets):"
        )?;
        writeln!(md)?;
        writeln!(md, "| | vs nginx reverse proxy | vs crabllm |")?;
        writeln!(md, "|---|---|---|")?;
        writeln!(
            md,
            "| (b) closed-loop req/s | {:.2}× [≥ 0.5×] | {:.2}× [≥ 1.5×] |",
            ratio(b.closed_rps, n.closed_rps),
            ratio(b.closed_rps, r.closed_rps)
        )?;
        writeln!(
            md,
            "| (c) closed-loop req/s | {:.2}× [≥ 0.35×] | {:.2}× [≥ 1.2×] |",
            ratio(c.closed_rps, n.closed_rps),
            ratio(c.closed_rps, r.closed_rps)
        )?;
        writeln!(
            md,
            "| (b) stream answers/s | {:.2}× | {:.2}× [≥ 1.5×] |",
            ratio(b.stream_rps, n.stream_rps),
            ratio(b.stream_rps, r.stream_rps)
        )?;
        writeln!(
            md,
            "| (c) stream answers/s | {:.2}× | {:.2}× [≥ 1.2×] |",
            ratio(c.stream_rps, n.stream_rps),
            ratio(c.stream_rps, r.stream_rps)
        )?;
        writeln!(md)?;
    }
    if let (Some(b), Some(t)) = (find("(b)"), find("(t)")) {
        let spans = t.spans.unwrap_or_default();
        writeln!(
            md,
            "Tracing with the collector down, (t) against (b) in this run: closed-loop req/s {:.2}×, \
             p50 at 1 conn {:+.1} µs, stream answers/s {:.2}×, own overhead {:+.1} µs; \
             {:.0} spans dropped and counted, {:.0} exported.",
            ratio(t.closed_rps, b.closed_rps),
            t.one_p50_us - b.one_p50_us,
            ratio(t.stream_rps, b.stream_rps),
            t.self_overhead_us.unwrap_or(0.0) - b.self_overhead_us.unwrap_or(0.0),
            spans.dropped,
            spans.exported
        )?;
        writeln!(md)?;
    }
    writeln!(md, "Method:")?;
    writeln!(
        md,
        "- Closed loop: `oha -c {} -z {}` after a {} warm-up. One connection: `oha -c 1 -n {}`. \
         Open loop: `oha -c {} -q {} -z {} --latency-correction`.",
        plan.connections,
        secs(plan.closed),
        secs(plan.warmup),
        plan.one_conn_requests,
        plan.connections,
        plan.open_rate,
        secs(plan.open)
    )?;
    writeln!(
        md,
        "- Added latency: p50 at one connection through the gateway minus p50 directly to the mock, same request body."
    )?;
    writeln!(
        md,
        "- (c) runs `metrics`, `rate-limit` (a bucket too large to ever reject) and `redact` on every request: \
         pre-hook and post-hook of each."
    )?;
    writeln!(
        md,
        "- Streaming: `stream: true` answers of {STREAM_WORDS} tokens; chunks/s = answers/s × SSE events per answer. \
         At one keep-alive connection: {} answers sent one after another on the same connection, as SDK clients do, \
         timed to the end of the answer and to its first `data:` event.",
        plan.one_conn_streams
    )?;
    writeln!(
        md,
        "- (t) is (b) with `telemetry.otlp_endpoint` set to {DEAD_COLLECTOR}, where nothing listens, and \
         every request sampled: each export is refused, and its spans are dropped and counted in \
         `switchyard_trace_spans_dropped_total`."
    )?;
    writeln!(
        md,
        "- Peak RSS: `VmHWM` of the gateway process after all its runs."
    )?;
    writeln!(
        md,
        "- Own overhead: `switchyard_gateway_overhead_seconds` from the gateway's `/metrics` (sum / count over \
         all requests of its runs): time in the gateway excluding the upstream call, as operators see it in production."
    )?;
    Ok(md)
}
