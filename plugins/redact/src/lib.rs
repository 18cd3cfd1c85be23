//! Redact plugin: removes personal data and secrets from what goes to providers and what
//! comes back.
//!
//! - pre-hook: message contents (strings and text parts), `prompt` and `input` of the request
//!   body, returned through `continue-with` as a changed `body-json` (the host re-reads the
//!   body, so multi-part contents and images stay as they were).
//! - post-hook: the text of each response choice.
//! - on-chunk: streamed text; a match split over chunks is still caught (see `stream`).
//!
//! Built-in categories, each replaced by a marker: `email` (`[REDACTED_EMAIL]`), `phone`
//! (`+<country> ...` or North-American groupings), `card` (13-19 digits, optionally grouped,
//! Luhn-valid only), `secret` (`sk-...`, `AKIA...`, `ghp_...`, `xoxb-...`, `AIza...`, JWTs,
//! `Bearer <token>`, ...).
//!
//! Config (all optional):
//! ```json
//! {"requests": true, "responses": true,
//!  "categories": ["email", "phone", "card", "secret"],
//!  "custom": [
//!    {"name": "project", "literal": "Project Falcon", "case_insensitive": true},
//!    {"name": "employee_id", "pattern": "EMP-\\d{6}", "replacement": "[EMPLOYEE]"}
//!  ]}
//! ```
//! `custom` entries give exactly one of `literal` or `pattern` (see `pattern` for the small
//! pattern language: `\d \a \w \x \s \.` with `{n}`, `{n,m}`, `+`, `*`, `?`). They match whole
//! words unless `"whole_word": false`; the default replacement is `[REDACTED_<NAME>]`.

use std::borrow::Cow;

use serde::Deserialize;
use switchyard_sdk::{
    export_plugin, ChunkOutput, Hooks, Outcome, Plugin, PostAction, PreAction, Request,
    RequestInfo, StreamChunk,
};

mod body;
mod detect;
mod pattern;
mod redactor;
mod stream;

use detect::Category;
use pattern::Pattern;
use redactor::{Custom, Redactor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    requests: bool,
    responses: bool,
    categories: Vec<Category>,
    custom: Vec<RawCustom>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            requests: true,
            responses: true,
            categories: Category::ALL.to_vec(),
            custom: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustom {
    name: String,
    literal: Option<String>,
    pattern: Option<String>,
    #[serde(default)]
    case_insensitive: bool,
    #[serde(default = "yes")]
    whole_word: bool,
    replacement: Option<String>,
}

fn yes() -> bool {
    true
}

struct Redact {
    hooks: Hooks,
    redactor: Redactor,
}

fn build(c: RawConfig) -> Result<Redact, String> {
    let mut custom = Vec::new();
    for (i, raw) in c.custom.into_iter().enumerate() {
        let at = |f: &str| format!("config.custom[{i}].{f}");
        if raw.name.is_empty()
            || !raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!("{}: must be letters, digits and _", at("name")));
        }
        let pattern = match (&raw.literal, &raw.pattern) {
            (Some(l), None) => Pattern::literal(l, raw.case_insensitive, raw.whole_word)
                .map_err(|e| format!("{}: {e}", at("literal")))?,
            (None, Some(p)) => Pattern::parse(p, raw.case_insensitive, raw.whole_word)
                .map_err(|e| format!("{}: {e}", at("pattern")))?,
            _ => {
                return Err(format!(
                    "config.custom[{i}]: give exactly one of \"literal\" or \"pattern\""
                ))
            }
        };
        let replacement = raw
            .replacement
            .unwrap_or_else(|| format!("[REDACTED_{}]", raw.name.to_ascii_uppercase()));
        custom.push(Custom {
            pattern,
            replacement,
        });
    }
    let mut hooks = Hooks::empty();
    if c.requests {
        hooks |= Hooks::PRE;
    }
    if c.responses {
        hooks |= Hooks::POST | Hooks::CHUNK;
    }
    if hooks.is_empty() {
        return Err(
            "config: \"requests\" and \"responses\" are both false; disable the plugin instead"
                .into(),
        );
    }
    if c.categories.is_empty() && custom.is_empty() {
        return Err(
            "config.categories: empty and no \"custom\" patterns; nothing to redact".into(),
        );
    }
    Ok(Redact {
        hooks,
        redactor: Redactor::new(c.categories, custom),
    })
}

impl Redact {
    fn request(&self, mut req: Request) -> Result<PreAction, String> {
        // `messages` holds every text the body walk below visits (parts joined with "\n",
        // which no pattern spans): a clean request is passed on without parsing the body.
        if req
            .messages
            .iter()
            .all(|m| matches!(self.redactor.redact(&m.text), Cow::Borrowed(_)))
        {
            return Ok(PreAction::Continue);
        }
        // The body is what goes upstream: redact it and leave `messages` as sent, so the host
        // keeps the body's structure (multi-part contents) instead of rewriting contents.
        if let Ok(serde_json::Value::Object(mut body)) =
            serde_json::from_str::<serde_json::Value>(&req.body_json)
        {
            if !body::redact(&self.redactor, &mut body) {
                return Ok(PreAction::Continue);
            }
            req.body_json = serde_json::to_string(&body).map_err(|e| e.to_string())?;
            return Ok(PreAction::ContinueWith(req));
        }
        // No usable body (another host or a test): the typed messages are all there is.
        let mut changed = false;
        for m in &mut req.messages {
            if let Cow::Owned(t) = self.redactor.redact(&m.text) {
                m.text = t;
                changed = true;
            }
        }
        Ok(if changed {
            PreAction::ContinueWith(req)
        } else {
            PreAction::Continue
        })
    }
}

impl Plugin for Redact {
    const HOOKS: Hooks = Hooks::all();

    fn init(config: &str) -> Result<Self, String> {
        build(switchyard_sdk::config::parse(config)?)
    }

    fn hooks(&self) -> Hooks {
        self.hooks
    }

    fn pre_hook(&self, req: Request) -> Result<PreAction, String> {
        self.request(req)
    }

    fn post_hook(&self, _info: RequestInfo, outcome: Outcome) -> Result<PostAction, String> {
        let Outcome::Response(mut r) = outcome else {
            return Ok(PostAction::Keep);
        };
        let mut changed = false;
        for c in &mut r.choices {
            if let Cow::Owned(t) = self.redactor.redact(c) {
                *c = t;
                changed = true;
            }
        }
        // Only `choices` changes: the host writes them into the response body it kept.
        Ok(if changed {
            PostAction::Replace(Outcome::Response(r))
        } else {
            PostAction::Keep
        })
    }

    fn on_chunk(
        &self,
        _info: RequestInfo,
        chunk: StreamChunk,
        state: Vec<u8>,
    ) -> Result<ChunkOutput, String> {
        let (new, state) = stream::on_chunk(&self.redactor, chunk, &state)?;
        Ok(match new {
            Some(c) => ChunkOutput::replace(c, state),
            None => ChunkOutput::keep(state),
        })
    }
}

export_plugin!(Redact);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use switchyard_sdk::testing;

    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (
                r#"{"categories": ["email", "ssn"]}"#,
                "config.categories[1]: unknown variant `ssn`",
            ),
            (
                r#"{"custom": [{"name": "x"}]}"#,
                "config.custom[0]: give exactly one",
            ),
            (
                r#"{"custom": [{"name": "x", "pattern": "\\q"}]}"#,
                "config.custom[0].pattern: unknown escape",
            ),
            (
                r#"{"custom": [{"name": "a b", "literal": "x"}]}"#,
                "config.custom[0].name",
            ),
            (
                r#"{"requests": false, "responses": false}"#,
                "config: \"requests\"",
            ),
            (r#"{"categories": []}"#, "config.categories: empty"),
            (r#"{"request": true}"#, "config.request: unknown field"),
        ];
        for (json, want) in cases {
            let e = Redact::init(json).err().unwrap();
            assert!(e.starts_with(want), "{json}\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn hooks_follow_the_config() {
        assert_eq!(Redact::init("{}").unwrap().hooks(), Hooks::all());
        assert_eq!(
            Redact::init(r#"{"responses": false}"#).unwrap().hooks(),
            Hooks::PRE
        );
        assert_eq!(
            Redact::init(r#"{"requests": false}"#).unwrap().hooks(),
            Hooks::POST | Hooks::CHUNK
        );
    }

    #[test]
    fn pre_hook_rewrites_the_body_only() {
        let p = Redact::init(
            r#"{"custom": [{"name": "project", "literal": "project falcon", "case_insensitive": true}]}"#,
        )
        .unwrap();
        let req = testing::request(
            "openai",
            "gpt-4o",
            &[("user", "I'm jane.doe@example.com on Project Falcon")],
        );
        let PreAction::ContinueWith(new) = p.pre_hook(req.clone()).unwrap() else {
            panic!("expected continue-with");
        };
        assert_eq!(new.messages, req.messages);
        let body: serde_json::Value = serde_json::from_str(&new.body_json).unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            "I'm [REDACTED_EMAIL] on [REDACTED_PROJECT]"
        );
        // Key order is kept.
        assert!(
            new.body_json.starts_with("{\"model\":"),
            "{}",
            new.body_json
        );
        let clean = testing::request("openai", "gpt-4o", &[("user", "hello")]);
        assert_eq!(p.pre_hook(clean).unwrap(), PreAction::Continue);
    }

    #[test]
    fn pre_hook_without_a_body_redacts_messages() {
        let p = Redact::init("{}").unwrap();
        let mut req = testing::request("openai", "m", &[("user", "card 4111111111111111")]);
        req.body_json = String::new();
        let PreAction::ContinueWith(new) = p.pre_hook(req).unwrap() else {
            panic!("expected continue-with");
        };
        assert_eq!(new.messages[0].text, "card [REDACTED_CARD]");
    }

    #[test]
    fn post_hook_redacts_choices() {
        let p = Redact::init("{}").unwrap();
        let req = testing::request("openai", "m", &[]);
        let resp = testing::response("openai", "m", &["call +44 20 7946 0958", "fine"], None);
        let out = p
            .post_hook(testing::info(&req, 0), Outcome::Response(resp.clone()))
            .unwrap();
        let PostAction::Replace(Outcome::Response(r)) = out else {
            panic!("expected a replacement");
        };
        assert_eq!(r.choices, ["call [REDACTED_PHONE]", "fine"]);
        assert_eq!(r.body_json, resp.body_json);
        let err = testing::error("openai", "m", 500, switchyard_sdk::ErrorKind::Upstream);
        assert_eq!(
            p.post_hook(testing::info(&req, 0), Outcome::Error(err))
                .unwrap(),
            PostAction::Keep
        );
    }
}
