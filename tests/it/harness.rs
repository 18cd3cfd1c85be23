//! Start a gateway from a config snippet, talk to it, stop it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard::config::Config;
use switchyard::server::Server;

pub struct Gateway {
    pub addr: SocketAddr,
    /// The admin listener, when `client.admin_listen` is set.
    pub admin: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub plugins: std::sync::Arc<switchyard::plugins::PluginHost>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

/// Parse a config (with `listen` forced to port 0) using `env` for `env.` values.
pub fn config(mut cfg: Value, env: &[(&str, &str)]) -> Config {
    let client = cfg
        .as_object_mut()
        .unwrap()
        .entry("client")
        .or_insert_with(|| json!({}));
    client["listen"] = json!("127.0.0.1:0");
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let text = cfg.to_string();
    match Config::from_json(&text, Path::new("."), &env) {
        Ok((c, _warnings)) => c,
        Err(e) => panic!("test config invalid: {e}\n{text}"),
    }
}

impl Gateway {
    pub async fn start(cfg: Value) -> Gateway {
        Self::start_with_env(cfg, &[]).await
    }

    pub async fn start_with_env(cfg: Value, env: &[(&str, &str)]) -> Gateway {
        Self::from_config(config(cfg, env)).await
    }

    /// Start and wait until the plugins have loaded (they load in the background).
    pub async fn from_config(cfg: Config) -> Gateway {
        let gw = Self::from_config_loading(cfg).await;
        gw.plugins.wait_loaded().await;
        gw
    }

    /// Start without waiting for the plugins to load.
    pub async fn from_config_loading(cfg: Config) -> Gateway {
        Self::from_server(Server::bind(cfg).await.expect("gateway starts"))
    }

    /// Serve a bound server until dropped (plugins may still be loading).
    pub fn from_server(server: Server) -> Gateway {
        let plugins = server.gateway().plugins.clone();
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async move {
                    let _ = rx.await;
                })
                .await
                .expect("gateway runs");
        });
        Gateway {
            addr,
            admin,
            client: reqwest::Client::new(),
            plugins,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn chat(&self, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Begin graceful shutdown; returns the server task to await.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A provider entry pointing at a mock.
pub fn openai_provider(base: &str) -> Value {
    json!({
        "keys": [{"value": "sk-test-key-0001", "models": [], "weight": 1.0}],
        "network_config": {"base_url": format!("{base}/v1")}
    })
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Poll `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}

/// Value of a counter/gauge line in Prometheus text, e.g. `name{a="b"}`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `data:` payloads of an SSE body.
pub async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(pos) = buf.find("\n\n") {
            let frame: String = buf.drain(..pos + 2).collect();
            for line in frame.lines() {
                if let Some(d) = line.strip_prefix("data: ") {
                    out.push(d.to_owned());
                }
            }
        }
    }
    out
}

pub fn text_of(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The real `switchyard` binary, started on a free port with `cfg`, its stdout and stderr
/// written to a file; killed when dropped.
pub struct Binary {
    pub base: String,
    pub child: tokio::process::Child,
    /// The config file it was started with (tests rewrite it to reload).
    pub config: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: switchyard_tests::TempDir,
}

impl Binary {
    /// Start, and wait until its plugins have loaded. `None` outside CI when the binary has
    /// not been built (the test command builds it).
    pub async fn start(cfg: Value, env: &[(&str, &str)], rust_log: &str) -> Option<Binary> {
        Self::start_with_args(cfg, env, rust_log, &[]).await
    }

    /// [`Binary::start`] with extra command-line arguments.
    pub async fn start_with_args(
        cfg: Value,
        env: &[(&str, &str)],
        rust_log: &str,
        args: &[&str],
    ) -> Option<Binary> {
        let bin = Self::launch(cfg, env, rust_log, args).await?;
        bin.wait_plugins_loaded(&reqwest::Client::new()).await;
        Some(bin)
    }

    /// Start and return as soon as it listens (its plugins may still be loading).
    pub async fn start_listening(
        cfg: Value,
        env: &[(&str, &str)],
        rust_log: &str,
    ) -> Option<Binary> {
        Self::launch(cfg, env, rust_log, &[]).await
    }

    async fn launch(
        mut cfg: Value,
        env: &[(&str, &str)],
        rust_log: &str,
        args: &[&str],
    ) -> Option<Binary> {
        let Some(bin) = switchyard_tests::gateway_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "target/debug/switchyard is missing: run the test command (cargo xtask test)"
                );
            }
            eprintln!("skipped: build the switchyard binary first (cargo xtask test does)");
            return None;
        };
        let dir = switchyard_tests::TempDir::new("binary");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        cfg.as_object_mut()
            .unwrap()
            .entry("client")
            .or_insert_with(|| json!({}))["listen"] = json!(format!("127.0.0.1:{port}"));
        let path = dir.path().join("config.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        let log = dir.path().join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&path)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if client.get(format!("{base}/health")).send().await.is_ok() {
                let bin = Binary {
                    base,
                    child,
                    config: path,
                    log,
                    _dir: dir,
                };
                return Some(bin);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "gateway binary did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Plugins load after the listener is up: wait until `/health` lists none as `loading`
    /// (when it shows the details; a guarded admin side shows only the status).
    async fn wait_plugins_loaded(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let health: Value = match client.get(self.url("/health")).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let loading = health["plugins"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["state"] == "loading"));
            if !loading {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugins still loading after 180 s: {health}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the gateway wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
