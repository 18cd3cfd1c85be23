//! `cargo xtask bench-memory`: how much memory one large request costs the gateway, and
//! whether it is given back. The body is the worst case for a JSON tree: ~9.4 MiB of
//! 300,000 tiny chat messages, under the default `client.max_request_body_bytes` (10 MiB).
//!
//! For the gateway without plugins and with the three example plugins, each in its own
//! process: one request, then four at once, then a few seconds idle. The peak a run adds is
//! `VmHWM` after it minus `VmRSS` before it (`VmHWM` is reset between runs through
//! `/proc/PID/clear_refs`). Results go to the "Memory per request" section of
//! `docs/benchmarks.md`; the rest of that file is `cargo xtask bench`'s and is kept.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{gateway_config, start_gateway, MOCK_ADDR};
use crate::tasks::{build_release_bins, root, wait_for_port, Guard};

const PLAIN_GW: &str = "127.0.0.1:18181";
const PLUGIN_GW: &str = "127.0.0.1:18182";
const MESSAGES: usize = 300_000;
/// Concurrent requests of the burst.
const BURST: usize = 4;
/// When, after the burst, the gateway's RSS is read: jemalloc purges freed pages on its
/// background thread over about ten seconds (its default decay).
const IDLE: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(15)];

/// The heading of the section this task owns in `docs/benchmarks.md`.
pub const SECTION: &str = "## Memory per request";

/// One gateway's figures, in bytes.
struct Row {
    label: &'static str,
    body: usize,
    base_rss: u64,
    one: Run,
    burst: Run,
    /// RSS at each of [`IDLE`].
    rss_after: Vec<u64>,
}

struct Run {
    peak_added: u64,
    seconds: f64,
    statuses: Vec<u16>,
}

/// `--debug`: the debug binaries (no release build); `--no-build`: the release binaries as
/// they are; `--bins DIR`: `switchyard` and `mock-upstream` from DIR (e.g. copies of an
/// older build, for a before/after comparison).
pub fn bench_memory(args: &[String]) -> Result<()> {
    let debug = args.iter().any(|a| a == "--debug");
    let given = args
        .iter()
        .position(|a| a == "--bins")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    if !debug && given.is_none() && !args.iter().any(|a| a == "--no-build") {
        build_release_bins()?;
    }
    let bins = given.unwrap_or_else(|| target_dir().join(if debug { "debug" } else { "release" }));
    let out_dir = root().join("build/bench");
    std::fs::create_dir_all(&out_dir)?;
    let body = chat_body(MESSAGES);

    eprintln!("+ starting mock-upstream on {MOCK_ADDR}");
    let _mock = Guard(
        Command::new(bins.join("mock-upstream"))
            .args(["--listen", MOCK_ADDR])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bins.join("mock-upstream").display()))?,
    );
    wait_for_port(MOCK_ADDR, Duration::from_secs(10))?;

    let mut rows = Vec::new();
    for (label, addr, plugins) in [
        ("gateway, no plugins", PLAIN_GW, false),
        ("gateway, 3 Wasm plugins", PLUGIN_GW, true),
    ] {
        let cfg = out_dir.join(format!(
            "memory-{}.json",
            if plugins { "plugins" } else { "plain" }
        ));
        std::fs::write(&cfg, gateway_config(addr, plugins, ""))?;
        eprintln!("== {label}");
        let gw = start_gateway(&bins, &cfg, addr)?;
        let pid = gw.0.id();
        // A small request first, so pools and plugin instances exist before the baseline.
        send(addr, &chat_body(2))?;
        std::thread::sleep(Duration::from_millis(500));
        let base_rss = status_kib(pid, "VmRSS:")? * 1024;
        let one = run(pid, addr, &body, 1)?;
        let burst = run(pid, addr, &body, BURST)?;
        let idle_from = Instant::now();
        let mut rss_after = Vec::new();
        for at in IDLE {
            std::thread::sleep(at.saturating_sub(idle_from.elapsed()));
            rss_after.push(status_kib(pid, "VmRSS:")? * 1024);
        }
        drop(gw);
        let row = Row {
            label,
            body: body.len(),
            base_rss,
            one,
            burst,
            rss_after,
        };
        eprintln!("{}", render_row(&row));
        rows.push(row);
    }
    let section = render(&rows, &bins);
    println!("{section}");
    let path = root().join("docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, replace_section(&old, &section))?;
    eprintln!("xtask bench-memory: wrote the \"Memory per request\" section of docs/benchmarks.md");
    for r in &rows {
        let bad: Vec<_> = r
            .one
            .statuses
            .iter()
            .chain(&r.burst.statuses)
            .filter(|s| **s != 200)
            .collect();
        if !bad.is_empty() {
            bail!("{}: answers that were not 200: {bad:?}", r.label);
        }
    }
    Ok(())
}

/// Where cargo puts binaries: `CARGO_TARGET_DIR` if set, else `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A chat request of `n` tiny user messages for the mock provider.
fn chat_body(n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(n * 34 + 64);
    b.extend_from_slice(br#"{"model": "mock/gpt-4o-mini", "max_tokens": 16, "messages": ["#);
    for i in 0..n {
        if i > 0 {
            b.extend_from_slice(b", ");
        }
        b.extend_from_slice(br#"{"role":"user","content":"hi!"}"#);
    }
    b.extend_from_slice(b"]}");
    b
}

/// `concurrent` copies of `body` at once; the peak they added over the RSS before them.
fn run(pid: u32, addr: &str, body: &[u8], concurrent: usize) -> Result<Run> {
    let before = status_kib(pid, "VmRSS:")? * 1024;
    // Resets VmHWM to the current RSS (Linux 4.0+).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("cannot reset the gateway's VmHWM")?;
    let started = Instant::now();
    let statuses = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrent)
            .map(|_| s.spawn(|| send(addr, body)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Ok(0)))
            .collect::<Result<Vec<u16>>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = status_kib(pid, "VmHWM:")? * 1024;
    Ok(Run {
        peak_added: peak.saturating_sub(before),
        seconds,
        statuses,
    })
}

/// POST `body` to the chat endpoint; the answer's status.
fn send(addr: &str, body: &[u8]) -> Result<u16> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in the answer: {head:?}"))?;
    Ok(status)
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn render_row(r: &Row) -> String {
    let body = r.body as u64;
    format!(
        "| {} | {:.1} MiB | {:.0} MiB | {:.0} MiB ({:.1}× body, {:.2} s) | {:.0} MiB ({:.1}× the {BURST} bodies, {:.2} s) | {} |",
        r.label,
        mib(body),
        mib(r.base_rss),
        mib(r.one.peak_added),
        r.one.peak_added as f64 / body as f64,
        r.one.seconds,
        mib(r.burst.peak_added),
        r.burst.peak_added as f64 / (BURST as u64 * body) as f64,
        r.burst.seconds,
        r.rss_after
            .iter()
            .map(|b| format!("{:.0} MiB", mib(*b)))
            .collect::<Vec<_>>()
            .join(" / "),
    )
}

fn render(rows: &[Row], bins: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{SECTION}\n");
    let _ = writeln!(
        s,
        "Produced by `cargo xtask bench-memory`{}: one chat request of {MESSAGES} tiny messages (`{{\"role\":\"user\",\"content\":\"hi!\"}}`), then {BURST} of them at once, to an OpenAI-compatible provider (the mock upstream), then idle. Peak added: `VmHWM` after the run minus `VmRSS` before it (`VmHWM` reset between runs).\n",
        if bins.ends_with("release") { String::new() } else { format!(" (binaries from `{}`)", bins.display()) },
    );
    let idle: Vec<String> = IDLE.iter().map(|d| d.as_secs().to_string()).collect();
    let _ = writeln!(
        s,
        "| gateway | body | RSS before | peak added, 1 request | peak added, {BURST} at once | RSS after {} s idle |",
        idle.join(" / ")
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(s, "{}", render_row(r));
    }
    s
}

/// `old` with its [`SECTION`] (to the next `## ` heading or the end) replaced by `section`,
/// or `section` appended.
pub fn replace_section(old: &str, section: &str) -> String {
    match section_of(old) {
        Some(current) => old.replacen(current, section.trim_end(), 1),
        None => format!("{}\n\n{}\n", old.trim_end(), section.trim_end()),
    }
}

/// The [`SECTION`] of `text` without its trailing blank lines, if it has one (kept by
/// `cargo xtask bench`, which writes the rest of the file).
pub fn section_of(text: &str) -> Option<&str> {
    let start = text.find(SECTION)?;
    let rest = &text[start + SECTION.len()..];
    let len = rest.find("\n## ").unwrap_or(rest.len());
    Some(text[start..start + SECTION.len() + len].trim_end())
}
