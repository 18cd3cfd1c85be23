//! `client.virtual_keys`, `client.admin_listen`, `client.admin_token`: every problem named
//! by its path, secrets resolved through the injectable environment and hashed at once.

use std::net::SocketAddr;

use super::super::access::{
    AccessConfig, BudgetPeriod, ModelPattern, SecretDigest, TokenBudget, VirtualKey,
};
use super::super::raw::{RawClient, RawVirtualKey};
use super::{parse_listen, Ctx, Resolved};

/// Longest key name: it becomes a metric label and a plugin's `client-key`.
const MAX_NAME_LEN: usize = 64;
/// Secrets shorter than this draw a warning: a virtual key guards provider spend.
const SHORT_SECRET: usize = 20;

/// The access section of `raw`; `providers` are the configured provider names, which
/// `models` patterns must name.
pub(super) fn access(
    ctx: &mut Ctx<'_>,
    raw: &RawClient,
    listen: SocketAddr,
    providers: &[&str],
) -> AccessConfig {
    let virtual_keys = raw.virtual_keys.as_ref().map(|keys| {
        if keys.is_empty() {
            ctx.warn(
                "client.virtual_keys",
                "no keys listed: every request will be refused with 401",
            );
        }
        let mut out: Vec<VirtualKey> = Vec::with_capacity(keys.len());
        // Every entry's name and secret, valid or not, so duplicates are found either way.
        let mut names: Vec<(&str, usize)> = Vec::new();
        let mut secrets: Vec<(SecretDigest, usize)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let path = format!("client.virtual_keys[{i}]");
            let checked = virtual_key(ctx, &path, k, providers);
            let mut duplicate = false;
            if let Some(name) = k.name.as_deref() {
                if let Some((_, j)) = names.iter().find(|(n, _)| *n == name) {
                    ctx.problem(
                        &format!("{path}.name"),
                        format!("{name:?} is already the name of client.virtual_keys[{j}]"),
                    );
                    duplicate = true;
                }
                names.push((name, i));
            }
            if let Some(digest) = checked.digest {
                if let Some((_, j)) = secrets.iter().find(|(d, _)| d.ct_eq(&digest)) {
                    // Which key a request belongs to must be unambiguous.
                    let other = keys[*j].name.as_deref().unwrap_or("");
                    ctx.problem(
                        &format!("{path}.secret"),
                        format!(
                            "is the same secret as client.virtual_keys[{j}] ({other:?}); each key needs its own"
                        ),
                    );
                    duplicate = true;
                }
                secrets.push((digest, i));
            }
            if let Some(key) = checked.key.filter(|_| !duplicate) {
                out.push(key);
            }
        }
        out
    });
    if virtual_keys.is_none() && !listen.ip().is_loopback() {
        ctx.warn(
            "client.listen",
            format!(
                "{listen} is reachable beyond this machine and client.virtual_keys is not set: anyone who reaches it can spend the providers' keys"
            ),
        );
    }

    let admin_listen = raw
        .admin_listen
        .as_deref()
        .and_then(|s| match parse_listen(s) {
            Some(addr) if addr == listen && addr.port() != 0 => {
                ctx.problem(
                    "client.admin_listen",
                    format!("{s:?} is client.listen itself; give the admin side its own address"),
                );
                None
            }
            Some(addr) => Some(addr),
            None => {
                ctx.problem(
                    "client.admin_listen",
                    format!("{s:?} is not an address and port, e.g. \"127.0.0.1:9090\""),
                );
                None
            }
        });

    let admin_token = raw.admin_token.as_deref().and_then(|v| {
        match ctx.resolve("client.admin_token", v) {
            Ok(Resolved::Value(token)) => {
                if token.len() < SHORT_SECRET {
                    ctx.warn(
                        "client.admin_token",
                        format!(
                            "is short ({} characters); use at least 32 random characters",
                            token.len()
                        ),
                    );
                }
                Some(SecretDigest::of(token.as_bytes()))
            }
            // An admin token nobody can know would lock operators out silently, and no
            // token would open the admin side: refuse the file instead.
            Ok(Resolved::Missing(name, why)) => {
                ctx.problem(
                    "client.admin_token",
                    format!("environment variable {name} {why}"),
                );
                None
            }
            Err(()) => None,
        }
    });

    AccessConfig {
        virtual_keys,
        admin_listen,
        admin_token,
    }
}

/// One entry checked: its secret's digest (for the duplicate check) and the key when the
/// entry is valid and its secret resolved.
struct Checked {
    digest: Option<SecretDigest>,
    key: Option<VirtualKey>,
}

fn virtual_key(ctx: &mut Ctx<'_>, path: &str, raw: &RawVirtualKey, providers: &[&str]) -> Checked {
    let before = ctx.problems.len();
    let name = match raw.name.as_deref() {
        None => {
            ctx.problem(&format!("{path}.name"), "is required");
            String::new()
        }
        Some(n) if n.is_empty() || n.len() > MAX_NAME_LEN || !n.chars().all(name_char) => {
            ctx.problem(
                &format!("{path}.name"),
                format!(
                    "{n:?} is not a key name: 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
                ),
            );
            String::new()
        }
        Some(n) => n.to_owned(),
    };
    let spath = format!("{path}.secret");
    let digest = match raw.secret.as_deref() {
        None => {
            ctx.problem(&spath, "is required (the key itself, or \"env.NAME\")");
            None
        }
        Some(v) => match ctx.resolve(&spath, v) {
            Ok(Resolved::Value(secret)) => {
                if secret.len() < SHORT_SECRET {
                    ctx.warn(
                        &spath,
                        format!(
                            "is short ({} characters); use at least 32 random characters",
                            secret.len()
                        ),
                    );
                }
                Some(SecretDigest::of(secret.as_bytes()))
            }
            Ok(Resolved::Missing(var, why)) => {
                // Like a provider key: left out, so its clients get 401 until it is set.
                ctx.warn(
                    &spath,
                    format!("environment variable {var} {why}; key {name:?} is left out"),
                );
                None
            }
            Err(()) => None,
        },
    };
    let mpath = format!("{path}.models");
    let models = match &raw.models {
        None => {
            ctx.problem(
                &mpath,
                "is required: the models this key may use (\"provider/model\", \"provider/*\", or \"*\" for every model)",
            );
            Vec::new()
        }
        Some(list) => {
            if list.is_empty() {
                ctx.warn(&mpath, "is empty: this key may use no model");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, m)| pattern(ctx, &format!("{mpath}[{i}]"), m, providers))
                .collect()
        }
    };
    let requests_per_minute = raw
        .requests_per_minute
        .filter(|&n| ctx.positive(&format!("{path}.requests_per_minute"), n));
    let tokens_per_minute = raw
        .tokens_per_minute
        .filter(|&n| ctx.positive(&format!("{path}.tokens_per_minute"), n));
    let token_budget = raw.token_budget.as_ref().and_then(|b| {
        let bpath = format!("{path}.token_budget");
        let tokens = match b.tokens {
            None => {
                ctx.problem(&format!("{bpath}.tokens"), "is required");
                None
            }
            Some(n) => ctx.positive(&format!("{bpath}.tokens"), n).then_some(n),
        };
        let period = match b.period.as_deref() {
            Some("day") => Some(BudgetPeriod::Day),
            Some("month") => Some(BudgetPeriod::Month),
            Some(other) => {
                ctx.problem(
                    &format!("{bpath}.period"),
                    format!("{other:?} is not a period: \"day\" or \"month\""),
                );
                None
            }
            None => {
                ctx.problem(
                    &format!("{bpath}.period"),
                    "is required: \"day\" or \"month\"",
                );
                None
            }
        };
        Some(TokenBudget {
            tokens: tokens?,
            period: period?,
        })
    });
    let key = match &digest {
        Some(d) if ctx.problems.len() == before => Some(VirtualKey {
            name,
            digest: d.clone(),
            models,
            requests_per_minute,
            tokens_per_minute,
            token_budget,
        }),
        _ => None,
    };
    Checked { digest, key }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn pattern(ctx: &mut Ctx<'_>, path: &str, value: &str, providers: &[&str]) -> Option<ModelPattern> {
    if value == "*" {
        return Some(ModelPattern::Any);
    }
    let Some((provider, model)) = value
        .split_once('/')
        .filter(|(p, m)| !p.is_empty() && !m.is_empty())
    else {
        ctx.problem(
            path,
            format!("{value:?} is not \"provider/model\", \"provider/*\" or \"*\""),
        );
        return None;
    };
    if !providers.contains(&provider) {
        ctx.problem(
            path,
            format!(
                "{value:?} names no configured provider (configured: {})",
                if providers.is_empty() {
                    "none".to_owned()
                } else {
                    providers.join(", ")
                }
            ),
        );
        return None;
    }
    Some(if model == "*" {
        ModelPattern::Provider(provider.to_owned())
    } else {
        ModelPattern::Exact {
            provider: provider.to_owned(),
            model: model.to_owned(),
        }
    })
}
