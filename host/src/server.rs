//! Start-up and shutdown: builds the [`Gateway`] (upstream side, plugins, metrics) from a
//! validated config, binds the listener and serves until a shutdown signal, then gives
//! in-flight and queued requests `client.shutdown_timeout` to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::PluginHost;
use crate::proxy::Gateway;
use crate::routes::build_router;
use crate::upstream::Upstream;

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
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// Build the upstream side and load the plugins.
pub async fn gateway(config: Config) -> Result<Gateway, StartupError> {
    {
        let metrics = Arc::new(Metrics::new());
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
        let grace = self.gateway.config.client.shutdown_timeout;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = build_router(self.gateway);
        // Streamed answers end in small writes; without TCP_NODELAY each waits for the
        // client's delayed ACK (Nagle), which holds the end of every stream on a keep-alive
        // connection back by ~40 ms.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(());
        });
        let mut task = tokio::spawn(async move { server.await });
        tokio::select! {
            res = &mut task => return flatten(res),
            _ = rx => {}
        }
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutting down: finishing requests in flight"
        );
        match tokio::time::timeout(grace, &mut task).await {
            Ok(res) => flatten(res),
            Err(_) => {
                tracing::warn!("shutdown grace period over; closing remaining connections");
                task.abort();
                Ok(())
            }
        }
    }
}

fn flatten(res: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), StartupError> {
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StartupError::Serve(e)),
        Err(e) => Err(StartupError::Serve(std::io::Error::other(e.to_string()))),
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
