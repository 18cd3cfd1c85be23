//! Rate-limit plugin: token buckets per client key, provider, model (or header, metadata,
//! user), configured per rule. Bucket state lives in the shared `kv` store and changes only by
//! compare-and-swap, so a limit holds exactly across every pooled instance (and across
//! gateways sharing a kv backend).
//!
//! Config:
//! ```json
//! {"rules": [
//!   {"name": "openai-per-client",
//!    "match": {"provider": "openai", "model": "gpt-4*"},
//!    "per": "client_key",
//!    "capacity": 10, "refill_per_second": 1,
//!    "cost": 1, "allow_fallbacks": false}
//! ]}
//! ```
//! - `match` (optional, default: every request): `provider`, `model`, `client_key`, each a
//!   pattern where `*` matches any characters.
//! - `per` (default `"client_key"`): one of, or a list of, `global`, `client_key`, `provider`,
//!   `model` (provider and model), `user` (the body's `user`), `header:<name>`,
//!   `metadata:<key>`. Requests without the header / metadata / user share one bucket.
//! - `capacity`: the burst; `refill_per_second`: tokens added per second (may be < 1);
//!   `cost`: tokens per request (default 1).
//! - `allow_fallbacks`: let the gateway try the request's fallback targets when this rule
//!   refuses (useful for per-provider limits).
//!
//! Every matching rule must have tokens; a request refused by a later rule gets its tokens
//! back from the earlier ones. A refusal is a 429 with code `rate_limit_exceeded` and
//! `Retry-After` set to when enough tokens will have refilled.

use switchyard_sdk::{clock, export_plugin, Hooks, Plugin, PreAction, Rejection, Request};

mod bucket;
mod config;

use bucket::Take;
use config::Rule;

struct RateLimit {
    rules: Vec<Rule>,
}

impl RateLimit {
    /// The decision for `req` at `now_ms`.
    fn check(&self, req: &Request, now_ms: u64) -> Result<PreAction, String> {
        let mut taken: Vec<(&Rule, String)> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches(req)) {
            let key = rule.bucket_key(req);
            match bucket::take(rule, &key, now_ms)? {
                Take::Allowed { .. } => taken.push((rule, key)),
                Take::Denied { retry_after_secs } => {
                    for (r, k) in &taken {
                        bucket::refund(r, k, now_ms)?;
                    }
                    let mut rej = Rejection::new(
                        429,
                        format!(
                            "rate limit exceeded: rule {:?} allows {}; retry in {} s",
                            rule.name, rule.summary, retry_after_secs
                        ),
                    )
                    .code("rate_limit_exceeded")
                    .retry_after_secs(retry_after_secs);
                    if rule.allow_fallbacks {
                        rej = rej.allow_fallbacks();
                    }
                    return Ok(rej.into());
                }
            }
        }
        Ok(PreAction::Continue)
    }
}

impl Plugin for RateLimit {
    const HOOKS: Hooks = Hooks::PRE;

    fn init(config: &str) -> Result<Self, String> {
        Ok(RateLimit {
            rules: config::parse(config)?,
        })
    }

    fn pre_hook(&self, req: Request) -> Result<PreAction, String> {
        self.check(&req, clock::now_ms())
    }
}

export_plugin!(RateLimit);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use switchyard_sdk::testing;

    use super::*;

    fn req(provider: &str, model: &str, client: &str) -> Request {
        let mut r = testing::request(provider, model, &[("user", "hi")]);
        r.client_key = client.into();
        r
    }

    fn rejection(a: PreAction) -> Rejection {
        match a {
            PreAction::Reject(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn per_client_limit_with_retry_after() {
        let p = RateLimit::init(
            r#"{"rules":[{"name":"t1","match":{"provider":"openai"},"capacity":2,"refill_per_second":0.25}]}"#,
        )
        .unwrap();
        let a = req("openai", "gpt-4o", "ck-t1-a");
        assert_eq!(p.check(&a, 0).unwrap(), PreAction::Continue);
        assert_eq!(p.check(&a, 0).unwrap(), PreAction::Continue);
        let r = rejection(p.check(&a, 0).unwrap());
        assert_eq!(r.status, 429);
        assert_eq!(r.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(r.retry_after_secs, Some(4));
        assert!(!r.allow_fallbacks);
        assert_eq!(
            r.message,
            "rate limit exceeded: rule \"t1\" allows 2 requests per client key, 1 more every 4 s; retry in 4 s"
        );
        // Another client has its own bucket; another provider is not limited.
        assert_eq!(
            p.check(&req("openai", "gpt-4o", "ck-t1-b"), 0).unwrap(),
            PreAction::Continue
        );
        for _ in 0..5 {
            assert_eq!(
                p.check(&req("groq", "llama", "ck-t1-a"), 0).unwrap(),
                PreAction::Continue
            );
        }
        assert_eq!(p.check(&a, 4_000).unwrap(), PreAction::Continue);
    }

    #[test]
    fn later_rule_refusal_refunds_earlier_rules() {
        let p = RateLimit::init(
            r#"{"rules":[
                {"name":"t2-client","capacity":5,"refill_per_second":0.001},
                {"name":"t2-model","per":"model","match":{"model":"big"},"capacity":1,"refill_per_second":0.001,"allow_fallbacks":true}
            ]}"#,
        )
        .unwrap();
        let big = req("openai", "big", "ck-t2");
        assert_eq!(p.check(&big, 0).unwrap(), PreAction::Continue);
        let r = rejection(p.check(&big, 0).unwrap());
        assert!(r.allow_fallbacks);
        assert!(r.message.contains("t2-model"), "{}", r.message);
        // The refused request's client token came back: 4 left for small requests.
        let small = req("openai", "small", "ck-t2");
        for _ in 0..4 {
            assert_eq!(p.check(&small, 0).unwrap(), PreAction::Continue);
        }
        assert!(matches!(p.check(&small, 0).unwrap(), PreAction::Reject(_)));
    }

    #[test]
    fn init_refuses_bad_config() {
        let e = RateLimit::init(r#"{"rules":[{"capacity":0,"refill_per_second":1}]}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("config.rules[0].capacity"), "{e}");
    }

    #[test]
    fn hook_uses_the_clock() {
        testing::set_now_ms(Some(77_000));
        let p = RateLimit::init(r#"{"rules":[{"name":"t4","capacity":1,"refill_per_second":1}]}"#)
            .unwrap();
        let a = req("openai", "m", "ck-t4");
        assert_eq!(p.pre_hook(a.clone()).unwrap(), PreAction::Continue);
        assert!(matches!(
            p.pre_hook(a.clone()).unwrap(),
            PreAction::Reject(_)
        ));
        testing::set_now_ms(Some(78_000));
        assert_eq!(p.pre_hook(a).unwrap(), PreAction::Continue);
        testing::set_now_ms(None);
    }
}
