//! Metrics plugin: what an LLM gateway's telemetry records, per provider and model.
//!
//! - `<prefix>requests_total{provider, model, outcome, status}`: every finished attempt;
//!   `outcome` is `success`, `client_error`, `upstream_error`, `plugin_error`,
//!   `gateway_error` or `rate_limited` (any 429).
//! - `<prefix>request_duration_seconds{provider, model, outcome}`: from the gateway receiving
//!   the request to the post-hook (or the last chunk of a stream).
//! - `<prefix>upstream_latency_seconds{provider, model}`: time spent waiting for the provider.
//! - `<prefix>prompt_tokens_total` / `<prefix>completion_tokens_total{provider, model}`.
//! - `<prefix>streams_total{provider, model, end}`: every streamed response, by how it ended
//!   (`complete`, `upstream_error`, `plugin_error`, `client_gone`).
//!
//! Built for `switchyard:plugin@0.2.0`: a stream is recorded once, from the post-hook's
//! `stream-ended` (with the usage seen, and also when the client went away), so the plugin
//! needs no call per chunk and reads no part of the request.
//!
//! Exported by the gateway as `switchyard_plugin_<name>{plugin="metrics", ...}`. Provider and
//! model are the ones that answered (after fallbacks).
//!
//! Config (all optional):
//! ```json
//! {"prefix": "llm_", "duration_buckets": [0.1, 0.5, 1, 5, 30], "streams": true}
//! ```
//! `streams: false` skips streamed responses.

use serde::Deserialize;
use switchyard_sdk::metrics::{Counter, Histogram};
use switchyard_sdk::v0_2::{
    ErrorKind, Hooks, Outcome, Plugin, PostOutput, RequestInfo, RequestParts, StreamEnd,
    StreamEnded, Usage,
};
use switchyard_sdk::{clock, export_plugin_v0_2};

/// Buckets for whole-request durations: LLM calls take from 100 ms to minutes.
const DURATION_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Prepended to every metric name.
    prefix: String,
    /// Upper bounds (seconds) of the duration and upstream-latency histograms.
    duration_buckets: Vec<f64>,
    /// Record streamed responses (when they end).
    streams: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: "llm_".into(),
            duration_buckets: DURATION_BUCKETS.to_vec(),
            streams: true,
        }
    }
}

struct Metrics {
    streams: bool,
    requests: Counter,
    duration: Histogram,
    upstream: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    streams_total: Counter,
}

/// The `outcome` label of a finished attempt.
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    if status(outcome) == 429 {
        return "rate_limited";
    }
    match outcome {
        Outcome::StreamEnded(s) => match s.end {
            StreamEnd::Complete => "success",
            StreamEnd::UpstreamError(_) => "upstream_error",
            StreamEnd::PluginError(_) => "plugin_error",
            StreamEnd::ClientGone => "client_gone",
        },
        Outcome::Response(r) if r.status < 400 => "success",
        Outcome::Response(r) if r.status < 500 => "client_error",
        // A plugin turned the response into a server error.
        Outcome::Response(_) => "plugin_error",
        Outcome::Error(e) => match e.kind {
            ErrorKind::Client => "client_error",
            ErrorKind::Upstream => "upstream_error",
            ErrorKind::Plugin => "plugin_error",
            ErrorKind::Gateway => "gateway_error",
        },
    }
}

fn status(o: &Outcome) -> u16 {
    match o {
        Outcome::Response(r) => r.status,
        Outcome::Error(e) => e.status,
        Outcome::StreamEnded(s) => s.status,
    }
}

fn provider_model(o: &Outcome) -> (&str, &str) {
    match o {
        Outcome::Response(r) => (&r.provider, &r.model),
        Outcome::Error(e) => (&e.provider, &e.model),
        Outcome::StreamEnded(s) => (&s.provider, &s.model),
    }
}

fn validate(c: &Config) -> Result<(), String> {
    let name_ok = c
        .prefix
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
    if !name_ok {
        return Err(format!(
            "config.prefix: {:?} must match [a-z_][a-z0-9_]*",
            c.prefix
        ));
    }
    if c.duration_buckets.is_empty() {
        return Err("config.duration_buckets: must not be empty".into());
    }
    if c.duration_buckets.windows(2).any(|w| w[0] >= w[1])
        || c.duration_buckets
            .iter()
            .any(|b| !b.is_finite() || *b <= 0.0)
    {
        return Err("config.duration_buckets: must be positive and strictly ascending".into());
    }
    Ok(())
}

impl Metrics {
    fn record(&self, provider: &str, model: &str, outcome: &'static str, status: u16, took_s: f64) {
        let status = status.to_string();
        self.requests.inc(&[provider, model, outcome, &status]);
        self.duration.observe(&[provider, model, outcome], took_s);
    }

    fn tokens(&self, provider: &str, model: &str, u: &Usage) {
        self.prompt_tokens
            .add(&[provider, model], f64::from(u.prompt_tokens));
        self.completion_tokens
            .add(&[provider, model], f64::from(u.completion_tokens));
    }
}

fn seconds_since(received_at_ms: u64) -> f64 {
    clock::since_ms(received_at_ms).as_secs_f64()
}

impl Metrics {
    fn stream_ended(&self, info: &RequestInfo, s: &StreamEnded, label: &'static str) {
        let (provider, model) = (s.provider.as_str(), s.model.as_str());
        self.streams_total.inc(&[provider, model, s.end.as_str()]);
        self.record(
            provider,
            model,
            label,
            s.status,
            seconds_since(info.received_at_ms),
        );
        if let Some(u) = &s.usage {
            self.tokens(provider, model, u);
        }
    }
}

impl Plugin for Metrics {
    const HOOKS: Hooks = Hooks::POST;
    const READS: RequestParts = RequestParts::empty();

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::config::parse(config)?;
        validate(&c)?;
        let p = &c.prefix;
        let b = Some(c.duration_buckets.as_slice());
        Ok(Metrics {
            streams: c.streams,
            requests: Counter::declare(
                &format!("{p}requests_total"),
                "Finished LLM requests (per attempt) by provider, model, outcome and status",
                &["provider", "model", "outcome", "status"],
            )?,
            duration: Histogram::declare(
                &format!("{p}request_duration_seconds"),
                "Time from the gateway receiving the request to its outcome",
                &["provider", "model", "outcome"],
                b,
            )?,
            upstream: Histogram::declare(
                &format!("{p}upstream_latency_seconds"),
                "Time spent waiting for the provider",
                &["provider", "model"],
                b,
            )?,
            prompt_tokens: Counter::declare(
                &format!("{p}prompt_tokens_total"),
                "Prompt tokens reported by providers",
                &["provider", "model"],
            )?,
            completion_tokens: Counter::declare(
                &format!("{p}completion_tokens_total"),
                "Completion tokens reported by providers",
                &["provider", "model"],
            )?,
            streams_total: Counter::declare(
                &format!("{p}streams_total"),
                "Streamed responses by provider, model and how they ended",
                &["provider", "model", "end"],
            )?,
        })
    }

    fn post_hook(&self, info: RequestInfo, outcome: Outcome) -> Result<PostOutput, String> {
        let label = outcome_label(&outcome);
        if let Outcome::StreamEnded(s) = &outcome {
            if self.streams {
                self.stream_ended(&info, s, label);
            }
            return Ok(PostOutput::keep());
        }
        let (provider, model) = provider_model(&outcome);
        self.record(
            provider,
            model,
            label,
            status(&outcome),
            seconds_since(info.received_at_ms),
        );
        if let Outcome::Response(r) = &outcome {
            if r.upstream_latency_us > 0 {
                self.upstream
                    .observe(&[provider, model], r.upstream_latency_us as f64 / 1e6);
            }
            if let Some(u) = &r.usage {
                self.tokens(provider, model, u);
            }
        }
        Ok(PostOutput::keep())
    }
}

export_plugin_v0_2!(Metrics);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use switchyard_sdk::testing::{self, metric_count, metric_value};
    use switchyard_sdk::v0_2;
    use switchyard_sdk::v0_2::testing as t2;

    use super::*;

    fn usage(p: u32, c: u32) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
        }
    }

    fn response(provider: &str, model: &str, usage: Option<Usage>) -> v0_2::Response {
        v0_2::Response {
            status: 200,
            provider: provider.into(),
            model: model.into(),
            choices: vec!["hi".into()],
            usage,
            upstream_latency_us: 0,
            body_json: String::new(),
        }
    }

    fn error(provider: &str, model: &str, status: u16, kind: ErrorKind) -> v0_2::Error {
        v0_2::Error {
            status,
            kind,
            message: "failed".into(),
            code: None,
            provider: provider.into(),
            model: model.into(),
        }
    }

    #[test]
    fn outcome_labels() {
        let ok = Outcome::Response(response("openai", "m", None));
        assert_eq!(outcome_label(&ok), "success");
        let cases = [
            (400, ErrorKind::Client, "client_error"),
            (502, ErrorKind::Upstream, "upstream_error"),
            (429, ErrorKind::Upstream, "rate_limited"),
            (429, ErrorKind::Plugin, "rate_limited"),
            (500, ErrorKind::Plugin, "plugin_error"),
            (504, ErrorKind::Gateway, "gateway_error"),
        ];
        for (status, kind, want) in cases {
            let o = Outcome::Error(error("openai", "m", status, kind));
            assert_eq!(outcome_label(&o), want, "{status} {kind:?}");
        }
    }

    #[test]
    fn bad_config_names_the_field() {
        let e = Metrics::init(r#"{"prefix": "Bad"}"#).err().unwrap();
        assert!(e.starts_with("config.prefix"), "{e}");
        let e = Metrics::init(r#"{"duration_buckets": [1, 0.5]}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("config.duration_buckets"), "{e}");
        let e = Metrics::init(r#"{"streams": "yes"}"#).err().unwrap();
        assert!(e.starts_with("config.streams"), "{e}");
        let e = Metrics::init(r#"{"stream": true}"#).err().unwrap();
        assert!(e.contains("unknown field"), "{e}");
        let p = Metrics::init(r#"{"streams": false}"#).unwrap();
        assert_eq!(p.hooks(), Hooks::POST);
        assert_eq!(p.reads(), RequestParts::empty());
    }

    #[test]
    fn post_hook_records_response_and_error() {
        let m = Metrics::init(r#"{"prefix": "t1_"}"#).unwrap();
        assert_eq!(m.hooks(), Hooks::POST);
        testing::set_now_ms(Some(10_500));
        let req = t2::request("openai", "gpt-4o", &[("user", "hi")]);
        let mut resp = response("openai", "gpt-4o", Some(usage(7, 3)));
        resp.upstream_latency_us = 250_000;
        let out = m
            .post_hook(t2::info(&req, 10_000), Outcome::Response(resp))
            .unwrap();
        assert_eq!(out, PostOutput::keep());
        let err = error("anthropic", "claude", 502, ErrorKind::Upstream);
        m.post_hook(t2::info(&req, 9_000), Outcome::Error(err))
            .unwrap();

        let ok = ["openai", "gpt-4o", "success", "200"];
        assert_eq!(metric_value("t1_requests_total", &ok), Some(1.0));
        assert_eq!(
            metric_value("t1_request_duration_seconds", &ok[..3]),
            Some(0.5)
        );
        assert_eq!(
            metric_value("t1_upstream_latency_seconds", &ok[..2]),
            Some(0.25)
        );
        assert_eq!(metric_value("t1_prompt_tokens_total", &ok[..2]), Some(7.0));
        assert_eq!(
            metric_value("t1_completion_tokens_total", &ok[..2]),
            Some(3.0)
        );
        let bad = ["anthropic", "claude", "upstream_error", "502"];
        assert_eq!(metric_value("t1_requests_total", &bad), Some(1.0));
        assert_eq!(
            metric_value("t1_request_duration_seconds", &bad[..3]),
            Some(1.5)
        );
        assert_eq!(metric_count("t1_upstream_latency_seconds", &bad[..2]), None);
    }

    #[test]
    fn streams_record_once_when_they_end() {
        let m = Metrics::init(r#"{"prefix": "t2_"}"#).unwrap();
        testing::set_now_ms(Some(2_000));
        let req = t2::request("groq", "llama", &[("user", "hi")]);
        let mut done = t2::stream_ended("groq", "llama", StreamEnd::Complete, 3);
        done.usage = Some(usage(5, 2));
        m.post_hook(t2::info(&req, 1_000), Outcome::StreamEnded(done))
            .unwrap();
        let gone = t2::stream_ended("groq", "llama", StreamEnd::ClientGone, 1);
        m.post_hook(t2::info(&req, 1_000), Outcome::StreamEnded(gone))
            .unwrap();
        let labels = ["groq", "llama", "success", "200"];
        assert_eq!(metric_value("t2_requests_total", &labels), Some(1.0));
        let labels = ["groq", "llama", "client_gone", "200"];
        assert_eq!(metric_value("t2_requests_total", &labels), Some(1.0));
        assert_eq!(
            metric_value("t2_streams_total", &["groq", "llama", "complete"]),
            Some(1.0)
        );
        assert_eq!(
            metric_value("t2_streams_total", &["groq", "llama", "client_gone"]),
            Some(1.0)
        );
        assert_eq!(
            metric_value("t2_prompt_tokens_total", &["groq", "llama"]),
            Some(5.0)
        );
        assert_eq!(
            metric_value("t2_completion_tokens_total", &["groq", "llama"]),
            Some(2.0)
        );
    }
}
