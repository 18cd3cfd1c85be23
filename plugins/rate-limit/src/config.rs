//! The plugin's config: raw serde structs, then validation into [`Rule`]s. Every error names
//! the field (`config.rules[0].refill_per_second: ...`).

use serde::Deserialize;
use switchyard_sdk::Request;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(default, rename = "match")]
    matches: RawMatch,
    #[serde(default)]
    per: Option<OneOrMany>,
    capacity: f64,
    refill_per_second: f64,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    allow_fallbacks: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    provider: Option<String>,
    model: Option<String>,
    client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// What a bucket is kept per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Per {
    /// One bucket for every request the rule matches.
    Global,
    /// The caller's `client-key` (`ck-<hex>` of its bearer token, or `anonymous`).
    ClientKey,
    /// The target provider.
    Provider,
    /// The target provider and model.
    Model,
    /// The request body's `user` field (requests without one share a bucket).
    User,
    /// A client header, lower case (requests without it share a bucket).
    Header(String),
    /// A key of the request body's `metadata` (requests without it share a bucket).
    Metadata(String),
}

impl Per {
    fn parse(s: &str) -> Option<Per> {
        Some(match s {
            "global" => Per::Global,
            "client_key" => Per::ClientKey,
            "provider" => Per::Provider,
            "model" => Per::Model,
            "user" => Per::User,
            _ => {
                if let Some(h) = s.strip_prefix("header:").filter(|h| !h.is_empty()) {
                    Per::Header(h.to_ascii_lowercase())
                } else if let Some(k) = s.strip_prefix("metadata:").filter(|k| !k.is_empty()) {
                    Per::Metadata(k.to_owned())
                } else {
                    return None;
                }
            }
        })
    }

    /// This dimension's part of the bucket key for `req`.
    pub fn value<'a>(&self, req: &'a Request) -> &'a str {
        match self {
            Per::Global => "*",
            Per::ClientKey => &req.client_key,
            Per::Provider => &req.provider,
            Per::Model => &req.model,
            Per::User => req.params.user.as_deref().unwrap_or(""),
            Per::Header(h) => req.header(h).unwrap_or(""),
            Per::Metadata(k) => req.metadata(k).unwrap_or(""),
        }
    }

    fn describe(&self) -> String {
        match self {
            Per::Global => "in total".into(),
            Per::ClientKey => "per client key".into(),
            Per::Provider => "per provider".into(),
            Per::Model => "per model".into(),
            Per::User => "per user".into(),
            Per::Header(h) => format!("per {h} header"),
            Per::Metadata(k) => format!("per metadata {k}"),
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub client_key: Option<String>,
    pub per: Vec<Per>,
    pub capacity: f64,
    pub refill_per_second: f64,
    pub cost: f64,
    pub allow_fallbacks: bool,
    /// For messages: "10 requests per client key, 1 more every 1 s".
    pub summary: String,
}

/// `pattern` with `*` matching any run of characters (including none).
pub fn glob(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty();
    };
    for p in parts {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Rule {
    pub fn matches(&self, req: &Request) -> bool {
        let m = |p: &Option<String>, v: &str| p.as_deref().is_none_or(|p| glob(p, v));
        m(&self.provider, &req.provider)
            && m(&self.model, &req.model)
            && m(&self.client_key, &req.client_key)
    }

    /// The kv key of the bucket `req` draws from.
    pub fn bucket_key(&self, req: &Request) -> String {
        let mut k = format!("bucket/{}", self.name);
        for p in &self.per {
            k.push('/');
            // Escape the separator so values cannot collide across dimensions.
            for c in p.value(req).chars() {
                if c == '/' || c == '%' {
                    k.push_str(if c == '/' { "%2F" } else { "%25" });
                } else {
                    k.push(c);
                }
            }
        }
        k
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn positive(x: f64, path: &str) -> Result<f64, String> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("config.{path}: must be a number > 0, got {x}"))
    }
}

/// Parse and validate the config JSON.
pub fn parse(json: &str) -> Result<Vec<Rule>, String> {
    let raw: RawConfig = switchyard_sdk::config::parse(json)?;
    if raw.rules.is_empty() {
        return Err("config.rules: at least one rule is needed".into());
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.into_iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        let name = r.name.unwrap_or_else(|| format!("rule{i}"));
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "config.{}: must be non-empty and contain no '/'",
                at("name")
            ));
        }
        if rules.iter().any(|x| x.name == name) {
            return Err(format!(
                "config.{}: {name:?} is used by an earlier rule",
                at("name")
            ));
        }
        let per_names = match r.per {
            None => vec!["client_key".to_owned()],
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v,
        };
        if per_names.is_empty() {
            return Err(format!("config.{}: must not be empty", at("per")));
        }
        let mut per = Vec::new();
        for (j, s) in per_names.iter().enumerate() {
            let p = Per::parse(s).ok_or_else(|| {
                format!(
                    "config.{}[{j}]: unknown {s:?}; expected global, client_key, provider, model, user, header:<name> or metadata:<key>",
                    at("per")
                )
            })?;
            per.push(p);
        }
        let capacity = positive(r.capacity, &at("capacity"))?;
        let refill_per_second = positive(r.refill_per_second, &at("refill_per_second"))?;
        let cost = positive(r.cost.unwrap_or(1.0), &at("cost"))?;
        if cost > capacity {
            return Err(format!(
                "config.{}: {cost} is more than capacity {capacity}; no request could pass",
                at("cost")
            ));
        }
        let every = 1.0 / refill_per_second;
        let summary = format!(
            "{} requests {}, 1 more every {} s",
            fmt_num(capacity / cost),
            per.iter()
                .map(Per::describe)
                .collect::<Vec<_>>()
                .join(" and "),
            fmt_num((every * cost * 1000.0).round() / 1000.0),
        );
        rules.push(Rule {
            name,
            provider: r.matches.provider,
            model: r.matches.model,
            client_key: r.matches.client_key,
            per,
            capacity,
            refill_per_second,
            cost,
            allow_fallbacks: r.allow_fallbacks,
            summary,
        });
    }
    Ok(rules)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use switchyard_sdk::testing;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "gpt-4o"));
        assert!(glob("gpt-4*", "gpt-4o"));
        assert!(!glob("gpt-4*", "gpt-3.5"));
        assert!(glob("*-mini", "gpt-4o-mini"));
        assert!(glob("gpt*mini", "gpt-4o-mini"));
        assert!(!glob("gpt*mini*x", "gpt-4o-mini"));
        assert!(glob("openai", "openai"));
        assert!(!glob("openai", "openai2"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn defaults_and_keys() {
        let rules =
            parse(r#"{"rules":[{"match":{},"capacity":60,"refill_per_second":1}]}"#).unwrap();
        let r = &rules[0];
        assert_eq!(r.name, "rule0");
        assert_eq!(r.per, [Per::ClientKey]);
        assert_eq!(r.cost, 1.0);
        assert_eq!(r.summary, "60 requests per client key, 1 more every 1 s");
        let req = testing::request("openai", "gpt-4o", &[("user", "hi")]);
        assert!(r.matches(&req));
        assert_eq!(r.bucket_key(&req), "bucket/rule0/ck-0123456789abcdef");

        let rules = parse(
            r#"{"rules":[{"name":"oa","match":{"provider":"openai","model":"gpt-4*"},
                "per":["model","header:X-Team"],"capacity":5,"refill_per_second":0.5}]}"#,
        )
        .unwrap();
        let r = &rules[0];
        assert!(r.matches(&req));
        assert!(!r.matches(&testing::request("groq", "gpt-4o", &[])));
        assert_eq!(r.bucket_key(&req), "bucket/oa/gpt-4o/");
        assert_eq!(
            r.summary,
            "5 requests per model and per x-team header, 1 more every 2 s"
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            ("", "config: missing field `rules`"),
            (r#"{"rules":[]}"#, "config.rules: at least one"),
            (
                r#"{"rules":[{"capacity":1}]}"#,
                "config.rules[0]: missing field `refill_per_second`",
            ),
            (
                r#"{"rules":[{"capacity":1,"refill_per_second":0}]}"#,
                "config.rules[0].refill_per_second: must be a number > 0",
            ),
            (
                r#"{"rules":[{"capacity":-1,"refill_per_second":1}]}"#,
                "config.rules[0].capacity: must be a number > 0",
            ),
            (
                r#"{"rules":[{"capacity":"10","refill_per_second":1}]}"#,
                "config.rules[0].capacity: invalid type",
            ),
            (
                r#"{"rules":[{"capacity":1,"refill_per_second":1},{"capacity":1,"refill_per_second":1,"per":"ip"}]}"#,
                "config.rules[1].per[0]: unknown \"ip\"",
            ),
            (
                r#"{"rules":[{"capacity":1,"refill_per_second":1,"cost":2}]}"#,
                "config.rules[0].cost: 2 is more than capacity",
            ),
            (
                r#"{"rules":[{"capacity":1,"refill_per_second":1,"match":{"modle":"x"}}]}"#,
                "config.rules[0].match.modle: unknown field",
            ),
            (
                r#"{"rules":[{"name":"a","capacity":1,"refill_per_second":1},{"name":"a","capacity":1,"refill_per_second":1}]}"#,
                "config.rules[1].name: \"a\" is used",
            ),
        ];
        for (json, want) in cases {
            let e = parse(json).err().unwrap();
            assert!(e.starts_with(want), "{json}\n got: {e}\nwant: {want}");
        }
    }
}
