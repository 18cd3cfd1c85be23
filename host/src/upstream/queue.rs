//! A provider's queue: `concurrency + buffer_size` places, of which `concurrency` may be
//! served at once. That is Bifrost's bounded channel drained by `concurrency` goroutines,
//! without a hop to a worker task: the request's own task does the call once it holds a
//! worker permit, so a client that disconnects drops its future, which drops its place or
//! its worker, with no extra signalling. Every gauge is moved by a guard, so a dropped
//! future can never leave one counted.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;

/// One provider's places and workers.
pub struct Queue {
    name: String,
    concurrency: usize,
    buffer_size: usize,
    /// Places, including the ones held by requests being served.
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    depth: IntGauge,
    in_flight: IntGauge,
}

/// A place in the queue, held from admission until the answer is complete.
pub struct Place {
    _permit: OwnedSemaphorePermit,
}

/// A worker: the right to talk to the provider now.
pub struct Worker {
    _permit: OwnedSemaphorePermit,
    _in_flight: GaugeGuard,
}

/// +1 on a gauge for as long as it lives.
struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(g: &IntGauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why a place was refused.
pub enum Refused {
    /// `drop_excess_requests` and no free place.
    Full,
    /// No place freed up within the queue timeout.
    Timeout(Duration),
}

impl Queue {
    pub fn new(
        name: &str,
        concurrency: usize,
        buffer_size: usize,
        depth: IntGauge,
        in_flight: IntGauge,
    ) -> Queue {
        Queue {
            name: name.to_owned(),
            concurrency,
            buffer_size,
            admission: Arc::new(Semaphore::new(concurrency + buffer_size)),
            workers: Arc::new(Semaphore::new(concurrency)),
            depth,
            in_flight,
        }
    }

    /// A place: at once, or (unless `drop_excess`) after waiting up to `wait`.
    pub async fn admit(&self, drop_excess: bool, wait: Duration) -> Result<Place, Refused> {
        if let Ok(p) = self.admission.clone().try_acquire_owned() {
            return Ok(Place { _permit: p });
        }
        if drop_excess {
            return Err(Refused::Full);
        }
        match tokio::time::timeout(wait, self.admission.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Place { _permit: p }),
            _ => Err(Refused::Timeout(wait)),
        }
    }

    /// A worker for the holder of a place. The wait is bounded by the queue's length: only
    /// holders of places wait here.
    pub async fn worker(&self, _place: &Place) -> Result<Worker, GatewayError> {
        let permit = match self.workers.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let _waiting = GaugeGuard::new(&self.depth);
                self.workers.clone().acquire_owned().await.map_err(|_| {
                    GatewayError::gateway(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting_down",
                        "the gateway is shutting down",
                    )
                })?
            }
        };
        Ok(Worker {
            _permit: permit,
            _in_flight: GaugeGuard::new(&self.in_flight),
        })
    }

    /// Requests holding a place but no worker (waiting for one, or sleeping before a retry).
    pub fn waiting(&self) -> usize {
        let admitted = self.concurrency + self.buffer_size - self.admission.available_permits();
        let working = self.concurrency - self.workers.available_permits();
        admitted.saturating_sub(working)
    }

    /// Requests holding a worker.
    pub fn working(&self) -> usize {
        self.concurrency - self.workers.available_permits()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn queue(c: usize, b: usize) -> Queue {
        Queue::new(
            "p",
            c,
            b,
            IntGauge::new("depth", "d").unwrap(),
            IntGauge::new("in_flight", "f").unwrap(),
        )
    }

    #[tokio::test]
    async fn places_and_workers() {
        let q = queue(1, 1);
        let a = q.admit(true, Duration::ZERO).await.ok().unwrap();
        let b = q.admit(true, Duration::ZERO).await.ok().unwrap();
        assert!(matches!(
            q.admit(true, Duration::ZERO).await,
            Err(Refused::Full)
        ));
        assert!(matches!(
            q.admit(false, Duration::from_millis(10)).await,
            Err(Refused::Timeout(_))
        ));
        let w = q.worker(&a).await.unwrap();
        assert_eq!((q.working(), q.waiting()), (1, 1));
        assert_eq!(q.in_flight.get(), 1);
        drop(w);
        assert_eq!(q.in_flight.get(), 0);
        drop((a, b));
        assert_eq!((q.working(), q.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn a_dropped_wait_leaves_no_gauge_behind() {
        let q = queue(1, 2);
        let a = q.admit(true, Duration::ZERO).await.ok().unwrap();
        let _w = q.worker(&a).await.unwrap();
        let b = q.admit(true, Duration::ZERO).await.ok().unwrap();
        // A client that goes away while waiting for a worker drops this future.
        let waited = tokio::time::timeout(Duration::from_millis(20), q.worker(&b)).await;
        assert!(waited.is_err());
        assert_eq!(q.depth.get(), 0);
        assert_eq!(q.in_flight.get(), 1);
    }
}
