//! Vertex AI's Gemini API (`generateContent`, `streamGenerateContent` chunks, safety blocks),
//! text embeddings (`predict`) and Google's error body. Claude on Vertex speaks the Anthropic
//! format of the parent module.

use serde_json::{json, Value};

use super::{decide, deltas, embedding, result_text, text_tokens, tokens, Finish, Last, Turn};

/// In the last user text, blocks the prompt (`promptFeedback.blockReason: SAFETY`).
pub const BLOCK_PROMPT: &str = "unsafe:";
/// In the last user text, blocks the answer (a candidate with `finishReason: SAFETY`).
pub const BLOCK_CANDIDATE: &str = "unsafe-candidate:";

/// What Gemini does with a request.
pub enum Answer {
    Turn(Turn),
    PromptBlocked,
    CandidateBlocked,
}

/// What Gemini answers to `body`.
pub fn answer(body: &Value, default: &str) -> Answer {
    let last = last(body);
    if let Last::User(text) = &last {
        if text.contains(BLOCK_CANDIDATE) {
            return Answer::CandidateBlocked;
        }
        if text.contains(BLOCK_PROMPT) {
            return Answer::PromptBlocked;
        }
    }
    let config = &body["toolConfig"]["functionCallingConfig"];
    let allowed: Option<Vec<&str>> = config["allowedFunctionNames"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let declared: Vec<&str> = if config["mode"] == "NONE" {
        Vec::new()
    } else {
        body["tools"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|t| t["functionDeclarations"].as_array())
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .filter(|n| allowed.as_ref().is_none_or(|a| a.contains(n)))
            .collect()
    };
    let gen = &body["generationConfig"];
    let stops: Vec<&str> = gen["stopSequences"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Answer::Turn(decide(
        last,
        &declared,
        default,
        gen["maxOutputTokens"].as_u64(),
        &stops,
    ))
}

/// The last content: its `functionResponse` parts if any, else the last user text.
fn last(body: &Value) -> Last {
    let contents = body["contents"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let parts_of = |c: &Value| c["parts"].as_array().cloned().unwrap_or_default();
    if let Some(c) = contents.last() {
        let results: Vec<String> = parts_of(c)
            .iter()
            .filter_map(|p| p.get("functionResponse"))
            .map(|r| result_text(&r["response"]))
            .collect();
        if !results.is_empty() {
            return Last::ToolResult(results.join(" "));
        }
    }
    let text = contents
        .iter()
        .rev()
        .find(|c| c["role"] == "user" || c.get("role").is_none())
        .map(|c| {
            parts_of(c)
                .iter()
                .filter_map(|p| p["text"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Last::User(text)
}

fn safety_ratings() -> Value {
    json!([
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"}
    ])
}

fn blocked_ratings() -> Value {
    json!([{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}])
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        // Gemini says STOP for a stop sequence too.
        Finish::End | Finish::StopSequence => "STOP",
        Finish::MaxTokens => "MAX_TOKENS",
    }
}

fn usage(body: &Value, output: u64) -> Value {
    let prompt = text_tokens(body);
    json!({"promptTokenCount": prompt, "candidatesTokenCount": output,
           "totalTokenCount": prompt + output})
}

/// The parts, finish reason and output tokens of a turn.
fn turn_parts(turn: &Turn) -> (Value, &'static str, u64) {
    match turn {
        Turn::Text { text, finish } => (
            json!([{ "text": text }]),
            finish_reason(*finish),
            tokens(text),
        ),
        // Gemini ends a function call with STOP, not a finish reason of its own.
        Turn::Tool(call) => (
            json!([{"functionCall": {"name": call.name, "args": call.input}}]),
            "STOP",
            1,
        ),
    }
}

/// The `generateContent` response.
pub fn generate(model: &str, body: &Value, answer: &Answer) -> Value {
    match answer {
        Answer::PromptBlocked => json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": blocked_ratings()},
            "usageMetadata": {"promptTokenCount": text_tokens(body), "totalTokenCount": text_tokens(body)},
            "modelVersion": model
        }),
        Answer::CandidateBlocked => json!({
            "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": blocked_ratings()}],
            "usageMetadata": usage(body, 0),
            "modelVersion": model
        }),
        Answer::Turn(turn) => {
            let (parts, finish, output) = turn_parts(turn);
            let n = body["generationConfig"]["candidateCount"]
                .as_u64()
                .unwrap_or(1)
                .max(1);
            let candidates: Vec<Value> = (0..n)
                .map(|i| {
                    json!({"content": {"role": "model", "parts": parts}, "finishReason": finish,
                           "index": i, "safetyRatings": safety_ratings()})
                })
                .collect();
            json!({
                "candidates": candidates,
                "usageMetadata": usage(body, output * n),
                "modelVersion": model
            })
        }
    }
}

/// The chunks of `streamGenerateContent`: one per word of text, the finish reason and usage
/// on the last.
pub fn stream(model: &str, body: &Value, answer: &Answer) -> Vec<Value> {
    let Answer::Turn(Turn::Text { text, finish }) = answer else {
        // A block or a function call comes in one chunk.
        return vec![generate(model, body, answer)];
    };
    let pieces = deltas(text);
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut candidate =
                json!({"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0});
            let mut chunk = json!({"modelVersion": model});
            if i == last {
                candidate["finishReason"] = json!(finish_reason(*finish));
                candidate["safetyRatings"] = safety_ratings();
                chunk["usageMetadata"] = usage(body, tokens(text));
            }
            chunk["candidates"] = json!([candidate]);
            chunk
        })
        .collect()
}

/// The `predict` response of a text-embedding model.
pub fn embed(body: &Value) -> Value {
    let dims = body["parameters"]["outputDimensionality"]
        .as_u64()
        .map_or(8, |d| d as usize);
    let predictions: Vec<Value> = body["instances"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|i| {
            let text = i["content"].as_str().unwrap_or("");
            json!({"embeddings": {"values": embedding(text, dims),
                "statistics": {"token_count": tokens(text), "truncated": false}}})
        })
        .collect();
    json!({"predictions": predictions, "metadata": {"billableCharacterCount": 0}})
}

/// Google's error body for `status`.
pub fn error(status: u16) -> Value {
    let (kind, message) = match status {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => ("UNAUTHENTICATED", UNAUTHENTICATED),
        403 => (
            "PERMISSION_DENIED",
            "Permission 'aiplatform.endpoints.predict' denied on resource (or it may not exist).",
        ),
        404 => (
            "NOT_FOUND",
            "Publisher Model was not found or your project does not have access to it.",
        ),
        429 => (
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        ),
        503 => ("UNAVAILABLE", "The service is currently unavailable."),
        504 => (
            "DEADLINE_EXCEEDED",
            "Deadline expired before operation could complete.",
        ),
        _ => ("INTERNAL", "Internal error encountered."),
    };
    error_with(status, kind, message)
}

/// The HTTP code of a Google `status` name.
pub fn code_of(status: &str) -> u16 {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ABORTED" | "ALREADY_EXISTS" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

/// Google's error body with a given `status` name.
pub fn error_with(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

pub const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected \
OAuth 2 access token, login cookie or other valid authentication credential. See \
https://developers.google.com/identity/sign-in/web/devconsole-project.";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(text: &str) -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}],
               "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {}}]}]})
    }

    #[test]
    fn text_function_call_and_result() {
        let b = user("echo:one two");
        let r = generate("gemini-2.0-flash", &b, &answer(&b, "d"));
        assert_eq!(r["candidates"][0]["content"]["parts"][0]["text"], "one two");
        assert_eq!(r["candidates"][0]["finishReason"], "STOP");
        assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 2);

        let b = user("tool:get_weather {\"city\":\"Rome\"}");
        let r = generate("m", &b, &answer(&b, "d"));
        let part = &r["candidates"][0]["content"]["parts"][0];
        assert_eq!(part["functionCall"]["args"]["city"], "Rome");
        assert_eq!(r["candidates"][0]["finishReason"], "STOP");

        let mut none = b.clone();
        none["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
        let r = generate("m", &none, &answer(&none, "d"));
        assert!(r["candidates"][0]["content"]["parts"][0]["text"].is_string());

        let b = json!({"contents": [
            {"role": "user", "parts": [{"text": "tool:get_weather {}"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}]});
        let r = generate("m", &b, &answer(&b, "d"));
        assert_eq!(
            r["candidates"][0]["content"]["parts"][0]["text"],
            "tool result: {\"temp\":21}"
        );
    }

    #[test]
    fn safety_blocks_and_stream() {
        let b = user("unsafe: how to");
        let r = generate("m", &b, &answer(&b, "d"));
        assert_eq!(r["promptFeedback"]["blockReason"], "SAFETY");
        assert!(r.get("candidates").is_none());
        let b = user("unsafe-candidate: how to");
        let r = generate("m", &b, &answer(&b, "d"));
        assert_eq!(r["candidates"][0]["finishReason"], "SAFETY");
        assert!(r["candidates"][0].get("content").is_none());

        let b = user("echo:a b c");
        let chunks = stream("m", &b, &answer(&b, "d"));
        assert_eq!(chunks.len(), 3);
        let text: String = chunks
            .iter()
            .map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(text, "a b c");
        assert!(chunks[0].get("usageMetadata").is_none());
        assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[2]["usageMetadata"]["candidatesTokenCount"], 3);
    }

    #[test]
    fn embeddings() {
        let r = embed(&json!({"instances": [{"content": "a b"}, {"content": "c"}]}));
        assert_eq!(
            r["predictions"][1]["embeddings"]["values"]
                .as_array()
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            r["predictions"][0]["embeddings"]["statistics"]["token_count"],
            2
        );
    }
}
