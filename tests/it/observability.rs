//! What operators look at, through the real binary: log lines without escape codes when
//! written to a file, JSON lines and the access log (no secret, no prompt), OpenTelemetry
//! traces received and decoded by a local OTLP receiver, a collector that is down, and the
//! status page with the JSON it polls.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};
use switchyard_tests::otlp::{OtlpReceiver, ReceivedSpan};
use switchyard_tests::{require_plugin, TempDir};

use crate::harness::{metric, openai_provider, user, Binary};

const KEY: &str = "sk-test-key-0001";
const PROMPT: &str = "my very private prompt 4242";

async fn chat(
    client: &reqwest::Client,
    gw: &Binary,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, String, Value) {
    let mut req = client.post(gw.url("/v1/chat/completions")).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, id, body)
}

/// Poll the binary's log until `f` holds or 5 s pass.
async fn log_until(gw: &Binary, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = gw.log();
        if f(&log) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_carry_no_escape_codes() {
    let mock = MockUpstream::start().await;
    let cfg = json!({"providers": {"openai": openai_provider(&mock.url())},
                     "logging": {"access_log": true}});
    let Some(gw) = Binary::start(cfg, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    let (status, id, _) = chat(
        &client,
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user(PROMPT)}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let log = log_until(&gw, |l| l.contains(&id)).await;
    assert!(log.contains("switchyard listening"), "{log}");
    assert!(log.contains(&id), "no access line for {id}:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log:?}"
    );
    assert!(!log.contains(PROMPT) && !log.contains(KEY), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_object_per_line_with_an_access_line_per_request() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Status {
        status: 400,
        body: None,
        retry_after: None,
    });
    let cfg = json!({"providers": {"openai": openai_provider(&mock.url())},
                     "logging": {"access_log": true}});
    let Some(gw) = Binary::start_with_args(cfg, &[], "info", &["--log-format", "json"]).await
    else {
        return;
    };
    let client = reqwest::Client::new();
    let (s1, bad, _) = chat(
        &client,
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user(PROMPT)}),
        &[],
    )
    .await;
    assert_eq!(s1, 400);
    let (s2, good, _) = chat(
        &client,
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user(PROMPT)}),
        &[("authorization", "Bearer client-secret-token-77")],
    )
    .await;
    assert_eq!(s2, 200);
    let log = log_until(&gw, |l| l.contains(&good) && l.contains("\"status\":400")).await;
    assert!(!log.contains('\u{1b}'), "{log:?}");
    for secret in [PROMPT, KEY, "client-secret-token-77"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    let access = |id: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "switchyard::access" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}:\n{log}"))
            .clone()
    };
    let ok = access(&good);
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["provider"], "openai");
    assert_eq!(ok["model"], "gpt-4o");
    assert_eq!(ok["status"], 200);
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0, "{ok}");
    assert!(ok["input_tokens"].is_u64(), "{ok}");
    assert!(ok.get("prompt").is_none(), "{ok}");
    // Error answers carry no x-request-id; the access line still has the request's id.
    assert!(bad.is_empty());
    let failed = lines
        .iter()
        .find(|l| l["target"] == "switchyard::access" && l["status"] == 400)
        .unwrap_or_else(|| panic!("no access line for the 400:\n{log}"));
    assert!(failed["request_id"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(failed["status"], 400);
    assert!(failed["error"].is_string(), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_prompts_only_when_configured() {
    let mock = MockUpstream::start().await;
    let cfg = json!({"providers": {"openai": openai_provider(&mock.url())},
                     "logging": {"format": "json", "access_log": true, "access_log_prompts": true}});
    let Some(gw) = Binary::start(cfg, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    let (_, id, _) = chat(
        &client,
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user(PROMPT)}),
        &[],
    )
    .await;
    let log = log_until(&gw, |l| l.contains(&id)).await;
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line["prompt"].as_str().unwrap().contains(PROMPT), "{line}");
    assert!(!log.contains(KEY));
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

fn root<'a>(spans: &'a [ReceivedSpan], id: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.str("switchyard.request_id") == Some(id))
        .unwrap_or_else(|| panic!("no request span for {id}: {spans:#?}"))
}

fn upstream_spans<'a>(spans: &'a [ReceivedSpan], root: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut v: Vec<_> = children(spans, root)
        .into_iter()
        .filter(|s| s.kind == 3)
        .collect();
    v.sort_by_key(|s| s.start_ns);
    v
}

/// The span tree and attributes of a plain request (continuing the caller's trace), a
/// streamed one, one retried then served by a fallback, and one a plugin rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_receiver_with_genai_attributes() {
    let (Some(rate), Some(metrics)) = (require_plugin("rate-limit"), require_plugin("metrics"))
    else {
        return;
    };
    let dir = TempDir::new("otel-plugins");
    dir.install(&rate, "rate-limit.wasm");
    dir.install(&metrics, "metrics.wasm");
    let receiver = OtlpReceiver::start().await;
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let cfg = json!({
        "client": {"initial_pool_size": 2},
        "providers": {
            "openai": {
                "keys": [{"value": KEY, "models": [], "weight": 1.0}],
                "network_config": {"base_url": format!("{}/v1", primary.url()), "max_retries": 1,
                                   "retry_backoff_initial": 10, "retry_backoff_max": 20}
            },
            "backup": {"type": "custom", "network_config": {"base_url": format!("{}/v1", backup.url())}}
        },
        "plugins": {"directory": dir.path(), "watch": false, "entries": [
            {"name": "rate-limit", "file": "rate-limit.wasm", "config": {"rules": [
                {"name": "limited", "match": {"model": "limited*"}, "per": "global",
                 "capacity": 1, "refill_per_second": 0.001}]}},
            {"name": "metrics", "file": "metrics.wasm"}
        ]},
        "telemetry": {"otlp_endpoint": receiver.url(), "service_name": "switchyard-test",
                      "export_interval_ms": 50,
                      "resource_attributes": {"deployment.environment": "test"}}
    });
    let Some(gw) = Binary::start(cfg, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    let wait = Duration::from_secs(10);

    // Plain, continuing the caller's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller}-01");
    let (status, id, body) = chat(
        &client,
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user(PROMPT)}),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let spans = receiver
        .trace_of(&id, 5, wait)
        .await
        .unwrap_or_else(|| panic!("trace incomplete: {:#?}\n{}", receiver.spans(), gw.log()));
    let r = root(&spans, &id);
    assert_eq!(r.trace_id, trace_id);
    assert_eq!(r.parent_span_id, caller, "the caller's span is the parent");
    assert_eq!(r.kind, 2, "server span");
    assert_eq!(r.name, "chat gpt-4o");
    assert_eq!(r.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(r.str("gen_ai.system"), Some("openai"));
    assert_eq!(r.str("gen_ai.request.model"), Some("gpt-4o"));
    assert!(
        r.str("gen_ai.response.model")
            .is_some_and(|m| !m.is_empty()),
        "{r:#?}"
    );
    let usage = &body["usage"];
    assert_eq!(
        r.int("gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64()
    );
    assert_eq!(
        r.int("gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64()
    );
    assert_eq!(r.int("http.response.status_code"), Some(200));
    assert!(
        r.attr("gen_ai.prompt").is_none(),
        "prompts are not recorded by default"
    );
    assert_eq!(
        r.resource.get("service.name"),
        Some(&json!("switchyard-test"))
    );
    assert_eq!(
        r.resource.get("deployment.environment"),
        Some(&json!("test"))
    );
    let kids = children(&spans, r);
    let names: Vec<&str> = kids.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "pre_hook rate-limit",
        "post_hook metrics",
        "queue_wait",
        "chat gpt-4o",
    ] {
        assert!(names.contains(&want), "{want} missing among {names:?}");
    }
    let pre = kids
        .iter()
        .find(|s| s.name == "pre_hook rate-limit")
        .unwrap();
    assert_eq!(pre.str("switchyard.plugin.name"), Some("rate-limit"));
    assert_eq!(pre.str("switchyard.plugin.outcome"), Some("continue"));
    let post = kids.iter().find(|s| s.name == "post_hook metrics").unwrap();
    assert_eq!(post.str("switchyard.plugin.outcome"), Some("keep"));
    let up = upstream_spans(&spans, r);
    assert_eq!(up.len(), 1, "{up:#?}");
    assert_eq!(up[0].str("switchyard.provider"), Some("openai"));
    assert_eq!(up[0].str("gen_ai.request.model"), Some("gpt-4o"));
    assert_eq!(up[0].int("switchyard.key_index"), Some(0));
    assert_eq!(up[0].int("switchyard.retry"), Some(0));
    assert_eq!(up[0].int("http.response.status_code"), Some(200));
    // The provider got the trace, with the upstream span as its parent.
    let sent = primary.received();
    let tp = sent
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_owned();
    assert_eq!(tp, format!("00-{trace_id}-{}-01", up[0].span_id));

    // Streamed.
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "messages": user("stream please"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    let spans = receiver.trace_of(&id, 4, wait).await.expect("stream trace");
    let r = root(&spans, &id);
    assert_eq!(r.attr("switchyard.stream"), Some(&json!(true)));
    let ttft = r
        .attr("gen_ai.server.time_to_first_token")
        .and_then(Value::as_f64);
    assert!(ttft.is_some_and(|t| t > 0.0), "{r:#?}");
    assert!(r.end_ns >= r.start_ns + (ttft.unwrap() * 1e9) as u64);
    assert_eq!(upstream_spans(&spans, r).len(), 1);
    assert!(r.trace_id != trace_id, "a new trace without traceparent");
    assert!(r.parent_span_id.is_empty());

    // Retried, then served by the fallback.
    for _ in 0..2 {
        primary.push_behavior(Behavior::Status {
            status: 500,
            body: None,
            retry_after: None,
        });
    }
    let (status, id, body) = chat(
        &client,
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user("x"), "fallbacks": ["backup/gpt-4o-mini"]}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let spans = receiver
        .trace_of(&id, 10, wait)
        .await
        .unwrap_or_else(|| panic!("fallback trace incomplete: {:#?}", receiver.spans()));
    let r = root(&spans, &id);
    assert_eq!(r.str("switchyard.provider"), Some("backup"));
    assert_eq!(r.int("switchyard.fallback_index"), Some(1));
    assert_eq!(r.name, "chat gpt-4o-mini");
    let up = upstream_spans(&spans, r);
    let seen: Vec<(Option<&str>, Option<i64>, Option<i64>)> = up
        .iter()
        .map(|s| {
            (
                s.str("switchyard.provider"),
                s.int("switchyard.retry"),
                s.int("http.response.status_code"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Some("openai"), Some(0), Some(500)),
            (Some("openai"), Some(1), Some(500)),
            (Some("backup"), Some(0), Some(200))
        ]
    );
    assert_eq!(up[0].status, 2, "a failed attempt is an error span");
    let pre_hooks = children(&spans, r)
        .iter()
        .filter(|s| s.name == "pre_hook rate-limit")
        .count();
    assert_eq!(pre_hooks, 2, "each target runs the hooks");

    // Rejected by a plugin: the second request for a model with one token.
    let body = json!({"model": "openai/limited-model", "messages": user("x")});
    let (s1, _, _) = chat(&client, &gw, body.clone(), &[]).await;
    assert_eq!(s1, 200);
    let (s2, _, err) = chat(&client, &gw, body, &[]).await;
    assert_eq!(s2, 429, "{err}");
    // Error answers carry no x-request-id: find the request span by its status.
    let deadline = Instant::now() + wait;
    let id = loop {
        let found = receiver
            .spans()
            .into_iter()
            .find(|s| s.kind == 2 && s.int("http.response.status_code") == Some(429));
        if let Some(s) = found {
            break s.str("switchyard.request_id").unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no rejected request span");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let spans = receiver
        .trace_of(&id, 2, wait)
        .await
        .expect("rejected trace");
    let r = root(&spans, &id);
    assert_eq!(r.str("gen_ai.request.model"), Some("limited-model"));
    assert_eq!(r.status, 2);
    assert!(r.str("error.type").is_some(), "{r:#?}");
    let kids = children(&spans, r);
    let pre = kids
        .iter()
        .find(|s| s.name == "pre_hook rate-limit")
        .unwrap();
    assert_eq!(pre.str("switchyard.plugin.outcome"), Some("reject"));
    assert!(upstream_spans(&spans, r).is_empty(), "no provider call");
    assert!(!kids.iter().any(|s| s.name == "queue_wait"));

    // Nothing dropped, and no prompt anywhere.
    let m = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&m, "switchyard_trace_spans_exported_total") >= 15.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "switchyard_trace_spans_dropped_total{reason=\"queue_full\"}"
        ),
        0.0
    );
    assert!(receiver.spans().iter().all(|s| s
        .attributes
        .values()
        .all(|v| !v.to_string().contains(PROMPT))));
}

/// `record_prompts` puts the messages and the answer on the request span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_are_recorded_only_when_configured() {
    let receiver = OtlpReceiver::start().await;
    let mock = MockUpstream::start().await;
    let cfg = json!({"providers": {"openai": openai_provider(&mock.url())},
                     "telemetry": {"otlp_endpoint": receiver.url(), "record_prompts": true,
                                   "export_interval_ms": 50}});
    let Some(gw) = Binary::start(cfg, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    let (_, id, _) = chat(
        &client,
        &gw,
        json!({"model": "openai/gpt-4o", "messages": user(PROMPT)}),
        &[],
    )
    .await;
    let spans = receiver
        .trace_of(&id, 2, Duration::from_secs(10))
        .await
        .expect("trace");
    let r = root(&spans, &id);
    assert!(r.str("gen_ai.prompt").unwrap().contains(PROMPT), "{r:#?}");
    assert!(r.str("gen_ai.completion").is_some());
    assert!(spans
        .iter()
        .all(|s| s.attributes.values().all(|v| !v.to_string().contains(KEY))));
}

/// A collector that is gone costs requests nothing: they succeed, and the lost spans are
/// counted on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_does_not_fail_requests_and_drops_are_counted() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mock = MockUpstream::start().await;
    let cfg = json!({"providers": {"openai": openai_provider(&mock.url())},
                     "telemetry": {"otlp_endpoint": format!("http://{closed}"),
                                   "export_interval_ms": 20, "export_timeout_ms": 500}});
    let Some(gw) = Binary::start(cfg, &[], "info").await else {
        return;
    };
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let (status, _, body) = chat(
            &client,
            &gw,
            json!({"model": "openai/gpt-4o", "messages": user("x")}),
            &[],
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = reqwest::get(gw.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let dropped = metric(
            &m,
            "switchyard_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if dropped >= 20.0 {
            assert_eq!(metric(&m, "switchyard_trace_spans_exported_total"), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drops not counted:\n{m}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.log().contains("trace export failed"), "{}", gw.log());
}

/// The status page is one self-contained HTML page; the JSON it polls has what it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_is_served_and_can_be_turned_off() {
    let mock = MockUpstream::start().await;
    let long_key = "sk-proj-abcdefghijklmnopqrstuvwxyz-9876";
    let cfg = json!({"providers": {"openai": {
        "keys": [{"value": long_key, "models": [], "weight": 1.0}],
        "network_config": {"base_url": format!("{}/v1", mock.url())}}}});
    let gw = crate::harness::Gateway::start(cfg.clone()).await;
    for path in ["/ui", "/"] {
        let resp = gw.client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = resp.text().await.unwrap();
        assert!(html.contains("<title>Switchyard status</title>"));
        assert!(html.contains("fetch(\"health\")") && html.contains("fetch(\"metrics\")"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
    }
    let health: Value = serde_json::from_str(&gw.get_text("/health").await).unwrap();
    let p = &health["providers"][0];
    assert_eq!(p["masked_keys"], json!(["****9876"]));
    assert!(!health.to_string().contains("abcdefghijklmnop"));
    for key in [
        "available",
        "queue_depth",
        "in_flight",
        "concurrency",
        "buffer_size",
    ] {
        assert!(!p[key].is_null(), "{key} missing: {p}");
    }

    let mut off = cfg;
    off["status_page"] = json!({"enabled": false});
    let gw = crate::harness::Gateway::start(off).await;
    let resp = gw.client.get(gw.url("/ui")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// Every metric the Grafana dashboard queries is on `/metrics` after a workload that
/// touches each: plain, streamed, retried and fallen-back requests, a full queue, a
/// plugin that traps, plugin timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_only_metrics_that_exist() {
    let (Some(metrics_plugin), Some(trap)) = (require_plugin("metrics"), require_plugin("trap"))
    else {
        return;
    };
    let dir = TempDir::new("grafana-plugins");
    dir.install(&metrics_plugin, "metrics.wasm");
    dir.install(&trap, "trap.wasm");
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let gw = crate::harness::Gateway::start(json!({
        "client": {"initial_pool_size": 2, "drop_excess_requests": true},
        "providers": {
            "openai": {
                "keys": [{"value": KEY, "models": [], "weight": 1.0}],
                "network_config": {"base_url": format!("{}/v1", primary.url()), "max_retries": 1,
                                   "retry_backoff_initial": 10, "retry_backoff_max": 20},
                "concurrency_and_buffer_size": {"concurrency": 1, "buffer_size": 1}
            },
            "backup": {"type": "custom", "network_config": {"base_url": format!("{}/v1", backup.url())}}
        },
        "plugins": {"directory": dir.path(), "watch": false, "entries": [
            {"name": "metrics", "file": "metrics.wasm"},
            {"name": "trap", "file": "trap.wasm", "on_error": "fail_open", "deadline_ms": 50}
        ]}
    }))
    .await;
    let post = |body: Value| {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        async move { client.post(url).json(&body).send().await.unwrap() }
    };
    let r = post(json!({"model": "openai/gpt-4o", "messages": user("hi")})).await;
    assert_eq!(r.status(), 200);
    let r = post(json!({"model": "openai/gpt-4o", "messages": user("hi"), "stream": true})).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    for _ in 0..2 {
        primary.push_behavior(Behavior::Status {
            status: 500,
            body: None,
            retry_after: None,
        });
    }
    let r = post(
        json!({"model": "openai/gpt-4o", "messages": user("hi"), "fallbacks": ["backup/gpt-4o"]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // A full queue: one place, three requests at once.
    primary.set_default_behavior(Behavior::Delay(Duration::from_millis(300)));
    let calls: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(post(
                json!({"model": "openai/gpt-4o", "messages": user("hi")}),
            ))
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&503), "{statuses:?}");

    let text = gw.get_text("/metrics").await;
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            switchyard_tests::repo_root().join("docs/grafana/switchyard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        ("query", Value::String(s)) | ("definition", Value::String(s)) => {
                            out.push(s.clone())
                        }
                        ("query", Value::Object(q)) => {
                            if let Some(Value::String(s)) = q.get("query") {
                                out.push(s.clone());
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    let mut names: Vec<String> = Vec::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("switchyard_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    assert!(names.len() >= 20, "the dashboard queries {names:?}");
    let on_metrics = |name: &str| {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
    };
    let missing: Vec<&String> = names.iter().filter(|n| !on_metrics(n)).collect();
    assert!(
        missing.is_empty(),
        "queried but not on /metrics: {missing:?}\n{text}"
    );
}

/// The status page in a real browser: headless Chromium loads it from a running gateway,
/// runs its script, and the DOM lists the config's providers and plugins; a screenshot is
/// left in the target directory (`switchyard-status-page.png`) for a person to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_shows_providers_and_plugins() {
    let Some(chromium) = switchyard_tests::require_chromium() else {
        return;
    };
    let Some(metrics_plugin) = require_plugin("metrics") else {
        return;
    };
    let dir = TempDir::new("ui-plugins");
    dir.install(&metrics_plugin, "metrics.wasm");
    let mock = MockUpstream::start().await;
    let gw = crate::harness::Gateway::start(json!({
        "client": {"initial_pool_size": 2},
        "providers": {
            "openai": {"keys": [{"value": "sk-proj-0123456789abcdefghij-WXYZ", "models": [], "weight": 1.0}],
                       "network_config": {"base_url": format!("{}/v1", mock.url())}},
            "backup": {"type": "custom", "network_config": {"base_url": format!("{}/v1", mock.url())}}
        },
        "plugins": {"directory": dir.path(), "watch": false,
                    "entries": [{"name": "metrics", "file": "metrics.wasm"}]}
    }))
    .await;
    for _ in 0..3 {
        let r = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "openai/gpt-4o", "messages": user("hi")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let profile = TempDir::new("chromium-profile");
    let url = gw.url("/ui");
    let run = |extra: Vec<String>| {
        let chromium = chromium.clone();
        let profile = profile.path().to_owned();
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--virtual-time-budget=5000",
                    "--window-size=1280,900",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .arg(url)
                .output()
                .unwrap()
        })
    };
    let out = tokio::time::timeout(Duration::from_secs(60), run(vec!["--dump-dom".into()]))
        .await
        .expect("chromium finished")
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page's script did not render:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "data-provider=\"openai\"",
        "data-provider=\"backup\"",
        "data-plugin=\"metrics\"",
        "****WXYZ",
        ">ready<",
    ] {
        assert!(dom.contains(want), "{want} not in the DOM:\n{dom}");
    }
    assert!(!dom.contains("0123456789abcdefghij"), "a key in the page");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| switchyard_tests::repo_root().join("target"));
    let shot = target.join("switchyard-status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        run(vec![format!("--screenshot={}", shot.display())]),
    )
    .await
    .expect("chromium finished")
    .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("status page screenshot: {}", shot.display());
}
