//! Start-up and shutdown: builds the [`Gateway`] (upstream side, plugins, metrics) from a
//! validated config, binds the listener (and the admin listener, `client.admin_listen`)
//! and serves until a shutdown signal, then gives in-flight and queued requests
//! `client.shutdown_timeout` to finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::access::{Clock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::{KvStore, PluginHost};
use crate::proxy::Gateway;
use crate::reload::Live;
use crate::routes::{build_live_router, Listener};
use crate::upstream::Upstream;

mod conn;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Engine(String),
    #[error(transparent)]
    Plugins(#[from] crate::plugins::PluginStartError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Build the upstream side and load the plugins, with the key-value store `plugins.kv`
/// chooses (capped by `max_bytes_per_plugin`, or Redis).
pub async fn gateway(config: Config) -> Result<Gateway, StartupError> {
    build(config, None, Arc::new(SystemClock)).await
}

/// [`gateway`] with the key-value store that plugins and virtual-key limits share, and the
/// clock the limits and budgets count by.
pub async fn gateway_with(
    config: Config,
    kv: Arc<dyn KvStore>,
    clock: Arc<dyn Clock>,
) -> Result<Gateway, StartupError> {
    build(config, Some(kv), clock).await
}

async fn build(
    config: Config,
    kv: Option<Arc<dyn KvStore>>,
    clock: Arc<dyn Clock>,
) -> Result<Gateway, StartupError> {
    let metrics = Arc::new(Metrics::new());
    crate::telemetry::register(&metrics.registry);
    let upstream = Upstream::new(&config, metrics.clone()).map_err(StartupError::Engine)?;
    let (plugins, kv) = if config.plugins.entries.iter().any(|e| e.enabled) {
        // Plugins load in the background (`loading` on /health): the listener is up in
        // well under a second even when a Python component takes seconds to compile.
        let host = PluginHost::launch(
            &config.plugins,
            config.client.initial_pool_size,
            &metrics.registry,
            kv,
        )
        .await?;
        let kv = host.kv().ok_or_else(|| {
            StartupError::Engine("plugin host started without a key-value store".into())
        })?;
        (host, kv)
    } else {
        let kv = match kv {
            Some(kv) => kv,
            None => crate::plugins::kv_store(&config.plugins, &metrics.registry, None)?,
        };
        (PluginHost::disabled_with(Some(kv.clone())), kv)
    };
    Ok(Gateway::new(Arc::new(config), upstream, plugins, metrics).with_access_store(kv, clock))
}

/// A bound, not yet serving gateway.
pub struct Server {
    listener: TcpListener,
    /// `client.admin_listen`.
    admin: Option<TcpListener>,
    gateway: Arc<Gateway>,
    live: Arc<Live>,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, StartupError> {
        Self::bind_gateway(gateway(config).await?).await
    }

    /// Bind the listeners of a built gateway's config.
    pub async fn bind_gateway(gateway: Gateway) -> Result<Server, StartupError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, source })
        };
        let listener = bind(gateway.config.client.listen).await?;
        let admin = match gateway.config.client.access.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let gateway = Arc::new(gateway);
        Ok(Server {
            listener,
            admin,
            live: Live::new(gateway.clone()),
            gateway,
        })
    }

    /// The serving gateway and its reload state (tests apply configs through it).
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.gateway.config.client.listen)
    }

    /// The admin listener's address, when `client.admin_listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Serve until `shutdown` resolves; then stop accepting and wait up to
    /// `client.shutdown_timeout` for requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let client = &self.gateway.config.client;
        let grace = client.shutdown_timeout;
        let limits = conn::Limits {
            header_read: client.header_read_timeout,
            idle: client.idle_timeout,
            write: client.write_timeout,
        };
        let app = build_live_router(self.live.clone(), Listener::Public);
        let admin_app = build_live_router(self.live.clone(), Listener::Admin);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The idle and header limits are the connection wrapper's; hyper's own header
        // timer would cut idle keep-alive connections at the header limit.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (accepted, app) = tokio::select! {
                accepted = self.listener.accept() => (accepted, &app),
                accepted = accept(self.admin.as_ref()) => (accepted, &admin_app),
                () = &mut shutdown => break,
            };
            let tcp = match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Streamed answers end in small writes; without TCP_NODELAY each waits for the
            // client's delayed ACK (Nagle), which holds the end of every stream on a
            // keep-alive connection back by ~40 ms.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
            }
            let state = conn::ConnState::new(limits);
            let io = TokioIo::new(conn::Guarded::new(tcp, state.clone()));
            let app = app.clone();
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let guard = state.request();
                let call = app.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    let resp = call.await.unwrap_or_else(|e: Infallible| match e {});
                    Ok::<_, Infallible>(crate::routes::hold(resp, guard))
                }
            });
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let conn = builder.serve_connection(io, service);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            });
        }
        drop(self.listener);
        drop(self.admin);
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutting down: finishing requests in flight"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
        Ok(())
    }
}

/// The next connection on `listener`; never, without one.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Bind and serve `config` until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), StartupError> {
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr(), "switchyard listening");
    if let Some(addr) = server.admin_addr() {
        tracing::info!(%addr, "admin side (/health, /metrics, /ui) listening");
    }
    server.run(shutdown_signal()).await
}

/// [`serve`] `config`, read from `path`, reloading it on SIGHUP and when the file changes.
pub async fn serve_file(config: Config, path: &std::path::Path) -> Result<(), StartupError> {
    let server = Server::bind(config).await?;
    server.live.started_from(path);
    crate::reload::watch(
        &server.live,
        path.to_path_buf(),
        Arc::new(crate::config::validate::ProcessEnv),
    );
    tracing::info!(addr = %server.local_addr(), config = %path.display(), "switchyard listening; config reloads on change and SIGHUP");
    server.run(shutdown_signal()).await
}
