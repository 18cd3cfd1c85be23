//! Validation of the raw config ([`super::raw`]) into the runtime types.
//!
//! [`parse`] deserializes the file (serde errors carry their JSON path, line and column),
//! then checks every field and collects *every* problem as `<json.path>: <what is wrong>`.
//! `env.NAME` key values are resolved through an injectable [`Env`]; an unset variable
//! leaves its key out with a warning instead of failing the whole file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::raw::{
    OrderedMap, RawClient, RawConfig, RawKey, RawNetwork, RawPluginEntry, RawPluginKv, RawPlugins,
    RawProvider, RawProxy,
};
use super::{
    ClientConfig, Config, KeyConfig, KvBackend, NetworkConfig, OnError, PluginEntry, PluginsConfig,
    ProviderConfig, ProviderKind, ProviderSettings, ProxyConfig, ProxyKind, RedisKvConfig, Secret,
};

mod access;
mod service_account;
mod settings;
mod telemetry;

pub use service_account::{parse_service_account, signing_key, DEFAULT_TOKEN_URI};

/// Where `env.NAME` values come from; tests inject a map, `main` the process environment.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Every problem found in a config file. Displays one problem per line, each prefixed by
/// the file name: `config.json: providers.openai.keys[0].weight: must be > 0, got 0`.
#[derive(Debug)]
pub struct ConfigError {
    /// The file the problems are in, as given (`config.json` for [`Config::from_json`]).
    pub file: String,
    /// Each `<json.path>: <what is wrong>`, in file order.
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {p}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates config text as if it were a file named `config.json` in
    /// `base_dir`. Returns the config and the warnings (e.g. unset `env.` variables).
    pub fn from_json(
        text: &str,
        base_dir: &Path,
        env: &dyn Env,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        parse(text, "config.json", base_dir, env)
    }

    /// Reads, parses and validates the config file at `path`; relative plugin directories
    /// are resolved against the file's directory.
    pub fn load(path: &Path, env: &dyn Env) -> Result<(Config, Vec<String>), ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new(""));
        parse(&text, &file, base_dir, env)
    }
}

/// The public API address of each built-in provider, used when `network_config.base_url`
/// is not set. `None`: the address follows from the provider's settings (Azure, Bedrock,
/// Vertex) or must be given (custom).
fn default_base_url(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
        ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
        ProviderKind::Cohere => Some("https://api.cohere.com"),
        ProviderKind::Groq => Some("https://api.groq.com/openai/v1"),
        ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
        ProviderKind::Ollama => Some("http://localhost:11434/v1"),
        ProviderKind::Azure
        | ProviderKind::Bedrock
        | ProviderKind::Vertex
        | ProviderKind::Custom => None,
    }
}

/// The built-in provider type names, for messages.
fn kind_list() -> String {
    ProviderKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and validates `text`; `file_name` prefixes the problems when displayed.
pub fn parse(
    text: &str,
    file_name: &str,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<(Config, Vec<String>), ConfigError> {
    let raw = deserialize(text).map_err(|problem| ConfigError {
        file: file_name.to_string(),
        problems: vec![problem],
    })?;
    validate(raw, base_dir, env).map_err(|problems| ConfigError {
        file: file_name.to_string(),
        problems,
    })
}

/// Deserializes the file into the raw structs; a failure is one problem with its line and
/// column (and JSON path for type errors).
pub fn deserialize(text: &str) -> Result<RawConfig, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawConfig = match serde_path_to_error::deserialize(&mut de) {
        Ok(raw) => raw,
        Err(e) => {
            let mut path = e.path().to_string();
            // For an unknown field the path ends with the field itself; name its parent.
            let msg = e.inner().to_string();
            if let Some(field) = msg
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
            {
                if let Some(parent) = path.strip_suffix(&format!(".{field}")) {
                    path = parent.to_string();
                } else if path == field {
                    path = ".".to_string();
                }
            }
            return Err(serde_problem(&path, e.inner()));
        }
    };
    if let Err(e) = de.end() {
        return Err(serde_problem(".", &e));
    }
    Ok(raw)
}

fn serde_problem(path: &str, e: &serde_json::Error) -> String {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let msg = full
        .strip_suffix(&suffix)
        .unwrap_or(&full)
        .replace('`', "\"");
    match e.classify() {
        serde_json::error::Category::Data => {
            if path == "." || path.is_empty() {
                format!("{msg}{suffix}")
            } else {
                format!("{path}: {msg}{suffix}")
            }
        }
        _ => format!("invalid JSON{suffix}: {msg}"),
    }
}

/// Collects problems and warnings while validating.
struct Ctx<'a> {
    env: &'a dyn Env,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    fn problem(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.problems.push(format!("{path}: {msg}"));
    }

    fn warn(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.warnings.push(format!("{path}: {msg}"));
    }

    /// `> 0` check for counts and durations.
    fn positive(&mut self, path: &str, value: u64) -> bool {
        if value == 0 {
            self.problem(path, "must be > 0, got 0");
            false
        } else {
            true
        }
    }

    /// Checks an http(s) URL and returns it without trailing `/`.
    fn http_url(&mut self, path: &str, value: &str) -> Option<String> {
        let trimmed = value.trim().trim_end_matches('/');
        match reqwest::Url::parse(trimmed) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(trimmed.to_string())
            }
            _ => {
                self.problem(path, format!("{value:?} is not an http(s) URL"));
                None
            }
        }
    }

    /// Resolves `env.NAME` (Ok(None): the variable is unset or empty) or returns a literal.
    /// Err: the reference itself is malformed (already reported).
    fn resolve(&mut self, path: &str, value: &str) -> Result<Resolved, ()> {
        if value.is_empty() {
            self.problem(path, "must not be empty");
            return Err(());
        }
        match value.strip_prefix("env.") {
            Some("") => {
                self.problem(path, "\"env.\" must be followed by a variable name");
                Err(())
            }
            Some(name) => match self.env.var(name) {
                Some(v) if !v.is_empty() => Ok(Resolved::Value(v)),
                Some(_) => Ok(Resolved::Missing(name.to_string(), "is empty")),
                None => Ok(Resolved::Missing(name.to_string(), "is not set")),
            },
            None => Ok(Resolved::Value(value.to_string())),
        }
    }
}

enum Resolved {
    Value(String),
    /// Variable name and why it gave nothing.
    Missing(String, &'static str),
}

/// Checks every field of `raw`; Err holds every problem found.
pub fn validate(
    raw: RawConfig,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<(Config, Vec<String>), Vec<String>> {
    let mut ctx = Ctx {
        env,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let raw_client = raw.client.unwrap_or_default();
    let mut client = client(&mut ctx, &raw_client);
    let raw_providers = raw.providers.unwrap_or_default();
    if raw_providers.0.is_empty() {
        ctx.warnings
            .push("providers: no providers configured; every request will fail".to_string());
    }
    let mut providers = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (name, p) in &raw_providers.0 {
        let path = format!("providers.{name}");
        if seen.contains(&name.as_str()) {
            ctx.problem(&path, "duplicate provider name");
            continue;
        }
        seen.push(name);
        if let Some(p) = provider(&mut ctx, &path, name, p) {
            providers.push(p);
        }
    }
    let names: Vec<&str> = raw_providers.0.iter().map(|(n, _)| n.as_str()).collect();
    client.access = access::access(&mut ctx, &raw_client, client.listen, &names);
    let plugins = plugins(&mut ctx, raw.plugins.unwrap_or_default(), base_dir);
    client.model_aliases = model_aliases(&mut ctx, raw_client.model_aliases.as_ref(), &providers);
    let logging = telemetry::logging(&mut ctx, raw.logging.unwrap_or_default());
    let telemetry = telemetry::telemetry(&mut ctx, raw.telemetry.unwrap_or_default());
    let status_page = raw.status_page.and_then(|s| s.enabled).unwrap_or(true);
    if ctx.problems.is_empty() {
        Ok((
            Config {
                client,
                providers,
                plugins,
                logging,
                telemetry,
                status_page,
            },
            ctx.warnings,
        ))
    } else {
        Err(ctx.problems)
    }
}

fn client(ctx: &mut Ctx<'_>, raw: &RawClient) -> ClientConfig {
    let default_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    let listen = match raw.listen.as_deref() {
        None => default_listen,
        Some(s) => match parse_listen(s) {
            Some(addr) => addr,
            None => {
                ctx.problem(
                    "client.listen",
                    format!("{s:?} is not an address and port, e.g. \"127.0.0.1:8080\""),
                );
                default_listen
            }
        },
    };
    let max_request_body_bytes = raw.max_request_body_bytes.unwrap_or(10 * 1024 * 1024);
    ctx.positive(
        "client.max_request_body_bytes",
        max_request_body_bytes as u64,
    );
    let max_response_body_bytes = raw.max_response_body_bytes.unwrap_or(32 * 1024 * 1024);
    ctx.positive(
        "client.max_response_body_bytes",
        max_response_body_bytes as u64,
    );
    let max_stream_event_bytes = raw.max_stream_event_bytes.unwrap_or(1024 * 1024);
    ctx.positive(
        "client.max_stream_event_bytes",
        max_stream_event_bytes as u64,
    );
    let queue_timeout = raw.queue_timeout_in_seconds.and_then(|s| {
        ctx.positive("client.queue_timeout_in_seconds", s)
            .then(|| Duration::from_secs(s))
    });
    let mut seconds = |key: &str, value: Option<u64>, default: u64| {
        let v = value.unwrap_or(default);
        ctx.positive(&format!("client.{key}"), v);
        Duration::from_secs(v)
    };
    let header_read_timeout = seconds(
        "header_read_timeout_in_seconds",
        raw.header_read_timeout_in_seconds,
        10,
    );
    let idle_timeout = seconds("idle_timeout_in_seconds", raw.idle_timeout_in_seconds, 60);
    let write_timeout = seconds("write_timeout_in_seconds", raw.write_timeout_in_seconds, 30);
    let body_read_timeout = seconds(
        "body_read_timeout_in_seconds",
        raw.body_read_timeout_in_seconds,
        60,
    );
    let max_in_flight = raw.max_in_flight.unwrap_or(10_000);
    ctx.positive("client.max_in_flight", max_in_flight as u64);
    ClientConfig {
        listen,
        initial_pool_size: raw.initial_pool_size.unwrap_or(5000),
        drop_excess_requests: raw.drop_excess_requests.unwrap_or(false),
        max_request_body_bytes,
        max_response_body_bytes,
        max_stream_event_bytes,
        queue_timeout,
        shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_in_seconds.unwrap_or(30)),
        header_read_timeout,
        idle_timeout,
        write_timeout,
        body_read_timeout,
        max_in_flight,
        model_aliases: Vec::new(),
        access: Default::default(),
    }
}

/// `client.model_aliases`: every target `"provider/model"` of a configured provider.
fn model_aliases(
    ctx: &mut Ctx<'_>,
    raw: Option<&OrderedMap<serde_json::Value>>,
    providers: &[ProviderConfig],
) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (name, value) in raw.map_or(&[][..], |m| m.0.as_slice()) {
        let path = format!("client.model_aliases.{name}");
        if name.is_empty() {
            ctx.problem(&path, "an alias needs a name");
            continue;
        }
        if out.iter().any(|(n, _)| n == name) {
            ctx.problem(&path, "duplicate alias");
            continue;
        }
        let items: Vec<(String, &serde_json::Value)> = match value {
            serde_json::Value::Array(list) if list.is_empty() => {
                ctx.problem(&path, "must list at least one \"provider/model\"");
                continue;
            }
            serde_json::Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
            v => vec![(path.clone(), v)],
        };
        let mut targets = Vec::with_capacity(items.len());
        for (at, v) in items {
            let Some(s) = v.as_str() else {
                ctx.problem(
                    &at,
                    "must be \"provider/model\" (a string) or a list of them",
                );
                continue;
            };
            match s.split_once('/') {
                Some((p, m)) if !p.is_empty() && !m.is_empty() => {
                    if providers.iter().any(|c| c.name == p) {
                        targets.push((p.to_owned(), m.to_owned()));
                    } else {
                        let known: Vec<&str> = providers.iter().map(|c| c.name.as_str()).collect();
                        ctx.problem(
                            &at,
                            format!(
                                "\"{s}\" names provider \"{p}\", which is not configured (providers: {})",
                                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                            ),
                        );
                    }
                }
                _ => ctx.problem(&at, format!("\"{s}\" must be \"provider/model\"")),
            }
        }
        out.push((name.clone(), targets));
    }
    out
}

fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port = s.strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

fn provider_kind(
    ctx: &mut Ctx<'_>,
    path: &str,
    name: &str,
    raw: &RawProvider,
) -> Option<ProviderKind> {
    let by_name = ProviderKind::parse(name);
    match (by_name, raw.kind.as_deref()) {
        (Some(kind), None) => Some(kind),
        (Some(kind), Some(t)) if t == kind.as_str() => Some(kind),
        (Some(kind), Some(t)) => {
            ctx.problem(
                &format!("{path}.type"),
                format!(
                    "{t:?} does not match the provider name {:?}; a provider named after a built-in type must be that type (omit \"type\")",
                    kind.as_str()
                ),
            );
            None
        }
        (None, None) => {
            ctx.problem(
                path,
                format!(
                    "unknown provider type {name:?}; built-in types are {}",
                    kind_list()
                ),
            );
            None
        }
        (None, Some(t)) => match ProviderKind::parse(t) {
            Some(kind) => Some(kind),
            None => {
                ctx.problem(
                    &format!("{path}.type"),
                    format!(
                        "unknown provider type {t:?}; built-in types are {}",
                        kind_list()
                    ),
                );
                None
            }
        },
    }
}

fn provider(
    ctx: &mut Ctx<'_>,
    path: &str,
    name: &str,
    raw: &RawProvider,
) -> Option<ProviderConfig> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        ctx.problem(
            path,
            format!("invalid provider name {name:?}: must be non-empty, without \"/\" or spaces"),
        );
    }
    let kind = provider_kind(ctx, path, name, raw);

    // keys
    let mut keys = Vec::new();
    let mut missing_env = Vec::new();
    // Vertex keys only choose models and weights: the credentials are the service account.
    let value_needed = kind != Some(ProviderKind::Vertex);
    for (i, k) in raw.keys.iter().flatten().enumerate() {
        let kpath = format!("{path}.keys[{i}]");
        if let Some(key) = key(ctx, &kpath, k, value_needed, &mut missing_env) {
            keys.push(key);
        }
    }
    let no_keys_in_file = raw.keys.as_ref().is_none_or(Vec::is_empty);
    if no_keys_in_file && kind.is_some_and(ProviderKind::requires_key) {
        ctx.warn(
            &format!("{path}.keys"),
            "no keys configured; requests to this provider will fail",
        );
    }

    let settings = kind
        .and_then(|k| settings::settings(ctx, path, k, raw.meta_config.as_ref(), &mut missing_env));

    let network = network(
        ctx,
        path,
        kind,
        raw.network_config.clone().unwrap_or_default(),
        settings.as_ref(),
    );

    // concurrency
    let cpath = format!("{path}.concurrency_and_buffer_size");
    let cb = raw.concurrency_and_buffer_size.clone().unwrap_or_default();
    let concurrency = cb.concurrency.unwrap_or(1000);
    let buffer_size = cb.buffer_size.unwrap_or(5000);
    let c_ok = ctx.positive(&format!("{cpath}.concurrency"), concurrency as u64);
    let b_ok = ctx.positive(&format!("{cpath}.buffer_size"), buffer_size as u64);
    if c_ok && b_ok && concurrency > buffer_size {
        ctx.problem(
            &cpath,
            format!("concurrency ({concurrency}) must not exceed buffer_size ({buffer_size})"),
        );
    }

    let proxy = raw
        .proxy_config
        .as_ref()
        .and_then(|p| proxy(ctx, &format!("{path}.proxy_config"), p));

    let anthropic_version = raw
        .anthropic_version
        .clone()
        .unwrap_or_else(|| "2023-06-01".to_string());
    if anthropic_version.is_empty() {
        ctx.problem(&format!("{path}.anthropic_version"), "must not be empty");
    }

    Some(ProviderConfig {
        name: name.to_string(),
        kind: kind?,
        keys,
        missing_env,
        network: network?,
        concurrency,
        buffer_size,
        proxy,
        settings: settings?,
        anthropic_version,
    })
}

fn key(
    ctx: &mut Ctx<'_>,
    path: &str,
    raw: &RawKey,
    value_needed: bool,
    missing_env: &mut Vec<String>,
) -> Option<KeyConfig> {
    let weight = raw.weight.unwrap_or(1.0);
    let mut ok = true;
    if !(weight.is_finite() && weight > 0.0) {
        ctx.problem(
            &format!("{path}.weight"),
            format!("must be > 0, got {weight}"),
        );
        ok = false;
    }
    let models = raw.models.clone().unwrap_or_default();
    for (i, m) in models.iter().enumerate() {
        if m.trim().is_empty() {
            ctx.problem(&format!("{path}.models[{i}]"), "must not be empty");
            ok = false;
        }
    }
    let vpath = format!("{path}.value");
    let value = match raw.value.as_deref() {
        None if !value_needed => Some(String::new()),
        None => {
            ctx.problem(&vpath, "required (the key, or \"env.NAME\")");
            None
        }
        Some(v) => match ctx.resolve(&vpath, v) {
            Err(()) => None,
            Ok(Resolved::Value(v)) => Some(v),
            Ok(Resolved::Missing(name, why)) => {
                ctx.warn(
                    &vpath,
                    format!("environment variable {name} {why}; key left out"),
                );
                if !missing_env.contains(&name) {
                    missing_env.push(name);
                }
                None
            }
        },
    };
    let value = value?;
    ok.then(|| KeyConfig {
        value: Secret::new(value),
        models,
        weight,
    })
}

fn network(
    ctx: &mut Ctx<'_>,
    path: &str,
    kind: Option<ProviderKind>,
    raw: RawNetwork,
    settings: Option<&ProviderSettings>,
) -> Option<NetworkConfig> {
    let npath = format!("{path}.network_config");
    let bpath = format!("{npath}.base_url");
    let base_url = match (kind, raw.base_url.as_deref()) {
        (Some(ProviderKind::Azure), Some(_)) => {
            ctx.problem(
                &bpath,
                "not used for azure providers; set meta_config.endpoint",
            );
            None
        }
        (Some(ProviderKind::Azure), None) => match settings {
            Some(ProviderSettings::Azure(a)) => Some(a.endpoint.clone()),
            _ => None,
        },
        (_, Some(u)) => ctx.http_url(&bpath, u),
        // The regional endpoint follows from the settings.
        (Some(ProviderKind::Bedrock), None) => match settings {
            Some(ProviderSettings::Bedrock(b)) => Some(format!(
                "https://bedrock-runtime.{}.amazonaws.com",
                b.region
            )),
            _ => None,
        },
        (Some(ProviderKind::Vertex), None) => match settings {
            Some(ProviderSettings::Vertex(v)) if v.location == "global" => {
                Some("https://aiplatform.googleapis.com".to_string())
            }
            Some(ProviderSettings::Vertex(v)) => {
                Some(format!("https://{}-aiplatform.googleapis.com", v.location))
            }
            _ => None,
        },
        (Some(ProviderKind::Custom), None) => {
            ctx.problem(
                &bpath,
                "required for custom providers (the OpenAI-compatible server's URL, e.g. \"http://127.0.0.1:8000/v1\")",
            );
            None
        }
        (Some(k), None) => default_base_url(k).map(|u| u.trim_end_matches('/').to_string()),
        (None, None) => None,
    };

    let mut extra_headers = Vec::new();
    for (name, value) in raw.extra_headers.unwrap_or_default().0 {
        let hpath = format!("{npath}.extra_headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes());
        let v = HeaderValue::from_str(&value);
        match (n, v) {
            (Ok(n), Ok(v)) => extra_headers.push((n, v)),
            (Err(_), _) => ctx.problem(&hpath, "invalid header name"),
            (_, Err(_)) => ctx.problem(&hpath, format!("invalid header value {value:?}")),
        }
    }

    let request_timeout = raw.default_request_timeout_in_seconds.unwrap_or(30);
    ctx.positive(
        &format!("{npath}.default_request_timeout_in_seconds"),
        request_timeout,
    );
    let stream_idle = raw.stream_idle_timeout_in_seconds.unwrap_or(30);
    ctx.positive(
        &format!("{npath}.stream_idle_timeout_in_seconds"),
        stream_idle,
    );
    let initial = raw.retry_backoff_initial.unwrap_or(500);
    let max = raw.retry_backoff_max.unwrap_or(5000);
    if initial > max {
        ctx.problem(
            &format!("{npath}.retry_backoff_initial"),
            format!("({initial} ms) must not exceed retry_backoff_max ({max} ms)"),
        );
    }
    Some(NetworkConfig {
        base_url: base_url?,
        extra_headers,
        request_timeout: Duration::from_secs(request_timeout),
        stream_idle_timeout: Duration::from_secs(stream_idle),
        max_retries: raw.max_retries.unwrap_or(0),
        retry_backoff_initial: Duration::from_millis(initial),
        retry_backoff_max: Duration::from_millis(max),
    })
}

fn proxy(ctx: &mut Ctx<'_>, path: &str, raw: &RawProxy) -> Option<ProxyConfig> {
    let kind = match raw.kind.as_deref() {
        None => {
            ctx.problem(&format!("{path}.type"), "required: \"http\" or \"socks5\"");
            None
        }
        Some("none") => return None,
        Some("http") => Some(ProxyKind::Http),
        Some("socks5") => Some(ProxyKind::Socks5),
        Some(other) => {
            ctx.problem(
                &format!("{path}.type"),
                format!("unknown proxy type {other:?}; expected \"http\" or \"socks5\""),
            );
            None
        }
    };
    let upath = format!("{path}.url");
    let url = match raw.url.as_deref() {
        None => {
            ctx.problem(&upath, "required");
            None
        }
        Some(u) => match reqwest::Url::parse(u) {
            Ok(p)
                if matches!(p.scheme(), "http" | "https" | "socks5" | "socks5h")
                    && p.host().is_some() =>
            {
                Some(u.to_string())
            }
            _ => {
                ctx.problem(
                    &upath,
                    format!("{u:?} is not a proxy URL (http://, https:// or socks5://)"),
                );
                None
            }
        },
    };
    let ppath = format!("{path}.password");
    let password = match raw.password.as_deref() {
        None => None,
        Some(p) => match ctx.resolve(&ppath, p) {
            Ok(Resolved::Value(v)) => Some(Secret::new(v)),
            Ok(Resolved::Missing(name, why)) => {
                ctx.problem(&ppath, format!("environment variable {name} {why}"));
                None
            }
            Err(()) => None,
        },
    };
    Some(ProxyConfig {
        kind: kind?,
        url: url?,
        username: raw.username.clone(),
        password,
    })
}

fn resolve_dir(base_dir: &Path, dir: &str) -> PathBuf {
    let p = PathBuf::from(dir);
    if p.is_absolute() {
        p
    } else {
        base_dir.join(p)
    }
}

fn plugins(ctx: &mut Ctx<'_>, raw: RawPlugins, base_dir: &Path) -> PluginsConfig {
    let directory = raw.directory.unwrap_or_else(|| "plugins/build".to_string());
    if directory.is_empty() {
        ctx.problem("plugins.directory", "must not be empty");
    }
    let max_instances = raw.max_instances.unwrap_or(64);
    ctx.positive("plugins.max_instances", max_instances as u64);

    let mut entries = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, e) in raw.entries.unwrap_or_default().into_iter().enumerate() {
        let path = format!("plugins.entries[{i}]");
        if let Some(name) = e.name.as_deref() {
            if let Some((_, first)) = names.iter().find(|(n, _)| n == name) {
                ctx.problem(
                    &format!("{path}.name"),
                    format!("duplicate plugin name {name:?} (also plugins.entries[{first}])"),
                );
            } else {
                names.push((name.to_string(), i));
            }
        }
        if let Some(entry) = plugin_entry(ctx, &path, i, e) {
            entries.push(entry);
        }
    }
    // Stable: equal `order` keeps file order.
    entries.sort_by_key(|e| e.order);

    let kv = raw.kv.unwrap_or_default();
    let kv_max = kv
        .max_bytes_per_plugin
        .unwrap_or(super::DEFAULT_KV_MAX_BYTES_PER_PLUGIN as u64);
    ctx.positive("plugins.kv.max_bytes_per_plugin", kv_max);
    let kv_backend = kv_backend(ctx, &kv);
    let compile_cache = match raw.compile_cache {
        None | Some(serde_json::Value::Bool(true)) => default_compile_cache(ctx),
        Some(serde_json::Value::Bool(false)) => None,
        Some(serde_json::Value::String(d)) if !d.trim().is_empty() => {
            Some(resolve_dir(base_dir, &d))
        }
        Some(other) => {
            ctx.problem(
                "plugins.compile_cache",
                format!("expected a directory or false, got {other}"),
            );
            None
        }
    };

    PluginsConfig {
        directory: resolve_dir(base_dir, &directory),
        watch: raw.watch.unwrap_or(true),
        debounce: Duration::from_millis(raw.debounce_ms.unwrap_or(200)),
        max_instances,
        entries,
        kv_max_bytes_per_plugin: usize::try_from(kv_max).unwrap_or(usize::MAX),
        kv_backend: kv_backend.unwrap_or_default(),
        compile_cache,
    }
}

/// Most multiplexed Redis connections one gateway opens (`plugins.kv.pool_size`).
const MAX_KV_POOL: u64 = 64;

/// `plugins.kv.backend` and the settings that go with it. The URL is never echoed in a
/// problem: it may hold a password.
fn kv_backend(ctx: &mut Ctx<'_>, raw: &RawPluginKv) -> Option<KvBackend> {
    let redis_only = [
        ("url", raw.url.is_some()),
        ("key_prefix", raw.key_prefix.is_some()),
        ("connect_timeout_ms", raw.connect_timeout_ms.is_some()),
        ("command_timeout_ms", raw.command_timeout_ms.is_some()),
        ("pool_size", raw.pool_size.is_some()),
    ];
    match raw.backend.as_deref() {
        None | Some("memory") => {
            for (key, set) in redis_only {
                if set {
                    ctx.problem(
                        &format!("plugins.kv.{key}"),
                        "only used with \"backend\": \"redis\"",
                    );
                }
            }
            return Some(KvBackend::Memory);
        }
        Some("redis") => {}
        Some(other) => {
            ctx.problem(
                "plugins.kv.backend",
                format!("unknown value {other:?}; expected \"memory\" or \"redis\""),
            );
            return None;
        }
    }
    let path = "plugins.kv.url";
    let url = match raw.url.as_deref() {
        None => {
            ctx.problem(
                path,
                "required with \"backend\": \"redis\" (redis://host:port, or \"env.NAME\")",
            );
            None
        }
        Some(v) => match ctx.resolve(path, v) {
            Err(()) => None,
            Ok(Resolved::Missing(name, why)) => {
                ctx.problem(path, format!("environment variable {name} {why}"));
                None
            }
            Ok(Resolved::Value(v)) => {
                let ok = reqwest::Url::parse(v.trim()).is_ok_and(|u| {
                    u.scheme() == "redis" && u.host_str().is_some_and(|h| !h.is_empty())
                });
                if ok {
                    Some(Secret::new(v.trim()))
                } else {
                    let from = if v.as_str() == raw.url.as_deref().unwrap_or_default() {
                        String::new()
                    } else {
                        " (from the environment)".to_owned()
                    };
                    ctx.problem(
                        path,
                        format!("not a redis://host:port URL{from}; the value is not shown"),
                    );
                    None
                }
            }
        },
    };
    let mut millis = |key: &str, value: Option<u64>, default: u64| {
        let v = value.unwrap_or(default);
        ctx.positive(&format!("plugins.kv.{key}"), v)
            .then(|| Duration::from_millis(v))
    };
    let connect_timeout = millis("connect_timeout_ms", raw.connect_timeout_ms, 1000);
    let command_timeout = millis("command_timeout_ms", raw.command_timeout_ms, 100);
    let pool_size = raw.pool_size.unwrap_or(4);
    if !(1..=MAX_KV_POOL).contains(&pool_size) {
        ctx.problem(
            "plugins.kv.pool_size",
            format!("must be between 1 and {MAX_KV_POOL}, got {pool_size}"),
        );
    }
    Some(KvBackend::Redis(RedisKvConfig {
        url: url?,
        key_prefix: raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| "switchyard:".to_owned()),
        connect_timeout: connect_timeout?,
        command_timeout: command_timeout?,
        pool_size: usize::try_from(pool_size)
            .ok()
            .filter(|n| (1..=MAX_KV_POOL as usize).contains(n))?,
    }))
}

/// `$XDG_CACHE_HOME/switchyard/wasmtime`, else `$HOME/.cache/switchyard/wasmtime`; with
/// neither set there is no default place, and components are compiled at every start.
fn default_compile_cache(ctx: &Ctx<'_>) -> Option<PathBuf> {
    let base = match ctx
        .env
        .var("XDG_CACHE_HOME")
        .filter(|v| Path::new(v).is_absolute())
    {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(ctx.env.var("HOME").filter(|v| Path::new(v).is_absolute())?)
            .join(".cache"),
    };
    Some(base.join("switchyard").join("wasmtime"))
}

fn plugin_entry(
    ctx: &mut Ctx<'_>,
    path: &str,
    index: usize,
    raw: RawPluginEntry,
) -> Option<PluginEntry> {
    let name = match raw.name {
        None => {
            ctx.problem(&format!("{path}.name"), "required");
            None
        }
        Some(n) if n.trim().is_empty() => {
            ctx.problem(&format!("{path}.name"), "must not be empty");
            None
        }
        Some(n) => Some(n),
    };
    let file = match raw.file {
        Some(f) if f.trim().is_empty() => {
            ctx.problem(&format!("{path}.file"), "must not be empty");
            None
        }
        Some(f) => Some(f),
        None => name.as_ref().map(|n| format!("{n}.wasm")),
    };
    let on_error = match raw.on_error.as_deref() {
        None | Some("fail_open") => Some(OnError::FailOpen),
        Some("fail_closed") => Some(OnError::FailClosed),
        Some(other) => {
            ctx.problem(
                &format!("{path}.on_error"),
                format!("unknown value {other:?}; expected \"fail_open\" or \"fail_closed\""),
            );
            None
        }
    };
    let deadline_ms = raw.deadline_ms.unwrap_or(10);
    ctx.positive(&format!("{path}.deadline_ms"), deadline_ms);
    let mib = raw.memory_limit_mib.unwrap_or(64);
    let memory_limit_bytes = if ctx.positive(&format!("{path}.memory_limit_mib"), mib) {
        match mib
            .checked_mul(1024 * 1024)
            .and_then(|b| usize::try_from(b).ok())
        {
            Some(b) => Some(b),
            None => {
                ctx.problem(
                    &format!("{path}.memory_limit_mib"),
                    format!("{mib} is too large"),
                );
                None
            }
        }
    } else {
        None
    };
    let config_json = match raw.config {
        None | Some(serde_json::Value::Null) => "{}".to_string(),
        Some(v) => v.to_string(),
    };
    Some(PluginEntry {
        name: name?,
        file: file?,
        order: raw.order.unwrap_or(index as i64),
        enabled: raw.enabled.unwrap_or(true),
        config_json,
        on_error: on_error?,
        deadline: Duration::from_millis(deadline_ms),
        memory_limit_bytes: memory_limit_bytes?,
        fresh_instance_after: raw.fresh_instance_after.unwrap_or(0),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn empty_env() -> HashMap<String, String> {
        HashMap::new()
    }

    fn invalid_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/config/invalid")
    }

    #[test]
    fn golden_invalid_configs() {
        let dir = invalid_dir();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 9,
            "expected golden files in {}",
            dir.display()
        );
        let mut failures = Vec::new();
        for json in &files {
            let file_name = json.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(json).unwrap();
            let expected_path = json.with_extension("expected");
            let expected = std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
            let got = match parse(&text, &file_name, &dir, &empty_env()) {
                Ok(_) => "<no error>".to_string(),
                Err(e) => e.to_string(),
            };
            if got.trim_end() != expected.trim_end() {
                failures.push(format!(
                    "{file_name}:\n--- expected\n{}\n--- got\n{}",
                    expected.trim_end(),
                    got.trim_end()
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn env_set_resolves_key() {
        let env: HashMap<String, String> =
            [("OPENAI_API_KEY".to_string(), "sk-test".to_string())].into();
        let text = r#"{"providers": {"openai": {"keys": [{"value": "env.OPENAI_API_KEY"}]}}}"#;
        let (config, warnings) = Config::from_json(text, Path::new("/etc/sy"), &env).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let p = &config.providers[0];
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.keys[0].value.expose(), "sk-test");
        assert!(p.missing_env.is_empty());
    }

    #[test]
    fn env_unset_leaves_key_out_with_warning() {
        let text = r#"{"providers": {"openai": {"keys": [
            {"value": "sk-literal", "weight": 2},
            {"value": "env.OPENAI_API_KEY"}
        ]}}}"#;
        let (config, warnings) = Config::from_json(text, Path::new("."), &empty_env()).unwrap();
        assert_eq!(
            warnings,
            vec![
                "providers.openai.keys[1].value: environment variable OPENAI_API_KEY is not set; key left out"
            ]
        );
        let p = &config.providers[0];
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.keys[0].value.expose(), "sk-literal");
        assert_eq!(p.keys[0].weight, 2.0);
        assert_eq!(p.missing_env, vec!["OPENAI_API_KEY".to_string()]);
    }

    #[test]
    fn defaults() {
        let text = r#"{"providers": {"groq": {"keys": [{"value": "k"}]}},
                       "plugins": {"entries": [{"name": "b", "order": 5}, {"name": "a"}]}}"#;
        let (c, warnings) = Config::from_json(text, Path::new("/srv/sy"), &empty_env()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.client.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.client.initial_pool_size, 5000);
        assert!(!c.client.drop_excess_requests);
        assert_eq!(c.client.max_request_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.client.queue_timeout, None);
        assert_eq!(c.client.shutdown_timeout, Duration::from_secs(30));
        let p = &c.providers[0];
        assert_eq!(p.name, "groq");
        assert_eq!(p.kind, ProviderKind::Groq);
        assert_eq!(p.network.base_url, "https://api.groq.com/openai/v1");
        assert_eq!(p.network.request_timeout, Duration::from_secs(30));
        assert_eq!(p.network.stream_idle_timeout, Duration::from_secs(30));
        assert_eq!(p.network.max_retries, 0);
        assert_eq!(p.network.retry_backoff_initial, Duration::from_millis(500));
        assert_eq!(p.network.retry_backoff_max, Duration::from_millis(5000));
        assert!(p.network.extra_headers.is_empty());
        assert_eq!((p.concurrency, p.buffer_size), (1000, 5000));
        assert!(p.proxy.is_none() && p.azure().is_none());
        assert_eq!(p.anthropic_version, "2023-06-01");
        assert_eq!(p.keys[0].weight, 1.0);
        let pl = &c.plugins;
        assert_eq!(pl.directory, Path::new("/srv/sy/plugins/build"));
        assert!(pl.watch);
        assert_eq!(pl.debounce, Duration::from_millis(200));
        assert_eq!(pl.max_instances, 64);
        // Sorted by order: "a" has its position (1), "b" has 5.
        let names: Vec<_> = pl.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = &pl.entries[0];
        assert_eq!(a.file, "a.wasm");
        assert_eq!(a.order, 1);
        assert!(a.enabled);
        assert_eq!(a.config_json, "{}");
        assert_eq!(a.on_error, OnError::FailOpen);
        assert_eq!(a.deadline, Duration::from_millis(10));
        assert_eq!(a.memory_limit_bytes, 64 * 1024 * 1024);
        assert_eq!(a.fresh_instance_after, 0);
    }

    #[test]
    fn full_example_parses() {
        let text = r#"{
          "client": {"listen": "0.0.0.0:9000", "queue_timeout_in_seconds": 5, "drop_excess_requests": true},
          "providers": {
            "openai": {"keys": [{"value": "sk", "models": ["gpt-4o"], "weight": 0.5}],
                       "network_config": {"base_url": "https://proxy.example/v1/", "extra_headers": {"X-Org": "a"},
                                          "max_retries": 2, "retry_backoff_initial": 100, "retry_backoff_max": 1000},
                       "concurrency_and_buffer_size": {"concurrency": 10, "buffer_size": 20},
                       "proxy_config": {"type": "socks5", "url": "socks5://127.0.0.1:1080", "username": "u", "password": "p"}},
            "azure": {"keys": [{"value": "az"}], "meta_config": {"endpoint": "https://x.openai.azure.com/", "deployments": {"gpt-4o": "my-dep"}}},
            "my-vllm": {"type": "custom", "network_config": {"base_url": "http://127.0.0.1:8000/v1"}}
          },
          "plugins": {"directory": "/abs/plugins",
                      "entries": [{"name": "redact", "config": {"x": 1}, "on_error": "fail_closed", "memory_limit_mib": 1}]}
        }"#;
        let (c, warnings) = Config::from_json(text, Path::new("/etc/sy"), &empty_env()).unwrap();
        // Listening beyond loopback without virtual keys is worth a warning, and the only one.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("client.listen: 0.0.0.0:9000 is reachable"));
        assert_eq!(c.client.queue_timeout, Some(Duration::from_secs(5)));
        let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["openai", "azure", "my-vllm"]);
        let o = &c.providers[0];
        assert_eq!(o.network.base_url, "https://proxy.example/v1");
        assert_eq!(o.network.extra_headers[0].0.as_str(), "x-org");
        let proxy = o.proxy.as_ref().unwrap();
        assert_eq!(proxy.kind, ProxyKind::Socks5);
        assert_eq!(format!("{:?}", proxy.password), "Some(*****)");
        let az = &c.providers[1];
        assert_eq!(az.network.base_url, "https://x.openai.azure.com");
        let azc = az.azure().unwrap();
        assert_eq!(azc.api_version, "2024-10-21");
        assert_eq!(azc.deployments["gpt-4o"], "my-dep");
        let v = &c.providers[2];
        assert_eq!(v.kind, ProviderKind::Custom);
        assert!(v.keys.is_empty() && !v.requires_key());
        assert_eq!(c.plugins.directory, Path::new("/abs/plugins"));
        let e = &c.plugins.entries[0];
        assert_eq!(e.config_json, r#"{"x":1}"#);
        assert_eq!(e.on_error, OnError::FailClosed);
        assert_eq!(e.memory_limit_bytes, 1024 * 1024);
    }

    #[test]
    fn key_with_empty_models_serves_every_model() {
        let text = r#"{"providers": {"openai": {"keys": [{"value": "k", "models": []}]}}}"#;
        let (c, _) = Config::from_json(text, Path::new("."), &empty_env()).unwrap();
        let k = &c.providers[0].keys[0];
        assert!(k.models.is_empty());
        assert!(k.serves("gpt-4o") && k.serves("anything"));
    }

    #[test]
    fn secret_debug_is_masked() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "*****");
        assert_eq!(format!("{s}"), "*****");
        let k = KeyConfig {
            value: s,
            models: vec![],
            weight: 1.0,
        };
        assert!(!format!("{k:?}").contains("very-secret"));
    }

    #[test]
    fn error_display_one_problem_per_line() {
        let text = r#"{"providers": {"openai": {"keys": [{"value": "k", "weight": 0}],
            "concurrency_and_buffer_size": {"concurrency": 0}}}}"#;
        let e = Config::from_json(text, Path::new("."), &empty_env()).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert_eq!(
            e.to_string(),
            "config.json: providers.openai.keys[0].weight: must be > 0, got 0\n\
             config.json: providers.openai.concurrency_and_buffer_size.concurrency: must be > 0, got 0"
        );
    }

    #[test]
    fn root_config_json_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.json");
        let (c, warnings) = Config::load(&path, &empty_env()).unwrap();
        assert!(
            warnings.iter().all(|w| w.contains("is not set")),
            "{warnings:?}"
        );
        let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["openai", "anthropic", "groq", "demo"]);
        let demo = &c.providers[3];
        assert_eq!(demo.kind, ProviderKind::Custom);
        assert_eq!(demo.network.base_url, "http://127.0.0.1:8090/v1");
        let plugins: Vec<_> = c.plugins.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(plugins, ["metrics", "rate-limit", "redact"]);
    }
}
