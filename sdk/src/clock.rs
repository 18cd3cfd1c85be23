//! Time, from the host (`std::time::SystemTime` does not work on wasm32-unknown-unknown).

use std::time::Duration;

#[cfg(target_arch = "wasm32")]
use crate::imports::clock as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::fake::clock as host;

/// Wall-clock time: milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// A monotonic clock in nanoseconds, for measuring durations within one call.
pub fn monotonic_ns() -> u64 {
    host::monotonic_ns()
}

/// Time elapsed since `received_at_ms` (e.g. [`RequestInfo::received_at_ms`]), zero if the
/// clock says it is in the future.
///
/// [`RequestInfo::received_at_ms`]: crate::RequestInfo::received_at_ms
pub fn since_ms(received_at_ms: u64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(received_at_ms))
}
