//! Client connections, bounded in time: a connection that sends nothing between requests
//! (idle keep-alive), a request whose headers do not arrive in time (slowloris), and a
//! client that stops reading its answer (a stalled write) are all closed. The byte stream
//! is wrapped so the limits hold whatever HTTP version runs over it; the service tells the
//! wrapper when a request is being handled, so a client waiting minutes for a slow model
//! is never taken for an idle one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The time limits of one client connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From a request's first byte to the end of its headers.
    pub header_read: Duration,
    /// Between requests: from the end of an answer (or the connection's start) to the next
    /// request's first byte.
    pub idle: Duration,
    /// Longest a write to the client may make no progress.
    pub write: Duration,
}

/// What the connection and the requests on it share.
pub struct ConnState {
    limits: Limits,
    /// Requests being handled (their answers not fully written).
    requests: AtomicUsize,
    times: Mutex<Times>,
}

struct Times {
    /// When the connection last finished an answer, or started.
    idle_since: Instant,
    /// When the first byte of a request arrived, until the request reached the service.
    request_started: Option<Instant>,
}

impl ConnState {
    pub fn new(limits: Limits) -> Arc<ConnState> {
        Arc::new(ConnState {
            limits,
            requests: AtomicUsize::new(0),
            times: Mutex::new(Times {
                idle_since: Instant::now(),
                request_started: None,
            }),
        })
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request reached the service; the guard ends it when its answer is written.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.times().request_started = None;
        RequestGuard(self.clone())
    }

    fn between_requests(&self) -> bool {
        self.requests.load(Ordering::SeqCst) == 0
    }

    /// Bytes arrived from the client.
    fn read_some(&self) {
        if self.between_requests() {
            let mut t = self.times();
            if t.request_started.is_none() {
                t.request_started = Some(Instant::now());
            }
        }
    }

    /// When reading must have produced something, while no request is being handled.
    fn read_deadline(&self) -> Option<Instant> {
        if !self.between_requests() {
            return None;
        }
        let t = self.times();
        Some(match t.request_started {
            Some(started) => started + self.limits.header_read,
            None => t.idle_since + self.limits.idle,
        })
    }
}

/// A request being handled on a connection.
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // The idle clock restarts before the count drops, so a read between the two never
        // sees a stale start.
        self.0.times().idle_since = Instant::now();
        self.0.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A client's byte stream with the connection's time limits.
pub struct Guarded<T> {
    io: T,
    state: Arc<ConnState>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// When the current run of writes without progress began.
    write_stalled_since: Option<Instant>,
}

impl<T> Guarded<T> {
    pub fn new(io: T, state: Arc<ConnState>) -> Guarded<T> {
        Guarded {
            io,
            state,
            read_timer: None,
            write_timer: None,
            write_stalled_since: None,
        }
    }
}

/// Arm `timer` for `deadline` and poll it: true when it has passed.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if t.deadline() != deadline {
        t.as_mut().reset(deadline);
    }
    t.as_mut().poll(cx).is_ready()
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(deadline) = this.state.read_deadline() {
                    if expired(&mut this.read_timer, deadline, cx) {
                        let what = if this.state.times().request_started.is_some() {
                            "request headers not received in time (client.header_read_timeout_in_seconds)"
                        } else {
                            "idle connection closed (client.idle_timeout_in_seconds)"
                        };
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Guarded<T> {
    fn progress<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => {
                let since = *self.write_stalled_since.get_or_insert_with(Instant::now);
                if expired(&mut self.write_timer, since + self.state.limits.write, cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading its answer (client.write_timeout_in_seconds)",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.write_stalled_since = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            header_read: Duration::from_secs(2),
            idle: Duration::from_secs(10),
            write: Duration::from_secs(3),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close() {
        let (client, server) = tokio::io::duplex(64);
        let state = ConnState::new(limits());
        let mut io = Guarded::new(server, state.clone());
        let mut buf = [0u8; 8];
        let started = Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("idle"), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_close_sooner_than_idle() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new(limits());
        let mut io = Guarded::new(server, state.clone());
        let mut buf = [0u8; 8];
        client.write_all(b"P").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        let started = Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("headers"), "{e}");
        assert!(started.elapsed() <= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_read_limit_while_a_request_is_handled() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new(limits());
        let mut io = Guarded::new(server, state.clone());
        let guard = state.request();
        let mut buf = [0u8; 8];
        // A model thinking for a minute: the client sends nothing, and that is fine.
        let waited = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(waited.is_err(), "read ended while a request was handled");
        drop(guard);
        // The idle clock starts again when the answer is done.
        let started = Instant::now();
        assert!(io.read(&mut buf).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        client.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_writes_fail() {
        let (_client, server) = tokio::io::duplex(16);
        let state = ConnState::new(limits());
        let _guard = state.request();
        let mut io = Guarded::new(server, state);
        let started = Instant::now();
        // The client never reads: the pipe fills, then the write stalls.
        let e = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert!(e.to_string().contains("stopped reading"), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
