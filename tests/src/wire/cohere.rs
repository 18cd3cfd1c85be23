//! Cohere's v2 API: `/v2/chat` (plain, and the typed SSE stream), `/v2/embed`, and Cohere's
//! error body.

use serde_json::{json, Value};

use super::{
    content_text, decide, deltas, embedding, halves, text_tokens, tokens, Finish, Last, Turn,
};

const CHAT_ID: &str = "c0e8e5a1-0000-4000-8000-000000000001";
const EMBED_ID: &str = "c0e8e5a1-0000-4000-8000-000000000002";

/// Cohere counts the tokens of its prompt template too: `usage.tokens.input_tokens` is the
/// billed input plus this, so a test sees which of the two a client reads.
const TEMPLATE_TOKENS: u64 = 7;

/// What the model says to a chat request.
pub fn turn(body: &Value, default: &str) -> Turn {
    let declared: Vec<&str> = body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["function"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let stops: Vec<&str> = body["stop_sequences"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    decide(
        last(body),
        &declared,
        default,
        body["max_tokens"].as_u64(),
        &stops,
    )
}

/// The last message: a `tool` message's content, else the last user text.
fn last(body: &Value) -> Last {
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let tool_results: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .map(|m| match &m["content"] {
            Value::Array(parts) => parts
                .iter()
                .map(|p| match p["document"]["data"].as_str() {
                    Some(data) => data.to_owned(),
                    None => p["text"].as_str().unwrap_or("").to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => content_text(other),
        })
        .collect();
    if !tool_results.is_empty() {
        return Last::ToolResult(tool_results.into_iter().rev().collect::<Vec<_>>().join(" "));
    }
    Last::User(
        messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| content_text(&m["content"]))
            .unwrap_or_default(),
    )
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::End => "COMPLETE",
        Finish::MaxTokens => "MAX_TOKENS",
        Finish::StopSequence => "STOP_SEQUENCE",
    }
}

fn usage(body: &Value, output: u64) -> Value {
    let input = text_tokens(body);
    json!({
        "billed_units": {"input_tokens": input, "output_tokens": output},
        "tokens": {"input_tokens": input + TEMPLATE_TOKENS, "output_tokens": output}
    })
}

fn tool_call_id(name: &str) -> String {
    format!("{name}_mock01")
}

fn tool_plan(name: &str) -> String {
    format!("I will call {name}.")
}

/// The `/v2/chat` response.
pub fn chat(body: &Value, turn: &Turn) -> Value {
    match turn {
        Turn::Text { text, finish } => json!({
            "id": CHAT_ID,
            "finish_reason": finish_reason(*finish),
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
            "usage": usage(body, tokens(text))
        }),
        Turn::Tool(call) => json!({
            "id": CHAT_ID,
            "finish_reason": "TOOL_CALL",
            "message": {
                "role": "assistant",
                "tool_plan": tool_plan(&call.name),
                "tool_calls": [{"id": tool_call_id(&call.name), "type": "function",
                    "function": {"name": call.name, "arguments": call.input.to_string()}}]
            },
            "usage": usage(body, tokens(&tool_plan(&call.name)) + 1)
        }),
    }
}

/// The events of a `/v2/chat` stream: `(event type, JSON data with the same "type")`.
pub fn chat_stream(body: &Value, turn: &Turn) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "message-start",
        json!({"id": CHAT_ID, "type": "message-start", "delta": {"message": {
            "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}})
        .to_string(),
    )];
    let (finish, output) = match turn {
        Turn::Text { text, finish } => {
            out.push((
                "content-start",
                json!({"type": "content-start", "index": 0,
                       "delta": {"message": {"content": {"type": "text", "text": ""}}}})
                .to_string(),
            ));
            for d in deltas(text) {
                out.push((
                    "content-delta",
                    json!({"type": "content-delta", "index": 0,
                           "delta": {"message": {"content": {"text": d}}}})
                    .to_string(),
                ));
            }
            out.push((
                "content-end",
                json!({"type": "content-end", "index": 0}).to_string(),
            ));
            (finish_reason(*finish), tokens(text))
        }
        Turn::Tool(call) => {
            let plan = tool_plan(&call.name);
            for d in deltas(&plan) {
                out.push((
                    "tool-plan-delta",
                    json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": d}}})
                        .to_string(),
                ));
            }
            out.push((
                "tool-call-start",
                json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                    "id": tool_call_id(&call.name), "type": "function",
                    "function": {"name": call.name, "arguments": ""}}}}})
                .to_string(),
            ));
            for part in halves(&call.input.to_string()) {
                out.push((
                    "tool-call-delta",
                    json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {
                        "tool_calls": {"function": {"arguments": part}}}}})
                    .to_string(),
                ));
            }
            out.push((
                "tool-call-end",
                json!({"type": "tool-call-end", "index": 0}).to_string(),
            ));
            ("TOOL_CALL", tokens(&plan) + 1)
        }
    };
    out.push((
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage(body, output)}})
            .to_string(),
    ));
    out
}

/// The `message-end` that ends a stream which failed: Cohere reports a failure mid-stream as
/// `finish_reason: "ERROR"`.
pub fn stream_error(body: &Value) -> (&'static str, String) {
    (
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": "ERROR",
               "error": "internal server error, this has been reported to our developers",
               "usage": usage(body, 0)}})
        .to_string(),
    )
}

/// The `/v2/embed` response (float embeddings).
pub fn embed(body: &Value) -> Value {
    let texts: Vec<&str> = body["texts"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let vectors: Vec<Vec<f64>> = texts.iter().map(|t| embedding(t, 8)).collect();
    let billed: u64 = texts.iter().map(|t| tokens(t)).sum();
    json!({
        "id": EMBED_ID,
        "embeddings": {"float": vectors},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": billed}},
        "response_type": "embeddings_by_type"
    })
}

/// Cohere's error body for `status` (Cohere also uses 498 for an invalid token and 499 for a
/// cancelled request).
pub fn error(status: u16) -> Value {
    let message = match status {
        400 => "invalid request: message must be at least 1 token long or tool results must be specified.",
        401 => "invalid api token",
        402 => "Please add or update your payment method at https://dashboard.cohere.com/billing?tab=payment to continue",
        404 => "model not found, make sure the correct model ID was used and that you have access to the model.",
        422 => "invalid request: the request was well-formed but could not be processed.",
        429 => "You are using a Trial key, which is limited to 20 API calls / minute.",
        498 => "invalid api token",
        499 => "request cancelled",
        503 => "service unavailable",
        _ => "internal server error, this has been reported to our developers",
    };
    json!({"id": "c0e8e5a1-0000-4000-8000-0000000000e0", "message": message})
}

/// Why a request is refused before the model sees it.
pub fn validate(body: &Value) -> Result<(), (u16, Value)> {
    if body["model"].as_str().is_none_or(str::is_empty) {
        return Err((
            400,
            json!({"id": "c0e8e5a1-0000-4000-8000-0000000000e1", "message": "invalid request: model must be specified."}),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tools() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object"}}}])
    }

    #[test]
    fn text_tool_and_result() {
        let b =
            json!({"model": "command-r", "messages": [{"role": "user", "content": "echo:x y"}]});
        let r = chat(&b, &turn(&b, "d"));
        assert_eq!(r["message"]["content"][0]["text"], "x y");
        assert_eq!(r["finish_reason"], "COMPLETE");
        assert_eq!(r["usage"]["tokens"]["input_tokens"], 9);

        let b = json!({"model": "m", "tools": tools(), "messages": [
            {"role": "user", "content": [{"type": "text", "text": "tool:get_weather {\"city\":\"Oslo\"}"}]}]});
        let r = chat(&b, &turn(&b, "d"));
        assert_eq!(r["finish_reason"], "TOOL_CALL");
        let args = r["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(args).unwrap()["city"], "Oslo");

        let b = json!({"model": "m", "tools": tools(), "messages": [
            {"role": "user", "content": "tool:get_weather {}"},
            {"role": "assistant", "tool_plan": "p", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "document", "document": {"data": "{\"temp\":5}"}}]}]});
        let r = chat(&b, &turn(&b, "d"));
        assert_eq!(
            r["message"]["content"][0]["text"],
            "tool result: {\"temp\":5}"
        );
    }

    #[test]
    fn stream_events() {
        let b = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "echo:a b"}]});
        let ev = chat_stream(&b, &turn(&b, "d"));
        let kinds: Vec<&str> = ev.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                "message-start",
                "content-start",
                "content-delta",
                "content-delta",
                "content-end",
                "message-end"
            ]
        );
        for (k, data) in &ev {
            assert_eq!(serde_json::from_str::<Value>(data).unwrap()["type"], *k);
        }
        let b = json!({"model": "m", "tools": tools(), "messages": [{"role": "user", "content": "tool:get_weather {\"a\":1}"}]});
        let ev = chat_stream(&b, &turn(&b, "d"));
        let args: String = ev
            .iter()
            .filter(|(k, _)| *k == "tool-call-delta")
            .map(|(_, d)| {
                let v: Value = serde_json::from_str(d).unwrap();
                v["delta"]["message"]["tool_calls"]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(args, "{\"a\":1}");
        assert!(ev.last().unwrap().1.contains("TOOL_CALL"));
    }

    #[test]
    fn embed_and_validate() {
        let r = embed(
            &json!({"model": "embed-english-v3.0", "texts": ["a", "b c"], "input_type": "search_query", "embedding_types": ["float"]}),
        );
        assert_eq!(r["embeddings"]["float"].as_array().unwrap().len(), 2);
        assert_eq!(r["meta"]["billed_units"]["input_tokens"], 3);
        assert!(validate(&json!({"messages": []})).is_err());
    }
}
