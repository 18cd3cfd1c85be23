//! Token buckets in the shared kv store. A bucket is 16 bytes: the tokens left (f64) and the
//! time they were counted (Unix ms, u64), little-endian. Taking a token is a
//! read-modify-write under compare-and-swap, so concurrent instances (on different threads,
//! or different gateways with a shared kv) never hand out the same token twice. An absent or
//! expired key is a full bucket, so keys expire once a bucket would have refilled anyway.

use std::time::Duration;

use switchyard_sdk::kv;

use crate::config::Rule;

/// The result of trying to take tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Taken; `remaining` tokens are left.
    Allowed { remaining: f64 },
    /// Not enough tokens: enough will have refilled after `retry_after_secs`.
    Denied { retry_after_secs: u32 },
}

fn encode(tokens: f64, at_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&tokens.to_le_bytes());
    v.extend_from_slice(&at_ms.to_le_bytes());
    v
}

fn decode(b: &[u8]) -> Option<(f64, u64)> {
    let tokens = f64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
    let at = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    tokens.is_finite().then_some((tokens, at))
}

/// Tokens in the bucket at `now_ms`, given what is stored (`None`: full).
fn level(rule: &Rule, stored: Option<&[u8]>, now_ms: u64) -> (f64, u64) {
    match stored.and_then(decode) {
        Some((tokens, at)) => {
            // A clock that went backwards (another gateway, NTP) refills nothing.
            let elapsed_s = now_ms.saturating_sub(at) as f64 / 1000.0;
            let tokens = (tokens + elapsed_s * rule.refill_per_second).min(rule.capacity);
            (tokens, at.max(now_ms))
        }
        None => (rule.capacity, now_ms),
    }
}

/// How long until an empty bucket is full again: after that the key can go.
fn ttl(rule: &Rule) -> Duration {
    let secs = rule.capacity / rule.refill_per_second;
    Duration::from_millis((secs * 1000.0).ceil().min(1e15) as u64 + 1000)
}

/// Take `rule.cost` tokens from the bucket at `key`.
pub fn take(rule: &Rule, key: &str, now_ms: u64) -> Result<Take, String> {
    kv::update(key, Some(ttl(rule)), |stored| {
        let (tokens, at) = level(rule, stored, now_ms);
        if tokens >= rule.cost {
            let left = tokens - rule.cost;
            kv::Update::Write(encode(left, at), Take::Allowed { remaining: left })
        } else {
            let secs = ((rule.cost - tokens) / rule.refill_per_second).ceil();
            let retry_after_secs = secs.clamp(1.0, f64::from(u32::MAX)) as u32;
            kv::Update::Keep(Take::Denied { retry_after_secs })
        }
    })
}

/// Give back `rule.cost` tokens taken from `key` (a later rule refused the request).
pub fn refund(rule: &Rule, key: &str, now_ms: u64) -> Result<(), String> {
    kv::update(key, Some(ttl(rule)), |stored| {
        if stored.is_none() {
            return kv::Update::Keep(());
        }
        let (tokens, at) = level(rule, stored, now_ms);
        let tokens = (tokens + rule.cost).min(rule.capacity);
        kv::Update::Write(encode(tokens, at), ())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn rule(capacity: f64, rate: f64) -> Rule {
        let json = format!(r#"{{"rules":[{{"capacity":{capacity},"refill_per_second":{rate}}}]}}"#);
        parse(&json).unwrap().remove(0)
    }

    #[test]
    fn takes_until_empty_then_refills() {
        let r = rule(3.0, 0.5);
        let key = "test/refill";
        let t0 = 1_000_000;
        for left in [2.0, 1.0, 0.0] {
            assert_eq!(
                take(&r, key, t0).unwrap(),
                Take::Allowed { remaining: left }
            );
        }
        // Empty; one token takes 2 s at 0.5/s.
        assert_eq!(
            take(&r, key, t0).unwrap(),
            Take::Denied {
                retry_after_secs: 2
            }
        );
        assert_eq!(
            take(&r, key, t0 + 1_500).unwrap(),
            Take::Denied {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            take(&r, key, t0 + 2_000).unwrap(),
            Take::Allowed { remaining: 0.0 }
        );
        // Long idle: back to full, never above.
        assert_eq!(
            take(&r, key, t0 + 3_600_000).unwrap(),
            Take::Allowed { remaining: 2.0 }
        );
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let r = rule(1.0, 1.0);
        let key = "test/backwards";
        assert!(matches!(
            take(&r, key, 50_000).unwrap(),
            Take::Allowed { .. }
        ));
        assert!(matches!(
            take(&r, key, 40_000).unwrap(),
            Take::Denied { .. }
        ));
        assert!(matches!(
            take(&r, key, 50_999).unwrap(),
            Take::Denied { .. }
        ));
        assert!(matches!(
            take(&r, key, 51_000).unwrap(),
            Take::Allowed { .. }
        ));
    }

    #[test]
    fn refund_gives_back_up_to_capacity() {
        let r = rule(2.0, 0.001);
        let key = "test/refund";
        take(&r, key, 0).unwrap();
        take(&r, key, 0).unwrap();
        refund(&r, key, 0).unwrap();
        assert_eq!(take(&r, key, 0).unwrap(), Take::Allowed { remaining: 0.0 });
        refund(&r, key, 0).unwrap();
        refund(&r, key, 0).unwrap();
        refund(&r, key, 0).unwrap();
        assert_eq!(take(&r, key, 0).unwrap(), Take::Allowed { remaining: 1.0 });
        // Refunding a bucket nobody has drawn from creates nothing.
        refund(&r, "test/refund-none", 0).unwrap();
        assert_eq!(kv::get("test/refund-none"), None);
    }

    /// Many threads sharing the store, like pooled instances in the gateway: exactly
    /// `capacity` requests pass, never more.
    #[test]
    fn exact_under_concurrency() {
        let r = rule(100.0, 0.000_001);
        let key = "test/concurrent";
        let now = 5_000;
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| matches!(take(&r, key, now).unwrap(), Take::Allowed { .. }))
                        .count()
                })
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn ttl_covers_a_full_refill() {
        assert_eq!(ttl(&rule(10.0, 2.0)), Duration::from_millis(6_000));
    }
}
