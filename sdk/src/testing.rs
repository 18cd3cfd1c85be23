//! An in-process fake of the gateway's imports plus builders for hook arguments, so a plugin's
//! unit tests run natively (`cargo test --target x86_64-unknown-linux-gnu`). The helpers use
//! the fake on every target but wasm32 (where the real imports exist, and this module is
//! only there so test code type-checks).
//!
//! Like the gateway's, the fake [`kv`](crate::kv) store is one per process and shared by all
//! threads (tests running in parallel should use distinct keys). The clock is real time unless
//! [`set_now_ms`] froze it for the calling thread. Log lines go to stderr and are kept per
//! thread for [`take_logs`]; metric values are kept per process for [`metric_value`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::log::Level;
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
use crate::{
    ChunkChoice, Error, ErrorKind, Header, Message, Params, Request, RequestInfo, RequestKind,
    Response, StreamChunk, Usage,
};

thread_local! {
    static NOW_MS: Cell<Option<u64>> = const { Cell::new(None) };
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Freeze [`clock::now_ms`](crate::clock::now_ms) for the calling thread (`None`: real time).
pub fn set_now_ms(ms: Option<u64>) {
    NOW_MS.with(|c| c.set(ms));
}

/// Log lines written by the calling thread since the last call.
pub fn take_logs() -> Vec<(Level, String)> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// The current value of a counter or gauge (the sum of observations for a histogram), by
/// metric name and label values.
pub fn metric_value(name: &str, labels: &[&str]) -> Option<f64> {
    let m = fake::metrics::state();
    let id = m.names.get(name)?;
    let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    m.values.get(&(*id, key)).map(|v| v.sum)
}

/// How many values a histogram observed, by metric name and label values.
pub fn metric_count(name: &str, labels: &[&str]) -> Option<u64> {
    let m = fake::metrics::state();
    let id = m.names.get(name)?;
    let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    m.values.get(&(*id, key)).map(|v| v.count)
}

/// A chat request to `provider`/`model` with `(role, text)` messages; `body-json` is the
/// matching OpenAI body.
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub fn request(provider: &str, model: &str, messages: &[(&str, &str)]) -> Request {
    let msgs: Vec<String> = messages
        .iter()
        .map(|(r, t)| format!("{{\"role\":{},\"content\":{}}}", json_str(r), json_str(t)))
        .collect();
    Request {
        id: "req-test".into(),
        kind: RequestKind::Chat,
        provider: provider.into(),
        model: model.into(),
        messages: messages
            .iter()
            .map(|(r, t)| Message {
                role: (*r).into(),
                text: (*t).into(),
            })
            .collect(),
        params: Params {
            max_tokens: None,
            temperature: None,
            top_p: None,
            n: None,
            stream: false,
            user: None,
        },
        client_key: "ck-0123456789abcdef".into(),
        metadata: Vec::new(),
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        attempt: 0,
        body_json: format!(
            "{{\"model\":{},\"messages\":[{}]}}",
            json_str(model),
            msgs.join(",")
        ),
    }
}

/// The request-info the post and chunk hooks get for `req`, received at `received_at_ms`.
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub fn info(req: &Request, received_at_ms: u64) -> RequestInfo {
    RequestInfo {
        id: req.id.clone(),
        kind: req.kind,
        provider: req.provider.clone(),
        model: req.model.clone(),
        client_key: req.client_key.clone(),
        attempt: req.attempt,
        received_at_ms,
    }
}

/// A 200 chat response with one choice per text.
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub fn response(provider: &str, model: &str, choices: &[&str], usage: Option<Usage>) -> Response {
    let cs: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "{{\"index\":{i},\"message\":{{\"role\":\"assistant\",\"content\":{}}},\"finish_reason\":\"stop\"}}",
                json_str(t)
            )
        })
        .collect();
    Response {
        status: 200,
        provider: provider.into(),
        model: model.into(),
        choices: choices.iter().map(|s| s.to_string()).collect(),
        usage,
        upstream_latency_us: 1000,
        body_json: format!(
            "{{\"object\":\"chat.completion\",\"model\":{},\"choices\":[{}]}}",
            json_str(model),
            cs.join(",")
        ),
    }
}

/// An error outcome.
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub fn error(provider: &str, model: &str, status: u16, kind: ErrorKind) -> Error {
    Error {
        status,
        kind,
        message: format!("test error {status}"),
        code: None,
        provider: provider.into(),
        model: model.into(),
    }
}

/// A stream chunk whose choice 0 adds `text`.
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub fn chunk(sequence: u32, text: Option<&str>, last: bool) -> StreamChunk {
    StreamChunk {
        sequence,
        choices: vec![ChunkChoice {
            index: 0,
            text: text.map(str::to_owned),
            finish_reason: None,
        }],
        usage: None,
        last,
        body_json: "{\"object\":\"chat.completion.chunk\"}".into(),
    }
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fake imports, with the generated functions' signatures.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) mod fake {
    pub mod clock {
        pub fn now_ms() -> u64 {
            super::super::NOW_MS.with(|c| c.get()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            })
        }

        pub fn monotonic_ns() -> u64 {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_nanos() as u64
        }
    }

    pub mod log {
        use crate::log::Level;

        pub fn write(level: Level, message: &str) {
            eprintln!("[plugin {level:?}] {message}");
            super::super::LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
        }
    }

    pub mod kv {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};

        use super::super::lock;

        struct Entry {
            value: Vec<u8>,
            is_int: bool,
            expires_ms: Option<u64>,
        }

        fn store() -> &'static Mutex<HashMap<String, Entry>> {
            static S: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
            S.get_or_init(Default::default)
        }

        fn now() -> u64 {
            super::clock::now_ms()
        }

        fn live(e: &Entry, now: u64) -> bool {
            e.expires_ms.is_none_or(|x| x > now)
        }

        pub fn get(key: &str) -> Option<Vec<u8>> {
            let now = now();
            lock(store())
                .get(key)
                .filter(|e| live(e, now))
                .map(|e| e.value.clone())
        }

        pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) {
            let now = now();
            lock(store()).insert(
                key.to_owned(),
                Entry {
                    value: value.to_vec(),
                    is_int: false,
                    expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
                },
            );
        }

        pub fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, String> {
            let now = now();
            let mut m = lock(store());
            match m.get_mut(key).filter(|e| live(e, now)) {
                Some(e) if !e.is_int => Err(format!("value at {key:?} is not an integer")),
                Some(e) => {
                    let cur: i64 = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let new = cur.checked_add(delta).ok_or("integer overflow")?;
                    e.value = new.to_string().into_bytes();
                    Ok(new)
                }
                None => {
                    m.insert(
                        key.to_owned(),
                        Entry {
                            value: delta.to_string().into_bytes(),
                            is_int: true,
                            expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
                        },
                    );
                    Ok(delta)
                }
            }
        }

        pub fn compare_and_swap(
            key: &str,
            expected: Option<&[u8]>,
            value: &[u8],
            ttl_ms: Option<u64>,
        ) -> bool {
            let now = now();
            let mut m = lock(store());
            let cur = m
                .get(key)
                .filter(|e| live(e, now))
                .map(|e| e.value.as_slice());
            if cur != expected {
                return false;
            }
            m.insert(
                key.to_owned(),
                Entry {
                    value: value.to_vec(),
                    is_int: false,
                    expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
                },
            );
            true
        }

        pub fn delete(key: &str) -> bool {
            let now = now();
            lock(store()).remove(key).is_some_and(|e| live(&e, now))
        }
    }

    pub mod metrics {
        use super::super::{lock, HashMap, Mutex, MutexGuard, OnceLock};
        use crate::metrics::{MetricId, MetricKind};

        #[derive(Default)]
        pub struct Value {
            pub sum: f64,
            pub count: u64,
        }

        #[derive(Default)]
        pub struct State {
            pub names: HashMap<String, MetricId>,
            decls: Vec<(MetricKind, Vec<String>)>,
            pub values: HashMap<(MetricId, Vec<String>), Value>,
        }

        pub fn state() -> MutexGuard<'static, State> {
            static S: OnceLock<Mutex<State>> = OnceLock::new();
            lock(S.get_or_init(Default::default))
        }

        pub fn declare(
            name: &str,
            _help: &str,
            kind: MetricKind,
            label_names: &[&str],
            buckets: Option<&[f64]>,
        ) -> Result<MetricId, String> {
            let valid = !name.is_empty()
                && name.bytes().enumerate().all(|(i, b)| {
                    b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit())
                });
            if !valid {
                return Err(format!("metric name {name:?} must match [a-z_][a-z0-9_]*"));
            }
            if label_names.contains(&"plugin") {
                return Err("label name \"plugin\" is added by the gateway".into());
            }
            if let Some(b) = buckets {
                if b.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("buckets must be in ascending order".into());
                }
            }
            let labels: Vec<String> = label_names.iter().map(|s| s.to_string()).collect();
            let mut s = state();
            if let Some(&id) = s.names.get(name) {
                let (k, l) = &s.decls[id as usize];
                if *k == kind && *l == labels {
                    return Ok(id);
                }
                return Err(format!(
                    "metric {name:?} already declared with another kind or labels"
                ));
            }
            let id = s.decls.len() as MetricId;
            s.decls.push((kind, labels));
            s.names.insert(name.to_owned(), id);
            Ok(id)
        }

        fn check(s: &State, id: MetricId, label_values: &[&str]) -> bool {
            s.decls
                .get(id as usize)
                .is_some_and(|(_, l)| l.len() == label_values.len())
        }

        pub fn record_value(id: MetricId, label_values: &[&str], value: f64) {
            let mut s = state();
            assert!(
                check(&s, id, label_values),
                "metric {id}: undeclared or wrong number of label values: {label_values:?}"
            );
            let key = (id, label_values.iter().map(|s| s.to_string()).collect());
            let v = s.values.entry(key).or_default();
            v.sum += value;
            v.count += 1;
        }

        pub fn set_gauge(id: MetricId, label_values: &[&str], value: f64) {
            let mut s = state();
            assert!(
                check(&s, id, label_values),
                "metric {id}: undeclared or wrong number of label values: {label_values:?}"
            );
            let key = (id, label_values.iter().map(|s| s.to_string()).collect());
            let v = s.values.entry(key).or_default();
            v.sum = value;
            v.count += 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use crate::metrics::{Counter, Histogram};
    use crate::{clock, kv};

    #[test]
    fn kv_fake_behaves_like_the_host() {
        super::set_now_ms(Some(1_000));
        assert!(kv::compare_and_swap(
            "t1",
            None,
            b"a",
            Some(Duration::from_millis(10))
        ));
        assert!(!kv::compare_and_swap("t1", None, b"b", None));
        assert_eq!(kv::get("t1").as_deref(), Some(&b"a"[..]));
        super::set_now_ms(Some(1_010));
        assert_eq!(kv::get("t1"), None, "expired");
        assert_eq!(kv::increment("t2", 2, None), Ok(2));
        assert_eq!(kv::increment("t2", 3, None), Ok(5));
        kv::set("t3", b"x", None);
        assert!(kv::increment("t3", 1, None).is_err());
        assert!(kv::delete("t3"));
        assert!(!kv::delete("t3"));
        let r = kv::update("t4", None, |cur| {
            let n = cur.map_or(0, |c| c[0]) + 1;
            kv::Update::Write(vec![n], n)
        });
        assert_eq!(r, Ok(1));
        assert_eq!(clock::now_ms(), 1_010);
        super::set_now_ms(None);
    }

    #[test]
    fn metrics_fake_records() {
        let c = Counter::declare("sdk_test_total", "t", &["a"]).unwrap();
        assert_eq!(Counter::declare("sdk_test_total", "t", &["a"]), Ok(c));
        assert!(Counter::declare("sdk_test_total", "t", &["b"]).is_err());
        assert!(Counter::declare("Bad", "t", &[]).is_err());
        c.inc(&["x"]);
        c.add(&["x"], 2.0);
        assert_eq!(super::metric_value("sdk_test_total", &["x"]), Some(3.0));
        let h = Histogram::declare("sdk_test_seconds", "t", &[], Some(&[0.1, 1.0])).unwrap();
        h.observe(&[], 0.5);
        assert_eq!(super::metric_count("sdk_test_seconds", &[]), Some(1));
    }

    #[test]
    fn log_macros_format() {
        crate::info!("hello {}", 42);
        let logs = super::take_logs();
        assert_eq!(logs, vec![(crate::log::Level::Info, "hello 42".to_owned())]);
    }
}
