//! Gemini's `generateContent` wire format, as Vertex AI serves it. Used by
//! [`vertex`](super::vertex), which owns the addresses and picks this format for Google's
//! own models: OpenAI chat bodies become `contents`/`systemInstruction`/`tools`/
//! `generationConfig`, and `GenerateContentResponse`s (whole or one per SSE event) become
//! OpenAI completions and chunks. Google's error bodies (`{"error": {"code", "message",
//! "status"}}`) are read here too, for HTTP errors and errors inside a stream alike.
//!
//! Safety blocks are errors, not empty answers: a blocked prompt or an answer withheld by
//! a filter becomes an upstream 400 with code `content_filter` whose message carries
//! Google's reason and the ratings that tripped it.

// Helpers return the `GatewayError` the `Provider` trait returns; errors are the cold
// path, and boxing them here would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::providers::anthropic::{now_secs, text_only};
use crate::providers::openai::{build_upstream_error, error_text, malformed};
use crate::providers::{Frame, StreamDecoder, StreamEvent};
use crate::schema::{StreamChunk, UnifiedRequest, Usage};

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(Some(param), message)
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI chat → Gemini generateContent

/// Translate an OpenAI chat body to a `generateContent` body (the model is in the URL).
pub(crate) fn to_gemini(req: &UnifiedRequest) -> Result<Map<String, Value>, GatewayError> {
    let src = &req.body;
    let mut out = Map::new();

    let messages = match src.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(bad("messages", "`messages` must be an array")),
        None => return Err(bad("messages", "`messages` is required")),
    };
    let (system, contents) = translate_messages(messages)?;
    if !system.is_empty() {
        let parts: Vec<Value> = system.into_iter().map(|t| json!({"text": t})).collect();
        out.insert("systemInstruction".into(), json!({"parts": parts}));
    }
    out.insert("contents".into(), Value::Array(contents));

    // Fields that change the answer and have no Gemini equivalent are refused, not
    // dropped: the client would otherwise get something other than what it asked for.
    if src.get("logprobs").and_then(Value::as_bool) == Some(true)
        || src.get("top_logprobs").is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "logprobs",
            "log probabilities are not translated for Vertex AI Gemini models",
        ));
    }
    if src
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(bad(
            "logit_bias",
            "Vertex AI Gemini models do not support `logit_bias`",
        ));
    }
    if src.get("functions").is_some_and(|v| !v.is_null()) {
        return Err(bad(
            "functions",
            "the deprecated `functions` field is not translated for Vertex AI; use `tools`",
        ));
    }
    let audio_out = src.get("audio").is_some_and(|v| !v.is_null());
    let other_modality = src
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x.as_str() != Some("text")));
    if audio_out || other_modality {
        return Err(bad(
            if audio_out { "audio" } else { "modalities" },
            "only text output is translated for Vertex AI Gemini models",
        ));
    }

    let config = generation_config(src)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }

    let mut declared = Vec::new();
    if let Some(tools) = src.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| bad("tools", "`tools` must be an array"))?;
        if !tools.is_empty() {
            let decls = translate_tools(tools)?;
            declared = decls
                .iter()
                .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect();
            out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        }
    }
    match src.get("tool_choice") {
        None | Some(Value::Null) => {}
        // Gemini rejects a tool config without tools; without tools every choice but a
        // forced call means "answer in text", which is what Gemini does anyway.
        Some(choice) if declared.is_empty() => {
            if translate_tool_choice(choice, &declared)?["mode"] == "ANY" {
                return Err(bad(
                    "tool_choice",
                    "`tool_choice` asks for a tool call but `tools` is empty",
                ));
            }
        }
        Some(choice) => {
            let config = translate_tool_choice(choice, &declared)?;
            out.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
    }
    // `parallel_tool_calls`, `user`, `metadata`, `store`, `service_tier`, `stream_options`
    // and `reasoning_effort` have no generateContent field and are dropped: none of them
    // changes what a correct answer looks like.
    Ok(out)
}

/// `generationConfig` from OpenAI's sampling fields.
fn generation_config(src: &Map<String, Value>) -> Result<Map<String, Value>, GatewayError> {
    let mut config = Map::new();

    let max_tokens = src
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| {
            src.get("max_tokens")
                .filter(|v| !v.is_null())
                .map(|v| ("max_tokens", v))
        });
    if let Some((param, v)) = max_tokens {
        let n = v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(param, format!("`{param}` must be a positive integer")))?;
        config.insert("maxOutputTokens".into(), n.into());
    }

    for (field, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        // Not OpenAI's, but clients of open models send it and Gemini has it.
        ("top_k", "topK"),
    ] {
        match src.get(field) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => {
                config.insert(gemini.into(), v.clone());
            }
            Some(_) => return Err(bad(field, format!("`{field}` must be a number"))),
        }
    }

    match src.get("seed") {
        None | Some(Value::Null) => {}
        Some(v) if v.is_i64() || v.is_u64() => {
            config.insert("seed".into(), v.clone());
        }
        Some(_) => return Err(bad("seed", "`seed` must be an integer")),
    }

    match src.get("n") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let n = v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("n", "`n` must be a positive integer"))?;
            if n != 1 {
                config.insert("candidateCount".into(), n.into());
            }
        }
    }

    match src.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            let mut seqs = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let s = s
                    .as_str()
                    .ok_or_else(|| bad(&format!("stop[{i}]"), "stop sequences must be strings"))?;
                seqs.push(Value::String(s.to_owned()));
            }
            if !seqs.is_empty() {
                config.insert("stopSequences".into(), Value::Array(seqs));
            }
        }
        Some(_) => {
            return Err(bad(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    }

    match src.get("response_format") {
        None | Some(Value::Null) => {}
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        bad(
                            "response_format.json_schema.schema",
                            "`json_schema` response formats need a `schema` object",
                        )
                    })?;
                config.insert("responseMimeType".into(), "application/json".into());
                config.insert(
                    "responseSchema".into(),
                    gemini_schema(schema, "response_format.json_schema.schema")?,
                );
            }
            _ => {
                return Err(bad(
                    "response_format.type",
                    "`response_format.type` must be `text`, `json_object` or `json_schema`",
                ))
            }
        },
    }
    Ok(config)
}

/// System instruction texts and the merged `user`/`model` turns.
fn translate_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    // Gemini wants turns to alternate, so consecutive same-role messages share one turn.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Gemini names a function response by the function, not by a call id: each tool
    // result finds its name through the id of the assistant call it answers.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, msg) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let msg = msg
            .as_object()
            .ok_or_else(|| bad(&at, "each message must be an object"))?;
        let role = msg
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{at}.role"), "each message needs a string `role`"))?;
        let content = msg.get("content").unwrap_or(&Value::Null);
        let (role, parts) = match role {
            "system" | "developer" => {
                let text = text_only(content, &format!("{at}.content"))?;
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => {
                if content.is_null() {
                    return Err(bad(
                        &format!("{at}.content"),
                        "user messages need `content`",
                    ));
                }
                ("user", content_parts(content, &format!("{at}.content"))?)
            }
            "assistant" => {
                let mut parts = content_parts(content, &format!("{at}.content"))?;
                if let Some(calls) = msg.get("tool_calls").filter(|v| !v.is_null()) {
                    let at = format!("{at}.tool_calls");
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| bad(&at, "`tool_calls` must be an array"))?;
                    for (j, call) in calls.iter().enumerate() {
                        let (id, name, part) = function_call_part(call, &format!("{at}[{j}]"))?;
                        if let Some(id) = id {
                            call_names.insert(id, name);
                        }
                        parts.push(part);
                    }
                }
                ("model", parts)
            }
            "tool" => {
                let id_at = format!("{at}.tool_call_id");
                let id = msg
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&id_at, "tool messages need a string `tool_call_id`"))?;
                let name = call_names.get(id).ok_or_else(|| {
                    bad(
                        &id_at,
                        format!(
                            "no earlier assistant tool call has id `{id}`; Gemini needs the \
                             function name of every tool result"
                        ),
                    )
                })?;
                let text = if content.is_null() {
                    String::new()
                } else {
                    text_only(content, &format!("{at}.content"))?
                };
                // A result that is a JSON object goes as structure, anything else as text;
                // either way under one key, since Gemini wants an object here.
                let result = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => Value::String(text),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {
                        "name": name,
                        "response": {"content": result},
                    }})],
                )
            }
            other => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("unsupported role `{other}` for Vertex AI Gemini models"),
                ))
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    // Gemini rejects a turn without parts (an assistant message that only said "").
    let contents: Vec<Value> = turns
        .into_iter()
        .filter(|(_, parts)| !parts.is_empty())
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    if contents.is_empty() {
        return Err(bad(
            "messages",
            "at least one user or assistant message with content is required",
        ));
    }
    Ok((system, contents))
}

/// Parts of a user or assistant message. Empty text is dropped: Gemini rejects empty
/// text parts, and assistants with tool calls often send `""`.
fn content_parts(content: &Value, at: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for (j, item) in items.iter().enumerate() {
                let pat = format!("{at}[{j}]");
                let kind = item
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&format!("{pat}.type"), "content parts need a `type`"))?;
                match kind {
                    "text" => {
                        let text = item.get("text").and_then(Value::as_str).ok_or_else(|| {
                            bad(&format!("{pat}.text"), "text parts need a string `text`")
                        })?;
                        if !text.is_empty() {
                            parts.push(json!({"text": text}));
                        }
                    }
                    "image_url" => {
                        let image = item.get("image_url");
                        let url = image
                            .and_then(|i| i.get("url"))
                            .or(image)
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                bad(&format!("{pat}.image_url.url"), "image parts need a `url`")
                            })?;
                        parts.push(media_part(url, &format!("{pat}.image_url.url"))?);
                    }
                    "input_audio" => parts.push(audio_part(item, &pat)?),
                    "file" => parts.push(file_part(item, &pat)?),
                    // Assistant refusals are the model's own words; history keeps them.
                    "refusal" => {
                        if let Some(text) = item
                            .get("refusal")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            parts.push(json!({"text": text}));
                        }
                    }
                    other => {
                        return Err(bad(
                            &format!("{pat}.type"),
                            format!(
                                "content part type `{other}` is not supported by Vertex AI Gemini models"
                            ),
                        ))
                    }
                }
            }
            Ok(parts)
        }
        _ => Err(bad(at, "content must be a string or an array of parts")),
    }
}

/// A media part from a URL: data URLs inline, `gs://` and http(s) URLs by reference.
fn media_part(url: &str, at: &str) -> Result<Value, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let mime = meta.strip_suffix(";base64").filter(|m| !m.is_empty());
        return match mime {
            Some(mime) if !data.is_empty() => {
                Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
            }
            _ => Err(bad(
                at,
                "data URLs must look like `data:image/png;base64,<data>`",
            )),
        };
    }
    if url.starts_with("gs://") || url.starts_with("https://") || url.starts_with("http://") {
        // Gemini needs the type of a referenced file and does not look it up itself.
        let mime = mime_from_extension(url).ok_or_else(|| {
            bad(
                at,
                "cannot tell the media type of this URL from its extension (png, jpg, jpeg, \
                 webp, heic, heif, pdf, mp3, wav, flac, ogg, mp4, mov, webm, txt); send it as a \
                 base64 data URL instead",
            )
        })?;
        return Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}));
    }
    Err(bad(
        at,
        "media URLs must be base64 data URLs, gs:// or http(s) URLs",
    ))
}

/// The media type Gemini accepts for a file named like the URL's last path segment.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "txt" => "text/plain",
        _ => return None,
    })
}

/// OpenAI `input_audio` (`{"data": <base64>, "format": "wav" | "mp3"}`) as inline data.
fn audio_part(item: &Value, at: &str) -> Result<Value, GatewayError> {
    let audio = item.get("input_audio");
    let data = audio
        .and_then(|a| a.get("data"))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            bad(
                &format!("{at}.input_audio.data"),
                "audio parts need base64 `data`",
            )
        })?;
    let mime = match audio.and_then(|a| a.get("format")).and_then(Value::as_str) {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        _ => {
            return Err(bad(
                &format!("{at}.input_audio.format"),
                "audio `format` must be `wav` or `mp3`",
            ))
        }
    };
    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
}

/// OpenAI `file` parts: `file_data` (a data URL) inline; uploaded `file_id`s live in
/// OpenAI's storage, which Vertex AI cannot read.
fn file_part(item: &Value, at: &str) -> Result<Value, GatewayError> {
    let file = item.get("file");
    if let Some(data) = file
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
    {
        return media_part(data, &format!("{at}.file.file_data"));
    }
    if file.and_then(|f| f.get("file_id")).is_some() {
        return Err(bad(
            &format!("{at}.file.file_id"),
            "uploaded OpenAI files cannot be read by Vertex AI; send `file_data` as a data URL",
        ));
    }
    Err(bad(
        &format!("{at}.file.file_data"),
        "file parts need `file_data`",
    ))
}

/// One assistant tool call as a `functionCall` part: its id (if any), its name, the part.
fn function_call_part<'a>(
    call: &'a Value,
    at: &str,
) -> Result<(Option<&'a str>, &'a str, Value), GatewayError> {
    let id = call.get("id").and_then(Value::as_str);
    let function = call.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                &format!("{at}.function.name"),
                "tool calls need a function name",
            )
        })?;
    let args_at = format!("{at}.function.arguments");
    let args = match function.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
            bad(
                &args_at,
                format!("tool call arguments are not valid JSON: {e}"),
            )
        })?,
        // Some clients send the arguments already parsed.
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(bad(&args_at, "tool call arguments must be a JSON string")),
    };
    if !args.is_object() {
        return Err(bad(
            &args_at,
            "tool call arguments must be a JSON object (Gemini takes named arguments)",
        ));
    }
    let mut part = Map::new();
    part.insert("functionCall".into(), json!({"name": name, "args": args}));
    // Gemini 3 refuses a function call turn without the signature it sent with the call;
    // it travels through the client as Google's own OpenAI endpoint carries it.
    if let Some(sig) = call
        .get("extra_content")
        .and_then(|e| e.get("google"))
        .and_then(|g| g.get("thought_signature"))
        .and_then(Value::as_str)
    {
        part.insert("thoughtSignature".into(), sig.into());
    }
    Ok((id, name, Value::Object(part)))
}

fn translate_tools(tools: &[Value]) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("tools[{i}].type"),
                "only `function` tools are supported by Vertex AI Gemini models",
            ));
        }
        let f = tool.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("tools[{i}].function.name"), "tools need a name"))?;
        let mut decl = Map::new();
        decl.insert("name".into(), name.into());
        if let Some(d) = f.and_then(|f| f.get("description")).and_then(Value::as_str) {
            decl.insert("description".into(), d.into());
        }
        if let Some(params) = f.and_then(|f| f.get("parameters")).filter(|p| !p.is_null()) {
            let at = format!("tools[{i}].function.parameters");
            if !params.is_object() {
                return Err(bad(&at, "`parameters` must be a JSON Schema object"));
            }
            let schema = gemini_schema(params, &at)?;
            // Gemini refuses an OBJECT without properties; a function without arguments
            // is declared without parameters instead.
            let empty = schema
                .get("properties")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if !(schema.get("type") == Some(&Value::from("OBJECT")) && empty) {
                decl.insert("parameters".into(), schema);
            }
        }
        out.push(Value::Object(decl));
    }
    Ok(out)
}

/// `functionCallingConfig` for an OpenAI `tool_choice`.
fn translate_tool_choice(choice: &Value, declared: &[String]) -> Result<Value, GatewayError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"mode": "AUTO"})),
            "none" => Ok(json!({"mode": "NONE"})),
            "required" => Ok(json!({"mode": "ANY"})),
            other => Err(bad("tool_choice", format!("unknown tool_choice `{other}`"))),
        },
        Value::Object(obj) => {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad(
                        "tool_choice.function.name",
                        "tool_choice needs a function name",
                    )
                })?;
            if !declared.is_empty() && !declared.iter().any(|d| d == name) {
                return Err(bad(
                    "tool_choice.function.name",
                    format!("`{name}` is not one of `tools`"),
                ));
            }
            Ok(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
        }
        _ => Err(bad(
            "tool_choice",
            "`tool_choice` must be a string or an object",
        )),
    }
}

/// The keys of Vertex AI's `Schema` (a subset of OpenAPI 3.0). Everything else a JSON
/// Schema may hold — `additionalProperties`, `$schema`, `$id`, `$comment`, `strict`,
/// `examples`, `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`, `uniqueItems`,
/// `patternProperties`, `not`, `if`/`then`/`else`, `readOnly`, `deprecated`... — makes
/// Vertex refuse the whole request, so it is dropped. `$ref`s into `$defs`/`definitions`
/// are inlined, `allOf` is merged, `oneOf` becomes `anyOf`, `const` a one-value `enum`,
/// and a `type` list with `"null"` becomes `nullable`.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "default",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "properties",
    "propertyOrdering",
    "required",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
];

/// How deep `$ref`s may nest before the schema counts as recursive (Gemini has no
/// references, so a recursive schema cannot be written out).
const MAX_REF_DEPTH: usize = 16;

/// A JSON Schema as a Vertex AI `Schema`.
pub(crate) fn gemini_schema(schema: &Value, at: &str) -> Result<Value, GatewayError> {
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    sanitize_schema(schema, defs, 0, at)
}

fn sanitize_schema(
    schema: &Value,
    defs: &Map<String, Value>,
    depth: usize,
    at: &str,
) -> Result<Value, GatewayError> {
    // `true` (anything goes) and other non-objects: no constraint.
    let Value::Object(obj) = schema else {
        return Ok(json!({}));
    };
    if let Some(reference) = obj.get("$ref") {
        let target = reference
            .as_str()
            .and_then(|r| {
                r.strip_prefix("#/$defs/")
                    .or_else(|| r.strip_prefix("#/definitions/"))
            })
            .and_then(|name| defs.get(name))
            .ok_or_else(|| {
                bad(
                    &format!("{at}.$ref"),
                    "only `$ref`s to `#/$defs/...` or `#/definitions/...` can be translated for Gemini",
                )
            })?;
        if depth >= MAX_REF_DEPTH {
            return Err(bad(
                &format!("{at}.$ref"),
                "recursive schemas cannot be translated for Gemini (it has no `$ref`)",
            ));
        }
        let mut inlined = sanitize_schema(target, defs, depth + 1, at)?;
        // Keys beside a `$ref` (a description, usually) refine the referenced schema.
        if let (Value::Object(inlined), Value::Object(rest)) = (
            &mut inlined,
            sanitize_schema(&strip_ref(obj), defs, depth, at)?,
        ) {
            inlined.extend(rest);
        }
        return Ok(inlined);
    }

    let mut out = Map::new();
    if let Some(Value::Array(all)) = obj.get("allOf") {
        for (k, sub) in all.iter().enumerate() {
            if let Value::Object(sub) =
                sanitize_schema(sub, defs, depth, &format!("{at}.allOf[{k}]"))?
            {
                out.extend(sub);
            }
        }
    }
    for (key, value) in obj {
        match key.as_str() {
            "type" => match value {
                // Vertex has no NULL type, only `nullable`.
                Value::String(t) if t == "null" => {
                    out.insert("nullable".into(), true.into());
                }
                Value::String(t) => {
                    out.insert("type".into(), t.to_ascii_uppercase().into());
                }
                Value::Array(types) => {
                    let mut named: Vec<String> = Vec::new();
                    for t in types.iter().filter_map(Value::as_str) {
                        if t == "null" {
                            out.insert("nullable".into(), true.into());
                        } else {
                            named.push(t.to_ascii_uppercase());
                        }
                    }
                    match named.as_slice() {
                        [] => {}
                        [one] => {
                            out.insert("type".into(), one.as_str().into());
                        }
                        _ => {
                            let any: Vec<Value> =
                                named.iter().map(|t| json!({"type": t})).collect();
                            out.insert("anyOf".into(), Value::Array(any));
                        }
                    }
                }
                _ => {}
            },
            "properties" => {
                if let Value::Object(props) = value {
                    let mut translated = Map::new();
                    for (name, prop) in props {
                        translated.insert(
                            name.clone(),
                            sanitize_schema(prop, defs, depth, &format!("{at}.properties.{name}"))?,
                        );
                    }
                    out.insert("properties".into(), Value::Object(translated));
                }
            }
            // Tuple `items` (an array) has no Gemini form; the array stays unconstrained.
            "items" if value.is_object() || value.is_boolean() => {
                out.insert(
                    "items".into(),
                    sanitize_schema(value, defs, depth, &format!("{at}.items"))?,
                );
            }
            "anyOf" | "oneOf" => {
                if let Value::Array(subs) = value {
                    let mut any = Vec::with_capacity(subs.len());
                    for (k, sub) in subs.iter().enumerate() {
                        let sub_at = format!("{at}.{key}[{k}]");
                        let sub = sanitize_schema(sub, defs, depth, &sub_at)?;
                        // `{"type": "null"}` alternatives become `nullable`.
                        if sub.get("nullable") == Some(&Value::Bool(true))
                            && sub.as_object().is_some_and(|s| s.len() == 1)
                        {
                            out.insert("nullable".into(), true.into());
                        } else {
                            any.push(sub);
                        }
                    }
                    match any.len() {
                        0 => {}
                        1 => {
                            if let Some(Value::Object(only)) = any.pop() {
                                for (k, v) in only {
                                    out.entry(k).or_insert(v);
                                }
                            }
                        }
                        _ => {
                            out.insert("anyOf".into(), Value::Array(any));
                        }
                    }
                }
            }
            // Vertex's enum holds strings (`{type: INTEGER, format: enum, enum: ["101"]}`).
            "enum" => {
                if let Value::Array(values) = value {
                    out.insert(
                        "enum".into(),
                        Value::Array(values.iter().map(enum_text).collect()),
                    );
                }
            }
            "const" if !obj.contains_key("enum") => {
                out.insert("enum".into(), json!([enum_text(value)]));
            }
            "required" | "propertyOrdering" => {
                if let Value::Array(names) = value {
                    let names: Vec<Value> =
                        names.iter().filter(|n| n.is_string()).cloned().collect();
                    out.insert(key.clone(), Value::Array(names));
                }
            }
            k if SCHEMA_KEYS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn strip_ref(obj: &Map<String, Value>) -> Value {
    let mut rest = obj.clone();
    rest.remove("$ref");
    Value::Object(rest)
}

fn enum_text(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        other => Value::String(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Response: GenerateContentResponse → OpenAI chat.completion

/// An OpenAI completion id for answers that carry no `responseId`.
fn fresh_id() -> String {
    format!("chatcmpl-{:016x}", rand::random::<u64>())
}

/// A count Google reported, as `u32`; beyond it saturates, garbage counts as 0.
fn count(v: Option<&Value>) -> u32 {
    match v {
        Some(Value::Number(n)) => n.as_u64().map_or_else(
            || {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .map_or(0, |f| {
                        if f >= u32::MAX as f64 {
                            u32::MAX
                        } else {
                            f as u32
                        }
                    })
            },
            |n| u32::try_from(n).unwrap_or(u32::MAX),
        ),
        _ => 0,
    }
}

/// OpenAI usage from `usageMetadata`. Thinking tokens are billed as output, so they
/// count as completion tokens, as OpenAI counts reasoning tokens.
fn usage_of(meta: &Value) -> Usage {
    let prompt = count(meta.get("promptTokenCount"));
    let completion = count(meta.get("candidatesTokenCount"))
        .saturating_add(count(meta.get("thoughtsTokenCount")));
    Usage::new(prompt, completion, count(meta.get("totalTokenCount")))
}

/// Whether `finishReason` says a filter withheld (part of) the answer.
fn is_filtered(reason: &str) -> bool {
    matches!(
        reason,
        "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "MODEL_ARMOR"
    )
}

/// OpenAI's `finish_reason` for a Gemini `finishReason`.
fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        r if is_filtered(r) => "content_filter",
        _ if has_tool_calls => "tool_calls",
        // STOP, OTHER, FINISH_REASON_UNSPECIFIED and reasons newer than this code.
        _ => "stop",
    }
}

/// The ratings worth naming in a block message: the ones Google marked as blocking, or
/// failing that the ones rated above low.
fn rating_text(ratings: Option<&Value>) -> String {
    let ratings = ratings
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let blocked: Vec<&Value> = ratings
        .iter()
        .filter(|r| r.get("blocked").and_then(Value::as_bool) == Some(true))
        .collect();
    let chosen = if blocked.is_empty() {
        ratings
            .iter()
            .filter(|r| {
                matches!(
                    r.get("probability").and_then(Value::as_str),
                    Some("MEDIUM" | "HIGH")
                )
            })
            .collect()
    } else {
        blocked
    };
    chosen
        .iter()
        .map(|r| {
            let category = r.get("category").and_then(Value::as_str).unwrap_or("?");
            let probability = r.get("probability").and_then(Value::as_str).unwrap_or("?");
            format!("{category} (probability {probability})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A block by Google's filters: an upstream 400 that is not worth retrying (the same
/// request gets the same verdict), with Google's reason in the message.
fn blocked(
    provider: &str,
    what: &str,
    reason: &str,
    detail: Option<&str>,
    ratings: Option<&Value>,
) -> GatewayError {
    let mut message = format!("provider {provider} blocked the {what}: {reason}");
    if let Some(detail) = detail.filter(|d| !d.is_empty()) {
        message.push_str(&format!(" ({detail})"));
    }
    let ratings = rating_text(ratings);
    if !ratings.is_empty() {
        message.push_str(&format!("; safety ratings: {ratings}"));
    }
    GatewayError::upstream(StatusCode::BAD_REQUEST, message)
        .with_code("content_filter")
        .retryable(false)
}

/// The error of a response whose prompt Google blocked, if it was.
fn prompt_block(provider: &str, resp: &Map<String, Value>) -> Option<GatewayError> {
    let feedback = resp.get("promptFeedback")?;
    let reason = feedback.get("blockReason").and_then(Value::as_str)?;
    let has_candidates = resp
        .get("candidates")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if has_candidates {
        return None;
    }
    Some(blocked(
        provider,
        "prompt",
        reason,
        feedback.get("blockReasonMessage").and_then(Value::as_str),
        feedback.get("safetyRatings"),
    ))
}

/// The error of a candidate that a filter emptied, or that broke its own function call.
fn withheld(provider: &str, cand: &Value, reason: &str) -> GatewayError {
    if reason == "MALFORMED_FUNCTION_CALL" {
        // Sampling made it; another try may well make a valid call.
        return GatewayError::upstream(
            StatusCode::BAD_GATEWAY,
            format!(
                "provider {provider} answered with a malformed function call{}",
                cand.get("finishMessage")
                    .and_then(Value::as_str)
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        )
        .with_code("malformed_function_call")
        .retryable(true);
    }
    blocked(
        provider,
        "answer",
        reason,
        cand.get("finishMessage").and_then(Value::as_str),
        cand.get("safetyRatings"),
    )
}

/// What one candidate's parts say: the text (thought summaries left out: OpenAI chat has
/// no place for them) and the function calls as OpenAI tool calls, numbered from
/// `first_call`.
fn read_parts(cand: &Value, first_call: usize) -> (Option<String>, Vec<Map<String, Value>>) {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    let parts = cand
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for part in parts {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.get_or_insert_with(String::new).push_str(t);
        } else if let Some(fc) = part.get("functionCall") {
            let n = first_call + calls.len();
            let args = fc.get("args").cloned().unwrap_or_else(|| json!({}));
            let mut call = Map::new();
            // Gemini gives calls no id; the position is stable across a stream and a
            // retry, and the tool result's id leads back to the name through history.
            call.insert("id".into(), format!("call_{n}").into());
            call.insert("type".into(), "function".into());
            call.insert(
                "function".into(),
                json!({
                    "name": fc.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": args.to_string(),
                }),
            );
            if let Some(sig) = part.get("thoughtSignature").and_then(Value::as_str) {
                call.insert(
                    "extra_content".into(),
                    json!({"google": {"thought_signature": sig}}),
                );
            }
            calls.push(call);
        }
        // inlineData, executableCode, codeExecutionResult: no OpenAI chat equivalent.
    }
    (text, calls)
}

fn candidate_index(cand: &Value, position: usize) -> u64 {
    cand.get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64)
}

/// A `generateContent` answer as an OpenAI `chat.completion`.
pub(crate) fn from_gemini(
    provider: &str,
    resp: &Map<String, Value>,
    fallback_model: &str,
) -> Result<Map<String, Value>, GatewayError> {
    if let Some(err) = resp.get("error") {
        return Err(google_error_value(err, &HeaderMap::new(), None));
    }
    if let Some(e) = prompt_block(provider, resp) {
        return Err(e);
    }
    let candidates = resp
        .get("candidates")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if candidates.is_empty() {
        return Err(malformed(provider, "the answer holds no candidates"));
    }
    let mut choices = Vec::with_capacity(candidates.len());
    let mut withheld_error = None;
    for (pos, cand) in candidates.iter().enumerate() {
        let (text, calls) = read_parts(cand, 0);
        let reason = cand.get("finishReason").and_then(Value::as_str);
        if let Some(r) = reason {
            if text.is_none()
                && calls.is_empty()
                && (is_filtered(r) || r == "MALFORMED_FUNCTION_CALL")
            {
                withheld_error.get_or_insert_with(|| withheld(provider, cand, r));
            }
        }
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert("content".into(), text.map_or(Value::Null, Value::String));
        let has_calls = !calls.is_empty();
        if has_calls {
            message.insert(
                "tool_calls".into(),
                Value::Array(calls.into_iter().map(Value::Object).collect()),
            );
        }
        choices.push(json!({
            "index": candidate_index(cand, pos),
            "message": message,
            "finish_reason": finish_reason(reason.unwrap_or("STOP"), has_calls),
        }));
    }
    // Only when every candidate came back empty is there no answer to give.
    if let Some(e) = withheld_error {
        let all_empty = choices
            .iter()
            .all(|c| c["message"]["content"].is_null() && c["message"].get("tool_calls").is_none());
        if all_empty {
            return Err(e);
        }
    }
    let model = resp
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(fallback_model);
    let id = resp
        .get("responseId")
        .and_then(Value::as_str)
        .map_or_else(fresh_id, str::to_owned);
    let usage = resp.get("usageMetadata").map(usage_of).unwrap_or_default();
    let out = json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": choices,
        "usage": usage.to_openai(),
    });
    Ok(match out {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

// ---------------------------------------------------------------------------------------
// Streaming: one GenerateContentResponse per SSE event → OpenAI chunks

#[derive(Default)]
struct CandidateState {
    /// The opening `role: assistant` went out.
    opened: bool,
    /// Tool calls so far, for the next call's index and id.
    calls: usize,
    /// Text or a tool call went out.
    answered: bool,
}

/// Decodes `streamGenerateContent?alt=sse`. There is no end marker: the stream ends with
/// the body, so the usage chunk goes out with (or after) the first finish reason.
pub(crate) struct GeminiStreamDecoder {
    provider: String,
    id: Option<String>,
    model: String,
    created: u64,
    /// By candidate index; a map because the index is the provider's to choose.
    candidates: HashMap<u64, CandidateState>,
    finished: bool,
}

impl GeminiStreamDecoder {
    pub(crate) fn new(provider: &str, model: &str) -> Self {
        GeminiStreamDecoder {
            provider: provider.to_owned(),
            id: None,
            model: model.to_owned(),
            created: now_secs(),
            candidates: HashMap::new(),
            finished: false,
        }
    }

    fn chunk(&mut self, extra: Map<String, Value>) -> StreamEvent {
        let mut body = Map::new();
        body.insert(
            "id".into(),
            self.id.get_or_insert_with(fresh_id).clone().into(),
        );
        body.insert("object".into(), "chat.completion.chunk".into());
        body.insert("created".into(), self.created.into());
        body.insert("model".into(), self.model.clone().into());
        body.extend(extra);
        StreamEvent::Chunk(StreamChunk { body })
    }
}

impl StreamDecoder for GeminiStreamDecoder {
    fn decode(&mut self, frame: &Frame) -> Result<Vec<StreamEvent>, GatewayError> {
        let data = frame.sse(&self.provider)?.data.trim();
        if data.is_empty() {
            return Ok(vec![StreamEvent::Skip]);
        }
        let resp = match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(malformed(&self.provider, "expected a JSON object")),
            Err(e) => return Err(malformed(&self.provider, e)),
        };
        if let Some(err) = resp.get("error") {
            return Err(google_error_value(err, &HeaderMap::new(), None));
        }
        if let Some(e) = prompt_block(&self.provider, &resp) {
            return Err(e);
        }
        if let Some(id) = resp.get("responseId").and_then(Value::as_str) {
            if self.id.is_none() {
                self.id = Some(id.to_owned());
            }
        }
        if let Some(model) = resp.get("modelVersion").and_then(Value::as_str) {
            model.clone_into(&mut self.model);
        }

        let mut out = Vec::new();
        let candidates = resp
            .get("candidates")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (pos, cand) in candidates.iter().enumerate() {
            let index = candidate_index(cand, pos);
            let state = self.candidates.entry(index).or_default();
            let (text, calls) = read_parts(cand, state.calls);
            let text = text.filter(|t| !t.is_empty());
            let reason = cand.get("finishReason").and_then(Value::as_str);
            let answered_now = text.is_some() || !calls.is_empty();
            if let Some(r) = reason {
                if !state.answered
                    && !answered_now
                    && (is_filtered(r) || r == "MALFORMED_FUNCTION_CALL")
                {
                    let nothing_sent = self.candidates.values().all(|s| !s.answered);
                    if nothing_sent {
                        return Err(withheld(&self.provider, cand, r));
                    }
                }
            }
            let state = self.candidates.entry(index).or_default();
            let mut delta = Map::new();
            if !state.opened && (answered_now || reason.is_some()) {
                delta.insert("role".into(), "assistant".into());
                state.opened = true;
            }
            if let Some(t) = text {
                delta.insert("content".into(), t.into());
            }
            if !calls.is_empty() {
                let first = state.calls;
                state.calls += calls.len();
                let calls: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut call)| {
                        call.insert("index".into(), (first + k).into());
                        Value::Object(call)
                    })
                    .collect();
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            state.answered |= answered_now;
            let finish = reason.map(|r| finish_reason(r, state.calls > 0));
            if delta.is_empty() && finish.is_none() {
                continue;
            }
            if finish.is_some() {
                self.finished = true;
            }
            let mut choice = Map::new();
            choice.insert("index".into(), index.into());
            choice.insert("delta".into(), Value::Object(delta));
            choice.insert(
                "finish_reason".into(),
                finish.map_or(Value::Null, Value::from),
            );
            let mut extra = Map::new();
            extra.insert("choices".into(), json!([choice]));
            out.push(self.chunk(extra));
        }
        // Vertex may repeat running usage on every event; the count that matters is the
        // one beside (or after) the finish.
        if self.finished {
            if let Some(meta) = resp.get("usageMetadata") {
                let mut extra = Map::new();
                extra.insert("choices".into(), json!([]));
                extra.insert("usage".into(), usage_of(meta).to_openai());
                out.push(self.chunk(extra));
            }
        }
        if out.is_empty() {
            out.push(StreamEvent::Skip);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Errors: Google's `{"error": {"code", "message", "status", "details"}}`

/// The HTTP status Google pairs with a canonical error `status`.
fn status_of(status: &str) -> Option<StatusCode> {
    Some(match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => StatusCode::BAD_REQUEST,
        "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
        "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
        "NOT_FOUND" => StatusCode::NOT_FOUND,
        "ALREADY_EXISTS" | "ABORTED" => StatusCode::CONFLICT,
        "RESOURCE_EXHAUSTED" => StatusCode::TOO_MANY_REQUESTS,
        "CANCELLED" => StatusCode::from_u16(499).ok()?,
        "UNIMPLEMENTED" => StatusCode::NOT_IMPLEMENTED,
        "UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
        "DEADLINE_EXCEEDED" => StatusCode::GATEWAY_TIMEOUT,
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => return None,
    })
}

/// Whether the same request may succeed later: quota (429), and Google's transient
/// server states (500 INTERNAL, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED), plus 408 and 502
/// from the front ends. 501 UNIMPLEMENTED and the 4xx are the request's own fault.
fn google_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `google.rpc.RetryInfo`'s `retryDelay` (`"30s"`, `"1.5s"`), when the header gave none.
fn retry_delay(details: Option<&Value>) -> Option<Duration> {
    details?.as_array()?.iter().find_map(|d| {
        let delay = d.get("retryDelay")?.as_str()?.strip_suffix('s')?;
        let secs = delay
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)?;
        Some(Duration::from_secs_f64(secs.min(86_400.0)))
    })
}

/// The `google.rpc.ErrorInfo` reason (`RATE_LIMIT_EXCEEDED`, ...), as the error code.
fn error_reason(details: Option<&Value>) -> Option<String> {
    details?.as_array()?.iter().find_map(|d| {
        d.get("reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
    })
}

/// A Google `error` object as an upstream error. `http_status` is the response's, when
/// there was one; inside a stream the status comes from the error itself.
fn google_error_value(
    err: &Value,
    headers: &HeaderMap,
    http_status: Option<StatusCode>,
) -> GatewayError {
    let canonical = err.get("status").and_then(Value::as_str);
    let status = http_status
        .or_else(|| {
            err.get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
        })
        .or_else(|| canonical.and_then(status_of))
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map_or_else(
            || format!("the provider reported {}", canonical.unwrap_or("an error")),
            str::to_owned,
        );
    let details = err.get("details");
    let mut e = build_upstream_error(
        status,
        headers,
        message,
        canonical.map(str::to_owned),
        error_reason(details),
        None,
    )
    .retryable(google_retryable(status));
    if e.retry_after.is_none() {
        e.retry_after = retry_delay(details);
    }
    e
}

/// A non-2xx Google answer as an error that keeps its status, message and canonical
/// status (as the type). Bodies that are not Google's keep their text.
pub(crate) fn parse_google_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> GatewayError {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    // `streamGenerateContent` without `alt=sse` wraps it in an array.
    let err = match &parsed {
        Some(Value::Array(items)) => items.first().and_then(|v| v.get("error")),
        Some(v) => v.get("error"),
        None => None,
    };
    match err {
        Some(err) if err.is_object() => google_error_value(err, headers, Some(status)),
        _ => build_upstream_error(status, headers, error_text(status, body), None, None, None)
            .retryable(google_retryable(status)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::providers::openai::tests::request;
    use crate::providers::sse;
    use crate::schema::RequestKind;
    use crate::upstream::framing::sse::SseParser;
    use http::header::RETRY_AFTER;
    use http::HeaderValue;

    fn translate(mut body: Value) -> Result<Value, GatewayError> {
        if let Some(obj) = body.as_object_mut() {
            obj.entry("model")
                .or_insert_with(|| json!("gemini-2.5-flash"));
        }
        to_gemini(&request(RequestKind::Chat, "vertex", body)).map(Value::Object)
    }

    fn param_of(body: Value) -> String {
        let e = translate(body.clone()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        e.param.unwrap_or_default()
    }

    #[test]
    fn simple_translation() {
        let body = translate(json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "there"}]},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "bye"},
            ],
            "max_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop": "END",
            "n": 2,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "seed": 7,
            "user": "u-1",
            "stream": true,
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}, {"text": "there"}]},
                    {"role": "model", "parts": [{"text": "Hello!"}]},
                    {"role": "user", "parts": [{"text": "bye"}]},
                ],
                "generationConfig": {
                    "maxOutputTokens": 100,
                    "temperature": 0.2,
                    "topP": 0.9,
                    "presencePenalty": 0.5,
                    "frequencyPenalty": -0.5,
                    "topK": 40,
                    "seed": 7,
                    "candidateCount": 2,
                    "stopSequences": ["END"],
                },
            })
        );
        // `max_completion_tokens` is the newer name and wins.
        let b = translate(json!({"messages": [{"role": "user", "content": "a"}],
            "max_tokens": 5, "max_completion_tokens": 9, "stop": ["x", "y"], "n": 1}))
        .unwrap();
        assert_eq!(
            b["generationConfig"],
            json!({"maxOutputTokens": 9, "stopSequences": ["x", "y"]})
        );
    }

    #[test]
    fn media_parts() {
        let body = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What are these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "gs://bucket/cat.JPG"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a/b.webp?size=large#x", "detail": "high"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        ]}]}))
        .unwrap();
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"text": "What are these?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.JPG"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/b.webp?size=large#x"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
            ])
        );
        for (url, what) in [
            ("https://example.com/image", "extension"),
            ("gs://bucket/file.bmp", "extension"),
            ("ftp://example.com/a.png", "gs://"),
            ("data:image/png,abc", "base64"),
        ] {
            let e = translate(json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "x"},
                {"type": "image_url", "image_url": {"url": url}},
            ]}]}))
            .unwrap_err();
            assert_eq!(
                e.param.as_deref(),
                Some("messages[0].content[1].image_url.url"),
                "{url}"
            );
            assert!(e.message.contains(what), "{url}: {}", e.message);
        }
        let e = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-abc"}}]}]}))
        .unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content[0].file.file_id")
        );
    }

    #[test]
    fn tool_calls_and_results() {
        let body = translate(json!({
            "messages": [
                {"role": "user", "content": "Weather in Paris and the time?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                     "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}},
                    {"id": "call_1", "type": "function", "function": {"name": "time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp_c\": 21}"},
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false}}},
                {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}}}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": false,
        }))
        .unwrap();
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Weather in Paris and the time?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
                    {"functionCall": {"name": "time", "args": {}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "weather", "response": {"content": {"temp_c": 21}}}},
                    {"functionResponse": {"name": "time", "response": {"content": "noon"}}},
                    {"text": "thanks"},
                ]},
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [
                {"name": "weather", "description": "Weather by city",
                 "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
                {"name": "time"},
            ]}])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
        );
    }

    #[test]
    fn tool_choice_forms() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            let b = translate(json!({"messages": msgs, "tools": tools, "tool_choice": choice}))
                .unwrap();
            assert_eq!(
                b["toolConfig"]["functionCallingConfig"],
                json!({"mode": mode})
            );
        }
        // Without tools, a choice that does not force a call needs no config.
        let b = translate(json!({"messages": msgs, "tool_choice": "none"})).unwrap();
        assert!(b.get("toolConfig").is_none());
        assert_eq!(
            param_of(json!({"messages": msgs, "tool_choice": "required"})),
            "tool_choice"
        );
        assert_eq!(
            param_of(json!({"messages": msgs, "tools": tools, "tool_choice": "sometimes"})),
            "tool_choice"
        );
        assert_eq!(
            param_of(json!({"messages": msgs, "tools": tools,
                "tool_choice": {"type": "function", "function": {"name": "g"}}})),
            "tool_choice.function.name"
        );
    }

    #[test]
    fn schemas_are_cut_to_what_vertex_accepts() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "name": {"type": ["string", "null"], "maxLength": 10, "examples": ["x"]},
                "size": {"type": "integer", "enum": [1, 2], "exclusiveMinimum": 0},
                "kind": {"const": "a"},
                "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                "maybe": {"anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]},
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item", "description": "one item"}},
                "merged": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}], "description": "m"},
            },
            "required": ["name"],
            "$defs": {"Item": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}},
                "additionalProperties": {"type": "string"}}},
        });
        let item =
            json!({"type": "OBJECT", "properties": {"id": {"type": "STRING", "format": "uuid"}}});
        assert_eq!(
            gemini_schema(&schema, "p").unwrap(),
            json!({
                "type": "OBJECT",
                "properties": {
                    "name": {"type": "STRING", "nullable": true, "maxLength": 10},
                    "size": {"type": "INTEGER", "enum": ["1", "2"]},
                    "kind": {"enum": ["a"]},
                    "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
                    "maybe": {"type": "OBJECT", "properties": {"id": {"type": "STRING", "format": "uuid"}}, "nullable": true},
                    "items": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": item["properties"], "description": "one item"}},
                    "merged": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "description": "m"},
                },
                "required": ["name"],
            })
        );

        let recursive = json!({"type": "object", "properties": {"node": {"$ref": "#/$defs/Node"}},
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}});
        let e = gemini_schema(&recursive, "tools[0].function.parameters").unwrap_err();
        assert!(e.message.contains("recursive"), "{}", e.message);
        assert!(e
            .param
            .unwrap()
            .starts_with("tools[0].function.parameters.properties.node"));
        let e = gemini_schema(&json!({"$ref": "https://example.com/s.json"}), "p").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("p.$ref"));
    }

    #[test]
    fn response_formats() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let b = translate(json!({"messages": msgs, "response_format": {"type": "json_object"}}))
            .unwrap();
        assert_eq!(
            b["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let b = translate(
            json!({"messages": msgs, "response_format": {"type": "json_schema",
            "json_schema": {"name": "r", "strict": true, "schema": {"type": "object",
                "properties": {"a": {"type": "string"}}, "additionalProperties": false}}}}),
        )
        .unwrap();
        assert_eq!(
            b["generationConfig"],
            json!({"responseMimeType": "application/json",
                   "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}})
        );
        let b = translate(json!({"messages": msgs, "response_format": {"type": "text"}})).unwrap();
        assert!(b.get("generationConfig").is_none());
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let user = json!({"role": "user", "content": "a"});
        let cases = [
            (json!({}), "messages"),
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "system", "content": "only"}]}),
                "messages",
            ),
            (
                json!({"messages": [user, user, {"content": "c"}]}),
                "messages[2].role",
            ),
            (json!({"messages": [1]}), "messages[0]"),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "function", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"messages": [user, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}),
                "messages[1].tool_call_id",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "video_url"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}]}]}),
                "messages[0].content[0].input_audio.format",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {}}]}]}),
                "messages[0].tool_calls[0].function.name",
            ),
            (
                json!({"messages": [user], "tools": [{"type": "code_interpreter"}]}),
                "tools[0].type",
            ),
            (
                json!({"messages": [user], "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}),
                "tools[0].function.parameters",
            ),
            (json!({"messages": [user], "max_tokens": 0}), "max_tokens"),
            (
                json!({"messages": [user], "temperature": "hot"}),
                "temperature",
            ),
            (json!({"messages": [user], "seed": 1.5}), "seed"),
            (json!({"messages": [user], "n": 0}), "n"),
            (json!({"messages": [user], "stop": [1]}), "stop[0]"),
            (
                json!({"messages": [user], "response_format": {"type": "yaml"}}),
                "response_format.type",
            ),
            (
                json!({"messages": [user], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
                "response_format.json_schema.schema",
            ),
            (json!({"messages": [user], "logprobs": true}), "logprobs"),
            (
                json!({"messages": [user], "logit_bias": {"50256": -100}}),
                "logit_bias",
            ),
            (
                json!({"messages": [user], "functions": [{"name": "f"}]}),
                "functions",
            ),
            (
                json!({"messages": [user], "modalities": ["text", "audio"]}),
                "modalities",
            ),
            (
                json!({"messages": [user], "audio": {"voice": "alloy", "format": "wav"}}),
                "audio",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(body.clone()), param, "{body}");
        }
    }

    /// Ids repeat across turns (`call_0` every time); a result answers the latest call.
    #[test]
    fn tool_result_names_follow_the_latest_call() {
        let call = |name: &str| {
            json!({"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": name, "arguments": "{}"}}]})
        };
        let body = translate(json!({"messages": [
            {"role": "user", "content": "go"},
            call("first"),
            {"role": "tool", "tool_call_id": "call_0", "content": "1"},
            call("second"),
            {"role": "tool", "tool_call_id": "call_0", "content": "not json {"},
        ]}))
        .unwrap();
        assert_eq!(
            body["contents"][4]["parts"][0],
            json!({"functionResponse": {"name": "second", "response": {"content": "not json {"}}})
        );
        // A JSON value that is not an object stays text.
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"]["response"],
            json!({"content": "1"})
        );
    }

    fn parse(body: Value) -> Result<Value, GatewayError> {
        from_gemini("vertex", body.as_object().unwrap(), "gemini-2.5-flash").map(Value::Object)
    }

    #[test]
    fn response_translation() {
        let b = parse(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "thinking...", "thought": true},
                    {"text": "Let me check. "},
                    {"text": "One moment."},
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "time", "args": {}}},
                ]},
                "finishReason": "STOP",
                "avgLogprobs": -0.1,
                "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}],
            }],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 30, "thoughtsTokenCount": 8, "totalTokenCount": 50},
            "modelVersion": "gemini-2.5-flash-001",
            "createTime": "2025-06-01T10:00:00.000000Z",
            "responseId": "resp-abc",
        }))
        .unwrap();
        assert_eq!(b["id"], "resp-abc");
        assert_eq!(b["object"], "chat.completion");
        assert!(b["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(b["model"], "gemini-2.5-flash-001");
        let choice = &b["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], "Let me check. One moment.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([
                {"id": "call_0", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                 "extra_content": {"google": {"thought_signature": "c2ln"}}},
                {"id": "call_1", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ])
        );
        // Thinking tokens are output tokens.
        assert_eq!(
            b["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 38, "total_tokens": 50})
        );

        for (reason, expected) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("OTHER", "stop"),
            ("RECITATION", "content_filter"),
            ("SAFETY", "content_filter"),
            ("SOMETHING_NEW", "stop"),
        ] {
            let b = parse(
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]},
                "finishReason": reason}]}),
            )
            .unwrap();
            assert_eq!(b["choices"][0]["finish_reason"], expected, "{reason}");
            assert_eq!(b["model"], "gemini-2.5-flash");
            assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
            assert_eq!(b["usage"]["total_tokens"], 0);
        }

        // n > 1: one choice per candidate, by Google's index.
        let b = parse(json!({"candidates": [
            {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
            {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"},
        ]}))
        .unwrap();
        assert_eq!(b["choices"][1]["index"], 1);
        assert_eq!(b["choices"][1]["message"]["content"], "b");
        assert_eq!(b["choices"][1]["finish_reason"], "length");

        let e = parse(json!({"candidates": []})).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
    }

    #[test]
    fn usage_saturates() {
        let b = parse(json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": u64::MAX, "candidatesTokenCount": 4_000_000_000u64,
                "thoughtsTokenCount": 4_000_000_000u64, "totalTokenCount": -3}}))
        .unwrap();
        assert_eq!(
            b["usage"],
            json!({"prompt_tokens": u32::MAX, "completion_tokens": u32::MAX, "total_tokens": u32::MAX})
        );
    }

    /// A prompt blocked by the safety filters, as Vertex answers it (HTTP 200).
    const BLOCKED_PROMPT: &str = r#"{
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE", "probabilityScore": 0.05, "severity": "HARM_SEVERITY_NEGLIGIBLE", "severityScore": 0.04},
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "probabilityScore": 0.97, "severity": "HARM_SEVERITY_HIGH", "severityScore": 0.91, "blocked": true}
            ]
        },
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
        "createTime": "2025-06-01T10:00:00.000000Z",
        "responseId": "r1"
    }"#;

    #[test]
    fn safety_blocks_are_errors_with_the_reason() {
        let e = parse(serde_json::from_str(BLOCKED_PROMPT).unwrap()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code.as_deref(), Some("content_filter"));
        assert_eq!(e.fault, crate::error::Fault::Upstream);
        assert!(!e.retryable);
        assert_eq!(
            e.message,
            "provider vertex blocked the prompt: SAFETY; safety ratings: \
             HARM_CATEGORY_DANGEROUS_CONTENT (probability HIGH)"
        );

        let e = parse(
            json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT",
            "blockReasonMessage": "The prompt contains prohibited content."}}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "provider vertex blocked the prompt: PROHIBITED_CONTENT (The prompt contains prohibited content.)"
        );

        // The answer withheld: a candidate with the reason and no content.
        let e = parse(
            json!({"candidates": [{"finishReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "MEDIUM"},
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "LOW"},
            ]}]}),
        )
        .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("content_filter"));
        assert_eq!(
            e.message,
            "provider vertex blocked the answer: SAFETY; safety ratings: \
             HARM_CATEGORY_SEXUALLY_EXPLICIT (probability MEDIUM)"
        );

        // One of two candidates withheld: the other is still an answer.
        let b = parse(json!({"candidates": [
            {"index": 0, "finishReason": "SAFETY"},
            {"index": 1, "content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"},
        ]}))
        .unwrap();
        assert_eq!(b["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(b["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(b["choices"][1]["message"]["content"], "ok");

        let e = parse(
            json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL",
            "finishMessage": "Malformed function call: print(x"}]}),
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code.as_deref(), Some("malformed_function_call"));
        assert!(e.retryable);
    }

    fn decode_all(stream: &str) -> Result<Vec<Value>, GatewayError> {
        let mut d = GeminiStreamDecoder::new("vertex", "gemini-2.5-flash");
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        let mut frames = parser.push(stream.as_bytes()).unwrap();
        frames.extend(parser.finish());
        for frame in frames {
            for ev in d.decode(&Frame::Sse(frame))? {
                match ev {
                    StreamEvent::Chunk(c) => out.push(Value::Object(c.body)),
                    StreamEvent::Done => panic!("Gemini streams have no end marker"),
                    StreamEvent::Skip => {}
                }
            }
        }
        Ok(out)
    }

    /// `streamGenerateContent?alt=sse` as Vertex sends it: `\r\n\r\n` between events,
    /// text in pieces, a function call whole, usage with the finish, no `[DONE]`.
    const STREAM: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"Check\"}]}}],\"usageMetadata\": {\"trafficType\": \"ON_DEMAND\"},\"modelVersion\": \"gemini-2.5-flash\",\"createTime\": \"2025-06-01T10:00:00.000000Z\",\"responseId\": \"r-9\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"ing.\"}]}}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r-9\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"functionCall\": {\"name\": \"weather\",\"args\": {\"city\": \"Paris\"}}}]}}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r-9\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"\"}]},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 25,\"candidatesTokenCount\": 12,\"totalTokenCount\": 37,\"trafficType\": \"ON_DEMAND\"},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r-9\"}\r\n\r\n",
    );

    #[test]
    fn stream_decoding() {
        let chunks = decode_all(STREAM).unwrap();
        for c in &chunks {
            assert_eq!(c["id"], "r-9");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "gemini-2.5-flash");
            assert!(c["created"].is_u64());
        }
        let deltas: Vec<(Value, Value)> = chunks
            .iter()
            .filter(|c| !c["choices"].as_array().unwrap().is_empty())
            .map(|c| {
                assert_eq!(c["choices"][0]["index"], 0);
                (
                    c["choices"][0]["delta"].clone(),
                    c["choices"][0]["finish_reason"].clone(),
                )
            })
            .collect();
        assert_eq!(
            deltas,
            vec![
                (
                    json!({"role": "assistant", "content": "Check"}),
                    Value::Null
                ),
                (json!({"content": "ing."}), Value::Null),
                (
                    json!({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
                    Value::Null
                ),
                (json!({}), json!("tool_calls")),
            ]
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37})
        );
        // Every chunk the client sees counts as content except none here: the first one
        // already carries text, so the stream commits at once.
        let first = StreamChunk {
            body: chunks[0].as_object().unwrap().clone(),
        };
        assert!(first.has_content());
    }

    #[test]
    fn stream_with_two_candidates_and_late_usage() {
        let stream = concat!(
            "data: {\"candidates\": [{\"index\": 0, \"content\": {\"parts\": [{\"text\": \"a\"}]}}, {\"index\": 1, \"content\": {\"parts\": [{\"text\": \"b\"}]}}]}\n\n",
            "data: {\"candidates\": [{\"index\": 1, \"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\", \"args\": {}}}, {\"functionCall\": {\"name\": \"g\", \"args\": {\"x\": 1}}}]}, \"finishReason\": \"STOP\"}, {\"index\": 0, \"finishReason\": \"MAX_TOKENS\"}]}\n\n",
            "data: {\"usageMetadata\": {\"promptTokenCount\": 3, \"candidatesTokenCount\": 4}}",
        );
        let chunks = decode_all(stream).unwrap();
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"));
        assert!(chunks.iter().all(|c| c["id"] == id));
        assert_eq!(chunks[1]["choices"][0]["index"], 1);
        assert_eq!(
            chunks[1]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "b"})
        );
        assert_eq!(chunks[2]["choices"][0]["index"], 1);
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
        let calls = &chunks[2]["choices"][0]["delta"]["tool_calls"];
        assert_eq!(calls[1]["index"], 1);
        assert_eq!(calls[1]["id"], "call_1");
        assert_eq!(calls[1]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(chunks[3]["choices"][0]["index"], 0);
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
        assert_eq!(
            chunks[4],
            json!({"id": id, "object": "chat.completion.chunk", "created": chunks[0]["created"],
                "model": "gemini-2.5-flash", "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
        );
    }

    #[test]
    fn stream_errors_and_blocks() {
        // An error after the 200, in Google's shape.
        let e = decode_all(concat!(
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}]}}]}\n\n",
            "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded. Please try again later.\", \"status\": \"UNAVAILABLE\"}}\n\n",
        ))
        .unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.message,
            "The model is overloaded. Please try again later."
        );
        assert_eq!(e.type_str(), "UNAVAILABLE");
        assert!(e.retryable);
        assert_eq!(e.fault, crate::error::Fault::Upstream);

        // The status alone decides when the code is missing.
        let e = decode_all(
            "data: {\"error\": {\"message\": \"bad\", \"status\": \"INVALID_ARGUMENT\"}}\n\n",
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(!e.retryable);

        // A blocked prompt arrives as the first (and only) event.
        let e = decode_all(&format!(
            "data: {}\n\n",
            serde_json::from_str::<Value>(BLOCKED_PROMPT).unwrap()
        ))
        .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("content_filter"));
        assert!(e.message.contains("blocked the prompt: SAFETY"));

        // A filter that stops the answer before any content is an error...
        let e = decode_all("data: {\"candidates\": [{\"content\": {\"role\": \"model\"}, \"finishReason\": \"PROHIBITED_CONTENT\"}]}\n\n")
            .unwrap_err();
        assert!(
            e.message.contains("blocked the answer: PROHIBITED_CONTENT"),
            "{}",
            e.message
        );
        assert!(!e.retryable);

        // ...and after some, a finish reason.
        let chunks = decode_all(concat!(
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Once\"}]}}]}\n\n",
            "data: {\"candidates\": [{\"finishReason\": \"SAFETY\"}], \"usageMetadata\": {\"promptTokenCount\": 1, \"candidatesTokenCount\": 1}}\n\n",
        ))
        .unwrap();
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chunks[2]["usage"]["total_tokens"], 2);

        let mut d = GeminiStreamDecoder::new("vertex", "m");
        let e = d.decode(&sse("", "{not json")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code.as_deref(), Some("upstream_malformed_response"));
        assert!(matches!(
            &d.decode(&sse("", "")).unwrap()[..],
            [StreamEvent::Skip]
        ));
        // An event with nothing for the client (bookkeeping only).
        assert!(matches!(
            &d.decode(&sse(
                "",
                r#"{"usageMetadata": {"trafficType": "ON_DEMAND"}}"#
            ))
            .unwrap()[..],
            [StreamEvent::Skip]
        ));
        let e = d
            .decode(&Frame::Event(crate::providers::EventMessage::default()))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn google_error_bodies() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("12"));
        let e = parse_google_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"error": {"code": 429, "message": "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.", "status": "RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.message.starts_with("Resource exhausted."));
        assert_eq!(e.type_str(), "RESOURCE_EXHAUSTED");
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(12)));

        // RetryInfo's delay and ErrorInfo's reason, when the header says nothing.
        let e = parse_google_error(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            br#"{"error": {"code": 429, "message": "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model.", "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED", "domain": "aiplatform.googleapis.com"},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}
                ]}}"#,
        );
        assert_eq!(e.code.as_deref(), Some("RATE_LIMIT_EXCEEDED"));
        assert_eq!(e.retry_after, Some(Duration::from_secs(30)));

        let e = parse_google_error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            br#"{"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "status": "UNAUTHENTICATED"}}"#,
        );
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.type_str(), "UNAUTHENTICATED");
        assert!(!e.retryable);

        let e = parse_google_error(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            br#"[{"error": {"code": 404, "message": "Publisher Model `projects/p/locations/us-central1/publishers/google/models/gemini-9` was not found or your project does not have access to it.", "status": "NOT_FOUND"}}]"#,
        );
        assert_eq!(e.type_str(), "NOT_FOUND");
        assert!(e.message.starts_with("Publisher Model"));

        for (status, retryable) in [
            (500, true),
            (501, false),
            (502, true),
            (503, true),
            (504, true),
            (400, false),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let e = parse_google_error(status, &HeaderMap::new(), b"<html>oops</html>");
            assert_eq!(e.retryable, retryable, "{status}");
            assert_eq!(e.status, status);
            assert_eq!(e.message, "<html>oops</html>");
        }
    }
}
