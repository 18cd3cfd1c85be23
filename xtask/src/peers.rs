//! The benchmark's reference points, run beside the gateway in the same run:
//! - nginx as a plain reverse proxy (Debian's package, installed through apt if missing):
//!   what the machine allows for one proxy hop (`proxy_pass`, upstream keep-alive, one
//!   worker, no buffering so streams pass as they come);
//! - crabllm 0.0.25, a Rust LLM gateway, installed from crates.io into `build/tools` like oha.
//!
//! Neither is part of the test command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::tasks::{root, run_cmd, wait_for_port, Guard};

pub const CRABLLM_VERSION: &str = "0.0.25";

/// The address of the mock for plain answers, and of the one for streamed answers.
pub struct Upstreams<'a> {
    pub plain: &'a str,
    pub stream: &'a str,
}

/// `nginx`, from `PATH` or `/usr/sbin`, installed with apt when missing.
fn nginx_binary() -> Result<PathBuf> {
    let find = || {
        ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("+ installing nginx from Debian's packages (once)");
    let install = |update: bool| -> Result<()> {
        if update {
            run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        }
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", "nginx"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install(false).is_err() {
        install(true)?;
    }
    find().context("nginx was installed but is not in /usr/sbin")
}

/// Start nginx with two servers: `plain_listen` → the plain mock, `stream_listen` → the
/// streaming mock.
pub fn start_nginx(
    up: &Upstreams<'_>,
    plain_listen: &str,
    stream_listen: &str,
) -> Result<(Guard, String)> {
    let nginx = nginx_binary()?;
    let prefix = root().join("build/bench/nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = prefix.join("nginx.conf");
    let server = |listen: &str, upstream: &str| {
        format!(
            "  server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://{upstream};\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n      \
             proxy_request_buffering off;\n    }}\n  }}\n"
        )
    };
    let text = format!(
        "user root;\nworker_processes 1;\ndaemon off;\nerror_log {logs}/error.log warn;\npid {logs}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         client_body_temp_path {logs}/body;\n  proxy_temp_path {logs}/proxy;\n\
         fastcgi_temp_path {logs}/fastcgi;\n  uwsgi_temp_path {logs}/uwsgi;\n  scgi_temp_path {logs}/scgi;\n\
         upstream plain {{ server {plain}; keepalive 64; }}\n\
         upstream streamed {{ server {stream}; keepalive 64; }}\n{}{}}}\n",
        server(plain_listen, "plain"),
        server(stream_listen, "streamed"),
        logs = prefix.join("logs").display(),
        plain = up.plain,
        stream = up.stream,
    );
    std::fs::write(&conf, text)?;
    let version = version_line(&nginx, &["-v"]);
    eprintln!("+ starting {version} as a reverse proxy on {plain_listen} and {stream_listen}");
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start nginx")?;
    let guard = Guard(child);
    wait_for_port(plain_listen, Duration::from_secs(10))?;
    wait_for_port(stream_listen, Duration::from_secs(10))?;
    Ok((guard, version))
}

/// `build/tools/bin/crabllm`, installed from crates.io on first use.
fn crabllm_binary() -> Result<PathBuf> {
    let tools = root().join("build/tools");
    let bin = tools.join("bin/crabllm");
    // crabllm has no --version; cargo's install record says what is there.
    let installed = bin.is_file()
        && std::fs::read_to_string(tools.join(".crates.toml"))
            .is_ok_and(|t| t.contains(&format!("crabllm {CRABLLM_VERSION} ")));
    if !installed {
        eprintln!("+ installing crabllm {CRABLLM_VERSION} from crates.io (a few minutes, once)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run_cmd(Command::new(cargo).args([
            "install",
            "--locked",
            "--version",
            CRABLLM_VERSION,
            "--root",
            &tools.to_string_lossy(),
            "crabllm",
        ]))?;
    }
    Ok(bin)
}

/// Start crabllm on `listen`, serving model `gpt-4o-mini` from the plain mock and
/// `stream-model` from the streaming one, without client keys (as the gateway runs here).
pub fn start_crabllm(up: &Upstreams<'_>, listen: &str) -> Result<Guard> {
    let bin = crabllm_binary()?;
    let dir = root().join("build/bench");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("crabllm.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"{listen}\"\n\n\
             [providers.mock]\nkind = \"openai\"\napi_key = \"sk-bench\"\nbase_url = \"http://{}/v1\"\n\
             models = [\"gpt-4o-mini\"]\nmax_retries = 0\n\n\
             [providers.mockstream]\nkind = \"openai\"\napi_key = \"sk-bench\"\nbase_url = \"http://{}/v1\"\n\
             models = [\"stream-model\"]\nmax_retries = 0\n",
            up.plain, up.stream
        ),
    )?;
    eprintln!("+ starting crabllm {CRABLLM_VERSION} on {listen}");
    let child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start crabllm")?;
    let guard = Guard(child);
    wait_for_port(listen, Duration::from_secs(30))?;
    Ok(guard)
}

fn version_line(bin: &Path, args: &[&str]) -> String {
    match Command::new(bin).args(args).output() {
        // nginx prints its version on stderr.
        Ok(o) => {
            let text = String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .trim()
            .to_owned();
            text.strip_prefix("nginx version: ")
                .unwrap_or(&text)
                .to_owned()
        }
        Err(_) => bin.display().to_string(),
    }
}

/// Fail early with a clear message when a peer answers something other than a 200.
pub fn check_answers(url: &str, body: &Path) -> Result<()> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("url")?;
    let (host, path) = rest.split_once('/').context("url path")?;
    let payload = std::fs::read(body)?;
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    )?;
    s.write_all(&payload)?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    if !out.starts_with("HTTP/1.1 200") {
        bail!(
            "{url} did not answer 200: {}",
            out.chars().take(400).collect::<String>()
        );
    }
    Ok(())
}
