//! The key-value store shared by every instance of this plugin (and, with a shared backend,
//! by every gateway). Keys are private to the plugin. Every operation is atomic; use
//! [`compare_and_swap`] or [`update`] for read-modify-write state such as token buckets.

use std::time::Duration;

#[cfg(target_arch = "wasm32")]
use crate::imports::kv as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::fake::kv as host;

fn ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The value at `key`, if any and not expired.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

/// Store `value` at `key`; with `ttl` it expires that long from now.
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) {
    host::set(key, value, ms(ttl))
}

/// Add `delta` to the integer at `key` (missing or expired: 0) and return the new value.
/// `ttl` applies when this call creates the key. Fails if the value was not written by
/// `increment`.
pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, String> {
    host::increment(key, delta, ms(ttl))
}

/// Store `value` at `key` only if the current value is `expected` (`None`: absent or
/// expired). Returns whether it was stored.
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    value: &[u8],
    ttl: Option<Duration>,
) -> bool {
    host::compare_and_swap(key, expected, value, ms(ttl))
}

/// Remove `key`; true if it existed.
pub fn delete(key: &str) -> bool {
    host::delete(key)
}

/// What [`update`]'s closure decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Update<R> {
    /// Store these bytes (if nobody changed the key meanwhile) and return `R`.
    Write(Vec<u8>, R),
    /// Leave the key as it is and return `R`.
    Keep(R),
}

/// How many times [`update`] retries a compare-and-swap that lost a race. Every lost race
/// means another instance's write went through, so this is only reached under pathological
/// contention.
pub const MAX_UPDATE_ATTEMPTS: usize = 1000;

/// Read-modify-write `key` atomically: `f` sees the current value and decides; a write is
/// applied with compare-and-swap and `f` runs again on the fresh value if another instance
/// wrote in between. `ttl` applies to each write.
pub fn update<R>(
    key: &str,
    ttl: Option<Duration>,
    mut f: impl FnMut(Option<&[u8]>) -> Update<R>,
) -> Result<R, String> {
    for _ in 0..MAX_UPDATE_ATTEMPTS {
        let cur = get(key);
        match f(cur.as_deref()) {
            Update::Keep(r) => return Ok(r),
            Update::Write(new, r) => {
                if compare_and_swap(key, cur.as_deref(), &new, ttl) {
                    return Ok(r);
                }
            }
        }
    }
    Err(format!(
        "kv: {key:?} changed under {MAX_UPDATE_ATTEMPTS} attempts in a row"
    ))
}
