//! OpenAI's Responses API as a client dialect (`POST /v1/responses`): `input` (a string or
//! items: messages with `input_text`/`input_image` parts, `function_call` and
//! `function_call_output`), `instructions`, function `tools` read into the unified chat body;
//! the answer written back as a `response` object with `output` items, and a stream as the
//! typed Responses events. Stateless: the gateway stores no responses, so
//! `previous_response_id` is refused with a clear 400.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{first_choice, json_type, sse_event, StreamWriter};
use crate::error::GatewayError;
use crate::schema::{StreamChunk, UnifiedResponse, Usage};

type Checked<T> = Result<T, GatewayError>;

/// A 400 about field `path`, OpenAI style: `param` is the path.
fn bad(path: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_request(Some(path), format!("{path} {what}"))
}

fn string(at: &str, v: Option<&Value>) -> Checked<String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(bad(at, "is required")),
        Some(other) => Err(bad(
            at,
            format!("must be a string, got {}", json_type(other)),
        )),
    }
}

fn object<'a>(at: &str, v: &'a Value) -> Checked<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| bad(at, format!("must be an object, got {}", json_type(v))))
}

/// Gateway fields read from the body like on the OpenAI routes.
const GATEWAY_FIELDS: &[&str] = &["provider", "fallbacks"];

/// Read a Responses request into the unified chat body.
pub fn to_unified(src: &Map<String, Value>) -> Checked<Map<String, Value>> {
    let mut out = Map::new();
    match src.get("previous_response_id") {
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(bad(
                "previous_response_id",
                "is not supported: the gateway does not store responses; send the whole conversation in 'input'",
            )
            .with_code("unsupported_parameter"))
        }
    }
    match src.get("conversation") {
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(bad(
                "conversation",
                "is not supported: the gateway does not store conversations; send the whole conversation in 'input'",
            )
            .with_code("unsupported_parameter"))
        }
    }
    match src.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {
            out.insert("model".into(), Value::String(m.clone()));
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(bad("model", "is required"))
        }
        Some(other) => {
            return Err(bad(
                "model",
                format!("must be a string, got {}", json_type(other)),
            ))
        }
    }
    for k in GATEWAY_FIELDS {
        if let Some(v) = src.get(*k) {
            out.insert((*k).to_owned(), v.clone());
        }
    }
    let mut messages = Vec::new();
    match src.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(other) => {
            return Err(bad(
                "instructions",
                format!("must be a string, got {}", json_type(other)),
            ))
        }
    }
    match src.get("input") {
        None | Some(Value::Null) => return Err(bad("input", "is required")),
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(bad("input", "must not be empty"))
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(&format!("input[{i}]"), item, &mut messages)?;
            }
        }
        Some(other) => {
            return Err(bad(
                "input",
                format!(
                    "must be a string or a list of items, got {}",
                    json_type(other)
                ),
            ))
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    match src.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|v| v >= 1 && v <= u64::from(u32::MAX)) =>
        {
            out.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        Some(other) => {
            return Err(bad(
                "max_output_tokens",
                format!("must be a whole number from 1 to {}, got {other}", u32::MAX),
            ))
        }
    }
    for key in ["temperature", "top_p"] {
        match src.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
                out.insert(key.into(), Value::Number(n.clone()));
            }
            Some(other) => {
                return Err(bad(
                    key,
                    format!("must be a number, got {}", json_type(other)),
                ))
            }
        }
    }
    for key in ["stream", "parallel_tool_calls"] {
        match src.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                out.insert(key.into(), Value::Bool(*b));
            }
            Some(other) => {
                return Err(bad(
                    key,
                    format!("must be a boolean, got {}", json_type(other)),
                ))
            }
        }
    }
    match src.get("user") {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) => {
            out.insert("user".into(), Value::String(u.clone()));
        }
        Some(other) => {
            return Err(bad(
                "user",
                format!("must be a string, got {}", json_type(other)),
            ))
        }
    }
    tools(src.get("tools"), &mut out)?;
    tool_choice(src.get("tool_choice"), &mut out)?;
    text_format(src.get("text"), &mut out)?;
    if let Some(effort) = src
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
    {
        out.insert("reasoning_effort".into(), Value::String(effort.to_owned()));
    }
    Ok(out)
}

fn input_item(at: &str, item: &Value, out: &mut Vec<Value>) -> Checked<()> {
    let item = object(at, item)?;
    let kind = match item.get("type") {
        None | Some(Value::Null) => "message",
        Some(Value::String(k)) => k.as_str(),
        Some(other) => {
            return Err(bad(
                &format!("{at}.type"),
                format!("must be a string, got {}", json_type(other)),
            ))
        }
    };
    match kind {
        "message" => {
            let role = string(&format!("{at}.role"), item.get("role"))?;
            if !matches!(role.as_str(), "user" | "assistant" | "system" | "developer") {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("must be one of user, assistant, system, developer, got '{role}'"),
                ));
            }
            let content_at = format!("{at}.content");
            let content = match item.get("content") {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(Value::Array(parts)) => {
                    let mut out_parts = Vec::with_capacity(parts.len());
                    for (j, p) in parts.iter().enumerate() {
                        out_parts.push(part(&format!("{content_at}[{j}]"), p)?);
                    }
                    if role == "user" {
                        Value::Array(out_parts)
                    } else {
                        // System and assistant turns are text in every provider.
                        Value::String(
                            out_parts
                                .iter()
                                .filter_map(|p| p.get("text").and_then(Value::as_str))
                                .collect::<Vec<_>>()
                                .join(""),
                        )
                    }
                }
                None | Some(Value::Null) => return Err(bad(&content_at, "is required")),
                Some(other) => {
                    return Err(bad(
                        &content_at,
                        format!(
                            "must be a string or a list of parts, got {}",
                            json_type(other)
                        ),
                    ))
                }
            };
            if role == "user" {
                if let Value::Array(parts) = &content {
                    if parts
                        .iter()
                        .any(|p| p["type"] != "text" && p["type"] != "image_url")
                    {
                        return Err(bad(&content_at, "has a part a user message cannot carry"));
                    }
                }
            }
            out.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call_id = string(&format!("{at}.call_id"), item.get("call_id"))?;
            let name = string(&format!("{at}.name"), item.get("name"))?;
            let arguments = string(&format!("{at}.arguments"), item.get("arguments"))?;
            let call = json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}});
            // Consecutive calls are one assistant turn with several tool calls.
            if let Some(last) = out.last_mut().filter(|m| {
                m["role"] == "assistant" && m.get("tool_calls").is_some_and(Value::is_array)
            }) {
                if let Some(calls) = last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    calls.push(call);
                }
            } else if let Some(last) = out
                .last_mut()
                .filter(|m| m["role"] == "assistant" && m.get("tool_calls").is_none())
            {
                last["tool_calls"] = json!([call]);
            } else {
                out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
            }
        }
        "function_call_output" => {
            let call_id = string(&format!("{at}.call_id"), item.get("call_id"))?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                None | Some(Value::Null) => {
                    return Err(bad(&format!("{at}.output"), "is required"))
                }
                Some(other) => {
                    return Err(bad(
                        &format!("{at}.output"),
                        format!("must be a string, got {}", json_type(other)),
                    ))
                }
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // The model's reasoning from an earlier turn: no chat provider reads it back.
        "reasoning" => {}
        "item_reference" => {
            return Err(bad(
                &format!("{at}.type"),
                "'item_reference' is not supported: the gateway does not store responses",
            ))
        }
        other => {
            return Err(bad(
                &format!("{at}.type"),
                format!(
                    "must be 'message', 'function_call' or 'function_call_output', got '{other}'"
                ),
            ))
        }
    }
    Ok(())
}

/// One content part as a chat part.
fn part(at: &str, p: &Value) -> Checked<Value> {
    let p = object(at, p)?;
    match p.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            let text = string(&format!("{at}.text"), p.get("text"))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("refusal") => {
            let text = string(&format!("{at}.refusal"), p.get("refusal"))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("input_image") => {
            let url = match p.get("image_url") {
                Some(Value::String(u)) => u.clone(),
                _ if p.get("file_id").is_some() => {
                    return Err(bad(
                        &format!("{at}.file_id"),
                        "is not supported: the gateway has no file storage; give 'image_url' (an https or data URL)",
                    ))
                }
                _ => return Err(bad(&format!("{at}.image_url"), "is required")),
            };
            let mut image = json!({"url": url});
            if let Some(d) = p.get("detail").and_then(Value::as_str) {
                image["detail"] = Value::String(d.to_owned());
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some(other) => Err(bad(
            &format!("{at}.type"),
            format!("must be 'input_text' or 'input_image', got '{other}'"),
        )),
        None => Err(bad(&format!("{at}.type"), "is required")),
    }
}

fn tools(tools: Option<&Value>, out: &mut Map<String, Value>) -> Checked<()> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(l)) => l,
        Some(other) => {
            return Err(bad(
                "tools",
                format!("must be a list, got {}", json_type(other)),
            ))
        }
    };
    let mut translated = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        let t = object(&at, t)?;
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(bad(
                    &format!("{at}.type"),
                    format!(
                    "'{other}' tools are run by OpenAI itself; the gateway serves 'function' tools"
                ),
                ))
            }
            None => return Err(bad(&format!("{at}.type"), "is required")),
        }
        let mut f = Map::new();
        f.insert(
            "name".into(),
            Value::String(string(&format!("{at}.name"), t.get("name"))?),
        );
        for k in ["description", "parameters", "strict"] {
            if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                f.insert(k.into(), v.clone());
            }
        }
        translated.push(json!({"type": "function", "function": f}));
    }
    if !translated.is_empty() {
        out.insert("tools".into(), Value::Array(translated));
    }
    Ok(())
}

fn tool_choice(choice: Option<&Value>, out: &mut Map<String, Value>) -> Checked<()> {
    let mapped = match choice {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Value::String(s.clone())
        }
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = string("tool_choice.name", o.get("name"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        Some(other) => {
            return Err(bad(
                "tool_choice",
                format!(
                    "must be 'auto', 'none', 'required' or {{\"type\": \"function\", \"name\"}}, got {}",
                    json_type(other)
                ),
            ))
        }
    };
    out.insert("tool_choice".into(), mapped);
    Ok(())
}

/// `text.format` as chat's `response_format`.
fn text_format(text: Option<&Value>, out: &mut Map<String, Value>) -> Checked<()> {
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(());
    };
    let f = object("text.format", format)?;
    let rf = match f.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(()),
        Some("json_object") => json!({"type": "json_object"}),
        Some("json_schema") => {
            let mut schema = Map::new();
            schema.insert(
                "name".into(),
                Value::String(string("text.format.name", f.get("name"))?),
            );
            for k in ["schema", "strict", "description"] {
                if let Some(v) = f.get(k).filter(|v| !v.is_null()) {
                    schema.insert(k.into(), v.clone());
                }
            }
            json!({"type": "json_schema", "json_schema": schema})
        }
        _ => {
            return Err(bad(
                "text.format.type",
                "must be 'text', 'json_object' or 'json_schema'",
            ))
        }
    };
    out.insert("response_format".into(), rf);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Answers

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    })
}

/// `status` and `incomplete_details` for a finish reason.
fn status_of(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The `response` object around `output`.
fn response_object(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "metadata": {},
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status})
}

/// The unified response as a Responses `response` object.
pub fn response(resp: &UnifiedResponse, model: &str) -> Map<String, Value> {
    let body = &resp.body;
    let choice = first_choice(body);
    let msg = choice.and_then(|c| c.get("message"));
    let mut output = Vec::new();
    let text = match msg.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        output.push(message_item(&new_id("msg"), &text, "completed"));
    }
    for call in msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let f = call.get("function");
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        output.push(call_item(
            &new_id("fc"),
            &s(call.get("id")),
            &s(f.and_then(|f| f.get("name"))),
            &s(f.and_then(|f| f.get("arguments"))),
            "completed",
        ));
    }
    let (status, incomplete) = status_of(
        choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str),
    );
    let model = body.get("model").and_then(Value::as_str).unwrap_or(model);
    match response_object(
        &new_id("resp"),
        now_secs(),
        model,
        status,
        incomplete,
        output,
        Some(resp.usage.unwrap_or_default()),
    ) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Streams

/// An output item being streamed.
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        tool_index: u64,
    },
}

/// `response.created`, `response.in_progress`, per item `response.output_item.added`, for
/// text `response.content_part.added`, `response.output_text.delta`s,
/// `response.output_text.done`, `response.content_part.done`, for calls
/// `response.function_call_arguments.delta`s and `.done`, then `response.output_item.done`;
/// `response.completed` with the usage last, or `error` after a failure.
pub struct ResponsesStream {
    id: String,
    model: String,
    created: u64,
    seq: u64,
    started: bool,
    open: Option<Item>,
    done: Vec<Value>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl ResponsesStream {
    pub fn new(model: &str) -> Self {
        ResponsesStream {
            id: new_id("resp"),
            model: model.to_owned(),
            created: now_secs(),
            seq: 0,
            started: false,
            open: None,
            done: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    fn event(&mut self, name: &str, mut data: Value, out: &mut Vec<Bytes>) {
        data["type"] = Value::String(name.to_owned());
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        out.push(sse_event(name, &data));
    }

    fn snapshot(&self, status: &str, incomplete: Value, usage: Option<Usage>) -> Value {
        response_object(
            &self.id,
            self.created,
            &self.model,
            status,
            incomplete,
            self.done.clone(),
            usage,
        )
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.snapshot("in_progress", Value::Null, None);
        self.event("response.created", json!({"response": r}), out);
        let r = self.snapshot("in_progress", Value::Null, None);
        self.event("response.in_progress", json!({"response": r}), out);
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        let index = self.done.len();
        let item = match self.open.take() {
            None => return,
            Some(Item::Message { id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    out,
                );
                message_item(&id, &text, "completed")
            }
            Some(Item::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            }) => {
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": arguments}),
                    out,
                );
                call_item(&id, &call_id, &name, &arguments, "completed")
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
        self.done.push(item);
    }

    fn text(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Some(Item::Message { .. })) {
            self.close(out);
            let id = new_id("msg");
            let index = self.done.len();
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": {"type": "message", "id": id,
                    "status": "in_progress", "role": "assistant", "content": []}}),
                out,
            );
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
                out,
            );
            self.open = Some(Item::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.done.len();
        if let Some(Item::Message { id, text }) = &mut self.open {
            text.push_str(delta);
            let id = id.clone();
            self.event(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
                out,
            );
        }
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        let n = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let f = call.get("function");
        let same = matches!(&self.open, Some(Item::Call { tool_index, .. }) if *tool_index == n);
        if !same {
            self.close(out);
            let id = new_id("fc");
            let call_id = call
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let index = self.done.len();
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": call_item(&id, &call_id, &name, "", "in_progress")}),
                out,
            );
            self.open = Some(Item::Call {
                id,
                call_id,
                name,
                arguments: String::new(),
                tool_index: n,
            });
        }
        let Some(delta) = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        let index = self.done.len();
        if let Some(Item::Call { id, arguments, .. }) = &mut self.open {
            arguments.push_str(delta);
            let id = id.clone();
            self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": delta}),
                out,
            );
        }
    }
}

impl StreamWriter for ResponsesStream {
    fn chunk(&mut self, chunk: &StreamChunk) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some(m) = chunk.body.get("model").and_then(Value::as_str) {
            if !self.started {
                m.clone_into(&mut self.model);
            }
        }
        self.start(&mut out);
        if let Some(u) = chunk.usage() {
            self.usage = Some(u);
        }
        let Some(choice) = first_choice(&chunk.body) else {
            return out;
        };
        let delta = choice.get("delta");
        if let Some(t) = delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.text(t, &mut out);
        }
        for call in delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
        {
            self.tool_call(call, &mut out);
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_owned());
        }
        out
    }

    fn end(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        let (status, incomplete) = status_of(self.finish.as_deref());
        let name = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let r = self.snapshot(status, incomplete, Some(self.usage.unwrap_or_default()));
        self.event(name, json!({"response": r}), &mut out);
        out
    }

    fn error(&mut self, e: &GatewayError) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        let code = e.code.as_deref().map(str::to_owned);
        self.event(
            "error",
            json!({"code": code, "message": e.message, "param": e.param}),
            &mut out,
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dialects::anthropic::tests::frames;
    use http::StatusCode;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn request_items_become_chat_messages() {
        let body = to_unified(&obj(json!({
            "model": "openai/gpt-4o-mini",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "Weather?"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ]},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"},
            "max_output_tokens": 50,
            "temperature": 0.2,
            "stream": true,
        })))
        .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "model": "openai/gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather?"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "assistant", "content": "Sunny."},
                    {"role": "user", "content": "thanks"},
                ],
                "max_tokens": 50,
                "temperature": 0.2,
                "stream": true,
                "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
            })
        );
        let plain = to_unified(&obj(json!({"model": "m", "input": "hi"}))).unwrap();
        assert_eq!(
            plain["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (body, path) in [
            (json!({"model": "m"}), "input"),
            (json!({"input": "x"}), "model"),
            (
                json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": "a"}, {"type": "function_call_output", "output": "x"}]}),
                "input[1].call_id",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": -1}),
                "max_output_tokens",
            ),
        ] {
            let e = to_unified(&obj(body.clone())).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), Some(path), "{body}: {}", e.message);
        }
        let e = to_unified(&obj(
            json!({"model": "m", "input": "x", "previous_response_id": "r"}),
        ))
        .unwrap_err();
        assert!(
            e.message.contains("does not store responses"),
            "{}",
            e.message
        );
    }

    #[test]
    fn answer_as_a_response() {
        let resp = UnifiedResponse::ok(obj(json!({
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Let me check.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        })));
        let r = response(&resp, "m");
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert!(r["id"].as_str().unwrap().starts_with("resp_"));
        let out = r["output"].as_array().unwrap();
        assert_eq!(out[0]["type"], "message");
        assert_eq!(
            out[0]["content"][0],
            json!({"type": "output_text", "text": "Let me check.", "annotations": []})
        );
        assert_eq!(out[1]["type"], "function_call");
        assert_eq!(out[1]["call_id"], "call_1");
        assert_eq!(out[1]["arguments"], "{}");
        assert_eq!(r["usage"]["input_tokens"], 3);
        assert_eq!(r["usage"]["total_tokens"], 5);
        let cut = UnifiedResponse::ok(obj(
            json!({"choices": [{"index": 0, "finish_reason": "length", "message": {"content": "a"}}]}),
        ));
        let r = response(&cut, "m");
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn stream_as_typed_events() {
        let mut w = ResponsesStream::new("m");
        let c = |delta: Value, finish: Value| StreamChunk {
            body: obj(
                json!({"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            ),
        };
        let mut out = Vec::new();
        for ch in [
            c(json!({"role": "assistant", "content": ""}), Value::Null),
            c(json!({"content": "Hi"}), Value::Null),
            c(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": "{\"c"}}]}),
                Value::Null,
            ),
            c(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\":1}"}}]}),
                Value::Null,
            ),
            c(json!({}), json!("tool_calls")),
            StreamChunk {
                body: obj(
                    json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
                ),
            },
        ] {
            out.extend(w.chunk(&ch));
        }
        out.extend(w.end());
        let f = frames(&out);
        let names: Vec<&str> = f.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (event, data)) in f.iter().enumerate() {
            assert_eq!(data["type"], event.as_str());
            assert_eq!(data["sequence_number"], i);
        }
        assert_eq!(f[4].1["delta"], "Hi");
        assert_eq!(f[11].1["arguments"], "{\"c\":1}");
        assert_eq!(f[12].1["output_index"], 1);
        let done = &f[13].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["usage"]["input_tokens"], 4);
        assert_eq!(done["usage"]["total_tokens"], 6);
        assert_eq!(done["output"].as_array().unwrap().len(), 2);
        assert_eq!(done["output"][1]["call_id"], "call_1");
    }

    #[test]
    fn stream_error_event() {
        let mut w = ResponsesStream::new("m");
        let e =
            GatewayError::upstream(StatusCode::BAD_GATEWAY, "broken").with_code("upstream_error");
        let f = frames(&w.error(&e));
        assert_eq!(f.last().unwrap().0, "error");
        assert_eq!(f.last().unwrap().1["message"], "broken");
        assert_eq!(f.last().unwrap().1["code"], "upstream_error");
    }
}
