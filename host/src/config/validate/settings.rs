//! `providers.<name>.meta_config`: one typed section per provider kind, read once the kind
//! is known so that an unknown field is reported with the kind's own field names, and
//! secrets in it resolve through `env.NAME` like key values do.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Ctx, Resolved};
use crate::config::raw::{RawAzureMeta, RawBedrockMeta, RawVertexMeta};
use crate::config::{
    AzureConfig, BedrockConfig, ProviderKind, ProviderSettings, Secret, ServiceAccount,
    VertexConfig,
};

/// The settings of a provider of `kind` from its raw `meta_config`. `None` when they are
/// unusable (the problems are recorded). Variables of secrets that are unset go to
/// `missing_env`: the provider is then unavailable, and says which to set.
pub(super) fn settings(
    ctx: &mut Ctx<'_>,
    path: &str,
    kind: ProviderKind,
    raw: Option<&Value>,
    missing_env: &mut Vec<String>,
) -> Option<ProviderSettings> {
    let mpath = format!("{path}.meta_config");
    match kind {
        ProviderKind::Azure => {
            let meta: RawAzureMeta = typed(ctx, &mpath, raw)?;
            azure(ctx, &mpath, meta).map(ProviderSettings::Azure)
        }
        ProviderKind::Bedrock => {
            let meta: RawBedrockMeta = typed(ctx, &mpath, raw)?;
            bedrock(ctx, &mpath, meta, missing_env).map(ProviderSettings::Bedrock)
        }
        ProviderKind::Vertex => {
            let meta: RawVertexMeta = typed(ctx, &mpath, raw)?;
            vertex(ctx, &mpath, meta, missing_env).map(ProviderSettings::Vertex)
        }
        _ => {
            if raw.is_some_and(|v| !v.is_null()) {
                ctx.problem(
                    &mpath,
                    format!(
                        "not used by {} providers (only azure, bedrock and vertex have one)",
                        kind.as_str()
                    ),
                );
                return None;
            }
            Some(ProviderSettings::None)
        }
    }
}

/// `raw` read as `T`; a missing section reads as `T::default()`.
fn typed<T: DeserializeOwned + Default>(
    ctx: &mut Ctx<'_>,
    mpath: &str,
    raw: Option<&Value>,
) -> Option<T> {
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Some(T::default());
    };
    match serde_path_to_error::deserialize::<_, T>(raw.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.inner().to_string().replace('`', "\"");
            let at = e.path().to_string();
            // An unknown field's path ends with the field; name its parent.
            let at = match inner
                .strip_prefix("unknown field \"")
                .and_then(|rest| rest.split('"').next())
            {
                Some(field) if at == field => String::new(),
                _ if at == "." => String::new(),
                _ => format!(".{at}"),
            };
            ctx.problem(&format!("{mpath}{at}"), inner);
            None
        }
    }
}

fn required(ctx: &mut Ctx<'_>, path: &str, value: Option<String>, example: &str) -> Option<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Some(v),
        Some(_) => {
            ctx.problem(path, "must not be empty");
            None
        }
        None => {
            ctx.problem(path, format!("required (e.g. {example})"));
            None
        }
    }
}

/// A secret that may be `env.NAME`. Ok(None): its variable is unset (recorded in
/// `missing_env`, with a warning). Err: the value is malformed (recorded as a problem).
fn secret(
    ctx: &mut Ctx<'_>,
    path: &str,
    value: &str,
    missing_env: &mut Vec<String>,
) -> Result<Option<String>, ()> {
    match ctx.resolve(path, value)? {
        Resolved::Value(v) => Ok(Some(v)),
        Resolved::Missing(name, why) => {
            ctx.warn(
                path,
                format!("environment variable {name} {why}; the provider is unavailable"),
            );
            if !missing_env.contains(&name) {
                missing_env.push(name);
            }
            Ok(None)
        }
    }
}

fn azure(ctx: &mut Ctx<'_>, mpath: &str, meta: RawAzureMeta) -> Option<AzureConfig> {
    let epath = format!("{mpath}.endpoint");
    let endpoint = match meta.endpoint.as_deref() {
        None => {
            ctx.problem(
                &epath,
                "required for azure providers (e.g. \"https://<resource>.openai.azure.com\")",
            );
            None
        }
        Some(e) => ctx.http_url(&epath, e),
    };
    let api_version = meta.api_version.unwrap_or_else(|| "2024-10-21".to_string());
    if api_version.is_empty() {
        ctx.problem(&format!("{mpath}.api_version"), "must not be empty");
    }
    let mut deployments = HashMap::new();
    for (model, dep) in meta.deployments.unwrap_or_default().0 {
        if dep.is_empty() {
            ctx.problem(&format!("{mpath}.deployments.{model}"), "must not be empty");
        }
        deployments.insert(model, dep);
    }
    Some(AzureConfig {
        endpoint: endpoint?,
        api_version,
        deployments,
    })
}

fn bedrock(
    ctx: &mut Ctx<'_>,
    mpath: &str,
    meta: RawBedrockMeta,
    missing_env: &mut Vec<String>,
) -> Option<BedrockConfig> {
    let rpath = format!("{mpath}.region");
    let region = required(ctx, &rpath, meta.region, "\"us-east-1\"");
    if let Some(r) = &region {
        let valid = r
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            ctx.problem(&rpath, format!("{r:?} is not an AWS region name"));
        }
    }
    let spath = format!("{mpath}.secret_access_key");
    let secret_access_key = match meta.secret_access_key.as_deref() {
        None => {
            ctx.problem(
                &spath,
                "required: the AWS secret access key of the keys' access key ids (or \"env.AWS_SECRET_ACCESS_KEY\")",
            );
            return None;
        }
        Some(v) => secret(ctx, &spath, v, missing_env).ok()?,
    };
    let tpath = format!("{mpath}.session_token");
    let session_token = match meta.session_token.as_deref() {
        None => None,
        Some(v) => secret(ctx, &tpath, v, missing_env).ok()?,
    };
    let arn = meta.arn.filter(|a| !a.is_empty());
    if let Some(a) = &arn {
        if !a.starts_with("arn:") {
            ctx.problem(
                &format!("{mpath}.arn"),
                format!("{a:?} is not an ARN (arn:aws:bedrock:<region>:<account>:...)"),
            );
        }
    }
    Some(BedrockConfig {
        region: region?,
        secret_access_key: secret_access_key.map(Secret::new),
        session_token: session_token.map(Secret::new),
        arn: arn.map(|a| a.trim_end_matches('/').to_string()),
    })
}

fn vertex(
    ctx: &mut Ctx<'_>,
    mpath: &str,
    meta: RawVertexMeta,
    missing_env: &mut Vec<String>,
) -> Option<VertexConfig> {
    let cpath = format!("{mpath}.auth_credentials");
    let credentials = match meta.auth_credentials {
        None | Some(Value::Null) => {
            ctx.problem(
                &cpath,
                "required: the service-account JSON key (an object, a JSON string, or \"env.NAME\")",
            );
            return None;
        }
        Some(Value::String(s)) if s.starts_with("env.") => {
            match secret(ctx, &cpath, &s, missing_env).ok()? {
                Some(text) => Some(service_account_text(ctx, &cpath, &text)?),
                None => None,
            }
        }
        Some(Value::String(s)) => Some(service_account_text(ctx, &cpath, &s)?),
        Some(Value::Object(o)) => Some(service_account(ctx, &cpath, &Value::Object(o))?),
        Some(_) => {
            ctx.problem(
                &cpath,
                "must be the service-account JSON (an object or a string) or \"env.NAME\"",
            );
            return None;
        }
    };
    let ppath = format!("{mpath}.project_id");
    let project_id = match meta.project_id.filter(|p| !p.is_empty()) {
        Some(p) => Some(p),
        None => match credentials.as_ref().and_then(|c| c.project_id.clone()) {
            Some(p) => Some(p),
            // With the credentials' variable unset the project may come from them later.
            None if credentials.is_none() => Some(String::new()),
            None => {
                ctx.problem(&ppath, "required (the service account names no project_id)");
                None
            }
        },
    };
    let location = meta
        .location
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "us-central1".to_string());
    if !location
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        ctx.problem(
            &format!("{mpath}.location"),
            format!(
                "{location:?} is not a Google Cloud location (e.g. \"us-central1\" or \"global\")"
            ),
        );
    }
    Some(VertexConfig {
        project_id: project_id?,
        location,
        credentials,
    })
}

fn service_account_text(ctx: &mut Ctx<'_>, path: &str, text: &str) -> Option<ServiceAccount> {
    match super::service_account::parse_service_account(text) {
        Ok(sa) => Some(sa),
        Err(problem) => {
            ctx.problem(path, format!("the service-account key: {problem}"));
            None
        }
    }
}

fn service_account(ctx: &mut Ctx<'_>, path: &str, v: &Value) -> Option<ServiceAccount> {
    service_account_text(ctx, path, &v.to_string())
}
