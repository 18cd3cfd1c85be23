//! Metrics plugin: what an LLM gateway's telemetry records, per provider and model.
//!
//! - `<prefix>requests_total{provider, model, outcome, status}`: every finished attempt;
//!   `outcome` is `success`, `client_error`, `upstream_error`, `plugin_error`,
//!   `gateway_error` or `rate_limited` (any 429).
//! - `<prefix>request_duration_seconds{provider, model, outcome}`: from the gateway receiving
//!   the request to the post-hook (or the last chunk of a stream).
//! - `<prefix>upstream_latency_seconds{provider, model}`: time spent waiting for the provider.
//! - `<prefix>prompt_tokens_total` / `<prefix>completion_tokens_total{provider, model}`.
//!
//! Exported by the gateway as `switchyard_plugin_<name>{plugin="metrics", ...}`. Provider and
//! model are the ones that answered (after fallbacks).
//!
//! Config (all optional):
//! ```json
//! {"prefix": "llm_", "duration_buckets": [0.1, 0.5, 1, 5, 30], "streams": true}
//! ```
//! `streams: false` skips streamed responses, saving one call per chunk.

use serde::Deserialize;
use switchyard_sdk::metrics::{Counter, Histogram};
use switchyard_sdk::{
    clock, export_plugin, ChunkOutput, ErrorKind, Hooks, Outcome, Plugin, PostAction, RequestInfo,
    StreamChunk, Usage,
};

mod stream_state;

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
    /// Record streamed responses through `on-chunk`.
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
}

/// The `outcome` label of a finished attempt.
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    if outcome.status() == 429 {
        return "rate_limited";
    }
    match outcome {
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

impl Plugin for Metrics {
    const HOOKS: Hooks = Hooks::POST.union(Hooks::CHUNK);

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
        })
    }

    fn hooks(&self) -> Hooks {
        if self.streams {
            Hooks::POST | Hooks::CHUNK
        } else {
            Hooks::POST
        }
    }

    fn post_hook(&self, info: RequestInfo, outcome: Outcome) -> Result<PostAction, String> {
        let (provider, model) = (outcome.provider(), outcome.model());
        let label = outcome_label(&outcome);
        self.record(
            provider,
            model,
            label,
            outcome.status(),
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
        Ok(PostAction::Keep)
    }

    fn on_chunk(
        &self,
        info: RequestInfo,
        chunk: StreamChunk,
        state: Vec<u8>,
    ) -> Result<ChunkOutput, String> {
        // Providers differ in which chunk carries usage (the last, or every one, cumulative):
        // keep the latest and record it once, when the stream ends.
        let mut usage = stream_state::decode(&state);
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
        if !chunk.last {
            return Ok(ChunkOutput::keep(stream_state::encode(usage.as_ref())));
        }
        let (provider, model) = (info.provider.as_str(), info.model.as_str());
        self.record(
            provider,
            model,
            "success",
            200,
            seconds_since(info.received_at_ms),
        );
        if let Some(u) = &usage {
            self.tokens(provider, model, u);
        }
        Ok(ChunkOutput::keep(Vec::new()))
    }
}

export_plugin!(Metrics);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use switchyard_sdk::testing::{self, metric_count, metric_value};

    use super::*;

    fn usage(p: u32, c: u32) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
        }
    }

    #[test]
    fn outcome_labels() {
        let ok = Outcome::Response(testing::response("openai", "m", &["hi"], None));
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
            let o = Outcome::Error(testing::error("openai", "m", status, kind));
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
    }

    #[test]
    fn post_hook_records_response_and_error() {
        let m = Metrics::init(r#"{"prefix": "t1_"}"#).unwrap();
        assert_eq!(m.hooks(), Hooks::POST | Hooks::CHUNK);
        testing::set_now_ms(Some(10_500));
        let req = testing::request("openai", "gpt-4o", &[("user", "hi")]);
        let mut resp = testing::response("openai", "gpt-4o", &["hello"], Some(usage(7, 3)));
        resp.upstream_latency_us = 250_000;
        let out = m
            .post_hook(testing::info(&req, 10_000), Outcome::Response(resp))
            .unwrap();
        assert_eq!(out, PostAction::Keep);
        let err = testing::error("anthropic", "claude", 502, ErrorKind::Upstream);
        m.post_hook(testing::info(&req, 9_000), Outcome::Error(err))
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
    fn streams_record_once_at_the_end() {
        let m = Metrics::init(r#"{"prefix": "t2_"}"#).unwrap();
        testing::set_now_ms(Some(2_000));
        let req = testing::request("groq", "llama", &[("user", "hi")]);
        let info = testing::info(&req, 1_000);
        let mut state = Vec::new();
        for (i, u) in [None, Some(usage(5, 1)), Some(usage(5, 2))]
            .into_iter()
            .enumerate()
        {
            let mut c = testing::chunk(i as u32, Some("x"), false);
            c.usage = u;
            let out = m.on_chunk(info.clone(), c, state).unwrap();
            assert!(matches!(out.action, switchyard_sdk::ChunkAction::Keep));
            state = out.state;
        }
        let labels = ["groq", "llama", "success", "200"];
        assert_eq!(metric_value("t2_requests_total", &labels), None);
        let out = m
            .on_chunk(info, testing::chunk(3, Some(""), true), state)
            .unwrap();
        assert!(out.state.is_empty());
        assert_eq!(metric_value("t2_requests_total", &labels), Some(1.0));
        assert_eq!(
            metric_value("t2_prompt_tokens_total", &labels[..2]),
            Some(5.0)
        );
        assert_eq!(
            metric_value("t2_completion_tokens_total", &labels[..2]),
            Some(2.0)
        );
    }
}
