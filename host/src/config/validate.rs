//! STUB: validation of the raw config into runtime types.

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

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
#[error("invalid config")]
pub struct ConfigError {
    pub problems: Vec<String>,
}
