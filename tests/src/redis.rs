//! A real `redis-server` (Debian's package, which the test command installs) on a free port
//! of 127.0.0.1, without persistence (`--save "" --appendonly no`), stopped when dropped and
//! restartable on the same port; and a [`SilentServer`] that accepts connections and never
//! answers, for the "Redis hangs" case.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;

/// `redis-server` on PATH, or `None` outside CI when it is missing. Under CI a missing server
/// fails the test.
pub fn require_redis_server() -> Option<PathBuf> {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    match ok {
        true => Some(PathBuf::from("redis-server")),
        false if std::env::var_os("CI").is_some() => {
            panic!("redis-server is missing: the test command installs it (cargo xtask test)")
        }
        false => {
            eprintln!("skipped: redis-server not installed (cargo xtask test installs it)");
            None
        }
    }
}

/// One `redis-server` process on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Start on a free port and wait until it answers `PING`; `None` when the server is not
    /// installed outside CI (see [`require_redis_server`]).
    pub fn start() -> Option<RedisServer> {
        let bin = require_redis_server()?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("local addr").port()
        };
        let mut server = RedisServer {
            port,
            bin,
            child: None,
            dir: TempDir::new("redis"),
        };
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kill the server (as a crash would) and wait until the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis on {} did not stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start (again) on the same port, empty, and wait until it answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.path().join("redis.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = Command::new(&self.bin)
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", &self.dir.path().display().to_string()])
                .args(["--logfile", &log.display().to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            self.child = Some(child);
            if self.wait_ready(Duration::from_secs(5)) {
                return;
            }
            // The port may not be free again yet (a restart right after a stop): retry.
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}:\n{}",
                self.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            if self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Send one command and return the raw RESP reply (what one read brings), or `None` when
    /// the server does not answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP listener on 127.0.0.1 that accepts every connection and never sends a byte: a
/// Redis that hangs. Stops when dropped.
pub struct SilentServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> SilentServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        SilentServer { addr, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
