//! Redaction of an OpenAI-shaped request body: every text the host lists in the request's
//! `messages` (so the clean-request fast path in `lib.rs` sees them all): message contents
//! (strings and the text parts of multi-part contents, tool results included), message
//! `name`s, tool-call and function-call `arguments`, `prompt` and `input`. Other fields
//! (model, tool definitions, images) are left as they are.

use serde_json::{Map, Value};

use crate::redactor::Redactor;

/// Redact `s` in place; true if it changed.
fn string(r: &Redactor, s: &mut String) -> bool {
    match r.redact(s) {
        std::borrow::Cow::Owned(new) => {
            *s = new;
            true
        }
        std::borrow::Cow::Borrowed(_) => false,
    }
}

/// A string or an array of strings (`prompt`, `input`).
fn string_or_list(r: &Redactor, v: &mut Value) -> bool {
    match v {
        Value::String(s) => string(r, s),
        Value::Array(a) => a.iter_mut().fold(false, |changed, x| match x {
            Value::String(s) => string(r, s) | changed,
            _ => changed,
        }),
        _ => false,
    }
}

fn content(r: &Redactor, v: &mut Value) -> bool {
    match v {
        Value::String(s) => string(r, s),
        Value::Array(parts) => parts.iter_mut().fold(false, |changed, p| {
            let is_text = p.get("type").and_then(Value::as_str) == Some("text");
            match p.get_mut("text") {
                Some(Value::String(s)) if is_text => string(r, s) | changed,
                _ => changed,
            }
        }),
        _ => false,
    }
}

/// Redact the body in place; true if anything changed.
pub fn redact(r: &Redactor, body: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    if let Some(Value::Array(msgs)) = body.get_mut("messages") {
        for m in msgs {
            if let Some(c) = m.get_mut("content") {
                changed |= content(r, c);
            }
            if let Some(Value::String(n)) = m.get_mut("name") {
                changed |= string(r, n);
            }
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for c in calls {
                    if let Some(Value::String(a)) = c.pointer_mut("/function/arguments") {
                        changed |= string(r, a);
                    }
                }
            }
            if let Some(Value::String(a)) = m.pointer_mut("/function_call/arguments") {
                changed |= string(r, a);
            }
        }
    }
    for k in ["prompt", "input"] {
        if let Some(v) = body.get_mut(k) {
            changed |= string_or_list(r, v);
        }
    }
    changed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::detect::Category;

    #[test]
    fn walks_messages_prompt_and_input() {
        let r = Redactor::new(Category::ALL.to_vec(), Vec::new());
        let mut body = json!({
            "model": "a@example.com",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "I am a@example.com"},
                    {"type": "image_url", "image_url": {"url": "https://x/a@example.com"}}
                ]},
                {"role": "assistant", "content": null}
            ],
            "prompt": ["ok", "b@example.com"],
            "input": "c@example.com"
        });
        let m = body.as_object_mut().unwrap();
        assert!(redact(&r, m));
        assert_eq!(
            body,
            json!({
                "model": "a@example.com",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "I am [REDACTED_EMAIL]"},
                        {"type": "image_url", "image_url": {"url": "https://x/a@example.com"}}
                    ]},
                    {"role": "assistant", "content": null}
                ],
                "prompt": ["ok", "[REDACTED_EMAIL]"],
                "input": "[REDACTED_EMAIL]"
            })
        );
        let mut clean = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert!(!redact(&r, clean.as_object_mut().unwrap()));
    }

    #[test]
    fn walks_names_tool_arguments_and_tool_results() {
        let r = Redactor::new(Category::ALL.to_vec(), Vec::new());
        let mut body = json!({"messages": [
            {"role": "user", "name": "a@example.com", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "send", "arguments": "{\"to\":\"b@example.com\"}"}}],
             "function_call": {"name": "send", "arguments": "{\"to\":\"c@example.com\"}"}},
            {"role": "tool", "tool_call_id": "c1", "content": "sent to d@example.com"}
        ]});
        assert!(redact(&r, body.as_object_mut().unwrap()));
        let text = body.to_string();
        assert!(!text.contains("@example.com"), "{text}");
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"[REDACTED_EMAIL]\"}"
        );
        assert_eq!(body["messages"][0]["name"], "[REDACTED_EMAIL]");
    }
}
