//! Start-up and shutdown: builds the [`Gateway`] (upstream side, plugins, metrics) from a
//! validated config, binds the listener and serves until a shutdown signal, then gives
//! in-flight and queued requests `client.shutdown_timeout` to finish.

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

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::PluginHost;
use crate::proxy::Gateway;
use crate::routes::build_router;
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

/// Build the upstream side and load the plugins.
pub async fn gateway(config: Config) -> Result<Gateway, StartupError> {
    {
        let metrics = Arc::new(Metrics::new());
        crate::telemetry::register(&metrics.registry);
        let upstream = Upstream::new(&config, metrics.clone()).map_err(StartupError::Engine)?;
        let plugins = if config.plugins.entries.iter().any(|e| e.enabled) {
            PluginHost::start(
                &config.plugins,
                config.client.initial_pool_size,
                &metrics.registry,
            )
            .await?
        } else {
            PluginHost::disabled()
        };
        Ok(Gateway::new(Arc::new(config), upstream, plugins, metrics))
    }
}

/// A bound, not yet serving gateway.
pub struct Server {
    listener: TcpListener,
    gateway: Arc<Gateway>,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, StartupError> {
        let addr = config.client.listen;
        let gateway = Arc::new(gateway(config).await?);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Server { listener, gateway })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.gateway.config.client.listen)
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
        let app = build_router(self.gateway);
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
            let (tcp, _peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
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
    server.run(shutdown_signal()).await
}
