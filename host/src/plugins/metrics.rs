//! Metrics about and from plugins, exported as one prometheus `Collector`: the host's own
//! `switchyard_plugin_failures_total` and `switchyard_plugin_reloads_total`, plus every metric a
//! plugin declares through the `metrics` import, as `switchyard_plugin_<name>` with a `plugin`
//! label first. Declared metrics are created at run time, which a static registration cannot
//! express, hence the custom collector.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, GaugeVec, HistogramOpts, HistogramVec, Opts};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

enum Vecs {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

struct Family {
    kind: Kind,
    /// Label names as the plugin declared them (without `plugin`).
    labels: Vec<String>,
    vecs: Vecs,
}

/// All plugin metrics of one host.
pub struct PluginMetricsCollector {
    pub failures: CounterVec,
    pub reloads: CounterVec,
    /// Wall time of each hook call, by plugin and hook (`pre`, `post`, `chunk`); its
    /// `_count` is the number of calls.
    pub calls: HistogramVec,
    /// Keys evicted from a plugin's key-value store by `plugins.kv.max_bytes_per_plugin`.
    pub kv_evictions: prometheus::IntCounterVec,
    families: Mutex<HashMap<String, Arc<Family>>>,
}

impl PluginMetricsCollector {
    pub fn new() -> Arc<Self> {
        let failures = CounterVec::new(
            Opts::new(
                "switchyard_plugin_failures_total",
                "Plugin hook calls that trapped, timed out or returned an error",
            ),
            &["plugin", "kind"],
        )
        .expect("static metric");
        let reloads = CounterVec::new(
            Opts::new(
                "switchyard_plugin_reloads_total",
                "Plugin loads and reloads by result",
            ),
            &["plugin", "result"],
        )
        .expect("static metric");
        let calls = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_plugin_call_duration_seconds",
                "Wall time of one plugin hook call, instance checkout included",
            )
            .buckets(vec![
                5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 5e-2, 0.25,
            ]),
            &["plugin", "hook"],
        )
        .expect("static metric");
        let kv_evictions = prometheus::IntCounterVec::new(
            Opts::new(
                "switchyard_plugin_kv_evictions_total",
                "Keys evicted from a plugin's key-value store to stay under plugins.kv.max_bytes_per_plugin",
            ),
            &["plugin"],
        )
        .expect("static metric");
        Arc::new(PluginMetricsCollector {
            failures,
            reloads,
            calls,
            kv_evictions,
            families: Mutex::new(HashMap::new()),
        })
    }

    /// Register on `registry`. A second host on the same registry (tests) cannot register
    /// the same names again; its metrics then stay unexported, which is logged.
    pub fn register(self: &Arc<Self>, registry: &prometheus::Registry) {
        if let Err(e) = registry.register(Box::new(Shared(self.clone()))) {
            tracing::warn!(error = %e, "plugin metrics not registered");
        }
    }

    fn declare(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[String],
        buckets: Option<Vec<f64>>,
    ) -> Result<Arc<Family>, String> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .enumerate()
                .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
        if !valid {
            return Err(format!("metric name {name:?} must match [a-z_][a-z0-9_]*"));
        }
        if name == "failures_total" || name == "reloads_total" || name == "kv_evictions_total" {
            return Err(format!("metric name {name:?} is reserved by the gateway"));
        }
        if labels.iter().any(|l| l == "plugin") {
            return Err("label name \"plugin\" is added by the gateway".into());
        }
        let full = format!("switchyard_plugin_{name}");
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = fams.get(&full) {
            // Same name from another plugin or instance: same family only if it is the same shape.
            if f.kind == kind && f.labels == labels {
                return Ok(f.clone());
            }
            return Err(format!(
                "metric {name:?} already declared with another kind or labels"
            ));
        }
        let mut all: Vec<&str> = vec!["plugin"];
        all.extend(labels.iter().map(String::as_str));
        let help = if help.is_empty() { name } else { help };
        let vecs = match kind {
            Kind::Counter => Vecs::Counter(
                CounterVec::new(Opts::new(&full, help), &all).map_err(|e| e.to_string())?,
            ),
            Kind::Gauge => {
                Vecs::Gauge(GaugeVec::new(Opts::new(&full, help), &all).map_err(|e| e.to_string())?)
            }
            Kind::Histogram => {
                let mut o = HistogramOpts::new(&full, help);
                if let Some(b) = buckets {
                    o = o.buckets(b);
                }
                Vecs::Histogram(HistogramVec::new(o, &all).map_err(|e| e.to_string())?)
            }
        };
        let f = Arc::new(Family {
            kind,
            labels: labels.to_vec(),
            vecs,
        });
        fams.insert(full, f.clone());
        Ok(f)
    }
}

struct Shared(Arc<PluginMetricsCollector>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        // Only the static metrics can be described up front; declared ones appear on collect.
        let mut d = self.0.failures.desc();
        d.extend(self.0.reloads.desc());
        d.extend(self.0.calls.desc());
        d.extend(self.0.kv_evictions.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = self.0.failures.collect();
        out.extend(self.0.reloads.collect());
        out.extend(self.0.calls.collect());
        out.extend(self.0.kv_evictions.collect());
        let fams: Vec<Arc<Family>> = self
            .0
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for f in fams {
            match &f.vecs {
                Vecs::Counter(v) => out.extend(v.collect()),
                Vecs::Gauge(v) => out.extend(v.collect()),
                Vecs::Histogram(v) => out.extend(v.collect()),
            }
        }
        out
    }
}

/// One plugin's handle: ids it declared, all with its `plugin` label.
pub struct PluginMetrics {
    plugin: String,
    collector: Arc<PluginMetricsCollector>,
    ids: Mutex<Vec<Arc<Family>>>,
}

impl PluginMetrics {
    pub fn new(plugin: &str, collector: Arc<PluginMetricsCollector>) -> Self {
        PluginMetrics {
            plugin: plugin.to_owned(),
            collector,
            ids: Mutex::new(Vec::new()),
        }
    }

    pub fn declare(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[String],
        buckets: Option<Vec<f64>>,
    ) -> Result<u32, String> {
        let fam = self.collector.declare(name, help, kind, labels, buckets)?;
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        // Every pooled instance declares in init: hand back the id it got the first time.
        if let Some(i) = ids.iter().position(|f| Arc::ptr_eq(f, &fam)) {
            return Ok(i as u32);
        }
        ids.push(fam);
        Ok((ids.len() - 1) as u32)
    }

    fn family(&self, id: u32) -> Option<Arc<Family>> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id as usize)
            .cloned()
    }

    fn labels<'a>(&'a self, f: &Family, values: &'a [String]) -> Option<Vec<&'a str>> {
        if values.len() != f.labels.len() {
            tracing::debug!(plugin = %self.plugin, "metric recorded with wrong label count");
            return None;
        }
        let mut v = vec![self.plugin.as_str()];
        v.extend(values.iter().map(String::as_str));
        Some(v)
    }

    pub fn record(&self, id: u32, values: &[String], value: f64) {
        let Some(f) = self.family(id) else { return };
        let Some(l) = self.labels(&f, values) else {
            return;
        };
        match &f.vecs {
            // A counter only goes up; prometheus would panic on a negative add.
            Vecs::Counter(c) if value >= 0.0 && value.is_finite() => {
                c.with_label_values(&l).inc_by(value)
            }
            Vecs::Counter(_) => {}
            Vecs::Gauge(g) => g.with_label_values(&l).add(value),
            Vecs::Histogram(h) => h.with_label_values(&l).observe(value),
        }
    }

    pub fn set_gauge(&self, id: u32, values: &[String], value: f64) {
        let Some(f) = self.family(id) else { return };
        let Some(l) = self.labels(&f, values) else {
            return;
        };
        if let Vecs::Gauge(g) = &f.vecs {
            g.with_label_values(&l).set(value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn declared_metrics_are_exported_with_plugin_label() {
        let reg = prometheus::Registry::new();
        let c = PluginMetricsCollector::new();
        c.register(&reg);
        let a = PluginMetrics::new("a", c.clone());
        let b = PluginMetrics::new("b", c.clone());
        let id = a
            .declare("hits_total", "hits", Kind::Counter, &["route".into()], None)
            .unwrap();
        assert_eq!(
            a.declare("hits_total", "hits", Kind::Counter, &["route".into()], None),
            Ok(id)
        );
        let idb = b
            .declare("hits_total", "hits", Kind::Counter, &["route".into()], None)
            .unwrap();
        assert!(a.declare("hits_total", "", Kind::Gauge, &[], None).is_err());
        assert!(a.declare("Bad", "", Kind::Gauge, &[], None).is_err());
        a.record(id, &["x".into()], 2.0);
        b.record(idb, &["x".into()], 1.0);
        c.failures.with_label_values(&["a", "trap"]).inc();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&reg.gather())
            .unwrap();
        assert!(
            text.contains("switchyard_plugin_hits_total{plugin=\"a\",route=\"x\"} 2"),
            "{text}"
        );
        assert!(text.contains("switchyard_plugin_hits_total{plugin=\"b\",route=\"x\"} 1"));
        assert!(text.contains("switchyard_plugin_failures_total{kind=\"trap\",plugin=\"a\"} 1"));
    }
}
