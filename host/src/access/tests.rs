use std::collections::HashMap;
use std::path::Path;

use http::HeaderValue;
use serde_json::json;

use super::*;

const SECRET_A: &str = "vk-team-a-5f1c9e0b7d2a4c68";
const SECRET_B: &str = "vk-team-b-93e1d7f02a6b4c51";
/// 2026-12-02T15:00:00Z
const T0: u64 = 1_796_223_600_000;

fn access_at(clock: Arc<ManualClock>) -> (Access, Metrics) {
    let cfg = json!({
        "client": {"virtual_keys": [
            {"name": "team-a", "secret": SECRET_A, "models": ["openai/gpt-4o-mini", "groq/*"],
             "requests_per_minute": 3},
            {"name": "team-b", "secret": "env.TEAM_B_KEY", "models": ["*"],
             "token_budget": {"tokens": 100, "period": "day"}, "tokens_per_minute": 1000}
        ]},
        "providers": {"openai": {"keys": [{"value": "sk-1"}]}, "groq": {"keys": [{"value": "sk-2"}]}}
    });
    let env: HashMap<String, String> = [("TEAM_B_KEY".to_owned(), SECRET_B.to_owned())].into();
    let (config, _) = Config::from_json(&cfg.to_string(), Path::new("."), &env).unwrap();
    let metrics = Metrics::new();
    let access = Access::with(&config, &metrics, Arc::new(MemoryKv::new()), clock);
    (access, metrics)
}

fn headers(name: &str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    h
}

fn target(p: &str, m: &str) -> Target {
    Target {
        provider: p.to_owned(),
        model: m.to_owned(),
    }
}

#[test]
fn keys_from_either_header_and_refusals() {
    let (access, metrics) = access_at(Arc::new(ManualClock::at(T0)));
    let a = access
        .authenticate(&headers("authorization", &format!("Bearer {SECRET_A}")))
        .unwrap();
    assert_eq!(&*a.client_key, "team-a");
    let b = access
        .authenticate(&headers("x-api-key", SECRET_B))
        .unwrap();
    assert_eq!(&*b.client_key, "team-b", "env. secrets resolve");
    assert_eq!(
        access.authenticate(&HeaderMap::new()).err(),
        Some(Rejection::MissingKey)
    );
    assert_eq!(
        access
            .authenticate(&headers(
                "authorization",
                "Bearer vk-team-a-5f1c9e0b7d2a4c6"
            ))
            .err(),
        Some(Rejection::InvalidKey)
    );
    // A scheme other than Bearer is no key.
    assert_eq!(
        access
            .authenticate(&headers("authorization", &format!("Basic {SECRET_A}")))
            .err(),
        Some(Rejection::MissingKey)
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"switchyard_auth_failures_total{reason="missing_key"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"switchyard_auth_failures_total{reason="invalid_key"} 1"#),
        "{text}"
    );
    assert!(!text.contains(SECRET_A) && !text.contains(SECRET_B));
}

#[test]
fn open_gateway_knows_callers_by_a_hash() {
    let (config, _) = Config::from_json(
        r#"{"providers": {}}"#,
        Path::new("."),
        &HashMap::<String, String>::new(),
    )
    .unwrap();
    let access = Access::new(&config, &Metrics::new());
    assert!(!access.required());
    let c = access
        .authenticate(&headers("x-api-key", "sk-anything"))
        .unwrap();
    assert!(c.client_key.starts_with("ck-") && c.client_key.len() == 19);
    assert!(c.key.is_none());
    let anon = access.authenticate(&HeaderMap::new()).unwrap();
    assert_eq!(&*anon.client_key, "anonymous");
    assert!(access
        .admit(&c, &target("any", "model"), &[target("x", "y")])
        .is_ok());
}

#[test]
fn models_exact_and_by_provider() {
    let (access, metrics) = access_at(Arc::new(ManualClock::at(T0)));
    let a = access
        .authenticate(&headers("authorization", &format!("Bearer {SECRET_A}")))
        .unwrap();
    assert!(a.allows(&target("openai", "gpt-4o-mini"), "model").is_ok());
    assert!(a.allows(&target("groq", "llama-3.1-8b"), "model").is_ok());
    let r = access
        .admit(&a, &target("openai", "gpt-4o"), &[])
        .unwrap_err();
    let e = GatewayError::from(r);
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert_eq!(
        e.message,
        "key 'team-a' may not use model 'openai/gpt-4o'; it may use: openai/gpt-4o-mini, groq/*"
    );
    assert_eq!(e.param.as_deref(), Some("model"));
    // A forbidden fallback is refused too, naming its place.
    let r = access
        .admit(
            &a,
            &target("openai", "gpt-4o-mini"),
            &[target("groq", "x"), target("anthropic", "claude")],
        )
        .unwrap_err();
    assert_eq!(GatewayError::from(r).param.as_deref(), Some("fallbacks[1]"));
    let text = metrics.render();
    assert!(text
        .contains(r#"switchyard_key_rejections_total{key="team-a",reason="model_not_allowed"} 2"#));
}

#[test]
fn requests_per_minute_then_retry_after() {
    let clock = Arc::new(ManualClock::at(T0 + 30_000));
    let (access, _) = access_at(clock.clone());
    let a = access
        .authenticate(&headers("authorization", &format!("Bearer {SECRET_A}")))
        .unwrap();
    let t = target("openai", "gpt-4o-mini");
    for _ in 0..3 {
        access.admit(&a, &t, &[]).unwrap();
    }
    let e = GatewayError::from(access.admit(&a, &t, &[]).unwrap_err());
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
    // Half a minute left of this one, then a third of the next for the count to fade.
    assert_eq!(e.retry_after, Some(Duration::from_secs(50)));
    assert!(
        e.message.contains("limit of 3 requests per minute"),
        "{}",
        e.message
    );
    // A forbidden model does not use up the minute.
    clock.advance(Duration::from_secs(120));
    let _ = access.admit(&a, &target("openai", "gpt-4o"), &[]);
    for _ in 0..3 {
        access.admit(&a, &t, &[]).unwrap();
    }
}

#[test]
fn budget_counts_reported_usage_and_resets_with_the_day() {
    let clock = Arc::new(ManualClock::at(T0));
    let (access, metrics) = access_at(clock.clone());
    let b = access
        .authenticate(&headers("x-api-key", SECRET_B))
        .unwrap();
    let t = target("openai", "gpt-4o");
    let usage = Usage {
        prompt_tokens: 40,
        completion_tokens: 20,
        total_tokens: 60,
    };
    access.admit(&b, &t, &[]).unwrap();
    b.finished(None, Some(usage));
    // 60 of 100 used: one more may start, and goes past the budget.
    access.admit(&b, &t, &[]).unwrap();
    b.finished(None, Some(usage));
    let r = access.admit(&b, &t, &[]).unwrap_err();
    let e = GatewayError::from(r);
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.code.as_deref(), Some("token_budget_exceeded"));
    assert_eq!(
        e.message,
        "key 'team-b' has used its daily token budget (120 of 100 tokens); it resets at 2026-12-03T00:00:00Z"
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(9 * 3600)));
    clock.advance(Duration::from_secs(9 * 3600));
    access.admit(&b, &t, &[]).unwrap();
    let text = metrics.render();
    assert!(text.contains(r#"switchyard_key_tokens_total{key="team-b",type="prompt"} 80"#));
    assert!(text.contains(r#"switchyard_key_requests_total{key="team-b",outcome="success"} 2"#));
    assert!(
        text.contains(r#"switchyard_key_rejections_total{key="team-b",reason="token_budget"} 1"#)
    );
}

#[test]
fn secrets_never_print() {
    let (access, _) = access_at(Arc::new(ManualClock::at(T0)));
    let a = access
        .authenticate(&headers("authorization", &format!("Bearer {SECRET_A}")))
        .unwrap();
    let k = a.key.unwrap();
    let shown = format!("{:?}", k.config);
    assert!(
        !shown.contains(SECRET_A) && shown.contains("sha256:*****"),
        "{shown}"
    );
}
