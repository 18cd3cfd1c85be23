//! `logging` and `telemetry`: what operators read. Traces are off unless
//! `telemetry.otlp_endpoint` is set; every other key has a default.

use std::time::Duration;

use super::{Ctx, Resolved};
use crate::config::raw::{RawLogging, RawTelemetry};
use crate::config::{LogFormat, LoggingConfig, Secret, TelemetryConfig};

pub(super) fn logging(ctx: &mut Ctx<'_>, raw: RawLogging) -> LoggingConfig {
    let format = match raw.format.as_deref() {
        None => LogFormat::Text,
        Some(s) => LogFormat::parse(s).unwrap_or_else(|| {
            ctx.problem(
                "logging.format",
                format!("{s:?} is not a log format; expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }),
    };
    LoggingConfig {
        format,
        access_log: raw.access_log.unwrap_or(false),
        access_log_prompts: raw.access_log_prompts.unwrap_or(false),
    }
}

pub(super) fn telemetry(ctx: &mut Ctx<'_>, raw: RawTelemetry) -> Option<TelemetryConfig> {
    let p = "telemetry";
    if let Some(proto) = raw.otlp_protocol.as_deref() {
        if proto != "http/protobuf" {
            ctx.problem(
                &format!("{p}.otlp_protocol"),
                format!("{proto:?} is not supported; expected \"http/protobuf\""),
            );
        }
    }
    let ratio = raw.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        ctx.problem(
            &format!("{p}.sampling_ratio"),
            format!("must be between 0 and 1, got {ratio}"),
        );
    }
    let service_name = raw.service_name.unwrap_or_else(|| "switchyard".to_owned());
    if service_name.trim().is_empty() {
        ctx.problem(&format!("{p}.service_name"), "must not be empty");
    }
    let mut resource_attributes = Vec::new();
    for (k, v) in raw.resource_attributes.unwrap_or_default().0 {
        if k.is_empty() {
            ctx.problem(
                &format!("{p}.resource_attributes"),
                "attribute names must not be empty",
            );
        } else if resource_attributes.iter().any(|(n, _)| n == &k) {
            ctx.problem(
                &format!("{p}.resource_attributes.{k}"),
                "duplicate attribute",
            );
        } else {
            resource_attributes.push((k, v));
        }
    }
    let mut headers = Vec::new();
    for (k, v) in raw.otlp_headers.unwrap_or_default().0 {
        let path = format!("{p}.otlp_headers.{k}");
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            ctx.problem(&path, "is not a valid HTTP header name");
            continue;
        }
        match ctx.resolve(&path, &v) {
            Ok(Resolved::Value(v)) => headers.push((k, Secret::new(v))),
            Ok(Resolved::Missing(name, why)) => ctx.warn(
                &path,
                format!("environment variable {name} {why}; the header is not sent"),
            ),
            Err(()) => {}
        }
    }
    let mut count = |key: &str, value: Option<usize>, default: usize| {
        let v = value.unwrap_or(default);
        ctx.positive(&format!("{p}.{key}"), v as u64);
        v
    };
    let max_queue_size = count("max_queue_size", raw.max_queue_size, 2048);
    let max_export_batch_size = count("max_export_batch_size", raw.max_export_batch_size, 512);
    let mut millis = |key: &str, value: Option<u64>, default: u64| {
        let v = value.unwrap_or(default);
        ctx.positive(&format!("{p}.{key}"), v);
        Duration::from_millis(v)
    };
    let export_interval = millis("export_interval_ms", raw.export_interval_ms, 1000);
    let export_timeout = millis("export_timeout_ms", raw.export_timeout_ms, 10_000);
    let endpoint = raw.otlp_endpoint?;
    let base = ctx.http_url(&format!("{p}.otlp_endpoint"), &endpoint)?;
    let traces_url = if base.ends_with("/v1/traces") {
        base
    } else {
        format!("{base}/v1/traces")
    };
    Some(TelemetryConfig {
        traces_url,
        headers,
        service_name,
        sampling_ratio: ratio,
        resource_attributes,
        record_prompts: raw.record_prompts.unwrap_or(false),
        max_queue_size,
        max_export_batch_size,
        export_interval,
        export_timeout,
    })
}
