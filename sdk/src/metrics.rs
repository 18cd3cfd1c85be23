//! Metrics the plugin declares, exported on the gateway's `/metrics` as
//! `switchyard_plugin_<name>` with a `plugin` label added before the plugin's own labels.
//!
//! Declare them in [`Plugin::init`](crate::Plugin::init): declaring the same name with the same
//! kind and labels again (every pooled instance does) returns the same metric. Label values
//! are given in the declared order; keep them low-cardinality (provider, model, outcome —
//! not request ids or client keys).

pub use crate::imports::metrics::{MetricId, MetricKind};

#[cfg(target_arch = "wasm32")]
use crate::imports::metrics as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::fake::metrics as host;

fn declare(
    name: &str,
    help: &str,
    kind: MetricKind,
    labels: &[&str],
    buckets: Option<&[f64]>,
) -> Result<MetricId, String> {
    host::declare(name, help, kind, labels, buckets).map_err(|e| format!("metric {name}: {e}"))
}

/// A monotonically increasing count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(MetricId);

impl Counter {
    /// Declare counter `name` (`[a-z_][a-z0-9_]*`, conventionally ending in `_total`).
    pub fn declare(name: &str, help: &str, labels: &[&str]) -> Result<Counter, String> {
        declare(name, help, MetricKind::Counter, labels, None).map(Counter)
    }

    /// Add one.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0)
    }

    /// Add `value` (>= 0).
    pub fn add(&self, labels: &[&str], value: f64) {
        host::record_value(self.0, labels, value)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(MetricId);

impl Gauge {
    /// Declare gauge `name`.
    pub fn declare(name: &str, help: &str, labels: &[&str]) -> Result<Gauge, String> {
        declare(name, help, MetricKind::Gauge, labels, None).map(Gauge)
    }

    /// Set to `value`.
    pub fn set(&self, labels: &[&str], value: f64) {
        host::set_gauge(self.0, labels, value)
    }

    /// Add `value` (may be negative).
    pub fn add(&self, labels: &[&str], value: f64) {
        host::record_value(self.0, labels, value)
    }
}

/// A distribution of observed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(MetricId);

impl Histogram {
    /// Declare histogram `name`; `buckets` are upper bounds in ascending order (default:
    /// Prometheus' default buckets, meant for seconds).
    pub fn declare(
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Option<&[f64]>,
    ) -> Result<Histogram, String> {
        declare(name, help, MetricKind::Histogram, labels, buckets).map(Histogram)
    }

    /// Observe `value`.
    pub fn observe(&self, labels: &[&str], value: f64) {
        host::record_value(self.0, labels, value)
    }
}
