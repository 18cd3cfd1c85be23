//! AWS Bedrock Runtime: Converse, ConverseStream (as `(event type, JSON)` pairs that the mock
//! frames as event-stream messages), InvokeModel for Titan and Cohere embeddings (and an
//! Anthropic body), and Bedrock's errors.

use serde_json::{json, Value};

use super::{
    decide, deltas, embedding, halves, result_text, text_tokens, tokens, Finish, Last, ToolCall,
    Turn,
};

/// The `x-amzn-errortype` suffix of Bedrock's own errors.
const BEDROCK_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";
/// ... and of the errors AWS's front door answers before Bedrock (signatures, keys).
const CORAL_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.coral.service/";

/// Padding Bedrock adds to stream events (`"p"`) so their sizes do not leak the text; decoders
/// must ignore it.
const PADDING: &str = "abcdefghijklmnopqrstu";

/// A Bedrock error: status, exception name and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    pub status: u16,
    pub kind: String,
    pub message: String,
}

impl AwsError {
    pub fn new(status: u16, kind: &str, message: &str) -> AwsError {
        AwsError {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
        }
    }

    /// The exception Bedrock answers with for `status`.
    pub fn of_status(status: u16) -> AwsError {
        let (kind, message) = match status {
            400 => (
                "ValidationException",
                "Malformed input request, please reformat your input and try again.",
            ),
            401 | 403 => (
                "AccessDeniedException",
                "You don't have access to the model with the specified model ID.",
            ),
            404 => (
                "ResourceNotFoundException",
                "Could not resolve the foundation model from the provided model identifier.",
            ),
            408 => (
                "ModelTimeoutException",
                "Model has timed out in processing the request. Try your request again.",
            ),
            424 => ("ModelErrorException", "The model returned an error."),
            429 => (
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            ),
            503 => (
                "ServiceUnavailableException",
                "Bedrock is unable to process your request.",
            ),
            _ => (
                "InternalServerException",
                "The server encountered an internal error while processing the request.",
            ),
        };
        AwsError::new(status, kind, message)
    }

    /// The same exception as an in-stream `:exception-type` (lower camel case).
    pub fn stream_kind(kind: &str) -> String {
        let mut chars = kind.chars();
        match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    /// `x-amzn-errortype`: the name and the namespace of the service that raised it.
    pub fn error_type_header(&self) -> String {
        let front_door = matches!(
            self.kind.as_str(),
            "InvalidSignatureException"
                | "UnrecognizedClientException"
                | "IncompleteSignatureException"
                | "MissingAuthenticationTokenException"
        );
        let ns = if front_door {
            CORAL_NAMESPACE
        } else {
            BEDROCK_NAMESPACE
        };
        format!("{}:{ns}", self.kind)
    }

    pub fn body(&self) -> Value {
        json!({ "message": self.message })
    }
}

/// The message of an in-stream exception (`:exception-type`).
pub fn stream_exception_message(kind: &str) -> &'static str {
    match kind {
        "throttlingException" => "Too many requests, please wait before trying again.",
        "modelStreamErrorException" => "The model stream encountered an error.",
        "validationException" => {
            "The input fails to satisfy the constraints specified by the model."
        }
        "serviceUnavailableException" => "Bedrock is unable to process your request.",
        _ => "The server encountered an internal error while processing the request.",
    }
}

/// What the model says to a Converse request.
pub fn turn(body: &Value, default: &str) -> Turn {
    let declared: Vec<&str> = body["toolConfig"]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["toolSpec"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let stops: Vec<&str> = body["inferenceConfig"]["stopSequences"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    decide(
        last(body),
        &declared,
        default,
        body["inferenceConfig"]["maxTokens"].as_u64(),
        &stops,
    )
}

/// The last message: its `toolResult` blocks' text if it has any, else the last user text.
fn last(body: &Value) -> Last {
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if let Some(content) = messages.last().and_then(|m| m["content"].as_array()) {
        let results: Vec<String> = content
            .iter()
            .filter_map(|block| block.get("toolResult"))
            .flat_map(|r| r["content"].as_array().cloned().unwrap_or_default())
            .map(|c| match (c.get("text"), c.get("json")) {
                (Some(t), _) => result_text(t),
                (None, Some(j)) => result_text(j),
                _ => String::new(),
            })
            .collect();
        if !results.is_empty() {
            return Last::ToolResult(results.join(" "));
        }
    }
    let text = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_array())
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Last::User(text)
}

/// A request the real service would refuse before the model sees it.
pub fn validate(body: &Value) -> Result<(), AwsError> {
    match body["messages"].as_array() {
        Some(m) if !m.is_empty() => Ok(()),
        _ => Err(AwsError::new(
            400,
            "ValidationException",
            "Malformed input request: #: required key [messages] not found, please reformat \
             your input and try again.",
        )),
    }
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::End => "end_turn",
        Finish::MaxTokens => "max_tokens",
        Finish::StopSequence => "stop_sequence",
    }
}

const TOOL_USE_ID: &str = "tooluse_mock01";

/// The text Claude on Bedrock says before a tool call.
fn preamble(call: &ToolCall) -> String {
    format!("Calling {}.", call.name)
}

fn usage(body: &Value, output: u64) -> Value {
    let input = text_tokens(body);
    json!({"inputTokens": input, "outputTokens": output, "totalTokens": input + output})
}

const LATENCY_MS: u64 = 100;

/// The Converse response.
pub fn converse(body: &Value, turn: &Turn) -> Value {
    let (content, stop, output) = match turn {
        Turn::Text { text, finish } => (
            json!([{ "text": text }]),
            stop_reason(*finish),
            tokens(text),
        ),
        Turn::Tool(call) => (
            json!([
                {"text": preamble(call)},
                {"toolUse": {"toolUseId": TOOL_USE_ID, "name": call.name, "input": call.input}}
            ]),
            "tool_use",
            tokens(&preamble(call)) + 1,
        ),
    };
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage(body, output),
        "metrics": {"latencyMs": LATENCY_MS}
    })
}

/// The ConverseStream events: `(:event-type, JSON payload)`.
pub fn converse_stream(body: &Value, turn: &Turn) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "messageStart",
        json!({"role": "assistant", "p": PADDING}).to_string(),
    )];
    let text_block = |out: &mut Vec<(&'static str, String)>, index: u64, text: &str| {
        for d in deltas(text) {
            out.push((
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": {"text": d}, "p": PADDING}).to_string(),
            ));
        }
        out.push((
            "contentBlockStop",
            json!({"contentBlockIndex": index, "p": PADDING}).to_string(),
        ));
    };
    let (stop, output) = match turn {
        Turn::Text { text, finish } => {
            text_block(&mut out, 0, text);
            (stop_reason(*finish), tokens(text))
        }
        Turn::Tool(call) => {
            text_block(&mut out, 0, &preamble(call));
            out.push((
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {
                    "toolUseId": TOOL_USE_ID, "name": call.name}}, "p": PADDING})
                .to_string(),
            ));
            for part in halves(&call.input.to_string()) {
                out.push((
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": part}},
                           "p": PADDING})
                    .to_string(),
                ));
            }
            out.push((
                "contentBlockStop",
                json!({"contentBlockIndex": 1, "p": PADDING}).to_string(),
            ));
            ("tool_use", tokens(&preamble(call)) + 1)
        }
    };
    out.push((
        "messageStop",
        json!({"stopReason": stop, "p": PADDING}).to_string(),
    ));
    out.push((
        "metadata",
        json!({"usage": usage(body, output), "metrics": {"latencyMs": LATENCY_MS},
               "p": PADDING})
        .to_string(),
    ));
    out
}

/// Dimensions of the mock's embeddings unless the request asks for others.
const DIMS: usize = 8;

/// InvokeModel: Titan text embeddings, Cohere embeddings, or an Anthropic Messages body.
pub fn invoke(model: &str, body: &Value, reply: &str) -> Result<Value, AwsError> {
    let invalid = |m: &str| AwsError::new(400, "ValidationException", m);
    if model.starts_with("amazon.titan-embed") {
        let text = body["inputText"]
            .as_str()
            .ok_or_else(|| invalid("Malformed input request: #: required key [inputText] not found, please reformat your input and try again."))?;
        if !model.contains("-v2") {
            return Ok(
                json!({"embedding": embedding(text, DIMS), "inputTextTokenCount": tokens(text)}),
            );
        }
        let dims = body["dimensions"].as_u64().map_or(DIMS, |d| d as usize);
        let mut vector = embedding(text, dims);
        if body["normalize"] != false {
            let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                vector.iter_mut().for_each(|x| *x /= norm);
            }
        }
        return Ok(json!({
            "embedding": vector,
            "embeddingsByType": {"float": vector},
            "inputTextTokenCount": tokens(text)
        }));
    }
    if model.starts_with("cohere.embed") {
        let texts: Vec<&str> = body["texts"]
            .as_array()
            .ok_or_else(|| invalid("Malformed input request: #: required key [texts] not found, please reformat your input and try again."))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let vectors: Vec<Vec<f64>> = texts.iter().map(|t| embedding(t, DIMS)).collect();
        return Ok(json!({
            "id": "emb-mock-bedrock",
            "embeddings": vectors,
            "response_type": "embeddings_floats",
            "texts": texts
        }));
    }
    if body.get("anthropic_version").is_some() {
        let mut body = body.clone();
        body["model"] = Value::String(model.to_owned());
        return Ok(super::anthropic_message(&body, reply));
    }
    Err(invalid("The provided model identifier is invalid."))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tools() -> Value {
        json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "d",
            "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"auto": {}}})
    }

    #[test]
    fn text_tool_call_and_round_trip() {
        let body = json!({"messages": [{"role": "user", "content": [{"text": "echo:hi there"}]}]});
        let t = turn(&body, "d");
        let r = converse(&body, &t);
        assert_eq!(r["output"]["message"]["content"][0]["text"], "hi there");
        assert_eq!(r["stopReason"], "end_turn");
        assert_eq!(r["usage"]["totalTokens"], 4);

        let body = json!({"messages": [{"role": "user", "content": [
            {"text": "tool:get_weather {\"city\": \"Paris\"} please"}]}], "toolConfig": tools()});
        let r = converse(&body, &turn(&body, "d"));
        assert_eq!(r["stopReason"], "tool_use");
        assert_eq!(
            r["output"]["message"]["content"][1]["toolUse"]["input"]["city"],
            "Paris"
        );

        // Undeclared tool: plain text.
        let body = json!({"messages": [{"role": "user", "content": [{"text": "tool:nope {}"}]}]});
        assert_eq!(converse(&body, &turn(&body, "d"))["stopReason"], "end_turn");

        let body = json!({"messages": [
            {"role": "user", "content": [{"text": "tool:get_weather {}"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "get_weather", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t",
                "content": [{"json": {"temp": 21}}], "status": "success"}}]}],
            "toolConfig": tools()});
        let r = converse(&body, &turn(&body, "d"));
        assert_eq!(
            r["output"]["message"]["content"][0]["text"],
            "tool result: {\"temp\":21}"
        );
    }

    #[test]
    fn limits() {
        let body = json!({"messages": [{"role": "user", "content": [{"text": "echo:a b c STOP d"}]}],
            "inferenceConfig": {"maxTokens": 2}});
        let r = converse(&body, &turn(&body, "d"));
        assert_eq!(r["output"]["message"]["content"][0]["text"], "a b");
        assert_eq!(r["stopReason"], "max_tokens");
        let body = json!({"messages": [{"role": "user", "content": [{"text": "echo:a b c STOP d"}]}],
            "inferenceConfig": {"stopSequences": ["STOP"]}});
        let r = converse(&body, &turn(&body, "d"));
        assert_eq!(r["output"]["message"]["content"][0]["text"], "a b c");
        assert_eq!(r["stopReason"], "stop_sequence");
    }

    #[test]
    fn stream_events() {
        let body = json!({"messages": [{"role": "user", "content": [
            {"text": "tool:get_weather {\"city\": \"Paris\"}"}]}], "toolConfig": tools()});
        let events = converse_stream(&body, &turn(&body, "d"));
        let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "contentBlockStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        let input: String = events
            .iter()
            .filter_map(|(_, j)| {
                let v: Value = serde_json::from_str(j).unwrap();
                v["delta"]["toolUse"]["input"].as_str().map(str::to_owned)
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&input).unwrap(),
            json!({"city": "Paris"})
        );
        assert!(events[8].1.contains("\"tool_use\""));
    }

    #[test]
    fn embeddings_and_errors() {
        let v2 = invoke(
            "amazon.titan-embed-text-v2:0",
            &json!({"inputText": "hello", "dimensions": 4}),
            "",
        )
        .unwrap();
        assert_eq!(v2["embedding"].as_array().unwrap().len(), 4);
        let cohere = invoke(
            "cohere.embed-english-v3",
            &json!({"texts": ["a", "b"], "input_type": "search_document"}),
            "",
        )
        .unwrap();
        assert_eq!(cohere["embeddings"].as_array().unwrap().len(), 2);
        assert_eq!(
            invoke("meta.llama3", &json!({}), "").unwrap_err().status,
            400
        );
        let e = AwsError::of_status(429);
        assert_eq!(
            e.error_type_header(),
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
        );
        assert_eq!(
            AwsError::stream_kind("ThrottlingException"),
            "throttlingException"
        );
    }
}
