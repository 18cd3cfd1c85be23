//! The HTTP API: endpoints, routing, translation per provider, errors.

use serde_json::{json, Value};
use switchyard_tests::mock::{Behavior, MockUpstream};

use crate::harness::{metric, openai_provider, user, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_round_trip_with_extra_fields() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let (status, body) = gw
        .chat(json!({"model": "openai/gpt-4o-mini", "messages": user("echo:hello there"), "fallbacks": []}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "hello there");
    assert_eq!(body["extra_fields"]["provider"], "openai");
    assert_eq!(body["extra_fields"]["model"], "gpt-4o-mini");
    assert_eq!(body["extra_fields"]["key_index"], 0);
    assert_eq!(body["extra_fields"]["attempts"], 1);
    assert!(body["extra_fields"]["latency_ms"].as_f64().unwrap() > 0.0);
    // The upstream got the bare model, our key, and none of the gateway's own fields.
    let got = mock.received().pop().unwrap();
    assert_eq!(got.body["model"], "gpt-4o-mini");
    assert!(got.body.get("fallbacks").is_none() && got.body.get("provider").is_none());
    assert!(got
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "Bearer sk-test-key-0001"));
    let metrics = gw.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "switchyard_requests_total{model=\"gpt-4o-mini\",outcome=\"success\",provider=\"openai\"}"),
        1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "switchyard_tokens_total{model=\"gpt-4o-mini\",provider=\"openai\",type=\"prompt\"}"
        ) > 0.0
    );
    assert!(metrics.contains("switchyard_gateway_overhead_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_field_completions_and_embeddings() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"groq": openai_provider(&mock.url())}})).await;
    let r = gw
        .client
        .post(gw.url("/v1/completions"))
        .json(&json!({"provider": "groq", "model": "llama-3", "prompt": "Say hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    let r = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "groq/embed-1", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let paths: Vec<String> = mock.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/completions", "/v1/embeddings"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_say_what_and_where() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({
        "client": {"max_request_body_bytes": 2048},
        "providers": {"openai": {
            "keys": [{"value": "sk-a", "models": ["gpt-4o"], "weight": 1.0}],
            "network_config": {"base_url": format!("{}/v1", mock.url())}
        }}
    }))
    .await;
    let post = |body: String| {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Malformed JSON: 400 with line and column.
    let r = post("{\"model\": \"openai/gpt-4o\",\n \"messages\": [}".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-switchyard-error"], "client");
    let b: Value = r.json().await.unwrap();
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2 column"),
        "{b}"
    );
    assert_eq!(b["error"]["type"], "invalid_request_error");
    // Too large: 413.
    let big = json!({"model": "openai/gpt-4o", "messages": user(&"x".repeat(4096))}).to_string();
    let r = post(big).await.unwrap();
    assert_eq!(r.status(), 413);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_request_body_bytes"));
    // Unknown provider: 400 naming the configured ones.
    let (s, b) = gw
        .chat(json!({"model": "nope/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "unknown_provider");
    assert!(b["error"]["message"].as_str().unwrap().contains("openai"));
    // Unknown model (no key lists it): 404.
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-9", "messages": user("x")}))
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"]["code"], "model_not_found");
    // Missing messages: 400 with param.
    let (s, b) = gw.chat(json!({"model": "openai/gpt-4o"})).await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["param"], "messages");
    // Malformed shapes are refused with the field's path, before any plugin or provider.
    let shapes = [
        (
            json!({"model": "openai/gpt-4o", "messages": ["mail jane.doe@example.com now"]}),
            "messages[0]",
        ),
        (
            json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": {"text": "hi"}}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "openai/gpt-4o", "messages": user("x"), "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "openai/gpt-4o", "messages": user("x"), "max_tokens": 5_000_000_000u64}),
            "max_tokens",
        ),
    ];
    for (body, field) in shapes {
        let (s, b) = gw.chat(body.clone()).await;
        assert_eq!(s, 400, "{body} -> {b}");
        assert_eq!(b["error"]["type"], "invalid_request_error", "{b}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{body}: {msg}");
    }
    for text in ["[1, 2]", "\"a string\""] {
        let r = post(text.into()).await.unwrap();
        assert_eq!(r.status(), 400);
        let b: Value = r.json().await.unwrap();
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains("JSON object"), "{text}: {msg}");
        assert!(!msg.contains("invalid type"), "serde's words leaked: {msg}");
    }
    // GET on a POST route, and a path that does not exist: OpenAI's error shape too.
    let r = gw
        .client
        .get(gw.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"), "{:?}", r.headers());
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "invalid_request_error", "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("GET"),
        "{b}"
    );
    let r = gw.client.post(gw.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing"),
        "{b}"
    );
    // No request reached the upstream.
    assert_eq!(mock.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_keeps_status_and_message_and_never_leaks_keys() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Status {
        status: 401,
        body: Some(r#"{"error":{"message":"Incorrect API key provided: sk-test-key-0001","type":"invalid_request_error","code":"invalid_api_key","param":null}}"#.into()),
        retry_after: None,
    });
    let gw = Gateway::start(json!({"providers": {"openai": openai_provider(&mock.url())}})).await;
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o", "messages": user("x")}))
        .await;
    assert_eq!(s, 401);
    assert_eq!(b["error"]["code"], "invalid_api_key");
    // The provider echoed our key; it must not reach the client.
    let text = b.to_string();
    assert!(text.contains("Incorrect API key"), "{text}");
    assert!(!text.contains("sk-test-key-0001"), "key leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_env_key_is_reported_by_name() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start_with_env(
        json!({"providers": {"anthropic": {
            "keys": [{"value": "env.ANTHROPIC_KEY_FOR_TEST", "models": [], "weight": 1.0}],
            "network_config": {"base_url": format!("{}/v1", mock.url())}
        }}}),
        &[],
    )
    .await;
    let (s, b) = gw
        .chat(json!({"model": "anthropic/claude-3-5-haiku", "messages": user("x")}))
        .await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ANTHROPIC_KEY_FOR_TEST"));
    let health: Value = serde_json::from_str(&gw.get_text("/health").await).unwrap();
    assert_eq!(health["providers"][0]["available"], false);
    assert!(health["providers"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("ANTHROPIC_KEY_FOR_TEST"));
    assert_eq!(health["status"], "degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_translation_with_system_and_tools() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"anthropic": {
        "keys": [{"value": "sk-ant-test", "models": [], "weight": 1.0}],
        "network_config": {"base_url": format!("{}/v1", mock.url())}
    }}}))
    .await;
    let (s, b) = gw
        .chat(json!({
            "model": "anthropic/claude-3-5-sonnet",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "use_tool: weather in Paris?"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        }))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
    let call = &b["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Paris");
    let got = mock.received().pop().unwrap();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.body["system"], "Be brief.");
    assert!(got.body["max_tokens"].as_u64().unwrap() > 0);
    assert_eq!(got.body["tools"][0]["name"], "get_weather");
    assert!(got
        .headers
        .iter()
        .any(|(k, v)| k == "x-api-key" && v == "sk-ant-test"));
    assert!(got.headers.iter().any(|(k, _)| k == "anthropic-version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_deployment_and_api_key_header() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {"azure": {
        "keys": [{"value": "az-key", "models": ["gpt-4o"], "weight": 1.0}],
        "meta_config": {"endpoint": mock.url(), "api_version": "2024-10-21",
                        "deployments": {"gpt-4o": "prod-4o"}}
    }}}))
    .await;
    let (s, b) = gw
        .chat(json!({"model": "azure/gpt-4o", "messages": user("hi")}))
        .await;
    assert_eq!(s, 200, "{b}");
    let got = mock.received().pop().unwrap();
    assert_eq!(got.path, "/openai/deployments/prod-4o/chat/completions");
    assert!(
        got.query.contains("api-version=2024-10-21"),
        "{}",
        got.query
    );
    assert!(got
        .headers
        .iter()
        .any(|(k, v)| k == "api-key" && v == "az-key"));
    assert!(!got.headers.iter().any(|(k, _)| k == "authorization"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_what_the_config_serves() {
    let gw = Gateway::start(json!({"providers": {"openai": {
        "keys": [{"value": "a", "models": ["gpt-4o", "gpt-4o-mini"], "weight": 1.0},
                 {"value": "b", "models": ["gpt-4o"], "weight": 1.0}]
    }}}))
    .await;
    let body: Value = serde_json::from_str(&gw.get_text("/v1/models").await).unwrap();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["openai/gpt-4o", "openai/gpt-4o-mini"]);
}

/// A large chat body: without plugins its messages are never parsed into one tree, yet an
/// OpenAI-compatible upstream gets every one of them, a translating one (Anthropic) too, and
/// a malformed message deep in it is still named by its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_reach_openai_and_translating_upstreams() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(json!({"providers": {
        "openai": openai_provider(&mock.url()),
        "anthropic": {
            "keys": [{"value": "sk-ant-test", "models": [], "weight": 1.0}],
            "network_config": {"base_url": format!("{}/v1", mock.url())}
        }
    }}))
    .await;
    let mut messages: Vec<Value> = (0..20_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("m{i}")}))
        .collect();
    messages.push(json!({"role": "user", "content": "echo:last"}));
    for (model, count) in [
        ("openai/gpt-4o-mini", "messages"),
        ("anthropic/claude-3-5-haiku", "messages"),
    ] {
        let (s, b) = gw
            .chat(json!({"model": model, "messages": messages, "x_unknown": {"kept": true}, "max_tokens": 8}))
            .await;
        assert_eq!(s, 200, "{model}: {b}");
        let got = mock.received().pop().unwrap();
        assert_eq!(got.body[count].as_array().unwrap().len(), 20_001, "{model}");
        if model.starts_with("openai") {
            assert_eq!(got.body["model"], "gpt-4o-mini");
            assert_eq!(got.body["x_unknown"]["kept"], true);
            assert_eq!(got.body["messages"], Value::Array(messages.clone()));
        }
    }
    let mut bad = messages.clone();
    bad[12_345] = json!({"role": "user", "content": {"text": "x"}});
    let (s, b) = gw
        .chat(json!({"model": "openai/gpt-4o-mini", "messages": bad}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["param"], "messages[12345].content", "{b}");
}
