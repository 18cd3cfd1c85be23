//! Counting for virtual keys: requests and tokens per minute (a sliding window over two
//! fixed one-minute counters) and token budgets per UTC day or month, all kept in the
//! key-value store the plugins use, so a shared backend makes them hold across gateways.
//! Time comes from an injectable [`Clock`], so tests move it instead of sleeping.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::access::BudgetPeriod;
use crate::plugins::{KvError, KvStore, NO_DEADLINE};

/// Wall-clock time as Unix milliseconds.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn at(ms: u64) -> ManualClock {
        ManualClock(ms.into())
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

/// The store and clock limits are counted with. Keys begin with NUL, which no plugin's
/// prefix does (plugin names are non-empty), so plugins and the gateway never share a key.
#[derive(Clone)]
pub struct Counters {
    pub kv: Arc<dyn KvStore>,
    pub clock: Arc<dyn Clock>,
}

/// A count over the limit: how long until the request would fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    pub retry_after: Duration,
}

/// The store failed; the message is the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

fn store_error(e: KvError) -> StoreError {
    StoreError(e.to_string())
}

/// What a window's two counters say at `now`.
struct Window {
    /// The previous minute's count.
    prev: u64,
    /// Fraction of the current minute gone, 0..1.
    elapsed: f64,
}

impl Window {
    /// The sliding estimate with the current minute's count `cur`.
    fn estimate(&self, cur: u64) -> f64 {
        self.prev as f64 * (1.0 - self.elapsed) + cur as f64
    }
}

impl Counters {
    fn key(name: &str, what: &str, slot: u64) -> String {
        format!("\0vk\0{name}\0{what}\0{slot}")
    }

    /// The count at `key`. A store that cannot answer counts as 0 (logged): a read only
    /// estimates, while the increments that enforce a limit refuse the request instead.
    fn read(&self, key: &str) -> u64 {
        let v = match self.kv.get(key, NO_DEADLINE) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "virtual-key counter not read; counted as 0");
                None
            }
        };
        v.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok())
            .map_or(0, |n| n.max(0) as u64)
    }

    fn window(&self, name: &str, what: &str, now: u64) -> (u64, Window) {
        let minute = now / MINUTE_MS;
        let prev = self.read(&Self::key(name, what, minute.wrapping_sub(1)));
        let elapsed = (now % MINUTE_MS) as f64 / MINUTE_MS as f64;
        (minute, Window { prev, elapsed })
    }

    /// Count one request of key `name` against `limit` per minute. Exact under
    /// concurrency: each request's increment gives it its own place in the count, and a
    /// refused request takes its increment back.
    pub fn take_request(&self, name: &str, limit: u64) -> Result<Result<(), Over>, StoreError> {
        let now = self.clock.now_ms();
        let (minute, w) = self.window(name, "rpm", now);
        let key = Self::key(name, "rpm", minute);
        let ttl = Some(Duration::from_millis(3 * MINUTE_MS));
        let n = self
            .kv
            .increment(&key, 1, ttl, NO_DEADLINE)
            .map_err(store_error)?
            .max(0) as u64;
        if w.estimate(n) <= limit as f64 {
            return Ok(Ok(()));
        }
        self.kv
            .increment(&key, -1, ttl, NO_DEADLINE)
            .map_err(store_error)?;
        // `n - 1` may still hold other refused requests' increments that are being given
        // back; no more than `limit` were let in, so the wait is never counted from more.
        Ok(Err(Over {
            retry_after: wait(&w, (n - 1).min(limit), limit, now % MINUTE_MS),
        }))
    }

    /// Whether key `name` has room under `limit` tokens per minute.
    pub fn check_tokens(&self, name: &str, limit: u64) -> Result<(), Over> {
        let now = self.clock.now_ms();
        let (minute, w) = self.window(name, "tpm", now);
        let cur = self.read(&Self::key(name, "tpm", minute));
        if w.estimate(cur) < limit as f64 {
            return Ok(());
        }
        Err(Over {
            retry_after: wait(&w, cur, limit, now % MINUTE_MS),
        })
    }

    /// The budget period `now` falls in: its slot number and when it ends (Unix ms).
    pub fn period(period: BudgetPeriod, now: u64) -> (u64, u64) {
        match period {
            BudgetPeriod::Day => {
                let day = now / DAY_MS;
                (day, (day + 1) * DAY_MS)
            }
            BudgetPeriod::Month => {
                let (y, m, _) = civil_from_days((now / DAY_MS) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let slot = (y * 12 + i64::from(m) - 1) as u64;
                (slot, days_from_civil(ny, nm, 1) as u64 * DAY_MS)
            }
        }
    }

    /// Tokens key `name` has used in the budget period of now, and when it ends.
    pub fn budget_used(&self, name: &str, period: BudgetPeriod) -> (u64, u64) {
        let (slot, ends) = Self::period(period, self.clock.now_ms());
        (self.read(&Self::key(name, period.as_str(), slot)), ends)
    }

    /// Count `tokens` used by key `name`: the minute's tokens, and the budget's period.
    pub fn add_tokens(
        &self,
        name: &str,
        tokens: u64,
        per_minute: bool,
        budget: Option<BudgetPeriod>,
    ) -> Result<(), StoreError> {
        if tokens == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let delta = tokens.min(i64::MAX as u64) as i64;
        if per_minute {
            let key = Self::key(name, "tpm", now / MINUTE_MS);
            let ttl = Some(Duration::from_millis(3 * MINUTE_MS));
            self.kv
                .increment(&key, delta, ttl, NO_DEADLINE)
                .map_err(store_error)?;
        }
        if let Some(p) = budget {
            let (slot, ends) = Self::period(p, now);
            let key = Self::key(name, p.as_str(), slot);
            // Kept a day past the period's end, then the store forgets it.
            let ttl = Some(Duration::from_millis(ends.saturating_sub(now) + DAY_MS));
            self.kv
                .increment(&key, delta, ttl, NO_DEADLINE)
                .map_err(store_error)?;
        }
        Ok(())
    }
}

/// How long from now (`into` ms into the current minute) until one more unit fits under
/// `limit`, given the current minute's count `cur` and the window: within this minute if
/// the previous minute's share fades enough, else into the next one.
fn wait(w: &Window, cur: u64, limit: u64, into: u64) -> Duration {
    let (limit, cur, prev) = (limit as f64, cur as f64, w.prev as f64);
    let fraction = if cur + 1.0 <= limit && prev > 0.0 {
        // prev * (1 - f) + cur + 1 <= limit
        let f = 1.0 - (limit - cur - 1.0) / prev;
        (f - w.elapsed).max(0.0)
    } else {
        // Next minute: this minute's count becomes the fading one.
        let g = if cur > 0.0 {
            (1.0 - (limit - 1.0) / cur).max(0.0)
        } else {
            0.0
        };
        (1.0 - w.elapsed) + g
    };
    // Rounded to the millisecond first, so float noise cannot add a second.
    let ms = (fraction * MINUTE_MS as f64).round() as u64;
    // Whole seconds, at least one: what `Retry-After` can say.
    Duration::from_secs(ms.div_ceil(1000).max(1))
        .min(Duration::from_millis(2 * MINUTE_MS - into.min(MINUTE_MS)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix milliseconds as RFC 3339 UTC, to the second: `2026-12-03T00:00:00Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plugins::MemoryKv;

    /// 2026-12-02T15:00:00Z
    const T0: u64 = 1_796_223_600_000;

    fn counters(at: u64) -> (Counters, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(at));
        (
            Counters {
                kv: Arc::new(MemoryKv::new()),
                clock: clock.clone(),
            },
            clock,
        )
    }

    #[test]
    fn calendar() {
        assert_eq!(rfc3339(T0), "2026-12-02T15:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            days_from_civil(2024, 2, 29) + 1,
            days_from_civil(2024, 3, 1)
        );
        for z in [-1000, 0, 59, 60, 11_016, 20_000, 20_424] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        let (_, end) = Counters::period(BudgetPeriod::Month, T0);
        assert_eq!(rfc3339(end), "2027-01-01T00:00:00Z");
        let (_, end) = Counters::period(BudgetPeriod::Day, T0);
        assert_eq!(rfc3339(end), "2026-12-03T00:00:00Z");
        let (a, _) = Counters::period(BudgetPeriod::Month, T0);
        let (b, _) = Counters::period(BudgetPeriod::Month, end);
        assert_eq!(a, b, "3 December is still December");
    }

    #[test]
    fn requests_per_minute_is_exact_and_slides() {
        let (c, clock) = counters(T0);
        for _ in 0..5 {
            assert_eq!(c.take_request("a", 5).unwrap(), Ok(()));
        }
        let over = c.take_request("a", 5).unwrap().unwrap_err();
        // Nothing in the previous minute: the whole count fades at the next minute's turn
        // plus the share of it that must go (1 - 4/5 of a minute).
        assert_eq!(over.retry_after, Duration::from_secs(60 + 12));
        // Another key has its own count.
        assert_eq!(c.take_request("b", 5).unwrap(), Ok(()));
        // Half-way through the next minute, half of the previous 5 still count: 2 fit.
        clock.advance(Duration::from_secs(90));
        assert_eq!(c.take_request("a", 5).unwrap(), Ok(()));
        assert_eq!(c.take_request("a", 5).unwrap(), Ok(()));
        assert!(c.take_request("a", 5).unwrap().is_err());
        // Two minutes on, nothing counts.
        clock.advance(Duration::from_secs(120));
        for _ in 0..5 {
            assert_eq!(c.take_request("a", 5).unwrap(), Ok(()));
        }
    }

    #[test]
    fn concurrent_requests_get_exactly_the_limit() {
        let (c, _) = counters(T0);
        let c = Arc::new(c);
        let allowed: usize = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| c.take_request("k", 37).unwrap().is_ok())
                        .count()
                })
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(allowed, 37);
    }

    #[test]
    fn tokens_per_minute_and_budgets() {
        let (c, clock) = counters(T0);
        assert!(c.check_tokens("a", 100).is_ok());
        c.add_tokens("a", 100, true, Some(BudgetPeriod::Day))
            .unwrap();
        let over = c.check_tokens("a", 100).unwrap_err();
        assert!(over.retry_after >= Duration::from_secs(60), "{over:?}");
        assert_eq!(c.budget_used("a", BudgetPeriod::Day).0, 100);
        assert_eq!(c.budget_used("a", BudgetPeriod::Month).0, 0);
        clock.advance(Duration::from_secs(9 * 3600));
        assert_eq!(c.budget_used("a", BudgetPeriod::Day).0, 0, "a new day");
        assert!(c.check_tokens("a", 100).is_ok());
    }
}
