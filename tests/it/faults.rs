//! The fault suite: the gateway driven from outside against a fault-injecting upstream and
//! misbehaving clients. Every scenario records what it expected and what it observed; the
//! table goes to `docs/reliability.md` (written by every run, so its figures are the last
//! run's), and the test fails if any scenario did not hold.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockOptions, MockUpstream};
use switchyard_tests::{require_plugin, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{eventually, metric, openai_provider, user, Binary, Gateway};

/// One line of the table.
struct Row {
    fault: String,
    policy: String,
    requests: usize,
    expected: String,
    observed: String,
    held: bool,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn add(
        &mut self,
        fault: &str,
        policy: &str,
        requests: usize,
        expected: &str,
        observed: String,
        held: bool,
    ) {
        eprintln!(
            "fault suite: {} {fault}: {observed}",
            if held { "ok  " } else { "FAIL" }
        );
        self.0.push(Row {
            fault: fault.to_owned(),
            policy: policy.to_owned(),
            requests,
            expected: expected.to_owned(),
            observed,
            held,
        });
    }

    fn markdown(&self, elapsed: Duration) -> String {
        let mut s = String::from(
            "# Reliability: the fault suite's last run\n\n\
             Written by `tests/it/faults.rs` (part of `cargo xtask test`), which drives the \
             gateway over HTTP against a fault-injecting mock upstream \
             (`tests/src/mock.rs`, `Behavior`) and misbehaving raw-TCP clients. Each row is \
             one scenario: the fault, the policy configured for it, how many client requests \
             it sent, what should happen, and what this run observed. The figures are \
             measured by the run, on a debug build, with the rest of the test suite running \
             beside it, so times are upper bounds.\n\n",
        );
        let held = self.0.iter().filter(|r| r.held).count();
        let _ = writeln!(
            s,
            "{held} of {} scenarios held; the suite took {:.1} s.\n",
            self.0.len(),
            elapsed.as_secs_f64()
        );
        s.push_str("| fault | configured policy | requests | expected | observed | held |\n");
        s.push_str("|---|---|---|---|---|---|\n");
        for r in &self.0 {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&r.fault),
                cell(&r.policy),
                r.requests,
                cell(&r.expected),
                cell(&r.observed),
                if r.held { "yes" } else { "**no**" }
            );
        }
        s
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A gateway config: one openai provider at `mock` with `network` merged into its
/// `network_config`, and `client` as the client section.
fn config(mock: &MockUpstream, network: Value, client: Value) -> Value {
    let mut p = openai_provider(&mock.url());
    for (k, v) in network.as_object().unwrap() {
        p["network_config"][k] = v.clone();
    }
    json!({"client": client, "providers": {"openai": p}})
}

fn fast_retries(max_retries: u32) -> Value {
    json!({"max_retries": max_retries, "retry_backoff_initial": 5, "retry_backoff_max": 50})
}

fn chat_body(text: &str) -> Value {
    json!({"model": "openai/gpt-4o", "messages": user(text)})
}

/// Send a streamed request; (status, text of the content deltas, saw `[DONE]`, error events).
async fn stream(gw: &Gateway, text: &str) -> (u16, String, bool, usize) {
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o", "stream": true, "messages": user(text)}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, String::new(), false, 0);
    }
    let events = crate::harness::sse_events(resp).await;
    let done = events.last().map(String::as_str) == Some("[DONE]");
    let errors = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| v.get("error").is_some())
        .count();
    (status, crate::harness::text_of(&events), done, errors)
}

async fn gauges_zero(gw: &Gateway, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let m = gw.get_text("/metrics").await;
        if metric(&m, "switchyard_in_flight") == 0.0 && metric(&m, "switchyard_queue_depth") == 0.0
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upstream error statuses, each twice before a success, with two retries.
async fn status_faults(t: &mut Table) {
    let cases: [(u16, Option<&str>); 6] = [
        (500, None),
        (502, None),
        (503, None),
        (429, None),
        (429, Some("1")),
        (503, Some("1")),
    ];
    for (status, retry_after) in cases {
        let mock = MockUpstream::start().await;
        let gw = Gateway::start(config(&mock, fast_retries(2), json!({}))).await;
        let n = if retry_after.is_some() { 2 } else { 5 };
        let mut ok = 0;
        let mut slowest = Duration::ZERO;
        let mut fastest = Duration::MAX;
        for _ in 0..n {
            for _ in 0..2 {
                mock.push_behavior(Behavior::Status {
                    status,
                    body: None,
                    retry_after: retry_after.map(str::to_owned),
                });
            }
            let start = Instant::now();
            let (s, b) = gw.chat(chat_body("echo:after faults")).await;
            let took = start.elapsed();
            slowest = slowest.max(took);
            fastest = fastest.min(took);
            if s == 200 && b["choices"][0]["message"]["content"] == "after faults" {
                ok += 1;
            }
        }
        let attempts = mock.count() as f64 / n as f64;
        let waited = retry_after.is_none_or(|_| fastest >= Duration::from_millis(1900));
        let fault = match retry_after {
            Some(ra) => format!("HTTP {status} twice, `Retry-After: {ra}`"),
            None => format!("HTTP {status} twice, no Retry-After"),
        };
        let expected = match retry_after {
            Some(_) => "200 on the 3rd attempt, after waiting the 2 × 1 s asked for",
            None => "200 on the 3rd attempt, after short backoff",
        };
        t.add(
            &fault,
            "max_retries 2, backoff 5–50 ms",
            n,
            expected,
            format!(
                "{ok}/{n} answered 200; {attempts:.1} attempts per request; {:.0}–{:.0} ms",
                fastest.as_secs_f64() * 1e3,
                slowest.as_secs_f64() * 1e3
            ),
            ok == n && attempts == 3.0 && waited,
        );
    }
    // Exhausted: the provider's own status and message reach the client.
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Status {
        status: 503,
        body: None,
        retry_after: None,
    });
    let gw = Gateway::start(config(&mock, fast_retries(2), json!({}))).await;
    let (s, b) = gw.chat(chat_body("x")).await;
    let msg = b["error"]["message"].as_str().unwrap_or("").to_owned();
    t.add(
        "HTTP 503 on every attempt",
        "max_retries 2, no fallback",
        1,
        "503 with the provider's message after 3 attempts",
        format!("{s} after {} attempts: \"{msg}\"", mock.count()),
        s == 503 && mock.count() == 3 && !msg.is_empty(),
    );
    // A client error is not retried.
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Status {
        status: 400,
        body: None,
        retry_after: None,
    });
    let gw = Gateway::start(config(&mock, fast_retries(2), json!({}))).await;
    let (s, _) = gw.chat(chat_body("x")).await;
    t.add(
        "HTTP 400 from the provider",
        "max_retries 2",
        1,
        "400 passed on, not retried (1 attempt)",
        format!("{s} after {} attempt(s)", mock.count()),
        s == 400 && mock.count() == 1,
    );
}

/// Transport faults and bodies that are not what they claim.
async fn transport_faults(t: &mut Table) {
    // Reset before any byte of the answer.
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock, fast_retries(2), json!({}))).await;
    mock.push_behavior(Behavior::ResetConnection);
    let (s, _) = gw.chat(chat_body("echo:ok")).await;
    t.add(
        "connection reset before the answer",
        "max_retries 2",
        1,
        "retried; 200",
        format!("{s} after {} attempts", mock.count()),
        s == 200 && mock.count() == 2,
    );
    // Reset in the middle of the JSON body.
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock, fast_retries(2), json!({}))).await;
    mock.push_behavior(Behavior::ResetMidStream { after_chunks: 1 });
    let (s, _) = gw.chat(chat_body("echo:ok")).await;
    t.add(
        "connection reset halfway through the JSON body",
        "max_retries 2",
        1,
        "retried; 200",
        format!("{s} after {} attempts", mock.count()),
        s == 200 && mock.count() == 2,
    );
    // Hang: no answer at all.
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Hang);
    let gw = Gateway::start(config(
        &mock,
        json!({"default_request_timeout_in_seconds": 1, "max_retries": 1, "retry_backoff_initial": 5}),
        json!({}),
    ))
    .await;
    let start = Instant::now();
    let (s, b) = gw.chat(chat_body("x")).await;
    let took = start.elapsed();
    t.add(
        "upstream never answers (hang)",
        "request timeout 1 s, max_retries 1",
        1,
        "504 `upstream_timeout` after 2 attempts (~2 s)",
        format!(
            "{s} `{}` after {} attempts in {:.2} s",
            b["error"]["code"].as_str().unwrap_or("?"),
            mock.count(),
            took.as_secs_f64()
        ),
        s == 504
            && b["error"]["code"] == "upstream_timeout"
            && mock.count() == 2
            && took < Duration::from_secs(4),
    );
    // Slow headers: the first attempt is slower than the timeout, the second is not.
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(
        &mock,
        json!({"default_request_timeout_in_seconds": 1, "max_retries": 1, "retry_backoff_initial": 5}),
        json!({}),
    ))
    .await;
    mock.push_behavior(Behavior::Delay(Duration::from_millis(2500)));
    let start = Instant::now();
    let (s, _) = gw.chat(chat_body("echo:late")).await;
    let took = start.elapsed();
    t.add(
        "answer headers 2.5 s late, then on time",
        "request timeout 1 s, max_retries 1",
        1,
        "first attempt cut at 1 s, retried; 200 in ~1 s",
        format!(
            "{s} after {} attempts in {:.2} s",
            mock.count(),
            took.as_secs_f64()
        ),
        s == 200 && mock.count() == 2 && took < Duration::from_millis(2400),
    );
    // Body trickled slower than the timeout allows in total.
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Trickle {
        delay: Duration::from_millis(400),
    });
    let gw = Gateway::start(config(
        &mock,
        json!({"default_request_timeout_in_seconds": 1, "max_retries": 0}),
        json!({}),
    ))
    .await;
    let start = Instant::now();
    let (s, _) = gw.chat(chat_body("echo:slow body")).await;
    let took = start.elapsed();
    t.add(
        "JSON body sent 64 bytes per 400 ms (~2 s in all)",
        "request timeout 1 s, max_retries 0",
        1,
        "504 once the 1 s is spent (the timeout covers the body)",
        format!("{s} in {:.2} s", took.as_secs_f64()),
        s == 504 && took < Duration::from_millis(2500),
    );
    // Truncated JSON with a 200.
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::MalformedBody);
    let gw = Gateway::start(config(&mock, fast_retries(1), json!({}))).await;
    let (s, b) = gw.chat(chat_body("x")).await;
    let msg = b["error"]["message"].as_str().unwrap_or("").to_owned();
    t.add(
        "200 with truncated JSON",
        "max_retries 1",
        1,
        "502 saying the provider's answer could not be read",
        format!("{s}: \"{msg}\" ({} attempt(s))", mock.count()),
        s == 502 && !msg.is_empty(),
    );
    // Not JSON at all (an HTML error page from a proxy in front of the provider).
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Status {
        status: 200,
        body: Some("<html><body>Bad gateway</body></html>".into()),
        retry_after: None,
    });
    let gw = Gateway::start(config(&mock, fast_retries(1), json!({}))).await;
    let (s, b) = gw.chat(chat_body("x")).await;
    let msg = b["error"]["message"].as_str().unwrap_or("").to_owned();
    t.add(
        "200 with an HTML page instead of JSON",
        "max_retries 1",
        1,
        "502 saying the provider's answer could not be read",
        format!("{s}: \"{msg}\""),
        s == 502 && !msg.is_empty(),
    );
    // Oversize answer, chunked (no content-length to refuse early).
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Oversize { bytes: 4 << 20 });
    let gw = Gateway::start(config(
        &mock,
        fast_retries(0),
        json!({"max_response_body_bytes": 1 << 20}),
    ))
    .await;
    let (s, b) = gw.chat(chat_body("x")).await;
    let msg = b["error"]["message"].as_str().unwrap_or("").to_owned();
    t.add(
        "4 MiB answer body, chunked",
        "client.max_response_body_bytes 1 MiB",
        1,
        "502 naming client.max_response_body_bytes",
        format!("{s}: \"{msg}\""),
        s == 502 && msg.contains("max_response_body_bytes"),
    );
}

/// Stalls, resets and error events at each point of a stream.
async fn stream_faults(t: &mut Table) {
    let network = json!({
        "default_request_timeout_in_seconds": 2, "stream_idle_timeout_in_seconds": 1,
        "max_retries": 1, "retry_backoff_initial": 5
    });
    let before: [(&str, Behavior); 4] = [
        ("stream: no headers (hang)", Behavior::Hang),
        (
            "stream: headers, then silence before the first content chunk",
            Behavior::StallStream { after_chunks: 1 },
        ),
        (
            "stream: reset before the first content chunk",
            Behavior::ResetMidStream { after_chunks: 1 },
        ),
        (
            "stream: provider error event before any content",
            Behavior::StreamError {
                after_chunks: 1,
                kind: None,
            },
        ),
    ];
    for (fault, behavior) in before {
        let mock = MockUpstream::start().await;
        let gw = Gateway::start(config(&mock, network.clone(), json!({}))).await;
        mock.push_behavior(behavior);
        let start = Instant::now();
        let (s, text, done, errors) = stream(&gw, "echo:one two three four").await;
        t.add(
            fault,
            "request timeout 2 s, stream idle 1 s, max_retries 1",
            1,
            "not committed yet: retried; the client sees one clean, complete stream",
            format!(
                "{s}, text \"{text}\", [DONE] {done}, {errors} error events, {} attempts, {:.2} s",
                mock.count(),
                start.elapsed().as_secs_f64()
            ),
            s == 200 && text == "one two three four" && done && errors == 0 && mock.count() == 2,
        );
    }
    let after: [(&str, Behavior); 3] = [
        (
            "stream: silence after 2 content chunks",
            Behavior::StallStream { after_chunks: 3 },
        ),
        (
            "stream: reset after 2 content chunks",
            Behavior::ResetMidStream { after_chunks: 3 },
        ),
        (
            "stream: provider error event after 2 content chunks",
            Behavior::StreamError {
                after_chunks: 3,
                kind: None,
            },
        ),
    ];
    for (fault, behavior) in after {
        let mock = MockUpstream::start().await;
        let gw = Gateway::start(config(&mock, network.clone(), json!({}))).await;
        mock.push_behavior(behavior);
        let (s, text, done, errors) = stream(&gw, "echo:one two three four").await;
        let m = gw.get_text("/metrics").await;
        let ended = labelled(&m, "switchyard_streams_total", &["end=\"upstream_error\""]);
        t.add(
            fault,
            "stream idle 1 s, max_retries 1",
            1,
            "committed: the partial text, then one error event and the body ends cleanly; not retried; counted as upstream_error",
            format!(
                "{s}, text \"{text}\", {errors} error event(s), [DONE] {done}, {} attempt(s), streams_total{{end=upstream_error}} {ended}",
                mock.count()
            ),
            s == 200 && text == "one two" && errors == 1 && mock.count() == 1 && ended == 1.0,
        );
    }
}

/// Clients that are slow, silent or greedy.
async fn client_faults(t: &mut Table) {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(
        &mock,
        json!({}),
        json!({"header_read_timeout_in_seconds": 1, "idle_timeout_in_seconds": 1,
               "body_read_timeout_in_seconds": 1, "write_timeout_in_seconds": 1}),
    ))
    .await;
    // Slowloris: 50 connections sending their headers a byte at a time.
    let mut conns = Vec::new();
    for _ in 0..50 {
        let addr = gw.addr;
        conns.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";
            let opened = Instant::now();
            for b in head.iter().cycle() {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => break,
                    Err(_) => {}
                }
                if opened.elapsed() > Duration::from_secs(10) {
                    return None;
                }
            }
            Some(opened.elapsed())
        }));
    }
    // The gateway keeps serving others meanwhile.
    let (s_during, _) = gw.chat(chat_body("echo:still here")).await;
    let mut closed = 0;
    let mut slowest = Duration::ZERO;
    for c in conns {
        if let Some(d) = c.await.unwrap() {
            closed += 1;
            slowest = slowest.max(d);
        }
    }
    t.add(
        "slowloris: 50 connections sending headers 1 byte / 100 ms",
        "client.header_read_timeout_in_seconds 1",
        50,
        "every connection closed after ~1 s; other clients served meanwhile",
        format!(
            "{closed}/50 closed, the last after {:.2} s; a request meanwhile got {s_during}",
            slowest.as_secs_f64()
        ),
        closed == 50 && slowest < Duration::from_secs(3) && s_during == 200,
    );
    // Idle keep-alive connections.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    let idle_closed = matches!(r, Ok(Ok(0)) | Ok(Err(_)));
    t.add(
        "connection opened and left silent",
        "client.idle_timeout_in_seconds 1",
        1,
        "closed after ~1 s",
        format!(
            "closed: {idle_closed}, after {:.2} s",
            opened.elapsed().as_secs_f64()
        ),
        idle_closed && opened.elapsed() < Duration::from_secs(3),
    );
    // A body sent slower than the body timeout.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{")
        .await
        .unwrap();
    let opened = Instant::now();
    let mut answer = Vec::new();
    for _ in 0..50 {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status_line = answer.lines().next().unwrap_or("(closed)").to_owned();
    t.add(
        "request body sent 1 byte / 200 ms",
        "client.body_read_timeout_in_seconds 1",
        1,
        "408 naming client.body_read_timeout_in_seconds after ~1 s",
        format!(
            "`{status_line}` after {:.2} s{}",
            opened.elapsed().as_secs_f64(),
            if answer.contains("body_read_timeout") {
                ", names the key"
            } else {
                ""
            }
        ),
        status_line.contains(" 408 ") && answer.contains("body_read_timeout"),
    );
    // A client that asks for a long stream and stops reading.
    let big = MockUpstream::start_with(MockOptions {
        reply: vec!["y".repeat(4000); 3000].join(" "),
        record: false,
        ..MockOptions::default()
    })
    .await;
    let gw2 = Gateway::start(config(
        &big,
        json!({}),
        json!({"write_timeout_in_seconds": 1}),
    ))
    .await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(gw2.addr).await.unwrap();
    let body =
        json!({"model": "openai/gpt-4o", "stream": true, "messages": user("long")}).to_string();
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = {
        let m = gw2.get_text("/metrics").await;
        metric(&m, "switchyard_in_flight")
    };
    let released = gauges_zero(&gw2, Duration::from_secs(8)).await;
    let took = start.elapsed();
    let m = gw2.get_text("/metrics").await;
    let client_gone = labelled(&m, "switchyard_streams_total", &["end=\"client_gone\""]);
    drop(s);
    t.add(
        "client stops reading a 12 MB stream",
        "client.write_timeout_in_seconds 1",
        1,
        "connection closed; in-flight gauge back to 0; stream counted as client_gone",
        format!(
            "in flight while stuck: {busy}; back to 0: {released} after {:.2} s; streams_total{{end=client_gone}} {client_gone}",
            took.as_secs_f64()
        ),
        busy == 1.0 && released && client_gone == 1.0,
    );
    // Too many requests at once for the gateway.
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(500)));
    let gw = Gateway::start(config(&mock, json!({}), json!({"max_in_flight": 8}))).await;
    let calls = (0..30).map(|_| {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        async move {
            let r = client.post(url).json(&chat_body("x")).send().await.unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }
    });
    let out = futures_util::future::join_all(calls).await;
    let ok = out.iter().filter(|(s, _)| *s == 200).count();
    let refused = out.iter().filter(|(s, ra)| *s == 503 && *ra).count();
    t.add(
        "30 requests at once, upstream takes 0.5 s",
        "client.max_in_flight 8",
        30,
        "8 answered, 22 refused at once with 503 and Retry-After",
        format!("{ok} answered 200, {refused} got 503 with Retry-After"),
        ok == 8 && refused == 22,
    );
    // A request body over the limit.
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock, json!({}), json!({}))).await;
    // Raw TCP: the client keeps writing while the gateway answers, as a real client would.
    let huge = format!(
        "{{\"model\":\"openai/gpt-4o\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "z".repeat(11 << 20)
    );
    let sock = TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        huge.len()
    );
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(huge.as_bytes()).await;
        wr
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let s: u16 = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let b: Value = answer
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|body| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    let msg = b["error"]["message"].as_str().unwrap_or("").to_owned();
    t.add(
        "11 MiB request body",
        "default request body limit (10 MiB)",
        1,
        "413 in OpenAI's error shape; nothing sent upstream",
        format!("{s}: \"{msg}\"; upstream saw {} request(s)", mock.count()),
        s == 413 && !msg.is_empty() && mock.count() == 0,
    );
}

/// 500 clients that give up mid-request, against the real binary (its RSS is its own).
async fn disconnect_storm(t: &mut Table) {
    let mock = MockUpstream::start_with(MockOptions {
        record: false,
        ..MockOptions::default()
    })
    .await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_secs(2)));
    let mut cfg = config(&mock, json!({}), json!({}));
    cfg["providers"]["openai"]["concurrency_and_buffer_size"] =
        json!({"concurrency": 100, "buffer_size": 1000});
    let Some(bin) = Binary::start(cfg, &[], "warn").await else {
        return;
    };
    let pid = bin.child.id().unwrap();
    let client = reqwest::Client::new();
    // Warm up: the memory the gateway settles at when serving.
    mock.set_default_behavior(Behavior::Normal);
    for _ in 0..50 {
        let _ = client
            .post(bin.url("/v1/chat/completions"))
            .json(&chat_body("x"))
            .send()
            .await;
    }
    let rss_before = rss_kib(pid);
    mock.set_default_behavior(Behavior::Delay(Duration::from_secs(2)));
    let calls = (0..500).map(|_| {
        let client = client.clone();
        let url = bin.url("/v1/chat/completions");
        async move {
            client
                .post(url)
                .timeout(Duration::from_millis(300))
                .json(&chat_body("x"))
                .send()
                .await
                .is_err()
        }
    });
    let aborted = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter(|e| *e)
        .count();
    let metrics_url = bin.url("/metrics");
    let start = Instant::now();
    let mut zero = false;
    while start.elapsed() < Duration::from_secs(10) {
        let m = client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&m, "switchyard_in_flight") == 0.0
            && metric(&m, "switchyard_queue_depth") == 0.0
            && mock.in_flight() == 0
        {
            zero = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settle = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    mock.set_default_behavior(Behavior::Normal);
    let still = client
        .post(bin.url("/v1/chat/completions"))
        .json(&chat_body("x"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let grew = rss_after.saturating_sub(rss_before);
    t.add(
        "disconnect storm: 500 clients abort after 300 ms (upstream takes 2 s)",
        "concurrency 100, buffer_size 1000",
        500,
        "in-flight and queue gauges back to 0, upstream calls cancelled, RSS stable, still serving",
        format!(
            "{aborted} aborted; gauges and upstream at 0: {zero} after {:.2} s; RSS {} → {} MiB; next request {still}",
            settle.as_secs_f64(),
            rss_before / 1024,
            rss_after / 1024
        ),
        aborted == 500 && zero && grew < 30 * 1024 && still == 200,
    );
}

/// Sum of the samples of `name` whose labels include every one of `labels` (`k="v"`).
fn labelled(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// SIGTERM while 40 requests are in flight, on the real binary.
async fn sigterm_under_load(t: &mut Table) {
    let mock = MockUpstream::start().await;
    mock.set_default_behavior(Behavior::Delay(Duration::from_millis(800)));
    let mut cfg = config(&mock, json!({}), json!({"shutdown_timeout_in_seconds": 10}));
    cfg["providers"]["openai"]["concurrency_and_buffer_size"] =
        json!({"concurrency": 64, "buffer_size": 64});
    let Some(mut bin) = Binary::start(cfg, &[], "warn").await else {
        return;
    };
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            let url = bin.url("/v1/chat/completions");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&chat_body("echo:drained"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let all_in = eventually(Duration::from_secs(5), || mock.in_flight() == 40).await;
    let pid = bin.child.id().unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = client
        .post(bin.url("/v1/chat/completions"))
        .json(&chat_body("x"))
        .send()
        .await
        .is_err();
    let mut ok = 0;
    for c in calls {
        if c.await.unwrap() == 200 {
            ok += 1;
        }
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), bin.child.wait()).await;
    let code = exit.ok().and_then(|r| r.ok()).and_then(|s| s.code());
    t.add(
        "SIGTERM with 40 requests in flight",
        "client.shutdown_timeout_in_seconds 10",
        40,
        "all 40 answered 200; new connections refused; exit status 0",
        format!(
            "{ok}/40 answered 200 (all in flight at the signal: {all_in}); new request refused: {refused}; exit {code:?}"
        ),
        ok == 40 && all_in && refused && code == Some(0),
    );
}

/// A plugin replaced 100 times while 4 clients keep sending.
async fn reload_under_load(t: &mut Table) {
    let (Some(a), Some(b)) = (require_plugin("tagger"), require_plugin("tagger-b")) else {
        return;
    };
    let dir = TempDir::new("faults-reload");
    dir.install(&a, "tagger.wasm");
    let mock = MockUpstream::start_with(MockOptions {
        record: false,
        ..MockOptions::default()
    })
    .await;
    let mut cfg = config(&mock, json!({}), json!({"initial_pool_size": 2}));
    cfg["plugins"] = json!({
        "directory": dir.path(), "watch": true, "debounce_ms": 10,
        "entries": [{"name": "tagger", "file": "tagger.wasm", "on_error": "fail_closed"}]
    });
    let gw = Arc::new(Gateway::start(cfg).await);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop, done) = (gw.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut failed = 0;
                while !stop.load(Ordering::SeqCst) {
                    // Steady load, not saturation: the reloads compile on the same 2 cores.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let (s, b) = gw.chat(chat_body("echo:v")).await;
                    let text = b["choices"][0]["message"]["content"].as_str().unwrap_or("");
                    if s != 200 || !(text == "v [A] [A]" || text == "v [B] [B]") {
                        failed += 1;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failed
            })
        })
        .collect();
    let metrics = |text: &str| {
        metric(
            text,
            "switchyard_plugin_reloads_total{plugin=\"tagger\",result=\"ok\"}",
        )
    };
    let start = Instant::now();
    let mut swaps = 0;
    let mut reloads = metrics(&gw.get_text("/metrics").await);
    let initial = reloads;
    let mut slowest = Duration::ZERO;
    // Each swap waits for the gateway to have loaded it, so 100 swaps are 100 reloads.
    while swaps < 100 && start.elapsed() < Duration::from_secs(240) {
        dir.install(if swaps % 2 == 0 { &b } else { &a }, "tagger.wasm");
        swaps += 1;
        let swapped = Instant::now();
        // Generous: the whole test suite runs beside this on two cores, and the next swap
        // must not be written before this one is loaded (a reload that reads the next
        // file would find the bytes it already serves and count nothing).
        let deadline = swapped + Duration::from_secs(60);
        let before = reloads;
        while Instant::now() < deadline {
            reloads = metrics(&gw.get_text("/metrics").await);
            if reloads > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        slowest = slowest.max(swapped.elapsed());
    }
    // A reload that came late is counted once it is done.
    let settle = Instant::now() + Duration::from_secs(20);
    while reloads - initial < swaps as f64 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
        reloads = metrics(&gw.get_text("/metrics").await);
    }
    stop.store(true, Ordering::SeqCst);
    let mut failed = 0;
    for c in clients {
        failed += c.await.unwrap();
    }
    let total = done.load(Ordering::SeqCst);
    let reloads = reloads - initial;
    t.add(
        "hot reload of a fail_closed plugin, 100 times under load",
        "4 clients looping, plugins.watch, debounce 10 ms",
        total,
        "100 reloads, 0 failed requests, every answer from version A or B",
        format!(
            "{swaps} swaps, {reloads} reloads in {:.1} s (slowest {:.0} ms from file to serving); {failed} of {total} requests failed",
            start.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1e3
        ),
        swaps == 100 && reloads >= 100.0 && failed == 0 && total > 0,
    );
}

/// 2,000 requests (a quarter streamed) through an upstream that fails 20% at random, with
/// retries and a fallback that fails 20% too.
async fn mixed_run(t: &mut Table) {
    let primary = MockUpstream::start_with(MockOptions {
        record: false,
        ..MockOptions::default()
    })
    .await;
    let fallback = MockUpstream::start_with(MockOptions {
        record: false,
        ..MockOptions::default()
    })
    .await;
    primary.set_default_behavior(Behavior::Flaky { percent: 20 });
    fallback.set_default_behavior(Behavior::Flaky { percent: 20 });
    let net = json!({"max_retries": 2, "retry_backoff_initial": 2, "retry_backoff_max": 20});
    let mut p = openai_provider(&primary.url());
    let mut f = openai_provider(&fallback.url());
    for (k, v) in net.as_object().unwrap() {
        p["network_config"][k] = v.clone();
        f["network_config"][k] = v.clone();
    }
    let gw = Arc::new(Gateway::start(json!({"providers": {"openai": p, "groq": f}})).await);
    const N: usize = 2_000;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (gw, next) = (gw.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= N {
                        return out;
                    }
                    let streamed = i % 4 == 0;
                    let body = json!({
                        "model": "openai/gpt-4o", "fallbacks": ["groq/llama-3"],
                        "stream": streamed, "messages": user(&format!("echo:request {i}"))
                    });
                    let resp = gw
                        .client
                        .post(gw.url("/v1/chat/completions"))
                        .json(&body)
                        .send()
                        .await;
                    out.push(classify(resp, i, streamed).await);
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.unwrap());
    }
    let took = start.elapsed();
    let ok = outcomes.iter().filter(|o| **o == Outcome::Ok).count();
    let listed = outcomes
        .iter()
        .filter(|o| **o == Outcome::ErrorWithAttempts)
        .count();
    let bad = outcomes.len() - ok - listed;
    let upstream_calls = primary.count() + fallback.count();
    let m = gw.get_text("/metrics").await;
    let fallbacks = metric(&m, "switchyard_fallbacks_total");
    let retries = metric(&m, "switchyard_retries_total");
    t.add(
        "2,000 requests (¼ streamed), both upstreams fail 20% at random (500/503/429/502/reset)",
        "max_retries 2, one fallback, 32 concurrent clients",
        N,
        "0 lost: every answer a success or an error that lists its attempts",
        format!(
            "{ok} succeeded, {listed} errors listing attempts, {bad} lost or malformed; \
             {upstream_calls} upstream calls, {retries} retries, {fallbacks} fallbacks; {:.1} s",
            took.as_secs_f64()
        ),
        outcomes.len() == N && bad == 0 && ok + listed == N,
    );
}

#[derive(PartialEq)]
enum Outcome {
    Ok,
    ErrorWithAttempts,
    Bad,
}

async fn classify(resp: reqwest::Result<reqwest::Response>, i: usize, streamed: bool) -> Outcome {
    let Ok(resp) = resp else {
        return Outcome::Bad;
    };
    let status = resp.status().as_u16();
    let want = format!("request {i}");
    if status == 200 && streamed {
        let mut text = String::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                Err(_) => return Outcome::Bad,
            }
        }
        let events: Vec<String> = text
            .split("\n\n")
            .filter_map(|f| f.strip_prefix("data: ").map(str::to_owned))
            .collect();
        let done = events.last().map(String::as_str) == Some("[DONE]");
        return if done && crate::harness::text_of(&events) == want {
            Outcome::Ok
        } else {
            Outcome::Bad
        };
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == 200 {
        return if body["choices"][0]["message"]["content"] == want.as_str() {
            Outcome::Ok
        } else {
            Outcome::Bad
        };
    }
    let attempts = body["extra_fields"]["attempts"]
        .as_array()
        .map_or(0, Vec::len);
    if body["error"]["message"].is_string() && attempts >= 2 {
        Outcome::ErrorWithAttempts
    } else {
        Outcome::Bad
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_writes_docs_reliability() {
    let start = Instant::now();
    let mut t = Table::default();
    // While working on one group: `SWITCHYARD_FAULTS=stream,reload cargo test ... faults`
    // runs only those and leaves docs/reliability.md alone. CI runs them all.
    let only = std::env::var("SWITCHYARD_FAULTS").ok();
    let on = |g: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == g));
    if on("status") {
        status_faults(&mut t).await;
    }
    if on("transport") {
        transport_faults(&mut t).await;
    }
    if on("stream") {
        stream_faults(&mut t).await;
    }
    if on("client") {
        client_faults(&mut t).await;
    }
    if on("mixed") {
        mixed_run(&mut t).await;
    }
    if on("storm") {
        disconnect_storm(&mut t).await;
    }
    if on("sigterm") {
        sigterm_under_load(&mut t).await;
    }
    if on("reload") {
        reload_under_load(&mut t).await;
    }
    let doc = t.markdown(start.elapsed());
    let path = switchyard_tests::repo_root().join("docs/reliability.md");
    if only.is_none() {
        std::fs::write(&path, &doc).unwrap();
    }
    let failed: Vec<&Row> = t.0.iter().filter(|r| !r.held).collect();
    assert!(
        failed.is_empty(),
        "{} scenario(s) did not hold (see {}):\n{}",
        failed.len(),
        path.display(),
        failed
            .iter()
            .map(|r| format!(
                "- {}: expected {}; observed {}",
                r.fault, r.expected, r.observed
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
