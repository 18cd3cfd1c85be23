//! Micro-benchmarks of the hot path: request parse and translate, key selection, and one
//! PreHook + PostHook call of each example plugin (`cargo bench -p switchyard`).
//! Plugin benchmarks need the components: `cargo xtask build-plugins` first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use switchyard::config::{Config, OnError, PluginEntry, PluginsConfig};
use switchyard::metrics::Metrics;
use switchyard::plugins::{HookContext, PluginHost};
use switchyard::proxy::resolve;
use switchyard::schema::{RequestKind, UnifiedResponse};
use switchyard::upstream::Upstream;

const BODY: &str = r#"{"model": "openai/gpt-4o-mini", "max_tokens": 64, "temperature": 0.2,
  "messages": [{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Write one line about gateways. Reach me at jane@example.com."}]}"#;

fn config() -> Config {
    let cfg = json!({
        "providers": {
            "openai": {"keys": [
                {"value": "sk-a", "models": ["gpt-4o"], "weight": 0.5},
                {"value": "sk-b", "models": [], "weight": 0.3},
                {"value": "sk-c", "models": [], "weight": 0.2}
            ]},
            "anthropic": {"keys": [{"value": "sk-ant", "models": [], "weight": 1.0}]}
        }
    });
    let env: HashMap<String, String> = HashMap::new();
    match Config::from_json(&cfg.to_string(), Path::new("."), &env) {
        Ok((c, _)) => c,
        Err(e) => panic!("bench config: {e}"),
    }
}

fn translate(c: &mut Criterion) {
    let engine = match Upstream::new(&config(), Arc::new(Metrics::new())) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    let mut g = c.benchmark_group("translate");
    for provider in ["openai", "anthropic"] {
        let body = BODY.replace("openai/", &format!("{provider}/"));
        let rt = engine.provider(provider).map(Arc::clone);
        let Some(rt) = rt else {
            panic!("no {provider}")
        };
        g.bench_function(format!("parse+build_request/{provider}"), |b| {
            b.iter(|| {
                let (req, _fallbacks) = match resolve(RequestKind::Chat, body.as_bytes()) {
                    Ok(r) => r,
                    Err(e) => panic!("{e:?}"),
                };
                black_box(rt.provider.build_request(&req).is_ok())
            })
        });
    }
    g.finish();
    let rt = engine.provider("openai").map(Arc::clone);
    let Some(rt) = rt else { panic!("no openai") };
    c.bench_function("pick_key/3 keys, weighted, model filter", |b| {
        b.iter(|| black_box(rt.pick_key(black_box("gpt-4o-mini")).ok().map(|k| k.0)))
    });
}

fn plugin_entry(name: &str, config: Value) -> PluginEntry {
    PluginEntry {
        name: name.into(),
        file: format!("{name}.wasm"),
        order: 0,
        enabled: true,
        config_json: config.to_string(),
        on_error: OnError::FailOpen,
        deadline: Duration::from_millis(50),
        memory_limit_bytes: 64 << 20,
        fresh_instance_after: 0,
    }
}

fn plugin_hooks(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/build");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let plugins = [
        ("metrics", json!({})),
        (
            "rate-limit",
            json!({"rules": [{"per": "client_key", "capacity": 1_000_000_000u64, "refill_per_second": 1_000_000_000u64}]}),
        ),
        ("redact", json!({})),
    ];
    let mut g = c.benchmark_group("plugin pre+post hook");
    for (name, config) in plugins {
        if !dir.join(format!("{name}.wasm")).exists() {
            eprintln!("skipped plugin {name}: plugins/build/{name}.wasm not built (cargo xtask build-plugins)");
            continue;
        }
        let cfg = PluginsConfig {
            directory: dir.clone(),
            watch: false,
            entries: vec![plugin_entry(name, config)],
            ..PluginsConfig::default()
        };
        let host = match rt.block_on(PluginHost::start(&cfg, 1, &prometheus::Registry::new())) {
            Ok(h) => h,
            Err(e) => panic!("{name}: {e}"),
        };
        let chain = host.chain();
        let ctx = HookContext {
            request_id: Arc::from("req-bench"),
            client_key: Arc::from("ck-0123456789abcdef"),
            headers: Arc::from(Vec::new()),
            received_at_ms: 0,
            attempt: 0,
        };
        let (template, _) = match resolve(RequestKind::Chat, BODY.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        };
        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Gateways route calls."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
        });
        let Value::Object(answer) = answer else {
            unreachable!()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut req = template.clone();
                let (_, ran) = chain.pre_hooks(&ctx, &mut req);
                let mut outcome = Ok(UnifiedResponse::ok(answer.clone()));
                chain.post_hooks(&ctx, &req, ran, Duration::from_millis(1), &mut outcome);
                black_box(outcome.is_ok())
            })
        });
    }
    g.finish();
}

/// What checking a virtual key costs a request: `authenticate` (hash the presented key,
/// look it up, confirm in constant time) and `admit` (model patterns, budget, tokens and
/// requests per minute in the in-process kv store), against an open gateway's identity.
fn key_checks(c: &mut Criterion) {
    use switchyard::access::Access;
    use switchyard::schema::Target;
    let secret = "vk-bench-0123456789abcdef0123";
    let mut keys: Vec<Value> = (0..100)
        .map(|i| json!({"name": format!("team-{i}"), "secret": format!("vk-bench-{i:04}-0123456789abcdef"), "models": ["openai/*"]}))
        .collect();
    keys.push(json!({"name": "bench", "secret": secret,
        "models": ["anthropic/claude-3-5-haiku", "openai/gpt-4o-mini"],
        // Limits no bench run reaches, so every request is counted and admitted.
        "requests_per_minute": 1_000_000_000u64, "tokens_per_minute": 1_000_000_000u64,
        "token_budget": {"tokens": 1_000_000_000_000u64, "period": "month"}}));
    let cfg = json!({"client": {"virtual_keys": keys},
        "providers": {"openai": {"keys": [{"value": "sk-a"}]}, "anthropic": {"keys": [{"value": "sk-b"}]}}});
    let env: HashMap<String, String> = HashMap::new();
    let keyed = match Config::from_json(&cfg.to_string(), Path::new("."), &env) {
        Ok((c, _)) => c,
        Err(e) => panic!("bench config: {e}"),
    };
    let metrics = Metrics::new();
    let keyed = Access::new(&keyed, &metrics);
    let open = Access::new(&config(), &metrics);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {secret}")).unwrap_or_else(|e| panic!("{e}")),
    );
    let target = Target {
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
    };
    let mut g = c.benchmark_group("access");
    g.bench_function("open/identity", |b| {
        b.iter(|| black_box(open.authenticate(&headers).is_ok()))
    });
    g.bench_function("virtual_key/authenticate", |b| {
        b.iter(|| black_box(keyed.authenticate(&headers).is_ok()))
    });
    g.bench_function("virtual_key/authenticate+admit(rpm,tpm,budget)", |b| {
        b.iter(|| {
            let caller = keyed
                .authenticate(&headers)
                .unwrap_or_else(|e| panic!("{e:?}"));
            black_box(keyed.admit(&caller, &target, &[]).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, translate, plugin_hooks, key_checks);
criterion_main!(benches);
