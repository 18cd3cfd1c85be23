//! Config parsing whose errors name the field (`rules[0].capacity: invalid type: ...`), which
//! is what the gateway shows on `/health` when `init` refuses a config.

use serde::de::DeserializeOwned;

/// Parse the config JSON given to [`Plugin::init`](crate::Plugin::init) into `T`. An empty
/// string counts as `{}`. Use `#[serde(deny_unknown_fields)]` on `T` so typos are reported.
pub fn parse<T: DeserializeOwned>(config: &str) -> Result<T, String> {
    let config = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let de = &mut serde_json::Deserializer::from_str(config);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("config: {inner}")
        } else {
            format!("config.{path}: {inner}")
        }
    })
}
