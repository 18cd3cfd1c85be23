//! What the mock answers on each path when it behaves: a JSON body, or a stream of frames in
//! the provider's framing (SSE, or AWS event-stream for Bedrock) together with the frame the
//! provider sends when a stream fails. Also each provider's error for a status.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::eventstream;
use crate::wire::bedrock::{self, AwsError};
use crate::wire::{self, cohere, vertex, Api, Family, Route};

/// How a stream's frames are cut up, which decides what a corrupted frame looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// Text lines (`data: ...`, `event: ...`): corruption truncates the JSON.
    Text,
    /// Binary event-stream messages: corruption breaks the message CRC.
    EventStream,
}

pub(super) struct Stream {
    pub content_type: &'static str,
    pub frames: Vec<Bytes>,
    /// The provider's in-stream error, sent by `Behavior::StreamError`.
    pub error: Bytes,
    pub framing: Framing,
}

impl Stream {
    /// `frame` made unreadable in this framing.
    pub fn corrupt(&self, frame: &Bytes) -> Bytes {
        match self.framing {
            Framing::EventStream => Bytes::from(eventstream::corrupt(frame)),
            Framing::Text => {
                // Cut inside the JSON of the `data:` line, keeping the event's framing.
                let start = frame
                    .windows(6)
                    .rposition(|w| w == b"data: ")
                    .map_or(0, |at| at + 6);
                let end = frame.len()
                    - frame
                        .iter()
                        .rev()
                        .take_while(|b| b.is_ascii_whitespace())
                        .count();
                let mut cut = frame[..start + (end.saturating_sub(start)) / 2].to_vec();
                cut.extend_from_slice(b"\n\n");
                Bytes::from(cut)
            }
        }
    }
}

pub(super) enum Answer {
    Json {
        status: u16,
        body: String,
        headers: Vec<(&'static str, String)>,
    },
    Stream(Stream),
}

impl Answer {
    fn ok(value: Value) -> Answer {
        Answer::Json {
            status: 200,
            body: value.to_string(),
            headers: Vec::new(),
        }
    }
}

fn aws_error(e: &AwsError) -> Answer {
    Answer::Json {
        status: e.status,
        body: e.body().to_string(),
        headers: vec![("x-amzn-errortype", e.error_type_header())],
    }
}

fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn sse_event(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Whether `api` streams on this request: by path for Bedrock and Vertex, by the body's
/// `stream` flag elsewhere (or because a stream behavior was asked for).
fn streams(api: Api, body: &Value, force: bool) -> bool {
    match api {
        Api::BedrockConverseStream | Api::GeminiStream | Api::VertexClaudeStream => true,
        Api::OpenAiChat | Api::AnthropicMessages | Api::CohereChat => {
            body["stream"] == true || force
        }
        _ => false,
    }
}

/// The body with `model` set to the path's model (Claude on Vertex names it in the path).
fn with_model(body: &Value, model: Option<&str>) -> Value {
    let mut body = body.clone();
    if let (Some(m), Value::Object(map)) = (model, &mut body) {
        map.insert("model".to_owned(), Value::String(m.to_owned()));
    }
    body
}

/// The normal answer to a request on `route`. `force_stream` makes body-flag APIs stream (a
/// stream behavior was queued); `error_kind` names the in-stream error to prepare.
pub(super) fn normal(
    route: &Route,
    query: &str,
    body: &Value,
    reply: &str,
    force_stream: bool,
    error_kind: Option<&str>,
) -> Answer {
    let api = route.api;
    let model = route.model.as_deref().unwrap_or("mock-model");
    let reply_for_openai_family = || wire::reply_text(body, reply);
    if streams(api, body, force_stream) {
        return stream(route, query, body, reply, error_kind);
    }
    match api {
        Api::OpenAiChat => Answer::ok(wire::openai_chat(body, &reply_for_openai_family())),
        Api::OpenAiCompletion => {
            Answer::ok(wire::openai_completion(body, &reply_for_openai_family()))
        }
        Api::OpenAiEmbedding => Answer::ok(wire::openai_embeddings(body)),
        Api::OpenAiModels => Answer::ok(wire::openai_models()),
        Api::AnthropicMessages => {
            Answer::ok(wire::anthropic_message(body, &reply_for_openai_family()))
        }
        Api::BedrockConverse => match bedrock::validate(body) {
            Ok(()) => Answer::ok(bedrock::converse(body, &bedrock::turn(body, reply))),
            Err(e) => aws_error(&e),
        },
        Api::BedrockInvoke => match bedrock::invoke(model, body, &reply_for_openai_family()) {
            Ok(v) => Answer::ok(v),
            Err(e) => aws_error(&e),
        },
        Api::BedrockUnknown | Api::BedrockConverseStream => aws_error(&AwsError::new(
            404,
            "UnknownOperationException",
            "The requested operation is not recognized by the service.",
        )),
        Api::GeminiGenerate => {
            Answer::ok(vertex::generate(model, body, &vertex::answer(body, reply)))
        }
        Api::VertexEmbed => Answer::ok(vertex::embed(body)),
        Api::VertexClaude => match vertex_claude_check(body) {
            Some(refusal) => refusal,
            None => {
                let body = with_model(body, route.model.as_deref());
                Answer::ok(wire::anthropic_message(
                    &body,
                    &wire::reply_text(&body, reply),
                ))
            }
        },
        Api::CohereChat => match cohere::validate(body) {
            Ok(()) => Answer::ok(cohere::chat(body, &cohere::turn(body, reply))),
            Err((status, b)) => json_error(status, b),
        },
        Api::CohereEmbed => match cohere::validate(body) {
            Ok(()) => Answer::ok(cohere::embed(body)),
            Err((status, b)) => json_error(status, b),
        },
        Api::GeminiStream | Api::VertexClaudeStream | Api::VertexUnknown => {
            json_error(404, vertex::error(404))
        }
        Api::Unknown => json_error(404, wire::openai_error(404)),
    }
}

fn json_error(status: u16, body: Value) -> Answer {
    Answer::Json {
        status,
        body: body.to_string(),
        headers: Vec::new(),
    }
}

/// Claude on Vertex refuses a body without `anthropic_version`.
fn vertex_claude_check(body: &Value) -> Option<Answer> {
    if body.get("anthropic_version").is_some() {
        return None;
    }
    Some(json_error(
        400,
        json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "anthropic_version: Field required"}}),
    ))
}

fn stream(route: &Route, query: &str, body: &Value, reply: &str, kind: Option<&str>) -> Answer {
    let model = route.model.as_deref().unwrap_or("mock-model");
    let text = |frames: Vec<Bytes>, error: Bytes| {
        Answer::Stream(Stream {
            content_type: "text/event-stream",
            frames,
            error,
            framing: Framing::Text,
        })
    };
    match route.api {
        Api::OpenAiChat => {
            let mut frames: Vec<Bytes> =
                wire::openai_chat_stream(body, &wire::reply_text(body, reply))
                    .iter()
                    .map(|d| sse(d))
                    .collect();
            frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
            let error = json!({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                "type": kind.unwrap_or("server_error"), "param": null, "code": null}});
            text(frames, sse(&error.to_string()))
        }
        Api::AnthropicMessages | Api::VertexClaudeStream => {
            if route.api == Api::VertexClaudeStream {
                if let Some(refusal) = vertex_claude_check(body) {
                    return refusal;
                }
            }
            let body = if route.api == Api::VertexClaudeStream {
                with_model(body, route.model.as_deref())
            } else {
                body.clone()
            };
            let frames = wire::anthropic_stream(&body, &wire::reply_text(&body, reply))
                .iter()
                .map(|(e, d)| sse_event(e, d))
                .collect();
            let kind = kind.unwrap_or("overloaded_error");
            let message = if kind == "overloaded_error" {
                "Overloaded"
            } else {
                "Internal server error"
            };
            let error = json!({"type": "error", "error": {"type": kind, "message": message}});
            text(frames, sse_event("error", &error.to_string()))
        }
        Api::BedrockConverseStream => {
            if let Err(e) = bedrock::validate(body) {
                return aws_error(&e);
            }
            let frames = bedrock::converse_stream(body, &bedrock::turn(body, reply))
                .iter()
                .map(|(event, json)| Bytes::from(eventstream::event(event, json)))
                .collect();
            let kind = kind.unwrap_or("throttlingException");
            let error = eventstream::exception(kind, bedrock::stream_exception_message(kind));
            Answer::Stream(Stream {
                content_type: "application/vnd.amazon.eventstream",
                frames,
                error: Bytes::from(error),
                framing: Framing::EventStream,
            })
        }
        Api::GeminiStream => {
            let chunks = vertex::stream(model, body, &vertex::answer(body, reply));
            let status = kind.unwrap_or("INTERNAL");
            let error = vertex::error_with(
                vertex::code_of(status),
                status,
                "Internal error encountered.",
            );
            let sse_mode = query.split('&').any(|p| p == "alt=sse");
            if sse_mode {
                // Vertex ends SSE events with CRLF pairs.
                let frame = |v: &Value| Bytes::from(format!("data: {v}\r\n\r\n"));
                text(chunks.iter().map(frame).collect(), frame(&error))
            } else {
                // Without alt=sse the chunks are the elements of one JSON array.
                let mut frames: Vec<Bytes> = chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Bytes::from(format!("{}{c}", if i == 0 { "[" } else { ",\r\n" })))
                    .collect();
                frames.push(Bytes::from_static(b"]"));
                Answer::Stream(Stream {
                    content_type: "application/json; charset=UTF-8",
                    frames,
                    error: Bytes::from(format!(",\r\n{error}]")),
                    framing: Framing::Text,
                })
            }
        }
        Api::CohereChat => {
            if let Err((status, b)) = cohere::validate(body) {
                return json_error(status, b);
            }
            let frames = cohere::chat_stream(body, &cohere::turn(body, reply))
                .iter()
                .map(|(e, d)| sse_event(e, d))
                .collect();
            let (e, d) = cohere::stream_error(body);
            text(frames, sse_event(e, &d))
        }
        _ => json_error(404, wire::openai_error(404)),
    }
}

/// The provider's error answer for `status` (`kind`, when given, names the error type: a
/// Bedrock exception, an Anthropic or OpenAI `type`, a Google `status`). `custom` replaces
/// the body; Bedrock's `x-amzn-errortype` header stays.
pub(super) fn error(api: Api, status: u16, kind: Option<&str>, custom: Option<String>) -> Answer {
    let (body, headers) = match api.family() {
        Family::Bedrock => {
            let mut e = AwsError::of_status(status);
            if let Some(k) = kind {
                e.kind = k.to_owned();
            }
            (e.body(), vec![("x-amzn-errortype", e.error_type_header())])
        }
        Family::Anthropic => {
            let mut b = wire::anthropic_error(status);
            if let Some(k) = kind {
                b["error"]["type"] = json!(k);
            }
            (b, Vec::new())
        }
        Family::Google => {
            let mut b = vertex::error(status);
            if let Some(k) = kind {
                b["error"]["status"] = json!(k);
            }
            (b, Vec::new())
        }
        Family::Cohere => (cohere::error(status), Vec::new()),
        Family::OpenAi => {
            let mut b = wire::openai_error(status);
            if let Some(k) = kind {
                b["error"]["type"] = json!(k);
                b["error"]["code"] = json!(k);
            }
            (b, Vec::new())
        }
    };
    Answer::Json {
        status,
        body: custom.unwrap_or_else(|| body.to_string()),
        headers,
    }
}
