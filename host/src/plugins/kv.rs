//! The key-value store behind the `kv` import. [`KvStore`] is the seam for a shared backend
//! (Redis, for limits shared by several gateways); [`MemoryKv`] is the in-process default.
//! Every operation is atomic with respect to the others, which is what lets a rate limiter
//! running in many pooled instances keep one consistent count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A key-value store with TTLs. Keys passed here are already namespaced per plugin.
pub trait KvStore: Send + Sync {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>);
    /// Add `delta` to the integer at `key` (missing = 0); `ttl` applies when the key is created.
    fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, String>;
    /// Store `value` only if the current value equals `expected` (`None`: absent).
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> bool;
    fn delete(&self, key: &str) -> bool;
}

struct Entry {
    value: Vec<u8>,
    /// Set only by `increment`, so it can refuse to add to arbitrary bytes.
    is_int: bool,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// In-process store: one mutex, lazily expired entries plus an occasional sweep so keys
/// that are never read again do not pile up.
#[derive(Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<String, Entry>>,
    ops: std::sync::atomic::AtomicU64,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> R) -> R {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Sweep expired keys every 4096 operations: amortised O(1), bounded garbage.
        if self
            .ops
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(4096)
        {
            map.retain(|_, e| e.live(now));
        }
        f(&mut map, now)
    }
}

fn expiry(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|t| now + t)
}

impl KvStore for MemoryKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.with(|m, now| m.get(key).filter(|e| e.live(now)).map(|e| e.value.clone()))
    }

    fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) {
        self.with(|m, now| {
            m.insert(
                key.to_owned(),
                Entry {
                    value,
                    is_int: false,
                    expires: expiry(now, ttl),
                },
            );
        })
    }

    fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, String> {
        self.with(|m, now| match m.get_mut(key).filter(|e| e.live(now)) {
            Some(e) => {
                if !e.is_int {
                    return Err(format!("value at {key:?} is not an integer"));
                }
                let cur: i64 = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("value at {key:?} is not an integer"))?;
                let new = cur
                    .checked_add(delta)
                    .ok_or_else(|| "integer overflow".to_owned())?;
                e.value = new.to_string().into_bytes();
                Ok(new)
            }
            None => {
                m.insert(
                    key.to_owned(),
                    Entry {
                        value: delta.to_string().into_bytes(),
                        is_int: true,
                        expires: expiry(now, ttl),
                    },
                );
                Ok(delta)
            }
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> bool {
        self.with(|m, now| {
            let cur = m
                .get(key)
                .filter(|e| e.live(now))
                .map(|e| e.value.as_slice());
            if cur != expected {
                return false;
            }
            m.insert(
                key.to_owned(),
                Entry {
                    value,
                    is_int: false,
                    expires: expiry(now, ttl),
                },
            );
            true
        })
    }

    fn delete(&self, key: &str) -> bool {
        self.with(|m, now| m.remove(key).is_some_and(|e| e.live(now)))
    }
}

/// One plugin's view of a store: every key is prefixed with the plugin's name, so two
/// plugins never see each other's keys. Kept across reloads of the same plugin name.
#[derive(Clone)]
pub struct ScopedKv {
    store: Arc<dyn KvStore>,
    prefix: String,
}

impl ScopedKv {
    pub fn new(store: Arc<dyn KvStore>, plugin: &str) -> Self {
        // NUL cannot appear in a plugin name from config, so prefixes never overlap.
        ScopedKv {
            store,
            prefix: format!("{plugin}\0"),
        }
    }

    fn key(&self, k: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + k.len());
        s.push_str(&self.prefix);
        s.push_str(k);
        s
    }

    pub fn get(&self, k: &str) -> Option<Vec<u8>> {
        self.store.get(&self.key(k))
    }
    pub fn set(&self, k: &str, v: Vec<u8>, ttl: Option<Duration>) {
        self.store.set(&self.key(k), v, ttl)
    }
    pub fn increment(&self, k: &str, d: i64, ttl: Option<Duration>) -> Result<i64, String> {
        self.store.increment(&self.key(k), d, ttl)
    }
    pub fn compare_and_swap(
        &self,
        k: &str,
        expected: Option<&[u8]>,
        v: Vec<u8>,
        ttl: Option<Duration>,
    ) -> bool {
        self.store.compare_and_swap(&self.key(k), expected, v, ttl)
    }
    pub fn delete(&self, k: &str) -> bool {
        self.store.delete(&self.key(k))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ttl_expires() {
        let kv = MemoryKv::new();
        kv.set("a", b"1".to_vec(), Some(Duration::from_millis(20)));
        kv.set("b", b"2".to_vec(), None);
        assert_eq!(kv.get("a"), Some(b"1".to_vec()));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(kv.get("a"), None);
        assert_eq!(kv.get("b"), Some(b"2".to_vec()));
        assert!(!kv.delete("a"));
        assert!(kv.delete("b"));
    }

    #[test]
    fn increment_rules() {
        let kv = MemoryKv::new();
        assert_eq!(kv.increment("n", 5, Some(Duration::from_millis(20))), Ok(5));
        assert_eq!(kv.increment("n", -2, None), Ok(3));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(kv.increment("n", 1, None), Ok(1), "expired key counts as 0");
        kv.set("s", b"x".to_vec(), None);
        assert!(kv.increment("s", 1, None).is_err());
    }

    #[test]
    fn increment_and_cas_under_threads() {
        let kv = Arc::new(MemoryKv::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.increment("c", 1, None).unwrap();
                        // Read-modify-write through CAS: retry until our swap lands.
                        loop {
                            let cur = kv.get("cas");
                            let n: u64 = cur
                                .as_deref()
                                .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
                                .unwrap_or(0);
                            let next = (n + 1).to_string().into_bytes();
                            if kv.compare_and_swap("cas", cur.as_deref(), next, None) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(kv.increment("c", 0, None), Ok(8000));
        assert_eq!(kv.get("cas"), Some(b"8000".to_vec()));
    }

    #[test]
    fn scoped_keys_are_private() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
        let a = ScopedKv::new(store.clone(), "a");
        let b = ScopedKv::new(store, "b");
        a.set("k", b"1".to_vec(), None);
        assert_eq!(b.get("k"), None);
        assert_eq!(a.get("k"), Some(b"1".to_vec()));
    }
}
