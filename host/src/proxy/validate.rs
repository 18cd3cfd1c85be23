//! Validation of an OpenAI-shaped request before any plugin or provider sees it: every
//! field the gateway, its plugins or a provider read is checked for its type and shape,
//! and a problem is answered with the field's path (`messages[2].content must be a string
//! or a list of parts`). Nothing malformed is forwarded, and so nothing reaches a provider
//! by a way the plugins (redaction among them) do not look at.

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::schema::{RawField, RequestKind};

type Checked = Result<(), GatewayError>;

/// Why a request kept partly as bytes ([`RawField`]) did not pass.
#[derive(Debug)]
pub enum Lean {
    /// It is malformed; the error names the field.
    Invalid(GatewayError),
    /// An element is not JSON the validator can read (nested too deeply): the caller parses
    /// the whole body instead, which reports the problem in the usual words.
    Unreadable,
}

impl From<GatewayError> for Lean {
    fn from(e: GatewayError) -> Lean {
        Lean::Invalid(e)
    }
}

fn bad(path: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_request(Some(path), format!("{path} {what}"))
}

/// How a JSON value is called in messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Check the fields of `body` that `kind` uses.
#[cfg(test)]
pub fn validate(kind: RequestKind, body: &Map<String, Value>) -> Checked {
    validate_lean(kind, body, None).map_err(|e| match e {
        Lean::Invalid(e) => e,
        Lean::Unreadable => GatewayError::bad_request(None, "request body is not readable JSON"),
    })
}

/// [`validate`] for a body whose big field is `raw`, still the client's bytes: its elements
/// are parsed and checked one at a time, so only one of them is ever a tree, and every
/// problem is reported in the same words as for a parsed body.
pub fn validate_lean(
    kind: RequestKind,
    body: &Map<String, Value>,
    raw: Option<&RawField>,
) -> Result<(), Lean> {
    match kind {
        RequestKind::Chat => chat(body, raw)?,
        RequestKind::Completion => prompt_field(body, "prompt", raw)?,
        RequestKind::Embedding => prompt_field(body, "input", raw)?,
    }
    for key in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        number(body, key)?;
    }
    for key in ["max_tokens", "max_completion_tokens", "n", "dimensions"] {
        count(body, key)?;
    }
    integer(body, "seed")?;
    stop(body)?;
    for key in ["user", "service_tier"] {
        optional_string(body, key)?;
    }
    for key in [
        "metadata",
        "stream_options",
        "response_format",
        "logit_bias",
    ] {
        optional_object(body, key)?;
    }
    Ok(())
}

fn required(body: &Map<String, Value>, key: &str) -> Checked {
    match body.get(key) {
        None | Some(Value::Null) => Err(bad(key, "is required")),
        Some(_) => Ok(()),
    }
}

fn number(body: &Map<String, Value>, key: &str) -> Checked {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => Ok(()),
        Some(other) => Err(bad(
            key,
            format!("must be a number, got {}", json_type(other)),
        )),
    }
}

fn integer(body: &Map<String, Value>, key: &str) -> Checked {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
        Some(other) => Err(bad(
            key,
            format!("must be an integer, got {}", describe(other)),
        )),
    }
}

/// A positive integer that fits in 32 bits (token counts and choices): what plugins and
/// providers are given is then the number the client sent, never a truncation.
fn count(body: &Map<String, Value>, key: &str) -> Checked {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= 1 && v <= u64::from(u32::MAX) => Ok(()),
            _ => Err(bad(
                key,
                format!("must be a whole number from 1 to {}, got {n}", u32::MAX),
            )),
        },
        Some(other) => Err(bad(
            key,
            format!("must be an integer, got {}", json_type(other)),
        )),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => json_type(other).to_owned(),
    }
}

fn optional_string(body: &Map<String, Value>, key: &str) -> Checked {
    match body.get(key) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(bad(
            key,
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

fn optional_object(body: &Map<String, Value>, key: &str) -> Checked {
    match body.get(key) {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(bad(
            key,
            format!("must be an object, got {}", json_type(other)),
        )),
    }
}

fn stop(body: &Map<String, Value>) -> Checked {
    match body.get("stop") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) => {
            for (i, s) in items.iter().enumerate() {
                if !s.is_string() {
                    return Err(bad(
                        &format!("stop[{i}]"),
                        format!("must be a string, got {}", json_type(s)),
                    ));
                }
            }
            Ok(())
        }
        Some(other) => Err(bad(
            "stop",
            format!(
                "must be a string or a list of strings, got {}",
                json_type(other)
            ),
        )),
    }
}

const PROMPT_LIKE: &str = "must be a string, a list of strings, or token ids";

/// `prompt` / `input` (required), in `body` or kept as bytes in `raw`.
fn prompt_field(body: &Map<String, Value>, key: &str, raw: Option<&RawField>) -> Result<(), Lean> {
    match raw.filter(|r| r.key == key) {
        Some(raw) => {
            let n = each_element(&raw.json, |i, item| prompt_item(key, i, item))?;
            if n == 0 {
                return Err(bad(key, "must not be empty").into());
            }
            Ok(())
        }
        None => {
            required(body, key)?;
            Ok(prompt_like(body, key)?)
        }
    }
}

/// `prompt` / `input`: a string, a list of strings, a list of token ids, or a list of
/// lists of token ids.
fn prompt_like(body: &Map<String, Value>, key: &str) -> Checked {
    match body.get(key) {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(bad(key, "must not be empty"));
            }
            for (i, item) in items.iter().enumerate() {
                prompt_item(key, i, item)?;
            }
            Ok(())
        }
        Some(other) => Err(bad(key, format!("{PROMPT_LIKE}, got {}", json_type(other)))),
        None => Ok(()),
    }
}

fn prompt_item(key: &str, i: usize, item: &Value) -> Checked {
    let ok = match item {
        Value::String(_) => true,
        Value::Number(n) => n.is_u64(),
        Value::Array(ids) => ids.iter().all(Value::is_u64),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(
            &format!("{key}[{i}]"),
            format!("{PROMPT_LIKE}, got {}", describe(item)),
        ))
    }
}

/// Parse the JSON list `json` one element at a time, handing each to `check`; the number
/// of elements. At most one element is a tree at any time.
fn each_element(json: &[u8], check: impl FnMut(usize, &Value) -> Checked) -> Result<usize, Lean> {
    struct Each<F> {
        check: F,
        failed: Option<GatewayError>,
    }
    impl<'de, F: FnMut(usize, &Value) -> Checked> serde::de::Visitor<'de> for &mut Each<F> {
        type Value = usize;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut i = 0;
            while let Some(item) = seq.next_element::<Value>()? {
                if let Err(e) = (self.check)(i, &item) {
                    self.failed = Some(e);
                    return Err(serde::de::Error::custom("invalid element"));
                }
                i += 1;
            }
            Ok(i)
        }
    }
    let mut each = Each {
        check,
        failed: None,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    match serde::Deserializer::deserialize_seq(&mut de, &mut each) {
        Ok(n) => Ok(n),
        Err(_) => Err(each.failed.take().map_or(Lean::Unreadable, Lean::Invalid)),
    }
}

fn chat(body: &Map<String, Value>, raw: Option<&RawField>) -> Result<(), Lean> {
    match raw.filter(|r| r.key == "messages") {
        Some(raw) => {
            let n = each_element(&raw.json, |i, m| message(&format!("messages[{i}]"), m))?;
            if n == 0 {
                return Err(bad("messages", "must not be empty").into());
            }
        }
        None => {
            let messages = match body.get("messages") {
                None | Some(Value::Null) => return Err(bad("messages", "is required").into()),
                Some(Value::Array(m)) if m.is_empty() => {
                    return Err(bad("messages", "must not be empty").into())
                }
                Some(Value::Array(m)) => m,
                Some(other) => {
                    return Err(bad(
                        "messages",
                        format!("must be a list of messages, got {}", json_type(other)),
                    )
                    .into())
                }
            };
            for (i, m) in messages.iter().enumerate() {
                message(&format!("messages[{i}]"), m)?;
            }
        }
    }
    tools(body)?;
    Ok(tool_choice(body)?)
}

const ROLES: &str = "system, developer, user, assistant, tool";

fn message(at: &str, m: &Value) -> Checked {
    let Some(m) = m.as_object() else {
        return Err(bad(
            at,
            format!(
                "must be an object with a role and content, got {}",
                json_type(m)
            ),
        ));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => r.as_str(),
        None | Some(Value::Null) => {
            return Err(bad(&format!("{at}.role"), format!("is required ({ROLES})")))
        }
        Some(other) => {
            return Err(bad(
                &format!("{at}.role"),
                format!("must be a string, got {}", json_type(other)),
            ))
        }
    };
    let content_at = format!("{at}.content");
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        "system" | "developer" => text_content(&content_at, content, false)?,
        "user" => match content {
            Value::Null => return Err(bad(&content_at, "is required for user messages")),
            c => parts_content(&content_at, c)?,
        },
        "assistant" => {
            if !content.is_null() {
                parts_content(&content_at, content)?;
            }
            if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
                tool_calls(&format!("{at}.tool_calls"), calls)?;
            }
        }
        "tool" => {
            text_content(&content_at, content, true)?;
            match m.get("tool_call_id") {
                Some(Value::String(_)) => {}
                _ => {
                    return Err(bad(
                        &format!("{at}.tool_call_id"),
                        "is required for tool messages and must be a string",
                    ))
                }
            }
        }
        // The legacy function-calling role.
        "function" => text_content(&content_at, content, true)?,
        other => {
            return Err(bad(
                &format!("{at}.role"),
                format!("{other:?} is not a role; expected one of {ROLES}"),
            ))
        }
    }
    match m.get("name") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(bad(
            &format!("{at}.name"),
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

/// A string, or a list of text parts.
fn text_content(at: &str, content: &Value, null_ok: bool) -> Checked {
    match content {
        Value::String(_) => Ok(()),
        Value::Null if null_ok => Ok(()),
        Value::Array(parts) => {
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}[{j}]");
                match part_type(&pat, p)? {
                    "text" => text_part(&pat, p)?,
                    other => {
                        return Err(bad(
                            &format!("{pat}.type"),
                            format!("{other:?} is not allowed here; only text parts are"),
                        ))
                    }
                }
            }
            Ok(())
        }
        other => Err(bad(
            at,
            format!(
                "must be a string or a list of text parts, got {}",
                json_type(other)
            ),
        )),
    }
}

/// A string, or a list of parts (text, image, audio, file, refusal).
fn parts_content(at: &str, content: &Value) -> Checked {
    match content {
        Value::String(_) => Ok(()),
        Value::Array(parts) => {
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}[{j}]");
                match part_type(&pat, p)? {
                    "text" => text_part(&pat, p)?,
                    "refusal" => string_field(&pat, p, "refusal")?,
                    "image_url" => {
                        let url = p.get("image_url");
                        let ok = match url {
                            Some(Value::String(_)) => true,
                            Some(Value::Object(o)) => o.get("url").is_some_and(Value::is_string),
                            _ => false,
                        };
                        if !ok {
                            return Err(bad(&format!("{pat}.image_url.url"), "is required and must be a string"));
                        }
                    }
                    "input_audio" | "file" => {
                        let key = p.get("type").and_then(Value::as_str).unwrap_or("");
                        if !p.get(key).is_some_and(Value::is_object) {
                            return Err(bad(&format!("{pat}.{key}"), "is required and must be an object"));
                        }
                    }
                    other => {
                        return Err(bad(
                            &format!("{pat}.type"),
                            format!("{other:?} is not a content part type; expected text, image_url, input_audio, file or refusal"),
                        ))
                    }
                }
            }
            Ok(())
        }
        other => Err(bad(
            at,
            format!(
                "must be a string or a list of parts, got {}",
                json_type(other)
            ),
        )),
    }
}

fn part_type<'a>(at: &str, p: &'a Value) -> Result<&'a str, GatewayError> {
    if !p.is_object() {
        return Err(bad(
            at,
            format!("must be a content part object, got {}", json_type(p)),
        ));
    }
    match p.get("type") {
        Some(Value::String(t)) => Ok(t),
        _ => Err(bad(
            &format!("{at}.type"),
            "is required and must be a string",
        )),
    }
}

fn text_part(at: &str, p: &Value) -> Checked {
    string_field(at, p, "text")
}

fn string_field(at: &str, p: &Value, key: &str) -> Checked {
    match p.get(key) {
        Some(Value::String(_)) => Ok(()),
        None | Some(Value::Null) => Err(bad(&format!("{at}.{key}"), "is required")),
        Some(other) => Err(bad(
            &format!("{at}.{key}"),
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

fn tool_calls(at: &str, calls: &Value) -> Checked {
    let Some(calls) = calls.as_array() else {
        return Err(bad(at, format!("must be a list, got {}", json_type(calls))));
    };
    for (j, c) in calls.iter().enumerate() {
        let cat = format!("{at}[{j}]");
        if !c.is_object() {
            return Err(bad(
                &cat,
                format!("must be an object, got {}", json_type(c)),
            ));
        }
        string_field(&cat, c, "id")?;
        let f = format!("{cat}.function");
        match c.get("function") {
            Some(func @ Value::Object(_)) => {
                string_field(&f, func, "name")?;
                string_field(&f, func, "arguments")?;
            }
            _ => {
                return Err(bad(
                    &f,
                    "is required and must be an object with name and arguments",
                ))
            }
        }
    }
    Ok(())
}

fn tools(body: &Map<String, Value>) -> Checked {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(t)) => t,
        Some(other) => {
            return Err(bad(
                "tools",
                format!("must be a list, got {}", json_type(other)),
            ))
        }
    };
    for (i, t) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        if !t.is_object() {
            return Err(bad(&at, format!("must be an object, got {}", json_type(t))));
        }
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            _ => return Err(bad(&format!("{at}.type"), "must be \"function\"")),
        }
        let f = format!("{at}.function");
        let Some(func) = t.get("function").filter(|f| f.is_object()) else {
            return Err(bad(&f, "is required and must be an object"));
        };
        string_field(&f, func, "name")?;
        match func.get("description") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(bad(
                    &format!("{f}.description"),
                    format!("must be a string, got {}", json_type(other)),
                ))
            }
        }
        match func.get("parameters") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => {
                return Err(bad(
                    &format!("{f}.parameters"),
                    format!("must be a JSON Schema object, got {}", json_type(other)),
                ))
            }
        }
    }
    Ok(())
}

fn tool_choice(body: &Map<String, Value>) -> Checked {
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(()),
        Some(Value::String(s)) => Err(bad("tool_choice", format!("{s:?} is not a choice; expected none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"))),
        Some(c @ Value::Object(_)) => match c.get("function") {
            Some(f @ Value::Object(_)) => string_field("tool_choice.function", f, "name"),
            _ => Err(bad("tool_choice.function", "is required and must be an object with a name")),
        },
        Some(other) => Err(bad("tool_choice", format!("must be a string or an object, got {}", json_type(other)))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: RequestKind, v: Value) -> Result<(), (String, String)> {
        validate(kind, v.as_object().unwrap())
            .map_err(|e| (e.param.clone().unwrap_or_default(), e.message))
    }

    fn chat_err(v: Value) -> (String, String) {
        check(RequestKind::Chat, v).unwrap_err()
    }

    #[test]
    fn good_requests_pass() {
        let ok = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/a.png"}}], "name": "jane"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ], "temperature": 0.2, "max_tokens": 64, "stop": ["\n"], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
           "tool_choice": {"type": "function", "function": {"name": "f"}}, "metadata": {"a": "b"}, "seed": -1});
        check(RequestKind::Chat, ok).unwrap();
        check(RequestKind::Completion, json!({"prompt": ["a", "b"]})).unwrap();
        check(RequestKind::Embedding, json!({"input": [[1, 2], [3]]})).unwrap();
    }

    #[test]
    fn malformed_messages_name_their_path() {
        let cases = [
            (
                json!({"messages": ["mail jane@example.com"]}),
                "messages[0]",
                "must be an object",
            ),
            (
                json!({"messages": [{"role": "user", "content": {"text": "x"}}]}),
                "messages[0].content",
                "must be a string or a list of parts",
            ),
            (
                json!({"messages": [{"role": "user", "content": 3}]}),
                "messages[0].content",
                "got a number",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content",
                "is required",
            ),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
                "is not a role",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x", "name": 7}]}),
                "messages[0].name",
                "must be a string",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
                "messages[0].content[0].text",
                "must be a string",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "secret", "text": "x"}]}]}),
                "messages[0].content[0].type",
                "not a content part type",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": {"a": 1}}}]}]}),
                "messages[1].tool_calls[0].function.arguments",
                "must be a string",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
                "is required",
            ),
            (json!({"messages": []}), "messages", "must not be empty"),
            (json!({"messages": "hi"}), "messages", "must be a list"),
        ];
        for (body, path, what) in cases {
            let (p, m) = chat_err(body.clone());
            assert_eq!(p, path, "{body}");
            assert!(m.contains(what) && m.starts_with(path), "{body}: {m}");
        }
    }

    #[test]
    fn parameters_are_typed_and_bounded() {
        let msgs = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (
                json!({"messages": msgs, "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"messages": msgs, "max_tokens": 5_000_000_000u64}),
                "max_tokens",
            ),
            (json!({"messages": msgs, "max_tokens": 0}), "max_tokens"),
            (json!({"messages": msgs, "max_tokens": 1.5}), "max_tokens"),
            (json!({"messages": msgs, "n": -1}), "n"),
            (json!({"messages": msgs, "stop": [1]}), "stop[0]"),
            (
                json!({"messages": msgs, "tools": [{"type": "function"}]}),
                "tools[0].function",
            ),
            (
                json!({"messages": msgs, "tool_choice": "maybe"}),
                "tool_choice",
            ),
            (json!({"messages": msgs, "metadata": "x"}), "metadata"),
            (json!({"messages": msgs, "user": 1}), "user"),
        ];
        for (body, path) in cases {
            assert_eq!(chat_err(body.clone()).0, path, "{body}");
        }
        assert_eq!(
            check(RequestKind::Embedding, json!({"input": [{"a": 1}]}))
                .unwrap_err()
                .0,
            "input[0]"
        );
        assert_eq!(
            check(RequestKind::Completion, json!({"prompt": []}))
                .unwrap_err()
                .0,
            "prompt"
        );
    }
}
