//! The Redis backend of [`KvStore`] (`plugins.kv.backend: "redis"`): every gateway pointed at
//! the same server and `key_prefix` shares the plugins' state, so a rate limit holds across
//! them. `increment` and `compare_and_swap` are Lua scripts, atomic on the server.
//!
//! Plugin hooks run synchronously on the request's thread, so the Redis client lives on a
//! small runtime of its own (one thread, `kv-redis`): an operation is sent there and waited
//! for with a time limit, the shorter of `command_timeout_ms` and what the caller has left
//! of its deadline. A Redis that is slow, down or silent therefore ends the operation with
//! [`KvError::Timeout`] or [`KvError::Backend`], never holds it.
//!
//! `pool_size` multiplexed connections are used in turn; each is a redis
//! `ConnectionManager`, which reconnects by itself. A ping every half second keeps
//! `switchyard_kv_redis_up` and `/health` true to what the server does even without traffic.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{KvError, KvHealth, KvStore};
use crate::config::RedisKvConfig;

/// How often the backend is pinged for `/health` and the `up` gauge.
const PING_EVERY: Duration = Duration::from_millis(500);

/// `increment`: INCRBY, with the TTL set only when this call created the key. A value that
/// is not an integer (or an overflow) comes back as a `REFUSED` error, the plugin's own.
const INCREMENT: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
local v = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(v) == 'table' and v.err then
  return redis.error_reply('REFUSED ' .. v.err)
end
local ttl = tonumber(ARGV[2])
if existed == 0 and ttl >= 0 then
  if ttl == 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return v
";

/// `compare_and_swap`: ARGV = expected-present (0/1), expected, new value, TTL ms (-1: none,
/// 0: expires at once). Returns 1 when stored.
const COMPARE_AND_SWAP: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
local ttl = tonumber(ARGV[4])
if ttl == 0 then
  redis.call('DEL', KEYS[1])
elseif ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// TTL in whole milliseconds for Redis (`-1`: none). A TTL under a millisecond is rounded up
/// so it does not turn into "expires at once".
fn ttl_ms(ttl: Option<Duration>) -> i64 {
    match ttl {
        None => -1,
        Some(d) if d.is_zero() => 0,
        Some(d) => i64::try_from(d.as_micros().div_ceil(1000))
            .unwrap_or(i64::MAX / 2)
            .clamp(1, i64::MAX / 2),
    }
}

/// The Redis key for a store key: `<prefix><plugin>:<key>` for plugin keys (`plugin\0key`;
/// `%`, `:` and NUL in the plugin name are percent-encoded, so two plugins never meet), and
/// `<prefix>` + the key itself for the gateway's own keys (they begin with NUL).
pub(crate) fn redis_key(prefix: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + key.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    match key.split_once('\0') {
        Some((ns, rest)) if !ns.is_empty() => {
            for b in ns.bytes() {
                match b {
                    b'%' | b':' | 0 => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
                    _ => out.push(b),
                }
            }
            out.push(b':');
            out.extend_from_slice(rest.as_bytes());
        }
        _ => out.extend_from_slice(key.as_bytes()),
    }
    out
}

/// Counts and state shared with the runtime's tasks.
struct State {
    up: AtomicBool,
    last_error: Mutex<Option<(String, u64)>>,
    errors: prometheus::IntCounterVec,
    up_gauge: prometheus::IntGauge,
}

impl State {
    fn ok(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("kv redis backend reachable");
        }
        self.up_gauge.set(1);
    }

    /// Count a failure; `down` when it says the server is unreachable (not a refusal of one
    /// command, nor a caller whose own deadline was too short).
    fn failed(&self, kind: &'static str, message: &str, down: bool) {
        self.errors.with_label_values(&[kind]).inc();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((message.to_owned(), crate::plugins::bindings::now_ms()));
        if down {
            if self.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = message, "kv redis backend unreachable");
            }
            self.up_gauge.set(0);
        }
    }
}

/// The shared store on Redis. Cheap to call from any thread; dropping it stops its runtime.
pub struct RedisKv {
    prefix: String,
    command_timeout: Duration,
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    increment: Arc<redis::Script>,
    cas: Arc<redis::Script>,
    state: Arc<State>,
    handle: tokio::runtime::Handle,
    /// Dropped with the store: the runtime's thread then ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RedisKv {
    /// Start the backend's runtime and its connections (made lazily: the gateway starts
    /// whether or not Redis is up). Metrics go on `registry`.
    pub fn start(cfg: &RedisKvConfig, registry: &prometheus::Registry) -> Result<RedisKv, String> {
        // The URL is a secret: the client's parse error is not shown, it may echo it.
        let client = redis::Client::open(cfg.url.expose())
            .map_err(|_| "plugins.kv.url: not a Redis URL the client accepts".to_owned())?;
        let errors = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "switchyard_kv_redis_errors_total",
                "Redis key-value operations that failed, by kind (timeout, connection, command)",
            ),
            &["kind"],
        )
        .map_err(|e| e.to_string())?;
        let up_gauge = prometheus::IntGauge::new(
            "switchyard_kv_redis_up",
            "1 while the Redis key-value backend answers, 0 while it is unreachable",
        )
        .map_err(|e| e.to_string())?;
        for c in [
            Box::new(errors.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(up_gauge.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "kv redis metrics not registered");
            }
        }
        let state = Arc::new(State {
            // Unknown until the first ping; shown as down until Redis has answered once.
            up: AtomicBool::new(false),
            last_error: Mutex::new(None),
            errors,
            up_gauge,
        });
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("kv-redis".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async move {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| format!("kv redis thread: {e}"))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| "kv redis runtime did not start".to_owned())??;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            // Reconnect soon after Redis is back: few, short retries per attempt; every
            // failed command starts another attempt.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conns = {
            let _in_rt = handle.enter();
            (0..cfg.pool_size)
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("kv redis client: {e}"))?
        };
        let kv = RedisKv {
            prefix: cfg.key_prefix.clone(),
            command_timeout: cfg.command_timeout,
            conns,
            next: AtomicUsize::new(0),
            increment: Arc::new(redis::Script::new(INCREMENT)),
            cas: Arc::new(redis::Script::new(COMPARE_AND_SWAP)),
            state,
            handle,
            _stop: stop,
        };
        kv.spawn_pinger(cfg.command_timeout.max(Duration::from_millis(250)));
        Ok(kv)
    }

    fn spawn_pinger(&self, limit: Duration) {
        let conns = self.conns.clone();
        let state = Arc::downgrade(&self.state);
        self.handle.spawn(async move {
            loop {
                let Some(st) = state.upgrade() else { return };
                // Every connection: a broken one is found (and reconnects) without traffic.
                let mut all_ok = true;
                let mut failure = None;
                for c in &conns {
                    let mut c = c.clone();
                    let pinged = tokio::time::timeout(
                        limit,
                        redis::cmd("PING").query_async::<String>(&mut c),
                    )
                    .await;
                    match pinged {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            all_ok = false;
                            failure = Some(("connection", e.to_string()));
                        }
                        Err(_) => {
                            all_ok = false;
                            failure =
                                Some(("timeout", format!("PING not answered within {limit:?}")));
                        }
                    }
                }
                match failure {
                    None if all_ok => st.ok(),
                    Some((kind, msg)) => st.failed(kind, &msg, true),
                    None => {}
                }
                drop(st);
                tokio::time::sleep(PING_EVERY).await;
            }
        });
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Run `op` on the backend's runtime and wait for it at most `within` (capped by the
    /// command timeout).
    fn run<T, F>(
        &self,
        within: Duration,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let limit = within.min(self.command_timeout);
        if limit.is_zero() {
            return Err(KvError::Timeout(limit));
        }
        let fut = op(self.conn());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(tokio::time::timeout(limit, fut).await);
        });
        // A little slack over the task's own timeout: its answer, not ours, says which.
        let waited = rx.recv_timeout(limit + Duration::from_millis(5));
        let outcome = match waited {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) | Err(_) => {
                // Short because the caller's deadline was short: not a sign Redis is down.
                let down = limit >= self.command_timeout;
                self.state
                    .failed("timeout", &format!("no answer within {limit:?}"), down);
                return Err(KvError::Timeout(limit));
            }
        };
        match outcome {
            Ok(v) => {
                self.state.ok();
                Ok(v)
            }
            Err(e) if e.code() == Some("REFUSED") => {
                self.state.ok();
                Err(KvError::Refused(
                    e.detail().unwrap_or("refused").trim().to_owned(),
                ))
            }
            Err(e) => {
                let unreachable = e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout();
                let msg = e.to_string();
                if e.is_timeout() {
                    self.state.failed("timeout", &msg, true);
                    return Err(KvError::Timeout(limit));
                }
                let kind = if unreachable { "connection" } else { "command" };
                self.state.failed(kind, &msg, unreachable);
                Err(KvError::Backend(msg))
            }
        }
    }
}

impl KvStore for RedisKv {
    fn get(&self, key: &str, within: Duration) -> Result<Option<Vec<u8>>, KvError> {
        let k = redis_key(&self.prefix, key);
        self.run(within, |mut c| async move {
            redis::cmd("GET")
                .arg(k)
                .query_async::<Option<Vec<u8>>>(&mut c)
                .await
        })
    }

    fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<(), KvError> {
        let k = redis_key(&self.prefix, key);
        let ttl = ttl_ms(ttl);
        self.run(within, |mut c| async move {
            if ttl == 0 {
                return redis::cmd("DEL").arg(k).query_async::<()>(&mut c).await;
            }
            let mut cmd = redis::cmd("SET");
            cmd.arg(k).arg(value);
            if ttl > 0 {
                cmd.arg("PX").arg(ttl);
            }
            cmd.query_async::<()>(&mut c).await
        })
    }

    fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<i64, KvError> {
        let k = redis_key(&self.prefix, key);
        let ttl = ttl_ms(ttl);
        let script = self.increment.clone();
        self.run(within, move |mut c| async move {
            script
                .key(k)
                .arg(delta)
                .arg(ttl)
                .invoke_async::<i64>(&mut c)
                .await
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl: Option<Duration>,
        within: Duration,
    ) -> Result<bool, KvError> {
        let k = redis_key(&self.prefix, key);
        let ttl = ttl_ms(ttl);
        let present = if expected.is_some() { "1" } else { "0" };
        let expected = expected.map(<[u8]>::to_vec).unwrap_or_default();
        let script = self.cas.clone();
        self.run(within, move |mut c| async move {
            script
                .key(k)
                .arg(present)
                .arg(expected)
                .arg(value)
                .arg(ttl)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
        })
    }

    fn delete(&self, key: &str, within: Duration) -> Result<bool, KvError> {
        let k = redis_key(&self.prefix, key);
        self.run(within, |mut c| async move {
            redis::cmd("DEL")
                .arg(k)
                .query_async::<i64>(&mut c)
                .await
                .map(|n| n > 0)
        })
    }

    fn health(&self) -> KvHealth {
        let last = self
            .state
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        KvHealth {
            backend: "redis",
            up: self.state.up.load(Ordering::Relaxed),
            last_error: last.as_ref().map(|(m, _)| m.clone()),
            last_error_at_ms: last.map(|(_, at)| at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_plugin_names_cannot_collide() {
        let k = |key: &str| String::from_utf8_lossy(&redis_key("sy:", key)).into_owned();
        assert_eq!(k("rate-limit\0client:ck-1"), "sy:rate-limit:client:ck-1");
        // "a:b" + "c" and "a" + "b:c" would meet without the encoding.
        assert_ne!(k("a:b\0c"), k("a\0b:c"));
        assert_eq!(k("a:b\0c"), "sy:a%3Ab:c");
        // The gateway's own keys begin with NUL and keep it.
        assert_eq!(k("\0vk\0team\0rpm\0_1"), "sy:\0vk\0team\0rpm\0_1");
    }

    #[test]
    fn ttls_round_up_to_a_millisecond() {
        assert_eq!(ttl_ms(None), -1);
        assert_eq!(ttl_ms(Some(Duration::ZERO)), 0);
        assert_eq!(ttl_ms(Some(Duration::from_micros(10))), 1);
        assert_eq!(ttl_ms(Some(Duration::from_millis(1500))), 1500);
    }
}
