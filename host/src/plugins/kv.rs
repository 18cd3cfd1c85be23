//! The key-value store behind the `kv` import and the virtual keys' counters. [`KvStore`] is
//! the one contract; [`MemoryKv`] is the in-process default and `redis` the shared backend
//! (`plugins.kv.backend`), for limits that hold across several gateways. Every operation is
//! atomic with respect to the others, which is what lets a rate limiter running in many
//! pooled instances (or gateways) keep one consistent count.
//!
//! Every operation returns a [`KvError`] when it cannot be done and is bounded by the time
//! its caller can wait (`within`): a plugin passes what is left of its call deadline, so a
//! slow backend ends the call as a failure instead of holding the request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod redis;

pub use self::redis::RedisKv;

/// Why a key-value operation gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The operation itself was refused (the value is not an integer, the plugin's space is
    /// full): the plugin's own mistake, which `increment` hands back to it.
    #[error("{0}")]
    Refused(String),
    /// The backend did not answer within the time the caller had.
    #[error("kv backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend cannot be reached or failed the command.
    #[error("kv backend failed: {0}")]
    Backend(String),
}

impl KvError {
    /// Whether the backend, not the operation, failed: a plugin call then fails as a whole
    /// and its `on_error` policy decides the request.
    pub fn is_backend(&self) -> bool {
        !matches!(self, KvError::Refused(_))
    }
}

/// What `/health` shows of the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KvHealth {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// False while the backend is unreachable (the memory store is always up).
    pub up: bool,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
}

/// No limit of the caller's own: the store's command timeout applies alone.
pub const NO_DEADLINE: Duration = Duration::MAX;

/// A key-value store with TTLs. Keys passed here are already namespaced per plugin
/// (`<plugin>\0<key>`, see [`ScopedKv`]); gateway keys begin with NUL. `within` bounds how
/// long the call may take.
pub trait KvStore: Send + Sync {
    fn get(&self, key: &str, within: Duration) -> Result<Option<Vec<u8>>, KvError>;
    fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<(), KvError>;
    /// Add `delta` to the integer at `key` (missing = 0); `ttl` applies when the key is created.
    fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<i64, KvError>;
    /// Store `value` only if the current value equals `expected` (`None`: absent).
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<bool, KvError>;
    fn delete(&self, key: &str, within: Duration) -> Result<bool, KvError>;
    /// The backend's state, for `/health`.
    fn health(&self) -> KvHealth {
        KvHealth {
            backend: "memory",
            up: true,
            last_error: None,
            last_error_at_ms: None,
        }
    }
    /// Apply a new `plugins.kv.max_bytes_per_plugin` (a config reload); stores without a
    /// cap of their own ignore it.
    fn set_max_bytes_per_plugin(&self, _max_bytes: usize) {}
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

/// Bytes an entry is charged against its plugin's cap: key, value and a fixed overhead for
/// the map slot, the LRU links and the entry header, so a flood of empty values is bounded
/// too.
const ENTRY_OVERHEAD: usize = 64;

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// One plugin's keys, least recently used first.
struct Space {
    map: lru::LruCache<String, Entry>,
    bytes: usize,
}

impl Space {
    fn new() -> Space {
        Space {
            map: lru::LruCache::unbounded(),
            bytes: 0,
        }
    }

    /// The live entry at `key` (marked as just used); an expired one is removed.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.peek(key).is_some_and(|e| !e.live(now)) {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let (k, e) = self.map.pop_entry(key)?;
        self.bytes -= cost(&k, &e.value);
        Some(e)
    }

    fn sweep(&mut self, now: Instant) {
        let dead: Vec<String> = self
            .map
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.remove(&k);
        }
    }
}

use crate::config::DEFAULT_KV_MAX_BYTES_PER_PLUGIN as DEFAULT_MAX_BYTES_PER_PLUGIN;

/// In-process store. Keys are `<plugin>\0<key>` (see [`ScopedKv`]); each plugin's keys are
/// capped at `max_bytes` (key + value + 64 bytes each): a write that would pass the cap first
/// drops expired keys, then evicts the plugin's least recently used keys, and is counted in
/// `switchyard_plugin_kv_evictions_total{plugin}`. A single value larger than the cap is
/// refused. Expired keys go lazily, plus a sweep every 4096 operations of a plugin.
pub struct MemoryKv {
    spaces: Mutex<HashMap<String, Space>>,
    /// Changed by a config reload; read once per write.
    max_bytes: AtomicUsize,
    ops: std::sync::atomic::AtomicU64,
    evictions: Option<prometheus::IntCounterVec>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_BYTES_PER_PLUGIN, None)
    }
}

/// A write the cap cannot hold.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store capping each plugin's keys at `max_bytes`, counting evictions in `evictions`
    /// (labelled by plugin) when given.
    pub fn with_limit(max_bytes: usize, evictions: Option<prometheus::IntCounterVec>) -> Self {
        MemoryKv {
            spaces: Mutex::new(HashMap::new()),
            max_bytes: AtomicUsize::new(max_bytes),
            ops: std::sync::atomic::AtomicU64::new(0),
            evictions,
        }
    }

    /// Bytes charged to `plugin`'s keys now.
    pub fn bytes_used(&self, plugin: &str) -> usize {
        self.spaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(plugin)
            .map_or(0, |s| s.bytes)
    }

    fn with<R>(&self, key: &str, f: impl FnOnce(&mut Space, &str, Instant) -> R) -> R {
        let now = Instant::now();
        let ns = key.split_once('\0').map_or("", |(ns, _)| ns);
        let mut spaces = self.spaces.lock().unwrap_or_else(|e| e.into_inner());
        if !spaces.contains_key(ns) {
            spaces.insert(ns.to_owned(), Space::new());
        }
        let space = spaces.get_mut(ns).expect("inserted above");
        // Amortised O(1): bounded garbage from keys that are never read again.
        if self
            .ops
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(4096)
        {
            space.sweep(now);
        }
        f(space, ns, now)
    }

    /// Put `entry` at `key`, evicting what the cap needs.
    fn put(
        &self,
        space: &mut Space,
        ns: &str,
        key: &str,
        entry: Entry,
        now: Instant,
    ) -> Result<(), TooLarge> {
        let need = cost(key, &entry.value);
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        if need > max_bytes {
            return Err(TooLarge);
        }
        space.remove(key);
        if space.bytes + need > max_bytes {
            space.sweep(now);
        }
        let mut evicted = 0u64;
        while space.bytes + need > max_bytes {
            let Some((k, e)) = space.map.pop_lru() else {
                break;
            };
            space.bytes -= cost(&k, &e.value);
            evicted += 1;
        }
        if evicted > 0 {
            tracing::debug!(
                plugin = ns,
                evicted,
                "plugin kv store full; least recently used keys evicted"
            );
            if let Some(c) = &self.evictions {
                c.with_label_values(&[ns]).inc_by(evicted);
            }
        }
        space.bytes += need;
        space.map.put(key.to_owned(), entry);
        Ok(())
    }

    fn refuse(ns: &str, key: &str) {
        tracing::warn!(
            plugin = ns,
            key = key.split_once('\0').map_or(key, |(_, k)| k),
            "plugin kv value larger than plugins.kv.max_bytes_per_plugin; not stored"
        );
    }
}

fn expiry(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|t| now + t)
}

// The memory store answers at once: `within` never matters to it.
impl KvStore for MemoryKv {
    fn get(&self, key: &str, _within: Duration) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.with(key, |s, _, now| s.live(key, now).map(|e| e.value.clone())))
    }

    fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        _within: Duration,
    ) -> Result<(), KvError> {
        self.with(key, |s, ns, now| {
            let e = Entry {
                value,
                is_int: false,
                expires: expiry(now, ttl),
            };
            if self.put(s, ns, key, e, now).is_err() {
                Self::refuse(ns, key);
            }
        });
        Ok(())
    }

    fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
        _within: Duration,
    ) -> Result<i64, KvError> {
        let not_int = || KvError::Refused(format!("value at {:?} is not an integer", local(key)));
        self.with(key, |s, ns, now| {
            let (new, expires) = match s.live(key, now) {
                Some(e) => {
                    if !e.is_int {
                        return Err(not_int());
                    }
                    let cur: i64 = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(not_int)?;
                    let new = cur
                        .checked_add(delta)
                        .ok_or_else(|| KvError::Refused("integer overflow".to_owned()))?;
                    (new, e.expires)
                }
                None => (delta, expiry(now, ttl)),
            };
            let e = Entry {
                value: new.to_string().into_bytes(),
                is_int: true,
                expires,
            };
            self.put(s, ns, key, e, now)
                .map_err(|_| KvError::Refused("kv store of this plugin is full".to_owned()))?;
            Ok(new)
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl: Option<Duration>,
        _within: Duration,
    ) -> Result<bool, KvError> {
        Ok(self.with(key, |s, ns, now| {
            let cur = s.live(key, now).map(|e| e.value.as_slice());
            if cur != expected {
                return false;
            }
            let e = Entry {
                value,
                is_int: false,
                expires: expiry(now, ttl),
            };
            match self.put(s, ns, key, e, now) {
                Ok(()) => true,
                Err(TooLarge) => {
                    Self::refuse(ns, key);
                    false
                }
            }
        }))
    }

    fn delete(&self, key: &str, _within: Duration) -> Result<bool, KvError> {
        Ok(self.with(key, |s, _, now| s.remove(key).is_some_and(|e| e.live(now))))
    }

    fn set_max_bytes_per_plugin(&self, max_bytes: usize) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }
}

/// The plugin's own part of a namespaced key, for messages.
fn local(key: &str) -> &str {
    key.split_once('\0').map_or(key, |(_, k)| k)
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

    pub fn get(&self, k: &str, within: Duration) -> Result<Option<Vec<u8>>, KvError> {
        self.store.get(&self.key(k), within)
    }
    pub fn set(
        &self,
        k: &str,
        v: Vec<u8>,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<(), KvError> {
        self.store.set(&self.key(k), v, ttl, within)
    }
    pub fn increment(
        &self,
        k: &str,
        d: i64,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<i64, KvError> {
        self.store.increment(&self.key(k), d, ttl, within)
    }
    pub fn compare_and_swap(
        &self,
        k: &str,
        expected: Option<&[u8]>,
        v: Vec<u8>,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<bool, KvError> {
        self.store
            .compare_and_swap(&self.key(k), expected, v, ttl, within)
    }
    pub fn delete(&self, k: &str, within: Duration) -> Result<bool, KvError> {
        self.store.delete(&self.key(k), within)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const W: Duration = NO_DEADLINE;

    #[test]
    fn ttl_expires() {
        let kv = MemoryKv::new();
        kv.set("a", b"1".to_vec(), Some(Duration::from_millis(20)), W)
            .unwrap();
        kv.set("b", b"2".to_vec(), None, W).unwrap();
        assert_eq!(kv.get("a", W).unwrap(), Some(b"1".to_vec()));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(kv.get("a", W).unwrap(), None);
        assert_eq!(kv.get("b", W).unwrap(), Some(b"2".to_vec()));
        assert!(!kv.delete("a", W).unwrap());
        assert!(kv.delete("b", W).unwrap());
    }

    #[test]
    fn increment_rules() {
        let kv = MemoryKv::new();
        assert_eq!(
            kv.increment("n", 5, Some(Duration::from_millis(20)), W),
            Ok(5)
        );
        assert_eq!(kv.increment("n", -2, None, W), Ok(3));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            kv.increment("n", 1, None, W),
            Ok(1),
            "expired key counts as 0"
        );
        kv.set("s", b"x".to_vec(), None, W).unwrap();
        assert!(kv.increment("s", 1, None, W).is_err());
    }

    #[test]
    fn increment_and_cas_under_threads() {
        let kv = Arc::new(MemoryKv::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.increment("c", 1, None, W).unwrap();
                        // Read-modify-write through CAS: retry until our swap lands.
                        loop {
                            let cur = kv.get("cas", W).unwrap();
                            let n: u64 = cur
                                .as_deref()
                                .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
                                .unwrap_or(0);
                            let next = (n + 1).to_string().into_bytes();
                            if kv
                                .compare_and_swap("cas", cur.as_deref(), next, None, W)
                                .unwrap()
                            {
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
        assert_eq!(kv.increment("c", 0, None, W), Ok(8000));
        assert_eq!(kv.get("cas", W).unwrap(), Some(b"8000".to_vec()));
    }

    #[test]
    fn each_plugin_is_capped_and_least_recently_used_keys_go_first() {
        let evictions =
            prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["plugin"]).unwrap();
        // Room for about 10 entries of 100 bytes per plugin.
        let store = Arc::new(MemoryKv::with_limit(
            10 * (100 + 8 + ENTRY_OVERHEAD),
            Some(evictions.clone()),
        ));
        let a = ScopedKv::new(store.clone(), "a");
        let b = ScopedKv::new(store.clone(), "b");
        b.set("keep", vec![1; 100], None, W).unwrap();
        for i in 0..10 {
            a.set(&format!("k{i:02}"), vec![0; 100], None, W).unwrap();
        }
        assert_eq!(evictions.with_label_values(&["a"]).get(), 0);
        // k00 is read, so k01 is the least recently used.
        assert!(a.get("k00", W).unwrap().is_some());
        for i in 10..1000 {
            a.set(&format!("k{i:02}"), vec![0; 100], None, W).unwrap();
            assert!(store.bytes_used("a") <= 10 * (100 + 8 + ENTRY_OVERHEAD));
        }
        assert_eq!(a.get("k01", W).unwrap(), None);
        assert!(a.get("k999", W).unwrap().is_some());
        assert!(evictions.with_label_values(&["a"]).get() >= 990);
        // Another plugin's keys are never evicted for it.
        assert_eq!(b.get("keep", W).unwrap(), Some(vec![1; 100]));
        assert_eq!(evictions.with_label_values(&["b"]).get(), 0);
        // Counters stay exact while they are used; a value larger than the cap is refused.
        assert_eq!(a.increment("n", 2, None, W), Ok(2));
        assert_eq!(a.increment("n", 2, None, W), Ok(4));
        a.set("huge", vec![0; 1 << 20], None, W).unwrap();
        assert_eq!(a.get("huge", W).unwrap(), None);
        assert!(!a
            .compare_and_swap("huge", None, vec![0; 1 << 20], None, W)
            .unwrap());
        // Deletes and overwrites give their bytes back.
        let before = store.bytes_used("b");
        b.set("keep", vec![1; 10], None, W).unwrap();
        assert_eq!(store.bytes_used("b"), before - 90);
        assert!(b.delete("keep", W).unwrap());
        assert_eq!(store.bytes_used("b"), 0);
    }

    #[test]
    fn expired_keys_are_dropped_before_live_ones_are_evicted() {
        let store = Arc::new(MemoryKv::with_limit(4 * (64 + 6 + ENTRY_OVERHEAD), None));
        let a = ScopedKv::new(store, "a");
        a.set("live", vec![0; 64], None, W).unwrap();
        for i in 0..3 {
            a.set(
                &format!("t{i}"),
                vec![0; 64],
                Some(Duration::from_millis(10)),
                W,
            )
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(30));
        a.set("next", vec![0; 64], None, W).unwrap();
        assert!(
            a.get("live", W).unwrap().is_some(),
            "a live key was evicted while expired ones remained"
        );
        assert!(a.get("next", W).unwrap().is_some());
    }

    #[test]
    fn scoped_keys_are_private() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
        let a = ScopedKv::new(store.clone(), "a");
        let b = ScopedKv::new(store, "b");
        a.set("k", b"1".to_vec(), None, W).unwrap();
        assert_eq!(b.get("k", W).unwrap(), None);
        assert_eq!(a.get("k", W).unwrap(), Some(b"1".to_vec()));
    }
}
